// spore run: a program in the last hop of a target (proc.run), its output
// lines copied to ours as they arrive, its status as our exit code.
#include <signal.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cmd.h"
#include "failure.h"
#include "io.h"
#include "json.h"
#include "session.h"
#include "target.h"

namespace spore::cli {

const char kRunHelp[] =
    "Usage: spore [OPTIONS] run <target> [RUN OPTIONS] [--] <program> [args...]\n"
    "\n"
    "Runs a program in the last hop of <target> (proc.run) and copies its output\n"
    "lines to stdout and stderr as they arrive. Exits with the program's status,\n"
    "128+N if signal N killed it, 124 if --timeout (given after 'run') expired.\n"
    "Output is forwarded line by line as text: a last line without a newline gets\n"
    "one, and bytes that are not UTF-8 are replaced (use 'call proc.run' with\n"
    "\"stdout_binary\": true and --raw-data for binary output).\n"
    "\n"
    "Run options:\n"
    "  --cwd DIR         working directory of the program\n"
    "  --env K=V         set a variable in its environment (repeatable)\n"
    "  --timeout MS      kill the program (its process group) after MS milliseconds\n"
    "  --input FILE      feed FILE ('-': this program's standard input) to its stdin\n"
    "                    (default: /dev/null)\n"
    "\n"
    "Examples:\n"
    "  spore run local -- uname -a\n"
    "  spore run local/fork --cwd /tmp --env LANG=C -- sh -c 'ls | head -3'\n"
    "  echo data | spore run local --input - -- wc -c\n";

namespace {

struct RunOptions {
    std::optional<std::string> target, cwd, input_file;
    std::vector<std::pair<std::string, std::string>> env;
    std::optional<int> cmd_timeout;  // its own --timeout, after 'run'
    std::vector<std::string> argv;
};

// The options up to the program; true when one was taken.
bool take_run_option(Args &a, Global &g, RunOptions &o) {
    std::string value;
    if (a.value_opt("--cwd", nullptr, value)) {
        o.cwd = value;
    } else if (a.value_opt("--env", "-e", value)) {
        size_t eq = value.find('=');
        if (eq == std::string::npos || eq == 0) usage_error("--env needs NAME=VALUE, not '" + value + "'");
        o.env.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else if (a.value_opt("--timeout", nullptr, value)) {
        o.cmd_timeout = parse_ms("--timeout", value);
    } else if (a.value_opt("--input", "-i", value)) {
        o.input_file = value;
    } else {
        return global_option(a, g);
    }
    return true;
}

// The target is the first word that is no option; the program starts at
// the next one, or after "--". Nullopt once --help has been shown: that is
// then all there is to do.
std::optional<RunOptions> parse_run_options(Args &a, Global &g) {
    RunOptions o;
    while (!a.done()) {
        const std::string &s = a.peek();
        if (s == "--") {
            ++a.i;
            break;
        }
        if (s.empty() || s[0] != '-' || s == "-") {
            if (o.target) break;
            o.target = s;
            ++a.i;
        } else if (help_option(a, kRunHelp)) {
            return std::nullopt;
        } else if (!take_run_option(a, g, o)) {
            usage_error("unknown option '" + s + "' for run (see spore run --help)");
        }
    }
    if (!o.target && !a.done()) {
        o.target = a.peek();
        ++a.i;
    }
    for (; !a.done(); ++a.i) o.argv.push_back(a.peek());
    return o;
}

// proc.run's arguments: output streamed as log records, not captured.
std::string proc_run_arguments(const RunOptions &o) {
    JsonPtr args = new_json_object();
    cJSON *argv = add_json_array(args.get(), "argv");
    for (const std::string &word : o.argv) append_json_string(argv, word);
    add_json_bool(args.get(), "stream", true);
    add_json_bool(args.get(), "capture", false);
    if (o.cwd) add_json_string(args.get(), "cwd", *o.cwd);
    if (o.cmd_timeout) add_json_number(args.get(), "timeout_ms", *o.cmd_timeout);
    if (!o.env.empty()) {
        cJSON *env = add_json_object(args.get(), "env");
        for (auto &[name, value] : o.env) add_json_string(env, name.c_str(), value);
    }
    return format_json(args.get(), false);
}

// Our exit code for proc.run's result: the program's status.
int exit_code_for_status(const spore_result *res, const RunOptions &o) {
    std::string error;
    JsonPtr v = parse_json(spore_result_json(res), &error);
    if (!v || !cJSON_IsObject(v.get())) throw Failure{kExitRuntime, "proc.run returned an unexpected result"};
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v.get(), "timed_out")))
        throw Failure{kExitCmdTimeout, "the command timed out after " + std::to_string(o.cmd_timeout.value_or(0)) +
                                           " ms and was killed"};
    if (auto signo = json_integer_member(v.get(), "signal")) return 128 + int(*signo);
    if (auto rc = json_integer_member(v.get(), "rc")) return int(*rc);
    throw Failure{kExitRuntime, "proc.run did not report the command's status"};
}

}  // namespace

int cmd_run(Args &a, Global &g) {
    std::optional<RunOptions> parsed = parse_run_options(a, g);
    if (!parsed) return kExitOk;
    const RunOptions &o = *parsed;
    if (!o.target) usage_error("run needs a target and a program (see spore run --help)");
    if (o.argv.empty()) usage_error("run needs a program to run, e.g. spore run local -- uname -a");
    reject_verbose_with_quiet(g);
    std::vector<Hop> hops = parse_target(*o.target);
    std::string args = proc_run_arguments(o);
    std::string input = o.input_file ? read_file(*o.input_file) : std::string();

    // Output lines travel as INFO records: the level must let them through.
    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_INFO, true, 100000);
    spore_context *ctx = s.open(hops);
    s.pump()->set_output_context(spore_context_id(ctx));
    ResultPtr res = s.call(ctx, "proc.run", args, input);
    s.pump()->stop();  // prints every line that came before the result
    if (stdout_broken()) throw Interrupted{SIGPIPE};
    if (uint64_t dropped = s.pump()->dropped(); dropped && !g.quiet)
        out_stderr("spore: warning: " + std::to_string(dropped) + " output lines were dropped (buffer full)\n");
    return exit_code_for_status(res.get(), o);
}

}  // namespace spore::cli
