#include "controller/router.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "controller/listener.h"
#include "core/messages.h"
#include "core/shlex.h"
#include "methods/method.h"
#include "methods/ssh_libssh2.h"
#include "spore/spore.h"

#ifndef SPORE_AGENT_INSTALL_PATH
#define SPORE_AGENT_INSTALL_PATH "/usr/local/libexec/spore/spore-agent"
#endif

namespace spore {
// src/python/spore_worker.py, embedded by the build (python_worker_source.cpp).
extern const char kPythonWorkerSource[];

namespace {

// The outcome of work on the loop that another thread waits for; the
// first finish() counts.
struct Completion {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    ErrorInfo err;

    void finish(ErrorInfo e) {
        std::lock_guard<std::mutex> lk(mu);
        if (done) return;
        done = true;
        err = std::move(e);
        cv.notify_all();
    }
};

const int kSpinMicros = [] {
    const char *e = std::getenv("SPORE_SPIN_US");
    return e ? std::atoi(e) : 75;
}();

double now_seconds() {
    timeval tv;
    gettimeofday(&tv, nullptr);
    return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

bool valid_function_name(const std::string &fn) {
    if (fn.empty() || fn.size() > 200) return false;
    for (char c : fn) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-' || c == ':';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

std::string default_agent_path() {
    const char *env = std::getenv("SPORE_AGENT_PATH");
    if (env && *env) return env;
    return SPORE_AGENT_INSTALL_PATH;
}

// ------------------------------------------------------------ PendingCall

PendingCall::~PendingCall() {
    if (efd_ >= 0) ::close(efd_);
}

void PendingCall::complete(ErrorInfo err, std::string json, std::string bin) {
    std::lock_guard<std::mutex> lk(mu_);
    if (done_) return;
    done_ = true;
    done_flag_.store(true, std::memory_order_release);
    err_ = std::move(err);
    json_ = std::move(json);
    bin_ = std::move(bin);
    if (efd_ >= 0) {
        uint64_t one = 1;
        ssize_t r = ::write(efd_, &one, sizeof one);
        (void)r;
    }
    cv_.notify_all();
}

bool PendingCall::wait(int timeout_ms) {
    // A reply usually comes within tens of microseconds. Yielding for a short
    // while before sleeping saves the wake-up of a sleeping thread, which on
    // small VMs costs as much as the whole round trip; sched_yield keeps the
    // CPU available to the broker thread and the agent if they share it.
    if (timeout_ms != 0 && !done_flag_.load(std::memory_order_acquire)) {
        auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
        while (!done_flag_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until)
            sched_yield();
    }
    std::unique_lock<std::mutex> lk(mu_);
    if (timeout_ms < 0) {
        cv_.wait(lk, [this] { return done_; });
        return true;
    }
    return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] { return done_; });
}

bool PendingCall::done() const {
    std::lock_guard<std::mutex> lk(mu_);
    return done_;
}

int PendingCall::fd() {
    std::lock_guard<std::mutex> lk(mu_);
    if (efd_ < 0) {
        efd_ = eventfd(done_ ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd_ < 0) return -1;
    }
    return efd_;
}

// ---------------------------------------------------------------- Router

std::shared_ptr<Router> Router::create(Options opts) {
    std::shared_ptr<Router> m(new Router(std::move(opts)));
    m->start();
    return m;
}

Router::Router(Options opts) : opts_(std::move(opts)), router_(loop_) {
    register_libssh2_backend();
    level_.store(opts_.log_level);
    log_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (log_efd_ < 0) throw Error(SPORE_EINTERNAL, std::string("eventfd: ") + std::strerror(errno));
    Limits lim;
    lim.max_message_size = opts_.max_message_size;
    router_.set_limits(lim);
    router_.set_identity(0, {}, "master");
}

Router::~Router() {
    close();
    if (log_efd_ >= 0) ::close(log_efd_);
}

void Router::start() {
    router_.set_log([this](int level, const std::string &msg) {
        if (level < level_.load()) return;
        push_log(LogRecord{0, "master", "spore.router", msg, level, now_seconds()});
    });
    router_.set_reply_handler([this](Message &&m, const MessageRouter::StreamPtr &) { on_reply(std::move(m)); });
    router_.set_handler(kHandleLog, Policy::kAny, [this](Message &&m, const MessageRouter::StreamPtr &) { on_log(std::move(m)); });
    router_.set_handler(kHandleAllocIds, Policy::kAny,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_alloc_ids(std::move(m)); });
    // The master runs nothing for anyone: no context has its authority.
    // Only routers attached to a listener may call it, for the listener's
    // own services (opening and finding contexts).
    router_.set_handler(kHandleCall, Policy::kParentAuthority, [this](Message &&m, const MessageRouter::StreamPtr &in) {
        if (listener_) return listener_->on_call(std::move(m), in);
        router_.send_dead(m.h, SPORE_EREFUSED, "the master does not accept calls");
    });
    router_.set_handler(kHandleSetLogLevel, Policy::kParentAuthority, [this](Message &&m, const MessageRouter::StreamPtr &in) {
        if (listener_) listener_->on_set_log_level(std::move(m), in);
    });
    // Attached: the listener reports contexts that went away.
    router_.set_handler(kHandlePeerGone, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_peer_gone(std::move(m)); });
    // Channel messages may come from any context; each is checked against
    // the channel's own peer.
    router_.set_handler(kHandleChanData, Policy::kAny,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { channels_.deliver_data(std::move(m)); });
    router_.set_handler(kHandleChanAck, Policy::kAny,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { channels_.deliver_ack(m); });
    // Python modules for the workers of direct children (each agent asks
    // its own parent, so only those ask here).
    router_.set_handler(kHandleModuleRequest, Policy::kImmediateChild,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_module_request(std::move(m)); });
    for (const auto &dir : opts_.module_path) modules_.add_path(dir);
    for (const auto &name : opts_.module_deny) modules_.deny(name);
    router_.set_keepalive_default(opts_.keepalive);
    router_.set_on_route_lost(
        [this](uint32_t id, int code, const std::string &reason) { on_route_lost(id, code, reason); });
    thread_ = std::thread([this] { loop_.run(); });
}

