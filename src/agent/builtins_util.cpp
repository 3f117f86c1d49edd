// The helpers the built-in functions share (declared in builtins_util.h):
// arguments, errors, JSON replies, the passwd and group files, starting and
// reaping processes.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "agent/builtins_util.h"
#include "core/channel.h"

extern char **environ;

namespace spore::agent {

namespace detail {

// ---- arguments -----------------------------------------------------------

void bad_arg(const CallRequest &req, const char *key, const char *what) {
    std::string msg(req.function);
    msg += ": argument '";
    msg += key;
    msg += "' ";
    msg += what;
    ErrorInfo info;
    info.code = SPORE_EBADARGS;
    info.message = std::move(msg);
    info.function = std::string(req.function);
    throw Error(std::move(info));
}

const cJSON *arg(const CallRequest &req, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req.args, key);
    return cJSON_IsNull(v) ? nullptr : v;
}

std::string arg_str(const CallRequest &req, const char *key) {
    const cJSON *v = arg(req, key);
    if (!cJSON_IsString(v) || !v->valuestring) bad_arg(req, key, "must be a string");
    if (!*v->valuestring) bad_arg(req, key, "must not be empty");
    return v->valuestring;
}

std::optional<std::string> arg_opt_str(const CallRequest &req, const char *key) {
    const cJSON *v = arg(req, key);
    if (!v) return std::nullopt;
    if (!cJSON_IsString(v) || !v->valuestring) bad_arg(req, key, "must be a string");
    return std::string(v->valuestring);
}

std::optional<int64_t> arg_opt_int(const CallRequest &req, const char *key, int64_t min,
                                   int64_t max) {
    const cJSON *v = arg(req, key);
    if (!v) return std::nullopt;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < double(min) || d > double(max)) {
        std::string what = "must be an integer between " + std::to_string(min) + " and " +
                           std::to_string(max);
        bad_arg(req, key, what.c_str());
    }
    return int64_t(d);
}

int64_t arg_int(const CallRequest &req, const char *key, int64_t fallback, int64_t min,
                int64_t max) {
    return arg_opt_int(req, key, min, max).value_or(fallback);
}

bool arg_bool(const CallRequest &req, const char *key, bool fallback) {
    const cJSON *v = arg(req, key);
    if (!v) return fallback;
    if (!cJSON_IsBool(v)) bad_arg(req, key, "must be a boolean");
    return cJSON_IsTrue(v);
}

// ---- errors --------------------------------------------------------------

const char *errno_type(int err) noexcept { return file_error_type(err); }

namespace {
// strerror_r comes in a GNU and an XSI flavour.
[[maybe_unused]] const char *pick_strerror(int rc, const char *buf) {
    return rc == 0 ? buf : "Unknown error";
}
[[maybe_unused]] const char *pick_strerror(const char *rc, const char *) { return rc; }
}  // namespace

std::string errno_text(int err) {
    char buf[128];
    buf[0] = 0;
    return pick_strerror(strerror_r(err, buf, sizeof buf), buf);
}

void throw_remote(const CallRequest &req, const char *type, std::string message) {
    ErrorInfo info;
    info.code = SPORE_EREMOTE;
    info.remote_type = type;
    info.message = std::move(message);
    info.function = std::string(req.function);
    throw Error(std::move(info));
}

void throw_os(const CallRequest &req, std::string_view what, int err) {
    std::string msg(req.function);
    msg += ": ";
    msg += what;
    msg += ": ";
    msg += errno_text(err);
    msg += " (errno " + std::to_string(err) + ")";
    throw_remote(req, errno_type(err), std::move(msg));
}

// ---- JSON ----------------------------------------------------------------

std::string utf8_sanitize(std::string_view s) {
    static constexpr char kReplacement[] = "\xEF\xBF\xBD";
    std::string out;
    out.reserve(s.size());
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x01 && c < 0x80) {
            size_t j = i + 1;
            while (j < n && p[j] >= 0x01 && p[j] < 0x80) ++j;
            out.append(s.data() + i, j - i);
            i = j;
            continue;
        }
        size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        size_t good = 1;  // length of the maximal well-formed prefix
        if (len) {
            unsigned char lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;        // overlong
            else if (c == 0xED) hi = 0x9F;   // surrogates
            else if (c == 0xF0) lo = 0x90;   // overlong
            else if (c == 0xF4) hi = 0x8F;   // above U+10FFFF
            if (i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi) {
                good = 2;
                while (good < len && i + good < n && (p[i + good] & 0xC0) == 0x80) ++good;
            }
        }
        if (len && good == len) out.append(s.data() + i, len);
        else out += kReplacement;
        i += good;
    }
    return out;
}

cJSON *check(cJSON *item) {
    if (!item) throw std::bad_alloc();
    return item;
}

cJSON *json_string(std::string_view s) {
    return check(cJSON_CreateString(utf8_sanitize(s).c_str()));
}

void add(cJSON *obj, const char *key, cJSON *item) {
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        throw std::bad_alloc();
    }
}

void add_num(cJSON *obj, const char *key, double v) { add(obj, key, check(cJSON_CreateNumber(v))); }

void add_str(cJSON *obj, const char *key, std::string_view s) { add(obj, key, json_string(s)); }

void add_str_or_null(cJSON *obj, const char *key, const std::optional<std::string> &s) {
    add(obj, key, s ? json_string(*s) : check(cJSON_CreateNull()));
}

// ---- users and groups ----------------------------------------------------

