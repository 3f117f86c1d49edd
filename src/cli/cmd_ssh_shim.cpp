// spore ssh-shim: stands in for ssh where a tool wants one (rsync -e,
// GIT_SSH_COMMAND): runs the command in the last hop of a target with our
// stdin, stdout and stderr as its flow-controlled streams.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cmd.h"
#include "failure.h"
#include "io.h"
#include "json.h"
#include "session.h"
#include "target.h"

namespace spore::cli {

const char kShimHelp[] =
    "Usage: spore [OPTIONS] ssh-shim [--target TARGET] [ssh options] HOST COMMAND...\n"
    "\n"
    "Stands in for ssh where a tool wants one (rsync -e, GIT_SSH_COMMAND, scp -S):\n"
    "runs COMMAND (joined by spaces and given to /bin/sh -c, as ssh does) in the\n"
    "last hop of TARGET, or of HOST when there is no --target, and connects its\n"
    "stdin, stdout and stderr to ours as flow-controlled streams. Exits with the\n"
    "command's status (128+N if signal N killed it).\n"
    "\n"
    "ssh options the tools pass (-l USER -p PORT -o OPT -i FILE -F FILE -e CHAR\n"
    "-c CIPHER -m MAC and the flags -T -t -x -a -q -C -n -4 -6 -v) are accepted\n"
    "and ignored: the target says how to get there.\n"
    "\n"
    "Example (the host part of the rsync destination is not used with --target):\n"
    "  rsync -a -e 'spore ssh-shim --target ssh://deploy@web1/sudo:root' ./site/ x:/srv/site/\n";

namespace {

struct ShimOptions {
    std::optional<std::string> target;
    std::string host;
    std::string command;  // the words after HOST, joined by spaces as ssh does
};

// Takes an ssh option at the cursor (the target says how to get there, so
// they are ignored); false when it is none.
bool skip_ssh_option(Args &a) {
    static const char *with_value[] = {"-l", "-p", "-o", "-i", "-F", "-e", "-c", "-m", "-b", "-J", "-E"};
    static const char *flags[] = {"-T", "-t", "-x", "-X", "-a", "-A", "-q", "-C", "-n",
                                  "-N", "-4", "-6", "-v", "-vv", "-vvv", "-k", "-K"};
    const std::string &s = a.peek();
    for (const char *o : with_value) {
        if (s == o) {
            if (a.i + 1 >= a.v.size()) usage_error("option " + s + " needs a value");
            a.i += 2;
            return true;
        }
        if (s.size() > 2 && s.compare(0, 2, o) == 0) {  // -lUSER, -oOpt=...
            ++a.i;
            return true;
        }
    }
    for (const char *o : flags) {
        if (s == o) {
            ++a.i;
            return true;
        }
    }
    return false;
}

// Nullopt once --help has been shown: that is then all there is to do.
std::optional<ShimOptions> parse_shim_options(Args &a, Global &g) {
    ShimOptions o;
    while (!a.done()) {
        const std::string s = a.peek();
        std::string value;
        if (s == "--") {
            ++a.i;
            break;
        }
        if (s.empty() || s[0] != '-') break;
        if (help_option(a, kShimHelp)) return std::nullopt;
        if (a.value_opt("--target", nullptr, value)) o.target = value;
        else if (!skip_ssh_option(a) && !global_option(a, g))
            usage_error("unknown option '" + s + "' for ssh-shim (see spore ssh-shim --help)");
    }
    if (a.done()) usage_error("ssh-shim needs a host (or --target) and a command");
    o.host = a.peek();
    ++a.i;
    if (a.done()) usage_error("ssh-shim needs a command to run (an interactive shell is not supported)");
    for (size_t first = a.i; !a.done(); ++a.i) o.command += (a.i > first ? " " : "") + a.peek();
    return o;
}

// Our stdin to the process until it ends, or until stop_fd is readable.
void copy_stdin(spore_process *p, int stop_fd) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
        pollfd fds[2] = {{0, POLLIN, 0}, {stop_fd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0 && errno == EINTR) continue;
        if (fds[1].revents) return;
        ssize_t n = ::read(0, buf.data(), buf.size());
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n <= 0) {
            spore_process_close_stdin(p);
            return;
        }
        if (spore_process_write(p, buf.data(), size_t(n), -1) != SPORE_OK) return;
    }
}

// The process's stdout (fd 1) or stderr (fd 2) to ours, until it ends.
void copy_output(spore_process *p, int fd) {
    std::vector<char> buf(256 * 1024);
    for (;;) {
        int n = spore_process_read(p, fd, buf.data(), buf.size(), -1);
        if (n <= 0) return;
        if (!write_all(fd, std::string_view(buf.data(), size_t(n)))) return;
    }
}

// Relays our stdio until the process ends; its status as our exit code.
int relay_stdio(spore_process *p) {
    Pipe stop = make_pipe(O_CLOEXEC);
    std::thread in([&] { copy_stdin(p, stop.read_end.get()); });
    std::thread err([&] { copy_output(p, 2); });
    copy_output(p, 1);
    err.join();
    int code = -1, sig = 0;
    int rc = spore_process_wait(p, &code, &sig, -1);
    ssize_t w = ::write(stop.write_end.get(), "x", 1);
    (void)w;
    in.join();
    if (rc != SPORE_OK) lib_failure(kExitRuntime);
    return sig ? 128 + sig : code;
}

}  // namespace

int cmd_ssh_shim(Args &a, Global &g) {
    std::optional<ShimOptions> parsed = parse_shim_options(a, g);
    if (!parsed) return kExitOk;
    const ShimOptions &o = *parsed;
    std::vector<Hop> hops = parse_target(o.target ? *o.target : o.host);

    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_WARNING, g.verbose, 10000);
    spore_context *ctx = s.open(hops);
    JsonPtr args = new_json_object();
    add_json_string(args.get(), "shell", o.command);
    spore_process *started = nullptr;
    if (spore_proc_start(&started, ctx, format_json(args.get(), false).c_str(), nullptr) != SPORE_OK)
        lib_failure(kExitConnect);
    ProcessPtr process(started);
    return relay_stdio(process.get());
}

}  // namespace spore::cli
