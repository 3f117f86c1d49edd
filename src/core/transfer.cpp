#include "core/transfer.h"

#include <cmath>
#include <cstring>

#include "core/file_io.h"

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
    Master &m;
    uint32_t peer, ch;
    ~ChannelGuard() { m.channels().remove(peer, ch); }
};

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
void abort_remote(Master &m, const ContextState &ctx, uint32_t ch, PendingCall &pc, const ErrorInfo &why) {
    if (!pc.done()) {
        Message a = chan_abort_message(ctx.id, ch, why);
        m.send(a);
        pc.wait(5000);
    }
    m.forget(pc);
}

std::string put_from(Master &m, const std::shared_ptr<ContextState> &ctx, Source &src, const std::string &remote,
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

    if (meta.size <= kInlineMax) {
        // One message: no channel, no extra round trip.
        std::string all;
        src.read(all, size_t(meta.size));
        src.finish();
        std::string text = json_print(args.get());
        return m.call(ctx, "fs.put", text.c_str(), all.data(), all.size(), "", remaining_ms(deadline)).first;
    }

    uint32_t ch = m.new_channel_id();
    auto win = std::make_shared<ChannelWindow>(o.window);
    m.channels().add(ctx->id, ch, ChannelEndpoint{0, win, nullptr});
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
    ErrorInfo e = Master::wait_error(*pc, remaining_ms(deadline), &to);
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
std::string get_into(Master &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote, Sink &sink,
                     const TransferOptions &o) {
    const char *op = "get";
    const auto deadline = deadline_of(o);
    uint32_t ch = m.new_channel_id();
    auto inbox = std::make_shared<ChannelInbox>(o.window + kChanChunk);
    m.channels().add(ctx->id, ch, ChannelEndpoint{0, nullptr, inbox});
    ChannelGuard guard{m, ctx->id, ch};
    Json args = json_object();
    cJSON_AddStringToObject(args.get(), "path", remote.c_str());
    cJSON_AddNumberToObject(args.get(), "ch", double(ch));
    cJSON_AddNumberToObject(args.get(), "window", double(o.window));
    cJSON_AddNumberToObject(args.get(), "inline_max", double(kInlineMax));
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
            ErrorInfo e = Master::wait_error(*pc, remaining_ms(deadline), &to);
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

}  // namespace

TransferOptions parse_transfer_options(const cJSON *opts) {
    TransferOptions o;
    if (!opts) return o;
    for (const cJSON *it = opts->child; it; it = it->next) {
        std::string k = it->string ? it->string : "";
        auto want_int = [&](int64_t lo, int64_t hi) -> int64_t {
            if (!cJSON_IsNumber(it) || it->valuedouble != std::floor(it->valuedouble) || it->valuedouble < double(lo) ||
                it->valuedouble > double(hi))
                throw Error(SPORE_EINVAL, "transfer option '" + k + "' must be an integer from " + std::to_string(lo) +
                                              " to " + std::to_string(hi));
            return int64_t(it->valuedouble);
        };
        auto want_bool = [&]() -> bool {
            if (!cJSON_IsBool(it)) throw Error(SPORE_EINVAL, "transfer option '" + k + "' must be a boolean");
            return cJSON_IsTrue(it);
        };
        if (k == "mode") o.mode = uint32_t(want_int(0, 07777));
        else if (k == "preserve_owner") o.preserve_owner = want_bool();
        else if (k == "preserve_mtime") o.preserve_mtime = want_bool();
        else if (k == "sync") o.sync = want_bool();
        else if (k == "window") o.window = uint64_t(want_int(int64_t(kChanMinWindow), int64_t(kChanMaxWindow)));
        else if (k == "max_size") o.max_size = uint64_t(want_int(0, int64_t(1) << 40));
        else if (k == "timeout") o.timeout_ms = int(want_int(-1, INT32_MAX));
        else
            throw Error(SPORE_EINVAL, "unknown transfer option '" + k +
                                          "' (known: mode, preserve_owner, preserve_mtime, sync, window, max_size, timeout)");
    }
    return o;
}

std::string put_file(Master &m, const std::shared_ptr<ContextState> &ctx, const std::string &local_path,
                     const std::string &remote_path, const TransferOptions &o) {
    std::unique_ptr<FileSourceAdapter> src;
    try {
        src = std::make_unique<FileSourceAdapter>(local_path);
    } catch (Error &e) {
        rethrow_named(e, *ctx, "put");
    }
    return put_from(m, ctx, *src, remote_path, o, true);
}

std::string put_bytes(Master &m, const std::shared_ptr<ContextState> &ctx, std::string_view data,
                      const std::string &remote_path, const TransferOptions &o) {
    MemorySource src(data);
    return put_from(m, ctx, src, remote_path, o, false);
}

std::string get_file(Master &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote_path,
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

std::pair<std::string, std::string> get_bytes(Master &m, const std::shared_ptr<ContextState> &ctx,
                                              const std::string &remote_path, const TransferOptions &o) {
    MemorySink sink(o.max_size);
    std::string reply = get_into(m, ctx, remote_path, sink, o);
    return {reply, std::move(sink.out)};
}

}  // namespace spore
