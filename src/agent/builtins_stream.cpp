// proc.start, proc.signal, proc.resize: processes whose stdin, stdout and
// stderr are flow-controlled channels (docs/protocol.md, "Process
// streams"). One worker thread per process moves the bytes with poll(); the
// loop thread only hands it channel data and window credit, and wakes it.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <optional>

#include "agent/builtins_util.h"
#include "core/channel.h"

namespace spore::agent::detail {

namespace {

constexpr size_t kStreamChunk = 64 * 1024;

// The running streamed processes of this agent, for proc.signal and
// proc.resize: (caller, stdin channel) -> what they need.
struct RunningProcess {
    pid_t pid = -1;  // also its process group (and session, with a pty)
    int pty = -1;    // the pty master, or -1
};

class ProcessTable {
public:
    static ProcessTable &get() {
        static ProcessTable t;
        return t;
    }
    void add(uint32_t caller, uint32_t ch, RunningProcess p) {
        std::lock_guard<std::mutex> lk(mu_);
        map_[{caller, ch}] = p;
    }
    void remove(uint32_t caller, uint32_t ch) {
        std::lock_guard<std::mutex> lk(mu_);
        map_.erase({caller, ch});
    }
    // Runs f on the entry under the lock (so the pty fd stays open meanwhile).
    template <typename F>
    bool with(uint32_t caller, uint32_t ch, F f) {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = map_.find({caller, ch});
        if (it == map_.end()) return false;
        f(it->second);
        return true;
    }

private:
    std::mutex mu_;
    std::map<std::pair<uint32_t, uint32_t>, RunningProcess> map_;
};

void set_nonblocking_cloexec(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
}

struct Output {
    uint32_t ch;
    UniqueFd fd;
    std::shared_ptr<ChannelWindow> window;
    uint64_t sent = 0;
    bool open = false;
};

// The three channels of a process stream, registered as proc.start arrives
// so that whatever the caller sends on them after the call (an abort, when
// it gives up before the process runs) finds them. They wake the worker
// through an eventfd, which lives as long as any copy of their endpoints.
class StreamChannels {
public:
    StreamChannels(ChannelTable &table, uint32_t caller, uint32_t ch, uint64_t window)
        : table_(table), caller_(caller), ch_(ch) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) throw Error(SPORE_EREMOTE, std::string("proc.start: eventfd: ") + errno_text(errno));
        wake_ = std::make_shared<UniqueFd>(fd);
        wake_fd = fd;
        std::function<void()> notify = [wake = wake_] {
            uint64_t one = 1;
            ssize_t r = ::write(wake->get(), &one, sizeof one);
            (void)r;
        };
        inbox = std::make_shared<ChannelInbox>(window + kChanChunk);
        for (auto &w : out) w = std::make_shared<ChannelWindow>(window);
        const ChannelEndpoint eps[3] = {{0, nullptr, inbox, notify}, {0, out[0], nullptr, notify},
                                        {0, out[1], nullptr, notify}};
        for (uint32_t k = 0; k < 3; ++k) {
            if (table.add(caller, ch + k, eps[k])) continue;
            while (k-- > 0) table.remove(caller, ch + k);
            throw Error(SPORE_EPROTO, "proc.start: channels " + std::to_string(ch) + "-" + std::to_string(ch + 2) +
                                          " are already in use");
        }
    }
    StreamChannels(const StreamChannels &) = delete;
    StreamChannels &operator=(const StreamChannels &) = delete;
    ~StreamChannels() {
        for (uint32_t k = 0; k < 3; ++k) table_.remove(caller_, ch_ + k);
    }
    uint32_t stdin_channel() const { return ch_; }  // ch; stdout and stderr follow
    // Whether the caller gave up (or went away) already; err says why.
    bool abandoned(ErrorInfo &err) const { return out[0]->failed(&err) || out[1]->failed(&err); }

    int wake_fd = -1;  // readable when data, credit or a failure came
    std::shared_ptr<ChannelInbox> inbox;   // stdin
    std::shared_ptr<ChannelWindow> out[2];  // stdout, stderr

private:
    ChannelTable &table_;
    const uint32_t caller_, ch_;
    std::shared_ptr<UniqueFd> wake_;  // shared with every copy of the endpoints' notify
};

