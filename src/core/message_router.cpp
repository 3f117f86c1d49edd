#include "core/message_router.h"

#include <algorithm>

#include "core/messages.h"
#include "spore/spore.h"

namespace spore {

namespace {
constexpr size_t kMaxRoutesPerStream = 100000;
}  // namespace

MessageRouter::MessageRouter(Loop &loop)
    : loop_(loop),
      keepalive_(
          loop, [this](Stream &s) { send_keepalive(s); },
          [](Stream &s, const std::string &why) { s.close(why, SPORE_EUNRESPONSIVE); }) {
    set_handler(kHandleAddRoute, Policy::kImmediateChild,
                [this](Message &&m, const StreamPtr &in) { handle_add_route(std::move(m), in); });
    set_handler(kHandleDelRoute, Policy::kImmediateChild,
                [this](Message &&m, const StreamPtr &in) { handle_del_route(std::move(m), in); });
    // Liveness: a parent's ping is answered at once from the I/O loop, so a
    // child whose calls are all busy still answers. Any bytes count as the
    // answer, so the acknowledgement needs no handling.
    set_handler(kHandleKeepalive, Policy::kParentAuthority,
                [this](Message &&, const StreamPtr &) { send_up(kHandleKeepaliveAck, ""); });
    set_handler(kHandleKeepaliveAck, Policy::kImmediateChild, [](Message &&, const StreamPtr &) {});
}

void MessageRouter::send_keepalive(Stream &s) {
    Message ping;
    ping.h.dst_id = s.remote_id();
    ping.h.src_id = ping.h.auth_id = id_;
    ping.h.handle = kHandleKeepalive;
    s.send(ping);
}

void MessageRouter::set_identity(uint32_t id, std::vector<uint32_t> parent_ids, std::string name) {
    id_ = id;
    parent_ids_ = std::move(parent_ids);
    name_ = std::move(name);
}

Limits MessageRouter::limits() const {
    std::lock_guard<std::mutex> lk(mu_);
    return limits_;
}

void MessageRouter::set_limits(const Limits &l) {
    std::lock_guard<std::mutex> lk(mu_);
    limits_ = l;
}

void MessageRouter::set_parent(const StreamPtr &s, bool install_callbacks) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        parent_ = s;
    }
    s->set_toward_parent(true);
    if (!install_callbacks) return;
    s->on_message([this, w = std::weak_ptr<Stream>(s)](Stream &, Message &&m) {
        if (auto sp = w.lock()) dispatch(std::move(m), sp);
    });
    s->on_close([this](Stream &st, const std::string &reason) { on_stream_closed(st, reason); });
}

MessageRouter::StreamPtr MessageRouter::parent() const {
    std::lock_guard<std::mutex> lk(mu_);
    return parent_;
}

void MessageRouter::attach_child(const StreamPtr &s, std::optional<KeepaliveSettings> keepalive) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        children_.push_back(s);
    }
    s->on_message([this, w = std::weak_ptr<Stream>(s)](Stream &, Message &&m) {
        if (auto sp = w.lock()) dispatch(std::move(m), sp);
    });
    s->on_close([this](Stream &st, const std::string &reason) { on_stream_closed(st, reason); });
    add_route(s->remote_id(), s);
    keepalive_.watch(s, keepalive.value_or(keepalive_default_));
}

bool MessageRouter::attach_peer(const StreamPtr &s) { return add_route(s->remote_id(), s); }

bool MessageRouter::has_parent_authority(uint32_t auth_id) const {
    if (auth_id == id_) return true;
    return std::find(parent_ids_.begin(), parent_ids_.end(), auth_id) != parent_ids_.end();
}

bool MessageRouter::add_route(uint32_t id, const StreamPtr &via) {
    if (has_parent_authority(id)) return false;  // self or an ancestor
    std::lock_guard<std::mutex> lk(mu_);
    if (routes_.count(id)) return false;
    // A hostile child must not grow the table without bound.
    if (ids_by_stream_[via.get()].size() >= kMaxRoutesPerStream) return false;
    routes_[id] = via;
    ids_by_stream_[via.get()].insert(id);
    return true;
}

