// fs.*: file system built-ins.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include "agent/builtins_util.h"

namespace spore::agent::detail {

namespace {

constexpr int64_t kMaxId = 0xFFFFFFFEll;  // uid/gid; -1 means "unchanged" to chown
constexpr int64_t kMaxOffset = int64_t(1) << 53;

struct DirCloser {
    void operator()(DIR *d) const noexcept { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

double seconds(const struct timespec &ts) { return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9; }

int64_t required_int(const CallRequest &req, const char *key, int64_t min, int64_t max) {
    auto v = arg_opt_int(req, key, min, max);
    if (!v) bad_arg(req, key, "must be an integer");
    return *v;
}

// Drops trailing slashes (but keeps "/").
std::string strip_slashes(std::string p) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

// The directory part of a path: "a/b" -> "a", "b" -> ".", "/b" -> "/".
std::string dir_of(const std::string &p) {
    size_t slash = p.rfind('/');
    if (slash == std::string::npos) return ".";
    size_t end = slash;
    while (end > 0 && p[end - 1] == '/') --end;
    return end == 0 ? "/" : p.substr(0, end);
}

// mkdir -p: creates every missing component of path (umask applies).
void make_dirs(const CallRequest &req, const std::string &path, mode_t mode) {
    if (path.empty()) return;
    for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
        std::string sub = path.substr(0, pos);
        if (sub.back() != '/' && ::mkdir(sub.c_str(), mode) != 0 && errno != EEXIST)
            throw_os(req, sub, errno);
        if (pos == std::string::npos) break;
    }
}

const char *dirent_type(int dirfd, const dirent *e) {
    switch (e->d_type) {
    case DT_REG: return "file";
    case DT_DIR: return "dir";
    case DT_LNK: return "symlink";
    case DT_FIFO: return "fifo";
    case DT_SOCK: return "socket";
    case DT_CHR: return "char";
    case DT_BLK: return "block";
    case DT_UNKNOWN: {
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) return file_type_name(st.st_mode);
        return "other";
    }
    default: return "other";
    }
}

struct Entry {
    std::string name;
    const char *type;
};

// Reads a directory's entries, without "." and "..".
std::vector<Entry> read_dir(const CallRequest &req, DIR *d, const std::string &path) {
    std::vector<Entry> out;
    for (;;) {
        errno = 0;
        dirent *e = readdir(d);
        if (!e) {
            if (errno) throw_os(req, path, errno);
            break;
        }
        std::string_view name(e->d_name);
        if (name == "." || name == "..") continue;
        out.push_back({std::string(name), dirent_type(dirfd(d), e)});
    }
    return out;
}

DirPtr open_dir(const CallRequest &req, int at, const char *name, const std::string &path,
                bool nofollow) {
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0) throw_os(req, path, errno);
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        ::close(fd);
        throw_os(req, path, e);
    }
    return DirPtr(d);
}

// Empties the directory d (never following symlinks: they are unlinked).
void remove_tree(const CallRequest &req, DIR *d, const std::string &path) {
    int fd = dirfd(d);
    for (const Entry &e : read_dir(req, d, path)) {
        std::string sub = path + "/" + e.name;
        bool is_dir = std::string_view(e.type) == "dir";
        if (is_dir) {
            int cfd = openat(fd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0) {
                if (errno == ENOENT) continue;
                if (errno != ELOOP && errno != ENOTDIR) throw_os(req, sub, errno);
                is_dir = false;  // replaced by a non-directory meanwhile
            } else {
                DIR *cd = fdopendir(cfd);
                if (!cd) {
                    int err = errno;
                    ::close(cfd);
                    throw_os(req, sub, err);
                }
                DirPtr child(cd);
                remove_tree(req, child.get(), sub);
            }
        }
        if (unlinkat(fd, e.name.c_str(), is_dir ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT)
            throw_os(req, sub, errno);
    }
}

// Unlinks a temporary file unless disarmed.
struct TempFile {
    std::string path;
    bool armed = false;
    ~TempFile() {
        if (armed) ::unlink(path.c_str());
    }
};

}  // namespace