// What proc.start was asked for besides its channels, read and checked
// before anything starts.
struct StartArgs {
    SpawnSpec spec;
    bool use_pty = false;
    int rows = 0, cols = 0;
};

StartArgs read_start_args(const CallRequest &req) {
    StartArgs args;
    args.spec = parse_spawn_spec(req);
    args.use_pty = arg_bool(req, "pty", false);
    args.rows = int(arg_int(req, "rows", 24, 1, 10000));
    args.cols = int(arg_int(req, "cols", 80, 1, 10000));
    return args;
}

// The child's standard descriptors until it starts: three pipes, or a pty;
// the file actions put them on 0-2.
struct ChildStdio {
    SpawnFileActions actions;
    StdioPipes pipes;     // without a pty
    UniqueFd pty_master;  // with one
    std::string pty_slave;
};

void open_pty(const CallRequest &req, const StartArgs &args, ChildStdio &stdio) {
    int m = -1, s = -1;
    winsize ws{};
    ws.ws_row = (unsigned short)args.rows;
    ws.ws_col = (unsigned short)args.cols;
    if (openpty(&m, &s, nullptr, nullptr, &ws) != 0) throw_os(req, "openpty", errno);
    stdio.pty_master.reset(above_stdio(m));
    char name[128];
    if (ttyname_r(s, name, sizeof name) != 0) {
        ::close(s);
        throw_os(req, "ttyname", errno);
    }
    ::close(s);
    stdio.pty_slave = name;
    // The child opens the slave after setsid(): it becomes its
    // controlling terminal.
    posix_spawn_file_actions_addopen(&stdio.actions.fa, 0, stdio.pty_slave.c_str(), O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&stdio.actions.fa, 0, 1);
    posix_spawn_file_actions_adddup2(&stdio.actions.fa, 0, 2);
}

void open_pipes(const CallRequest &req, ChildStdio &stdio) {
    StdioPipes &p = stdio.pipes;
    p.in = open_pipe(req);
    p.out = open_pipe(req);
    p.err = open_pipe(req);
    posix_spawn_file_actions_adddup2(&stdio.actions.fa, p.in.read_end.get(), 0);
    posix_spawn_file_actions_adddup2(&stdio.actions.fa, p.out.write_end.get(), 1);
    posix_spawn_file_actions_adddup2(&stdio.actions.fa, p.err.write_end.get(), 2);
}

// Moves the bytes of a started process: stdin from its channel into the
// process, stdout and stderr from the process into theirs, each within the
// caller's window.
class StreamPump {
public:
    StreamPump(StreamChannels &chans, uint32_t caller, bool use_pty, Services &svc)
        : caller_(caller), ch_(chans.stdin_channel()), wake_fd_(chans.wake_fd), inbox_(chans.inbox),
          use_pty_(use_pty), svc_(svc) {
        for (int k = 0; k < 2; ++k) {
            outs_[k].ch = ch_ + 1 + uint32_t(k);
            outs_[k].window = chans.out[k];
        }
    }

    // Takes our ends of the started child's pipes, or the pty master.
    void take_parent_ends(ChildStdio &stdio);
    int pty() const { return use_pty_ ? outs_[0].fd.get() : -1; }  // the pty master, or -1
    // The first message on stdout, {"started":true,"pid"}; with a pty,
    // stderr ends at once.
    void announce_start(pid_t pid);
    // Runs until both outputs have ended, or until the caller or this agent
    // gives up: then returns why.
    std::optional<ErrorInfo> run(const CallRequest &req);
    void close_stdin() { in_fd_.reset(); }

private:
    void drain_wakeups();
    void acknowledge_unwritten_stdin();
    void take_stdin();
    void write_stdin(SigpipeBlock &sigpipe);
    void end_stdin_at_eof();
    void forward_output(Output &o);
    void end_output(Output &o);
    void wait_for_work(const CallRequest &req);

