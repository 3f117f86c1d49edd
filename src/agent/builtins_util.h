// Helpers shared by the built-in functions (internal to the agent).
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <optional>
#include <spawn.h>
#include <vector>
#include <string>
#include <string_view>

#include "agent/builtins.h"

namespace spore::agent::detail {

// Owns one file descriptor.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd &&o) noexcept : fd_(o.release()) {}
    UniqueFd &operator=(UniqueFd &&o) noexcept {
        if (this != &o) reset(o.release());
        return *this;
    }
    UniqueFd(const UniqueFd &) = delete;
    UniqueFd &operator=(const UniqueFd &) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }
    // Closes now and reports close()'s failure (errno is set).
    bool close() noexcept {
        int fd = release();
        return fd < 0 || ::close(fd) == 0 || errno == EINTR;
    }

private:
    int fd_ = -1;
};

// ---- arguments -----------------------------------------------------------
// Every getter treats a JSON null like a missing member. A member of the wrong
// type throws Error(SPORE_EBADARGS, "<function>: argument '<key>' must be ...").

[[noreturn]] void bad_arg(const CallRequest &req, const char *key, const char *what);
const cJSON *arg(const CallRequest &req, const char *key);  // null when missing/null
std::string arg_str(const CallRequest &req, const char *key);  // required, non-empty
std::optional<std::string> arg_opt_str(const CallRequest &req, const char *key);
int64_t arg_int(const CallRequest &req, const char *key, int64_t fallback, int64_t min,
                int64_t max);
std::optional<int64_t> arg_opt_int(const CallRequest &req, const char *key, int64_t min,
                                   int64_t max);
bool arg_bool(const CallRequest &req, const char *key, bool fallback);

// ---- errors --------------------------------------------------------------

// Python-style exception name for an errno ("FileNotFoundError", "OSError").
const char *errno_type(int err) noexcept;
// Error(SPORE_EREMOTE) "<function>: <what>: <strerror> (errno N)".
[[noreturn]] void throw_os(const CallRequest &req, std::string_view what, int err);
// Same with an explicit message and remote type.
[[noreturn]] void throw_remote(const CallRequest &req, const char *type, std::string message);
std::string errno_text(int err);

// ---- JSON ----------------------------------------------------------------

// Valid UTF-8 with every invalid byte (and NUL, which cJSON strings cannot
// hold) replaced by U+FFFD.
std::string utf8_sanitize(std::string_view s);
cJSON *check(cJSON *item);  // throws std::bad_alloc on null
cJSON *json_string(std::string_view s);  // sanitized
void add(cJSON *obj, const char *key, cJSON *item);
void add_num(cJSON *obj, const char *key, double v);
void add_str(cJSON *obj, const char *key, std::string_view s);
void add_str_or_null(cJSON *obj, const char *key, const std::optional<std::string> &s);

// ---- users and groups (from /etc/passwd and /etc/group, no NSS) -----------

struct PasswdEntry {
    std::string name, home, shell;
    uid_t uid = 0;
    gid_t gid = 0;
};
std::optional<PasswdEntry> passwd_by_uid(uid_t uid);
std::optional<PasswdEntry> passwd_by_name(std::string_view name);
std::optional<std::string> group_name(gid_t gid);
std::optional<gid_t> group_by_name(std::string_view name);

// ---- files ---------------------------------------------------------------

// "file", "dir", "symlink", "fifo", "socket", "char", "block" or "other".
const char *file_type_name(mode_t mode) noexcept;
// The process umask, read without changing it where possible.
mode_t current_umask();

// ---- processes -----------------------------------------------------------

// What proc.run and proc.start start: argv (or shell), env (env_clear),
// cwd, and the program found on the child's own PATH.
struct SpawnSpec {
    std::vector<std::string> argv, env;
    std::optional<std::string> cwd;
    std::string prog;
};
SpawnSpec parse_spawn_spec(const CallRequest &req);
// Removes channels ch .. ch+count-1 of peer from table when it goes.
class ChannelGuard {
public:
    ChannelGuard(ChannelTable *table, uint32_t peer, uint32_t ch, uint32_t count = 1)
        : table_(table), peer_(peer), ch_(ch), count_(count) {}
    ChannelGuard(const ChannelGuard &) = delete;
    ChannelGuard &operator=(const ChannelGuard &) = delete;
    ~ChannelGuard() {
        if (table_)
            for (uint32_t k = 0; k < count_; ++k) table_->remove(peer_, ch_ + k);
    }

private:
    ChannelTable *table_;
    uint32_t peer_, ch_, count_;
};

// Moves fd (close-on-exec) above the standard descriptors, so that the
// child's dup2 onto 0-2 never clobbers another of its pipe ends. -1, errno
// set, when it cannot.
int above_stdio(int fd);

// A pipe for one of a child's standard descriptors: close-on-exec, both
// ends above 0-2 (an end that could not be moved there is left empty).
struct Pipe {
    UniqueFd read_end, write_end;
};
Pipe open_pipe(const CallRequest &req);  // throws "<function>: pipe: ..."

