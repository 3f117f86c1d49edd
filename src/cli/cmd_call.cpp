// spore call: one function in the last hop of a target, its JSON result on stdout.
#include <signal.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cmd.h"
#include "failure.h"
#include "io.h"
#include "json.h"
#include "session.h"
#include "target.h"

namespace spore::cli {

const char kCallHelp[] =
    "Usage: spore [OPTIONS] call [CALL OPTIONS] <target> <function> [json-args]\n"
    "\n"
    "Opens <target>, calls <function> in its last hop with the arguments\n"
    "<json-args> (a JSON object; default {}) and prints the JSON result on\n"
    "stdout, indented unless --compact.\n"
    "\n"
    "Call options:\n"
    "  --compact         print the result on one line\n"
    "  --raw-data        write the result's binary part, raw, to stdout (the JSON\n"
    "                    result then goes to stderr, unless --quiet); without it\n"
    "                    only the binary part's size is noted on stderr\n"
    "  --data FILE       send FILE ('-': standard input) as the call's binary part\n"
    "\n"
    "Functions of every agent: sys.ping sys.echo sys.getenv sys.info proc.run\n"
    "fs.stat fs.read fs.write fs.list fs.mkdir fs.remove fs.rename fs.chmod\n"
    "fs.chown fs.readlink fs.symlink fs.mktemp.\n"
    "\n"
    "Examples:\n"
    "  spore call local sys.ping\n"
    "  spore call local/fork sys.echo '{\"value\": [1, 2, 3]}'\n"
    "  spore call --raw-data local fs.read '{\"path\": \"/etc/hostname\"}' > hostname\n"
    "  spore call --data ./app.conf local fs.write '{\"path\": \"/tmp/app.conf\"}'\n";

namespace {

struct CallOptions {
    bool compact = false, raw = false;
    std::optional<std::string> data_file;
    std::vector<std::string> positional;  // target, function [, json-args]
};

// Nullopt once --help has been shown: that is then all there is to do.
std::optional<CallOptions> parse_call_options(Args &a, Global &g) {
    CallOptions o;
    bool options_done = false;
    while (!a.done()) {
        const std::string &s = a.peek();
        if (options_done || s.empty() || s[0] != '-' || s == "-") {
            o.positional.push_back(s);
            ++a.i;
            continue;
        }
        std::string value;
        if (s == "--") {
            options_done = true;
            ++a.i;
        } else if (help_option(a, kCallHelp)) {
            return std::nullopt;
        } else if (a.flag("--compact")) {
            o.compact = true;
        } else if (a.flag("--raw-data")) {
            o.raw = true;
        } else if (a.value_opt("--data", nullptr, value)) {
            o.data_file = value;
        } else if (!global_option(a, g)) {
            usage_error("unknown option '" + s + "' for call (see spore call --help)");
        }
    }
    return o;
}

// The arguments as cJSON reads them, refused before anything is started
// when they are no JSON object. Sent as printed here, so that the agent
// reads them the way they were checked.
std::string checked_arguments(const std::string &args) {
    std::string error;
    JsonPtr v = parse_json(args, &error);
    if (!v) usage_error("arguments are not valid JSON: " + error);
    if (!cJSON_IsObject(v.get())) usage_error("arguments must be a JSON object, e.g. '{\"path\": \"/\"}'");
    return format_json(v.get(), false);
}

void print_result(const spore_result *res, const CallOptions &o, const Global &g) {
    std::string json = spore_result_json(res);
    std::string error;
    JsonPtr v = parse_json(json, &error);
    std::string text = v ? format_json(v.get(), !o.compact) : json;  // not expected: print what came
    text += '\n';
    size_t len = 0;
    const void *bytes = spore_result_bytes(res, &len);
    if (o.raw) {
        if (!g.quiet) out_stderr(text);
        if (len) out_stdout(std::string_view(static_cast<const char *>(bytes), len));
    } else {
        out_stdout(text);
        if (len && !g.quiet)
            out_stderr("spore: note: the result has a binary part of " + std::to_string(len) +
                       " bytes (--raw-data writes it to stdout)\n");
    }
}

}  // namespace

int cmd_call(Args &a, Global &g) {
    std::optional<CallOptions> parsed = parse_call_options(a, g);
    if (!parsed) return kExitOk;
    const CallOptions &o = *parsed;
    const std::vector<std::string> &pos = o.positional;
    if (pos.size() < 2) usage_error("call needs a target and a function (see spore call --help)");
    if (pos.size() > 3) usage_error("call takes one JSON argument object, got extra '" + pos[3] + "'");
    reject_verbose_with_quiet(g);
    std::vector<Hop> hops = parse_target(pos[0]);
    const std::string &fn = pos[1];
    std::string args = checked_arguments(pos.size() > 2 ? pos[2] : "{}");
    std::string data = o.data_file ? read_file(*o.data_file) : std::string();

    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_WARNING, g.verbose, 10000);
    spore_context *ctx = s.open(hops);
    ResultPtr res = s.call(ctx, fn.c_str(), args, data);
    if (s.pump()) s.pump()->stop();
    print_result(res.get(), o, g);
    if (stdout_broken()) throw Interrupted{SIGPIPE};
    return kExitOk;
}

}  // namespace spore::cli