MessageRouter::StreamPtr MessageRouter::route_for(uint32_t id) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = routes_.find(id);
    if (it != routes_.end()) return it->second;
    return parent_;
}

bool MessageRouter::has_route(uint32_t id) const {
    std::lock_guard<std::mutex> lk(mu_);
    return routes_.count(id) != 0;
}

std::vector<uint32_t> MessageRouter::ids_behind(const Stream *s) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = ids_by_stream_.find(s);
    if (it == ids_by_stream_.end()) return {};
    return {it->second.begin(), it->second.end()};
}

InitMessage MessageRouter::child_init(uint32_t id, const std::string &name, int log_level) const {
    InitMessage m;
    m.id = id;
    m.parent_ids.push_back(id_);
    m.parent_ids.insert(m.parent_ids.end(), parent_ids_.begin(), parent_ids_.end());
    m.name = name;
    m.log_level = log_level;
    m.max_message_size = limits().max_message_size;
    m.unidirectional = unidirectional_;
    m.liveness = keepalive_default_;
    return m;
}

std::vector<MessageRouter::StreamPtr> MessageRouter::child_streams() const {
    std::lock_guard<std::mutex> lk(mu_);
    return children_;
}

int MessageRouter::send(const Message &m) {
    StreamPtr s;
    Limits lim;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = routes_.find(m.h.dst_id);
        s = it != routes_.end() ? it->second : parent_;
        lim = limits_;
    }
    // The receiver's decoder would drop the whole stream over either limit.
    if (m.wire_size() > lim.max_message_size || m.json.size() > lim.max_json_size) return SPORE_ETOOBIG;
    if (!s) return SPORE_ENOROUTE;
    return s->send(m) ? SPORE_OK : SPORE_EDISCONNECTED;
}

void MessageRouter::set_handler(uint32_t handle, Policy policy, Handler fn) {
    handlers_[handle] = HandlerEntry{policy, std::move(fn)};
}

std::string MessageRouter::error_json(const ErrorInfo &e) {
    Json j = json_object();
    cJSON_AddStringToObject(j.get(), "code", error_code_name(e.code));
    cJSON_AddStringToObject(j.get(), "message", e.message.c_str());
    if (!e.remote_type.empty()) cJSON_AddStringToObject(j.get(), "type", e.remote_type.c_str());
    if (!e.context.empty()) cJSON_AddStringToObject(j.get(), "context", e.context.c_str());
    if (!e.function.empty()) cJSON_AddStringToObject(j.get(), "function", e.function.c_str());
    if (!e.traceback.empty()) cJSON_AddStringToObject(j.get(), "traceback", e.traceback.c_str());
    return json_print(j.get());
}

ErrorInfo MessageRouter::parse_error_json(const std::string &json) {
    ErrorInfo e;
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    if (!j || !cJSON_IsObject(j.get())) {
        e.code = SPORE_EPROTO;
        e.message = "malformed error reply: " + err;
        return e;
    }
    std::string code = json_str(j.get(), "code");
    e.code = error_code_from_name(code.c_str());
    if (e.code == SPORE_OK) e.code = SPORE_EUNKNOWN;
    e.message = json_str(j.get(), "message");
    e.remote_type = json_str(j.get(), "type");
    e.context = json_str(j.get(), "context");
    e.function = json_str(j.get(), "function");
    e.traceback = json_str(j.get(), "traceback");
    return e;
}

void MessageRouter::send_dead(const Header &orig, int code, const std::string &why) {
    // Never answer an error with an error, and never answer what wants no answer.
    if (orig.reply_to == 0 || (orig.flags & kFlagError)) return;
    Message d;
    d.h.dst_id = orig.src_id;
    d.h.src_id = id_;
    d.h.auth_id = id_;
    d.h.handle = orig.reply_to;
    d.h.flags = kFlagError;
    ErrorInfo e;
    e.code = code;
    e.message = why;
    e.context = name_;
    d.json = error_json(e);
    if (orig.src_id == id_) {
        // A local sender: deliver without touching a stream.
        loop_.post([this, d = std::move(d)]() mutable {
            if (reply_handler_) reply_handler_(std::move(d), nullptr);
        });
        return;
    }
    send(d);
}