    const uint32_t caller_, ch_;
    const int wake_fd_;
    const std::shared_ptr<ChannelInbox> inbox_;
    const bool use_pty_;
    Services &svc_;
    UniqueFd in_fd_;
    Output outs_[2];
    std::string pending_;  // stdin bytes taken from the channel, not yet written
    size_t pending_off_ = 0;
    bool in_eof_ = false;  // the caller closed stdin
    std::string buf_ = std::string(kStreamChunk, '\0');
    std::optional<ErrorInfo> failure_;
};

void StreamPump::take_parent_ends(ChildStdio &stdio) {
    if (use_pty_) {
        set_nonblocking_cloexec(stdio.pty_master.get());
        in_fd_.reset(::dup(stdio.pty_master.get()));  // closing stdin must not close the pty
        set_nonblocking_cloexec(in_fd_.get());
        outs_[0].fd = std::move(stdio.pty_master);
    } else {
        StdioPipes &p = stdio.pipes;
        set_nonblocking_cloexec(p.in.write_end.get());
        set_nonblocking_cloexec(p.out.read_end.get());
        set_nonblocking_cloexec(p.err.read_end.get());
        in_fd_ = std::move(p.in.write_end);
        outs_[0].fd = std::move(p.out.read_end);
        outs_[1].fd = std::move(p.err.read_end);
    }
    outs_[0].open = true;
    outs_[1].open = bool(outs_[1].fd);
}

void StreamPump::announce_start(pid_t pid) {
    Message started = chan_control_message(caller_, outs_[0].ch, "\"started\":true,\"pid\":" + std::to_string(pid));
    svc_.send(started);
    if (!outs_[1].open) {
        Message eof = chan_eof_message(caller_, outs_[1].ch, "\"size\":0");
        svc_.send(eof);
    }
}

std::optional<ErrorInfo> StreamPump::run(const CallRequest &req) {
    SigpipeBlock sigpipe;
    while (outs_[0].open || outs_[1].open) {
        drain_wakeups();
        acknowledge_unwritten_stdin();
        take_stdin();
        if (failure_) break;
        write_stdin(sigpipe);
        end_stdin_at_eof();
        for (Output &o : outs_) {
            if (o.open) forward_output(o);
            if (failure_) break;
        }
        if (failure_ || (!outs_[0].open && !outs_[1].open)) break;
        wait_for_work(req);
    }
    return failure_;
}

void StreamPump::drain_wakeups() {
    uint64_t drained;
    while (::read(wake_fd_, &drained, sizeof drained) > 0) {
    }
}

// Once the process has closed stdin, what still comes is taken and
// acknowledged unwritten, so the caller's writes never hang.
void StreamPump::acknowledge_unwritten_stdin() {
    while (!in_fd_) {
        ChannelChunk c;
        ErrorInfo err;
        if (inbox_->pop(c, Clock::now(), err, 0) != SPORE_OK) break;
        if (!c.data.empty()) {
            Message ack = chan_ack_message(caller_, ch_, c.data.size());
            svc_.send(ack);
        }
    }
}

void StreamPump::take_stdin() {
    while (in_fd_ && pending_off_ == pending_.size()) {
        ChannelChunk c;
        ErrorInfo err;
        int rc = inbox_->pop(c, Clock::now(), err, 0);
        if (rc == SPORE_ETIMEDOUT) break;
        if (rc != SPORE_OK) {
            failure_ = err;
            break;
        }
        if (c.abort) {
            in_fd_.reset();
            break;
        }
        pending_ = std::move(c.data);
        pending_off_ = 0;
        if (c.eof) in_eof_ = true;
        if (!pending_.empty()) break;
    }
}

void StreamPump::write_stdin(SigpipeBlock &sigpipe) {
    if (!in_fd_ || pending_off_ >= pending_.size()) return;
    ssize_t w = ::write(in_fd_.get(), pending_.data() + pending_off_, pending_.size() - pending_off_);
    if (w > 0) {
        pending_off_ += size_t(w);
        Message ack = chan_ack_message(caller_, ch_, uint64_t(w));
        svc_.send(ack);
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        if (errno == EPIPE) sigpipe.got_epipe = true;
        // The process stopped reading: what it was sent is dropped.
        Message ack = chan_ack_message(caller_, ch_, pending_.size() - pending_off_);
        svc_.send(ack);
        pending_off_ = pending_.size();
        in_fd_.reset();
    }
}

