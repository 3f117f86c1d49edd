// spore - the command-line front end of libspore.
//
//   spore [global options] call <target> <function> [json-args]
//   spore [global options] run <target> [run options] [--] <argv...>
//   spore [global options] ssh-shim [--target T] HOST COMMAND...
//   spore daemon [--socket PATH] [--foreground] [--log-file FILE] | --stop | --status
//
// It uses nothing but the public C API (spore/spore.h) and cJSON. This file
// takes the global options before the command and hands the rest to the
// command (cmd_*.cpp). See docs/cli.md for the user documentation.
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "cmd.h"
#include "failure.h"
#include "io.h"
#include "options.h"
#include "session.h"
#include "signals.h"
#include "spore/spore.h"

namespace spore::cli {

namespace {

// In the order the unknown-command message lists them.
const Command kCommands[] = {
    {"call", cmd_call, kCallHelp},
    {"run", cmd_run, kRunHelp},
    {"ssh-shim", cmd_ssh_shim, kShimHelp},
    {"daemon", cmd_daemon, kDaemonHelp},
};

std::string command_names() {
    std::string names;
    for (const Command &c : kCommands) names += (names.empty() ? "" : ", ") + std::string(c.name);
    return names;
}

// The options before the command; returns false when one of them (--help,
// --version) was all there is to do.
bool take_global_options(Args &a, Global &g) {
    if (const char *d = std::getenv("SPORE_DAEMON"); d && *d) g.daemon_path = d;
    while (!a.done()) {
        const std::string &s = a.peek();
        if (s.empty() || s[0] != '-') break;
        if (help_option(a, kMainHelp)) return false;
        if (a.flag("--version", "-V")) {
            out_stdout(std::string("spore ") + SPORE_VERSION_STRING + " (libspore " + spore_version_string() + ")\n");
            return false;
        }
        if (!global_option(a, g)) usage_error("unknown option '" + s + "' (see spore --help)");
    }
    return true;
}

int run_main(int argc, char **argv) {
    Args a;
    for (int k = 1; k < argc; ++k) a.v.emplace_back(argv[k]);
    Global g;
    if (!take_global_options(a, g)) return kExitOk;
    if (a.done()) usage_error("no command given: use call or run (see spore --help)");
    std::string name = a.peek();
    ++a.i;
    // Before the handlers: help only writes, and a closed stdout may end it.
    if (name == "help") return cmd_help(a);
    const Command *command = find_command(name);
    if (!command) usage_error("unknown command '" + name + "' (commands: " + command_names() + ")");
    install_signal_handlers();
    return command->run(a, g);
}

}  // namespace

const Command *find_command(std::string_view name) {
    for (const Command &c : kCommands)
        if (name == c.name) return &c;
    return nullptr;
}

}  // namespace spore::cli

int main(int argc, char **argv) {
    using namespace spore::cli;
    environment_password();  // taken out of the environment before anything is started
    try {
        return run_main(argc, argv);
    } catch (const Failure &f) {
        out_stderr("spore: " + flatten(f.message) + "\n");
        return f.exit_code;
    } catch (const Interrupted &i) {
        // The session is gone (router freed: agents and commands stopped).
        return 128 + i.signo;
    } catch (const std::bad_alloc &) {
        out_stderr("spore: out of memory\n");
    } catch (const std::exception &e) {
        out_stderr(std::string("spore: internal error: ") + flatten(e.what()) + "\n");
    } catch (...) {
        out_stderr("spore: internal error\n");
    }
    return kExitRuntime;
}
