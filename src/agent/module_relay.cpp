#include "agent/module_relay.h"

#include <algorithm>

namespace spore::agent {

namespace {

// A hostile or broken child could ask for endless distinct names; past this
// many cached entries answers are still passed on but no longer kept.
constexpr size_t kMaxCached = 20000;

}  // namespace

void ModuleRelay::request(uint64_t requester, const std::vector<std::string> &names, AnswerFn answer) {
    auto w = std::make_shared<Waiting>(Waiting{requester, names, std::move(answer), 0});
    std::vector<std::string> ask;
    for (const auto &n : names) {
        if (!valid_request_name(n)) continue;  // answered "not a module name" in complete()
        if (cache_.count(n)) continue;
        ++w->missing;
        if (asked_.insert(n).second) ask.push_back(n);
    }
    if (w->missing == 0) return complete(*w);
    waiting_.push_back(w);
    if (!ask.empty()) ask_(ask);
}

void ModuleRelay::complete(Waiting &w) {
    std::vector<EntryPtr> out;
    std::set<std::string> &sent = sent_[w.requester];
    std::set<std::string> included;
    auto add = [&](const std::string &name, bool asked) {
        if (!included.insert(name).second) return;
        auto it = cache_.find(name);
        EntryPtr e;
        if (it != cache_.end()) {
            e = it->second;
        } else if (asked) {
            // Invalid names, or an entry not kept (the cache is full): the
            // requester still gets an answer for everything it asked.
            auto nf = std::make_shared<ModuleEntry>();
            nf->name = name;
            nf->reason = valid_request_name(name) ? "not available" : "not a module name";
            e = nf;
        } else {
            return;
        }
        if (!asked && (!e->found || sent.count(name))) return;
        if (e->found) sent.insert(name);
        out.push_back(e);
    };
    for (const auto &n : w.names) add(n, true);
    for (const auto &n : w.names) {
        auto x = extras_.find(n);
        if (x == extras_.end()) continue;
        for (const auto &extra : x->second) add(extra, false);
    }
    w.answer(std::move(out));
}

void ModuleRelay::deliver(ModuleAnswer &&answer) {
    std::vector<std::string> asked_here, extras;
    std::vector<EntryPtr> arrived;
    for (auto &m : answer.modules) {
        bool was_asked = asked_.erase(m.name) > 0;
        (was_asked ? asked_here : extras).push_back(m.name);
        auto e = std::make_shared<const ModuleEntry>(std::move(m));
        if (cache_.size() < kMaxCached || cache_.count(e->name)) cache_[e->name] = e;
        else if (was_asked) arrived.push_back(e);  // not kept, but its waiters need it
    }
    for (const auto &n : asked_here) {
        auto it = cache_.find(n);
        if (it != cache_.end() && it->second->found) extras_[n] = extras;
    }
    // Entries that could not be kept are put in for the waiters, then dropped.
    for (const auto &e : arrived) cache_[e->name] = e;
    std::vector<std::shared_ptr<Waiting>> ready;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        Waiting &w = **it;
        size_t missing = 0;
        for (const auto &n : w.names)
            if (valid_request_name(n) && !cache_.count(n)) ++missing;
        w.missing = missing;
        if (missing == 0) {
            ready.push_back(*it);
            it = waiting_.erase(it);
        } else {
            ++it;
        }
    }
    for (auto &w : ready) complete(*w);
    for (const auto &e : arrived) cache_.erase(e->name);
}

void ModuleRelay::forget(uint64_t requester) {
    sent_.erase(requester);
}

}  // namespace spore::agent
