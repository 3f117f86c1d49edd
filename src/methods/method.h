// Connection methods (DESIGN §5): each turns its options into the command
// that starts a child whose stdin/stdout reach a POSIX sh running the first
// stage (or, for fork, the agent itself). One source file per method.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"

namespace spore {

struct LaunchSpec {
    std::vector<std::string> argv;
    // True when argv starts the agent directly (no first stage, no image).
    bool agent_direct = false;
};

struct LaunchInput {
    const cJSON *options = nullptr;  // the connect options (a JSON object)
    std::string first_stage;         // the sh script to run in the target
    std::string agent_args;          // argv words for a directly started agent
    bool in_agent = false;           // true when an agent (not the master) connects
};

using BuildLaunchFn = LaunchSpec (*)(const LaunchInput &);

struct MethodInfo {
    std::string_view name;
    BuildLaunchFn build;
    bool needs_agent;                     // only possible through `via` (fork)
    std::vector<std::string_view> option_keys;  // method-specific option names
};

// Null when the method is unknown.
const MethodInfo *find_method(std::string_view name);

// Options every method accepts, with their JSON types ('s', 'i', 'b').
struct CommonOption {
    std::string_view key;
    char type;
};
const std::vector<CommonOption> &common_options();

// Declarations of the per-method builders (one file each).
LaunchSpec build_local(const LaunchInput &in);
LaunchSpec build_fork(const LaunchInput &in);

}  // namespace spore