void MessageRouter::drop(const Message &m, const Stream &ingress, const std::string &why) {
    log(SPORE_LOG_WARNING, "dropped message on stream " + ingress.name() + " (src " + std::to_string(m.h.src_id) +
                               ", auth " + std::to_string(m.h.auth_id) + ", dst " + std::to_string(m.h.dst_id) +
                               ", handle " + std::to_string(m.h.handle) + "): " + why);
}

void MessageRouter::dispatch(Message &&m, const StreamPtr &ingress) {
    // Reverse-path filter: a message must arrive on the stream that leads
    // back to the context it claims to come from and act for.
    if (route_for(m.h.src_id) != ingress) return drop(m, *ingress, "source id does not live behind this stream");
    if (m.h.auth_id != m.h.src_id && route_for(m.h.auth_id) != ingress)
        return drop(m, *ingress, "authority id does not live behind this stream");
    // An attached router acts for this one: its messages carry our authority,
    // so the contexts below accept its calls as ours.
    if (ingress->attached()) m.h.auth_id = id_;

    if (m.h.dst_id == id_) {
        // What is delivered here is parsed here (or handed to a caller's
        // parser): it passes the same checks as every request first.
        if (!m.json.empty()) {
            std::string why = json_text_problem(m.json, limits().max_json_depth);
            if (!why.empty()) return refuse_unacceptable_json(std::move(m), ingress, why);
        }
        if (m.h.handle >= kFirstDynamicHandle) {
            if (reply_handler_) reply_handler_(std::move(m), ingress);
            else drop(m, *ingress, "no reply handler");
            return;
        }
        auto it = handlers_.find(m.h.handle);
        if (it == handlers_.end()) {
            drop(m, *ingress, "no handler for this handle");
            send_dead(m.h, SPORE_EPROTO,
                      "context " + name_ + " has no handler for handle " + std::to_string(m.h.handle));
            return;
        }
        bool allowed = true;
        switch (it->second.policy) {
        case Policy::kAny: break;
        case Policy::kParentAuthority: allowed = has_parent_authority(m.h.auth_id); break;
        case Policy::kImmediateChild:
            allowed = m.h.src_id == ingress->remote_id() && !ingress->toward_parent() && !ingress->attached();
            break;
        }
        if (!allowed) {
            drop(m, *ingress, "refused by policy");
            send_dead(m.h, SPORE_EREFUSED,
                      "refused by policy: context " + std::to_string(m.h.src_id) + " may not use handle " +
                          std::to_string(m.h.handle) + " in " + name_);
            return;
        }
        it->second.fn(std::move(m), ingress);
        return;
    }

    // Forwarding.
    StreamPtr out = route_for(m.h.dst_id);
    if (!out || out == ingress) {
        send_dead(m.h, SPORE_ENOROUTE,
                  "no route to context " + std::to_string(m.h.dst_id) + " from " + name_);
        return;
    }
    // Attached routers count as this router itself: they talk to every context.
    bool privileged = ingress->toward_parent() || out->toward_parent() || ingress->attached() || out->attached();
    if (unidirectional_ && !privileged) {
        drop(m, *ingress, "unidirectional routing forbids child-to-child forwarding");
        send_dead(m.h, SPORE_EREFUSED,
                  "routing mode prevents forwarding from context " + std::to_string(m.h.src_id) + " to context " +
                      std::to_string(m.h.dst_id) + " via " + name_);
        return;
    }
    if (!out->send(m))
        send_dead(m.h, SPORE_EDISCONNECTED, "context " + std::to_string(m.h.dst_id) + " is disconnected");
}