void Router::close() {
    std::lock_guard<std::mutex> lk(close_mu_);
    if (closed_) return;
    closed_ = true;
    closing_.store(true);
    // Callers learn at once that the router is going, before any context
    // disconnects under them.
    fail_all_pending(SPORE_ESHUTDOWN, "the router was freed");
    channels_.fail_all(ErrorInfo{SPORE_ESHUTDOWN, "the router was freed", "", "", ""});
    loop_.post([this] { shutdown_on_loop(); });
    if (thread_.joinable()) thread_.join();
    fail_all_pending(SPORE_ESHUTDOWN, "the router was freed");
    {
        // Connects served for attached routers end now (closing_ is set).
        std::lock_guard<std::mutex> lk2(shared_mu_);
        for (auto &kv : shared_) kv.second->cv.notify_all();
    }
    if (listener_) listener_->join_services();
    {
        std::lock_guard<std::mutex> lk2(ctx_mu_);
        for (auto &kv : contexts_) {
            kv.second->alive.store(false);
            std::lock_guard<std::mutex> l3(kv.second->mu);
            kv.second->cv.notify_all();
        }
    }
    std::lock_guard<std::mutex> l4(log_mu_);
    logs_closed_ = true;
    log_cv_.notify_all();
}

void Router::shutdown_on_loop() {
    // Graceful first: SHUTDOWN to each child; then SIGTERM and SIGKILL
    // through the reapers; the loop stops when every child is collected or
    // after a bounded time.
    // Connects in progress fail (their callers are waiting) and their
    // children go at once: they never got a stream to shut down through.
    if (listener_) listener_->stop("the listening router is shutting down");
    if (listener_stream_) listener_stream_->close("router closed");
    auto connecting = connecting_;
    for (auto &kv : connecting) kv.second->cancel("the router is shutting down");
    for (auto &kv : connecting) kv.second->kill_and_wait();
    connecting_.clear();
    router_.send_down(kHandleShutdown, "");
    children_.resume_all();
    shutdown_deadline_ = now_seconds() + 3.0;
    shutdown_check();
}

void Router::shutdown_check() {
    bool all_gone = children_.try_reap_all();
    double now = now_seconds();
    if (all_gone || now >= shutdown_deadline_) {
        children_.kill_all();
        for (auto &s : router_.child_streams()) s->close("router freed");
        loop_.stop();
        return;
    }
    if (now >= shutdown_deadline_ - 1.0) children_.terminate_all();
    shutdown_timer_ = std::make_unique<Timer>(loop_, 0.002, [this] { shutdown_check(); });
}

std::shared_ptr<AgentImage> Router::image() {
    std::lock_guard<std::mutex> lk(image_mu_);
    if (!image_) image_ = AgentImage::load(opts_.agent_path.empty() ? default_agent_path() : opts_.agent_path);
    return image_;
}

std::shared_ptr<ContextState> Router::find_context(uint32_t id) const {
    std::lock_guard<std::mutex> lk(ctx_mu_);
    auto it = contexts_.find(id);
    return it == contexts_.end() ? nullptr : it->second;
}

std::string Router::new_chain_id() {
    return std::to_string(getpid()) + "-" + std::to_string(next_chain_.fetch_add(1));
}

void Router::send_init(const std::shared_ptr<Stream> &s, const ContextState &ctx,
                       const std::vector<std::string> &python_path) {
    Message init;
    init.h.dst_id = ctx.id;
    init.h.handle = kHandleInit;
    InitMessage body = router_.child_init(ctx.id, ctx.name, level_.load());
    body.python_path = python_path;
    init.json = body.encode();
    s->send(init);
}


