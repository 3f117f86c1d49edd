#include "controller/transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "core/file_io.h"
#include "core/options.h"

namespace spore {

namespace {

Clock::time_point deadline_of(const TransferOptions &o) {
    return o.timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(o.timeout_ms);
}

int remaining_ms(Clock::time_point deadline) {
    if (deadline == Clock::time_point::max()) return -1;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : int(std::min<int64_t>(left, INT32_MAX));
}

// Errors of this side of a transfer name the operation and the context.
[[noreturn]] void rethrow_named(Error &e, const ContextState &ctx, const char *op) {
    ErrorInfo &i = e.info();
    if (i.context.empty()) i.context = ctx.name;
    if (i.function.empty()) i.function = op;
    if (i.message.find(ctx.name) == std::string::npos) i.message = std::string(op) + " with " + ctx.name + ": " + i.message;
    throw e;
}

[[noreturn]] void timed_out(const ContextState &ctx, const char *op, int timeout_ms) {
    throw Error(ErrorInfo{SPORE_ETIMEDOUT, std::string(op) + " with " + ctx.name + " timed out after " +
                                               std::to_string(timeout_ms) + " ms",
                          "", ctx.name, op});
}

// Removes a channel of the master when the transfer ends.
struct ChannelGuard {
    Router &m;
    uint32_t peer, ch;
    ~ChannelGuard() { m.channels().remove(peer, ch); }
};

// Files up to this size travel in one message (kInlineMax, unless the
// router's messages are smaller).
uint64_t inline_limit(const Router &m) { return std::min<uint64_t>(kInlineMax, m.max_message_size() / 4); }
// Data per batch of small files in a tree transfer.
uint64_t batch_limit(const Router &m) { return std::min<uint64_t>(4u << 20, m.max_message_size() / 4); }

class Source {
public:
    virtual ~Source() = default;
    virtual const FileMeta &meta() const = 0;
    virtual size_t read(std::string &out, size_t max) = 0;
    virtual void finish() = 0;
};

class FileSourceAdapter : public Source {
public:
    explicit FileSourceAdapter(const std::string &path) : f_(path) {}
    const FileMeta &meta() const override { return f_.meta(); }
    size_t read(std::string &out, size_t max) override { return f_.read(out, max); }
    void finish() override { f_.finish(); }

private:
    FileSource f_;
};

class MemorySource : public Source {
public:
    explicit MemorySource(std::string_view data) : data_(data) {
        meta_.size = data.size();
        meta_.mode = 0644;
    }
    const FileMeta &meta() const override { return meta_; }
    size_t read(std::string &out, size_t max) override {
        size_t n = std::min(max, data_.size() - off_);
        out.assign(data_.data() + off_, n);
        off_ += n;
        return n;
    }
    void finish() override {}

private:
    std::string_view data_;
    size_t off_ = 0;
    FileMeta meta_;
};

class Sink {
public:
    virtual ~Sink() = default;
    virtual void write(const std::string &data) = 0;
    virtual uint64_t written() const = 0;
};

class FileSink : public Sink {
public:
    explicit FileSink(const std::string &path) : f(path) {}
    void write(const std::string &data) override { f.write(data.data(), data.size()); }
    uint64_t written() const override { return f.written(); }
    AtomicFile f;
};

class MemorySink : public Sink {
public:
    explicit MemorySink(uint64_t max) : max_(max) {}
    void write(const std::string &data) override {
        if (out.size() + data.size() > max_)
            throw Error(SPORE_ETOOBIG, "the file is larger than max_size (" + std::to_string(max_) + " bytes)");
        out += data;
    }
    uint64_t written() const override { return out.size(); }
    std::string out;

private:
    uint64_t max_;
};

// After a failure on this side: tells the target to drop what it has, and
// waits a little for its answer, so its temporary file is gone when the
// caller hears of the failure.
void abort_remote(Router &m, const ContextState &ctx, uint32_t ch, PendingCall &pc, const ErrorInfo &why) {
    if (!pc.done()) {
        Message a = chan_abort_message(ctx.id, ch, why);
        m.send(a);
        pc.wait(5000);
    }
    m.forget(pc);
}

std::string put_from(Router &m, const std::shared_ptr<ContextState> &ctx, Source &src, const std::string &remote,
                     const TransferOptions &o, bool file_meta) {
    const char *op = "put";
    const auto deadline = deadline_of(o);
    const FileMeta &meta = src.meta();
    Json args = json_object();
    cJSON_AddStringToObject(args.get(), "path", remote.c_str());
    cJSON_AddNumberToObject(args.get(), "size", double(meta.size));
    if (o.mode) cJSON_AddNumberToObject(args.get(), "mode", double(*o.mode));
    else if (file_meta) cJSON_AddNumberToObject(args.get(), "mode", double(meta.mode));
    if (file_meta && o.preserve_mtime) {
        cJSON_AddNumberToObject(args.get(), "mtime_sec", double(meta.mtime_sec));
        cJSON_AddNumberToObject(args.get(), "mtime_nsec", double(meta.mtime_nsec));
    }
    if (file_meta && o.preserve_owner) {
        cJSON_AddNumberToObject(args.get(), "uid", double(meta.uid));
        cJSON_AddNumberToObject(args.get(), "gid", double(meta.gid));
    }
    cJSON_AddBoolToObject(args.get(), "sync", o.sync);

    if (meta.size <= inline_limit(m)) {
        // One message: no channel, no extra round trip.
        std::string all;
        src.read(all, size_t(meta.size));
        src.finish();
        std::string text = json_print(args.get());
        return m.call(ctx, "fs.put", text.c_str(), all.data(), all.size(), "", remaining_ms(deadline)).first;
    }

    uint32_t ch = m.new_channel_id();
    auto win = std::make_shared<ChannelWindow>(o.window);
    m.channels().add(ctx->id, ch, ChannelEndpoint{0, win, nullptr, {}});
    ChannelGuard guard{m, ctx->id, ch};
    cJSON_AddNumberToObject(args.get(), "ch", double(ch));
    cJSON_AddNumberToObject(args.get(), "window", double(o.window));
    std::string text = json_print(args.get());
    auto pc = m.call_async(ctx, "fs.put", text.c_str(), nullptr, 0, "", false);
    try {
        std::string chunk;
        while (src.read(chunk, kChanChunk) > 0) {
            for (;;) {
                ErrorInfo err;
                int rc = win->acquire(chunk.size(), deadline, err, 20);
                if (rc == SPORE_OK) break;
                if (rc != SPORE_ETIMEDOUT) throw Error(err);
                // The target may have failed (no space, no permission).
                if (pc->done()) {
                    if (pc->error().code != SPORE_OK) throw Error(pc->error());
                    throw Error(SPORE_EPROTO, "fs.put answered before it had all the data");
                }
                if (Clock::now() >= deadline) timed_out(*ctx, op, o.timeout_ms);
            }
            Message msg = chan_data_message(ctx->id, ch, std::move(chunk));
            int rc = m.send(msg);
            if (rc != SPORE_OK) throw Error(rc, "the context is unreachable");
            chunk = std::string();
        }
        src.finish();
        Message eof = chan_eof_message(ctx->id, ch, "\"size\":" + std::to_string(meta.size));
        int rc = m.send(eof);
        if (rc != SPORE_OK) throw Error(rc, "the context is unreachable");
    } catch (Error &e) {
        bool remote_failed = pc->done() && pc->error().code != SPORE_OK;
        abort_remote(m, *ctx, ch, *pc, e.info());
        if (remote_failed) throw Error(pc->error());
        rethrow_named(e, *ctx, op);
    }
    bool to = false;
    ErrorInfo e = Router::wait_error(*pc, remaining_ms(deadline), &to);
    if (to) {
        abort_remote(m, *ctx, ch, *pc, ErrorInfo{SPORE_ETIMEDOUT, "timed out", "", "", ""});
        timed_out(*ctx, op, o.timeout_ms);
    }
    if (e.code != SPORE_OK) throw Error(e);
    return pc->take_json();
}

// Reads a number member of a JSON object, or the fallback.
double num(const cJSON *obj, const char *key, double fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) && std::isfinite(v->valuedouble) ? v->valuedouble : fallback;
}

// Takes the file into sink; returns the target's reply (its metadata).
std::string get_into(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote, Sink &sink,
                     const TransferOptions &o) {
    const char *op = "get";
    const auto deadline = deadline_of(o);
    uint32_t ch = m.new_channel_id();
    auto inbox = std::make_shared<ChannelInbox>(o.window + kChanChunk);
    m.channels().add(ctx->id, ch, ChannelEndpoint{0, nullptr, inbox, {}});
    ChannelGuard guard{m, ctx->id, ch};
    Json args = json_object();
    cJSON_AddStringToObject(args.get(), "path", remote.c_str());
    cJSON_AddNumberToObject(args.get(), "ch", double(ch));
    cJSON_AddNumberToObject(args.get(), "window", double(o.window));
    cJSON_AddNumberToObject(args.get(), "inline_max", double(inline_limit(m)));
    std::string text = json_print(args.get());
    auto pc = m.call_async(ctx, "fs.get", text.c_str(), nullptr, 0, "", false);

    std::string reply;  // taken once the call has answered
    bool answered = false, inline_data = false, eof = false;
    uint64_t announced = 0;
    try {
        while (!eof) {
            if (!answered && pc->done()) {
                if (pc->error().code != SPORE_OK) throw Error(pc->error());
                answered = true;
                reply = pc->take_json();
                Json r = json_parse(reply, 8, nullptr);
                inline_data = r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.get(), "inline"));
                if (inline_data) break;
            }
            ChannelChunk c;
            ErrorInfo err;
            int rc = inbox->pop(c, deadline, err, 20);
            if (rc == SPORE_ETIMEDOUT) {
                if (Clock::now() >= deadline) timed_out(*ctx, op, o.timeout_ms);
                continue;
            }
            if (rc != SPORE_OK) throw Error(err);
            if (c.abort) throw Error(*c.abort);
            if (!c.data.empty()) {
                sink.write(c.data);
                Message ack = chan_ack_message(ctx->id, ch, c.data.size());
                m.send(ack);
            }
            if (c.eof) {
                eof = true;
                Json meta = json_parse(c.meta, 8, nullptr);
                announced = meta ? uint64_t(num(meta.get(), "size", 0)) : 0;
            }
        }
        if (!answered) {
            bool to = false;
            ErrorInfo e = Router::wait_error(*pc, remaining_ms(deadline), &to);
            if (to) timed_out(*ctx, op, o.timeout_ms);
            if (e.code != SPORE_OK) throw Error(e);
            reply = pc->take_json();
        }
        if (inline_data) sink.write(pc->take_bin());
    } catch (Error &e) {
        if (!pc->done()) {
            Message a = chan_abort_message(ctx->id, ch, e.info());
            m.send(a);
        }
        m.forget(*pc);
        rethrow_named(e, *ctx, op);
    }
    Json r = json_parse(reply, 8, nullptr);
    uint64_t size = r ? uint64_t(num(r.get(), "size", -1)) : 0;
    if (!r || sink.written() != size || (!inline_data && announced != size))
        throw Error(ErrorInfo{SPORE_ECHANGED,
                              remote + " in " + ctx->name + " changed during the transfer (" +
                                  std::to_string(sink.written()) + " bytes came, " + std::to_string(size) +
                                  " announced)",
                              "", ctx->name, op});
    return reply;
}

