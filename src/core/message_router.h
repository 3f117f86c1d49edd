// Message routing shared by the master and every agent (DESIGN §6): the
// routing table, the reverse-path filter, handler policies, unidirectional
// forwarding and dead replies. Runs on the loop thread except send(), which
// any thread may call.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/frame.h"
#include "core/json.h"
#include "core/keepalive.h"
#include "core/messages.h"
#include "core/loop.h"
#include "core/stream.h"

namespace spore {

enum class Policy {
    kAny,              // anyone who passed the reverse-path filter
    kParentAuthority,  // auth_id is this context or one of its ancestors
    kImmediateChild,   // sent by the context at the other end of the stream
};

class MessageRouter {
public:
    using StreamPtr = std::shared_ptr<Stream>;
    using Handler = std::function<void(Message &&, const StreamPtr &ingress)>;
    using LogFn = std::function<void(int level, const std::string &message)>;

    explicit MessageRouter(Loop &loop);
    MessageRouter(const MessageRouter &) = delete;
    MessageRouter &operator=(const MessageRouter &) = delete;

    Loop &loop() { return loop_; }
    uint32_t id() const { return id_; }
    const std::string &name() const { return name_; }
    const std::vector<uint32_t> &parent_ids() const { return parent_ids_; }
    void set_identity(uint32_t id, std::vector<uint32_t> parent_ids, std::string name);

    Limits limits() const;
    void set_limits(const Limits &l);
    bool unidirectional() const { return unidirectional_; }
    void set_unidirectional(bool v) { unidirectional_ = v; }

    // The agent's stream to its parent (null in the master). Unless
    // install_callbacks is false, the stream's messages and close go to this
    // router; otherwise its owner passes them to dispatch() and
    // stream_closed() itself.
    void set_parent(const StreamPtr &s, bool install_callbacks = true);
    StreamPtr parent() const;

    // Attaches a framed stream to a child context (its id is s->remote_id())
    // and routes that id through it; the child is kept under keepalive with
    // the given settings (else this router's default). Loop thread.
    void attach_child(const StreamPtr &s, std::optional<KeepaliveSettings> keepalive = std::nullopt);
    // The keepalive of children attached without settings of their own.
    void set_keepalive_default(KeepaliveSettings k) { keepalive_default_ = k; }
    KeepaliveSettings keepalive_default() const { return keepalive_default_; }
    // Routes the id of an attached router (s->attached() is set) through its
    // stream. It is not a child (no SHUTDOWN, no log level pushed to it), and
    // its owner passes its messages to dispatch() and its close to
    // stream_closed(). Loop thread.
    bool attach_peer(const StreamPtr &s);
    // What a stream's close callback does for streams this router did not
    // install callbacks on: forget its routes, report them lost.
    void stream_closed(Stream &s, const std::string &reason) { on_stream_closed(s, reason); }

    // Routing table. add_route refuses ids that are this context, an
    // ancestor, or already routed.
    bool add_route(uint32_t id, const StreamPtr &via);
    StreamPtr route_for(uint32_t id) const;  // explicit route, else parent, else null
    bool has_route(uint32_t id) const;
    std::vector<uint32_t> ids_behind(const Stream *s) const;

    // Sends a message toward m.h.dst_id. Thread-safe. Returns SPORE_OK or the
    // reason it could not leave (SPORE_ENOROUTE, SPORE_EDISCONNECTED,
    // SPORE_ETOOBIG). No dead reply is generated for the caller's own sends.
    int send(const Message &m);

    // Handlers for standard handles (loop thread only).
    void set_handler(uint32_t handle, Policy policy, Handler fn);
    // Messages to this context on dynamic handles (>= 1000).
    void set_reply_handler(Handler fn) { reply_handler_ = std::move(fn); }
    // Called once per context id that becomes unreachable; code is
    // SPORE_EDISCONNECTED, or SPORE_EUNRESPONSIVE when a keepalive gave up
    // on the hop it lived behind.
    void set_on_route_lost(std::function<void(uint32_t id, int code, const std::string &reason)> fn) {
        on_route_lost_ = std::move(fn);
    }
    void set_on_parent_lost(std::function<void(const std::string &reason)> fn) { on_parent_lost_ = std::move(fn); }
    void set_on_child_closed(std::function<void(const StreamPtr &, const std::string &reason)> fn) {
        on_child_closed_ = std::move(fn);
    }
    void set_log(LogFn fn) { log_ = std::move(fn); }

    // Entry point for every message read from a stream (loop thread).
    void dispatch(Message &&m, const StreamPtr &ingress);

    // Sends an error reply for m to its reply_to, if it asked for one.
    void send_dead(const Header &orig, int code, const std::string &why);
    // JSON text of an error object.
    static std::string error_json(const ErrorInfo &e);
    static ErrorInfo parse_error_json(const std::string &json);

    bool has_parent_authority(uint32_t auth_id) const;
    // Sends a message for the parent's own handle (nothing in the master).
    void send_up(uint32_t handle, std::string json);
    // Sends the same message (from this context) to each child's own handle.
    // Any thread.
    void send_down(uint32_t handle, const std::string &json);

    // The init message for a new child of this context: its ancestors are
    // this context and this context's own, and it inherits the limits,
    // routing mode and liveness settings.
    InitMessage child_init(uint32_t id, const std::string &name, int log_level) const;

    // Child streams currently attached (loop thread).
    std::vector<StreamPtr> child_streams() const;

private:
    void on_stream_closed(Stream &s, const std::string &reason);
    void send_keepalive(Stream &s);
    void handle_add_route(Message &&m, const StreamPtr &ingress);
    void handle_del_route(Message &&m, const StreamPtr &ingress);
    void drop(const Message &m, const Stream &ingress, const std::string &why);
    void refuse_unacceptable_json(Message &&m, const StreamPtr &ingress, const std::string &why);
    void log(int level, const std::string &msg) const {
        if (log_) log_(level, msg);
    }

    struct HandlerEntry {
        Policy policy;
        Handler fn;
    };

    Loop &loop_;
    uint32_t id_ = 0;
    std::string name_ = "master";
    std::vector<uint32_t> parent_ids_;
    bool unidirectional_ = true;

    mutable std::mutex mu_;  // guards the members below
    Limits limits_;
    StreamPtr parent_;
    std::unordered_map<uint32_t, StreamPtr> routes_;
    std::unordered_map<const Stream *, std::set<uint32_t>> ids_by_stream_;
    std::vector<StreamPtr> children_;

    std::unordered_map<uint32_t, HandlerEntry> handlers_;
    Handler reply_handler_;
    std::function<void(uint32_t, int, const std::string &)> on_route_lost_;
    KeepaliveSettings keepalive_default_;
    Keepalive keepalive_;
    std::function<void(const std::string &)> on_parent_lost_;
    std::function<void(const StreamPtr &, const std::string &)> on_child_closed_;
    LogFn log_;
};

}  // namespace spore
