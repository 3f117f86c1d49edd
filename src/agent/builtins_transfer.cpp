// fs.put and fs.get: the target's half of file transfers (docs/protocol.md,
// "File transfers"). Small files travel inline in the call or its reply;
// larger ones stream over a channel whose number the caller chose, with the
// caller's window bounding the bytes in flight at every hop.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <vector>

#include "agent/builtins_util.h"
#include "core/channel.h"
#include "core/file_io.h"

namespace spore::agent::detail {



namespace {

constexpr int64_t kMaxSize = int64_t(1) << 62;
constexpr int64_t kMaxId = 0x7fffffff;

std::optional<std::pair<int64_t, int64_t>> arg_mtime(const CallRequest &req) {
    auto sec = arg_opt_int(req, "mtime_sec", INT64_MIN / 2, INT64_MAX / 2);
    if (!sec) return std::nullopt;
    return std::make_pair(*sec, arg_int(req, "mtime_nsec", 0, 0, 999999999));
}

void add_meta(cJSON *obj, const FileMeta &m) {
    add_num(obj, "size", double(m.size));
    add_num(obj, "mode", double(m.mode));
    add_num(obj, "mtime_sec", double(m.mtime_sec));
    add_num(obj, "mtime_nsec", double(m.mtime_nsec));
    add_num(obj, "uid", double(m.uid));
    add_num(obj, "gid", double(m.gid));
}

ChannelTable &table_of(const CallRequest &req, Services &svc) {
    ChannelTable *t = svc.channels();
    if (!t) throw Error(SPORE_EINTERNAL, std::string(req.function) + ": this agent has no channels");
    return *t;
}

// The channel a streamed fs.put receives the file on.
struct PutChannel {
    PutChannel(ChannelTable &t, uint32_t caller, uint32_t ch, std::shared_ptr<ChannelInbox> in)
        : guard(&t, caller, ch), inbox(std::move(in)) {}
    ChannelGuard guard;
    std::shared_ptr<ChannelInbox> inbox;
};

}  // namespace

// The file's data follows the call on the same path: its channel is
// registered as the call arrives, before the first chunk can.
std::shared_ptr<void> fs_put_prepare(const CallRequest &req, Services &svc) {
    auto ch = arg_opt_int(req, "ch", 1, 0xffffffff);
    if (!ch) return nullptr;
    int64_t window = arg_int(req, "window", int64_t(kChanDefaultWindow), int64_t(kChanMinWindow),
                             int64_t(kChanMaxWindow));
    ChannelTable &t = table_of(req, svc);
    auto inbox = std::make_shared<ChannelInbox>(uint64_t(window) + kChanChunk);
    if (!t.add(req.caller, uint32_t(*ch), ChannelEndpoint{0, nullptr, inbox, {}}))
        throw Error(SPORE_EPROTO, "fs.put: channel " + std::to_string(*ch) + " is already in use");
    return std::make_shared<PutChannel>(t, req.caller, uint32_t(*ch), std::move(inbox));
}

// fs.put {path, size, mode?, mtime_sec?, mtime_nsec?, uid?, gid?, sync?, ch?, window?}
// Without ch the file's bytes are the call's binary part; with ch they come
// as channel data, acknowledged as they are written, until an eof message.
void fs_put(const CallRequest &req, CallReply &reply, Services &svc) {
    std::string path = arg_str(req, "path");
    int64_t size = arg_int(req, "size", -1, 0, kMaxSize);
    if (size < 0) bad_arg(req, "size", "is required");
    auto mode_arg = arg_opt_int(req, "mode", 0, 07777);
    auto uid_arg = arg_opt_int(req, "uid", 0, kMaxId);
    auto gid_arg = arg_opt_int(req, "gid", 0, kMaxId);
    auto mtime = arg_mtime(req);
    bool sync = arg_bool(req, "sync", true);
    auto ch = arg_opt_int(req, "ch", 1, 0xffffffff);

    std::shared_ptr<void> prepared = req.prepared ? req.prepared : fs_put_prepare(req, svc);
    const auto *chan = static_cast<const PutChannel *>(prepared.get());  // null without ch

    // An existing file keeps its mode unless one is given.
    struct stat st;
    bool exists = ::stat(path.c_str(), &st) == 0;
    mode_t mode = mode_arg ? mode_t(*mode_arg) : exists ? st.st_mode & 07777 : 0644 & ~current_umask();

    AtomicFile out(path);
    if (!ch) {
        if (int64_t(req.data.size()) != size)
            throw Error(SPORE_ECHANGED, "fs.put: " + path + ": " + std::to_string(req.data.size()) +
                                            " bytes came, " + std::to_string(size) + " were announced");
        out.write(req.data.data(), req.data.size());
    } else {
        for (;;) {
            ChannelChunk c;
            ErrorInfo err;
            int rc = chan->inbox->pop(c, Clock::time_point::max(), err, 1000);
            if (rc == SPORE_ETIMEDOUT) continue;
            if (rc != SPORE_OK) throw Error(err);
            if (c.abort) throw Error(*c.abort);
            if (!c.data.empty()) {
                if (int64_t(out.written() + c.data.size()) > size)
                    throw Error(SPORE_ECHANGED, "fs.put: " + path + ": more data came than the " +
                                                    std::to_string(size) + " bytes announced");
                out.write(c.data.data(), c.data.size());
                Message ack = chan_ack_message(req.caller, uint32_t(*ch), c.data.size());
                svc.send(ack);
            }
            if (c.eof) break;
        }
        if (int64_t(out.written()) != size)
            throw Error(SPORE_ECHANGED, "fs.put: " + path + ": " + std::to_string(out.written()) +
                                            " bytes came, " + std::to_string(size) + " were announced");
    }
    bool owner = out.commit(mode, mtime, uid_arg ? std::optional<uid_t>(uid_t(*uid_arg)) : std::nullopt,
                            gid_arg ? std::optional<gid_t>(gid_t(*gid_arg)) : std::nullopt, sync);
    Json obj = json_object();
    add_num(obj.get(), "size", double(size));
    add(obj.get(), "owner_set", check(cJSON_CreateBool(owner)));
    reply.result = std::move(obj);
}

// fs.get {path, ch?, window?, inline_max?}
// Replies with the file's metadata. Up to inline_max bytes (and always
// without ch) the content is the reply's binary part; otherwise it goes as
// channel data, within the caller's window, ended by an eof message, and
// the reply says "inline": false.
void fs_get(const CallRequest &req, CallReply &reply, Services &svc) {
    std::string path = arg_str(req, "path");
    auto ch = arg_opt_int(req, "ch", 1, 0xffffffff);
    int64_t window = arg_int(req, "window", int64_t(kChanDefaultWindow), int64_t(kChanMinWindow),
                             int64_t(kChanMaxWindow));
    int64_t inline_max = arg_int(req, "inline_max", int64_t(kInlineMax), 0, 64 << 20);

    FileSource src(path);
    Json obj = json_object();
    if (!ch || int64_t(src.meta().size) <= inline_max) {
        std::string all;
        src.read(all, size_t(src.meta().size));
        src.finish();
        add_meta(obj.get(), src.meta());
        add(obj.get(), "inline", check(cJSON_CreateBool(true)));
        reply.result = std::move(obj);
        reply.data = std::move(all);
        return;
    }
    ChannelTable &t = table_of(req, svc);
    uint32_t chan = uint32_t(*ch);
    auto win = std::make_shared<ChannelWindow>(uint64_t(window));
    if (!t.add(req.caller, chan, ChannelEndpoint{0, win, nullptr, {}}))
        throw Error(SPORE_EPROTO, "fs.get: channel " + std::to_string(chan) + " is already in use");
    ChannelGuard guard(&t, req.caller, chan);
    try {
        std::string chunk;
        while (src.read(chunk, kChanChunk) > 0) {
            ErrorInfo err;
            int rc;
            while ((rc = win->acquire(chunk.size(), Clock::time_point::max(), err, 1000)) == SPORE_ETIMEDOUT) {
            }
            if (rc != SPORE_OK) throw Error(err);
            Message m = chan_data_message(req.caller, chan, std::move(chunk));
            if (svc.send(m) != SPORE_OK) throw Error(SPORE_EDISCONNECTED, "fs.get: the caller is unreachable");
            chunk = std::string();
        }
        src.finish();
    } catch (const Error &e) {
        // The caller learns at once, in order with the data already sent.
        ErrorInfo why = e.info();
        if (why.function.empty()) why.function = "fs.get";
        Message m = chan_abort_message(req.caller, chan, why);
        svc.send(m);
        throw;
    }
    Message eof = chan_eof_message(req.caller, chan, "\"size\":" + std::to_string(src.done()));
    svc.send(eof);
    add_meta(obj.get(), src.meta());
    add(obj.get(), "inline", check(cJSON_CreateBool(false)));
    reply.result = std::move(obj);
}

}  // namespace spore::agent::detail

