#include "controller/process.h"

#include <cmath>
#include <cstring>

#include "core/json.h"

namespace spore {

namespace {

Clock::time_point deadline_after(int timeout_ms) {
    return timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
}

int fail(ErrorInfo &err, int code, std::string message, const ContextState &ctx, const char *fn) {
    err = ErrorInfo{code, ctx.name + ": " + message, "", ctx.name, fn};
    return code;
}

double num(const cJSON *obj, const char *key, double fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) && std::isfinite(v->valuedouble) ? v->valuedouble : fallback;
}

}  // namespace

RemoteProcess::RemoteProcess(Router &m, std::shared_ptr<ContextState> ctx, uint32_t ch, uint64_t window)
    : m_(m), ctx_(std::move(ctx)), ch_(ch) {
    in_ = std::make_shared<ChannelWindow>(window);
    for (auto &o : out_) o = std::make_shared<ChannelInbox>(window + kChanChunk);
}

std::unique_ptr<RemoteProcess> RemoteProcess::start(Router &m, const std::shared_ptr<ContextState> &ctx,
                                                    const char *args_json, uint64_t window, int timeout_ms) {
    std::string err;
    Json args = json_parse(args_json && *args_json ? args_json : "{}", kDefaultMaxJsonDepth, &err);
    if (!args || !cJSON_IsObject(args.get()))
        throw Error(SPORE_EINVAL, "spore_proc_start: args_json must be a JSON object" + (err.empty() ? "" : ": " + err));
    // Three consecutive channel numbers: stdin, stdout, stderr.
    uint32_t ch = m.new_channel_ids(3);
    std::unique_ptr<RemoteProcess> p(new RemoteProcess(m, ctx, ch, window));
    m.channels().add(ctx->id, ch, ChannelEndpoint{0, p->in_, nullptr, {}});
    m.channels().add(ctx->id, ch + 1, ChannelEndpoint{0, nullptr, p->out_[0], {}});
    m.channels().add(ctx->id, ch + 2, ChannelEndpoint{0, nullptr, p->out_[1], {}});
    cJSON_DeleteItemFromObjectCaseSensitive(args.get(), "ch");
    cJSON_DeleteItemFromObjectCaseSensitive(args.get(), "window");
    cJSON_AddNumberToObject(args.get(), "ch", double(ch));
    cJSON_AddNumberToObject(args.get(), "window", double(window));
    std::string text = json_print(args.get());
    p->pc_ = m.call_async(ctx, "proc.start", text.c_str(), nullptr, 0, "", false);
    // The first message on stdout says it runs; a failed start answers the
    // call instead.
    auto deadline = deadline_after(timeout_ms);
    for (;;) {
        ChannelChunk c;
        ErrorInfo e;
        int rc = p->out_[0]->pop(c, deadline, e, 20);
        if (rc == SPORE_OK) {
            Json j = json_parse(c.meta, 8, nullptr);
            if (!j || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j.get(), "started")))
                throw Error(ErrorInfo{SPORE_EPROTO, "proc.start did not report the process started", "", ctx->name,
                                      "proc.start"});
            p->pid_ = long(num(j.get(), "pid", -1));
            p->started_ = true;
            return p;
        }
        if (p->pc_->done()) {
            ErrorInfo pe = p->pc_->error();
            if (pe.code == SPORE_OK)
                pe = ErrorInfo{SPORE_EPROTO, "proc.start ended before it started", "", ctx->name, "proc.start"};
            p->exited_ = true;  // nothing to kill
            throw Error(pe);
        }
        if (rc != SPORE_ETIMEDOUT) throw Error(e);
        if (Clock::now() >= deadline)
            throw Error(ErrorInfo{SPORE_ETIMEDOUT,
                                  ctx->name + ": the process did not start within " + std::to_string(timeout_ms) + " ms",
                                  "", ctx->name, "proc.start"});
    }
}

RemoteProcess::~RemoteProcess() {
    if (pc_ && !pc_->done() && !exited_) {
        // As the receiver of its output, give up on it: the agent, which
        // registered these channels as proc.start arrived, then starts
        // nothing if it has not yet, and otherwise kills the process while
        // it moves its output. proc.signal (which runs at once in the agent,
        // and finds only a process already started) covers one that has
        // closed its output and not exited.
        ErrorInfo why{SPORE_EDISCONNECTED, ctx_->name + ": the caller gave up on the process", "", ctx_->name,
                      "proc.start"};
        for (uint32_t k = 1; k <= 2; ++k) {
            Message abort = chan_abort_message(ctx_->id, ch_ + k, why);
            m_.send(abort);
        }
        if (started_) {
            ErrorInfo e;
            control("proc.signal", "{\"ch\":" + std::to_string(ch_) + ",\"signal\":9}", e);
        }
    }
    if (pc_) m_.forget(*pc_);
    for (uint32_t k = 0; k < 3; ++k) m_.channels().remove(ctx_->id, ch_ + k);
}

int RemoteProcess::control(const char *function, const std::string &args, ErrorInfo &err) {
    try {
        m_.call(ctx_, function, args.c_str(), nullptr, 0, "", 10000);
        return SPORE_OK;
    } catch (const Error &e) {
        err = e.info();
        return err.code;
    }
}

