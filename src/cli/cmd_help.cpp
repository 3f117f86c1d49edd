// spore help [command], and the overview that spore --help shows.
#include <algorithm>
#include <string>

#include "cmd.h"
#include "failure.h"
#include "io.h"

namespace spore::cli {

const char kMainHelp[] =
    "Usage: spore [OPTIONS] <command> [ARGS...]\n"
    "\n"
    "Opens spore contexts (agent processes), runs functions and commands in\n"
    "them and shows their logs.\n"
    "\n"
    "Commands:\n"
    "  call <target> <function> [json-args]   call a function, print its JSON result\n"
    "  run <target> [OPTIONS] [--] <argv...>  run a command, stream its output, exit with its status\n"
    "  ssh-shim [--target T] HOST COMMAND...  stand in for ssh (rsync -e, git): run COMMAND with our stdio\n"
    "  daemon [OPTIONS]                       keep connections open in the background for --daemon\n"
    "  help [command|options]                 show this help, a command's, or every library option\n"
    "\n"
    "Options (before the command, or among its own options):\n"
    "  --timeout MS          fail a call not answered within MS milliseconds\n"
    "                        (default: wait forever; for run, put it before 'run')\n"
    "  --connect-timeout MS  time each hop of the target may take to connect (default 30000)\n"
    "  --agent PATH          the spore-agent to ship (default: $SPORE_AGENT_PATH, then the installed one)\n"
    "  --daemon PATH         open targets through the spore daemon listening at PATH (default:\n"
    "                        $SPORE_DAEMON): hops stay connected between commands\n"
    "  -v, --verbose         also show the agents' own log records (from level DEBUG) on stderr\n"
    "  -q, --quiet           print no notes on stderr, only errors\n"
    "  -h, --help            show help (spore <command> --help for a command's)\n"
    "  -V, --version         show the versions of this tool and of the library\n"
    "\n"
    "Targets: hops separated by '/', each opened through the one before it:\n"
    "  local                     a new agent process on this machine\n"
    "  local/fork                that agent forks a copy of itself\n"
    "  local/local/fork/local    any chain of hops\n"
    "  local?name=web&connect_timeout=5000\n"
    "                            connect options: integers, true/false, else strings\n"
    "                            (\"...\" forces a string; %XX escapes '/', '&', '=')\n"
    "  ssh://deploy@web1:2222/sudo:root\n"
    "                            ssh to web1 as deploy, then sudo to root there\n"
    "  Hop forms: local, fork, ssh://[user@]host[:port], sudo:user, su:user,\n"
    "  doas:user, docker:container, podman:container, lxc:container,\n"
    "  lxd:container, kubectl:pod, jail:name, machinectl:machine, setns:pid,\n"
    "  setns:kind:container; any method also as method?option=value&...\n"
    "  Passwords: give them as ?password=... only if the command line is private;\n"
    "  better set SPORE_PASSWORD (used by the first hop that asks and has none).\n"
    "\n"
    "Exit status: 0 success, 1 runtime error, 2 usage error (also a bad target\n"
    "or JSON), 3 a hop could not be connected, 4 the call timed out (--timeout),\n"
    "5 the function failed in the target, 128+N interrupted by signal N.\n"
    "run exits with the command's status (128+N if a signal N killed it, 124 if\n"
    "its own --timeout expired).\n"
    "\n"
    "Examples:\n"
    "  spore call local sys.info\n"
    "  spore call --compact local/fork fs.stat '{\"path\": \"/etc\"}'\n"
    "  spore run local -- sh -c 'echo hello from $(hostname)'\n";

namespace {

// spore help options: the library's own option tables (spore_option_table),
// so this list can never disagree with what the library accepts.
void print_option_tables() {
    static const char *const kinds[][2] = {
        {"router", "router options (spore_router_new)"},
        {"attach", "attach options (spore_router_attach, --daemon)"},
        {"connect", "connect options (every hop: method?option=value&...; each method's own: docs/methods.md)"},
        {"transfer", "transfer options (spore_put_file and the other file functions)"},
        {"process", "process options (spore_proc_start)"},
    };
    std::string out;
    for (const auto &kind : kinds) {
        const spore_option_info *table = nullptr;
        size_t n = spore_option_table(kind[0], &table);
        out += std::string(kind[1]) + ":\n";
        for (size_t i = 0; i < n; ++i) {
            const spore_option_info &o = table[i];
            std::string type = o.type_name;
            if (type == "integer" && (o.min || o.max))
                type += " " + std::to_string(o.min) + ".." + std::to_string(o.max);
            std::string line = "  " + std::string(o.key);
            line.resize(std::max<size_t>(line.size() + 1, 22), ' ');
            line += type;
            if (*o.fallback) line += ", default " + std::string(o.fallback);
            out += line + "\n" + std::string(24, ' ') + o.doc + "\n";
        }
        out += "\n";
    }
    out_stdout(out);
}

}  // namespace

int cmd_help(Args &a) {
    if (a.done()) {
        out_stdout(kMainHelp);
        return kExitOk;
    }
    if (a.peek() == "options") {
        print_option_tables();
        return kExitOk;
    }
    const Command *command = find_command(a.peek());
    if (!command) usage_error("no help for unknown command '" + a.peek() + "'");
    out_stdout(command->help);
    return kExitOk;
}

}  // namespace spore::cli
