// ssh through the OpenSSH client (backend=openssh; also what an agent uses
// for an onward ssh hop). The remote login shell runs the boot command line.
// A terminal is only used when a password or key passphrase may have to be
// typed; otherwise ssh runs with BatchMode and never prompts.
#include <strings.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include "core/error.h"
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

// With AES instructions, AES-GCM moves bulk data 1.3-1.5x faster than
// ssh's default first choice, chacha20-poly1305 (measured: 600-850 against
// 435-460 MB/s through the loopback sshd); without them chacha20 is the
// faster one.
bool cpu_has_aes() {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#elif defined(__aarch64__) && defined(HWCAP_AES) && defined(HWCAP_PMULL)
    unsigned long caps = getauxval(AT_HWCAP);
    return (caps & HWCAP_AES) && (caps & HWCAP_PMULL);
#else
    return false;
#endif
}

namespace {
// Whether ssh_args already choose ciphers (-c, or -o Ciphers ...), which
// then win over our preference.
bool args_choose_ciphers(const std::vector<std::string> &args) {
    for (const std::string &w : args) {
        if (w.rfind("-c", 0) == 0) return true;
        std::string opt = w.rfind("-o", 0) == 0 ? w.substr(2) : w;
        if (opt.size() >= 7 && strncasecmp(opt.c_str(), "ciphers", 7) == 0) return true;
    }
    return false;
}
// backend=libssh2: no process; the master's in-process session runs the
// boot command line. Options that only the OpenSSH client understands are
// refused rather than ignored.
LaunchSpec build_ssh_libssh2(const LaunchInput &in) {
    const cJSON *o = in.options;
    if (in.in_agent || !in_process_ssh())
        throw Error(SPORE_EINVAL, "the libssh2 ssh backend exists only in the master; an ssh hop opened through "
                                  "another context uses backend=openssh");
    for (const char *k : {"ssh_args", "ssh_path", "password_prompts", "incorrect_prompts"})
        if (cJSON_GetObjectItemCaseSensitive(o, k))
            throw Error(SPORE_EINVAL, std::string("option '") + k + "' needs backend=openssh");
    std::string check = opt_str(o, "check_host_keys", "enforce");
    if (check != "enforce" && check != "accept" && check != "ignore")
        throw Error(SPORE_EINVAL, "check_host_keys must be enforce, accept or ignore (not '" + check + "')");
    int64_t port = opt_int(o, "port", 22);
    if (port <= 0 || port > 65535) throw Error(SPORE_EINVAL, "port must be 1 to 65535");
    int64_t debug = opt_int(o, "ssh_debug_level", 0);
    if (debug < 0 || debug > 3) throw Error(SPORE_EINVAL, "ssh_debug_level must be 0 to 3");
    LaunchSpec spec;
    spec.in_process_ssh = true;
    spec.ssh_options.reset(cJSON_Duplicate(o, 1));
    spec.remote_command = in.boot_command_line();
    std::string user = opt_str(o, "username");
    spec.argv = {"libssh2", (user.empty() ? "" : user + "@") + opt_required(o, "hostname", "ssh") + ":" +
                                std::to_string(port)};
    return spec;
}
}  // namespace