void fs_stat(const CallRequest &req, CallReply &reply, Services &) {
    std::string path = arg_str(req, "path");
    bool follow = arg_bool(req, "follow", true);
    struct stat st;
    if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0)
        throw_os(req, path, errno);
    Json obj = json_object();
    cJSON *o = obj.get();
    add_str(o, "type", file_type_name(st.st_mode));
    add_num(o, "size", double(st.st_size));
    add_num(o, "mode", st.st_mode & 07777);
    add_num(o, "uid", st.st_uid);
    add_num(o, "gid", st.st_gid);
    auto pw = passwd_by_uid(st.st_uid);
    add_str_or_null(o, "user", pw ? std::optional<std::string>(pw->name) : std::nullopt);
    add_str_or_null(o, "group", group_name(st.st_gid));
    add_num(o, "mtime", seconds(st.st_mtim));
    add_num(o, "atime", seconds(st.st_atim));
    add_num(o, "ctime", seconds(st.st_ctim));
    add_num(o, "nlink", double(st.st_nlink));
    add_num(o, "ino", double(st.st_ino));
    add_num(o, "dev", double(st.st_dev));
    reply.result = std::move(obj);
}

void fs_read(const CallRequest &req, CallReply &reply, Services &) {
    std::string path = arg_str(req, "path");
    int64_t offset = arg_int(req, "offset", 0, 0, kMaxOffset);
    auto length = arg_opt_int(req, "length", 0, kMaxOffset);

    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_os(req, path, errno);
    struct stat st;
    if (fstat(fd.get(), &st) != 0) throw_os(req, path, errno);
    if (S_ISDIR(st.st_mode)) throw_os(req, path, EISDIR);
    if (offset > 0 && lseek(fd.get(), off_t(offset), SEEK_SET) < 0) throw_os(req, path, errno);

    size_t want = length ? size_t(*length) : SIZE_MAX;
    std::string &out = reply.data;
    out.clear();
    if (S_ISREG(st.st_mode) && st.st_size > offset)
        out.reserve(std::min(want, size_t(st.st_size - offset)));
    char small[16384];
    while (out.size() < want) {
        size_t old = out.size(), room = out.capacity() - old;
        ssize_t n;
        if (room >= sizeof small) {  // read in place up to the expected size
            size_t chunk = std::min(want - old, room);
            out.resize(old + chunk);
            n = ::read(fd.get(), out.data() + old, chunk);
            out.resize(old + size_t(std::max<ssize_t>(n, 0)));
        } else {  // probe for EOF / unknown sizes without doubling the buffer
            n = ::read(fd.get(), small, std::min(want - old, sizeof small));
            if (n > 0) out.append(small, size_t(n));
        }
        if (n == 0) break;
        if (n < 0 && errno != EINTR) throw_os(req, path, errno);
    }
    Json obj = json_object();
    add_num(obj.get(), "size", double(out.size()));
    reply.result = std::move(obj);
}

