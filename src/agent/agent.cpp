#include "agent/agent.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/builtins_util.h"
#include "core/messages.h"
#include "spore/spore.h"

namespace spore::agent {
namespace {

constexpr size_t kLargeMessage = 256 * 1024;

double now_seconds() {
    timeval tv;
    gettimeofday(&tv, nullptr);
    return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

bool write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= size_t(w);
    }
    return true;
}

}  // namespace

Agent::Agent() : router_(loop_) {}

Agent::~Agent() = default;

std::string Agent::context_name() const {
    std::lock_guard<std::mutex> lk(state_mu_);
    return name_;
}

int Agent::begin_spawn(uint32_t owner) {
    std::lock_guard<std::mutex> lk(procs_mu_);
    if (no_more_spawns_) return SPORE_ESHUTDOWN;
    if (gone_callers_.count(owner)) return SPORE_EDISCONNECTED;
    ++spawning_;
    return SPORE_OK;
}

bool Agent::register_process(pid_t pid, uint32_t owner) {
    std::lock_guard<std::mutex> lk(procs_mu_);
    if (pid > 0) procs_[pid] = owner;
    if (--spawning_ == 0) spawns_done_.notify_all();
    return !gone_callers_.count(owner);
}

void Agent::unregister_process(pid_t pid) {
    std::lock_guard<std::mutex> lk(procs_mu_);
    procs_.erase(pid);
}

void Agent::log(int level, std::string_view logger, std::string_view message) {
    log_to(0, level, logger, message);
}

void Agent::log_to(uint32_t dst, int level, std::string_view logger, std::string_view message) {
    if (level < level_.load()) return;
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleLog;
    Json j = json_object();
    {
        std::lock_guard<std::mutex> lk(state_mu_);
        cJSON_AddStringToObject(j.get(), "name", name_.c_str());
    }
    cJSON_AddStringToObject(j.get(), "logger", std::string(logger).c_str());
    cJSON_AddNumberToObject(j.get(), "level", level);
    cJSON_AddNumberToObject(j.get(), "time", now_seconds());
    cJSON_AddStringToObject(j.get(), "msg", std::string(message).c_str());
    m.json = json_print(j.get());
    {
        // Records made before the parent told us who we are wait (corked).
        std::lock_guard<std::mutex> lk(state_mu_);
        if (!initialized_) {
            if (pre_init_logs_.size() < 1000) pre_init_logs_.push_back(std::move(m));
            return;
        }
    }
    m.h.src_id = m.h.auth_id = router_.id();
    router_.send(m);
}

std::shared_ptr<AgentImage> Agent::self_image() {
    std::lock_guard<std::mutex> lk(image_mu_);
    // /proc/self/exe still reads the image when its file has been unlinked.
    if (!image_) image_ = AgentImage::load("/proc/self/exe");
    return image_;
}

int Agent::run(int parent_in, int parent_out) {
    // Hello first: the parent sends nothing framed before it.
    std::string hello = std::string("\n") + kHelloMarker + " " + agent_version() + "\n";
    if (!write_all(parent_out, hello.data(), hello.size())) return 1;

    parent_ = std::make_shared<Stream>(loop_, parent_in, parent_out, "parent", Limits{});
    parent_->set_toward_parent(true);
    parent_->on_message([this](Stream &, Message &&m) {
        if (!initialized_) return on_init(std::move(m));
    });
    parent_->on_close([this](Stream &, const std::string &reason) { begin_exit("parent stream closed: " + reason); });
    parent_->start(false);
    setup_output_capture();

    router_.set_log([this](int level, const std::string &msg) { log(level, "spore.router", msg); });
    router_.set_handler(kHandleCall, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_call(std::move(m)); });
    router_.set_handler(kHandleShutdown, Policy::kParentAuthority,
                        [this](Message &&, const MessageRouter::StreamPtr &) { on_shutdown_request(); });
    router_.set_handler(kHandleSetLogLevel, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_set_log_level(std::move(m)); });
    // File data and acknowledgements: only from those who may call us.
    router_.set_handler(kHandleChanData, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_chan_data(std::move(m)); });
    router_.set_handler(kHandleChanAck, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { channels_.deliver_ack(m); });
    router_.set_handler(kHandlePeerGone, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_peer_gone(std::move(m)); });
    router_.set_handler(kHandleModuleRequest, Policy::kImmediateChild,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_module_request(std::move(m)); });
    router_.set_handler(kHandleModuleAnswer, Policy::kParentAuthority,
                        [this](Message &&m, const MessageRouter::StreamPtr &) { on_module_answer(std::move(m)); });
    router_.set_on_parent_lost([this](const std::string &reason) { begin_exit("parent stream closed: " + reason); });
    children_.on_all_reaped([this] {
        if (shutting_down_) loop_.stop();
    });

    // SIGTERM (from a parent that lost patience) still cleans up: children
    // and process groups are killed before the agent leaves.
    EventPtr term(evsignal_new(
        loop_.base(), SIGTERM, [](evutil_socket_t, short, void *arg) { static_cast<Agent *>(arg)->begin_exit("SIGTERM"); },
        this));
    if (term) event_add(term.get(), nullptr);
    arm_trim();
    loop_.run();
    final_cleanup();
    return 0;
}