void StreamPump::end_stdin_at_eof() {
    if (!in_fd_ || !in_eof_ || pending_off_ != pending_.size()) return;
    if (use_pty_) {
        // A terminal has no end of file: ^D tells a reading program so.
        const char eot = 4;
        ssize_t w = ::write(in_fd_.get(), &eot, 1);
        (void)w;
    }
    in_fd_.reset();
}

// A bounded number of reads, to stay fair to the other output.
void StreamPump::forward_output(Output &o) {
    for (int rounds = 0; rounds < 8; ++rounds) {
        uint64_t room = o.window->room();
        ErrorInfo err;
        if (o.window->failed(&err)) {
            failure_ = err;
            return;
        }
        if (room == 0) return;
        ssize_t n = ::read(o.fd.get(), buf_.data(), std::min<uint64_t>(room, buf_.size()));
        if (n > 0) {
            o.window->try_acquire(uint64_t(n));
            o.sent += uint64_t(n);
            Message m = chan_data_message(caller_, o.ch, std::string(buf_.data(), size_t(n)));
            svc_.send(m);
            if (size_t(n) < buf_.size()) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        // EOF, or EIO from a pty whose last user has gone.
        end_output(o);
        return;
    }
}

void StreamPump::end_output(Output &o) {
    o.open = false;
    // proc.resize must not reach the pty master once it is closed.
    if (use_pty_ && &o == &outs_[0])
        ProcessTable::get().with(caller_, ch_, [](RunningProcess &p) { p.pty = -1; });
    o.fd.reset();
    Message eof = chan_eof_message(caller_, o.ch, "\"size\":" + std::to_string(o.sent));
    svc_.send(eof);
}

// Sleeps until the caller sends data, credit or a failure, or the process's
// descriptors are ready.
void StreamPump::wait_for_work(const CallRequest &req) {
    // Chunks already queued raise no new wake-up: take the next at once.
    bool more_input = (in_fd_ ? pending_off_ == pending_.size() : true) && inbox_->ready();
    pollfd p[4];
    nfds_t np = 0;
    p[np++] = {wake_fd_, POLLIN, 0};
    if (in_fd_ && pending_off_ < pending_.size()) p[np++] = {in_fd_.get(), POLLOUT, 0};
    for (Output &o : outs_)
        if (o.open && o.window->room() > 0) p[np++] = {o.fd.get(), POLLIN, 0};
    if (::poll(p, np, more_input ? 0 : -1) < 0 && errno != EINTR) throw_os(req, "poll", errno);
}

// Removes the process from the table when proc.start leaves.
struct ProcessEntry {
    uint32_t caller, ch;
    ~ProcessEntry() { ProcessTable::get().remove(caller, ch); }
};

}  // namespace

std::shared_ptr<void> proc_start_prepare(const CallRequest &req, Services &svc) {
    auto ch_arg = arg_opt_int(req, "ch", 1, 0xfffffffd);
    if (!ch_arg) bad_arg(req, "ch", "is required (proc.start is used through spore_proc_start)");
    uint64_t window = uint64_t(arg_int(req, "window", int64_t(kChanDefaultWindow), int64_t(kChanMinWindow),
                                       int64_t(kChanMaxWindow)));
    ChannelTable *table = svc.channels();
    if (!table) throw Error(SPORE_EINTERNAL, "proc.start: this agent has no channels");
    return std::make_shared<StreamChannels>(*table, req.caller, uint32_t(*ch_arg), window);
}

