#include "core/connection.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/messages.h"
#include "core/shlex.h"
#include "methods/method.h"
#include "spore/version.h"

extern char **environ;

namespace spore {
namespace {
constexpr size_t kLastLines = 20;
constexpr size_t kMaxLine = 4096;
}  // namespace

// An agent runs in a session of its own (POSIX_SPAWN_SETSID), and so does
// everything it starts unless that calls setsid itself. When an agent dies by
// a signal it could not clean up after itself, so whatever is left in its
// session is killed here: no process outlives its context.
void kill_session_of(pid_t sid) {
    for (int pass = 0; pass < 2; ++pass) {
        DIR *d = opendir("/proc");
        if (!d) return;
        bool found = false;
        while (dirent *e = readdir(d)) {
            char *end;
            long pid = std::strtol(e->d_name, &end, 10);
            if (*end || pid <= 1 || pid == getpid()) continue;
            char path[64], buf[512];
            std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
            int fd = ::open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = ::read(fd, buf, sizeof buf - 1);
            ::close(fd);
            if (n <= 0) continue;
            buf[n] = '\0';
            const char *rp = std::strrchr(buf, ')');
            long session = 0;
            // After the command name: state ppid pgrp session ...
            if (rp && std::sscanf(rp + 2, "%*c %*d %*d %ld", &session) == 1 && session == sid) {
                ::kill(pid_t(pid), SIGKILL);
                found = true;
            }
        }
        closedir(d);
        if (!found) return;
    }
}

std::string sanitize_name(const std::string &name) {
    std::string out;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || c == ':' || c == '/' || c == '@';
        out.push_back(ok ? c : '_');
    }
    return out.substr(0, 200);
}

std::string ConnectRequest::to_call_args() {
    Json args = json_object();
    cJSON_AddStringToObject(args.get(), "method", method.c_str());
    cJSON_AddNumberToObject(args.get(), "id", id);
    cJSON_AddStringToObject(args.get(), "name", name.c_str());
    cJSON_AddNumberToObject(args.get(), "timeout_ms", timeout_s * 1000.0);
    cJSON_AddBoolToObject(args.get(), "agent_cache", agent_cache);
    cJSON_AddStringToObject(args.get(), "agent_compress", agent_compress_name(agent_compress));
    if (!remote_name.empty()) cJSON_AddStringToObject(args.get(), "remote_name", remote_name.c_str());
    cJSON_AddItemToObject(args.get(), "options", options ? options.release() : cJSON_CreateObject());
    return json_print(args.get());
}

ConnectRequest ConnectRequest::from_call_args(const cJSON *a, KeepaliveSettings inherited) {
    ConnectRequest req;
    req.method = json_str(a, "method");
    req.name = json_str(a, "name");
    auto id = json_context_id(a);
    if (req.method.empty() || !id || req.name.empty())
        throw Error(SPORE_EBADARGS, std::string(kConnectFunction) + " needs method, id and name");
    req.id = *id;
    req.timeout_s = double(json_int(a, "timeout_ms", 30000)) / 1000.0;
    req.agent_cache = json_bool(a, "agent_cache", true);
    req.remote_name = json_str(a, "remote_name");
    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(a, "options");
    req.options.reset(opts ? cJSON_Duplicate(opts, 1) : cJSON_CreateObject());
    if (!req.options) throw std::bad_alloc();
    try {
        req.keepalive = keepalive_from_options(req.options.get(), inherited);
        req.agent_compress = parse_agent_compress(a);
        req.python_path = option_words(req.options.get(), "python_path");
    } catch (const Error &e) {
        throw Error(SPORE_EBADARGS, std::string(kConnectFunction) + ": " + e.what());
    }
    return req;
}

Connection::Connection(Loop &loop, ConnectRequest req, Limits limits, ImageFn image, DoneFn done)
    : loop_(loop), req_(std::move(req)), limits_(limits), image_fn_(std::move(image)), done_(std::move(done)) {}

