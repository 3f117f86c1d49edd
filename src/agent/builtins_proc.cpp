// proc.run: runs a program, feeds its stdin, captures and/or streams its
// output, with a timeout that kills its whole process group.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "agent/builtins_util.h"

namespace spore::agent::detail {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kLogInfo = 20;               // SPORE_LOG_INFO (spore/spore.h)
constexpr size_t kLineMax = 64 * 1024;      // streamed lines longer than this are split
constexpr size_t kChunk = 64 * 1024;        // read/write size
constexpr int64_t kDefaultMaxOutput = 64 << 20;
constexpr auto kKillGrace = std::chrono::seconds(1);  // drain time after a timeout kill

struct OutStream {
    const char *name;
    UniqueFd fd;
    std::string captured, line;
    bool truncated = false;
};

// What is done with the child's output.
struct Options {
    bool stream, capture;
    bool stdout_binary;  // stdout goes back as the reply's data
    size_t max_output;
    uint32_t caller;  // output records go to the caller
};

void emit_line(OutStream &s, const Options &opt, Services &svc) {
    svc.log_to(opt.caller, kLogInfo, s.name, utf8_sanitize(s.line));
    s.line.clear();
}

void consume(OutStream &s, const char *buf, size_t n, const Options &opt, Services &svc) {
    if (opt.capture) {
        size_t room = opt.max_output - std::min(opt.max_output, s.captured.size());
        s.captured.append(buf, std::min(room, n));
        if (n > room) s.truncated = true;
    }
    if (!opt.stream) return;
    size_t i = 0;
    while (i < n) {
        const void *nl = memchr(buf + i, '\n', n - i);
        size_t end = nl ? size_t(static_cast<const char *>(nl) - buf) : n;
        while (i < end) {
            if (s.line.size() == kLineMax) emit_line(s, opt, svc);
            size_t take = std::min(end - i, kLineMax - s.line.size());
            s.line.append(buf + i, take);
            i += take;
        }
        if (nl) {
            emit_line(s, opt, svc);
            i = end + 1;
        }
    }
}

int ms_until(Clock::time_point t) {
    auto d = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
    return int(std::clamp<int64_t>(d, 0, 1 << 30));
}

// What proc.run was asked for, read and checked before anything starts.
struct RunArgs {
    SpawnSpec spec;
    std::optional<std::string> stdin_arg;
    int64_t timeout_ms = 0;
    Options opt{};

    // What goes to the child's stdin: "stdin", or else the call's data.
    std::string_view input(const CallRequest &req) const {
        return stdin_arg ? std::string_view(*stdin_arg) : req.data;
    }
};

RunArgs read_run_args(const CallRequest &req, Services &svc) {
    RunArgs args;
    args.spec = parse_spawn_spec(req);
    args.stdin_arg = arg_opt_str(req, "stdin");
    args.timeout_ms = arg_int(req, "timeout_ms", 0, 0, int64_t(1) << 40);
    args.opt.stream = arg_bool(req, "stream", false) && svc.log_enabled(kLogInfo);
    args.opt.capture = arg_bool(req, "capture", true);
    args.opt.stdout_binary = arg_bool(req, "stdout_binary", false);
    args.opt.max_output = size_t(arg_int(req, "max_output", kDefaultMaxOutput, 0, int64_t(1) << 50));
    args.opt.caller = req.caller;
    return args;
}

// Which end of a child's pipe is ours, and so must not block.
enum class ParentEnd { read, write };

Pipe open_nonblocking_pipe(const CallRequest &req, ParentEnd ours) {
    Pipe p = open_pipe(req);
    if (!p.read_end || !p.write_end) throw_os(req, "pipe", errno);
    int nb = ours == ParentEnd::read ? p.read_end.get() : p.write_end.get();
    if (fcntl(nb, F_SETFL, fcntl(nb, F_GETFL) | O_NONBLOCK) != 0) throw_os(req, "pipe", errno);
    return p;
}

// Without input the child gets no stdin pipe: it reads /dev/null.
StdioPipes open_run_pipes(const CallRequest &req, bool has_input) {
    StdioPipes pipes;
    if (has_input) pipes.in = open_nonblocking_pipe(req, ParentEnd::write);
    pipes.out = open_nonblocking_pipe(req, ParentEnd::read);
    pipes.err = open_nonblocking_pipe(req, ParentEnd::read);
    return pipes;
}

pid_t spawn_on_pipes(const CallRequest &req, SpawnSpec &spec, const StdioPipes &pipes, Services &svc) {
    SpawnFileActions actions;
    posix_spawn_file_actions_t *fa = &actions.fa;
    if (pipes.in.read_end) check_spawn(posix_spawn_file_actions_adddup2(fa, pipes.in.read_end.get(), 0));
    else check_spawn(posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0));
    check_spawn(posix_spawn_file_actions_adddup2(fa, pipes.out.write_end.get(), 1));
    check_spawn(posix_spawn_file_actions_adddup2(fa, pipes.err.write_end.get(), 2));
    return spawn_child(req, spec, fa, false, svc);
}