std::string parent_rel(const std::string &rel) {
    size_t slash = rel.rfind('/');
    return slash == std::string::npos ? "" : rel.substr(0, slash);
}

// mkdir that accepts an existing directory, and nothing else (a symlink
// there is refused, so nothing is ever written through one).
void make_real_dir(const std::string &path) {
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) throw_file_error(errno, "cannot create", path);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error(SPORE_EINVAL, "cannot create the directory " + path + ": something else is there");
}

void set_dir_meta(const std::string &path, const FileMeta &meta, bool mtime) {
    if (::chmod(path.c_str(), meta.mode & 07777) != 0) throw_file_error(errno, "cannot set the mode of", path);
    if (mtime) {
        timespec ts[2];
        ts[0].tv_sec = 0;
        ts[0].tv_nsec = UTIME_OMIT;
        ts[1].tv_sec = time_t(meta.mtime_sec);
        ts[1].tv_nsec = long(meta.mtime_nsec);
        (void)utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
}

std::string tree_result(uint64_t files, uint64_t dirs, uint64_t links, uint64_t bytes) {
    return "{\"files\":" + std::to_string(files) + ",\"dirs\":" + std::to_string(dirs) +
           ",\"links\":" + std::to_string(links) + ",\"bytes\":" + std::to_string(bytes) + "}";
}

}  // namespace