void fs_write(const CallRequest &req, CallReply &reply, Services &) {
    std::string path = arg_str(req, "path");
    auto mode_arg = arg_opt_int(req, "mode", 0, 07777);
    auto uid_arg = arg_opt_int(req, "uid", 0, kMaxId);
    auto gid_arg = arg_opt_int(req, "gid", 0, kMaxId);
    auto text = arg_opt_str(req, "text");
    bool mkdirs = arg_bool(req, "mkdirs", false);
    std::string_view data = !req.data.empty() ? req.data : text ? std::string_view(*text)
                                                                : std::string_view();
    if (path.back() == '/') throw_os(req, path, EISDIR);

    std::string dir = dir_of(path);
    std::string base = path.substr(path.rfind('/') + 1);  // npos + 1 == 0
    if (mkdirs) make_dirs(req, dir, 0777);

    struct stat st;
    bool exists = ::stat(path.c_str(), &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) throw_os(req, path, EISDIR);
    mode_t mode = mode_arg ? mode_t(*mode_arg)
                : exists   ? st.st_mode & 07777
                           : 0644 & ~current_umask();

    TempFile tmp;
    tmp.path = dir + (dir.back() == '/' ? "." : "/.") + base.substr(0, 200) + ".spore-XXXXXX";
    UniqueFd fd(mkostemp(tmp.path.data(), O_CLOEXEC));
    if (!fd) throw_os(req, path, errno);
    tmp.armed = true;

    // Owner first: chown may clear set-id bits that fchmod then sets.
    if (uid_arg || gid_arg) {
        if (fchown(fd.get(), uid_arg ? uid_t(*uid_arg) : uid_t(-1),
                   gid_arg ? gid_t(*gid_arg) : gid_t(-1)) != 0)
            throw_os(req, path, errno);
    } else if (exists && (st.st_uid != geteuid() || st.st_gid != getegid())) {
        // Keep the replaced file's owner where we may (root); best effort.
        (void)!fchown(fd.get(), st.st_uid, st.st_gid);
    }
    if (fchmod(fd.get(), mode) != 0) throw_os(req, path, errno);

    for (size_t done = 0; done < data.size();) {
        ssize_t n = ::write(fd.get(), data.data() + done, std::min<size_t>(data.size() - done, 1 << 20));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_os(req, path, errno);
        }
        done += size_t(n);
    }
    if (fsync(fd.get()) != 0) throw_os(req, path, errno);
    if (!fd.close()) throw_os(req, path, errno);
    if (::rename(tmp.path.c_str(), path.c_str()) != 0) throw_os(req, path, errno);
    tmp.armed = false;

    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd && fsync(dfd.get()) != 0 && errno == EIO) throw_os(req, dir, errno);

    Json obj = json_object();
    add_num(obj.get(), "size", double(data.size()));
    reply.result = std::move(obj);
}

void fs_list(const CallRequest &req, CallReply &reply, Services &) {
    std::string path = arg_str(req, "path");
    DirPtr d = open_dir(req, AT_FDCWD, path.c_str(), path, false);
    std::vector<Entry> entries = read_dir(req, d.get(), path);
    std::sort(entries.begin(), entries.end(),
              [](const Entry &a, const Entry &b) { return a.name < b.name; });
    Json arr(check(cJSON_CreateArray()));
    for (const Entry &e : entries) {
        cJSON *item = check(cJSON_CreateObject());
        cJSON_AddItemToArray(arr.get(), item);
        add_str(item, "name", e.name);
        add_str(item, "type", e.type);
    }
    reply.result = std::move(arr);
}

