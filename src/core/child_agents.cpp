#include "core/child_agents.h"

#include <signal.h>

#include <vector>

namespace spore {

ChildAgents::ChildAgents(MessageRouter &router) : router_(router) {
    router_.set_on_child_closed([this](const MessageRouter::StreamPtr &s, const std::string &) {
        reap_after_close(s->remote_id(), s->close_code());
    });
}

void ChildAgents::adopt(const std::shared_ptr<Connection> &conn, LineFn on_stderr) {
    const ConnectRequest &rq = conn->request();
    children_[rq.id] = conn;
    conn->on_stderr_line(std::move(on_stderr));
    router_.attach_child(conn->stream(), rq.keepalive);
}

void ChildAgents::discard(const std::shared_ptr<Connection> &conn, double kill_after_s) {
    uint32_t id = conn->request().id;
    children_[id] = conn;
    conn->reap(0.0, kill_after_s, [this, id] { forget(id); });
}

void ChildAgents::reap_after_close(uint32_t id, int close_code) {
    auto it = children_.find(id);
    if (it == children_.end()) return;
    it->second->reap_after_close(close_code, [this, id] { forget(id); });
}

void ChildAgents::forget(uint32_t id) {
    children_.erase(id);
    if (children_.empty() && on_all_reaped_) on_all_reaped_();
}

void ChildAgents::resume_all() {
    for (auto &kv : children_) kv.second->resume();
}

bool ChildAgents::try_reap_all() {
    bool all = true;
    for (auto &kv : children_)
        if (!kv.second->try_reap()) all = false;
    return all;
}

void ChildAgents::terminate_all() {
    for (auto &kv : children_) {
        if (kv.second->reaped() || kv.second->pid() <= 0) continue;
        ::kill(kv.second->pid(), SIGTERM);
        kv.second->resume();
    }
}

void ChildAgents::kill_all() {
    // A copy: a reaper finishing meanwhile may not erase under the loop.
    std::vector<std::shared_ptr<Connection>> all;
    for (auto &kv : children_) all.push_back(kv.second);
    for (auto &c : all) c->kill_and_wait();
    children_.clear();
}

}  // namespace spore