void MessageRouter::refuse_unacceptable_json(Message &&m, const StreamPtr &ingress, const std::string &why) {
    drop(m, *ingress, "unacceptable JSON: " + why);
    if (m.h.handle < kFirstDynamicHandle) {
        send_dead(m.h, SPORE_EPROTO,
                  "context " + name_ + " refused a message on handle " + std::to_string(m.h.handle) +
                      " with unacceptable JSON: " + why);
        return;
    }
    // A reply: the caller waiting on the handle learns why instead.
    ErrorInfo e;
    e.code = SPORE_EPROTO;
    e.message = "the reply from context " + std::to_string(m.h.src_id) + " is not acceptable JSON: " + why;
    m.h.flags |= kFlagError;
    m.json = error_json(e);
    m.bin.clear();
    if (reply_handler_) reply_handler_(std::move(m), ingress);
}

void MessageRouter::handle_add_route(Message &&m, const StreamPtr &ingress) {
    auto added = RouteAdded::decode(m.json);
    if (!added) return drop(m, *ingress, "malformed add-route");
    if (!add_route(added->id, ingress)) return drop(m, *ingress, "add-route for an id that is taken");
    send_up(kHandleAddRoute, std::move(m.json));
}

void MessageRouter::send_up(uint32_t handle, std::string json) {
    auto p = parent();
    if (!p) return;  // the master: nobody further up
    Message up;
    up.h.dst_id = parent_ids_.empty() ? 0 : parent_ids_.front();
    up.h.src_id = id_;
    up.h.auth_id = id_;
    up.h.handle = handle;
    up.json = std::move(json);
    p->send(up);
}

void MessageRouter::send_down(uint32_t handle, const std::string &json) {
    for (auto &s : child_streams()) {
        Message down;
        down.h.dst_id = s->remote_id();
        down.h.src_id = down.h.auth_id = id_;
        down.h.handle = handle;
        down.json = json;
        s->send(down);
    }
}

void MessageRouter::handle_del_route(Message &&m, const StreamPtr &ingress) {
    auto loss = LossNotice::decode(m.json);
    if (!loss) return drop(m, *ingress, "malformed del-route");
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = routes_.find(loss->id);
        if (it == routes_.end() || it->second != ingress) {
            return;  // not ours to delete (or already gone)
        }
        routes_.erase(it);
        ids_by_stream_[ingress.get()].erase(loss->id);
    }
    if (on_route_lost_) on_route_lost_(loss->id, loss->code, loss->reason);
    send_up(kHandleDelRoute, std::move(m.json));
}

void MessageRouter::on_stream_closed(Stream &s, const std::string &reason) {
    keepalive_.forget(&s);
    int code = s.close_code();
    // Failures are worth a record; EOF and closes this side chose are not.
    for (const char *failure : {"protocol error", "read failed", "write failed", "unresponsive"})
        if (reason.rfind(failure, 0) == 0) log(SPORE_LOG_WARNING, "stream " + s.name() + " closed: " + reason);
    std::vector<uint32_t> gone;
    StreamPtr keep;
    bool was_parent = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = ids_by_stream_.find(&s);
        if (it != ids_by_stream_.end()) {
            gone.assign(it->second.begin(), it->second.end());
            ids_by_stream_.erase(it);
        }
        for (uint32_t id : gone) routes_.erase(id);
        for (auto c = children_.begin(); c != children_.end(); ++c) {
            if (c->get() == &s) {
                keep = *c;
                children_.erase(c);
                break;
            }
        }
        if (parent_.get() == &s) {
            was_parent = true;
            keep = parent_;
        }
    }
    if (was_parent) {
        if (on_parent_lost_) on_parent_lost_(reason);
        return;
    }
    for (uint32_t id : gone) {
        if (on_route_lost_) on_route_lost_(id, code, reason);
        send_up(kHandleDelRoute, LossNotice{id, reason, code}.encode());
    }
    if (keep && on_child_closed_) on_child_closed_(keep, reason);
}

}  // namespace spore