std::shared_ptr<ContextState> Router::connect(const std::string &method, Json options,
                                              const std::shared_ptr<ContextState> &via) {
    if (closing_.load()) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
    if (!options) options = json_object();
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(options.get(), "reuse");
    if (r && !cJSON_IsBool(r)) throw Error(SPORE_EINVAL, "option 'reuse' must be a boolean");
    bool reuse = r ? cJSON_IsTrue(r) : attached_;
    cJSON_DeleteItemFromObjectCaseSensitive(options.get(), "reuse");
    const MethodInfo *mi = find_method(method);
    if (!mi) throw Error(SPORE_EINVAL, "unknown connection method '" + method + "'");
    validate_options(*mi, options.get());
    keepalive_from_options(options.get(), opts_.keepalive);  // its range errors surface now
    if (mi->needs_agent && !via)
        throw Error(SPORE_EINVAL, "method '" + method + "' is only possible through another context (via)");
    if (via && !via->alive.load())
        throw Error(SPORE_EDISCONNECTED, "context " + via->name + " (via) is disconnected");
    if (attached_) return connect_through_listener(method, std::move(options), via, reuse);
    if (reuse) return connect_shared(method, std::move(options), via);
    return connect_fresh(method, std::move(options), via);
}

std::shared_ptr<ContextState> Router::connect_shared(const std::string &method, Json options,
                                                     const std::shared_ptr<ContextState> &via) {
    // The same context for the same request: the connect timeout does not
    // make a request different.
    Json keyed(cJSON_Duplicate(options.get(), 1));
    if (!keyed) throw std::bad_alloc();
    cJSON_DeleteItemFromObjectCaseSensitive(keyed.get(), "connect_timeout");
    std::string key = method + "\n" + std::to_string(via ? via->id : 0) + "\n" + json_canonical(keyed.get());
    std::shared_ptr<SharedConnect> entry;
    bool mine = false;
    {
        std::lock_guard<std::mutex> lk(shared_mu_);
        auto &slot = shared_[key];
        if (slot && (!slot->done || (slot->ctx && slot->ctx->alive.load()))) {
            entry = slot;
        } else {
            slot = std::make_shared<SharedConnect>();
            entry = slot;
            mine = true;
        }
    }
    if (!mine) {
        std::unique_lock<std::mutex> lk(entry->mu);
        while (!entry->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return entry->done || closing_.load(); })) {
        }
        if (!entry->done) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
        if (!entry->ctx) throw Error(entry->err);
        return entry->ctx;
    }
    std::shared_ptr<ContextState> ctx;
    ErrorInfo failure;
    try {
        ctx = connect_fresh(method, std::move(options), via);
    } catch (const Error &e) {
        failure = e.info();
    }
    {
        std::lock_guard<std::mutex> lk(entry->mu);
        entry->done = true;
        entry->ctx = ctx;
        entry->err = failure;
        entry->cv.notify_all();
    }
    if (!ctx) {
        {
            // A failed connect is not remembered: the next request tries again.
            std::lock_guard<std::mutex> lk(shared_mu_);
            auto it = shared_.find(key);
            if (it != shared_.end() && it->second == entry) shared_.erase(it);
        }
        throw Error(failure);
    }
    return ctx;
}

std::shared_ptr<ContextState> Router::connect_fresh(const std::string &method, Json options,
                                                    const std::shared_ptr<ContextState> &via) {
    // Checked by connect(): the method exists, its options are valid, via is given where needed.
    auto ctx = std::make_shared<ContextState>();
    ctx->id = next_id_.fetch_add(1);
    ctx->method = method;
    std::string base = json_str(options.get(), "name", method + "." + std::to_string(ctx->id));
    ctx->name = via ? via->name + "/" + base : base;
    ctx->via_id = via ? via->id : 0;
    if (via) {
        ctx->path = via->path;
        ctx->path.push_back(via->id);
    }
    int64_t timeout_ms = json_int(options.get(), "connect_timeout", 30000);
    if (timeout_ms <= 0) throw Error(SPORE_EINVAL, "connect_timeout must be positive");

    ConnectRequest rq;
    rq.method = method;
    rq.id = ctx->id;
    rq.name = ctx->name;
    rq.timeout_s = double(timeout_ms) / 1000.0;
    rq.agent_cache = json_bool(options.get(), "agent_cache", true);
    rq.agent_compress = parse_agent_compress(options.get());
    rq.remote_name = json_str(options.get(), "remote_name");
    rq.keepalive = keepalive_from_options(options.get(), opts_.keepalive);
    rq.python_path = option_words(options.get(), "python_path");
    rq.local_agent = opts_.agent_path.empty() ? default_agent_path() : opts_.agent_path;

    if (via) {
        rq.options = std::move(options);
        std::string text = rq.to_call_args();
        {
            std::lock_guard<std::mutex> lk(ctx_mu_);
            contexts_[ctx->id] = ctx;  // so log records from it are named at once
        }
        try {
            call(via, kConnectFunction, text.c_str(), nullptr, 0, "", int(timeout_ms) + 5000);
        } catch (Error &e) {
            {
                std::lock_guard<std::mutex> lk(ctx_mu_);
                contexts_.erase(ctx->id);
            }
            // Report the failure as this connect's, not as a call's.
            ErrorInfo info = e.info();
            if (info.code == SPORE_EREMOTE || info.code == SPORE_EBADARGS) info.code = SPORE_ECONNECT;
            info.function.clear();
            if (info.context.empty()) info.context = ctx->name;
            throw Error(info);
        }
        if (!router_.has_route(ctx->id)) {
            std::lock_guard<std::mutex> lk(ctx_mu_);
            contexts_.erase(ctx->id);
            throw Error(SPORE_EPROTO, "context " + via->name + " reported " + ctx->name + " up without a route");
        }
        return ctx;
    }

    auto w = std::make_shared<Completion>();
    auto self = shared_from_this();
    auto rq_shared = std::make_shared<ConnectRequest>(std::move(rq));
    rq_shared->options = std::move(options);
    loop_.post([this, self, w, ctx, rq_shared] {
        auto finish = [w](ErrorInfo e) { w->finish(std::move(e)); };
        if (closing_.load()) return finish(ErrorInfo{SPORE_ESHUTDOWN, "the router is shutting down", "", ctx->name, ""});
        uint32_t id = ctx->id;
        auto conn = std::make_shared<Connection>(
            loop_, std::move(*rq_shared), router_.limits(), [this] { return image(); },
            [this, ctx, finish, id](const ErrorInfo &err) {
                auto it = connecting_.find(id);
                if (it == connecting_.end()) return finish(err);  // start() failed synchronously
                auto conn = it->second;
                connecting_.erase(it);
                if (err.code != SPORE_OK) {
                    children_.discard(conn, 0.5);
                    return finish(err);
                }
                {
                    std::lock_guard<std::mutex> lk(ctx_mu_);
                    contexts_[id] = ctx;
                }
                children_.adopt(conn, [this, ctx](const std::string &line) {
                    if (SPORE_LOG_INFO >= level_.load())
                        push_log(LogRecord{ctx->id, ctx->name, "spore.agent.stderr", line, SPORE_LOG_INFO, now_seconds()});
                });
                send_init(conn->stream(), *ctx, conn->request().python_path);
                finish(ErrorInfo{});
            });
        conn->on_debug([this, ctx](const std::string &line) {
            if (SPORE_LOG_DEBUG >= level_.load())
                push_log(LogRecord{0, "master", "spore.connect", line, SPORE_LOG_DEBUG, now_seconds()});
        });
        connecting_[id] = conn;
        conn->start();
    });
    std::unique_lock<std::mutex> lk(w->mu);
    // Rechecked every 100 ms: a close racing with this connect may stop the
    // loop before the task above runs, and then nothing would notify.
    while (!w->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return w->done || closing_.load(); })) {
    }
    if (!w->done) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
    if (w->err.code != SPORE_OK) throw Error(w->err);
    return ctx;
}

