// The two ends of a file transfer on the local filesystem, shared by the
// master and the agent: FileSource reads a regular file and notices when it
// changes size; AtomicFile writes a temporary file beside the destination
// and renames it over the destination only when everything is written, so a
// reader sees the old file or the whole new one, and a failure leaves
// nothing behind. Errors are spore::Error with the codes of file transfers
// (SPORE_ENOENT, SPORE_EACCES, SPORE_ENOSPC, SPORE_ECHANGED, else
// SPORE_EREMOTE) and a message naming the path.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace spore {

struct FileMeta {
    uint64_t size = 0;
    mode_t mode = 0644;       // permission bits (07777)
    int64_t mtime_sec = 0;
    int64_t mtime_nsec = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};

// "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/".
std::string parent_dir(const std::string &path);

// Throws Error(file_error_code(err)) "<what> <path>: <strerror>".
[[noreturn]] void throw_file_error(int err, const std::string &what, const std::string &path);

// Whether rel is a non-empty path of plain components ("a/b"): no "." or
// "..", no empty parts, not absolute, so it cannot leave the tree it names
// a place in.
bool plain_relative(const std::string &rel);

// Puts a symlink to target at path, replacing what is there in one rename.
// Throws spore::Error.
void replace_with_symlink(const std::string &path, const std::string &target);

// syncfs of the filesystem that holds dir; failures are ignored (the data
// was written, only its durability is not known).
void sync_filesystem_of(const std::string &dir);

// One entry of a directory tree: 'd' directory, 'f' regular file, 'l'
// symlink (other types are left out of trees).
struct TreeEntry {
    char type = 'f';
    std::string rel;     // relative to the root, '/' separated
    FileMeta meta;
    std::string target;  // symlinks
};

// The tree under root (a directory), parents before children, names in
// order, symlinks not followed. Throws (SPORE_EINVAL when root is not a
// directory).
std::vector<TreeEntry> walk_tree(const std::string &root);

class FileSource {
public:
    // Opens a regular file for reading; throws (EINVAL for a non-regular file).
    explicit FileSource(const std::string &path);
    ~FileSource();
    FileSource(const FileSource &) = delete;
    FileSource &operator=(const FileSource &) = delete;

    const FileMeta &meta() const { return meta_; }
    // Reads up to max bytes into out (resized); 0 at the end. Throws
    // SPORE_ECHANGED when the file has grown past the size it had when opened.
    size_t read(std::string &out, size_t max);
    // Everything read: throws SPORE_ECHANGED unless exactly meta().size bytes
    // came and nothing follows.
    void finish();
    uint64_t done() const { return done_; }

private:
    std::string path_;
    int fd_ = -1;
    FileMeta meta_;
    uint64_t done_ = 0;
};

class AtomicFile {
public:
    // Creates ".<name>.spore-XXXXXX" (mode 0600) beside path. Throws when the
    // directory is missing or not writable, or path is a directory.
    explicit AtomicFile(const std::string &path);
    // Removes the temporary file unless commit() succeeded.
    ~AtomicFile();
    AtomicFile(const AtomicFile &) = delete;
    AtomicFile &operator=(const AtomicFile &) = delete;

    void write(const char *data, size_t n);
    uint64_t written() const { return written_; }
    // Owner (when asked, and only where permitted: EPERM is ignored), mode,
    // mtime, then fsync (when asked), rename over the destination and fsync
    // of its directory. Returns whether the owner was set.
    bool commit(mode_t mode, std::optional<std::pair<int64_t, int64_t>> mtime, std::optional<uid_t> uid,
                std::optional<gid_t> gid, bool sync);
    const std::string &path() const { return path_; }

private:
    std::string path_, tmp_;
    int fd_ = -1;
    uint64_t written_ = 0;
    bool committed_ = false;
};

}  // namespace spore