std::string put_tree(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &local_dir,
                     const std::string &remote_dir, const TransferOptions &o_in) {
    const char *op = "put_tree";
    if (o_in.mode) throw Error(SPORE_EINVAL, "the mode option does not apply to trees (each file keeps its own)");
    TransferOptions o = o_in;
    const auto deadline = deadline_of(o);
    std::vector<TreeEntry> entries;
    FileMeta root_meta;
    try {
        entries = walk_tree(local_dir);
        struct stat st;
        if (::stat(local_dir.c_str(), &st) == 0) {
            root_meta.mode = st.st_mode & 07777;
            root_meta.mtime_sec = st.st_mtim.tv_sec;
            root_meta.mtime_nsec = st.st_mtim.tv_nsec;
        }
    } catch (Error &e) {
        rethrow_named(e, *ctx, op);
    }
    uint64_t files = 0, dirs = 0, links = 0, bytes = 0;
    Json batch(cJSON_CreateArray());
    std::string data;
    auto add = [&](const char *t, const std::string &rel) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(batch.get(), e);
        cJSON_AddStringToObject(e, "t", t);
        cJSON_AddStringToObject(e, "p", rel.c_str());
        return e;
    };
    auto flush = [&](bool last) {
        if (cJSON_GetArraySize(batch.get()) == 0 && !last) return;
        Json args = json_object();
        cJSON_AddStringToObject(args.get(), "root", remote_dir.c_str());
        cJSON_AddItemToObject(args.get(), "entries", batch.release());
        cJSON_AddBoolToObject(args.get(), "sync", last && o.sync);
        std::string text = json_print(args.get());
        if (Clock::now() >= deadline) timed_out(*ctx, op, o.timeout_ms);
        m.call(ctx, "fs.put_batch", text.c_str(), data.data(), data.size(), "", remaining_ms(deadline));
        batch.reset(cJSON_CreateArray());
        data.clear();
    };
    auto file_meta = [&](cJSON *e, const FileMeta &meta) {
        cJSON_AddNumberToObject(e, "m", double(meta.mode));
        if (o.preserve_mtime) {
            cJSON_AddNumberToObject(e, "ms", double(meta.mtime_sec));
            cJSON_AddNumberToObject(e, "mn", double(meta.mtime_nsec));
        }
        if (o.preserve_owner) {
            cJSON_AddNumberToObject(e, "u", double(meta.uid));
            cJSON_AddNumberToObject(e, "g", double(meta.gid));
        }
    };
    add("d", "");
    for (const TreeEntry &e : entries) {
        if (!valid_utf8(e.rel))
            throw Error(ErrorInfo{SPORE_EINVAL, "put_tree: a name under " + local_dir + " is not valid UTF-8", "",
                                  ctx->name, op});
        if (e.type == 'd') {
            add("d", e.rel);
            ++dirs;
        } else if (e.type == 'l') {
            cJSON_AddStringToObject(add("l", e.rel), "target", e.target.c_str());
            ++links;
        } else if (e.meta.size <= inline_limit(m)) {
            std::string content;
            try {
                FileSource src(local_dir + "/" + e.rel);
                src.read(content, size_t(src.meta().size));
                src.finish();
                cJSON *j = add("f", e.rel);
                cJSON_AddNumberToObject(j, "s", double(content.size()));
                file_meta(j, src.meta());
            } catch (Error &err) {
                rethrow_named(err, *ctx, op);
            }
            bytes += content.size();
            data += content;
            ++files;
        } else {
            // Directories above it must exist on the other side first.
            flush(false);
            TransferOptions fo = o;
            fo.timeout_ms = remaining_ms(deadline);
            std::unique_ptr<FileSourceAdapter> src;
            try {
                src = std::make_unique<FileSourceAdapter>(local_dir + "/" + e.rel);
            } catch (Error &err) {
                rethrow_named(err, *ctx, op);
            }
            put_from(m, ctx, *src, remote_dir + "/" + e.rel, fo, true);
            bytes += e.meta.size;
            ++files;
        }
        if (data.size() >= batch_limit(m) || cJSON_GetArraySize(batch.get()) >= 4096) flush(false);
    }
    // Directory modes last, children before parents: a read-only directory
    // must not stop its own contents from being written.
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if (it->type != 'd') continue;
        cJSON *j = add("dm", it->rel);
        cJSON_AddNumberToObject(j, "m", double(it->meta.mode));
        if (o.preserve_mtime) {
            cJSON_AddNumberToObject(j, "ms", double(it->meta.mtime_sec));
            cJSON_AddNumberToObject(j, "mn", double(it->meta.mtime_nsec));
        }
    }
    cJSON *rj = add("dm", "");
    cJSON_AddNumberToObject(rj, "m", double(root_meta.mode));
    flush(true);
    return tree_result(files, dirs, links, bytes);
}