// Carries the end of work done on another thread back to the loop, unless
// the connection that started it is gone by then (and the loop may be too).
struct LoopHandoff {
    explicit LoopHandoff(Loop &loop) : loop_(&loop) {}
    void post(std::function<void()> fn) {
        std::lock_guard<std::mutex> lk(mu_);
        if (loop_) loop_->post(std::move(fn));
    }
    void disarm() {
        std::lock_guard<std::mutex> lk(mu_);
        loop_ = nullptr;
    }

private:
    std::mutex mu_;
    Loop *loop_;
};

Connection::~Connection() {
    if (image_handoff_) image_handoff_->disarm();
    err_ev_.reset();
    stop_ssh();
    // A child must never outlive its parent's bookkeeping.
    if (pid_ > 0) kill_and_wait();
}

namespace {
// WSL rejects TCSAFLUSH on a pty.
bool running_on_wsl() {
    static const bool wsl = [] {
        char buf[256] = {0};
        int fd = ::open("/proc/sys/kernel/osrelease", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return false;
        ssize_t n = ::read(fd, buf, sizeof buf - 1);
        ::close(fd);
        if (n <= 0) return false;
        std::string r(buf, size_t(n));
        for (auto &c : r) c = char(tolower(static_cast<unsigned char>(c)));
        return r.find("microsoft") != std::string::npos || r.find("wsl") != std::string::npos;
    }();
    return wsl;
}

// A pty in raw mode (8-bit clean, no echo, no line discipline): passwords are
// not echoed back and, for su, the framed stream passes through unchanged.
bool open_raw_pty(UniqueFd &master, std::string &slave_path, std::string &err) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) {
        err = std::string("cannot open a pty: ") + std::strerror(errno);
        if (m >= 0) ::close(m);
        return false;
    }
    master.reset(m);
    char name[128];
    if (ptsname_r(m, name, sizeof name) != 0) {
        err = std::string("ptsname: ") + std::strerror(errno);
        return false;
    }
    slave_path = name;
    // Set the mode through the slave: on some systems the master ignores it.
    int s = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        err = std::string("cannot open ") + name + ": " + std::strerror(errno);
        return false;
    }
    termios t{};
    if (tcgetattr(s, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(s, running_on_wsl() ? TCSANOW : TCSAFLUSH, &t);
    }
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = 200;
    ioctl(s, TIOCSWINSZ, &ws);
    ::close(s);
    return true;
}
}  // namespace

