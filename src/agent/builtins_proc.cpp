// proc.run: runs a program, feeds its stdin, captures and/or streams its
// output, with a timeout that kills its whole process group.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "agent/builtins_util.h"

extern char **environ;

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

struct Options {
    bool stream, capture;
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

// Moves fd above the standard descriptors so that the child's dup2 onto 0-2
// never clobbers another of its pipe ends.
int above_stdio(int fd) {
    if (fd > 2) return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    ::close(fd);
    errno = e;
    return n;
}

void make_pipe(const CallRequest &req, UniqueFd &rd, UniqueFd &wr, bool nonblock_read) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) throw_os(req, "pipe", errno);
    rd.reset(above_stdio(p[0]));
    wr.reset(above_stdio(p[1]));
    if (!rd || !wr) throw_os(req, "pipe", errno);
    int nb = nonblock_read ? rd.get() : wr.get();
    if (fcntl(nb, F_SETFL, fcntl(nb, F_GETFL) | O_NONBLOCK) != 0) throw_os(req, "pipe", errno);
}

struct SpawnAttr {
    posix_spawnattr_t a;
    SpawnAttr() {
        if (posix_spawnattr_init(&a) != 0) throw std::bad_alloc();
    }
    ~SpawnAttr() { posix_spawnattr_destroy(&a); }
};

struct FileActions {
    posix_spawn_file_actions_t fa;
    FileActions() {
        if (posix_spawn_file_actions_init(&fa) != 0) throw std::bad_alloc();
    }
    ~FileActions() { posix_spawn_file_actions_destroy(&fa); }
};

void check_spawn(int rc) {
    if (rc == ENOMEM) throw std::bad_alloc();
}

// The started child: killed (whole group) and reaped if we leave early.
struct Child {
    pid_t pid;
    Services &svc;
    bool registered = false, reaped = false, status_known = false;
    int status = 0;

    ~Child() {
        if (reaped) return;
        ::kill(-pid, SIGKILL);
        wait(0);
    }
    // waitpid with flags; true when the child is gone.
    bool wait(int flags) {
        int st = 0;
        pid_t r;
        while ((r = waitpid(pid, &st, flags)) < 0 && errno == EINTR) {
        }
        if (r == 0) return false;
        reaped = true;
        status_known = r == pid;
        status = st;
        if (registered) svc.unregister_process(pid);
        return true;
    }
};

// Blocks SIGPIPE in this thread while we write to the child's stdin, then
// swallows the one a write to a closed pipe may have left pending.
struct SigpipeBlock {
    sigset_t set, old;
    bool got_epipe = false;
    SigpipeBlock() {
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, &old);
    }
    ~SigpipeBlock() {
        if (got_epipe) {
            struct timespec zero {};
            while (sigtimedwait(&set, nullptr, &zero) > 0) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
};

int ms_until(Clock::time_point t) {
    auto d = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
    return int(std::clamp<int64_t>(d, 0, 1 << 30));
}

// PATH lookup with the child's PATH (posix_spawnp would use ours).
std::string find_in_path(const std::string &prog, const char *path) {
    std::string_view rest(path);
    for (;;) {
        size_t colon = rest.find(':');
        std::string_view dir = rest.substr(0, colon);
        std::string cand = dir.empty() ? prog : std::string(dir) + "/" + prog;
        struct stat st;
        if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(cand.c_str(), X_OK) == 0)
            return cand.find('/') == std::string::npos ? "./" + cand : cand;
        if (colon == std::string_view::npos) return prog;
        rest.remove_prefix(colon + 1);
    }
}

}  // namespace

SpawnSpec parse_spawn_spec(const CallRequest &req) {
    SpawnSpec spec;
    std::vector<std::string> &argv = spec.argv;
    std::vector<std::string> &env = spec.env;
    const cJSON *jargv = arg(req, "argv");
    auto shell = arg_opt_str(req, "shell");
    if (jargv && shell) bad_arg(req, "argv", "and 'shell' are mutually exclusive");
    if (shell) {
        argv = {"/bin/sh", "-c", *shell};
    } else {
        if (!cJSON_IsArray(jargv) || !cJSON_GetArraySize(jargv))
            bad_arg(req, "argv", "must be a non-empty array of strings (or give 'shell')");
        const cJSON *it;
        cJSON_ArrayForEach(it, jargv) {
            if (!cJSON_IsString(it) || !it->valuestring)
                bad_arg(req, "argv", "must be a non-empty array of strings");
            argv.emplace_back(it->valuestring);
        }
    }

    bool env_clear = arg_bool(req, "env_clear", false);
    if (!env_clear)
        for (char **e = environ; e && *e; ++e) env.emplace_back(*e);
    if (const cJSON *jenv = arg(req, "env")) {
        if (!cJSON_IsObject(jenv)) bad_arg(req, "env", "must be an object of strings");
        const cJSON *it;
        cJSON_ArrayForEach(it, jenv) {
            std::string_view key(it->string ? it->string : "");
            if (key.empty() || key.find('=') != std::string_view::npos)
                bad_arg(req, "env", "has a name that is empty or contains '='");
            if (!cJSON_IsString(it) && !cJSON_IsNull(it))
                bad_arg(req, "env", "must be an object of strings");
            std::erase_if(env, [&](const std::string &e) {
                return e.size() > key.size() && e[key.size()] == '=' && e.starts_with(key);
            });
            if (cJSON_IsString(it)) env.push_back(std::string(key) + "=" + it->valuestring);
        }
    }
    spec.cwd = arg_opt_str(req, "cwd");

    // Program path: honour a PATH given in the child's environment.
    spec.prog = argv[0];
    if (!spec.prog.empty() && spec.prog.find('/') == std::string::npos) {
        const char *child_path = nullptr;
        for (const std::string &e : env)
            if (e.starts_with("PATH=")) {
                child_path = e.c_str() + 5;
                break;
            }
        const char *our_path = getenv("PATH");
        if (child_path && (!our_path || strcmp(child_path, our_path) != 0))
            spec.prog = find_in_path(spec.prog, child_path);
    }
    return spec;
}

