// The JSON bodies of the protocol's standard messages (docs/protocol.md),
// each encoded and parsed in this one place, with every check its receiver
// applies, so a sender and a receiver cannot disagree and a hostile body
// meets the same checks wherever it arrives.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/frame.h"
#include "core/json.h"
#include "core/keepalive.h"
#include "spore/errors.h"

namespace spore {

// A context id in obj[key]: 1 to 2^32-1; nullopt when missing, not a
// number or out of range.
std::optional<uint32_t> json_context_id(const cJSON *obj, const char *key = "id");

// init (110): a parent's first framed message to a new child.
struct InitMessage {
    uint32_t id = 0;
    std::vector<uint32_t> parent_ids;  // nearest first, ending with 0 (the master)
    std::string name;
    int log_level = 20;
    uint64_t max_message_size = kDefaultMaxMessageSize;  // at least 4096 once decoded
    bool unidirectional = true;
    KeepaliveSettings liveness;  // how the child watches its own children

    std::string encode() const;
    // nullopt with *why set when the body is not an init message.
    static std::optional<InitMessage> decode(std::string_view json, std::string *why);
};

// add-route (102): a context appeared behind the sender.
struct RouteAdded {
    uint32_t id = 0;
    std::string name;

    std::string encode() const;
    static std::optional<RouteAdded> decode(std::string_view json);
};

// del-route (103) and peer-gone (112): a context (and everything behind it)
// or an attached caller is gone. code is SPORE_EDISCONNECTED or, for a hop
// a liveness check gave up on, SPORE_EUNRESPONSIVE; any other code a
// sender claims is read as a plain disconnect.
struct LossNotice {
    uint32_t id = 0;
    std::string reason = "disconnected";
    int code = SPORE_EDISCONNECTED;

    std::string encode() const;
    static std::optional<LossNotice> decode(std::string_view json);
};

}  // namespace spore