void Agent::arm_trim() {
    trim_timer_ = std::make_unique<Timer>(loop_, 1.0, [this] {
        if (heap_dirty_.exchange(false)) malloc_trim(0);
        arm_trim();
    });
}

void Agent::on_init(Message &&m) {
    if (m.h.handle != kHandleInit) {
        parent_->close("first message from the parent was not init");
        return;
    }
    std::string why;
    auto cfg = InitMessage::decode(m.json, &why);
    if (!cfg) {
        parent_->close(why);
        return;
    }
    uint32_t id = cfg->id;
    const std::string &name = cfg->name;
    Limits lim;
    lim.max_message_size = cfg->max_message_size;
    router_.set_limits(lim);
    parent_->set_limits(lim);
    router_.set_identity(id, cfg->parent_ids, name);
    router_.set_unidirectional(cfg->unidirectional);
    router_.set_keepalive_default(cfg->liveness);
    parent_->set_remote_id(cfg->parent_ids.front());
    level_.store(cfg->log_level);
    python_ = std::make_unique<PythonWorker>(loop_, *this, modules_);
    python_->set_python_path(cfg->python_path);
    python_->set_limits(lim);
    python_->set_log_level(cfg->log_level);
    std::vector<Message> corked;
    {
        std::lock_guard<std::mutex> lk(state_mu_);
        name_ = name;
        initialized_ = true;
        corked.swap(pre_init_logs_);
    }
    router_.set_parent(parent_);
    // set_parent replaced on_close; keep the exit behaviour.
    parent_->on_close([this](Stream &, const std::string &reason) { begin_exit("parent stream closed: " + reason); });
    for (auto &c : corked) {
        c.h.src_id = c.h.auth_id = router_.id();
        router_.send(c);
    }
    log(SPORE_LOG_DEBUG, "spore.agent", "agent " + name + " (id " + std::to_string(id) + ", pid " +
                                             std::to_string(getpid()) + ") ready");
}

void Agent::on_call(Message &&m) {
    if (shutting_down_) {
        router_.send_dead(m.h, SPORE_ESHUTDOWN, "context " + context_name() + " is shutting down");
        return;
    }
    std::string err;
    Json body = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    Job job;
    if (body && cJSON_IsObject(body.get())) {
        job.fn = json_str(body.get(), "fn");
        job.chain = json_str(body.get(), "chain");
        cJSON *args = cJSON_DetachItemFromObjectCaseSensitive(body.get(), "args");
        job.args.reset(args ? args : cJSON_CreateObject());
    }
    job.msg = std::move(m);
    if (job.msg.bin.size() >= kLargeMessage) heap_dirty_.store(true);
    if (!body || job.fn.empty() || !cJSON_IsObject(job.args.get())) {
        ErrorInfo e{SPORE_EPROTO, "malformed call message: " + (err.empty() ? "missing fn or args" : err), "",
                    context_name(), job.fn};
        return finish_job(job, CallReply{}, &e);
    }
    if (const Builtin *b = find_builtin(job.fn); b && b->prepare) {
        // Its channels must exist before the caller's next message on them,
        // even while the call waits for a worker or for earlier steps of
        // its chain.
        ErrorInfo e = run_builtin_step(job, [&](const CallRequest &req) { job.prepared = b->prepare(req, *this); });
        if (e.code != SPORE_OK) return finish_job(job, CallReply{}, &e);
    }
    if (!job.chain.empty()) {
        auto existing = chains_.find(job.chain);
        if (job.fn == "spore.forget_chain") {
            // Forgetting is a step like the others: steps queued before it
            // still run (or fail) first.
            if (existing != chains_.end() && existing->second.busy) existing->second.queue.push_back(std::move(job));
            else if (existing != chains_.end()) chains_.erase(existing);
            return;
        }
        Chain &c = chains_[job.chain];
        if (c.error) {
            ErrorInfo e = *c.error;
            return finish_job(job, CallReply{}, &e);
        }
        if (c.busy) {
            c.queue.push_back(std::move(job));
            return;
        }
        c.busy = true;
    }
    start_job(std::move(job));
}

