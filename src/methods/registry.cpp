#include <atomic>
#include <string>

#include "core/error.h"
#include "core/image.h"
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

namespace {
using T = OptionType;
const std::vector<OptionSpec> kPromptOptions = {{"password_prompts", T::kList}, {"incorrect_prompts", T::kList}};

std::vector<OptionSpec> with_prompts(std::vector<OptionSpec> v) {
    v.insert(v.end(), kPromptOptions.begin(), kPromptOptions.end());
    return v;
}
}  // namespace

const std::vector<MethodInfo> &all_methods() {
    static const std::vector<MethodInfo> methods = {
        {"local", &build_local, false, {}},
        {"fork", &build_fork, true, {}},
        {"ssh", &build_ssh, false,
         with_prompts({{"hostname", T::kString}, {"port", T::kInteger}, {"username", T::kString}, {"password", T::kString},
                       {"identity_file", T::kString}, {"identity_passphrase", T::kString}, {"identities_only", T::kBoolean},
                       {"use_agent", T::kBoolean}, {"check_host_keys", T::kString}, {"known_hosts_file", T::kString},
                       {"compression", T::kBoolean}, {"ciphers", T::kString}, {"keepalive_interval", T::kInteger}, {"keepalive_count", T::kInteger},
                       {"ssh_path", T::kString}, {"ssh_args", T::kList}, {"ssh_debug_level", T::kInteger}, {"backend", T::kString}})},
        {"sudo", &build_sudo, false,
         with_prompts({{"username", T::kString}, {"password", T::kString}, {"sudo_path", T::kString}, {"sudo_args", T::kList},
                       {"preserve_env", T::kBoolean}, {"set_home", T::kBoolean}, {"login", T::kBoolean}, {"selinux_role", T::kString},
                       {"selinux_type", T::kString}, {"use_tty", T::kBoolean}})},
        {"su", &build_su, false,
         with_prompts({{"username", T::kString}, {"password", T::kString}, {"su_path", T::kString}, {"password_prompt", T::kString}})},
        {"doas", &build_doas, false,
         with_prompts({{"username", T::kString}, {"password", T::kString}, {"doas_path", T::kString}, {"password_prompt", T::kString}})},
        {"docker", &build_docker, false, {{"container", T::kString}, {"image", T::kString}, {"username", T::kString}, {"docker_path", T::kString}}},
        {"podman", &build_podman, false, {{"container", T::kString}, {"image", T::kString}, {"username", T::kString}, {"podman_path", T::kString}}},
        {"lxc", &build_lxc, false, {{"container", T::kString}, {"lxc_attach_path", T::kString}}},
        {"lxd", &build_lxd, false, {{"container", T::kString}, {"lxc_path", T::kString}}},
        {"kubectl", &build_kubectl, false,
         {{"pod", T::kString}, {"container", T::kString}, {"namespace", T::kString}, {"kubectl_path", T::kString}, {"kubectl_args", T::kList}}},
        {"jail", &build_jail, false, {{"container", T::kString}, {"username", T::kString}, {"jexec_path", T::kString}}},
        {"setns", &build_setns, false,
         {{"container", T::kString}, {"kind", T::kString}, {"pid", T::kInteger}, {"username", T::kString}, {"docker_path", T::kString},
          {"podman_path", T::kString}, {"lxc_info_path", T::kString}, {"lxc_path", T::kString}, {"machinectl_path", T::kString}}},
        {"machinectl", &build_machinectl, false, {{"container", T::kString}, {"username", T::kString}, {"machinectl_path", T::kString}}},
    };
    return methods;
}

namespace {
std::atomic<const InProcessSsh *> g_in_process_ssh{nullptr};
}

void register_in_process_ssh(const InProcessSsh *backend) { g_in_process_ssh.store(backend); }
const InProcessSsh *in_process_ssh() { return g_in_process_ssh.load(); }

const MethodInfo *find_method(std::string_view name) {
    for (const auto &m : all_methods())
        if (m.name == name) return &m;
    return nullptr;
}

