// An agent's cache of Python modules (docs/protocol.md, "Module messages"):
// its own worker and its child agents ask it for modules; what it has is
// answered at once, what it lacks is asked of its parent once, however many
// wait for it. Every answer, "not found" included, is kept for the agent's
// lifetime, so a second context behind the same agent costs the master
// nothing. Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/messages.h"

namespace spore::agent {

class ModuleRelay {
public:
    using EntryPtr = std::shared_ptr<const ModuleEntry>;
    using AnswerFn = std::function<void(std::vector<EntryPtr>)>;
    // Sends a module-request for these names toward the master.
    using AskFn = std::function<void(const std::vector<std::string> &names)>;

    explicit ModuleRelay(AskFn ask) : ask_(std::move(ask)) {}

    // Answers `names` for `requester` (a key naming who asks: its entries
    // sent so far are skipped among the extras). Each name must pass
    // valid_module_name; an invalid one is answered "not found" here.
    // answer runs on the loop, maybe before request returns.
    void request(uint64_t requester, const std::vector<std::string> &names, AnswerFn answer);
    // A module-answer from the parent.
    void deliver(ModuleAnswer &&answer);
    // The requester is gone: its record of what it was sent goes too.
    void forget(uint64_t requester);

private:
    struct Waiting {
        uint64_t requester;
        std::vector<std::string> names;
        AnswerFn answer;
        size_t missing;
    };
    void complete(Waiting &w);

    AskFn ask_;
    std::unordered_map<std::string, EntryPtr> cache_;
    // For a name asked of the parent: the other modules its answer carried
    // (what its source imports), handed on with it to later requesters.
    std::unordered_map<std::string, std::vector<std::string>> extras_;
    std::set<std::string> asked_;  // sent up, no answer yet
    std::vector<std::shared_ptr<Waiting>> waiting_;
    std::map<uint64_t, std::set<std::string>> sent_;
};

}  // namespace spore::agent