ErrorInfo Agent::run_builtin_step(const Job &job, const std::function<void(const CallRequest &)> &step) {
    ErrorInfo e;
    try {
        step(CallRequest{job.fn, job.args.get(), job.msg.bin, job.msg.h.src_id, job.prepared});
    } catch (const Error &ex) {
        e = ex.info();
    } catch (const std::bad_alloc &) {
        e = ErrorInfo{SPORE_EREMOTE, "out of memory", "MemoryError", "", ""};
    } catch (const std::exception &ex) {
        e = ErrorInfo{SPORE_EREMOTE, ex.what(), "RuntimeError", "", ""};
    }
    if (e.code != SPORE_OK) {
        e.context = context_name();
        e.function = job.fn;
    }
    return e;
}

void Agent::start_job(Job &&job) {
    if (job.fn == kConnectFunction) return internal_connect(std::move(job));
    if (job.fn.rfind(kPythonPrefix, 0) == 0) return start_python_job(std::move(job));
    const Builtin *b = find_builtin(job.fn);
    if (!b) {
        ErrorInfo e{SPORE_ENOFUNC, "unknown function '" + job.fn + "' in context " + context_name(), "",
                    context_name(), job.fn};
        return finish_job(job, CallReply{}, &e);
    }
    auto run = [this, b](const Job &j, CallReply &out, ErrorInfo &e) {
        e = run_builtin_step(j, [&](const CallRequest &req) { b->fn(req, out, *this); });
    };
    if (!b->blocking) {
        CallReply out;
        ErrorInfo e;
        run(job, out, e);
        return finish_job(job, std::move(out), e.code ? &e : nullptr);
    }
    auto shared = std::make_shared<Job>(std::move(job));
    pool_.submit([this, shared, run] {
        CallReply out;
        ErrorInfo e;
        run(*shared, out, e);
        shared->prepared.reset();  // its channels go before the reply leaves
        if (shared->chain.empty()) {
            // Replies leave from the worker: no extra hop through the loop.
            reply(shared->msg, std::move(out), e.code ? &e : nullptr);
            return;
        }
        auto result = std::make_shared<CallReply>(std::move(out));
        loop_.post([this, shared, result, e] { finish_job(*shared, std::move(*result), e.code ? &e : nullptr); });
    });
}

void Agent::finish_job(const Job &job, CallReply &&r, const ErrorInfo *err) {
    reply(job.msg, std::move(r), err);
    if (!job.chain.empty()) chain_step_done(job.chain, err);
}

void Agent::chain_step_done(const std::string &chain, const ErrorInfo *err) {
    auto it = chains_.find(chain);
    if (it == chains_.end()) return;
    Chain &c = it->second;
    if (err && !c.error) c.error = *err;
    // Later steps fail at once with the first error, in order.
    while (!c.queue.empty()) {
        Job next = std::move(c.queue.front());
        c.queue.pop_front();
        if (next.fn == "spore.forget_chain") {
            chains_.erase(it);  // later steps of a forgotten chain start afresh
            return;
        }
        if (c.error) {
            ErrorInfo e = *c.error;
            reply(next.msg, CallReply{}, &e);
            continue;
        }
        start_job(std::move(next));
        return;  // busy stays true until this step completes
    }
    c.busy = false;
}

