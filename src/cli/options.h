// The command line: a cursor over the arguments, and the global options
// every command accepts.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace spore::cli {

struct Global {
    int call_timeout_ms = -1;
    std::optional<int> connect_timeout_ms;
    bool verbose = false, quiet = false;
    std::string agent_path;
    std::string daemon_path;  // --daemon or $SPORE_DAEMON: use the router listening there
};

struct Args {
    std::vector<std::string> v;
    size_t i = 0;

    bool done() const { return i >= v.size(); }
    const std::string &peek() const { return v[i]; }

    // Matches "--name VALUE", "--name=VALUE" (and "-s VALUE" when short_name is given).
    bool value_opt(const char *name, const char *short_name, std::string &value);
    bool flag(const char *name, const char *short_name = nullptr);
};

// At -h/--help: shows help on stdout and takes the option.
bool help_option(Args &a, const char *help);

// The positive number of milliseconds text gives for option opt.
int parse_ms(const std::string &opt, const std::string &text);

// Takes a global option at the cursor; accepted before the command and
// among the command's own options.
bool global_option(Args &a, Global &g);

void reject_verbose_with_quiet(const Global &g);

}  // namespace spore::cli