namespace {

struct FileCloser {
    void operator()(FILE *f) const noexcept { fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// Calls fn(entry) for each entry of the database until fn returns true. The
// reentrant readers rewind to the line start on ERANGE so we grow and retry.
template <class Ent, class Reader, class Fn>
bool scan_db(const char *path, Reader reader, Fn fn) {
    FilePtr f(fopen(path, "re"));
    if (!f) return false;
    std::vector<char> buf(4096);
    for (;;) {
        Ent ent, *res = nullptr;
        int rc = reader(f.get(), &ent, buf.data(), buf.size(), &res);
        if (rc == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 4);
            continue;
        }
        if (rc != 0 || !res) return false;
        if (fn(*res)) return true;
    }
}

template <class Match>
std::optional<PasswdEntry> find_passwd(Match match) {
    std::optional<PasswdEntry> out;
    scan_db<passwd>("/etc/passwd", fgetpwent_r, [&](const passwd &pw) {
        if (!match(pw)) return false;
        out.emplace();
        out->name = pw.pw_name ? pw.pw_name : "";
        out->home = pw.pw_dir ? pw.pw_dir : "";
        out->shell = pw.pw_shell ? pw.pw_shell : "";
        out->uid = pw.pw_uid;
        out->gid = pw.pw_gid;
        return true;
    });
    return out;
}

}  // namespace

std::optional<PasswdEntry> passwd_by_uid(uid_t uid) {
    return find_passwd([uid](const passwd &pw) { return pw.pw_uid == uid; });
}

std::optional<PasswdEntry> passwd_by_name(std::string_view name) {
    return find_passwd([name](const passwd &pw) { return pw.pw_name && name == pw.pw_name; });
}

std::optional<std::string> group_name(gid_t gid) {
    std::optional<std::string> out;
    scan_db<group>("/etc/group", fgetgrent_r, [&](const group &gr) {
        if (gr.gr_gid != gid || !gr.gr_name) return false;
        out = gr.gr_name;
        return true;
    });
    return out;
}

std::optional<gid_t> group_by_name(std::string_view name) {
    std::optional<gid_t> out;
    scan_db<group>("/etc/group", fgetgrent_r, [&](const group &gr) {
        if (!gr.gr_name || name != gr.gr_name) return false;
        out = gr.gr_gid;
        return true;
    });
    return out;
}

// ---- files ---------------------------------------------------------------

const char *file_type_name(mode_t mode) noexcept {
    switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: return "other";
    }
}

mode_t current_umask() {
    // Linux >= 4.7 shows it in /proc/self/status; umask() itself can only be
    // read by changing it, which races with other threads.
    UniqueFd fd(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
    if (fd) {
        char buf[4096];
        ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            if (const char *p = strstr(buf, "\nUmask:")) {
                char *end = nullptr;
                unsigned long v = strtoul(p + 7, &end, 8);
                if (end != p + 7) return mode_t(v & 0777);
            }
        }
    }
    mode_t m = ::umask(022);
    ::umask(m);
    return m;
}

// ---- processes -----------------------------------------------------------

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

SpawnAttr::SpawnAttr() {
    if (posix_spawnattr_init(&a) != 0) throw std::bad_alloc();
}

SpawnAttr::~SpawnAttr() { posix_spawnattr_destroy(&a); }

void take_lines(std::string &buf, const std::function<void(std::string)> &line) {
    size_t pos;
    while ((pos = buf.find('\n')) != std::string::npos) {
        line(buf.substr(0, pos));
        buf.erase(0, pos + 1);
    }
    if (buf.size() > kMaxOutputLine) {
        line(std::move(buf));
        buf.clear();
    }
}

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

int above_stdio(int fd) {
    if (fd > 2 || fd < 0) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    ::close(fd);
    errno = e;
    return moved;
}

Pipe open_pipe(const CallRequest &req) {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) throw_os(req, "pipe", errno);
    Pipe p;
    p.read_end.reset(above_stdio(ends[0]));
    p.write_end.reset(above_stdio(ends[1]));
    return p;
}

SpawnFileActions::SpawnFileActions() {
    if (posix_spawn_file_actions_init(&fa) != 0) throw std::bad_alloc();
}

SpawnFileActions::~SpawnFileActions() { posix_spawn_file_actions_destroy(&fa); }

void check_spawn(int rc) {
    if (rc == ENOMEM) throw std::bad_alloc();
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

ChildProcess::~ChildProcess() {
    if (reaped_) return;
    ::kill(-pid, SIGKILL);
    wait(0);
}

bool ChildProcess::wait(int flags) {
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, flags)) < 0 && errno == EINTR) {
    }
    if (r == 0) return false;
    reaped_ = true;
    if (r == pid) status_ = st;
    svc_.unregister_process(pid);
    return true;
}

void add_exit_status(cJSON *obj, std::optional<int> wait_status) {
    bool exited = wait_status && WIFEXITED(*wait_status);
    bool signaled = wait_status && WIFSIGNALED(*wait_status);
    add(obj, "rc", check(exited ? cJSON_CreateNumber(WEXITSTATUS(*wait_status)) : cJSON_CreateNull()));
    add(obj, "signal", check(signaled ? cJSON_CreateNumber(WTERMSIG(*wait_status)) : cJSON_CreateNull()));
}

SigpipeBlock::SigpipeBlock() {
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
}

SigpipeBlock::~SigpipeBlock() {
    if (got_epipe) {
        struct timespec zero {};
        while (sigtimedwait(&set, nullptr, &zero) > 0) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace detail
}  // namespace spore::agent