// proc.start {argv|shell, env, env_clear, cwd, pty, rows, cols, ch, window}
// Channels with the caller: ch is stdin (caller -> here), ch+1 stdout and
// ch+2 stderr (here -> caller; with a pty everything comes on ch+1 and ch+2
// only carries its eof). The first message on ch+1 is {"started":true,
// "pid"}. The call is answered when the process has exited and its output
// has been sent: {"rc", "signal", "pid"}.
void proc_start(const CallRequest &req, CallReply &reply, Services &svc) {
    StartArgs args = read_start_args(req);
    std::shared_ptr<void> prepared = req.prepared ? req.prepared : proc_start_prepare(req, svc);
    auto &chans = *static_cast<StreamChannels *>(prepared.get());
    const uint32_t ch = chans.stdin_channel(), caller = req.caller;
    // In this order so that a call that leaves early kills the child first,
    // then drops its table entry, and only then closes the pty master that
    // proc.resize reaches through the entry.
    StreamPump pump(chans, caller, args.use_pty, svc);
    ProcessEntry process_entry{caller, ch};
    // The caller may have given up while the call waited for a worker: then
    // nothing starts. (Should it give up from here on, the pump sees it and
    // the process is killed.)
    if (ErrorInfo gave_up; chans.abandoned(gave_up)) throw Error(gave_up);

    ChildStdio stdio;
    if (args.use_pty) open_pty(req, args, stdio);
    else open_pipes(req, stdio);
    ChildProcess child(spawn_child(req, args.spec, &stdio.actions.fa, args.use_pty, svc), svc);
    stdio.pipes.close_child_ends();
    pump.take_parent_ends(stdio);
    ProcessTable::get().add(caller, ch, RunningProcess{child.pid, pump.pty()});
    pump.announce_start(child.pid);

    if (std::optional<ErrorInfo> failure = pump.run(req)) {
        // The caller or this agent went away: the process goes too.
        ::kill(-child.pid, SIGKILL);
        throw Error(*failure);
    }
    pump.close_stdin();
    // It may outlive its output (proc.signal still reaches it meanwhile).
    child.wait(0);
    ProcessTable::get().remove(caller, ch);
    Json res = json_object();
    // proc.start has always read a status waitpid could not give as exit 0
    // (proc.run reads it as null).
    add_exit_status(res.get(), child.status().value_or(0));
    add_num(res.get(), "pid", double(child.pid));
    reply.result = std::move(res);
}

// proc.signal {ch, signal}: sends the signal to the process group of the
// process started with stdin channel ch by the same caller.
void proc_signal(const CallRequest &req, CallReply &reply, Services &) {
    uint32_t ch = uint32_t(arg_int(req, "ch", 0, 1, 0xffffffff));
    int sig = int(arg_int(req, "signal", 0, 1, 64));
    int err = 0;
    bool found = ProcessTable::get().with(req.caller, ch, [&](RunningProcess &p) {
        if (::kill(-p.pid, sig) != 0) err = errno;
    });
    if (!found) throw Error(SPORE_EINVAL, "proc.signal: no running process on channel " + std::to_string(ch));
    if (err && err != ESRCH) throw_os(req, "kill", err);
    reply.result.reset(cJSON_CreateNull());
}

// proc.resize {ch, rows, cols}: the window size of the process's pty.
void proc_resize(const CallRequest &req, CallReply &reply, Services &) {
    uint32_t ch = uint32_t(arg_int(req, "ch", 0, 1, 0xffffffff));
    winsize ws{};
    ws.ws_row = (unsigned short)arg_int(req, "rows", 24, 1, 10000);
    ws.ws_col = (unsigned short)arg_int(req, "cols", 80, 1, 10000);
    int err = 0;
    bool pty = true;
    bool found = ProcessTable::get().with(req.caller, ch, [&](RunningProcess &p) {
        if (p.pty < 0) pty = false;
        else if (ioctl(p.pty, TIOCSWINSZ, &ws) != 0) err = errno;
    });
    if (!found) throw Error(SPORE_EINVAL, "proc.resize: no running process on channel " + std::to_string(ch));
    if (!pty) throw Error(SPORE_EINVAL, "proc.resize: the process on channel " + std::to_string(ch) + " has no pty");
    if (err) throw_os(req, "TIOCSWINSZ", err);
    reply.result.reset(cJSON_CreateNull());
}

}  // namespace spore::agent::detail
