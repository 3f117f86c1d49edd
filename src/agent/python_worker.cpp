#include "agent/python_worker.h"

#include "agent/builtins_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/json.h"
#include "core/message_router.h"
#include "core/messages.h"
#include "core/shlex.h"
#include "spore/spore.h"

extern char **environ;

namespace spore {
// src/python/bootstrap.py, embedded by the build (python_bootstrap.cpp).
extern const char kPythonBootstrap[];
}  // namespace spore

namespace spore::agent {

namespace {

using detail::errno_text;
using detail::find_in_path;
using detail::SpawnAttr;
using detail::SpawnFileActions;

// Handles of the worker link (docs/protocol.md, "Worker link").
enum LinkHandle : uint32_t {
    kLinkCall = 1,
    kLinkModules = 2,
    kLinkLogLevel = 3,
    kLinkHello = 10,
    kLinkReply = 11,
    kLinkLog = 12,
    kLinkNeed = 13,
};

// Tried in order when the context has no python_path.
const std::vector<std::vector<std::string>> kDefaultCandidates = {
    {"python3"}, {"/usr/libexec/platform-python"}, {"/usr/bin/python3"}, {"/usr/local/bin/python3"}, {"python"},
};

constexpr double kHelloTimeoutS = 60.0;
constexpr size_t kStderrLinesKept = 8;
// The bootstrap's exit status for an interpreter older than 3.6.
constexpr int kTooOldStatus = 3;

// The worker's environment: the agent's, with glibc's malloc told to use
// transparent huge pages for large blocks (bytes arguments and results of
// megabytes would otherwise be faulted in 4 KiB at a time, which costs more
// than copying them). The worker puts GLIBC_TUNABLES back as it found it
// (SPORE_WORKER_TUNABLES: "-" for unset, else "=" and the value), so what
// the called functions start sees the context's own environment.
std::vector<std::string> worker_environment() {
    std::vector<std::string> env;
    std::string saved = "-";
    std::string tunables = "glibc.malloc.hugetlb=1";
    for (char **e = environ; *e; ++e) {
        std::string_view kv(*e);
        if (kv.rfind("GLIBC_TUNABLES=", 0) == 0) {
            std::string_view value = kv.substr(15);
            saved = "=" + std::string(value);
            if (!value.empty()) tunables = std::string(value) + ":" + tunables;
            continue;
        }
        if (kv.rfind("SPORE_WORKER_TUNABLES=", 0) == 0) continue;
        env.emplace_back(kv);
    }
    env.push_back("GLIBC_TUNABLES=" + tunables);
    env.push_back("SPORE_WORKER_TUNABLES=" + saved);
    return env;
}

std::string signal_text(int sig) {
    const char *name = sigabbrev_np(sig);
    return std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
}

}  // namespace

PythonWorker::PythonWorker(Loop &loop, Services &services, ModuleRelay &relay)
    : loop_(loop), services_(services), relay_(relay) {}

PythonWorker::~PythonWorker() { stop("the agent is exiting"); }

std::string PythonWorker::who() const {
    return "the Python worker of context " + services_.context_name();
}

void PythonWorker::set_log_level(int level) {
    level_ = level;
    if (state_ != State::kReady) return;
    Message m;
    m.h.handle = kLinkLogLevel;
    m.json = "{\"level\":" + std::to_string(level) + "}";
    send_to_worker(m);
}

void PythonWorker::call(Message &m, const std::string &fn, DoneFn done) {
    Message frame;
    frame.h.handle = kLinkCall;
    frame.h.src_id = m.h.src_id;
    frame.json = std::move(m.json);
    frame.bin = std::move(m.bin);
    if (state_ != State::kReady) {
        queue_.push_back(Pending{std::move(frame), fn, std::move(done)});
        if (state_ == State::kIdle) start();
        return;
    }
    uint32_t id = next_id_++;
    if (next_id_ == 0) next_id_ = 1;
    frame.h.reply_to = id;
    inflight_[id] = InFlight{frame.h.src_id, fn, std::move(done)};
    send_to_worker(frame);
}

void PythonWorker::send_to_worker(Message &m) {
    if (stream_) stream_->send(m);
}

void PythonWorker::start() {
    candidates_ = python_path_.empty() ? kDefaultCandidates : std::vector<std::vector<std::string>>{python_path_};
    next_candidate_ = 0;
    tried_.clear();
    // A new worker has none of the modules the last one was sent: the
    // relay's record of them goes, and the new one is a new requester.
    relay_.forget(relay_key());
    ++generation_;
    if (source_.empty()) fetch_source();
    // The interpreter starts while its code is on the way: its own start
    // (tens of ms) hides the round trip to the nearest hop that has it.
    spawn_next();
}

void PythonWorker::fetch_source() {
    if (fetching_) return;
    fetching_ = true;
    relay_.request(relay_key(), {std::string(kWorkerSourceName)}, [this](std::vector<ModuleRelay::EntryPtr> entries) {
        fetching_ = false;
        for (const auto &e : entries)
            if (e->name == kWorkerSourceName && e->found) source_ = e->source;
        if (source_.empty()) {
            std::string why = "context " + services_.context_name() +
                              ": the master did not provide the Python worker's code";
            if (pid_ > 0) return abandon_start(why);
            state_ = State::kIdle;
            return fail_all(ErrorInfo{SPORE_EINTERNAL, why, "", services_.context_name(), ""});
        }
        if (state_ == State::kStarting && stream_ && !source_sent_) send_source();
    });
}

void PythonWorker::send_source() {
    // The bootstrap reads the length line, then exactly the source; frames
    // follow only after its hello.
    source_sent_ = true;
    stream_->send_raw(std::to_string(source_.size()) + "\n" + source_);
}

void PythonWorker::abandon_start(const std::string &why) {
    // The worker was started but cannot be given its code.
    kill_and_fail(SPORE_EINTERNAL, why);
}

void PythonWorker::kill_and_fail(int code, const std::string &why) {
    if (pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
    }
    release_stream(why);
    reap_now();
    hello_timer_.reset();
    state_ = State::kIdle;
    fail_all(ErrorInfo{code, why, "", services_.context_name(), ""});
}

void PythonWorker::spawn_next() {
    while (next_candidate_ < candidates_.size()) {
        const auto &words = candidates_[next_candidate_++];
        std::string why;
        if (spawn_candidate(words, why)) return;
        tried_.push_back(quote_for_log(words) + ": " + why);
    }
    state_ = State::kIdle;
    std::string msg = "no usable Python interpreter in context " + services_.context_name() + ": tried ";
    for (size_t i = 0; i < tried_.size(); ++i) msg += (i ? "; " : "") + tried_[i];
    fail_all(ErrorInfo{SPORE_ENOPYTHON, msg, "", services_.context_name(), ""});
}

bool PythonWorker::spawn_candidate(const std::vector<std::string> &words, std::string &why) {
    std::string prog = words.front();
    if (prog.find('/') == std::string::npos) {
        const char *path = getenv("PATH");
        std::string dirs = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
        prog = find_in_path(prog, dirs.c_str());
        if (prog.find('/') == std::string::npos) {
            why = "not found on PATH (" + dirs + ")";
            return false;
        }
    } else if (::access(prog.c_str(), X_OK) != 0) {
        why = errno_text(errno);
        return false;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        why = "socketpair: " + errno_text(errno);
        return false;
    }
    UniqueFd mine(sv[0]), theirs(sv[1]);
    int op[2], ep[2];
    if (pipe2(op, O_CLOEXEC) != 0) {
        why = "pipe: " + errno_text(errno);
        return false;
    }
    UniqueFd out_r(op[0]), out_w(op[1]);
    if (pipe2(ep, O_CLOEXEC) != 0) {
        why = "pipe: " + errno_text(errno);
        return false;
    }
    UniqueFd err_r(ep[0]), err_w(ep[1]);

    SpawnFileActions fa;
    SpawnAttr attr;
    // dup2 onto 0-3 in an order that never overwrites a source still
    // needed: every source is above 3 unless it is its own target.
    posix_spawn_file_actions_addopen(&fa.fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa.fa, out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&fa.fa, err_w.get(), 2);
    posix_spawn_file_actions_adddup2(&fa.fa, theirs.get(), 3);
    posix_spawn_file_actions_addclosefrom_np(&fa.fa, 4);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setflags(&attr.a, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr.a, 0);
    posix_spawnattr_setsigmask(&attr.a, &none);
    posix_spawnattr_setsigdefault(&attr.a, &all);

    std::vector<std::string> argv = words;
    argv[0] = prog;
    argv.push_back("-c");
    argv.push_back(kPythonBootstrap);
    std::vector<char *> cargv;
    for (auto &a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<std::string> env = worker_environment();
    std::vector<char *> cenv;
    for (auto &e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);

    int rc = SPORE_OK;
    if (services_.begin_spawn(0) != SPORE_OK) {
        why = "context " + services_.context_name() + " is exiting";
        return false;
    }
    pid_t pid = -1;
    rc = posix_spawn(&pid, prog.c_str(), &fa.fa, &attr.a, cargv.data(), cenv.data());
    services_.register_process(rc == 0 ? pid : -1, 0);
    if (rc != 0) {
        why = "cannot execute " + prog + ": " + errno_text(rc);
        return false;
    }
    pid_ = pid;
    wait_status_ = -1;
    current_ = words;
    current_[0] = prog;
    theirs.reset();
    out_w.reset();
    err_w.reset();
    out_fd_ = std::move(out_r);
    err_fd_ = std::move(err_r);
    set_nonblocking(out_fd_.get());
    set_nonblocking(err_fd_.get());
    err_lines_.clear();
    out_buf_.clear();
    err_buf_.clear();
    out_ev_.reset(event_new(
        loop_.base(), out_fd_.get(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void *arg) { static_cast<PythonWorker *>(arg)->read_output(1); }, this));
    err_ev_.reset(event_new(
        loop_.base(), err_fd_.get(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void *arg) { static_cast<PythonWorker *>(arg)->read_output(2); }, this));
    event_add(out_ev_.get(), nullptr);
    event_add(err_ev_.get(), nullptr);

    int fd = mine.release();
    set_nonblocking(fd);
    stream_ = std::make_shared<Stream>(loop_, fd, fd, "python worker", limits_);
    stream_->on_message([this](Stream &, Message &&m) { on_message(std::move(m)); });
    stream_->on_close([this](Stream &, const std::string &reason) { on_closed(reason); });
    stream_->start(false);
    state_ = State::kStarting;
    source_sent_ = false;
    if (!source_.empty()) send_source();
    hello_timer_ = std::make_unique<Timer>(loop_, kHelloTimeoutS, [this] {
        violation("no hello within " + std::to_string(int(kHelloTimeoutS)) + " s of its start");
    });
    return true;
}

void PythonWorker::on_message(Message &&m) {
    switch (m.h.handle) {
    case kLinkHello: return on_hello(m);
    case kLinkReply: return on_reply(std::move(m));
    case kLinkLog: return on_log(m);
    case kLinkNeed: return on_need(m);
    default: return violation("a frame for unknown handle " + std::to_string(m.h.handle));
    }
}

void PythonWorker::on_hello(const Message &) {
    if (state_ != State::kStarting) return violation("a second hello");
    hello_timer_.reset();
    state_ = State::kReady;
    services_.log(SPORE_LOG_DEBUG, "spore.python",
                  "Python worker pid " + std::to_string(pid_) + " (" + quote_for_log(current_) + ") ready");
    if (level_ != 20) set_log_level(level_);
    auto waiting = std::move(queue_);
    queue_.clear();
    for (auto &p : waiting) {
        uint32_t id = next_id_++;
        if (next_id_ == 0) next_id_ = 1;
        p.frame.h.reply_to = id;
        inflight_[id] = InFlight{p.frame.h.src_id, p.fn, std::move(p.done)};
        send_to_worker(p.frame);
    }
}

void PythonWorker::on_reply(Message &&m) {
    if (state_ != State::kReady) return violation("a reply before its hello");
    auto it = inflight_.find(m.h.reply_to);
    if (it == inflight_.end()) return violation("a reply for job " + std::to_string(m.h.reply_to) + ", which it does not have");
    // Checked whole (a parse): the caller's side must never meet a reply
    // that is not JSON, and a worker is not trusted to send only JSON.
    std::string problem;
    Json parsed = json_parse(m.json, kDefaultMaxJsonDepth, &problem);
    if (!parsed) return violation("a reply that is not valid JSON: " + problem);
    InFlight job = std::move(it->second);
    inflight_.erase(it);
    if (m.h.flags & kFlagError) {
        ErrorInfo e = MessageRouter::parse_error_json(m.json);
        if (json_str(parsed.get(), "code").empty()) e.code = SPORE_EREMOTE;
        // The worker may only claim the codes of a Python call's own failures.
        if (e.code != SPORE_EREMOTE && e.code != SPORE_ENOFUNC && e.code != SPORE_EBADARGS && e.code != SPORE_EWORKER)
            e.code = SPORE_EREMOTE;
        e.context = services_.context_name();
        e.function = job.fn;
        job.done(CallReply{}, &e);
        return;
    }
    CallReply r;
    r.json_text = std::move(m.json);
    r.data = std::move(m.bin);
    job.done(std::move(r), nullptr);
}

void PythonWorker::on_log(const Message &m) {
    std::string err;
    Json j = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    if (!j || !cJSON_IsObject(j.get())) return violation("a malformed log frame");
    int level = int(json_int(j.get(), "level", SPORE_LOG_INFO));
    if (!services_.log_enabled(level)) return;
    auto it = inflight_.find(m.h.reply_to);
    uint32_t to = it != inflight_.end() ? it->second.caller : 0;
    services_.log_to(to, level, json_str(j.get(), "logger", "python"), json_str(j.get(), "msg"));
}

void PythonWorker::on_need(const Message &m) {
    if (state_ != State::kReady) return violation("a module request before its hello");
    auto req = ModuleRequest::decode(m.json);
    if (!req) return violation("a malformed module request");
    for (const auto &n : req->names)
        if (!valid_request_name(n) || n == kWorkerSourceName)
            return violation("a request for '" + detail::utf8_sanitize(n.substr(0, 200)) + "', which is not a module name");
    std::weak_ptr<Stream> target = stream_;
    relay_.request(relay_key(), req->names, [target](std::vector<ModuleRelay::EntryPtr> entries) {
        auto s = target.lock();
        if (!s || s->closed()) return;
        ModuleAnswer a;
        for (const auto &e : entries) a.modules.push_back(*e);
        Message out;
        out.h.handle = kLinkModules;
        a.encode(out.json, out.bin);
        s->send(out);
    });
}

void PythonWorker::violation(const std::string &what) {
    services_.log(SPORE_LOG_WARNING, "spore.python", who() + " (pid " + std::to_string(pid_) + ") sent " + what +
                                                         "; it was killed");
    kill_and_fail(SPORE_EWORKER, who() + " broke the protocol (" + what + ") and was killed");
}

void PythonWorker::on_closed(const std::string &reason) {
    // Bytes that are not frames close the link with a protocol error: the
    // worker is broken, not merely gone.
    if (reason.rfind("protocol error", 0) == 0 && state_ == State::kReady) return violation(reason);
    release_stream(reason);
    hello_timer_.reset();
    bool started = state_ == State::kReady;
    reap_now();
    drain_output();
    if (!started) {
        // It never said hello: this candidate cannot run the worker.
        std::string why = describe_exit();
        if (WIFEXITED(wait_status_) && WEXITSTATUS(wait_status_) == kTooOldStatus) why = "too old";
        std::string tail = stderr_tail();
        if (!tail.empty()) why += ": " + tail;
        tried_.push_back(quote_for_log(current_) + ": " + why);
        // An explicit python_path is the only candidate.
        return spawn_next();
    }
    state_ = State::kIdle;
    std::string why = who() + " (pid " + std::to_string(pid_) + ") " + describe_exit() + " during the call";
    std::string tail = stderr_tail();
    if (!tail.empty()) why += "; its last output: " + tail;
    auto inflight = std::move(inflight_);
    inflight_.clear();
    for (auto &kv : inflight) {
        ErrorInfo e{SPORE_EWORKER, why, "", services_.context_name(), kv.second.fn};
        kv.second.done(CallReply{}, &e);
    }
    // Calls that arrived since are sent to a new worker.
    if (!queue_.empty()) start();
}

void PythonWorker::fail_all(const ErrorInfo &err) {
    auto queue = std::move(queue_);
    queue_.clear();
    auto inflight = std::move(inflight_);
    inflight_.clear();
    for (auto &p : queue) {
        ErrorInfo e = err;
        e.function = p.fn;
        p.done(CallReply{}, &e);
    }
    for (auto &kv : inflight) {
        ErrorInfo e = err;
        e.function = kv.second.fn;
        kv.second.done(CallReply{}, &e);
    }
}

void PythonWorker::reap_now() {
    if (pid_ <= 0) return;
    // The worker closed its end: it is exiting or has crashed. A worker
    // that closed the link and lingers is broken; it goes now.
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid_, &st, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
        for (int i = 0; i < 50 && r == 0; ++i) {
            usleep(2000);
            r = waitpid(pid_, &st, WNOHANG);
        }
        if (r == 0) {
            ::kill(-pid_, SIGKILL);
            ::kill(pid_, SIGKILL);
            while ((r = waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
            }
        }
    }
    // What it started goes with it.
    ::kill(-pid_, SIGKILL);
    wait_status_ = r == pid_ ? st : -1;
    services_.unregister_process(pid_);
    pid_ = -1;
}

std::string PythonWorker::describe_exit() const {
    if (wait_status_ < 0) return "ended";
    if (WIFSIGNALED(wait_status_)) return "died of signal " + signal_text(WTERMSIG(wait_status_));
    return "exited with status " + std::to_string(WEXITSTATUS(wait_status_));
}

void PythonWorker::read_output(int which) {
    UniqueFd &fd = which == 1 ? out_fd_ : err_fd_;
    std::string &buf = which == 1 ? out_buf_ : err_buf_;
    const char *logger = which == 1 ? "stdout" : "stderr";
    // stderr's last lines are kept for the message of a failed start.
    auto line = [&](std::string text) {
        if (which == 2) {
            err_lines_.push_back(text);
            if (err_lines_.size() > kStderrLinesKept) err_lines_.pop_front();
        }
        services_.log(SPORE_LOG_INFO, logger, text);
    };
    char tmp[16384];
    for (;;) {
        ssize_t n = ::read(fd.get(), tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) return;
            if (!buf.empty()) line(std::move(buf));
            buf.clear();
            (which == 1 ? out_ev_ : err_ev_).reset();
            fd.reset();
            return;
        }
        buf.append(tmp, size_t(n));
        detail::take_lines(buf, line);
        if (size_t(n) < sizeof tmp) return;
    }
}

void PythonWorker::drain_output() {
    if (out_fd_) read_output(1);
    if (err_fd_) read_output(2);
}

std::string PythonWorker::stderr_tail() const {
    std::string out;
    for (const auto &l : err_lines_) {
        if (l.empty()) continue;
        if (!out.empty()) out += " | ";
        out += l;
    }
    if (out.size() > 2000) out = "..." + out.substr(out.size() - 2000);
    return out;
}

void PythonWorker::release_stream(const std::string &why) {
    auto s = std::move(stream_);
    stream_.reset();
    if (!s) return;
    s->on_close(nullptr);
    s->close(why);
    // This may run inside the stream's own close callback: it is freed
    // from the loop later, not under its own feet.
    loop_.post([s] {});
}

void PythonWorker::stop(const std::string &why) {
    hello_timer_.reset();
    if (stream_) {
        stream_->on_close(nullptr);
        stream_->close(why);
        stream_.reset();
    }
    if (pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        int st;
        while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
        }
        services_.unregister_process(pid_);
        pid_ = -1;
    }
    out_ev_.reset();
    err_ev_.reset();
    out_fd_.reset();
    err_fd_.reset();
    state_ = State::kIdle;
    fail_all(ErrorInfo{SPORE_ESHUTDOWN, "context " + services_.context_name() + " is exiting: " + why, "",
                       services_.context_name(), ""});
}

}  // namespace spore::agent
