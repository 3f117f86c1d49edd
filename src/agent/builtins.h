// The built-in functions every agent offers (DESIGN §7). Each one takes the
// call's JSON arguments and optional binary part and fills a reply, or throws
// spore::Error (code SPORE_EBADARGS for bad arguments, SPORE_EREMOTE with a
// remote_type such as "OSError" for failures in the target).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "core/error.h"
#include "core/json.h"

namespace spore::agent {

struct CallRequest {
    std::string_view function;
    const cJSON *args = nullptr;  // always a JSON object
    std::string_view data;        // the call's binary part
};

struct CallReply {
    Json result;       // any JSON value; null when left empty
    std::string data;  // binary part of the reply
};

// What a built-in may use of the agent. Every method is thread-safe: blocking
// built-ins run on worker threads.
class Services {
public:
    virtual ~Services() = default;
    // Forwards a log record to the master (dropped when below the pushed level).
    virtual void log(int level, std::string_view logger, std::string_view message) = 0;
    virtual bool log_enabled(int level) const = 0;
    // Processes started by built-ins are registered so that the agent can kill
    // their process groups when it exits.
    virtual void register_process(pid_t pid) = 0;
    virtual void unregister_process(pid_t pid) = 0;
    virtual std::string context_name() const = 0;
};

using BuiltinFn = void (*)(const CallRequest &, CallReply &, Services &);

struct Builtin {
    std::string_view name;
    BuiltinFn fn;
    bool blocking;  // true: runs on the worker pool, false: inline on the I/O loop
};

// Looks a built-in up by name; null when there is none.
const Builtin *find_builtin(std::string_view name);

// The agent's version string, as in the hello marker.
const char *agent_version();

}  // namespace spore::agent