std::shared_ptr<PendingCall> Router::call_async(const std::shared_ptr<ContextState> &ctx, const std::string &function,
                                                const char *args_json, const void *data, size_t len,
                                                const std::string &chain, bool no_reply) {
    if (!valid_function_name(function))
        throw Error(SPORE_EINVAL, "invalid function name '" + function.substr(0, 64) + "'");
    std::string args = "{}";
    if (args_json && *args_json) {
        std::string err;
        // The call body wraps the arguments in one more level.
        Json j = json_parse(args_json, kDefaultMaxJsonDepth - 1, &err);
        if (!j) throw Error(SPORE_EINVAL, "arguments of " + function + " are not valid JSON: " + err);
        if (!cJSON_IsObject(j.get())) throw Error(SPORE_EINVAL, "arguments of " + function + " must be a JSON object");
        args = args_json;
    }
    if (closing_.load()) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
    if (!ctx->alive.load()) throw Error(ErrorInfo{SPORE_EDISCONNECTED, "context " + ctx->name + " is disconnected", "", ctx->name, function});

    Message m;
    m.h.dst_id = ctx->id;
    m.h.src_id = m.h.auth_id = router_.id();
    m.h.handle = kHandleCall;
    m.json.reserve(function.size() + args.size() + chain.size() + 32);
    m.json += "{\"fn\":\"";
    m.json += function;
    m.json += "\",\"args\":";
    m.json += args;
    if (!chain.empty()) {
        m.json += ",\"chain\":\"";
        m.json += chain;
        m.json += "\"";
    }
    m.json += "}";
    // Every limit the receiving hops apply is checked here, so an oversized
    // call fails alone instead of making a hop drop the whole stream.
    uint32_t max_json = router_.limits().max_json_size;
    if (m.json.size() > max_json)
        throw Error(ErrorInfo{SPORE_ETOOBIG,
                              "arguments of " + function + " for " + ctx->name + " are " +
                                  std::to_string(m.json.size()) + " bytes of JSON, over the limit of " +
                                  std::to_string(max_json) + " (send bulk data as the call's binary part)",
                              "", ctx->name, function});
    if (data && len) {
        reserve_bulk(m.bin, len);
        m.bin.assign(static_cast<const char *>(data), len);
    }
    if (m.wire_size() > opts_.max_message_size)
        throw Error(ErrorInfo{SPORE_ETOOBIG,
                              "call of " + function + " is " + std::to_string(m.wire_size()) +
                                  " bytes, over the maximum message size of " + std::to_string(opts_.max_message_size),
                              "", ctx->name, function});

    std::shared_ptr<PendingCall> pc;
    if (!no_reply) {
        std::lock_guard<std::mutex> lk(pending_mu_);
        uint32_t h;
        do {
            h = next_handle_++;
            if (next_handle_ < kFirstDynamicHandle) next_handle_ = kFirstDynamicHandle;
        } while (pending_.count(h));
        pc = std::make_shared<PendingCall>(h, ctx->id, function, ctx->name, ctx->path);
        pending_[h] = pc;
        m.h.reply_to = h;
    }
    // Re-check after registering: a disconnect that ran before we were in
    // the table would otherwise leave this call waiting forever.
    int rc = ctx->alive.load() ? router_.send(m) : SPORE_EDISCONNECTED;
    if (rc != SPORE_OK) {
        if (pc) forget(*pc);
        if (rc == SPORE_ENOROUTE) rc = SPORE_EDISCONNECTED;
        if (closing_.load()) rc = SPORE_ESHUTDOWN;
        throw Error(ErrorInfo{rc, "cannot send " + function + " to " + ctx->name + ": " + error_code_text(rc), "",
                              ctx->name, function});
    }
    return pc;
}