void Connection::start() {
    const MethodInfo *method = find_method(req_.method);
    if (!method) return fail(SPORE_EINVAL, "unknown connection method '" + req_.method + "'");

    std::string agent_args = "spore:" + sanitize_name(req_.remote_name.empty() ? req_.name : req_.remote_name);
    LaunchInput in;
    in.options = req_.options.get();
    in.agent_args = agent_args;
    in.in_agent = req_.in_agent;
    in.local_agent = req_.local_agent;
    try {
        if (method->name != "fork") {
            auto img = image_fn_();
            offered_codecs_ = codecs_to_offer(req_.agent_compress);
            in.first_stage = first_stage_script(img->sha256(), req_.agent_cache, agent_args, offered_codecs_);
        }
        spec_ = method->build(in);
        if (!spec_.prompts.empty()) prompts_ = std::make_unique<PromptMatcher>(spec_.prompts, spec_.secrets);
    } catch (const Error &e) {
        return fail(e.code(), e.what());
    }
    // The options (and the secrets in them) are not needed any more.
    for (auto &s : spec_.secrets) wipe(s.second);
    const cJSON *item;
    cJSON_ArrayForEach(item, req_.options.get())
        if (cJSON_IsString(item) && item->valuestring) explicit_bzero(item->valuestring, std::strlen(item->valuestring));
    req_.options = json_object();
    if (spec_.agent_direct) spec_.argv.push_back(agent_args);
    if (on_debug_) on_debug_("starting " + req_.name + ": " + quote_for_log(spec_.argv));

    UniqueFd ours, err_r;
    if (spec_.in_process_ssh) {
        if (start_in_process_ssh(ours, err_r) != 0) return;
    } else if (spawn(spec_, ours, err_r) != 0) {
        return;
    }

    if (err_r) {
        err_fd_ = std::move(err_r);
        set_nonblocking(err_fd_.get());
        err_ev_.reset(event_new(
            loop_.base(), err_fd_.get(), EV_READ | EV_PERSIST,
            [](evutil_socket_t, short, void *arg) { static_cast<Connection *>(arg)->read_stderr(); }, this));
        event_add(err_ev_.get(), nullptr);
    }

    int sock = ours.release();
    stream_ = std::make_shared<Stream>(loop_, sock, sock, req_.name, limits_);
    stream_->set_remote_id(req_.id);
    std::weak_ptr<Connection> weak = weak_from_this();
    stream_->on_raw([weak](Stream &, std::string_view bytes) {
        if (auto self = weak.lock()) self->on_raw(bytes);
    });
    stream_->on_close([weak](Stream &, const std::string &reason) {
        auto self = weak.lock();
        if (!self || self->finished_) return;
        self->drain_stderr_now();
        if (self->pending_code_) return self->fail_pending();
        std::string why = reason == "EOF" ? self->early_exit_reason() : reason;
        self->fail(SPORE_ECONNECT, why);
    });
    stream_->start(true);
    timeout_ = std::make_unique<Timer>(loop_, req_.timeout_s, [weak] {
        if (auto self = weak.lock()) {
            self->drain_stderr_now();
            self->fail(SPORE_ETIMEDOUT, "timed out after " + std::to_string(int(self->req_.timeout_s * 1000)) +
                                            " ms waiting for the agent");
        }
    });
}

namespace {
// The socketpair of a child's stream. Larger socket buffers let a 1 MiB
// message move in few wake-ups.
bool stream_pair(UniqueFd &ours, UniqueFd &theirs, std::string &err) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        err = std::string("socketpair: ") + std::strerror(errno);
        return false;
    }
    ours.reset(sv[0]);
    theirs.reset(sv[1]);
    int sz = 1 << 20;
    setsockopt(ours.get(), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(ours.get(), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    return true;
}
}  // namespace

int Connection::start_in_process_ssh(UniqueFd &stream_fd, UniqueFd &err_fd) {
    const InProcessSsh *backend = in_process_ssh();
    if (!backend) {
        fail(SPORE_EINVAL, "the libssh2 backend is not available in this process");
        return -1;
    }
    UniqueFd ours, theirs;
    std::string err;
    if (!stream_pair(ours, theirs, err)) {
        fail(SPORE_ECONNECT, err);
        return -1;
    }
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) != 0) {
        fail(SPORE_ECONNECT, std::string("pipe: ") + std::strerror(errno));
        return -1;
    }
    UniqueFd err_r(ep[0]), err_w(ep[1]);
    std::weak_ptr<Connection> weak = weak_from_this();
    InProcessSshHooks hooks;
    hooks.failed = [weak](int code, const std::string &why) {
        auto self = weak.lock();
        if (!self) return;
        if (!self->finished_) {
            self->drain_stderr_now();
            self->fail(code, why);
        } else if (self->on_debug_) {
            self->on_debug_(self->req_.name + ": " + why);
        }
    };
    hooks.debug = [weak](const std::string &line) {
        auto self = weak.lock();
        if (self && self->on_debug_) self->on_debug_(line);
    };
    try {
        ssh_ = backend->start(loop_, spec_, theirs.release(), err_w.release(), std::move(hooks));
    } catch (const Error &e) {
        fail(e.code(), e.what());
        return -1;
    }
    spec_.ssh_options.reset();  // the session has its copy (with the secrets)
    stream_fd = std::move(ours);
    err_fd = std::move(err_r);
    return 0;
}

void Connection::stop_ssh() {
    if (!ssh_) return;
    if (const InProcessSsh *backend = in_process_ssh()) backend->stop(ssh_);
    ssh_.reset();
}

