// fs.put and fs.get: the target's half of file transfers (docs/protocol.md,
// "File transfers"). Small files travel inline in the call or its reply;
// larger ones stream over a channel whose number the caller chose, with the
// caller's window bounding the bytes in flight at every hop.
#include <cinttypes>

#include "agent/builtins_util.h"
#include "core/channel.h"
#include "core/file_io.h"

namespace spore::agent::detail {



namespace {

constexpr int64_t kMaxSize = int64_t(1) << 62;
constexpr int64_t kMaxId = 0x7fffffff;

// Removes a channel from the table when the built-in leaves, however it leaves.
struct ChannelGuard {
    ChannelTable *table;
    uint32_t peer, ch;
    ~ChannelGuard() {
        if (table) table->remove(peer, ch);
    }
};

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

}  // namespace

// fs.put {path, size, mode?, mtime_sec?, mtime_nsec?, uid?, gid?, sync?, ch?}
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

    std::optional<ChannelEndpoint> ep;
    ChannelGuard guard{ch ? &table_of(req, svc) : nullptr, req.caller, ch ? uint32_t(*ch) : 0};
    if (ch) {
        ep = guard.table->find(req.caller, uint32_t(*ch));
        if (!ep || !ep->inbox) throw Error(SPORE_EPROTO, "fs.put: channel " + std::to_string(*ch) + " is not open");
    }

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
            int rc = ep->inbox->pop(c, Clock::time_point::max(), err, 1000);
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
    if (!t.add(req.caller, chan, ChannelEndpoint{0, win, nullptr}))
        throw Error(SPORE_EPROTO, "fs.get: channel " + std::to_string(chan) + " is already in use");
    ChannelGuard guard{&t, req.caller, chan};
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
