// spore daemon: a router listening on a Unix socket, so that commands given
// --daemon open their targets through it and hops stay connected between them.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "cmd.h"
#include "failure.h"
#include "handles.h"
#include "io.h"
#include "log_pump.h"
#include "signals.h"

namespace spore::cli {

const char kDaemonHelp[] =
    "Usage: spore daemon [--socket PATH] [--foreground] [--log-file FILE]\n"
    "       spore daemon --stop [--socket PATH]\n"
    "       spore daemon --status [--socket PATH]\n"
    "\n"
    "Runs a router in the background that listens on a Unix socket, so that\n"
    "commands given --daemon PATH (or $SPORE_DAEMON) open their targets through\n"
    "it: each hop is connected once and stays connected for every later command\n"
    "(SSH connections, sudo sessions, agents). Only this user can use it: the\n"
    "socket has mode 0600 in a directory of mode 0700 (created if missing).\n"
    "A command that is interrupted stops what it started; the daemon and its\n"
    "connections stay. The daemon stops on SIGTERM, SIGINT or --stop, and then\n"
    "shuts every context down.\n"
    "\n"
    "Options:\n"
    "  --socket PATH     where to listen (default: $SPORE_DAEMON, else\n"
    "                    $XDG_RUNTIME_DIR/spore/daemon.sock, else /tmp/spore-UID/daemon.sock)\n"
    "  --foreground      stay in the foreground, log records on stderr\n"
    "  --log-file FILE   append log records to FILE (default: none in the background)\n"
    "  --stop            stop the daemon listening at the socket and wait for it to go\n"
    "  --status          exit 0 if a daemon answers at the socket, 1 if not\n"
    "  -v, --verbose     log from level DEBUG (default INFO)\n"
    "\n"
    "Examples:\n"
    "  spore daemon\n"
    "  export SPORE_DAEMON=/tmp/spore-$(id -u)/daemon.sock\n"
    "  spore run ssh://web1/sudo:root -- systemctl restart nginx   # connects\n"
    "  spore run ssh://web1/sudo:root -- systemctl status nginx    # reuses the connection\n"
    "  rsync -a -e 'spore ssh-shim --target ssh://web1' ./site/ x:/srv/site/\n"
    "  spore daemon --stop\n";

namespace {

struct DaemonOptions {
    std::optional<std::string> socket, log_file;
    bool foreground = false, stop = false, status = false;
};

// Nullopt once --help has been shown: that is then all there is to do.
std::optional<DaemonOptions> parse_daemon_options(Args &a, Global &g) {
    DaemonOptions o;
    while (!a.done()) {
        std::string value;
        const std::string &s = a.peek();
        if (help_option(a, kDaemonHelp)) return std::nullopt;
        if (a.value_opt("--socket", nullptr, value)) o.socket = value;
        else if (a.value_opt("--log-file", nullptr, value)) o.log_file = value;
        else if (a.flag("--foreground")) o.foreground = true;
        else if (a.flag("--stop")) o.stop = true;
        else if (a.flag("--status")) o.status = true;
        else if (!global_option(a, g)) usage_error("unknown argument '" + s + "' for daemon (see spore daemon --help)");
    }
    if (o.stop && o.status) usage_error("--stop and --status exclude each other");
    return o;
}

std::string default_daemon_socket() {
    if (const char *e = std::getenv("SPORE_DAEMON"); e && *e) return e;
    if (const char *x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/spore/daemon.sock";
    return "/tmp/spore-" + std::to_string(::geteuid()) + "/daemon.sock";
}

// The daemon's pid, kept beside its socket for --stop.
std::string pid_file_for(const std::string &socket) { return socket + ".pid"; }

bool daemon_answers(const std::string &socket) {
    spore_options *o = nullptr;
    if (spore_options_new(&o) != SPORE_OK) return false;
    OptionsPtr opts(o);
    spore_options_set_int(o, "connect_timeout", 5000);
    spore_router *r = nullptr;
    int rc = spore_router_attach(&r, socket.c_str(), o);
    RouterPtr attached(r);
    return rc == SPORE_OK;
}

int report_status(const std::string &path, const Global &g) {
    bool up = daemon_answers(path);
    if (!g.quiet) out_stdout(up ? "a spore daemon listens at " + path + "\n" : "no spore daemon at " + path + "\n");
    return up ? kExitOk : kExitRuntime;
}

int stop_daemon(const std::string &path, const Global &g) {
    if (!daemon_answers(path)) throw Failure{kExitRuntime, "no spore daemon answers at " + path};
    std::string text = read_file(pid_file_for(path));
    long pid = std::strtol(text.c_str(), nullptr, 10);
    if (pid <= 1) throw Failure{kExitRuntime, "no daemon pid in " + pid_file_for(path)};
    if (::kill(pid_t(pid), SIGTERM) != 0)
        throw Failure{kExitRuntime, "cannot stop the daemon (pid " + std::to_string(pid) + "): " + std::strerror(errno)};
    // Gone when its socket is: it removes it after shutting its contexts down.
    for (int i = 0; i < 300 && ::access(path.c_str(), F_OK) == 0; ++i) ::usleep(50000);
    if (::access(path.c_str(), F_OK) == 0)
        throw Failure{kExitRuntime, "the daemon (pid " + std::to_string(pid) + ") did not stop within 15 s"};
    if (!g.quiet) out_stderr("spore: stopped the daemon at " + path + "\n");
    return kExitOk;
}

// Tells the parent of a daemon started in the background, once, that it
// listens ("R<pid>") or why it cannot ("E<message>"). Says nothing in the
// foreground, where there is no parent waiting.
class ReadinessReport {
public:
    explicit ReadinessReport(UniqueFd fd = UniqueFd()) : fd_(std::move(fd)) {}
    void send(const std::string &msg) {
        if (!fd_) return;
        (void)write_all(fd_.get(), msg);
        fd_.reset();
    }

private:
    UniqueFd fd_;
};

RouterPtr listening_router(const std::string &socket, int log_level, ReadinessReport &report) {
    auto fail = [&](const std::string &msg) {
        report.send("E" + msg);
        throw Failure{kExitRuntime, msg};
    };
    spore_options *o = nullptr;
    if (spore_options_new(&o) != SPORE_OK) fail(error_text(spore_last_error()));
    OptionsPtr opts(o);
    spore_router *r = nullptr;
    if (spore_options_set_int(o, "log_level", log_level) != SPORE_OK || spore_router_new(&r, o) != SPORE_OK)
        fail(error_text(spore_last_error()));
    RouterPtr router(r);
    if (spore_router_listen(r, socket.c_str()) != SPORE_OK)
        fail("cannot listen at " + socket + ": " + error_text(spore_last_error()));
    return router;
}

void write_pid_file(const std::string &pidfile) {
    UniqueFd fd(::open(pidfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd) (void)write_all(fd.get(), std::to_string(::getpid()) + "\n");
}

void write_log_record(const spore_log_record *rec, int log_fd) {
    char when[32];
    time_t t = time_t(spore_log_record_time(rec));
    struct tm tm {};
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    (void)write_all(log_fd, std::string(when) + " " + record_line(rec, flatten(spore_log_record_message(rec))) + "\n");
}

// Runs the listening router until a signal, writing its log records to
// log_fd when there is one.
int run_daemon(const std::string &socket, int log_level, ReadinessReport report, int log_fd) {
    RouterPtr router = listening_router(socket, log_level, report);
    std::string pidfile = pid_file_for(socket);
    write_pid_file(pidfile);
    report_signals(true);  // signals now end the loop below instead of the process
    report.send("R" + std::to_string(::getpid()));
    int log_src = spore_router_log_fd(router.get());
    int signo = 0;
    while (!signo) {
        pollfd p[2] = {{interrupt_fd(), POLLIN, 0}, {log_src, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[0].revents) signo = take_interrupt();
        spore_log_record *rec = nullptr;
        while (spore_router_next_log(router.get(), &rec, 0) == SPORE_OK) {
            if (log_fd >= 0) write_log_record(rec, log_fd);
            spore_log_record_free(rec);
        }
    }
    ::unlink(pidfile.c_str());
    return kExitOk;  // freeing the router shuts the contexts down and removes the socket
}

// The forked child: a session of its own, stdio on /dev/null (stderr on the
// log file when there is one).
[[noreturn]] void become_daemon(const std::string &path, int log_level, UniqueFd ready, int log_fd) {
    ::setsid();
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(log_fd >= 0 ? log_fd : null, 2);
    }
    int rc = kExitRuntime;
    try {
        rc = run_daemon(path, log_level, ReadinessReport(std::move(ready)), log_fd >= 0 ? 2 : -1);
    } catch (...) {
        // Said through the readiness report, or by its silence.
    }
    ::_exit(rc);
}

// The child runs the daemon and tells us through a pipe once it listens
// (or why it cannot).
int start_in_background(const std::string &path, int log_level, UniqueFd log_file, const Global &g) {
    Pipe ready = make_pipe(O_CLOEXEC);
    pid_t child = ::fork();
    if (child < 0) system_failure("fork");
    if (child == 0) {
        ready.read_end.reset();
        become_daemon(path, log_level, std::move(ready.write_end), log_file.get());
    }
    ready.write_end.reset();
    log_file.reset();
    std::string answer = read_all(ready.read_end.get(), "the daemon's answer");
    if (answer.empty() || answer[0] != 'R') {
        int st = 0;
        ::waitpid(child, &st, 0);
        throw Failure{kExitRuntime, answer.size() > 1 ? answer.substr(1) : "the daemon exited before it listened"};
    }
    if (!g.quiet) out_stderr("spore: daemon listening at " + path + " (pid " + answer.substr(1) + ")\n");
    out_stdout(path + "\n");
    return kExitOk;
}

}  // namespace

int cmd_daemon(Args &a, Global &g) {
    std::optional<DaemonOptions> parsed = parse_daemon_options(a, g);
    if (!parsed) return kExitOk;
    const DaemonOptions &o = *parsed;
    std::string path = o.socket ? *o.socket : default_daemon_socket();
    if (o.status) return report_status(path, g);
    if (o.stop) return stop_daemon(path, g);

    int level = g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_INFO;
    UniqueFd log_file;
    if (o.log_file) {
        log_file.reset(::open(o.log_file->c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        if (!log_file) throw Failure{kExitRuntime, "cannot open " + *o.log_file + ": " + std::strerror(errno)};
    }
    if (o.foreground) return run_daemon(path, level, ReadinessReport(), log_file ? log_file.get() : 2);
    return start_in_background(path, level, std::move(log_file), g);
}

}  // namespace spore::cli