void fs_mkdir(const CallRequest &req, CallReply &, Services &) {
    std::string path = strip_slashes(arg_str(req, "path"));
    mode_t mode = mode_t(arg_int(req, "mode", 0777, 0, 07777));
    bool parents = arg_bool(req, "parents", false);
    bool exist_ok = arg_bool(req, "exist_ok", false);
    if (parents) make_dirs(req, dir_of(path), 0777);
    if (::mkdir(path.c_str(), mode) == 0) return;
    int err = errno;
    struct stat st;
    if (err == EEXIST && exist_ok && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
    throw_os(req, path, err);
}

void fs_remove(const CallRequest &req, CallReply &, Services &) {
    std::string path = arg_str(req, "path");
    bool recursive = arg_bool(req, "recursive", false);
    bool missing_ok = arg_bool(req, "missing_ok", false);
    struct stat st;
    int rc = ::lstat(path.c_str(), &st);
    if (rc == 0 && S_ISDIR(st.st_mode)) {
        if (recursive) {
            DirPtr d = open_dir(req, AT_FDCWD, path.c_str(), path, true);
            remove_tree(req, d.get(), strip_slashes(path));
        }
        rc = ::rmdir(path.c_str());
    } else if (rc == 0) {
        rc = ::unlink(path.c_str());
    }
    if (rc != 0 && !(errno == ENOENT && missing_ok)) throw_os(req, path, errno);
}

void fs_rename(const CallRequest &req, CallReply &, Services &) {
    std::string src = arg_str(req, "src"), dst = arg_str(req, "dst");
    if (::rename(src.c_str(), dst.c_str()) != 0) throw_os(req, src + " -> " + dst, errno);
}

void fs_chmod(const CallRequest &req, CallReply &, Services &) {
    std::string path = arg_str(req, "path");
    mode_t mode = mode_t(required_int(req, "mode", 0, 07777));
    if (::chmod(path.c_str(), mode) != 0) throw_os(req, path, errno);
}

void fs_chown(const CallRequest &req, CallReply &, Services &) {
    std::string path = arg_str(req, "path");
    auto uid = arg_opt_int(req, "uid", 0, kMaxId);
    auto gid = arg_opt_int(req, "gid", 0, kMaxId);
    auto user = arg_opt_str(req, "user");
    auto group = arg_opt_str(req, "group");
    bool follow = arg_bool(req, "follow", true);
    if (uid && user) bad_arg(req, "uid", "and 'user' are mutually exclusive");
    if (gid && group) bad_arg(req, "gid", "and 'group' are mutually exclusive");
    if (!uid && !gid && !user && !group) bad_arg(req, "uid", "(or 'gid', 'user', 'group') is required");
    if (user) {
        auto pw = passwd_by_name(*user);
        if (!pw) throw_remote(req, "LookupError", std::string(req.function) + ": no such user '" + *user + "'");
        uid = pw->uid;
    }
    if (group) {
        auto g = group_by_name(*group);
        if (!g) throw_remote(req, "LookupError", std::string(req.function) + ": no such group '" + *group + "'");
        gid = *g;
    }
    uid_t u = uid ? uid_t(*uid) : uid_t(-1);
    gid_t g = gid ? gid_t(*gid) : gid_t(-1);
    if ((follow ? ::chown(path.c_str(), u, g) : ::lchown(path.c_str(), u, g)) != 0)
        throw_os(req, path, errno);
}

void fs_readlink(const CallRequest &req, CallReply &reply, Services &) {
    std::string path = arg_str(req, "path");
    std::string buf(256, '\0');
    for (;;) {
        ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
        if (n < 0) throw_os(req, path, errno);
        if (size_t(n) < buf.size()) {
            buf.resize(size_t(n));
            break;
        }
        buf.resize(buf.size() * 4);
    }
    reply.result.reset(json_string(buf));
}

void fs_symlink(const CallRequest &req, CallReply &, Services &) {
    std::string target = arg_str(req, "target"), path = arg_str(req, "path");
    if (::symlink(target.c_str(), path.c_str()) != 0) throw_os(req, path, errno);
}

void fs_mktemp(const CallRequest &req, CallReply &reply, Services &) {
    auto dir = arg_opt_str(req, "dir");
    if (!dir || dir->empty()) {
        const char *t = getenv("TMPDIR");
        dir = t && *t ? t : "/tmp";
    }
    std::string prefix = arg_opt_str(req, "prefix").value_or("spore-");
    if (prefix.find('/') != std::string::npos) bad_arg(req, "prefix", "must not contain '/'");
    bool directory = arg_bool(req, "directory", false);
    std::string path = strip_slashes(*dir);
    path += (path.back() == '/' ? "" : "/") + prefix + "XXXXXX";
    if (directory) {
        if (!mkdtemp(path.data())) throw_os(req, *dir, errno);
    } else {
        UniqueFd fd(mkostemp(path.data(), O_CLOEXEC));
        if (!fd) throw_os(req, *dir, errno);
    }
    reply.result.reset(json_string(path));
}

}  // namespace spore::agent::detail
