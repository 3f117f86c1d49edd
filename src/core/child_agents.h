// The child contexts a context (the master or an agent) has started: each
// one's Connection, from its connect until its process is reaped. The one
// place that routes a new child, watches it, reaps it when its stream
// closes and, at the end, continues, terminates and kills what is left.
// Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/connection.h"
#include "core/message_router.h"

namespace spore {

class ChildAgents {
public:
    using LineFn = std::function<void(const std::string &line)>;

    // Takes over the router's child-closed callback.
    explicit ChildAgents(MessageRouter &router);
    ChildAgents(const ChildAgents &) = delete;
    ChildAgents &operator=(const ChildAgents &) = delete;

    // A child whose connect succeeded: routed through its stream, watched
    // with its liveness settings, and kept until its process is reaped. Its
    // stderr lines go to on_stderr. The caller then sends it init.
    void adopt(const std::shared_ptr<Connection> &conn, LineFn on_stderr);
    // A child whose connect failed: SIGTERM now, SIGKILL after kill_after_s,
    // kept only until reaped.
    void discard(const std::shared_ptr<Connection> &conn, double kill_after_s);
    // Runs once whenever the last child has been reaped.
    void on_all_reaped(std::function<void()> fn) { on_all_reaped_ = std::move(fn); }

    bool empty() const { return children_.empty(); }
    // SIGCONT to every child: a stopped one reads nothing, not even the
    // close of its stream, until it is continued.
    void resume_all();
    // Collects the children that have exited; true once none is left.
    bool try_reap_all();
    // SIGTERM and SIGCONT to every child not reaped yet.
    void terminate_all();
    // SIGKILL and a blocking wait for every child; none is left after.
    void kill_all();

private:
    void reap_after_close(uint32_t id, int close_code);
    void forget(uint32_t id);

    MessageRouter &router_;
    std::unordered_map<uint32_t, std::shared_ptr<Connection>> children_;
    std::function<void()> on_all_reaped_;
};

}  // namespace spore
