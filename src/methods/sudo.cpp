// sudo: `sudo -S -p <our prompt> -u user [-E -H -i -r role -t type] -- <boot>`.
// The password goes to sudo's stdin (-S) and the prompt comes on stderr, so
// sudo needs no terminal: without one, sudo's use_pty (Debian's default)
// does not apply and the agent gets the stream itself instead of through a
// relay in the sudo process, a round trip ~3x cheaper. use_tty=true runs
// sudo on a terminal instead, for sudoers with `requiretty`. The prompt is
// spore's own, so a localized sudo, a banner or a lecture cannot be
// mistaken for it.
#include "core/error.h"
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

namespace {
constexpr const char *kSudoPrompt = "spore-sudo-prompt:";

struct SudoFlags {
    std::string user;
    bool preserve_env = false, set_home = false, login = false;
    std::string role, type;
};

// sudo_args are re-parsed: only flags whose meaning spore knows are taken;
// anything else could change what runs (or how) behind spore's back.
void parse_sudo_args(const std::vector<std::string> &args, SudoFlags &f) {
    auto value = [&](size_t &i, const std::string &flag, std::string inline_value) -> std::string {
        if (!inline_value.empty()) return inline_value;
        if (i + 1 >= args.size()) throw Error(SPORE_EINVAL, "sudo_args: " + flag + " needs a value");
        return args[++i];
    };
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string &a = args[i];
        if (a == "--") throw Error(SPORE_EINVAL, "sudo_args: '--' is not allowed (spore gives the command)");
        if (a.rfind("--", 0) == 0) {
            std::string name = a.substr(2), val;
            size_t eq = name.find('=');
            if (eq != std::string::npos) {
                val = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            if (name == "preserve-env" && eq == std::string::npos) f.preserve_env = true;
            else if (name == "set-home") f.set_home = true;
            else if (name == "login") f.login = true;
            else if (name == "user") f.user = value(i, a, val);
            else if (name == "role") f.role = value(i, a, val);
            else if (name == "type") f.type = value(i, a, val);
            else if (name == "non-interactive" || name == "stdin") continue;
            else throw Error(SPORE_EINVAL, "sudo_args: unsupported flag '" + a + "' (spore understands -E -H -i -u -r -t, and ignores -n -S)");
            continue;
        }
        if (a.size() < 2 || a[0] != '-') throw Error(SPORE_EINVAL, "sudo_args: unexpected word '" + a + "' (only flags are allowed)");
        // Bundled short flags: -EH, -uroot
        for (size_t k = 1; k < a.size(); ++k) {
            char c = a[k];
            std::string rest = a.substr(k + 1);
            switch (c) {
            case 'E': f.preserve_env = true; break;
            case 'H': f.set_home = true; break;
            case 'i': f.login = true; break;
            case 'n': case 'S': break;  // spore answers prompts itself
            case 'u': f.user = value(i, "-u", rest); k = a.size(); break;
            case 'r': f.role = value(i, "-r", rest); k = a.size(); break;
            case 't': f.type = value(i, "-t", rest); k = a.size(); break;
            default:
                throw Error(SPORE_EINVAL, std::string("sudo_args: unsupported flag '-") + c +
                                              "' (spore understands -E -H -i -u -r -t, and ignores -n -S)");
            }
        }
    }
}
}  // namespace

LaunchSpec build_sudo(const LaunchInput &in) {
    const cJSON *o = in.options;
    SudoFlags f;
    parse_sudo_args(option_words(o, "sudo_args"), f);
    // Explicit options win over sudo_args.
    if (!opt_str(o, "username").empty() || f.user.empty()) f.user = opt_str(o, "username", "root");
    f.preserve_env = opt_bool(o, "preserve_env", f.preserve_env);
    f.set_home = opt_bool(o, "set_home", f.set_home);
    f.login = opt_bool(o, "login", f.login);
    if (!opt_str(o, "selinux_role").empty()) f.role = opt_str(o, "selinux_role");
    if (!opt_str(o, "selinux_type").empty()) f.type = opt_str(o, "selinux_type");

    LaunchSpec spec;
    bool tty = opt_bool(o, "use_tty", false);
    spec.tty = tty ? TtyMode::Hybrid : TtyMode::None;
    spec.answer_on_stdin = !tty;
    spec.argv = {opt_str(o, "sudo_path", "sudo")};
    if (!tty) spec.argv.push_back("-S");
    spec.argv.insert(spec.argv.end(), {"-p", kSudoPrompt, "-u", f.user});
    if (f.preserve_env) spec.argv.push_back("-E");
    if (f.set_home) spec.argv.push_back("-H");
    if (f.login) spec.argv.push_back("-i");
    if (!f.role.empty()) spec.argv.insert(spec.argv.end(), {"-r", f.role});
    if (!f.type.empty()) spec.argv.insert(spec.argv.end(), {"-t", f.type});
    spec.argv.push_back("--");
    auto boot = f.login ? in.boot_argv_without_dollar() : in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());

    spec.secrets = {{"password", opt_str(o, "password")}};
    PromptTable &t = spec.prompts;
    add_user_prompts(t, o);
    t.add_failure("is not in the sudoers file", SPORE_EDENIED, "the user is not in the sudoers file");
    t.add_failure("is not allowed to (execute|run)", SPORE_EDENIED, "sudo does not allow this command as that user");
    t.add_failure("may not run sudo", SPORE_EDENIED, "the user may not run sudo");
    t.add_failure("unknown user", SPORE_EDENIED, "sudo: unknown user " + f.user);
    t.add_failure("a password is required", SPORE_EPASSREQ, "sudo: a password is required");
    t.add_failure("(sorry, try again|incorrect password attempt)", SPORE_EAUTH, "sudo: incorrect password");
    t.add_failure("a terminal is required", SPORE_ECONNECT, "sudo: a terminal is required");
    t.add_failure("must have a tty", SPORE_ECONNECT, "sudo requires a terminal here (requiretty): set use_tty=true");
    // sudo.ws, and sudo-rs's "[sudo: <prompt>] Password:" form.
    t.add_prompt(std::string(kSudoPrompt) + "[[:space:]]*$", "password");
    t.add_prompt(std::string("\\[sudo: ") + kSudoPrompt + "\\][^\n*]{0,50}:[[:space:]]*$", "password");
    return spec;
}

}  // namespace spore