void Agent::reply(const Message &req, CallReply &&r, const ErrorInfo *err) {
    // Once shutting down, calls in flight end as "disconnected" at the
    // caller, not with the result of a process the shutdown killed.
    if (shutting_down_.load()) return;
    if (req.h.reply_to == 0) {
        if (err) log(SPORE_LOG_WARNING, "spore.agent", "no-reply call " + err->function + " failed: " + err->message);
        return;
    }
    Message m;
    m.h.dst_id = req.h.src_id;
    m.h.src_id = m.h.auth_id = router_.id();
    m.h.handle = req.h.reply_to;
    if (err) {
        m.h.flags = kFlagError;
        m.json = MessageRouter::error_json(*err);
    } else {
        m.json = !r.json_text.empty() ? std::move(r.json_text) : r.result ? json_print(r.result.get()) : "null";
        m.bin = std::move(r.data);
    }
    if (m.bin.size() >= kLargeMessage) heap_dirty_.store(true);
    int rc = router_.send(m);
    if (rc == SPORE_ETOOBIG) {
        ErrorInfo e{SPORE_ETOOBIG,
                    "reply of " + std::to_string(m.wire_size()) + " bytes exceeds the maximum message size of " +
                        std::to_string(router_.limits().max_message_size),
                    "", context_name(), err ? err->function : ""};
        Message d;
        d.h = m.h;
        d.h.flags = kFlagError;
        d.json = MessageRouter::error_json(e);
        router_.send(d);
    }
}

void Agent::internal_connect(Job &&job) {
    ConnectRequest req;
    try {
        req = ConnectRequest::from_call_args(job.args.get(), router_.keepalive_default());
    } catch (const Error &err) {
        ErrorInfo e{err.info().code, err.what(), "", context_name(), job.fn};
        return finish_job(job, CallReply{}, &e);
    }
    req.in_agent = true;
    req.local_agent = "/proc/" + std::to_string(getpid()) + "/exe";
    if (router_.has_route(req.id)) {
        ErrorInfo e{SPORE_EBADARGS, "context id " + std::to_string(req.id) + " is already in use", "", context_name(),
                    job.fn};
        return finish_job(job, CallReply{}, &e);
    }
    auto shared_job = std::make_shared<Job>(std::move(job));
    auto conn_holder = std::make_shared<std::shared_ptr<Connection>>();
    auto conn = std::make_shared<Connection>(
        loop_, std::move(req), router_.limits(), [this] { return self_image(); },
        [this, shared_job, conn_holder](const ErrorInfo &err) {
            auto conn = *conn_holder;
            conn_holder->reset();
            if (err.code != SPORE_OK) {
                ErrorInfo e = err;
                e.function = shared_job->fn;
                children_.discard(conn, 1.0);
                finish_job(*shared_job, CallReply{}, &e);
                return;
            }
            const auto &rq = conn->request();
            auto stream = conn->stream();
            // Route first, announce upward, then configure the child: every
            // ancestor learns the route before any reply from behind it.
            children_.adopt(conn, [this](const std::string &line) { log(SPORE_LOG_INFO, "spore.agent.stderr", line); });
            router_.send_up(kHandleAddRoute, RouteAdded{rq.id, rq.name}.encode());

            Message init;
            init.h.dst_id = rq.id;
            init.h.src_id = init.h.auth_id = router_.id();
            init.h.handle = kHandleInit;
            InitMessage body = router_.child_init(rq.id, rq.name, level_.load());
            body.python_path = rq.python_path;
            init.json = body.encode();
            stream->send(init);

            CallReply out;
            out.result = json_object();
            cJSON_AddNumberToObject(out.result.get(), "id", rq.id);
            cJSON_AddStringToObject(out.result.get(), "name", rq.name.c_str());
            cJSON_AddNumberToObject(out.result.get(), "pid", conn->pid());
            cJSON_AddNumberToObject(out.result.get(), "image_bytes", double(conn->image_bytes_sent()));
            finish_job(*shared_job, std::move(out), nullptr);
        });
    conn->on_debug([this](const std::string &line) { log(SPORE_LOG_DEBUG, "spore.connect", line); });
    *conn_holder = conn;
    conn->start();
}

