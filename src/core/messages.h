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
    // The argv prefix that starts Python in the child (its connect option
    // python_path); empty: the agent's candidate list.
    std::vector<std::string> python_path;

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

// Python modules (docs/protocol.md, "Module messages"). A module name:
// parts [A-Za-z_][A-Za-z0-9_]* joined by single dots, at most 200
// characters; such a name maps to a relative path of plain components.
bool valid_module_name(std::string_view name);
// What a module request may name: a module name, "__main__", or
// kWorkerSourceName (the worker's own code).
bool valid_request_name(std::string_view name);
inline constexpr std::string_view kWorkerSourceName = "spore:worker";
inline constexpr size_t kMaxModuleNames = 64;

// module-request (115), and the worker link's "need" frame.
struct ModuleRequest {
    std::vector<std::string> names;  // as sent: each still to be checked with valid_module_name

    std::string encode() const;
    // nullopt when the body is not a list of 1 to kMaxModuleNames strings.
    static std::optional<ModuleRequest> decode(std::string_view json);
};

// module-answer (116), and the worker link's "modules" frame: the sources
// travel in the binary part.
struct ModuleEntry {
    std::string name;
    bool found = false;
    bool package = false;
    std::string file;    // where the controller read it (shown in tracebacks)
    std::string hash;    // sha256 hex of source
    std::string reason;  // why it was not found
    std::string source;
};

struct ModuleAnswer {
    std::vector<ModuleEntry> modules;

    // JSON part and binary part.
    void encode(std::string &json, std::string &bin) const;
    // nullopt when malformed: a slice outside the binary part, an entry
    // without a valid name, or more than max_entries entries.
    static std::optional<ModuleAnswer> decode(std::string_view json, std::string_view bin, size_t max_entries = 100000);
};

}  // namespace spore
