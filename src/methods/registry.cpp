#include <atomic>
#include <string>

#include "core/error.h"
#include "core/image.h"
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

namespace {
const std::vector<OptionSpec> kPromptOptions = {{"password_prompts", 'l'}, {"incorrect_prompts", 'l'}};

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
         with_prompts({{"hostname", 's'}, {"port", 'i'}, {"username", 's'}, {"password", 's'},
                       {"identity_file", 's'}, {"identity_passphrase", 's'}, {"identities_only", 'b'},
                       {"use_agent", 'b'}, {"check_host_keys", 's'}, {"known_hosts_file", 's'},
                       {"compression", 'b'}, {"ciphers", 's'}, {"keepalive_interval", 'i'}, {"keepalive_count", 'i'},
                       {"ssh_path", 's'}, {"ssh_args", 'l'}, {"ssh_debug_level", 'i'}, {"backend", 's'}})},
        {"sudo", &build_sudo, false,
         with_prompts({{"username", 's'}, {"password", 's'}, {"sudo_path", 's'}, {"sudo_args", 'l'},
                       {"preserve_env", 'b'}, {"set_home", 'b'}, {"login", 'b'}, {"selinux_role", 's'},
                       {"selinux_type", 's'}, {"use_tty", 'b'}})},
        {"su", &build_su, false,
         with_prompts({{"username", 's'}, {"password", 's'}, {"su_path", 's'}, {"password_prompt", 's'}})},
        {"doas", &build_doas, false,
         with_prompts({{"username", 's'}, {"password", 's'}, {"doas_path", 's'}, {"password_prompt", 's'}})},
        {"docker", &build_docker, false, {{"container", 's'}, {"image", 's'}, {"username", 's'}, {"docker_path", 's'}}},
        {"podman", &build_podman, false, {{"container", 's'}, {"image", 's'}, {"username", 's'}, {"podman_path", 's'}}},
        {"lxc", &build_lxc, false, {{"container", 's'}, {"lxc_attach_path", 's'}}},
        {"lxd", &build_lxd, false, {{"container", 's'}, {"lxc_path", 's'}}},
        {"kubectl", &build_kubectl, false,
         {{"pod", 's'}, {"container", 's'}, {"namespace", 's'}, {"kubectl_path", 's'}, {"kubectl_args", 'l'}}},
        {"jail", &build_jail, false, {{"container", 's'}, {"username", 's'}, {"jexec_path", 's'}}},
        {"setns", &build_setns, false,
         {{"container", 's'}, {"kind", 's'}, {"pid", 'i'}, {"username", 's'}, {"docker_path", 's'},
          {"podman_path", 's'}, {"lxc_info_path", 's'}, {"lxc_path", 's'}, {"machinectl_path", 's'}}},
        {"machinectl", &build_machinectl, false, {{"container", 's'}, {"username", 's'}, {"machinectl_path", 's'}}},
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

const std::vector<OptionSpec> &common_options() {
    static const std::vector<OptionSpec> opts = {
        {"name", 's'},        {"connect_timeout", 'i'}, {"remote_name", 's'},
        {"agent_cache", 'b'}, {"agent_compress", 'z'},  {"command_prefix", 'l'},
        {"liveness_interval", 'i'}, {"liveness_count", 'i'},
    };
    return opts;
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
        char type = 0;
        for (auto &c : common_options())
            if (c.key == key) type = c.type;
        for (auto &c : m.options)
            if (c.key == key) type = c.type;
        if (!type) throw Error(SPORE_EINVAL, "unknown option '" + key + "' for method " + std::string(m.name));
        bool ok = (type == 's' && cJSON_IsString(item)) || (type == 'i' && cJSON_IsNumber(item)) ||
                  (type == 'b' && cJSON_IsBool(item)) || (type == 'l' && (cJSON_IsString(item) || cJSON_IsArray(item))) ||
                  type == 'z';
        if (!ok) {
            const char *want = type == 's'   ? "a string"
                               : type == 'i' ? "an integer"
                               : type == 'b' ? "a boolean"
                                             : "a list of strings or a string";
            throw Error(SPORE_EINVAL, "option '" + key + "' must be " + want);
        }
        if (type == 'l') option_words(opts, key.c_str());  // parse errors surface now
        if (key == "name" || key == "remote_name") check_name_option(key, item->valuestring);
        if (type == 'z') parse_agent_compress(opts);         // so do bad compressions
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