// Starts the launcher. stream_fd gets our end of its stdin/stdout (a socket,
// or the pty master for TtyMode::Full); err_fd its stderr (a pipe, or the
// pty master for TtyMode::Hybrid). Returns non-zero after fail().
int Connection::spawn(const LaunchSpec &spec, UniqueFd &stream_fd, UniqueFd &err_fd) {
    UniqueFd ours, theirs, err_w, pty;
    std::string slave, err;
    if (spec.tty != TtyMode::None && !open_raw_pty(pty, slave, err)) {
        fail(SPORE_ECONNECT, err);
        return -1;
    }
    if (spec.tty != TtyMode::Full && !stream_pair(ours, theirs, err)) {
        fail(SPORE_ECONNECT, err);
        return -1;
    }
    if (spec.tty == TtyMode::None) {
        int ep[2];
        if (pipe2(ep, O_CLOEXEC) != 0) {
            fail(SPORE_ECONNECT, std::string("pipe: ") + std::strerror(errno));
            return -1;
        }
        err_fd.reset(ep[0]);
        err_w.reset(ep[1]);
    }

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    switch (spec.tty) {
    case TtyMode::None:
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 0);
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 1);
        posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
        break;
    case TtyMode::Hybrid:
        // Opened after setsid and without O_NOCTTY, the pty becomes the
        // child's controlling terminal: /dev/tty reaches it.
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 0);
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 1);
        posix_spawn_file_actions_addopen(&fa, 2, slave.c_str(), O_RDWR, 0);
        break;
    case TtyMode::Full:
        posix_spawn_file_actions_addopen(&fa, 0, slave.c_str(), O_RDWR, 0);
        posix_spawn_file_actions_adddup2(&fa, 0, 1);
        posix_spawn_file_actions_adddup2(&fa, 0, 2);
        break;
    }
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&defaults, s);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    // A session of its own: terminal signals aimed at the program do not hit
    // the agents, which are shut down through their streams instead.
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
    std::vector<char *> argv;
    for (auto &a : spec.argv) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    // posix_spawnp: launchers (ssh, sudo, docker...) are found on PATH.
    int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fail(SPORE_ECONNECT, "cannot start " + spec.argv[0] + ": " + std::strerror(rc));
        return -1;
    }
    pid_ = pid;
    if (spec.tty == TtyMode::Full) {
        stream_fd = std::move(pty);
    } else {
        stream_fd = std::move(ours);
        if (spec.tty == TtyMode::Hybrid) err_fd = std::move(pty);
    }
    return 0;
}

void Connection::remember(const std::string &line) {
    if (line.empty()) return;
    last_lines_.push_back(line.substr(0, kMaxLine));
    while (last_lines_.size() > kLastLines) last_lines_.pop_front();
}

std::string Connection::last_output() const {
    std::string out;
    for (auto &l : last_lines_) {
        out += "\n  ";
        out += l;
    }
    return out;
}

void Connection::on_raw(std::string_view bytes) {
    // On a full terminal the prompts arrive here, mixed with the markers.
    if (spec_.tty == TtyMode::Full && prompts_) {
        scan_prompts(bytes);
        if (finished_) return;
    }
    out_buf_.append(bytes);
    bool hello = false;
    size_t pos;
    while (!hello && !finished_ && (pos = out_buf_.find('\n')) != std::string::npos) {
        std::string line = out_buf_.substr(0, pos);
        out_buf_.erase(0, pos + 1);
        handle_line(line, hello);
    }
    if (finished_) return;
    if (hello) {
        std::string leftover;
        leftover.swap(out_buf_);
        stream_->switch_to_frames(leftover);
        succeed();
        return;
    }
    if (out_buf_.size() > kMaxLine) {
        remember(out_buf_.substr(0, kMaxLine));
        out_buf_.clear();
    }
}

