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
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <mutex>

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

int above_stdio(int fd) {
    if (fd > 2 || fd < 0) return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    ::close(fd);
    return n;
}

void pipe_pair(const CallRequest &req, UniqueFd &rd, UniqueFd &wr) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) throw_os(req, "pipe", errno);
    rd.reset(above_stdio(p[0]));
    wr.reset(above_stdio(p[1]));
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
    SpawnSpec spec = parse_spawn_spec(req);
    bool use_pty = arg_bool(req, "pty", false);
    int rows = int(arg_int(req, "rows", 24, 1, 10000)), cols = int(arg_int(req, "cols", 80, 1, 10000));
    std::shared_ptr<void> prepared = req.prepared ? req.prepared : proc_start_prepare(req, svc);
    auto &chans = *static_cast<StreamChannels *>(prepared.get());
    const uint32_t ch = chans.stdin_channel(), caller = req.caller;
    const int wake_fd = chans.wake_fd;
    const std::shared_ptr<ChannelInbox> inbox = chans.inbox;
    Output outs[2];
    for (int k = 0; k < 2; ++k) {
        outs[k].ch = ch + 1 + uint32_t(k);
        outs[k].window = chans.out[k];
    }
    struct ProcessEntry {
        uint32_t caller, ch;
        ~ProcessEntry() { ProcessTable::get().remove(caller, ch); }
    } process_entry{caller, ch};
    // The caller may have given up while the call waited for a worker: then
    // nothing starts. (Should it give up from here on, the loop below sees it
    // and kills the process.)
    if (ErrorInfo gave_up; chans.abandoned(gave_up)) throw Error(gave_up);

    // ---- the child's ends
    UniqueFd in_rd, in_wr, out_rd, out_wr, err_rd, err_wr, pty_master;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) throw std::bad_alloc();
    struct FaGuard {
        posix_spawn_file_actions_t *fa;
        ~FaGuard() { posix_spawn_file_actions_destroy(fa); }
    } fa_guard{&fa};
    std::string slave_name;
    if (use_pty) {
        int m = -1, s = -1;
        winsize ws{};
        ws.ws_row = (unsigned short)rows;
        ws.ws_col = (unsigned short)cols;
        if (openpty(&m, &s, nullptr, nullptr, &ws) != 0) throw_os(req, "openpty", errno);
        pty_master.reset(above_stdio(m));
        char name[128];
        if (ttyname_r(s, name, sizeof name) != 0) {
            ::close(s);
            throw_os(req, "ttyname", errno);
        }
        ::close(s);
        slave_name = name;
        // The child opens the slave after setsid(): it becomes its
        // controlling terminal.
        posix_spawn_file_actions_addopen(&fa, 0, slave_name.c_str(), O_RDWR, 0);
        posix_spawn_file_actions_adddup2(&fa, 0, 1);
        posix_spawn_file_actions_adddup2(&fa, 0, 2);
    } else {
        pipe_pair(req, in_rd, in_wr);
        pipe_pair(req, out_rd, out_wr);
        pipe_pair(req, err_rd, err_wr);
        posix_spawn_file_actions_adddup2(&fa, in_rd.get(), 0);
        posix_spawn_file_actions_adddup2(&fa, out_wr.get(), 1);
        posix_spawn_file_actions_adddup2(&fa, err_wr.get(), 2);
    }
    pid_t pid = spawn_child(req, spec, &fa, use_pty, svc);
    struct ChildGuard {
        pid_t pid;
        Services &svc;
        bool reaped = false;
        int status = 0;
        ~ChildGuard() {
            if (!reaped) {
                ::kill(-pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
                }
            }
            svc.unregister_process(pid);
        }
    } child{pid, svc};
    in_rd.reset();
    out_wr.reset();
    err_wr.reset();

    UniqueFd in_fd;
    if (use_pty) {
        set_nonblocking_cloexec(pty_master.get());
        in_fd.reset(::dup(pty_master.get()));  // closing stdin must not close the pty
        set_nonblocking_cloexec(in_fd.get());
        outs[0].fd = std::move(pty_master);
    } else {
        set_nonblocking_cloexec(in_wr.get());
        set_nonblocking_cloexec(out_rd.get());
        set_nonblocking_cloexec(err_rd.get());
        in_fd = std::move(in_wr);
        outs[0].fd = std::move(out_rd);
        outs[1].fd = std::move(err_rd);
    }
    outs[0].open = true;
    outs[1].open = bool(outs[1].fd);
    ProcessTable::get().add(caller, ch, RunningProcess{pid, use_pty ? outs[0].fd.get() : -1});

    Message started = chan_control_message(caller, outs[0].ch, "\"started\":true,\"pid\":" + std::to_string(pid));
    svc.send(started);
    if (!outs[1].open) {
        Message eof = chan_eof_message(caller, outs[1].ch, "\"size\":0");
        svc.send(eof);
    }

    // ---- moving bytes
    std::string pending;  // stdin bytes taken from the channel, not yet written
    size_t pending_off = 0;
    bool in_eof = false;  // the caller closed stdin
    std::string buf(kStreamChunk, '\0');
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    struct SigRestore {
        sigset_t *set, *old;
        ~SigRestore() {
            timespec zero{0, 0};
            while (sigtimedwait(set, nullptr, &zero) > 0) {
            }
            pthread_sigmask(SIG_SETMASK, old, nullptr);
        }
    } sig_restore{&pipe_set, &old_set};
    ErrorInfo failure;
    bool failed = false;
    while (outs[0].open || outs[1].open) {
        uint64_t drained;
        while (::read(wake_fd, &drained, sizeof drained) > 0) {
        }
        // stdin. Once the process has closed it, what still comes is taken
        // and acknowledged unwritten, so the caller's writes never hang.
        while (!in_fd) {
            ChannelChunk c;
            ErrorInfo err;
            if (inbox->pop(c, Clock::now(), err, 0) != SPORE_OK) break;
            if (!c.data.empty()) {
                Message ack = chan_ack_message(caller, ch, c.data.size());
                svc.send(ack);
            }
        }
        while (in_fd && pending_off == pending.size()) {
            ChannelChunk c;
            ErrorInfo err;
            int rc = inbox->pop(c, Clock::now(), err, 0);
            if (rc == SPORE_ETIMEDOUT) break;
            if (rc != SPORE_OK) {
                failure = err;
                failed = true;
                break;
            }
            if (c.abort) {
                in_fd.reset();
                break;
            }
            pending = std::move(c.data);
            pending_off = 0;
            if (c.eof) in_eof = true;
            if (!pending.empty()) break;
        }
        if (failed) break;
        if (in_fd && pending_off < pending.size()) {
            ssize_t w = ::write(in_fd.get(), pending.data() + pending_off, pending.size() - pending_off);
            if (w > 0) {
                pending_off += size_t(w);
                Message ack = chan_ack_message(caller, ch, uint64_t(w));
                svc.send(ack);
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                // The process stopped reading: what it was sent is dropped.
                Message ack = chan_ack_message(caller, ch, pending.size() - pending_off);
                svc.send(ack);
                pending_off = pending.size();
                in_fd.reset();
            }
        }
        if (in_fd && in_eof && pending_off == pending.size()) {
            if (use_pty) {
                // A terminal has no end of file: ^D tells a reading program so.
                const char eot = 4;
                ssize_t w = ::write(in_fd.get(), &eot, 1);
                (void)w;
            }
            in_fd.reset();
        }
        // stdout, stderr
        for (Output &o : outs) {
            if (!o.open) continue;
            for (int rounds = 0; rounds < 8; ++rounds) {
                uint64_t room = o.window->room();
                ErrorInfo err;
                if (o.window->failed(&err)) {
                    failure = err;
                    failed = true;
                    break;
                }
                if (room == 0) break;
                ssize_t n = ::read(o.fd.get(), buf.data(), std::min<uint64_t>(room, buf.size()));
                if (n > 0) {
                    o.window->try_acquire(uint64_t(n));
                    o.sent += uint64_t(n);
                    Message m = chan_data_message(caller, o.ch, std::string(buf.data(), size_t(n)));
                    svc.send(m);
                    if (size_t(n) < buf.size()) break;
                    continue;
                }
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
                // EOF, or EIO from a pty whose last user has gone.
                o.open = false;
                if (use_pty && &o == &outs[0])
                    ProcessTable::get().with(caller, ch, [](RunningProcess &p) { p.pty = -1; });
                o.fd.reset();
                Message eof = chan_eof_message(caller, o.ch, "\"size\":" + std::to_string(o.sent));
                svc.send(eof);
                break;
            }
            if (failed) break;
        }
        if (failed || (!outs[0].open && !outs[1].open)) break;
        // Chunks already queued raise no new wake-up: take the next at once.
        bool more_input = (in_fd ? pending_off == pending.size() : true) && inbox->ready();
        pollfd p[4];
        nfds_t np = 0;
        p[np++] = {wake_fd, POLLIN, 0};
        if (in_fd && pending_off < pending.size()) p[np++] = {in_fd.get(), POLLOUT, 0};
        for (Output &o : outs)
            if (o.open && o.window->room() > 0) p[np++] = {o.fd.get(), POLLIN, 0};
        if (::poll(p, np, more_input ? 0 : -1) < 0 && errno != EINTR) throw_os(req, "poll", errno);
    }
    if (failed) {
        // The caller or this agent went away: the process goes too.
        ::kill(-pid, SIGKILL);
        throw Error(failure);
    }
    in_fd.reset();
    // It may outlive its output (proc.signal still reaches it meanwhile).
    while (waitpid(pid, &child.status, 0) < 0 && errno == EINTR) {
    }
    child.reaped = true;
    ProcessTable::get().remove(caller, ch);
    Json res = json_object();
    bool exited = WIFEXITED(child.status), signaled = WIFSIGNALED(child.status);
    add(res.get(), "rc", check(exited ? cJSON_CreateNumber(WEXITSTATUS(child.status)) : cJSON_CreateNull()));
    add(res.get(), "signal", check(signaled ? cJSON_CreateNumber(WTERMSIG(child.status)) : cJSON_CreateNull()));
    add_num(res.get(), "pid", double(pid));
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