pid_t spawn_child(const CallRequest &req, SpawnSpec &spec, posix_spawn_file_actions_t *fa, bool new_session,
                  Services &svc) {
    if (spec.cwd) check_spawn(posix_spawn_file_actions_addchdir_np(fa, spec.cwd->c_str()));
    // Only stdin, stdout and stderr: nothing the agent inherited leaks on.
    check_spawn(posix_spawn_file_actions_addclosefrom_np(fa, 3));
    SpawnAttr attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setflags(&attr.a, (new_session ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP) |
                                          POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!new_session) posix_spawnattr_setpgroup(&attr.a, 0);
    posix_spawnattr_setsigmask(&attr.a, &none);
    posix_spawnattr_setsigdefault(&attr.a, &all);

    std::vector<char *> cargv, cenv;
    for (std::string &s : spec.argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    for (std::string &s : spec.env) cenv.push_back(s.data());
    cenv.push_back(nullptr);

    if (int refused = svc.begin_spawn(req.caller); refused != SPORE_OK)
        throw Error(refused, std::string(req.function) + ": nothing started: " +
                                 (refused == SPORE_ESHUTDOWN ? "context " + svc.context_name() + " is exiting"
                                                             : "its caller has gone"));
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, spec.prog.c_str(), fa, &attr.a, cargv.data(), cenv.data());
    if (!svc.register_process(rc == 0 ? pid : -1, req.caller) && rc == 0) ::kill(-pid, SIGKILL);
    if (rc != 0) {
        if (spec.cwd) {
            struct stat st;
            if (::stat(spec.cwd->c_str(), &st) != 0) throw_os(req, "cwd '" + *spec.cwd + "'", errno);
            if (!S_ISDIR(st.st_mode)) throw_os(req, "cwd '" + *spec.cwd + "'", ENOTDIR);
        }
        throw_remote(req, errno_type(rc),
                     std::string(req.function) + ": cannot execute '" + spec.argv[0] +
                         "': " + errno_text(rc) + " (errno " + std::to_string(rc) + ")");
    }
    return pid;
}

