// Connection methods (DESIGN §5): each turns its options into the command
// that starts a child whose stdin/stdout reach a POSIX sh running the first
// stage (or, for fork, the agent itself), says whether that command needs a
// terminal, and which prompts it may print. One source file per method.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/options.h"
#include "core/loop.h"
#include "core/prompts.h"

namespace spore {

enum class TtyMode {
    None,    // stdin/stdout on a socketpair, stderr on a pipe
    Hybrid,  // stdin/stdout on a socketpair; stderr and the controlling
             // terminal on a pty (sudo, doas and ssh read passwords from /dev/tty)
    Full,    // stdin, stdout and stderr all on a pty (su insists on one)
};

struct LaunchSpec {
    std::vector<std::string> argv;
    // True when argv starts the agent directly (no first stage, no image).
    bool agent_direct = false;
    TtyMode tty = TtyMode::None;
    // Prompts are answered on the launcher's stdin (sudo -S) rather than
    // on a terminal.
    bool answer_on_stdin = false;
    PromptTable prompts;
    // Secrets the prompts may send, by name ("password", "passphrase").
    std::vector<std::pair<std::string, std::string>> secrets;
    // Where the launcher is a program that prints debug lines (ssh -v), the
    // pattern of those lines: after the hello they become debug logs.
    std::string debug_line_prefix;
    // Instead of a process: an in-process ssh session (libssh2) that runs
    // remote_command; argv then only describes it for logs.
    bool in_process_ssh = false;
    Json ssh_options;
    std::string remote_command;
};

// The in-process ssh transport is linked into the master library only (the
// static agent has no libssh2); the master registers it at start-up.
struct InProcessSshHooks {
    std::function<void(int code, const std::string &why)> failed;
    std::function<void(const std::string &line)> debug;
};
struct InProcessSsh {
    // Starts a session; stream_fd and err_fd become the session's.
    std::shared_ptr<void> (*start)(Loop &loop, const LaunchSpec &spec, int stream_fd, int err_fd, InProcessSshHooks hooks);
    void (*stop)(const std::shared_ptr<void> &session);
};
void register_in_process_ssh(const InProcessSsh *backend);
const InProcessSsh *in_process_ssh();

struct LaunchInput {
    const cJSON *options = nullptr;  // the connect options (a JSON object)
    std::string first_stage;         // the sh script to run in the target
    std::string agent_args;          // argv words for a directly started agent
    bool in_agent = false;           // true when an agent (not the master) connects
    std::string local_agent;         // a spore-agent executable on this machine

    // The command that runs the first stage: command_prefix words, then
    // /bin/sh -c <first stage>. A prefix with shell operators (&&, ;) is run
    // by /bin/sh itself.
    std::vector<std::string> boot_argv() const;
    // The same as one sh command line (for launchers that take a string: ssh, su).
    std::string boot_command_line() const;
    // The same, free of '$' (sudo -i re-quotes its command but leaves '$'
    // for the login shell to expand).
    std::vector<std::string> boot_argv_without_dollar() const;
};

using BuildLaunchFn = LaunchSpec (*)(const LaunchInput &);

struct MethodInfo {
    std::string_view name;
    BuildLaunchFn build;
    bool needs_agent;                    // only possible through `via` (fork)
    std::vector<OptionSpec> options;     // method-specific options (core/options.h)
};

// Null when the method is unknown.
const MethodInfo *find_method(std::string_view name);
// Every method, in the order of the registry (for docs and --help).
const std::vector<MethodInfo> &all_methods();

// Throws spore::Error(SPORE_EINVAL) for unknown keys and wrong types.
void validate_options(const MethodInfo &m, const cJSON *opts);

// Helpers for the builders.
std::string opt_str(const cJSON *o, const char *key, const std::string &def = "");
bool opt_bool(const cJSON *o, const char *key, bool def = false);
int64_t opt_int(const cJSON *o, const char *key, int64_t def = 0);
// A required string option; throws SPORE_EINVAL naming method and key.
std::string opt_required(const cJSON *o, const char *key, std::string_view method);
// Extra prompt patterns from the options `password_prompts` and
// `incorrect_prompts` (lists), added before the method's own.
void add_user_prompts(PromptTable &t, const cJSON *o, const std::string &secret = "password");

// Whether this CPU has AES instructions, with which the OpenSSH backend
// puts AES-GCM first (ssh.cpp).
bool cpu_has_aes();

// Declarations of the per-method builders (one file each).
LaunchSpec build_local(const LaunchInput &in);
LaunchSpec build_fork(const LaunchInput &in);
LaunchSpec build_ssh(const LaunchInput &in);
LaunchSpec build_sudo(const LaunchInput &in);
LaunchSpec build_su(const LaunchInput &in);
LaunchSpec build_doas(const LaunchInput &in);
LaunchSpec build_docker(const LaunchInput &in);
LaunchSpec build_podman(const LaunchInput &in);
LaunchSpec build_lxc(const LaunchInput &in);
LaunchSpec build_lxd(const LaunchInput &in);
LaunchSpec build_kubectl(const LaunchInput &in);
LaunchSpec build_jail(const LaunchInput &in);
LaunchSpec build_setns(const LaunchInput &in);
LaunchSpec build_machinectl(const LaunchInput &in);

}  // namespace spore