std::string get_tree(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote_dir,
                     const std::string &local_dir, const TransferOptions &o_in) {
    const char *op = "get_tree";
    if (o_in.mode) throw Error(SPORE_EINVAL, "the mode option does not apply to trees (each file keeps its own)");
    TransferOptions o = o_in;
    const auto deadline = deadline_of(o);
    std::string args = "{\"path\":" + json_print(Json(cJSON_CreateString(remote_dir.c_str())).get()) + "}";
    Json walked = json_parse(m.call(ctx, "fs.walk", args.c_str(), nullptr, 0, "", remaining_ms(deadline)).first,
                             8, nullptr);
    const cJSON *entries = walked ? cJSON_GetObjectItemCaseSensitive(walked.get(), "entries") : nullptr;
    if (!cJSON_IsArray(entries))
        throw Error(ErrorInfo{SPORE_EPROTO, "fs.walk did not answer with a list", "", ctx->name, op});
    FileMeta root_meta;
    root_meta.mode = mode_t(num(walked.get(), "m", 0755)) & 07777;
    root_meta.mtime_sec = int64_t(num(walked.get(), "ms", 0));
    root_meta.mtime_nsec = int64_t(num(walked.get(), "mn", 0));
    uint64_t files = 0, dirs = 0, links = 0, bytes = 0;
    struct DirMeta {
        std::string path;
        FileMeta meta;
    };
    std::vector<DirMeta> dir_metas;
    std::unordered_set<std::string> real_dirs{""};  // relative dirs known to be real directories here
    auto is_real_dir = [&](const std::string &rel) { return real_dirs.count(rel) > 0; };
    std::vector<std::pair<std::string, uint64_t>> pending;  // small files of the next batch
    uint64_t pending_bytes = 0;
    auto fetch_batch = [&]() {
        if (pending.empty()) return;
        Json a = json_object();
        cJSON_AddStringToObject(a.get(), "root", remote_dir.c_str());
        cJSON *paths = cJSON_AddArrayToObject(a.get(), "paths");
        for (auto &p : pending) cJSON_AddItemToArray(paths, cJSON_CreateString(p.first.c_str()));
        std::string text = json_print(a.get());
        if (Clock::now() >= deadline) timed_out(*ctx, op, o.timeout_ms);
        auto r = m.call(ctx, "fs.get_batch", text.c_str(), nullptr, 0, "", remaining_ms(deadline));
        Json metas = json_parse(r.first, 8, nullptr);
        if (!metas || !cJSON_IsArray(metas.get()) || size_t(cJSON_GetArraySize(metas.get())) != pending.size())
            throw Error(ErrorInfo{SPORE_EPROTO, "fs.get_batch answered with the wrong number of files", "", ctx->name, op});
        size_t off = 0, i = 0;
        for (const cJSON *meta = metas.get()->child; meta; meta = meta->next, ++i) {
            uint64_t size = uint64_t(num(meta, "size", -1));
            if (off + size > r.second.size())
                throw Error(ErrorInfo{SPORE_EPROTO, "fs.get_batch sent less data than it listed", "", ctx->name, op});
            try {
                AtomicFile out(local_dir + "/" + pending[i].first);
                out.write(r.second.data() + off, size_t(size));
                std::optional<std::pair<int64_t, int64_t>> mt;
                if (o.preserve_mtime) mt = std::make_pair(int64_t(num(meta, "mtime_sec", 0)), int64_t(num(meta, "mtime_nsec", 0)));
                std::optional<uid_t> uid;
                std::optional<gid_t> gid;
                if (o.preserve_owner) {
                    uid = uid_t(num(meta, "uid", 0));
                    gid = gid_t(num(meta, "gid", 0));
                }
                out.commit(mode_t(num(meta, "mode", 0644)) & 07777, mt, uid, gid, false);
            } catch (Error &err) {
                rethrow_named(err, *ctx, op);
            }
            off += size_t(size);
            bytes += size;
            ++files;
        }
        pending.clear();
        pending_bytes = 0;
    };
    try {
        make_real_dir(local_dir);
    } catch (Error &err) {
        rethrow_named(err, *ctx, op);
    }
    for (const cJSON *e = entries->child; e; e = e->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "t");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "p");
        if (!cJSON_IsString(t) || !cJSON_IsString(p)) continue;
        std::string rel = p->valuestring, type = t->valuestring;
        // The other side names the paths: each must stay inside the tree,
        // below a directory this transfer made or found to be real.
        if (!plain_relative(rel) || !is_real_dir(parent_rel(rel)))
            throw Error(ErrorInfo{SPORE_EPROTO, "fs.walk listed '" + rel + "', which is not inside the tree", "",
                                  ctx->name, op});
        std::string path = local_dir + "/" + rel;
        FileMeta meta;
        meta.mode = mode_t(num(e, "m", 0644)) & 07777;
        meta.size = uint64_t(num(e, "s", 0));
        meta.mtime_sec = int64_t(num(e, "ms", 0));
        meta.mtime_nsec = int64_t(num(e, "mn", 0));
        try {
            if (type == "d") {
                fetch_batch();
                make_real_dir(path);
                real_dirs.insert(rel);
                dir_metas.push_back({path, meta});
                ++dirs;
            } else if (type == "l") {
                const cJSON *target = cJSON_GetObjectItemCaseSensitive(e, "target");
                if (!cJSON_IsString(target) || !*target->valuestring) continue;
                replace_with_symlink(path, target->valuestring);
                ++links;
            } else if (type == "f" && meta.size <= inline_limit(m)) {
                pending.emplace_back(rel, meta.size);
                pending_bytes += meta.size;
                if (pending_bytes >= batch_limit(m) || pending.size() >= 4096) fetch_batch();
            } else if (type == "f") {
                fetch_batch();
                TransferOptions fo = o;
                fo.timeout_ms = remaining_ms(deadline);
                get_file(m, ctx, remote_dir + "/" + rel, path, fo);
                bytes += meta.size;
                ++files;
            }
        } catch (Error &err) {
            rethrow_named(err, *ctx, op);
        }
    }
    fetch_batch();
    try {
        for (auto it = dir_metas.rbegin(); it != dir_metas.rend(); ++it) set_dir_meta(it->path, it->meta, o.preserve_mtime);
        set_dir_meta(local_dir, root_meta, o.preserve_mtime);
    } catch (Error &err) {
        rethrow_named(err, *ctx, op);
    }
    if (o.sync) sync_filesystem_of(local_dir);
    return tree_result(files, dirs, links, bytes);
}