void Router::forget(const PendingCall &pc) {
    std::lock_guard<std::mutex> lk(pending_mu_);
    auto it = pending_.find(pc.handle());
    if (it != pending_.end() && it->second.get() == &pc) pending_.erase(it);
}

ErrorInfo Router::wait_error(PendingCall &pc, int timeout_ms, bool *timed_out) {
    *timed_out = !pc.wait(timeout_ms);
    if (*timed_out) {
        return ErrorInfo{SPORE_ETIMEDOUT,
                         "call of " + pc.function() + " in " + pc.context() + " timed out after " +
                             std::to_string(timeout_ms) + " ms",
                         "", pc.context(), pc.function()};
    }
    return pc.error();
}

std::pair<std::string, std::string> Router::call(const std::shared_ptr<ContextState> &ctx, const std::string &function,
                                                 const char *args_json, const void *data, size_t len,
                                                 const std::string &chain, int timeout_ms) {
    auto pc = call_async(ctx, function, args_json, data, len, chain, false);
    bool timed_out = false;
    ErrorInfo e = wait_error(*pc, timeout_ms, &timed_out);
    if (timed_out) forget(*pc);
    if (e.code != SPORE_OK) throw Error(e);
    return {pc->take_json(), pc->take_bin()};
}

void Router::on_reply(Message &&m) {
    std::shared_ptr<PendingCall> pc;
    {
        std::lock_guard<std::mutex> lk(pending_mu_);
        auto it = pending_.find(m.h.handle);
        if (it == pending_.end()) return;  // abandoned or timed out
        // Only the context that was called may answer.
        if (!it->second->may_answer(m.h.src_id, (m.h.flags & kFlagError) != 0)) {
            if (SPORE_LOG_WARNING >= level_.load())
                push_log(LogRecord{0, "master", "spore.router",
                                   "dropped a reply to handle " + std::to_string(m.h.handle) + " from context " +
                                       std::to_string(m.h.src_id) + ", which was not called",
                                   SPORE_LOG_WARNING, now_seconds()});
            return;
        }
        pc = it->second;
        pending_.erase(it);
    }
    if (m.h.flags & kFlagError) {
        ErrorInfo e = MessageRouter::parse_error_json(m.json);
        if (e.context.empty()) e.context = pc->context();
        if (e.function.empty()) e.function = pc->function();
        // Every message names the context it came from.
        if (e.message.find(e.context) == std::string::npos) e.message = e.context + ": " + e.message;
        pc->complete(std::move(e), {}, {});
    } else {
        pc->complete(ErrorInfo{}, std::move(m.json), std::move(m.bin));
    }
}

int Router::send(Message &m) {
    m.h.src_id = m.h.auth_id = router_.id();
    return router_.send(m);
}

void Router::on_route_lost(uint32_t id, int code, const std::string &reason) {
    modules_sent_.erase(id);
    if (listener_ && listener_->on_route_lost(id, reason)) return;  // an attached router went away
    {
        std::lock_guard<std::mutex> lk(shared_mu_);
        for (auto it = shared_.begin(); it != shared_.end();) {
            if (it->second->done && it->second->ctx && it->second->ctx->id == id) it = shared_.erase(it);
            else ++it;
        }
    }
    bool unresponsive = code == SPORE_EUNRESPONSIVE;
    channels_.fail_peer(id, ErrorInfo{code, (unresponsive ? "context stopped responding: " : "context disconnected: ") + reason,
                                      "", "", ""});
    std::shared_ptr<ContextState> ctx;
    {
        std::lock_guard<std::mutex> lk(ctx_mu_);
        auto it = contexts_.find(id);
        if (it != contexts_.end()) {
            ctx = it->second;
            contexts_.erase(it);
        }
    }
    if (ctx) {
        ctx->alive.store(false);
        std::lock_guard<std::mutex> lk(ctx->mu);
        ctx->lost_reason = reason;
        ctx->cv.notify_all();
    }
    std::vector<std::shared_ptr<PendingCall>> failed;
    {
        std::lock_guard<std::mutex> lk(pending_mu_);
        for (auto it = pending_.begin(); it != pending_.end();) {
            if (it->second->target() == id) {
                failed.push_back(it->second);
                it = pending_.erase(it);
            } else {
                ++it;
            }
        }
    }
    std::string name = ctx ? ctx->name : "context " + std::to_string(id);
    if (closing_.load()) {
        for (auto &pc : failed)
            pc->complete(ErrorInfo{SPORE_ESHUTDOWN, pc->function() + " in " + name + ": the router was freed", "", name,
                                   pc->function()},
                         {}, {});
        return;
    }
    const char *what = unresponsive ? " stopped responding during " : " disconnected during ";
    for (auto &pc : failed)
        pc->complete(ErrorInfo{code, name + what + pc->function() + " (" + reason + ")", "", name, pc->function()}, {}, {});
}

