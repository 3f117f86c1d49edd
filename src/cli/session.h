// One command's use of the library: a router (its own or a daemon's), the
// contexts of one target and, when wanted, a pump for their log records.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "handles.h"
#include "log_pump.h"
#include "options.h"
#include "target.h"

namespace spore::cli {

// SPORE_PASSWORD, read on the first call and removed from the environment,
// so that no launcher or agent started from here inherits it.
const std::string &environment_password();

// Frees what it opened in the right order however the program leaves.
class Session {
public:
    // Forwards log records from log_level, through a LogPump when pump is set.
    Session(const Global &g, int log_level, bool pump, size_t log_queue);
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    LogPump *pump() const { return pump_.get(); }

    // Opens every hop through the one before; returns the last.
    spore_context *open(const std::vector<Hop> &hops);

    // Runs a call, waiting for it, for a signal or for --timeout.
    ResultPtr call(spore_context *ctx, const char *fn, const std::string &args, const std::string &data);

private:
    const Global &g_;
    RouterPtr router_;
    std::vector<spore_context *> contexts_;
    std::unique_ptr<LogPump> pump_;

    OptionsPtr connect_options(const Hop &hop) const;
};

}  // namespace spore::cli