int RemoteProcess::write(const char *data, size_t len, int timeout_ms, ErrorInfo &err) {
    std::lock_guard<std::mutex> lk(write_mu_);
    if (stdin_closed_) return fail(err, SPORE_EINVAL, "the process's stdin is closed", *ctx_, "write");
    auto deadline = deadline_after(timeout_ms);
    size_t off = 0;
    while (off < len) {
        // proc.start's reply means the process has exited: nobody reads stdin
        // any more (bytes sent in the moment before exit are lost, as with a pipe).
        if (pc_->done()) return fail(err, SPORE_EDISCONNECTED, "the process has exited", *ctx_, "write");
        size_t n = std::min(len - off, kChanChunk);
        for (;;) {
            ErrorInfo e;
            int rc = in_->acquire(n, deadline, e, 20);
            if (rc == SPORE_OK) break;
            if (rc != SPORE_ETIMEDOUT) {
                err = e;
                return rc;
            }
            if (pc_->done()) return fail(err, SPORE_EDISCONNECTED, "the process has exited", *ctx_, "write");
            if (Clock::now() >= deadline)
                return fail(err, SPORE_ETIMEDOUT, "writing to the process timed out (it does not read)", *ctx_, "write");
        }
        Message msg = chan_data_message(ctx_->id, ch_, std::string(data + off, n));
        int rc = m_.send(msg);
        if (rc != SPORE_OK) return fail(err, rc, "the context is unreachable", *ctx_, "write");
        off += n;
    }
    return SPORE_OK;
}

int RemoteProcess::close_stdin(ErrorInfo &err) {
    std::lock_guard<std::mutex> lk(write_mu_);
    if (stdin_closed_) return SPORE_OK;
    stdin_closed_ = true;
    Message eof = chan_eof_message(ctx_->id, ch_, "");
    int rc = m_.send(eof);
    if (rc != SPORE_OK && !pc_->done()) return fail(err, rc, "the context is unreachable", *ctx_, "close_stdin");
    return SPORE_OK;
}

long RemoteProcess::read(int fd, char *buf, size_t cap, int timeout_ms, ErrorInfo &err) {
    if (fd != 1 && fd != 2) return fail(err, SPORE_EINVAL, "read: fd must be 1 (stdout) or 2 (stderr)", *ctx_, "read");
    Reader &r = readers_[fd - 1];
    std::lock_guard<std::mutex> lk(r.mu);
    if (cap == 0) return 0;
    auto deadline = deadline_after(timeout_ms);
    while (r.off == r.chunk.size()) {
        if (r.eof) return 0;
        ChannelChunk c;
        ErrorInfo e;
        int rc = out_[fd - 1]->pop(c, deadline, e, 50);
        if (rc == SPORE_ETIMEDOUT) {
            if (Clock::now() >= deadline) return fail(err, SPORE_ETIMEDOUT, "nothing to read yet", *ctx_, "read");
            continue;
        }
        if (rc != SPORE_OK) {
            err = e;
            return rc;
        }
        if (c.abort) {
            err = *c.abort;
            return err.code;
        }
        r.chunk = std::move(c.data);
        r.off = 0;
        if (c.eof) r.eof = true;
    }
    size_t n = std::min(cap, r.chunk.size() - r.off);
    std::memcpy(buf, r.chunk.data() + r.off, n);
    r.off += n;
    if (r.off == r.chunk.size()) {
        // The whole chunk is consumed: the agent may send that much more.
        Message ack = chan_ack_message(ctx_->id, ch_ + uint32_t(fd), r.chunk.size());
        m_.send(ack);
        r.chunk.clear();
        r.off = 0;
    }
    return long(n);
}

int RemoteProcess::signal(int signum, ErrorInfo &err) {
    if (signum < 1 || signum > 64) return fail(err, SPORE_EINVAL, "signal: no such signal", *ctx_, "signal");
    return control("proc.signal", "{\"ch\":" + std::to_string(ch_) + ",\"signal\":" + std::to_string(signum) + "}",
                   err);
}

int RemoteProcess::resize(int rows, int cols, ErrorInfo &err) {
    if (rows < 1 || cols < 1 || rows > 10000 || cols > 10000)
        return fail(err, SPORE_EINVAL, "resize: rows and cols must be from 1 to 10000", *ctx_, "resize");
    return control("proc.resize",
                   "{\"ch\":" + std::to_string(ch_) + ",\"rows\":" + std::to_string(rows) +
                       ",\"cols\":" + std::to_string(cols) + "}",
                   err);
}

int RemoteProcess::wait(int *exit_code, int *signal, int timeout_ms, ErrorInfo &err) {
    std::lock_guard<std::mutex> lk(wait_mu_);
    if (!exited_) {
        bool timed_out = false;
        ErrorInfo e = Router::wait_error(*pc_, timeout_ms, &timed_out);
        if (timed_out) return fail(err, SPORE_ETIMEDOUT, "the process is still running", *ctx_, "wait");
        if (e.code != SPORE_OK) {
            err = e;
            return e.code;
        }
        Json r = json_parse(pc_->take_json(), 8, nullptr);
        exit_code_ = int(num(r.get(), "rc", -1));
        exit_signal_ = int(num(r.get(), "signal", 0));
        exited_ = true;
    }
    if (exit_code) *exit_code = exit_code_;
    if (signal) *signal = exit_signal_;
    return SPORE_OK;
}

}  // namespace spore