void Router::fail_all_pending(int code, const std::string &why) {
    std::unordered_map<uint32_t, std::shared_ptr<PendingCall>> all;
    {
        std::lock_guard<std::mutex> lk(pending_mu_);
        all.swap(pending_);
    }
    for (auto &kv : all)
        kv.second->complete(ErrorInfo{code, kv.second->function() + " in " + kv.second->context() + ": " + why, "",
                                      kv.second->context(), kv.second->function()},
                            {}, {});
}

void Router::on_log(Message &&m) {
    std::string err;
    Json j = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    if (!j || !cJSON_IsObject(j.get())) return;
    LogRecord r;
    r.context_id = m.h.src_id;
    auto ctx = find_context(m.h.src_id);
    r.context = ctx ? ctx->name : json_str(j.get(), "name", "context " + std::to_string(m.h.src_id));
    r.logger = json_str(j.get(), "logger", "remote");
    r.level = int(json_int(j.get(), "level", SPORE_LOG_INFO));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j.get(), "time");
    r.time = cJSON_IsNumber(t) ? t->valuedouble : now_seconds();
    r.message = json_str(j.get(), "msg");
    if (listener_) listener_->forward_log(m, r.level);
    if (r.level < level_.load()) return;
    push_log(std::move(r));
}

void Router::on_module_request(Message &&m) {
    auto req = ModuleRequest::decode(m.json);
    uint32_t child = m.h.src_id;
    if (!req) {
        push_log(LogRecord{0, "master", "spore.router", "dropped a malformed module request from context " +
                           std::to_string(child), SPORE_LOG_WARNING, now_seconds()});
        return;
    }
    ModuleAnswer answer;
    std::vector<std::string> names;
    for (const auto &n : req->names) {
        if (n == kWorkerSourceName) {
            ModuleEntry e;
            e.name = n;
            e.found = true;
            e.file = "spore_worker.py";
            e.source = kPythonWorkerSource;
            e.hash = sha256_hex(e.source);
            answer.modules.push_back(std::move(e));
            worker_sources_sent_.fetch_add(1);
        } else {
            names.push_back(n);
        }
    }
    if (!names.empty()) {
        // Room for what the asked modules import, within the message limit.
        size_t budget = std::min<uint64_t>(8u << 20, router_.limits().max_message_size / 4);
        for (auto &e : modules_.answer(names, modules_sent_[child], budget)) answer.modules.push_back(std::move(e));
    }
    Message r;
    r.h.dst_id = child;
    r.h.handle = kHandleModuleAnswer;
    answer.encode(r.json, r.bin);
    router_.send(r);
}

void Router::on_alloc_ids(Message &&m) {
    Message r;
    r.h.dst_id = m.h.src_id;
    r.h.handle = m.h.reply_to;
    if (!r.h.handle) return;
    uint32_t start = next_id_block_;
    next_id_block_ += 1000;
    r.json = "{\"start\":" + std::to_string(start) + ",\"end\":" + std::to_string(start + 1000) + "}";
    router_.send(r);
}

namespace {

// What a queued record costs, counted for the queue's byte bound.
size_t queued_size(const LogRecord &r) { return sizeof r + r.context.size() + r.logger.size() + r.message.size(); }

// Cuts an over-long message at a UTF-8 character boundary and says so.
void truncate_log_message(std::string &msg) {
    if (msg.size() <= kMaxLogMessageBytes) return;
    size_t cut = kMaxLogMessageBytes;
    while (cut > 0 && (static_cast<unsigned char>(msg[cut]) & 0xC0) == 0x80) --cut;
    size_t dropped = msg.size() - cut;
    // A fresh string: resize() would keep the whole capacity queued.
    msg = msg.substr(0, cut) + " [... truncated by spore: " + std::to_string(dropped) + " more bytes]";
}

}  // namespace

void Router::push_log(LogRecord rec) {
    truncate_log_message(rec.message);
    size_t size = queued_size(rec);
    std::lock_guard<std::mutex> lk(log_mu_);
    // Bounded in records and in bytes: the oldest records make room.
    while (!logs_.empty() &&
           (logs_.size() >= opts_.log_queue_size || log_bytes_ + size > opts_.log_queue_bytes)) {
        log_bytes_ -= queued_size(logs_.front());
        logs_.pop_front();
        dropped_logs_.fetch_add(1);
    }
    bool was_empty = logs_.empty();
    log_bytes_ += size;
    logs_.push_back(std::move(rec));
    if (was_empty) {
        uint64_t one = 1;
        ssize_t r = ::write(log_efd_, &one, sizeof one);
        (void)r;
    }
    log_cv_.notify_one();
}