LaunchSpec build_ssh(const LaunchInput &in) {
    const cJSON *o = in.options;
    // The master has libssh2; an agent (a static program) has only the
    // OpenSSH client of its machine.
    std::string backend = opt_str(o, "backend", in.in_agent || !in_process_ssh() ? "openssh" : "libssh2");
    if (backend != "openssh" && backend != "libssh2")
        throw Error(SPORE_EINVAL, "ssh backend must be libssh2 or openssh (not '" + backend + "')");
    if (backend == "libssh2") return build_ssh_libssh2(in);
    std::string host = opt_required(o, "hostname", "ssh");
    std::string password = opt_str(o, "password"), passphrase = opt_str(o, "identity_passphrase");
    std::string check = opt_str(o, "check_host_keys", "enforce");
    if (check != "enforce" && check != "accept" && check != "ignore")
        throw Error(SPORE_EINVAL, "check_host_keys must be enforce, accept or ignore (not '" + check + "')");
    int64_t debug = opt_int(o, "ssh_debug_level", 0);
    if (debug < 0 || debug > 3) throw Error(SPORE_EINVAL, "ssh_debug_level must be 0 to 3");
    int64_t port = opt_int(o, "port", 0);
    if (port < 0 || port > 65535) throw Error(SPORE_EINVAL, "port must be 1 to 65535");

    LaunchSpec spec;
    bool interactive = !password.empty() || !passphrase.empty();
    spec.tty = interactive ? TtyMode::Hybrid : TtyMode::None;
    auto &a = spec.argv;
    a = {opt_str(o, "ssh_path", "ssh")};
    if (debug > 0) {
        a.push_back("-" + std::string(size_t(debug), 'v'));
        spec.debug_line_prefix = "debug";
    } else {
        // Keeps banners and warnings (which may say "password") off the channel.
        a.insert(a.end(), {"-o", "LogLevel ERROR"});
    }
    std::string user = opt_str(o, "username");
    if (!user.empty()) a.insert(a.end(), {"-l", user});
    if (port) a.insert(a.end(), {"-p", std::to_string(port)});
    std::string key = opt_str(o, "identity_file");
    if (!key.empty()) a.insert(a.end(), {"-i", key});
    if (opt_bool(o, "identities_only", true) && (!key.empty() || !password.empty()))
        a.insert(a.end(), {"-o", "IdentitiesOnly yes"});
    if (!opt_bool(o, "use_agent", true)) a.insert(a.end(), {"-o", "IdentityAgent none"});
    if (opt_bool(o, "compression", false)) a.insert(a.end(), {"-o", "Compression yes"});
    int64_t ka = opt_int(o, "keepalive_interval", 15), kc = opt_int(o, "keepalive_count", 3);
    if (ka > 0) a.insert(a.end(), {"-o", "ServerAliveInterval " + std::to_string(ka), "-o", "ServerAliveCountMax " + std::to_string(kc)});
    if (!interactive) a.insert(a.end(), {"-o", "BatchMode yes"});
    else if (password.empty()) a.insert(a.end(), {"-o", "PasswordAuthentication no", "-o", "KbdInteractiveAuthentication no"});
    std::string known = opt_str(o, "known_hosts_file");
    if (check == "ignore") {
        a.insert(a.end(), {"-o", "StrictHostKeyChecking no", "-o", "UserKnownHostsFile /dev/null", "-o",
                           "GlobalKnownHostsFile /dev/null"});
    } else {
        a.insert(a.end(), {"-o", check == "accept" ? "StrictHostKeyChecking accept-new" : "StrictHostKeyChecking yes"});
        if (!known.empty()) a.insert(a.end(), {"-o", "UserKnownHostsFile " + known});
    }
    auto extra = option_words(o, "ssh_args");
    // ciphers: the user's list as is; unset, AES-GCM goes before ssh's
    // default order where the CPU has AES instructions ("^" keeps the rest
    // of the defaults behind it); "" leaves the choice to ssh and its
    // configuration files.
    const std::string cipher_list = opt_str(o, "ciphers");
    if (cJSON_GetObjectItemCaseSensitive(o, "ciphers")) {
        if (!cipher_list.empty()) a.insert(a.end(), {"-o", "Ciphers " + cipher_list});
    } else if (cpu_has_aes() && !args_choose_ciphers(extra)) {
        a.insert(a.end(), {"-o", "Ciphers ^aes128-gcm@openssh.com,aes256-gcm@openssh.com"});
    }
    a.insert(a.end(), extra.begin(), extra.end());
    a.push_back(host);
    a.push_back(in.boot_command_line());

    spec.secrets = {{"password", password}, {"passphrase", passphrase}};
    PromptTable &t = spec.prompts;
    add_user_prompts(t, o);
    t.add_note("fingerprint (for the [^ ]+ key sent by the remote host )?is[[:space:]]*$");
    t.add_note("^(SHA256|MD5):[^ ]+");
    t.add_note("key fingerprint is");
    t.add_failure("remote host identification has changed", SPORE_EHOSTKEY, "the host key of " + host + " has changed");
    t.add_failure("no [^ ]+ host key is known for", SPORE_EHOSTKEY, "the host key of " + host + " is not known");
    t.add_failure("host key verification failed", SPORE_EHOSTKEY, "host key verification failed for " + host);
    // ssh's own refusal lists the methods it tried; a remote shell's
    // "Permission denied" (say, from cd) does not look like this.
    t.add_denied("^([^ ]+@[^ ]+: )?permission denied \\([a-z,-]+\\)", "ssh: authentication failed");
    t.add_failure("too many authentication failures", SPORE_EAUTH, "ssh: too many authentication failures");
    t.add_failure("bad ssh2 cipher spec", SPORE_EINVAL,
                  cipher_list.empty() ? "ssh does not know a cipher given in ssh_args"
                                      : "ssh does not know the ciphers '" + cipher_list + "'");
    t.add_failure("(verification code|one-time password|otp)[^\n]*:[[:space:]]*$", SPORE_EPASSREQ,
                  "ssh asks for a one-time code; add a pattern with password_prompts to answer it", true);
    t.add_prompt("enter passphrase for[^\n]*:[[:space:]]*$", "passphrase");
    t.add_prompt("password:[[:space:]]*$", "password");
    return spec;
}

}  // namespace spore
