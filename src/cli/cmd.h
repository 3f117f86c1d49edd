// The commands of the tool: one file each (cmd_*.cpp), found by name in
// the table of main.cpp.
#pragma once

#include <string_view>

#include "options.h"

namespace spore::cli {

// A command takes its own options and arguments from the cursor (global
// options are accepted among them) and returns the exit code.
using CommandFn = int (*)(Args &a, Global &g);

struct Command {
    const char *name;
    CommandFn run;
    const char *help;  // spore help NAME, spore NAME --help
};

// The command of that name; null when there is none.
const Command *find_command(std::string_view name);

int cmd_call(Args &a, Global &g);
int cmd_run(Args &a, Global &g);
int cmd_ssh_shim(Args &a, Global &g);
int cmd_daemon(Args &a, Global &g);
// spore help [command]: needs no global options.
int cmd_help(Args &a);

extern const char kMainHelp[];
extern const char kCallHelp[];
extern const char kRunHelp[];
extern const char kShimHelp[];
extern const char kDaemonHelp[];

}  // namespace spore::cli