int Router::next_log(LogRecord &out, int timeout_ms) {
    std::unique_lock<std::mutex> lk(log_mu_);
    auto ready = [this] { return !logs_.empty() || logs_closed_; };
    if (timeout_ms < 0) log_cv_.wait(lk, ready);
    else log_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready);
    if (logs_.empty()) return logs_closed_ ? SPORE_ESHUTDOWN : SPORE_ETIMEDOUT;
    out = std::move(logs_.front());
    log_bytes_ -= queued_size(out);
    logs_.pop_front();
    if (logs_.empty()) {
        uint64_t v;
        ssize_t r = ::read(log_efd_, &v, sizeof v);
        (void)r;
    }
    return SPORE_OK;
}

void Router::set_log_level(int level) {
    level_.store(level);
    if (closing_.load()) return;
    if (attached_) {
        // The listener filters what it passes on; the contexts keep its level.
        Message m;
        m.h.dst_id = 0;
        m.h.handle = kHandleSetLogLevel;
        m.json = "{\"level\":" + std::to_string(level) + "}";
        send(m);
        return;
    }
    // Sent from the calling thread, so it reaches each context before any
    // call this thread makes afterwards.
    router_.send_down(kHandleSetLogLevel, "{\"level\":" + std::to_string(level) + "}");
}

int Router::shutdown_context(const std::shared_ptr<ContextState> &ctx, int timeout_ms) {
    if (ctx->alive.load() && !closing_.load()) {
        Message m;
        m.h.dst_id = ctx->id;
        m.h.handle = kHandleShutdown;
        send(m);
    }
    std::unique_lock<std::mutex> lk(ctx->mu);
    auto gone = [&] { return !ctx->alive.load(); };
    if (timeout_ms < 0) ctx->cv.wait(lk, gone);
    else if (!ctx->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), gone)) return SPORE_ETIMEDOUT;
    return SPORE_OK;
}

// ------------------------------------------------------- shared routers

void Router::listen(const std::string &path) {
    if (closing_.load()) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
    if (attached_) throw Error(SPORE_EINVAL, "an attached router cannot listen: its listener can");
    if (listening_.exchange(true)) throw Error(SPORE_EINVAL, "the router listens already");
    std::shared_ptr<Listener> l;
    try {
        l = std::make_shared<Listener>(*this, bind_listen_socket(path));
    } catch (...) {
        listening_.store(false);
        throw;
    }
    // Connections queue in the socket until the loop accepts them.
    loop_.post([this, l] {
        if (closing_.load()) return l->stop("the router is shutting down");
        listener_ = l;
        listener_->start();
    });
}

std::shared_ptr<Router> Router::attach(const std::string &path, Options opts, int timeout_ms) {
    UniqueFd fd = connect_listen_socket(path);
    std::shared_ptr<Router> m(new Router(std::move(opts)));
    m->attached_ = true;
    m->attach_path_ = path;
    m->listener_ctx_ = std::make_shared<ContextState>();
    m->listener_ctx_->id = 0;
    m->listener_ctx_->name = "router at " + path;
    m->start();
    try {
        m->handshake(std::move(fd), path, timeout_ms);
    } catch (...) {
        m->close();
        throw;
    }
    return m;
}

void Router::handshake(UniqueFd fd, const std::string &path, int timeout_ms) {
    auto st = std::make_shared<Completion>();
    auto finish = [st](ErrorInfo e) { st->finish(std::move(e)); };
    auto s = std::make_shared<Stream>(loop_, fd.get(), fd.get(), "listener " + path, router_.limits());
    fd.release();
    listener_stream_ = s;
    loop_.post([this, s, finish, path] {
        router_.set_parent(s, false);
        s->on_message([this, finish, path](Stream &st, Message &&m) {
            if (attach_ready_) return router_.dispatch(std::move(m), st.shared_from_this());
            // The listener's answer to our hello names us.
            std::string err;
            Json j = m.h.handle == kHandleInit ? json_parse(m.json, kDefaultMaxJsonDepth, &err) : nullptr;
            if (j && (m.h.flags & kFlagError)) {
                // Reported before the close, whose own report would win.
                finish(MessageRouter::parse_error_json(m.json));
                return st.close("refused");
            }
            auto id = j ? json_context_id(j.get()) : std::nullopt;
            if (!id || json_int(j.get(), "protocol", 0) != kSharedProtocol) {
                finish(ErrorInfo{SPORE_EPROTO, "the router at " + path + " sent a malformed answer", "", "", ""});
                return st.close("malformed answer to the hello");
            }
            Limits lim = router_.limits();
            uint64_t max = uint64_t(json_int(j.get(), "max_message_size", int64_t(lim.max_message_size)));
            if (max >= 4096 && max < lim.max_message_size) lim.max_message_size = max;
            router_.set_limits(lim);
            st.set_limits(lim);
            router_.set_identity(*id, {0}, json_str(j.get(), "name", "attached"));
            st.set_remote_id(0);
            attach_ready_ = true;
            finish(ErrorInfo{});
        });
        s->on_close([this, finish, path](Stream &, const std::string &reason) {
            if (attach_ready_) return on_listener_lost(reason);
            finish(ErrorInfo{SPORE_ECONNECT, "the router at " + path + " closed the connection: " + reason, "", "", ""});
        });
        s->start(false);
        Message hello;
        hello.h.handle = kHandleInit;
        Json j = json_object();
        cJSON_AddNumberToObject(j.get(), "protocol", kSharedProtocol);
        cJSON_AddStringToObject(j.get(), "version", SPORE_VERSION_STRING);
        cJSON_AddNumberToObject(j.get(), "pid", ::getpid());
        cJSON_AddNumberToObject(j.get(), "log_level", level_.load());
        hello.json = json_print(j.get());
        s->send(hello);
    });
    std::unique_lock<std::mutex> lk(st->mu);
    if (!st->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return st->done; }))
        throw Error(SPORE_ETIMEDOUT,
                    "the router at " + path + " did not answer within " + std::to_string(timeout_ms) + " ms");
    if (st->err.code != SPORE_OK) {
        if (st->err.message.find(path) == std::string::npos) st->err.message = "router at " + path + ": " + st->err.message;
        throw Error(st->err);
    }
}