void Connection::handle_line(const std::string &raw_line, bool &hello_seen) {
    std::string line = raw_line;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind(kReadyMarker, 0) == 0) {
        on_ready_line(line);
        return;
    }
    if (line.rfind(kHelloMarker, 0) == 0) {
        std::string version = line.size() > 12 ? line.substr(12) : "";
        if (version != SPORE_VERSION_STRING) {
            fail(SPORE_ECONNECT, "agent version '" + version + "' does not match " SPORE_VERSION_STRING);
            return;
        }
        hello_seen = true;
        return;
    }
    // On a full terminal the prompt scanner already remembered the line.
    if (!(spec_.tty == TtyMode::Full && prompts_)) remember(prompts_ ? prompts_->mask(line) : line);
}

void Connection::scan_prompts(std::string_view bytes) {
    prompt_lines_.clear();
    auto o = prompts_->feed(bytes, prompt_lines_);
    for (auto &l : prompt_lines_) {
        if (!spec_.debug_line_prefix.empty() && l.rfind(spec_.debug_line_prefix, 0) == 0 && on_debug_) on_debug_(l);
        if (l.rfind(kReadyMarker, 0) != 0 && l.rfind(kHelloMarker, 0) != 0) remember(l);
    }
    apply(o);
    if (finished_ || pending_code_) return;
    settle_timer_.reset();
    if (prompts_->prompt_pending()) {
        // A prompt is acted on once the output pauses: a banner line that
        // only contains "password:" goes on, and is not answered.
        std::weak_ptr<Connection> weak = weak_from_this();
        settle_timer_ = std::make_unique<Timer>(loop_, 0.03, [weak] {
            auto self = weak.lock();
            if (!self || self->finished_ || !self->prompts_) return;
            auto out = self->prompts_->settle();
            self->settle_timer_.reset();
            self->apply(out);
        });
    }
}

void Connection::apply(const PromptMatcher::Outcome &o) {
    if (o.code) {
        if (pending_code_) return;  // the first failure counts
        // The launcher usually says more (a fingerprint, a reason) and then
        // exits: fail once its output ends, or after a moment.
        pending_code_ = o.code;
        pending_why_ = o.message;
        std::weak_ptr<Connection> weak = weak_from_this();
        settle_timer_ = std::make_unique<Timer>(loop_, 0.3, [weak] {
            if (auto self = weak.lock()) self->fail_pending();
        });
        return;
    }
    if (!o.reply.empty()) {
        if (on_debug_) on_debug_(req_.name + ": answering a prompt");
        send_to_terminal(o.reply);
    }
}

void Connection::fail_pending() {
    drain_stderr_now();
    std::string why = pending_why_;
    if (prompts_)
        for (auto &n : prompts_->notes()) why += "; " + n;
    fail(pending_code_, why);
}