// At the deadline the child's process group is killed; its pipes then get
// kKillGrace to drain.
struct RunTimeout {
    explicit RunTimeout(int64_t timeout_ms)
        : has_deadline(timeout_ms > 0), deadline(Clock::now() + std::chrono::milliseconds(timeout_ms)) {}

    const bool has_deadline;
    const Clock::time_point deadline;
    Clock::time_point grace_end{};
    bool timed_out = false;
};

// proc.run's side of the child's pipes: the input written to its stdin, its
// stdout and stderr captured and/or streamed.
class RunIo {
public:
    RunIo(StdioPipes &pipes, std::string_view input, const Options &opt, Services &svc)
        : in_(std::move(pipes.in.write_end)), input_(input), opt_(opt), svc_(svc),
          outs_{{"stdout", std::move(pipes.out.read_end), {}, {}, false},
                {"stderr", std::move(pipes.err.read_end), {}, {}, false}} {}

    // Moves bytes until every pipe is closed, or the grace after a timeout
    // kill is over.
    void pump(const CallRequest &req, pid_t pid, RunTimeout &timeout);
    // Closes the pipes and streams what is left of the last lines.
    void finish();
    // {"rc", "signal", "stdout", "stderr", "timed_out", "truncated", "pid"}
    void fill_reply(CallReply &reply, const ChildProcess &child, bool timed_out);

private:
    bool open() const { return in_ || outs_[0].fd || outs_[1].fd; }
    void poll_and_move(const CallRequest &req, int wait_ms, SigpipeBlock &sigpipe);
    void write_input(SigpipeBlock &sigpipe);
    void drain(OutStream &s);

    UniqueFd in_;  // the child's stdin, while input is left
    std::string_view input_;
    size_t in_off_ = 0;
    const Options &opt_;
    Services &svc_;
    OutStream outs_[2];
    std::vector<char> buf_ = std::vector<char>(kChunk);
};

void RunIo::pump(const CallRequest &req, pid_t pid, RunTimeout &timeout) {
    SigpipeBlock sigpipe;
    while (open()) {
        int wait_ms = -1;
        if (timeout.timed_out) {
            wait_ms = ms_until(timeout.grace_end);
            if (wait_ms == 0) break;  // something outside the group holds the pipes
        } else if (timeout.has_deadline) {
            wait_ms = ms_until(timeout.deadline);
            if (wait_ms == 0) {
                ::kill(-pid, SIGKILL);
                timeout.timed_out = true;
                in_.reset();
                timeout.grace_end = Clock::now() + kKillGrace;
                continue;
            }
        }
        poll_and_move(req, wait_ms, sigpipe);
    }
}