namespace {

// A context's name labels its log records, errors and `ps` line: a control
// character there could forge a line of someone's log or terminal.
void check_name_option(const std::string &key, const char *value) {
    std::string_view v(value);
    if (v.empty()) throw Error(SPORE_EINVAL, "option '" + key + "' must not be empty");
    if (!valid_utf8(v)) throw Error(SPORE_EINVAL, "option '" + key + "' is not valid UTF-8");
    for (unsigned char c : v)
        if (c < 0x20 || c == 0x7f)
            throw Error(SPORE_EINVAL, "option '" + key + "' must not contain control characters (found byte " +
                                          std::to_string(unsigned(c)) + ")");
}

}  // namespace

void validate_options(const MethodInfo &m, const cJSON *opts) {
    const cJSON *item;
    cJSON_ArrayForEach(item, opts) {
        std::string key = item->string ? item->string : "";
        const OptionSpec *spec = find_option(connect_option_table(), key);
        if (!spec) spec = find_option(m.options, key);
        if (!spec) throw Error(SPORE_EINVAL, "unknown option '" + key + "' for method " + std::string(m.name));
        check_option(*spec, item, "");
        if (spec->type == T::kList) option_words(opts, key.c_str());           // parse errors surface now
        if (spec->type == T::kBooleanOrString) parse_agent_compress(opts);  // so do bad compressions
        if (key == "name" || key == "remote_name") check_name_option(key, item->valuestring);
    }
}

std::string opt_str(const cJSON *o, const char *key, const std::string &def) { return json_str(o, key, def); }
bool opt_bool(const cJSON *o, const char *key, bool def) { return json_bool(o, key, def); }
int64_t opt_int(const cJSON *o, const char *key, int64_t def) { return json_int(o, key, def); }

std::string opt_required(const cJSON *o, const char *key, std::string_view method) {
    std::string v = json_str(o, key);
    if (v.empty()) throw Error(SPORE_EINVAL, "method " + std::string(method) + " needs option '" + key + "'");
    return v;
}

void add_user_prompts(PromptTable &t, const cJSON *o, const std::string &secret) {
    for (auto &p : option_words(o, "incorrect_prompts")) t.add_failure(p, SPORE_EAUTH, "incorrect password");
    for (auto &p : option_words(o, "password_prompts")) t.add_prompt(p, secret);
}

std::vector<std::string> LaunchInput::boot_argv() const {
    std::vector<std::string> prefix = option_words(options, "command_prefix");
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {"/bin/sh", "-c", first_stage});
    bool operators = false;
    for (auto &w : prefix) operators = operators || is_shell_operator(w);
    if (operators) return {"/bin/sh", "-c", join_for_shell(argv)};
    return argv;
}

std::string LaunchInput::boot_command_line() const {
    std::vector<std::string> argv = option_words(options, "command_prefix");
    argv.insert(argv.end(), {"/bin/sh", "-c", first_stage});
    return join_for_shell(argv);
}

std::vector<std::string> LaunchInput::boot_argv_without_dollar() const {
    // eval "`printf '<script>'`": the script's '$', '%', '\' and newlines
    // become printf escapes, so the words contain no '$' at all.
    std::string fmt;
    for (char c : first_stage) {
        switch (c) {
        case '$': fmt += "\\044"; break;
        case '%': fmt += "%%"; break;
        case '\\': fmt += "\\\\"; break;
        case '\'': fmt += "\\047"; break;
        case '\n': fmt += "\\n"; break;
        default: fmt.push_back(c);
        }
    }
    std::vector<std::string> prefix = option_words(options, "command_prefix");
    for (auto &w : prefix)
        if (w.find('$') != std::string::npos)
            throw Error(SPORE_EINVAL, "command_prefix: '$' cannot pass through a login shell (login=true)");
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {"/bin/sh", "-c", "eval \"`printf '" + fmt + "'`\""});
    bool operators = false;
    for (auto &w : prefix) operators = operators || is_shell_operator(w);
    if (operators) return {"/bin/sh", "-c", join_for_shell(argv)};
    return argv;
}

}  // namespace spore