int Agent::send(Message &m) {
    m.h.src_id = m.h.auth_id = router_.id();
    return router_.send(m);
}

void Agent::on_chan_data(Message &&m) {
    uint32_t src = m.h.src_id;
    if (!channels_.deliver_data(std::move(m)))
        log(SPORE_LOG_WARNING, "spore.agent", "dropped a malformed channel message from context " + std::to_string(src));
}

void Agent::on_peer_gone(Message &&m) {
    // An attached router that made calls here went away: what it started
    // must not outlive it. Its transfers and process streams fail (their
    // workers kill the processes), processes of its other calls get SIGTERM
    // now and SIGKILL if still there 2 s later, and the news goes down the
    // tree to every context it may have used.
    auto notice = LossNotice::decode(m.json);
    if (!notice) return;
    uint32_t gone = notice->id;
    const std::string &reason = notice->reason;
    channels_.fail_peer(gone, ErrorInfo{SPORE_EDISCONNECTED, "the caller (context " + std::to_string(gone) +
                                                                 ") went away: " + reason,
                                        "", context_name(), ""});
    std::vector<pid_t> pids;
    {
        std::lock_guard<std::mutex> lk(procs_mu_);
        gone_callers_.insert(gone);  // what it still has starting is killed as it starts
        for (auto &kv : procs_)
            if (kv.second == gone) pids.push_back(kv.first);
    }
    for (pid_t p : pids) {
        ::kill(-p, SIGTERM);
        ::kill(-p, SIGCONT);
    }
    if (!pids.empty()) {
        auto slot = peer_timers_.emplace(peer_timers_.end());
        *slot = std::make_unique<Timer>(loop_, 2.0, [this, pids, gone, slot] {
            {
                std::lock_guard<std::mutex> lk(procs_mu_);
                for (pid_t p : pids) {
                    auto it = procs_.find(p);
                    if (it != procs_.end() && it->second == gone) ::kill(-p, SIGKILL);
                }
            }
            peer_timers_.erase(slot);  // a timer may be destroyed inside its callback
        });
    }
    router_.send_down(kHandlePeerGone, m.json);
}

void Agent::start_python_job(Job &&job) {
    if (job.fn.size() <= kPythonPrefix.size()) {
        ErrorInfo e{SPORE_ENOFUNC, "'py:' names no Python function", "", context_name(), job.fn};
        return finish_job(job, CallReply{}, &e);
    }
    auto shared = std::make_shared<Job>(std::move(job));
    python_->call(shared->msg, shared->fn, [this, shared](CallReply &&r, const ErrorInfo *err) {
        finish_job(*shared, std::move(r), err);
    });
}

void Agent::ask_modules(const std::vector<std::string> &names) {
    Message m;
    m.h.dst_id = parent_ ? parent_->remote_id() : 0;
    m.h.src_id = m.h.auth_id = router_.id();
    m.h.handle = kHandleModuleRequest;
    m.json = ModuleRequest{names}.encode();
    if (parent_) parent_->send(m);
}

void Agent::on_module_request(Message &&m) {
    auto req = ModuleRequest::decode(m.json);
    uint32_t child = m.h.src_id;
    if (!req) {
        log(SPORE_LOG_WARNING, "spore.agent", "dropped a malformed module request from context " + std::to_string(child));
        return;
    }
    modules_.request(child, req->names, [this, child](std::vector<ModuleRelay::EntryPtr> entries) {
        ModuleAnswer a;
        for (const auto &e : entries) a.modules.push_back(*e);
        Message out;
        out.h.dst_id = child;
        out.h.src_id = out.h.auth_id = router_.id();
        out.h.handle = kHandleModuleAnswer;
        a.encode(out.json, out.bin);
        router_.send(out);
    });
}

void Agent::on_module_answer(Message &&m) {
    auto a = ModuleAnswer::decode(m.json, m.bin);
    if (!a) {
        log(SPORE_LOG_WARNING, "spore.agent", "dropped a malformed module answer from the parent");
        return;
    }
    modules_.deliver(std::move(*a));
}