void Connection::send_to_terminal(std::string bytes) {
    if (spec_.answer_on_stdin || spec_.tty == TtyMode::Full) {
        if (stream_) stream_->send_raw(bytes);
    } else if (spec_.tty == TtyMode::Hybrid && err_fd_) {
        const char *p = bytes.data();
        size_t left = bytes.size();
        while (left > 0) {
            ssize_t n = ::write(err_fd_.get(), p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            p += n;
            left -= size_t(n);
        }
    } else {
        wipe(bytes);
        fail(SPORE_ECONNECT, "the launcher asks for input but has no terminal");
        return;
    }
    wipe(bytes);
}

namespace {
std::string compress_failure(ImageCodec codec, const std::exception &e) {
    return std::string("cannot compress the agent image with ") + codec_word(codec) + ": " + e.what();
}
}  // namespace

void Connection::on_ready_line(const std::string &line) {
    std::shared_ptr<AgentImage> img;
    ImageCodec codec;
    try {
        img = image_fn_();
        codec = choose_codec(line, offered_codecs_, req_.agent_compress);
    } catch (const Error &e) {
        return fail(e.code(), e.what());
    }
    if (img->is_encoded(codec)) return send_image(*img, codec, false);
    // The first compression of the image with a codec takes up to half a
    // second (xz): on the loop it would hold up every other stream, so a
    // thread of its own does it and hands the result back.
    auto handoff = std::make_shared<LoopHandoff>(loop_);
    image_handoff_ = handoff;
    std::weak_ptr<Connection> weak = weak_from_this();
    try {
        std::thread([handoff, img, codec, weak] {
            std::string error;
            try {
                img->encoded(codec);
            } catch (const std::exception &e) {
                error = compress_failure(codec, e);
            }
            handoff->post([weak, img, codec, error] {
                auto self = weak.lock();
                if (!self || self->finished_) return;
                self->image_handoff_.reset();
                if (!error.empty()) return self->fail(SPORE_EINTERNAL, error);
                self->send_image(*img, codec, true);
            });
        }).detach();
    } catch (...) {  // std::system_error
        // No thread to be had (a process limit): compress here after all.
        image_handoff_.reset();
        send_image(*img, codec, true);
    }
}

void Connection::send_image(const AgentImage &img, ImageCodec codec, bool made_now) {
    std::string out;
    try {
        const std::string &bytes = img.encoded(codec);
        // The first stage reads the byte count and the codec it unpacks with.
        out = std::to_string(bytes.size()) + " " + codec_word(codec) + "\n";
        out += bytes;
        image_bytes_sent_ = bytes.size();
    } catch (const std::exception &e) {
        return fail(SPORE_EINTERNAL, compress_failure(codec, e));
    }
    stream_->send_raw(std::move(out));
    if (!on_debug_) return;
    std::string made;
    if (made_now) made = ", compressed in " + std::to_string(int(img.encode_seconds(codec) * 1000 + 0.5)) + " ms";
    on_debug_("first contact with " + req_.name + ": sent the agent image, " + std::to_string(image_bytes_sent_) +
              " bytes " + codec_word(codec) + " (sha256 " + img.sha256().substr(0, 16) + "..." + made + ")");
}

std::string Connection::early_exit_reason() const {
    for (auto &line : last_lines_)
        if (line.find(kImageDoesNotRun) != std::string::npos)
            return "the agent image " + req_.local_agent +
                   " does not run on the target (is it a program for the target's machine?)";
    return "the child exited before the agent answered";
}

void Connection::read_stderr() {
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(err_fd_.get(), buf, sizeof buf);
        if (n > 0 && !booted_ && prompts_) {
            scan_prompts(std::string_view(buf, size_t(n)));
            if (finished_) return;
            continue;
        }
        if (n > 0) {
            err_buf_.append(buf, size_t(n));
            size_t pos;
            while ((pos = err_buf_.find('\n')) != std::string::npos) {
                std::string line = err_buf_.substr(0, pos);
                err_buf_.erase(0, pos + 1);
                stderr_line(line);
            }
            if (err_buf_.size() > kMaxLine) {
                stderr_line(err_buf_);
                err_buf_.clear();
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        // EOF or error: flush the last partial line and stop watching.
        if (!err_buf_.empty()) {
            stderr_line(err_buf_);
            err_buf_.clear();
        }
        err_ev_.reset();
        err_eof_ = true;
        // A pty master stays open while the child lives: closing it would
        // hang up the child's controlling terminal (SIGHUP to the agent).
        if (spec_.tty != TtyMode::Hybrid) err_fd_.reset();
        return;
    }
}

void Connection::stderr_line(const std::string &raw) {
    std::string line = raw;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!spec_.debug_line_prefix.empty() && line.rfind(spec_.debug_line_prefix, 0) == 0) {
        if (on_debug_) on_debug_(line);
        if (!booted_) remember(line);
        return;
    }
    if (booted_ && on_stderr_) on_stderr_(line);
    else remember(line);
}

void Connection::drain_stderr_now() {
    if (!err_fd_ || err_eof_) return;
    // Give a dying child a moment to finish its last words.
    for (int i = 0; i < 20 && err_fd_ && !err_eof_; ++i) {
        read_stderr();
        if (!err_fd_ || err_eof_) break;
        if (pid_ > 0) {
            int st;
            pid_t r = waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                exit_status_ = st;
                pid_ = -1;
                read_stderr();
                break;
            }
        }
        usleep(1000);
    }
}