TransferOptions parse_transfer_options(const cJSON *opts) {
    TransferOptions o;
    if (!opts) return o;
    for (const cJSON *it = opts->child; it; it = it->next) {
        std::string k = it->string ? it->string : "";
        const OptionSpec *spec = find_option(transfer_option_table(), k);
        if (!spec) {
            std::string known;
            for (const OptionSpec &s : transfer_option_table()) known += (known.empty() ? "" : ", ") + std::string(s.key);
            throw Error(SPORE_EINVAL, "unknown transfer option '" + k + "' (known: " + known + ")");
        }
        check_option(*spec, it, "transfer");
        if (k == "mode") o.mode = uint32_t(it->valuedouble);
        else if (k == "preserve_owner") o.preserve_owner = cJSON_IsTrue(it);
        else if (k == "preserve_mtime") o.preserve_mtime = cJSON_IsTrue(it);
        else if (k == "sync") o.sync = cJSON_IsTrue(it);
        else if (k == "window") o.window = uint64_t(it->valuedouble);
        else if (k == "max_size") o.max_size = uint64_t(it->valuedouble);
        else if (k == "timeout") o.timeout_ms = int(it->valuedouble);
    }
    return o;
}

std::string put_file(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &local_path,
                     const std::string &remote_path, const TransferOptions &o) {
    std::unique_ptr<FileSourceAdapter> src;
    try {
        src = std::make_unique<FileSourceAdapter>(local_path);
    } catch (Error &e) {
        rethrow_named(e, *ctx, "put");
    }
    return put_from(m, ctx, *src, remote_path, o, true);
}