void Agent::on_set_log_level(Message &&m) {
    std::string err;
    Json j = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    if (!j) return;
    level_.store(int(json_int(j.get(), "level", level_.load())));
    if (python_) python_->set_log_level(level_.load());
    router_.send_down(kHandleSetLogLevel, m.json);
}

void Agent::on_shutdown_request() {
    if (shutting_down_) return;
    shutting_down_ = true;
    log(SPORE_LOG_DEBUG, "spore.agent", "shutdown requested");
    if (children_.empty()) {
        loop_.stop();
        return;
    }
    // A stopped child keeps this shutdown waiting (the 1 s below); the exit
    // that follows continues it (final_cleanup), so it leaves too.
    router_.send_down(kHandleShutdown, "");
    // The parent sends SIGTERM after 2 s: leave well before that.
    shutdown_timer_ = std::make_unique<Timer>(loop_, 1.0, [this] { loop_.stop(); });
}

void Agent::begin_exit(const std::string &why) {
    shutting_down_ = true;
    // Transfers waiting for data or window room give up.
    channels_.fail_all(ErrorInfo{SPORE_ESHUTDOWN, "context " + context_name() + " is exiting: " + why, "",
                                 context_name(), ""});
    loop_.stop();
}

void Agent::setup_output_capture() {
    // The agent's own fds 1 and 2 (inherited by anything it starts without
    // capture) become blocking pipes read by the loop: output is forwarded
    // as log lines and nothing is lost when a writer is fast.
    int op[2], ep[2];
    if (pipe2(op, O_CLOEXEC) != 0) return;
    if (pipe2(ep, O_CLOEXEC) != 0) {
        ::close(op[0]);
        ::close(op[1]);
        return;
    }
    dup2(op[1], 1);
    dup2(ep[1], 2);
    ::close(op[1]);
    ::close(ep[1]);
    out_r_ = op[0];
    err_r_ = ep[0];
    set_nonblocking(out_r_);
    set_nonblocking(err_r_);
    out_ev_.reset(event_new(
        loop_.base(), out_r_, EV_READ | EV_PERSIST,
        [](evutil_socket_t fd, short, void *arg) {
            auto *a = static_cast<Agent *>(arg);
            a->forward_output(fd, a->out_buf_, "spore.agent.stdout", a->out_ev_);
        },
        this));
    err_ev_.reset(event_new(
        loop_.base(), err_r_, EV_READ | EV_PERSIST,
        [](evutil_socket_t fd, short, void *arg) {
            auto *a = static_cast<Agent *>(arg);
            a->forward_output(fd, a->err_buf_, "spore.agent.stderr", a->err_ev_);
        },
        this));
    event_add(out_ev_.get(), nullptr);
    event_add(err_ev_.get(), nullptr);
}

void Agent::forward_output(int fd, std::string &buf, const char *logger, EventPtr &ev) {
    char tmp[16384];
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        ev.reset();
        return;
    }
    buf.append(tmp, size_t(n));
    detail::take_lines(buf, [&](std::string line) { log(SPORE_LOG_INFO, logger, line); });
}

void Agent::final_cleanup() {
    if (python_) python_->stop("the agent is exiting");
    // Children first: closing their streams makes their agents exit; then
    // make sure of it and reap them, along with processes of built-ins.
    for (auto &s : router_.child_streams()) s->close("parent exiting");
    children_.resume_all();
    std::set<pid_t> procs;
    {
        // Workers may be inside posix_spawn: wait for what they start (a
        // start takes milliseconds), and let no new one begin.
        std::unique_lock<std::mutex> lk(procs_mu_);
        no_more_spawns_ = true;
        spawns_done_.wait_for(lk, std::chrono::seconds(5), [this] { return spawning_ == 0; });
        for (auto &kv : procs_) procs.insert(kv.first);
    }
    for (pid_t p : procs) {
        ::kill(-p, SIGTERM);
        ::kill(-p, SIGCONT);  // a stopped group acts on SIGTERM only once continued
    }
    for (int i = 0; i < 100 && !children_.try_reap_all(); ++i) usleep(10000);
    children_.kill_all();
    for (pid_t p : procs) ::kill(-p, SIGKILL);
    if (parent_) parent_->close("exiting");
}

}  // namespace spore::agent
