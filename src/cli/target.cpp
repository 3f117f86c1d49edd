#include "target.h"

#include <errno.h>

#include <cstdint>
#include <cstdlib>

#include "failure.h"

namespace spore::cli {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string percent_decode(std::string_view s, const std::string &hop) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1, lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) usage_error("bad %-escape in target hop '" + hop + "' (use %XX, e.g. %2F for '/')");
        out += char(hi * 16 + lo);
        i += 2;
    }
    return out;
}

bool method_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

// "a=1&flag&b=%2F": a bare key is a boolean flag, so that
// "local?agent_cache" means "local?agent_cache=true".
void add_query_options(Hop &hop, std::string_view query) {
    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view item = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        std::string key = percent_decode(item.substr(0, eq), hop.text);
        if (key.empty()) usage_error("option without a name in target hop '" + hop.text + "'");
        std::string value = eq == std::string_view::npos ? "true" : percent_decode(item.substr(eq + 1), hop.text);
        hop.options.emplace_back(std::move(key), std::move(value));
    }
}

// The hop that starts at t[i]; leaves i at the '/' after it, or at the end.
Hop read_hop(std::string_view t, size_t &i) {
    Hop hop;
    size_t start = i;
    while (i < t.size() && method_name_char(t[i])) ++i;
    hop.method.assign(t.substr(start, i - start));
    auto take_argument = [&](Hop::ArgKind kind, size_t from) {
        size_t end = from;
        while (end < t.size() && t[end] != '/' && t[end] != '?') ++end;
        hop.arg_kind = kind;
        hop.arg.assign(t.substr(from, end - from));
        i = end;
    };
    if (t.substr(i, 3) == "://") take_argument(Hop::kAuthority, i + 3);
    else if (i < t.size() && t[i] == ':') take_argument(Hop::kColon, i + 1);
    std::string_view query;
    if (i < t.size() && t[i] == '?') {
        size_t end = t.find('/', i);
        if (end == std::string_view::npos) end = t.size();
        query = t.substr(i + 1, end - i - 1);
        i = end;
    }
    hop.text.assign(t.substr(start, i - start));
    if (hop.method.empty()) {
        if (hop.text.empty()) usage_error("empty hop in target '" + std::string(t) + "'");
        usage_error("target hop '" + hop.text + "' does not start with a method name");
    }
    if (i < t.size() && t[i] != '/') {
        size_t slash = t.find('/', i);
        usage_error("unexpected '" + std::string(1, t[i]) + "' in target hop '" +
                    std::string(t.substr(start, slash == std::string_view::npos ? slash : slash - start)) + "'");
    }
    if (hop.arg_kind != Hop::kNone) {
        if (hop.arg.empty()) usage_error("target hop '" + hop.text + "' has an empty argument");
        hop.arg = percent_decode(hop.arg, hop.text);
    }
    add_query_options(hop, query);
    return hop;
}

void set_string_option(spore_options *opts, const char *key, const std::string &value) {
    if (spore_options_set_str(opts, key, value.c_str()) != SPORE_OK) lib_failure(kExitUsage);
}

// [user@]host[:port]; an IPv6 host is written in brackets.
void set_ssh_authority(spore_options *opts, const Hop &hop) {
    std::string rest = hop.arg;
    size_t at = rest.rfind('@');
    if (at != std::string::npos) {
        set_string_option(opts, "username", rest.substr(0, at));
        rest = rest.substr(at + 1);
    }
    std::string host = rest, port;
    if (!rest.empty() && rest.front() == '[') {
        size_t close = rest.find(']');
        if (close == std::string::npos) usage_error("unclosed '[' in target hop '" + hop.text + "'");
        host = rest.substr(1, close - 1);
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':') usage_error("bad host in target hop '" + hop.text + "'");
            port = rest.substr(close + 2);
        }
    } else if (size_t colon = rest.rfind(':'); colon != std::string::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    if (host.empty()) usage_error("no host in target hop '" + hop.text + "'");
    set_string_option(opts, "hostname", host);
    if (!port.empty()) set_option(opts, "port", port);
}

// method:argument sets the method's main option; false for a method that has none.
bool set_colon_argument(spore_options *opts, const Hop &hop) {
    static const std::pair<const char *, const char *> kMainOption[] = {
        {"sudo", "username"},   {"su", "username"},     {"doas", "username"},  {"docker", "container"},
        {"podman", "container"}, {"lxc", "container"},  {"lxd", "container"},  {"jail", "container"},
        {"machinectl", "container"}, {"kubectl", "pod"}, {"setns", "pid"}};
    if (hop.method == "setns") {
        // setns:1234 names a process; setns:docker:web names a container of a kind.
        size_t colon = hop.arg.find(':');
        if (colon == std::string::npos) {
            set_option(opts, "pid", hop.arg);
        } else {
            set_string_option(opts, "kind", hop.arg.substr(0, colon));
            set_string_option(opts, "container", hop.arg.substr(colon + 1));
        }
        return true;
    }
    for (auto &[method, key] : kMainOption) {
        if (hop.method != method) continue;
        set_string_option(opts, key, hop.arg);
        return true;
    }
    return false;
}

void set_hop_argument(spore_options *opts, const Hop &hop) {
    if (hop.arg_kind == Hop::kNone) return;
    if (hop.arg_kind == Hop::kAuthority && hop.method == "ssh") return set_ssh_authority(opts, hop);
    if (hop.arg_kind == Hop::kColon && set_colon_argument(opts, hop)) return;
    usage_error("method '" + hop.method + "' takes no " +
                (hop.arg_kind == Hop::kColon ? "':argument'" : "'://authority'") + " (in target hop '" +
                hop.text + "')");
}

bool looks_like_integer(const std::string &value) {
    if (value.empty()) return false;
    for (size_t k = 0; k < value.size(); ++k)
        if (!((value[k] >= '0' && value[k] <= '9') || (k == 0 && value[k] == '-' && value.size() > 1)))
            return false;
    return true;
}

}  // namespace

bool Hop::has_option(std::string_view key) const {
    for (auto &kv : options)
        if (kv.first == key) return true;
    return false;
}

std::vector<Hop> parse_target(std::string_view target) {
    if (target.empty()) usage_error("empty target (try 'local')");
    std::vector<Hop> hops;
    size_t i = 0;
    for (;;) {
        hops.push_back(read_hop(target, i));
        if (i >= target.size()) break;
        ++i;  // the '/'
        if (i >= target.size()) usage_error("target '" + std::string(target) + "' ends with '/'");
    }
    return hops;
}

void set_option(spore_options *opts, const std::string &key, const std::string &value) {
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
        return set_string_option(opts, key.c_str(), value.substr(1, value.size() - 2));
    int rc;
    if (value == "true" || value == "false") {
        rc = spore_options_set_bool(opts, key.c_str(), value == "true");
    } else {
        // Digits beyond the range of an integer are a string.
        bool integer = looks_like_integer(value);
        errno = 0;
        long long v = integer ? std::strtoll(value.c_str(), nullptr, 10) : 0;
        if (integer && errno == 0) rc = spore_options_set_int(opts, key.c_str(), int64_t(v));
        else rc = spore_options_set_str(opts, key.c_str(), value.c_str());
    }
    if (rc != SPORE_OK) lib_failure(kExitUsage);
}

void set_hop_options(spore_options *opts, const Hop &hop) {
    for (auto &[key, value] : hop.options) set_option(opts, key, value);
    set_hop_argument(opts, hop);
}

}  // namespace spore::cli