std::string put_bytes(Router &m, const std::shared_ptr<ContextState> &ctx, std::string_view data,
                      const std::string &remote_path, const TransferOptions &o) {
    MemorySource src(data);
    return put_from(m, ctx, src, remote_path, o, false);
}

std::string get_file(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote_path,
                     const std::string &local_path, const TransferOptions &o) {
    std::unique_ptr<FileSink> sink;
    try {
        sink = std::make_unique<FileSink>(local_path);
    } catch (Error &e) {
        rethrow_named(e, *ctx, "get");
    }
    std::string reply = get_into(m, ctx, remote_path, *sink, o);
    Json r = json_parse(reply, 8, nullptr);
    mode_t mode = o.mode ? mode_t(*o.mode) : mode_t(num(r.get(), "mode", 0644)) & 07777;
    std::optional<std::pair<int64_t, int64_t>> mtime;
    if (o.preserve_mtime)
        mtime = std::make_pair(int64_t(num(r.get(), "mtime_sec", 0)), int64_t(num(r.get(), "mtime_nsec", 0)));
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    if (o.preserve_owner) {
        uid = uid_t(num(r.get(), "uid", 0));
        gid = gid_t(num(r.get(), "gid", 0));
    }
    try {
        sink->f.commit(mode, mtime, uid, gid, o.sync);
    } catch (Error &e) {
        rethrow_named(e, *ctx, "get");
    }
    return reply;
}

std::pair<std::string, std::string> get_bytes(Router &m, const std::shared_ptr<ContextState> &ctx,
                                              const std::string &remote_path, const TransferOptions &o) {
    MemorySink sink(o.max_size);
    std::string reply = get_into(m, ctx, remote_path, sink, o);
    return {reply, std::move(sink.out)};
}

}  // namespace spore