// ------------------------------------------------------------------ trees

namespace spore::agent::detail {

namespace {

// A path inside a tree: relative, no "." or ".." components, no empty ones.
// "" is the root itself.
std::string tree_path(const CallRequest &req, const std::string &root, const std::string &rel) {
    if (rel.empty()) return root;
    if (!plain_relative(rel))
        throw Error(SPORE_EBADARGS, std::string(req.function) + ": path '" + rel + "' is not a plain relative path");
    return root + (root.back() == '/' ? "" : "/") + rel;
}

std::string entry_str(const cJSON *e, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t entry_int(const cJSON *e, const char *key, int64_t fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
    return cJSON_IsNumber(v) ? int64_t(v->valuedouble) : fallback;
}

}  // namespace

// fs.put_batch {root, entries: [...], sync?} + the files' bytes, one after
// the other. Entries, handled in order:
//   {"t":"d","p":rel,"m":mode}             a directory (mode 0700 until a "dm")
//   {"t":"f","p":rel,"m":mode,"s":size,"ms":sec,"mn":nsec,"u":uid,"g":gid}
//   {"t":"l","p":rel,"target":text}         a symlink (replacing what is there)
//   {"t":"dm","p":rel,"m":mode,"ms":..,"mn":..}  a directory's final mode and mtime
// Files are written beside their place and renamed over it, as fs.put; with
// sync, one syncfs at the end of the batch instead of an fsync per file.
void fs_put_batch(const CallRequest &req, CallReply &reply, Services &) {
    std::string root = arg_str(req, "root");
    bool sync = arg_bool(req, "sync", true);
    const cJSON *entries = arg(req, "entries");
    if (!cJSON_IsArray(entries)) bad_arg(req, "entries", "must be an array");
    size_t off = 0, files = 0, dirs = 0, links = 0;
    for (const cJSON *e = entries->child; e; e = e->next) {
        if (!cJSON_IsObject(e)) bad_arg(req, "entries", "must hold objects");
        std::string t = entry_str(e, "t");
        std::string path = tree_path(req, root, entry_str(e, "p"));
        if (t == "d") {
            if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) throw_file_error(errno, "cannot create", path);
            struct stat st;
            if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
                throw Error(SPORE_EINVAL, "cannot create the directory " + path + ": something else is there");
            ++dirs;
        } else if (t == "f") {
            int64_t size = entry_int(e, "s", -1);
            if (size < 0 || off + uint64_t(size) > req.data.size())
                throw Error(SPORE_EPROTO, "fs.put_batch: the data of " + path + " is missing");
            AtomicFile out(path);
            out.write(req.data.data() + off, size_t(size));
            off += size_t(size);
            std::optional<std::pair<int64_t, int64_t>> mtime;
            if (cJSON_GetObjectItemCaseSensitive(e, "ms")) mtime = std::make_pair(entry_int(e, "ms", 0), entry_int(e, "mn", 0));
            std::optional<uid_t> uid;
            std::optional<gid_t> gid;
            if (cJSON_GetObjectItemCaseSensitive(e, "u")) uid = uid_t(entry_int(e, "u", 0));
            if (cJSON_GetObjectItemCaseSensitive(e, "g")) gid = gid_t(entry_int(e, "g", 0));
            out.commit(mode_t(entry_int(e, "m", 0644)), mtime, uid, gid, false);
            ++files;
        } else if (t == "l") {
            std::string target = entry_str(e, "target");
            if (target.empty()) bad_arg(req, "entries", "a symlink needs a target");
            replace_with_symlink(path, target);
            ++links;
        } else if (t == "dm") {
            if (::chmod(path.c_str(), mode_t(entry_int(e, "m", 0755)) & 07777) != 0)
                throw_file_error(errno, "cannot set the mode of", path);
            if (cJSON_GetObjectItemCaseSensitive(e, "ms")) {
                timespec ts[2];
                ts[0].tv_sec = 0;
                ts[0].tv_nsec = UTIME_OMIT;
                ts[1].tv_sec = time_t(entry_int(e, "ms", 0));
                ts[1].tv_nsec = long(entry_int(e, "mn", 0));
                (void)utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW);
            }
        } else {
            bad_arg(req, "entries", "has an entry of unknown type");
        }
    }
    if (sync) sync_filesystem_of(root);
    Json obj = json_object();
    add_num(obj.get(), "files", double(files));
    add_num(obj.get(), "dirs", double(dirs));
    add_num(obj.get(), "links", double(links));
    reply.result = std::move(obj);
}