void proc_run(const CallRequest &req, CallReply &reply, Services &svc) {
    SpawnSpec spec = parse_spawn_spec(req);
    auto stdin_arg = arg_opt_str(req, "stdin");
    std::string_view input = stdin_arg ? std::string_view(*stdin_arg) : req.data;
    int64_t timeout_ms = arg_int(req, "timeout_ms", 0, 0, int64_t(1) << 40);
    Options opt;
    opt.stream = arg_bool(req, "stream", false) && svc.log_enabled(kLogInfo);
    opt.capture = arg_bool(req, "capture", true);
    bool stdout_binary = arg_bool(req, "stdout_binary", false);
    opt.max_output = size_t(arg_int(req, "max_output", kDefaultMaxOutput, 0, int64_t(1) << 50));
    opt.caller = req.caller;

    // ---- pipes and spawn attributes
    UniqueFd in_rd, in_wr, out_rd, out_wr, err_rd, err_wr;
    if (!input.empty()) make_pipe(req, in_rd, in_wr, false);
    make_pipe(req, out_rd, out_wr, true);
    make_pipe(req, err_rd, err_wr, true);

    FileActions fa;
    if (in_rd) check_spawn(posix_spawn_file_actions_adddup2(&fa.fa, in_rd.get(), 0));
    else check_spawn(posix_spawn_file_actions_addopen(&fa.fa, 0, "/dev/null", O_RDONLY, 0));
    check_spawn(posix_spawn_file_actions_adddup2(&fa.fa, out_wr.get(), 1));
    check_spawn(posix_spawn_file_actions_adddup2(&fa.fa, err_wr.get(), 2));
    pid_t pid = spawn_child(req, spec, &fa.fa, false, svc);
    Child child{pid, svc};  // from here on the child is always killed/reaped
    child.registered = true;
    in_rd.reset();
    out_wr.reset();
    err_wr.reset();

    // ---- I/O until every pipe is closed
    OutStream outs[2] = {{"stdout", std::move(out_rd), {}, {}, false},
                         {"stderr", std::move(err_rd), {}, {}, false}};
    SigpipeBlock sigpipe;
    const bool has_deadline = timeout_ms > 0;
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    Clock::time_point grace_end{};
    bool timed_out = false;
    size_t in_off = 0;
    std::vector<char> buf(kChunk);

    while (in_wr || outs[0].fd || outs[1].fd) {
        int wait_ms = -1;
        if (timed_out) {
            wait_ms = ms_until(grace_end);
            if (wait_ms == 0) break;  // something outside the group holds the pipes
        } else if (has_deadline) {
            wait_ms = ms_until(deadline);
            if (wait_ms == 0) {
                ::kill(-pid, SIGKILL);
                timed_out = true;
                in_wr.reset();
                grace_end = Clock::now() + kKillGrace;
                continue;
            }
        }
        pollfd pfds[3];
        int n = 0, in_idx = -1, out_idx[2] = {-1, -1};
        if (in_wr) {
            in_idx = n;
            pfds[n++] = {in_wr.get(), POLLOUT, 0};
        }
        for (int k = 0; k < 2; ++k)
            if (outs[k].fd) {
                out_idx[k] = n;
                pfds[n++] = {outs[k].fd.get(), POLLIN, 0};
            }
        int r = poll(pfds, nfds_t(n), wait_ms);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_os(req, "poll", errno);
        }
        if (in_idx >= 0 && pfds[in_idx].revents) {
            size_t len = std::min(kChunk, input.size() - in_off);
            ssize_t w = ::write(in_wr.get(), input.data() + in_off, len);
            if (w > 0) in_off += size_t(w);
            else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                if (errno == EPIPE) sigpipe.got_epipe = true;
                in_wr.reset();  // the child stopped reading: not an error
            }
            if (in_off == input.size()) in_wr.reset();
        }
        for (int k = 0; k < 2; ++k) {
            if (out_idx[k] < 0 || !pfds[out_idx[k]].revents) continue;
            OutStream &s = outs[k];
            // Drain what is there (bounded, to stay fair to the other pipes).
            for (int rounds = 0; rounds < 16; ++rounds) {
                ssize_t got = ::read(s.fd.get(), buf.data(), buf.size());
                if (got > 0) {
                    consume(s, buf.data(), size_t(got), opt, svc);
                    if (size_t(got) < buf.size()) break;
                    continue;
                }
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
                s.fd.reset();  // EOF or error
                break;
            }
        }
    }
    in_wr.reset();
    for (OutStream &s : outs) {
        s.fd.reset();
        if (opt.stream && !s.line.empty()) emit_line(s, opt, svc);
    }

    // ---- reap, still honouring the deadline if the child closed its pipes
    if (has_deadline && !timed_out) {
        long sleep_us = 1000;
        while (!child.wait(WNOHANG)) {
            if (Clock::now() >= deadline) {
                ::kill(-pid, SIGKILL);
                timed_out = true;
                break;
            }
            long left = long(std::chrono::duration_cast<std::chrono::microseconds>(
                                 deadline - Clock::now()).count());
            struct timespec ts {0, 1000 * std::clamp(left, 1L, sleep_us)};
            nanosleep(&ts, nullptr);
            sleep_us = std::min(sleep_us * 2, 50000L);
        }
    }
    if (!child.reaped) child.wait(0);

    // ---- result
    Json res = json_object();
    cJSON *o = res.get();
    bool exited = child.status_known && WIFEXITED(child.status);
    bool signaled = child.status_known && WIFSIGNALED(child.status);
    add(o, "rc", check(exited ? cJSON_CreateNumber(WEXITSTATUS(child.status)) : cJSON_CreateNull()));
    add(o, "signal", check(signaled ? cJSON_CreateNumber(WTERMSIG(child.status)) : cJSON_CreateNull()));
    if (stdout_binary) {
        reply.data = std::move(outs[0].captured);
        add_str(o, "stdout", "");
    } else {
        add_str(o, "stdout", outs[0].captured);
    }
    add_str(o, "stderr", outs[1].captured);
    add(o, "timed_out", check(cJSON_CreateBool(timed_out)));
    add(o, "truncated", check(cJSON_CreateBool(outs[0].truncated || outs[1].truncated)));
    add_num(o, "pid", pid);
    reply.result = std::move(res);
}

}  // namespace spore::agent::detail
