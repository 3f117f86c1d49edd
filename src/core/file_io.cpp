#include "core/file_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/channel.h"
#include "core/error.h"

namespace spore {

std::string parent_dir(const std::string &path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    size_t end = slash;
    while (end > 0 && path[end - 1] == '/') --end;
    return end == 0 ? "/" : path.substr(0, end);
}

bool plain_relative(const std::string &rel) {
    if (rel.empty()) return false;
    size_t pos = 0;
    while (pos <= rel.size()) {
        size_t slash = rel.find('/', pos);
        if (slash == std::string::npos) slash = rel.size();
        std::string part = rel.substr(pos, slash - pos);
        if (part.empty() || part == "." || part == "..") return false;
        pos = slash + 1;
    }
    return true;
}

void replace_with_symlink(const std::string &path, const std::string &target) {
    std::string tmp = path + ".spore-link";
    ::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) != 0) throw_file_error(errno, "cannot create the symlink", path);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw_file_error(err, "cannot create the symlink", path);
    }
}

void sync_filesystem_of(const std::string &dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)syncfs(fd);
    ::close(fd);
}

void throw_file_error(int err, const std::string &what, const std::string &path) {
    ErrorInfo e;
    e.code = file_error_code(err);
    e.remote_type = file_error_type(err);
    e.message = what + " " + path + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
    throw Error(std::move(e));
}

// ------------------------------------------------------------------ trees

std::vector<TreeEntry> walk_tree(const std::string &root) {
    struct stat st;
    if (::stat(root.c_str(), &st) != 0) throw_file_error(errno, "cannot read", root);
    if (!S_ISDIR(st.st_mode)) throw Error(SPORE_EINVAL, "cannot walk " + root + ": not a directory");
    std::vector<TreeEntry> out;
    std::vector<std::string> todo{""};
    while (!todo.empty()) {
        std::string rel = todo.back();
        todo.pop_back();
        std::string dir = rel.empty() ? root : root + "/" + rel;
        DIR *d = ::opendir(dir.c_str());
        if (!d) throw_file_error(errno, "cannot read", dir);
        std::vector<std::string> names;
        while (dirent *e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n != "." && n != "..") names.push_back(n);
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        std::vector<std::string> subdirs;
        for (const auto &n : names) {
            TreeEntry e;
            e.rel = rel.empty() ? n : rel + "/" + n;
            std::string full = root + "/" + e.rel;
            if (::lstat(full.c_str(), &st) != 0) continue;  // gone meanwhile
            e.type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : S_ISLNK(st.st_mode) ? 'l' : 0;
            if (!e.type) continue;
            e.meta.size = uint64_t(st.st_size);
            e.meta.mode = st.st_mode & 07777;
            e.meta.mtime_sec = st.st_mtim.tv_sec;
            e.meta.mtime_nsec = st.st_mtim.tv_nsec;
            e.meta.uid = st.st_uid;
            e.meta.gid = st.st_gid;
            if (e.type == 'l') {
                std::string target(size_t(st.st_size > 0 ? st.st_size : 4096) + 1, '\0');
                ssize_t k = ::readlink(full.c_str(), target.data(), target.size());
                if (k < 0) throw_file_error(errno, "cannot read the symlink", full);
                target.resize(size_t(k));
                e.target = std::move(target);
            }
            if (e.type == 'd') subdirs.push_back(e.rel);
            out.push_back(std::move(e));
        }
        // Depth first, in name order: parents always come before children.
        for (auto it = subdirs.rbegin(); it != subdirs.rend(); ++it) todo.push_back(*it);
    }
    return out;
}

// ---------------------------------------------------------------- source

