#include "core/options.h"

#include <cmath>

#include "core/error.h"
#include "spore/errors.h"

namespace spore {

namespace {

using T = OptionType;

// Kept in the order docs/c-api.md lists them.
constexpr OptionSpec kLogOptions[] = {
    {"log_level", T::kInteger, 0, 100, "20", "minimum level of forwarded records"},
    {"log_queue_size", T::kInteger, 1, 1000000000, "10000", "records kept for spore_router_next_log"},
    {"log_queue_bytes", T::kInteger, 1024, int64_t(1) << 50, "4194304", "bytes the queued records may take"},
};

constexpr OptionSpec kRouterOptions[] = {
    {"agent_path", T::kString, 0, 0, "", "the spore-agent executable to ship to new contexts"},
    {"max_message_size", T::kInteger, 4096, 4294967295, "134217728", "largest message, header included"},
    kLogOptions[0],
    kLogOptions[1],
    kLogOptions[2],
    {"liveness_interval", T::kInteger, 0, 86400000, "10000",
     "ms of silence after which a parent pings a child; 0: off"},
    {"liveness_count", T::kInteger, 1, 1000, "3", "silent intervals after which a child is declared dead"},
    {"module_path", T::kList, 0, 0, "", "directories Python modules are served from to the contexts' workers"},
    {"module_deny", T::kList, 0, 0, "", "Python module names (and packages) never served"},
};

constexpr OptionSpec kAttachOptions[] = {
    {"connect_timeout", T::kInteger, 1, 2147483647, "10000", "ms for the listener's answer"},
    kLogOptions[0],
    kLogOptions[1],
    kLogOptions[2],
};

constexpr OptionSpec kConnectOptions[] = {
    {"name", T::kString, 0, 0, "", "the context's name"},
    {"connect_timeout", T::kInteger, 1, 2147483647, "30000", "ms from starting the child to its agent's hello"},
    {"remote_name", T::kString, 0, 0, "", "label of the agent process in ps"},
    {"agent_cache", T::kBoolean, 0, 0, "true", "keep the agent in a private cache directory on the target"},
    {"agent_compress", T::kBooleanOrString, 0, 0, "true", "how the agent image travels on first contact"},
    {"command_prefix", T::kList, 0, 0, "", "words run before the first stage"},
    {"liveness_interval", T::kInteger, 0, 86400000, "", "the router's liveness_interval for this context"},
    {"liveness_count", T::kInteger, 1, 1000, "", "the router's liveness_count for this context"},
    {"reuse", T::kBoolean, 0, 0, "", "through an attached router: the listener's live context for the same request"},
    {"python_path", T::kList, 0, 0, "", "argv prefix that starts Python in the context; unset: the first of python3, /usr/libexec/platform-python, ..."},
};

constexpr OptionSpec kTransferOptions[] = {
    {"mode", T::kInteger, 0, 07777, "", "permission bits of what is written"},
    {"preserve_owner", T::kBoolean, 0, 0, "false", "copy the owner and group"},
    {"preserve_mtime", T::kBoolean, 0, 0, "true", "copy the modification time"},
    {"sync", T::kBoolean, 0, 0, "true", "fsync what was written before reporting success"},
    {"window", T::kInteger, 65536, 67108864, "4194304", "bytes in flight without acknowledgement"},
    {"max_size", T::kInteger, 0, int64_t(1) << 40, "134217728", "spore_get_bytes: refuse a larger file"},
    {"timeout", T::kInteger, -1, 2147483647, "-1", "ms the whole transfer may take"},
};

constexpr OptionSpec kProcessOptions[] = {
    {"window", T::kInteger, 65536, 67108864, "4194304", "bytes of output in flight without acknowledgement"},
    {"timeout_ms", T::kInteger, -1, 2147483647, "60000", "ms the start may take; -1: no limit"},
};

bool has_type(const OptionSpec &spec, const cJSON *item) {
    switch (spec.type) {
    case T::kString: return cJSON_IsString(item);
    case T::kBoolean: return cJSON_IsBool(item);
    case T::kList: return cJSON_IsString(item) || cJSON_IsArray(item);
    case T::kBooleanOrString: return cJSON_IsBool(item) || cJSON_IsString(item);
    case T::kInteger: break;
    }
    if (!cJSON_IsNumber(item) || item->valuedouble != std::floor(item->valuedouble)) return false;
    if (spec.min == 0 && spec.max == 0) return true;
    return item->valuedouble >= double(spec.min) && item->valuedouble <= double(spec.max);
}

}  // namespace

std::string option_type_text(const OptionSpec &spec) {
    switch (spec.type) {
    case T::kString: return "a string";
    case T::kBoolean: return "a boolean";
    case T::kList: return "a list of strings or a string";
    case T::kBooleanOrString: return "a boolean or a string";
    case T::kInteger: break;
    }
    if (spec.min == 0 && spec.max == 0) return "an integer";
    return "an integer from " + std::to_string(spec.min) + " to " + std::to_string(spec.max);
}

void check_option(const OptionSpec &spec, const cJSON *item, std::string_view scope) {
    if (has_type(spec, item)) return;
    std::string what = scope.empty() ? "option '" : std::string(scope) + " option '";
    throw Error(SPORE_EINVAL, what + std::string(spec.key) + "' must be " + option_type_text(spec));
}

const OptionSpec *find_option(std::span<const OptionSpec> table, std::string_view key) {
    for (const OptionSpec &s : table)
        if (s.key == key) return &s;
    return nullptr;
}

std::span<const OptionSpec> router_option_table() { return kRouterOptions; }
std::span<const OptionSpec> attach_option_table() { return kAttachOptions; }
std::span<const OptionSpec> connect_option_table() { return kConnectOptions; }
std::span<const OptionSpec> transfer_option_table() { return kTransferOptions; }
std::span<const OptionSpec> process_option_table() { return kProcessOptions; }

}  // namespace spore
