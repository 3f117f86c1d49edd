#include "options.h"

#include <errno.h>

#include <climits>
#include <cstdlib>

#include "failure.h"
#include "io.h"

namespace spore::cli {

bool Args::value_opt(const char *name, const char *short_name, std::string &value) {
    const std::string &a = v[i];
    std::string n = name;
    if (a == n || (short_name && a == short_name)) {
        if (i + 1 >= v.size()) usage_error("option " + a + " needs a value");
        value = v[i + 1];
        i += 2;
        return true;
    }
    if (a.size() > n.size() && a.compare(0, n.size(), n) == 0 && a[n.size()] == '=') {
        value = a.substr(n.size() + 1);
        ++i;
        return true;
    }
    return false;
}

bool Args::flag(const char *name, const char *short_name) {
    if (v[i] == name || (short_name && v[i] == short_name)) {
        ++i;
        return true;
    }
    return false;
}

bool help_option(Args &a, const char *help) {
    if (!a.flag("--help", "-h")) return false;
    out_stdout(help);
    return true;
}

int parse_ms(const std::string &opt, const std::string &text) {
    char *end = nullptr;
    errno = 0;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || errno || *end || v <= 0 || v > INT_MAX)
        usage_error("option " + opt + " needs a positive number of milliseconds, not '" + text + "'");
    return int(v);
}

bool global_option(Args &a, Global &g) {
    std::string value;
    if (a.value_opt("--timeout", nullptr, value)) g.call_timeout_ms = parse_ms("--timeout", value);
    else if (a.value_opt("--connect-timeout", nullptr, value)) g.connect_timeout_ms = parse_ms("--connect-timeout", value);
    else if (a.value_opt("--agent", nullptr, value)) g.agent_path = value;
    else if (a.value_opt("--daemon", nullptr, value)) g.daemon_path = value;
    else if (a.flag("--verbose", "-v")) g.verbose = true;
    else if (a.flag("--quiet", "-q")) g.quiet = true;
    else return false;
    return true;
}

void reject_verbose_with_quiet(const Global &g) {
    if (g.verbose && g.quiet) usage_error("--verbose and --quiet exclude each other");
}

}  // namespace spore::cli