FileSource::FileSource(const std::string &path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0) throw_file_error(errno, "cannot open", path);
    struct stat st;
    if (fstat(fd_, &st) != 0) {
        int e = errno;
        ::close(fd_);
        fd_ = -1;
        throw_file_error(e, "cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd_);
        fd_ = -1;
        throw Error(SPORE_EINVAL,
                    path + " is not a regular file" + (S_ISDIR(st.st_mode) ? " (a directory)" : ""));
    }
    meta_.size = uint64_t(st.st_size);
    meta_.mode = st.st_mode & 07777;
    meta_.mtime_sec = st.st_mtim.tv_sec;
    meta_.mtime_nsec = st.st_mtim.tv_nsec;
    meta_.uid = st.st_uid;
    meta_.gid = st.st_gid;
    // Sequential reads of the whole file.
    (void)posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
}

FileSource::~FileSource() {
    if (fd_ >= 0) ::close(fd_);
}

size_t FileSource::read(std::string &out, size_t max) {
    out.resize(max);
    size_t got = 0;
    while (got < max) {
        ssize_t n = ::read(fd_, out.data() + got, max - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_file_error(errno, "cannot read", path_);
        }
        if (n == 0) break;
        got += size_t(n);
    }
    out.resize(got);
    done_ += got;
    if (done_ > meta_.size)
        throw Error(SPORE_ECHANGED, path_ + " grew during the transfer (it had " + std::to_string(meta_.size) +
                                        " bytes when opened, " + std::to_string(done_) + " were read)");
    return got;
}

void FileSource::finish() {
    if (done_ < meta_.size)
        throw Error(SPORE_ECHANGED, path_ + " shrank during the transfer (it had " + std::to_string(meta_.size) +
                                        " bytes when opened, only " + std::to_string(done_) + " could be read)");
    char probe;
    ssize_t n;
    do {
        n = ::read(fd_, &probe, 1);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        throw Error(SPORE_ECHANGED, path_ + " grew during the transfer (it had " + std::to_string(meta_.size) +
                                        " bytes when opened)");
}

// ------------------------------------------------------------ destination

AtomicFile::AtomicFile(const std::string &path) : path_(path) {
    struct stat st;
    if (path.empty() || path.back() == '/' || (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
        throw Error(SPORE_EINVAL, "cannot write " + path + ": it is a directory");
    std::string dir = parent_dir(path);
    std::string base = path.substr(path.rfind('/') + 1);  // npos + 1 == 0
    tmp_ = dir + (dir.back() == '/' ? "." : "/.") + base.substr(0, 200) + ".spore-XXXXXX";
    fd_ = mkostemp(tmp_.data(), O_CLOEXEC);
    if (fd_ < 0) {
        int e = errno;
        tmp_.clear();
        throw_file_error(e, "cannot create a file beside", path);
    }
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd_, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw_file_error(errno, "cannot write", path_);
        }
        data += w;
        n -= size_t(w);
        written_ += uint64_t(w);
    }
}

bool AtomicFile::commit(mode_t mode, std::optional<std::pair<int64_t, int64_t>> mtime, std::optional<uid_t> uid,
                        std::optional<gid_t> gid, bool sync) {
    bool owner_set = false;
    // Owner first: chown may clear set-id bits that fchmod then sets.
    if (uid || gid) {
        if (fchown(fd_, uid ? *uid : uid_t(-1), gid ? *gid : gid_t(-1)) == 0) owner_set = true;
        else if (errno != EPERM) throw_file_error(errno, "cannot set the owner of", path_);
    }
    if (fchmod(fd_, mode & 07777) != 0) throw_file_error(errno, "cannot set the mode of", path_);
    if (mtime) {
        timespec ts[2];
        ts[0].tv_sec = 0;
        ts[0].tv_nsec = UTIME_OMIT;
        ts[1].tv_sec = time_t(mtime->first);
        ts[1].tv_nsec = long(mtime->second);
        if (futimens(fd_, ts) != 0) throw_file_error(errno, "cannot set the times of", path_);
    }
    if (sync && fsync(fd_) != 0) throw_file_error(errno, "cannot sync", path_);
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0 && errno != EINTR) throw_file_error(errno, "cannot write", path_);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw_file_error(errno, "cannot replace", path_);
    committed_ = true;
    if (sync) {
        int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            ::close(dfd);
        }
    }
    return owner_set;
}

}  // namespace spore