void Connection::succeed() {
    if (finished_) return;
    finished_ = true;
    booted_ = true;
    timeout_.reset();
    settle_timer_.reset();
    prompts_.reset();  // wipes the secrets
    // stderr lines that came before the hello were part of the bootstrap.
    last_lines_.clear();
    auto done = std::move(done_);
    done(ErrorInfo{});
}

void Connection::fail(int code, const std::string &why) {
    if (finished_) return;
    finished_ = true;
    timeout_.reset();
    settle_timer_.reset();
    ErrorInfo err;
    err.code = code;
    err.context = req_.name;
    err.message = "connect to " + req_.name + " (" + req_.method + ") failed: " + why;
    if (exit_status_ >= 0) {
        if (WIFEXITED(exit_status_)) err.message += " (exit status " + std::to_string(WEXITSTATUS(exit_status_)) + ")";
        else if (WIFSIGNALED(exit_status_)) err.message += " (killed by signal " + std::to_string(WTERMSIG(exit_status_)) + ")";
    }
    if (!last_lines_.empty()) err.message += "; last output:" + last_output();
    if (prompts_) err.message = prompts_->mask(err.message);
    prompts_.reset();
    if (stream_) stream_->close("connect failed");
    auto done = std::move(done_);
    if (done) done(err);
}

void Connection::reap(double term_after_s, double kill_after_s, std::function<void()> on_reaped) {
    term_after_ = term_after_s;
    kill_after_ = kill_after_s;
    on_reaped_ = std::move(on_reaped);
    stop_ssh();  // an ssh session ends with its stream
    reap_elapsed_ = 0;
    reap_delay_ = 0.0005;
    reap_step();
}

void Connection::reap_after_close(int close_code, std::function<void()> on_reaped) {
    if (close_code == SPORE_EUNRESPONSIVE) reap(0.0, 1.0, std::move(on_reaped));
    else reap(1.0, 3.0, std::move(on_reaped));
}

void Connection::reap_step() {
    if (pid_ > 0) {
        int st = 0;
        pid_t r = waitpid(pid_, &st, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
            exit_status_ = st;
            if (r == pid_ && WIFSIGNALED(st)) kill_session_of(pid_);
            pid_ = -1;
        }
    }
    if (pid_ <= 0) {
        reap_timer_.reset();
        if (on_reaped_) {
            auto fn = std::move(on_reaped_);
            on_reaped_ = nullptr;
            fn();
        }
        return;
    }
    if (!termed_ && reap_elapsed_ >= term_after_) {
        termed_ = true;
        // A stopped agent acts on SIGTERM only once continued.
        ::kill(pid_, SIGTERM);
        ::kill(pid_, SIGCONT);
    }
    if (!killed_ && reap_elapsed_ >= kill_after_) {
        killed_ = true;
        ::kill(pid_, SIGKILL);
    }
    reap_elapsed_ += reap_delay_;
    double delay = reap_delay_;
    reap_delay_ = std::min(reap_delay_ * 2, 0.1);
    std::weak_ptr<Connection> weak = weak_from_this();
    reap_timer_ = std::make_unique<Timer>(loop_, delay, [weak] {
        if (auto self = weak.lock()) self->reap_step();
    });
}

bool Connection::try_reap() {
    if (ssh_) {
        // Reaped once the remote agent has closed its end (after a shutdown).
        if (stream_ && !stream_->closed()) return false;
        stop_ssh();
        return true;
    }
    if (pid_ <= 0) return true;
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
        exit_status_ = st;
        if (r == pid_ && WIFSIGNALED(st)) kill_session_of(pid_);
        pid_ = -1;
        reap_timer_.reset();
        return true;
    }
    return false;
}

void Connection::resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void Connection::kill_and_wait() {
    stop_ssh();
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    kill_session_of(pid_);
    pid_ = -1;
    reap_timer_.reset();
}

}  // namespace spore
