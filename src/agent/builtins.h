// The built-in functions every agent offers (DESIGN §7). Each one takes the
// call's JSON arguments and optional binary part and fills a reply, or throws
// spore::Error (code SPORE_EBADARGS for bad arguments, SPORE_EREMOTE with a
// remote_type such as "OSError" for failures in the target).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/channel.h"
#include "core/error.h"
#include "core/json.h"

namespace spore::agent {

struct CallRequest {
    std::string_view function;
    const cJSON *args = nullptr;  // always a JSON object
    std::string_view data;        // the call's binary part
    uint32_t caller = 0;          // the context that made the call (the master, usually)
    // What the built-in's prepare step made when the call arrived (null
    // without one, or when a built-in is called directly, as in unit tests).
    std::shared_ptr<void> prepared;
};

struct CallReply {
    Json result;       // any JSON value; null when left empty
    // The result as JSON text, sent as it is (a Python worker's, whose
    // numbers must not be reprinted): used instead of result when set.
    std::string json_text;
    std::string data;  // binary part of the reply
};

// What a built-in may use of the agent. Every method is thread-safe: blocking
// built-ins run on worker threads.
class Services {
public:
    virtual ~Services() = default;
    // Forwards a log record to the master (dropped when below the pushed level).
    virtual void log(int level, std::string_view logger, std::string_view message) = 0;
    // The same, addressed to one context: the caller of a call, whose output
    // records (proc.run with "stream") must reach it even when it is an
    // attached router rather than the master.
    virtual void log_to(uint32_t dst, int level, std::string_view logger, std::string_view message) {
        (void)dst;
        log(level, logger, message);
    }
    virtual bool log_enabled(int level) const = 0;
    // Processes started by built-ins are registered so that the agent can kill
    // their process groups when it exits, or when owner (the caller that
    // started them) goes away. spawn_child does both steps: begin_spawn
    // before it starts anything (SPORE_ESHUTDOWN: the agent is exiting,
    // SPORE_EDISCONNECTED: owner has gone; then nothing may start), then
    // register_process with the pid, or -1 when the start failed; the
    // agent's exit waits for that, so no process can start unseen by its
    // final cleanup. register_process returns false when owner went away
    // meanwhile: the caller kills the process.
    virtual int begin_spawn(uint32_t owner) = 0;
    virtual bool register_process(pid_t pid, uint32_t owner) = 0;
    virtual void unregister_process(pid_t pid) = 0;
    virtual std::string context_name() const = 0;
    // Channels of this agent (file transfers): null where there are none.
    virtual ChannelTable *channels() { return nullptr; }
    // Sends a message from this agent (src and auth filled in) toward
    // m.h.dst_id. Returns SPORE_OK or why it could not leave.
    virtual int send(Message &) { return SPORE_EINTERNAL; }
};

using BuiltinFn = void (*)(const CallRequest &, CallReply &, Services &);
// Runs on the I/O loop as the call arrives, before it waits for a worker or
// for earlier steps of its chain: built-ins whose channels must exist before
// the caller's first message on them (data, or an abort) register them here.
// What it returns is passed to the built-in as CallRequest::prepared and
// dropped when the call ends, run or not; its destructor undoes the step.
// Throws spore::Error to fail the call.
using PrepareFn = std::shared_ptr<void> (*)(const CallRequest &, Services &);

struct Builtin {
    std::string_view name;
    BuiltinFn fn;
    bool blocking;  // true: runs on the worker pool, false: inline on the I/O loop
    PrepareFn prepare = nullptr;
};

// Calls of Python functions, run by the context's Python worker.
inline constexpr std::string_view kPythonPrefix = "py:";

// Looks a built-in up by name; null when there is none.
const Builtin *find_builtin(std::string_view name);

// The agent's version string, as in the hello marker.
const char *agent_version();

}  // namespace spore::agent