void RunIo::poll_and_move(const CallRequest &req, int wait_ms, SigpipeBlock &sigpipe) {
    pollfd pfds[3];
    int n = 0, in_idx = -1, out_idx[2] = {-1, -1};
    if (in_) {
        in_idx = n;
        pfds[n++] = {in_.get(), POLLOUT, 0};
    }
    for (int k = 0; k < 2; ++k)
        if (outs_[k].fd) {
            out_idx[k] = n;
            pfds[n++] = {outs_[k].fd.get(), POLLIN, 0};
        }
    if (poll(pfds, nfds_t(n), wait_ms) < 0) {
        if (errno == EINTR) return;
        throw_os(req, "poll", errno);
    }
    if (in_idx >= 0 && pfds[in_idx].revents) write_input(sigpipe);
    for (int k = 0; k < 2; ++k)
        if (out_idx[k] >= 0 && pfds[out_idx[k]].revents) drain(outs_[k]);
}

void RunIo::write_input(SigpipeBlock &sigpipe) {
    size_t len = std::min(kChunk, input_.size() - in_off_);
    ssize_t w = ::write(in_.get(), input_.data() + in_off_, len);
    if (w > 0) in_off_ += size_t(w);
    else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        if (errno == EPIPE) sigpipe.got_epipe = true;
        in_.reset();  // the child stopped reading: not an error
    }
    if (in_off_ == input_.size()) in_.reset();
}

// Reads what is there (bounded, to stay fair to the other pipes).
void RunIo::drain(OutStream &s) {
    for (int rounds = 0; rounds < 16; ++rounds) {
        ssize_t got = ::read(s.fd.get(), buf_.data(), buf_.size());
        if (got > 0) {
            consume(s, buf_.data(), size_t(got), opt_, svc_);
            if (size_t(got) < buf_.size()) break;
            continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
        s.fd.reset();  // EOF or error
        break;
    }
}

void RunIo::finish() {
    in_.reset();
    for (OutStream &s : outs_) {
        s.fd.reset();
        if (opt_.stream && !s.line.empty()) emit_line(s, opt_, svc_);
    }
}

void RunIo::fill_reply(CallReply &reply, const ChildProcess &child, bool timed_out) {
    Json res = json_object();
    cJSON *o = res.get();
    add_exit_status(o, child.status());
    if (opt_.stdout_binary) {
        reply.data = std::move(outs_[0].captured);
        add_str(o, "stdout", "");
    } else {
        add_str(o, "stdout", outs_[0].captured);
    }
    add_str(o, "stderr", outs_[1].captured);
    add(o, "timed_out", check(cJSON_CreateBool(timed_out)));
    add(o, "truncated", check(cJSON_CreateBool(outs_[0].truncated || outs_[1].truncated)));
    add_num(o, "pid", child.pid);
    reply.result = std::move(res);
}

// A child that closed its pipes but runs on is still held to the deadline.
void reap_within_deadline(ChildProcess &child, RunTimeout &timeout) {
    if (timeout.has_deadline && !timeout.timed_out) {
        long sleep_us = 1000;
        while (!child.wait(WNOHANG)) {
            if (Clock::now() >= timeout.deadline) {
                ::kill(-child.pid, SIGKILL);
                timeout.timed_out = true;
                break;
            }
            long left = long(std::chrono::duration_cast<std::chrono::microseconds>(
                                 timeout.deadline - Clock::now()).count());
            struct timespec ts {0, 1000 * std::clamp(left, 1L, sleep_us)};
            nanosleep(&ts, nullptr);
            sleep_us = std::min(sleep_us * 2, 50000L);
        }
    }
    if (!child.reaped()) child.wait(0);
}

}  // namespace

void proc_run(const CallRequest &req, CallReply &reply, Services &svc) {
    RunArgs args = read_run_args(req, svc);
    const std::string_view input = args.input(req);
    StdioPipes pipes = open_run_pipes(req, !input.empty());
    ChildProcess child(spawn_on_pipes(req, args.spec, pipes, svc), svc);  // from here on always killed/reaped
    pipes.close_child_ends();
    RunTimeout timeout(args.timeout_ms);
    RunIo io(pipes, input, args.opt, svc);
    io.pump(req, child.pid, timeout);
    io.finish();
    reap_within_deadline(child, timeout);
    io.fill_reply(reply, child, timeout.timed_out);
}

}  // namespace spore::agent::detail