void Router::on_listener_lost(const std::string &reason) {
    // Every context was the listener's: all are out of reach now.
    std::string why = "the router at " + attach_path_ + " went away (" + reason + ")";
    std::vector<uint32_t> ids;
    {
        std::lock_guard<std::mutex> lk(ctx_mu_);
        for (auto &kv : contexts_) ids.push_back(kv.first);
    }
    for (uint32_t id : ids) on_route_lost(id, SPORE_EDISCONNECTED, why);
    int code = closing_.load() ? SPORE_ESHUTDOWN : SPORE_EDISCONNECTED;
    fail_all_pending(code, closing_.load() ? "the router was freed" : why);
    channels_.fail_all(ErrorInfo{code, why, "", "", ""});
    if (!closing_.load() && SPORE_LOG_WARNING >= level_.load())
        push_log(LogRecord{0, "master", "spore.attach", why, SPORE_LOG_WARNING, now_seconds()});
}

void Router::on_peer_gone(Message &&m) {
    if (!attached_) return;
    if (auto gone = LossNotice::decode(m.json)) on_route_lost(gone->id, SPORE_EDISCONNECTED, gone->reason);
}

std::shared_ptr<ContextState> Router::adopt_context(const std::string &info_json) {
    std::string err;
    Json j = json_parse(info_json, kDefaultMaxJsonDepth, &err);
    auto id = j ? json_context_id(j.get()) : std::nullopt;
    if (!id)
        throw Error(SPORE_EPROTO, "the router at " + attach_path_ + " described a context badly: " + info_json.substr(0, 200));
    std::lock_guard<std::mutex> lk(ctx_mu_);
    auto it = contexts_.find(*id);
    if (it != contexts_.end()) return it->second;  // already known here: one state, one alive flag
    auto c = std::make_shared<ContextState>();
    c->id = *id;
    c->name = json_str(j.get(), "name", "context " + std::to_string(*id));
    c->method = json_str(j.get(), "method");
    c->via_id = uint32_t(json_int(j.get(), "via", 0));
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j.get(), "path")) {
        if (cJSON_IsNumber(e)) c->path.push_back(uint32_t(e->valuedouble));
    }
    contexts_[c->id] = c;
    return c;
}

std::shared_ptr<ContextState> Router::connect_through_listener(const std::string &method, Json options,
                                                               const std::shared_ptr<ContextState> &via, bool reuse) {
    int64_t timeout_ms = json_int(options.get(), "connect_timeout", 30000);
    if (timeout_ms <= 0) throw Error(SPORE_EINVAL, "connect_timeout must be positive");
    cJSON_AddBoolToObject(options.get(), "reuse", reuse);
    Json args = json_object();
    cJSON_AddStringToObject(args.get(), "method", method.c_str());
    cJSON_AddNumberToObject(args.get(), "via", via ? via->id : 0);
    cJSON_AddItemToObject(args.get(), "options", options.release());
    std::string text = json_print(args.get());
    std::string info;
    try {
        info = call(listener_ctx_, "spore.listener.connect", text.c_str(), nullptr, 0, "",
                    int(std::min<int64_t>(timeout_ms + 10000, INT32_MAX)))
                   .first;
    } catch (Error &e) {
        ErrorInfo i = e.info();
        if (i.function == "spore.listener.connect") i.function.clear();
        throw Error(i);
    }
    return adopt_context(info);
}

std::shared_ptr<ContextState> Router::find_context_named(const std::string &name) {
    if (closing_.load()) throw Error(SPORE_ESHUTDOWN, "the router is shutting down");
    if (attached_) {
        Json args = json_object();
        cJSON_AddStringToObject(args.get(), "name", name.c_str());
        std::string text = json_print(args.get());
        try {
            return adopt_context(call(listener_ctx_, "spore.listener.find", text.c_str(), nullptr, 0, "", 30000).first);
        } catch (const Error &e) {
            if (e.info().code == SPORE_ENOENT) return nullptr;
            throw;
        }
    }
    // Names need not be unique: the oldest live one wins.
    std::lock_guard<std::mutex> lk(ctx_mu_);
    std::shared_ptr<ContextState> best;
    for (auto &kv : contexts_)
        if (kv.second->name == name && kv.second->alive.load() && router_.has_route(kv.first) &&
            (!best || kv.first < best->id))
            best = kv.second;
    return best;
}

}  // namespace spore