// fs.walk {path}: the tree under path, parents before children, without
// following symlinks: {"m","ms","mn" (of path itself), "entries":
// [{"t":"d"|"f"|"l","p":rel,"m","s","ms","mn","u","g","target"}]}.
// Other file types (devices, sockets, fifos) are left out.
void fs_walk(const CallRequest &req, CallReply &reply, Services &) {
    std::string root = arg_str(req, "path");
    Json obj = json_object();
    cJSON *list = check(cJSON_CreateArray());
    add(obj.get(), "entries", list);
    for (const TreeEntry &e : walk_tree(root)) {
        if (utf8_sanitize(e.rel) != e.rel)
            throw Error(SPORE_EINVAL, "fs.walk: the name " + utf8_sanitize(e.rel) + " under " + root +
                                          " is not valid UTF-8, which JSON cannot carry");
        cJSON *o = check(cJSON_CreateObject());
        cJSON_AddItemToArray(list, o);
        add_str(o, "t", std::string(1, e.type));
        add_str(o, "p", e.rel);
        add_num(o, "m", double(e.meta.mode));
        add_num(o, "s", double(e.meta.size));
        add_num(o, "ms", double(e.meta.mtime_sec));
        add_num(o, "mn", double(e.meta.mtime_nsec));
        add_num(o, "u", double(e.meta.uid));
        add_num(o, "g", double(e.meta.gid));
        if (e.type == 'l') add_str(o, "target", e.target);
    }
    struct stat st;
    if (::stat(root.c_str(), &st) == 0) {
        add_num(obj.get(), "m", double(st.st_mode & 07777));
        add_num(obj.get(), "ms", double(st.st_mtim.tv_sec));
        add_num(obj.get(), "mn", double(st.st_mtim.tv_nsec));
    }
    reply.result = std::move(obj);
}

// fs.get_batch {root, paths: [rel...]}: the files, one after the other in
// the binary part; the result lists each one's metadata (as fs.get).
void fs_get_batch(const CallRequest &req, CallReply &reply, Services &) {
    std::string root = arg_str(req, "root");
    const cJSON *paths = arg(req, "paths");
    if (!cJSON_IsArray(paths)) bad_arg(req, "paths", "must be an array");
    Json list(check(cJSON_CreateArray()));
    for (const cJSON *p = paths->child; p; p = p->next) {
        if (!cJSON_IsString(p)) bad_arg(req, "paths", "must hold strings");
        std::string path = tree_path(req, root, p->valuestring);
        FileSource src(path);
        std::string data;
        src.read(data, size_t(src.meta().size));
        src.finish();
        reply.data += data;
        cJSON *o = check(cJSON_CreateObject());
        cJSON_AddItemToArray(list.get(), o);
        add_meta(o, src.meta());
    }
    reply.result = std::move(list);
}

}  // namespace spore::agent::detail