// Pipes for a child's stdin, stdout and stderr (one not wanted stays empty).
struct StdioPipes {
    Pipe in, out, err;
    // Once the child has its ends, the parent closes them: it sees end of
    // file when the child's output ends, and the child when stdin does.
    void close_child_ends() {
        in.read_end.reset();
        out.write_end.reset();
        err.write_end.reset();
    }
};

// The program a bare name runs with this PATH: the first executable of
// that name, or prog itself when there is none.
std::string find_in_path(const std::string &prog, const char *path);

// posix_spawn attributes, destroyed with the object.
struct SpawnAttr {
    posix_spawnattr_t a;
    SpawnAttr();
    ~SpawnAttr();
    SpawnAttr(const SpawnAttr &) = delete;
    SpawnAttr &operator=(const SpawnAttr &) = delete;
};

// Output read from a child: each complete line of buf goes to line and
// leaves buf; a partial line longer than kMaxOutputLine goes too.
inline constexpr size_t kMaxOutputLine = 65536;
void take_lines(std::string &buf, const std::function<void(std::string)> &line);

// posix_spawn file actions, destroyed with the object.
struct SpawnFileActions {
    posix_spawn_file_actions_t fa;
    SpawnFileActions();
    ~SpawnFileActions();
    SpawnFileActions(const SpawnFileActions &) = delete;
    SpawnFileActions &operator=(const SpawnFileActions &) = delete;
};
// Throws std::bad_alloc when a posix_spawn set-up call ran out of memory.
void check_spawn(int rc);

// posix_spawn with the file actions given (plus cwd), in a new process group
// (or a new session, for a pty), registered with svc for req.caller (the
// caller unregisters it once reaped). Throws the call's error when it fails,
// and SPORE_ESHUTDOWN or SPORE_EDISCONNECTED when the agent is exiting or the
// caller has gone; a process whose caller went away during the start is
// returned already killed, to be reaped as usual.
pid_t spawn_child(const CallRequest &req, SpawnSpec &spec, posix_spawn_file_actions_t *fa, bool new_session,
                  Services &svc);

// A child that spawn_child started: killed (its whole process group) and
// reaped if the call leaves before it was; unregistered from svc once reaped.
class ChildProcess {
public:
    ChildProcess(pid_t pid, Services &svc) : pid(pid), svc_(svc) {}
    ChildProcess(const ChildProcess &) = delete;
    ChildProcess &operator=(const ChildProcess &) = delete;
    ~ChildProcess();

    // waitpid with flags; true when the child is gone.
    bool wait(int flags);
    bool reaped() const { return reaped_; }
    // Its wait status, when waitpid gave one.
    std::optional<int> status() const { return status_; }

    const pid_t pid;

private:
    Services &svc_;
    bool reaped_ = false;
    std::optional<int> status_;
};

// Adds "rc" (the exit code) and "signal" (the signal that ended it) of a
// wait status to a reply; each is null where it does not apply, and both
// when the status is unknown.
void add_exit_status(cJSON *obj, std::optional<int> wait_status);

// Blocks SIGPIPE in this thread while it writes to a child's stdin, then
// swallows the one a write to a closed pipe may have left pending.
struct SigpipeBlock {
    sigset_t set, old;
    bool got_epipe = false;  // a write failed with EPIPE: a SIGPIPE is pending
    SigpipeBlock();
    ~SigpipeBlock();
    SigpipeBlock(const SigpipeBlock &) = delete;
    SigpipeBlock &operator=(const SigpipeBlock &) = delete;
};

// ---- the built-ins -------------------------------------------------------

void sys_ping(const CallRequest &, CallReply &, Services &);
void sys_echo(const CallRequest &, CallReply &, Services &);
void sys_getenv(const CallRequest &, CallReply &, Services &);
void sys_info(const CallRequest &, CallReply &, Services &);
void proc_run(const CallRequest &, CallReply &, Services &);
void fs_stat(const CallRequest &, CallReply &, Services &);
void fs_read(const CallRequest &, CallReply &, Services &);
void fs_write(const CallRequest &, CallReply &, Services &);
void fs_put(const CallRequest &, CallReply &, Services &);
std::shared_ptr<void> fs_put_prepare(const CallRequest &, Services &);
void fs_get(const CallRequest &, CallReply &, Services &);
void fs_put_batch(const CallRequest &, CallReply &, Services &);
void proc_start(const CallRequest &, CallReply &, Services &);
std::shared_ptr<void> proc_start_prepare(const CallRequest &, Services &);
void proc_signal(const CallRequest &, CallReply &, Services &);
void proc_resize(const CallRequest &, CallReply &, Services &);
void fs_get_batch(const CallRequest &, CallReply &, Services &);
void fs_walk(const CallRequest &, CallReply &, Services &);
void fs_list(const CallRequest &, CallReply &, Services &);
void fs_mkdir(const CallRequest &, CallReply &, Services &);
void fs_remove(const CallRequest &, CallReply &, Services &);
void fs_rename(const CallRequest &, CallReply &, Services &);
void fs_chmod(const CallRequest &, CallReply &, Services &);
void fs_chown(const CallRequest &, CallReply &, Services &);
void fs_readlink(const CallRequest &, CallReply &, Services &);
void fs_symlink(const CallRequest &, CallReply &, Services &);
void fs_mktemp(const CallRequest &, CallReply &, Services &);

}  // namespace spore::agent::detail
