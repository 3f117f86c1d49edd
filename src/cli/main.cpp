// spore - the command-line front end of libspore.
//
//   spore [global options] call <target> <function> [json-args]
//   spore [global options] run <target> [run options] [--] <argv...>
//   spore [global options] ssh-shim [--target T] HOST COMMAND...
//   spore daemon [--socket PATH] [--foreground] [--log-file FILE] | --stop | --status
//
// It uses nothing but the public C API (spore/spore.h); the small JSON
// reader/printer below exists because the library does not export one.
// See docs/cli.md for the user documentation.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "spore/spore.h"

namespace {

// ------------------------------------------------------------ exit codes

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;   // any other failure
constexpr int kExitUsage = 2;     // bad command line, target, options or JSON
constexpr int kExitConnect = 3;   // a hop of the target could not be opened
constexpr int kExitTimeout = 4;   // the call took longer than --timeout
constexpr int kExitRemote = 5;    // the function failed in the target
constexpr int kExitCmdTimeout = 124;  // run: the command hit its own --timeout

// A failure that ends the program: one "spore: <message>" line and a code.
struct Failure {
    int exit_code;
    std::string message;
};

// Interruption by a signal (SIGINT, SIGTERM, SIGHUP) or a closed stdout (SIGPIPE).
struct Interrupted {
    int signo;
};

[[noreturn]] void usage_error(std::string msg) { throw Failure{kExitUsage, std::move(msg)}; }

// One line: newlines become " | ", trailing ones are dropped.
std::string flatten(std::string_view s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
        if (c == '\n' || c == '\r') out += " | ";
        else out += c;
    }
    return out;
}

// The detail of a spore_error as one message; the remote error type is added
// when the message does not already name it.
std::string error_text(const spore_error *e) {
    std::string msg = e->message && *e->message ? e->message : spore_strerror(e->code);
    if (e->code == SPORE_EREMOTE && e->remote_type && *e->remote_type &&
        msg.find(e->remote_type) == std::string::npos)
        msg = std::string(e->remote_type) + ": " + msg;
    return flatten(msg);
}

int exit_code_for_call(int code) {
    switch (code) {
        case SPORE_EINVAL: return kExitUsage;
        case SPORE_ETIMEDOUT: return kExitTimeout;
        case SPORE_ENOFUNC:
        case SPORE_EBADARGS:
        case SPORE_EREMOTE:
        case SPORE_EREFUSED: return kExitRemote;
        default: return kExitRuntime;
    }
}

int exit_code_for_connect(int code) {
    // EINVAL here is a mistake in the target: unknown method or option.
    return code == SPORE_EINVAL ? kExitUsage : kExitConnect;
}

[[noreturn]] void lib_failure(int exit_code) {
    throw Failure{exit_code, error_text(spore_last_error())};
}

// ------------------------------------------------------------------ output

std::atomic<bool> g_stdout_broken{false};

// Writes all of buf to fd; false on error (EPIPE when the reader went away).
bool write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = ::write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                // Whoever gave us the fd made it non-blocking (rsync does):
                // wait until it takes more.
                pollfd p{fd, POLLOUT, 0};
                if (::poll(&p, 1, -1) < 0 && errno != EINTR) return false;
                continue;
            }
            return false;
        }
        buf += n;
        len -= size_t(n);
    }
    return true;
}

void out_stdout(std::string_view s) {
    if (g_stdout_broken) return;
    if (!write_all(1, s.data(), s.size()) && errno == EPIPE) g_stdout_broken = true;
}

void out_stderr(std::string_view s) { (void)write_all(2, s.data(), s.size()); }

// -------------------------------------------------------------------- JSON
// A strict RFC 8259 reader keeping the exact text of scalars, enough to
// validate arguments, re-indent results and read a few fields.

struct JValue {
    enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
    std::string text;                                   // scalars: exact source text
    std::vector<JValue> items;                          // array items, object values
    std::vector<std::string> keys;                      // object keys as source text (quoted)

    const JValue *get(std::string_view key) const {
        for (size_t k = 0; k < keys.size(); ++k)
            if (keys[k].size() == key.size() + 2 && std::string_view(keys[k]).substr(1, key.size()) == key)
                return &items[k];
        return nullptr;
    }
    std::optional<int64_t> as_int() const {
        if (type != kNumber) return std::nullopt;
        char *end = nullptr;
        errno = 0;
        long long v = std::strtoll(text.c_str(), &end, 10);
        if (errno || !end || *end) return std::nullopt;
        return int64_t(v);
    }
};

class JsonReader {
public:
    explicit JsonReader(std::string_view s) : s_(s) {}

    // The document, or nullopt with error() set.
    std::optional<JValue> parse() {
        JValue v;
        if (!value(v, 0)) return std::nullopt;
        skip_ws();
        if (i_ != s_.size()) return fail("unexpected text after the JSON value");
        return v;
    }
    const std::string &error() const { return err_; }

private:
    static constexpr int kMaxDepth = 1000;
    std::string_view s_;
    size_t i_ = 0;
    std::string err_;

    std::nullopt_t fail(const std::string &what) {
        if (err_.empty()) err_ = what + " at offset " + std::to_string(i_);
        return std::nullopt;
    }
    void skip_ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }
    static bool digit(char c) { return c >= '0' && c <= '9'; }
    static bool hex(char c) { return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

    bool string(std::string &out) {
        size_t start = i_++;  // at the opening quote
        while (i_ < s_.size()) {
            unsigned char c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') {
                ++i_;
                out.assign(s_.substr(start, i_ - start));
                return true;
            }
            if (c < 0x20) return (void)fail("control character in string"), false;
            if (c == '\\') {
                if (++i_ >= s_.size()) break;
                char e = s_[i_];
                if (e == 'u') {
                    for (int k = 1; k <= 4; ++k)
                        if (i_ + size_t(k) >= s_.size() || !hex(s_[i_ + size_t(k)]))
                            return (void)fail("bad \\u escape"), false;
                    i_ += 4;
                } else if (!std::strchr("\"\\/bfnrt", e) || e == '\0') {
                    return (void)fail("bad escape in string"), false;
                }
            }
            ++i_;
        }
        return (void)fail("unterminated string"), false;
    }

    bool number(std::string &out) {
        size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        if (i_ >= s_.size() || !digit(s_[i_])) return (void)fail("bad number"), false;
        if (s_[i_] == '0') ++i_;
        else while (i_ < s_.size() && digit(s_[i_])) ++i_;
        if (i_ < s_.size() && s_[i_] == '.') {
            ++i_;
            if (i_ >= s_.size() || !digit(s_[i_])) return (void)fail("bad number"), false;
            while (i_ < s_.size() && digit(s_[i_])) ++i_;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (i_ >= s_.size() || !digit(s_[i_])) return (void)fail("bad number"), false;
            while (i_ < s_.size() && digit(s_[i_])) ++i_;
        }
        out.assign(s_.substr(start, i_ - start));
        return true;
    }

    bool value(JValue &v, int depth) {
        if (depth > kMaxDepth) return (void)fail("JSON nested too deeply"), false;
        skip_ws();
        if (i_ >= s_.size()) return (void)fail("unexpected end of JSON"), false;
        char c = s_[i_];
        if (c == '{') {
            v.type = JValue::kObject;
            ++i_;
            skip_ws();
            if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
            for (;;) {
                skip_ws();
                if (i_ >= s_.size() || s_[i_] != '"') return (void)fail("expected a string key"), false;
                std::string key;
                if (!string(key)) return false;
                skip_ws();
                if (i_ >= s_.size() || s_[i_] != ':') return (void)fail("expected ':'"), false;
                ++i_;
                JValue member;
                if (!value(member, depth + 1)) return false;
                v.keys.push_back(std::move(key));
                v.items.push_back(std::move(member));
                skip_ws();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
                return (void)fail("expected ',' or '}'"), false;
            }
        }
        if (c == '[') {
            v.type = JValue::kArray;
            ++i_;
            skip_ws();
            if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
            for (;;) {
                JValue item;
                if (!value(item, depth + 1)) return false;
                v.items.push_back(std::move(item));
                skip_ws();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
                return (void)fail("expected ',' or ']'"), false;
            }
        }
        if (c == '"') {
            v.type = JValue::kString;
            return string(v.text);
        }
        if (c == '-' || digit(c)) {
            v.type = JValue::kNumber;
            return number(v.text);
        }
        for (auto [word, type] : {std::pair{"true", JValue::kBool}, std::pair{"false", JValue::kBool},
                                  std::pair{"null", JValue::kNull}}) {
            if (literal(word)) {
                v.type = type;
                v.text = word;
                return true;
            }
        }
        return (void)fail("unexpected character"), false;
    }
};

void json_write(const JValue &v, std::string &out, bool pretty, int indent) {
    auto newline = [&](int level) {
        if (!pretty) return;
        out += '\n';
        out.append(size_t(level) * 2, ' ');
    };
    switch (v.type) {
        case JValue::kArray:
            if (v.items.empty()) return (void)(out += "[]");
            out += '[';
            for (size_t k = 0; k < v.items.size(); ++k) {
                if (k) out += ',';
                newline(indent + 1);
                json_write(v.items[k], out, pretty, indent + 1);
            }
            newline(indent);
            out += ']';
            return;
        case JValue::kObject:
            if (v.keys.empty()) return (void)(out += "{}");
            out += '{';
            for (size_t k = 0; k < v.keys.size(); ++k) {
                if (k) out += ',';
                newline(indent + 1);
                out += v.keys[k];
                out += pretty ? ": " : ":";
                json_write(v.items[k], out, pretty, indent + 1);
            }
            newline(indent);
            out += '}';
            return;
        default:
            out += v.text;
    }
}

// A JSON string literal for s (UTF-8 passed through, control characters escaped).
std::string json_quote(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
    return out;
}

// ----------------------------------------------------------------- targets
//
//   target := hop ( '/' hop )*
//   hop    := method [ '://' authority | ':' argument ] [ '?' key[=value] ( '&' key[=value] )* ]
//
// The argument forms set a method's main option: "ssh://user@host:port",
// "sudo:user", "docker:container", "kubectl:pod", "setns:pid" and so on.

struct Hop {
    std::string text;    // the hop as written, for messages
    std::string method;
    enum ArgKind { kNone, kColon, kAuthority } arg_kind = kNone;
    std::string arg;
    std::vector<std::pair<std::string, std::string>> options;  // decoded, in order
};

std::string percent_decode(std::string_view s, const std::string &hop) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        auto hexval = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = i + 2 < s.size() ? hexval(s[i + 1]) : -1, lo = i + 2 < s.size() ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) usage_error("bad %-escape in target hop '" + hop + "' (use %XX, e.g. %2F for '/')");
        out += char(hi * 16 + lo);
        i += 2;
    }
    return out;
}

std::vector<Hop> parse_target(std::string_view t) {
    if (t.empty()) usage_error("empty target (try 'local')");
    std::vector<Hop> hops;
    size_t i = 0;
    for (;;) {
        Hop hop;
        size_t start = i;
        auto name_char = [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                   c == '-' || c == '.';
        };
        while (i < t.size() && name_char(t[i])) ++i;
        hop.method.assign(t.substr(start, i - start));
        auto hop_end = [&](size_t from) {  // end of this hop's argument / options
            size_t e = from;
            while (e < t.size() && t[e] != '/' && t[e] != '?') ++e;
            return e;
        };
        if (t.substr(i, 3) == "://") {
            hop.arg_kind = Hop::kAuthority;
            size_t e = hop_end(i + 3);
            hop.arg.assign(t.substr(i + 3, e - i - 3));
            i = e;
        } else if (i < t.size() && t[i] == ':') {
            hop.arg_kind = Hop::kColon;
            size_t e = hop_end(i + 1);
            hop.arg.assign(t.substr(i + 1, e - i - 1));
            i = e;
        }
        std::string_view query;
        if (i < t.size() && t[i] == '?') {
            size_t e = t.find('/', i);
            if (e == std::string_view::npos) e = t.size();
            query = t.substr(i + 1, e - i - 1);
            i = e;
        }
        hop.text.assign(t.substr(start, i - start));
        if (hop.method.empty()) {
            if (hop.text.empty()) usage_error("empty hop in target '" + std::string(t) + "'");
            usage_error("target hop '" + hop.text + "' does not start with a method name");
        }
        if (i < t.size() && t[i] != '/')
            usage_error("unexpected '" + std::string(1, t[i]) + "' in target hop '" +
                        std::string(t.substr(start, t.find('/', i) == std::string_view::npos
                                                             ? std::string_view::npos
                                                             : t.find('/', i) - start)) +
                        "'");
        if (hop.arg_kind != Hop::kNone) {
            if (hop.arg.empty()) usage_error("target hop '" + hop.text + "' has an empty argument");
            hop.arg = percent_decode(hop.arg, hop.text);
        }
        while (!query.empty()) {
            size_t amp = query.find('&');
            std::string_view item = query.substr(0, amp);
            query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
            if (item.empty()) continue;
            size_t eq = item.find('=');
            std::string key = percent_decode(item.substr(0, eq), hop.text);
            if (key.empty()) usage_error("option without a name in target hop '" + hop.text + "'");
            // A bare key is a boolean flag: "local?agent_cache" == "local?agent_cache=true".
            std::string value = eq == std::string_view::npos ? "true" : percent_decode(item.substr(eq + 1), hop.text);
            hop.options.emplace_back(std::move(key), std::move(value));
        }
        hops.push_back(std::move(hop));
        if (i >= t.size()) break;
        ++i;  // the '/'
        if (i >= t.size()) usage_error("target '" + std::string(t) + "' ends with '/'");
    }
    return hops;
}

// Sets key=value with the type the text looks like: integer, true/false, or
// string; "\"...\"" forces a string.
void set_option(spore_options *opts, const std::string &key, const std::string &value) {
    int rc;
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        rc = spore_options_set_str(opts, key.c_str(), value.substr(1, value.size() - 2).c_str());
    } else if (value == "true" || value == "false") {
        rc = spore_options_set_bool(opts, key.c_str(), value == "true");
    } else {
        bool is_int = !value.empty();
        for (size_t k = 0; k < value.size(); ++k)
            if (!((value[k] >= '0' && value[k] <= '9') || (k == 0 && value[k] == '-' && value.size() > 1)))
                is_int = false;
        char *end = nullptr;
        errno = 0;
        long long v = is_int ? std::strtoll(value.c_str(), &end, 10) : 0;
        if (is_int && errno == 0) rc = spore_options_set_int(opts, key.c_str(), int64_t(v));
        else rc = spore_options_set_str(opts, key.c_str(), value.c_str());
    }
    if (rc != SPORE_OK) lib_failure(kExitUsage);
}

// The argument forms of the planned transports, as connect options.
void set_hop_argument(spore_options *opts, const Hop &hop) {
    if (hop.arg_kind == Hop::kNone) return;
    if (hop.arg_kind == Hop::kAuthority && hop.method == "ssh") {
        // [user@]host[:port]; an IPv6 host is written in brackets.
        std::string rest = hop.arg;
        size_t at = rest.rfind('@');
        if (at != std::string::npos) {
            set_option(opts, "username", "\"" + rest.substr(0, at) + "\"");
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
        set_option(opts, "hostname", "\"" + host + "\"");
        if (!port.empty()) set_option(opts, "port", port);
        return;
    }
    // method:argument sets the method's main option.
    static const std::pair<const char *, const char *> kColonOption[] = {
        {"sudo", "username"},   {"su", "username"},     {"doas", "username"},  {"docker", "container"},
        {"podman", "container"}, {"lxc", "container"},  {"lxd", "container"},  {"jail", "container"},
        {"machinectl", "container"}, {"kubectl", "pod"}, {"setns", "pid"}};
    if (hop.arg_kind == Hop::kColon) {
        for (auto &[method, key] : kColonOption) {
            if (hop.method != method) continue;
            // setns:1234 names a process; setns:docker:web names a container of a kind.
            if (hop.method == "setns") {
                size_t colon = hop.arg.find(':');
                if (colon != std::string::npos) {
                    set_option(opts, "kind", "\"" + hop.arg.substr(0, colon) + "\"");
                    set_option(opts, "container", "\"" + hop.arg.substr(colon + 1) + "\"");
                } else {
                    set_option(opts, "pid", hop.arg);
                }
                return;
            }
            set_option(opts, key, "\"" + hop.arg + "\"");
            return;
        }
    }
    usage_error("method '" + hop.method + "' takes no " +
                (hop.arg_kind == Hop::kColon ? "':argument'" : "'://authority'") + " (in target hop '" +
                hop.text + "')");
}

// ------------------------------------------------------------ the options

// SPORE_PASSWORD, read once and removed from the environment, so that no
// launcher or agent started from here inherits it.
std::string &g_password() {
    static std::string pw = [] {
        std::string v;
        if (const char *e = std::getenv("SPORE_PASSWORD")) {
            v = e;
            explicit_bzero(const_cast<char *>(e), std::strlen(e));
            unsetenv("SPORE_PASSWORD");
        }
        return v;
    }();
    return pw;
}

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

    // Matches "--name VALUE", "--name=VALUE" (and "-s VALUE" when short is given).
    bool value_opt(const char *name, const char *short_name, std::string &value) {
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
    bool flag(const char *name, const char *short_name = nullptr) {
        if (v[i] == name || (short_name && v[i] == short_name)) {
            ++i;
            return true;
        }
        return false;
    }
};

int parse_ms(const std::string &opt, const std::string &text) {
    char *end = nullptr;
    errno = 0;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || errno || *end || v <= 0 || v > INT_MAX)
        usage_error("option " + opt + " needs a positive number of milliseconds, not '" + text + "'");
    return int(v);
}

// Global options, accepted before the command and among the command's own.
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

std::string read_file(const std::string &path) {
    int fd = path == "-" ? 0 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Failure{kExitRuntime, "cannot open " + path + ": " + std::strerror(errno)};
    std::string data;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            if (fd) ::close(fd);
            throw Failure{kExitRuntime, "cannot read " + path + ": " + std::strerror(e)};
        }
        if (n == 0) break;
        data.append(buf, size_t(n));
    }
    if (fd) ::close(fd);
    return data;
}

// ---------------------------------------------------------------- signals
// SIGINT/SIGTERM/SIGHUP while a call runs: the handler writes the signal
// number into a pipe that the waiting thread polls, and the program then
// frees its router (which stops every agent and the commands they run).
// Before that (while connecting) the default action is restored at once.

int g_sigpipe[2] = {-1, -1};
std::atomic<bool> g_waiting{false};

extern "C" void on_signal(int signo) {
    int saved = errno;
    if (!g_waiting.load()) {
        signal(signo, SIG_DFL);
        raise(signo);
    } else {
        unsigned char b = static_cast<unsigned char>(signo);
        ssize_t r = ::write(g_sigpipe[1], &b, 1);
        (void)r;
    }
    errno = saved;
}

void install_signals() {
    if (pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) != 0) throw Failure{kExitRuntime, std::string("pipe: ") + std::strerror(errno)};
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);  // write errors are handled (EPIPE)
}

void notify_interrupt(int signo) {
    unsigned char b = static_cast<unsigned char>(signo);
    ssize_t r = ::write(g_sigpipe[1], &b, 1);
    (void)r;
}

// --------------------------------------------------------------- the logs

const char *level_name(int level, char *buf, size_t n) {
    switch (level) {
        case SPORE_LOG_DEBUG: return "DEBUG";
        case SPORE_LOG_INFO: return "INFO";
        case SPORE_LOG_WARNING: return "WARNING";
        case SPORE_LOG_ERROR: return "ERROR";
        case 50: return "CRITICAL";
        default: std::snprintf(buf, n, "LEVEL%d", level); return buf;
    }
}

// "[context] LEVEL logger: message", as --verbose and the daemon's log show a record.
std::string record_line(const spore_log_record *rec, std::string_view message) {
    char buf[32];
    return "[" + std::string(spore_log_record_context(rec)) + "] " +
           level_name(spore_log_record_level(rec), buf, sizeof buf) + " " + spore_log_record_logger(rec) + ": " +
           std::string(message);
}

// Takes forwarded log records as they arrive. Records with logger
// "stdout"/"stderr" from the command's context (run) are the command's
// output lines; any other record is shown only with --verbose.
//
// Two threads: the reader empties the router's queue at once into a buffer
// of its own, the writer writes that buffer out. A slow reader of our stdout
// thus does not make the router drop records (its queue is bounded and has
// no flow control back to the command); the buffer holds up to 64 MiB
// of text, after which lines are dropped and counted.
class LogPump {
public:
    LogPump(spore_router *router, bool verbose)
        : router_(router), verbose_(verbose), st_(std::make_shared<Shared>()) {
        if (pipe2(wake_, O_CLOEXEC) != 0) throw Failure{kExitRuntime, std::string("pipe: ") + std::strerror(errno)};
        log_fd_ = spore_router_log_fd(router_);
        if (log_fd_ < 0) {
            close_wake();
            lib_failure(kExitRuntime);
        }
        reader_ = std::thread([this] { read_loop(); });
        writer_ = std::thread([st = st_] { write_loop(*st); });
    }
    ~LogPump() {
        stop(std::uncaught_exceptions() ? 1000 : -1);
        close_wake();
    }
    LogPump(const LogPump &) = delete;
    LogPump &operator=(const LogPump &) = delete;

    // From now on, output records of this context go to stdout/stderr.
    void set_output_context(uint32_t id) { output_ctx_.store(int64_t(id)); }

    // Takes what the router still holds and writes everything out, waiting
    // for the reader of our stdout as long as it takes (flush_ms < 0) or at
    // most flush_ms (leaving on an error: the rest is then dropped).
    void stop(int flush_ms = -1) {
        if (reader_.joinable()) {
            char b = 0;
            ssize_t r = ::write(wake_[1], &b, 1);
            (void)r;
            reader_.join();
        }
        if (!writer_.joinable()) return;
        std::unique_lock<std::mutex> lk(st_->mu);
        st_->done = true;
        st_->cv.notify_all();
        if (flush_ms >= 0 &&
            !st_->cv.wait_for(lk, std::chrono::milliseconds(flush_ms), [this] { return st_->finished; })) {
            st_->discard = true;  // blocked on a stalled stdout: let it go
            writer_.detach();
            return;
        }
        lk.unlock();
        writer_.join();
    }
    // Lines dropped here or by the router.
    uint64_t dropped() const { return dropped_ + spore_router_dropped_logs(router_); }

private:
    static constexpr size_t kMaxBuffered = size_t(64) << 20;
    struct Chunk {
        int fd;
        std::string text;
    };
    // What the writer uses; shared so that a writer left behind stays valid.
    struct Shared {
        std::mutex mu;
        std::condition_variable cv;
        std::deque<Chunk> queue;
        size_t buffered = 0;
        bool done = false, discard = false, finished = false;
    };
    spore_router *router_;
    bool verbose_;
    int wake_[2] = {-1, -1};
    int log_fd_ = -1;
    std::atomic<int64_t> output_ctx_{-1};
    std::shared_ptr<Shared> st_;
    std::thread reader_, writer_;
    uint64_t dropped_ = 0;  // reader thread; read after stop()

    void close_wake() {
        for (int &fd : wake_)
            if (fd >= 0) ::close(std::exchange(fd, -1));
    }

    void read_loop() {
        for (;;) {
            pollfd p[2] = {{log_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
            int n = poll(p, 2, -1);
            if (n < 0 && errno != EINTR) break;
            drain();
            if (n > 0 && p[1].revents) break;
        }
        drain();
    }
    void drain() {
        spore_log_record *rec = nullptr;
        std::vector<Chunk> batch;
        while (spore_router_next_log(router_, &rec, 0) == SPORE_OK) {
            format(rec, batch);
            spore_log_record_free(rec);
        }
        if (batch.empty()) return;
        std::lock_guard<std::mutex> lk(st_->mu);
        for (Chunk &c : batch) {
            if (st_->buffered + c.text.size() > kMaxBuffered) {
                ++dropped_;
                continue;
            }
            st_->buffered += c.text.size();
            // Consecutive lines for the same fd are written together.
            if (!st_->queue.empty() && st_->queue.back().fd == c.fd && st_->queue.back().text.size() < 65536)
                st_->queue.back().text += c.text;
            else
                st_->queue.push_back(std::move(c));
        }
        st_->cv.notify_all();
    }
    void format(const spore_log_record *rec, std::vector<Chunk> &out) {
        std::string_view logger = spore_log_record_logger(rec);
        const char *msg = spore_log_record_message(rec);
        if (int64_t(spore_log_record_context_id(rec)) == output_ctx_.load() &&
            (logger == "stdout" || logger == "stderr")) {
            out.push_back({logger == "stdout" ? 1 : 2, std::string(msg) + "\n"});
            return;
        }
        if (!verbose_) return;
        out.push_back({2, record_line(rec, msg) + "\n"});
    }
    static void write_loop(Shared &st) {
        std::unique_lock<std::mutex> lk(st.mu);
        for (;;) {
            st.cv.wait(lk, [&] { return st.done || !st.queue.empty(); });
            if (st.discard || st.queue.empty()) break;
            Chunk c = std::move(st.queue.front());
            st.queue.pop_front();
            st.buffered -= c.text.size();
            lk.unlock();
            if (c.fd == 2) {
                out_stderr(c.text);
            } else if (!g_stdout_broken) {
                out_stdout(c.text);
                if (g_stdout_broken) notify_interrupt(SIGPIPE);
            }
            lk.lock();
        }
        st.finished = true;
        st.cv.notify_all();
    }
};

// ---------------------------------------------------------------- session

struct ResultDeleter {
    void operator()(spore_result *r) const { spore_result_free(r); }
};
using ResultPtr = std::unique_ptr<spore_result, ResultDeleter>;

// A router, the contexts of one target and (optionally) a log pump; freed
// in the right order however the program leaves.
class Session {
public:
    Session(const Global &g, int log_level, bool pump, size_t log_queue) : g_(g) {
        spore_options *o = nullptr;
        if (spore_options_new(&o) != SPORE_OK) lib_failure(kExitRuntime);
        std::unique_ptr<spore_options, void (*)(spore_options *)> opts(o, spore_options_free);
        if (!g.daemon_path.empty() && !g.agent_path.empty())
            usage_error("--agent has no effect with --daemon: the daemon ships its own agent");
        if (!g.agent_path.empty() && spore_options_set_str(o, "agent_path", g.agent_path.c_str()) != SPORE_OK)
            lib_failure(kExitRuntime);
        if (spore_options_set_int(o, "log_level", log_level) != SPORE_OK ||
            spore_options_set_int(o, "log_queue_size", int64_t(log_queue)) != SPORE_OK)
            lib_failure(kExitRuntime);
        if (g.daemon_path.empty()) {
            if (spore_router_new(&router_, o) != SPORE_OK) lib_failure(kExitRuntime);
        } else if (spore_router_attach(&router_, g.daemon_path.c_str(), o) != SPORE_OK) {
            throw Failure{kExitConnect, "cannot use the daemon: " + error_text(spore_last_error())};
        }
        try {
            if (pump) pump_ = std::make_unique<LogPump>(router_, g.verbose);
        } catch (...) {
            spore_router_free(router_);
            throw;
        }
    }
    ~Session() {
        pump_.reset();
        for (auto it = contexts_.rbegin(); it != contexts_.rend(); ++it) spore_context_free(*it);
        spore_router_free(router_);
    }
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

    LogPump *pump() const { return pump_.get(); }

    // Opens every hop through the one before; returns the last.
    spore_context *open(const std::vector<Hop> &hops) {
        spore_context *via = nullptr;
        for (const Hop &hop : hops) {
            spore_options *o = nullptr;
            if (spore_options_new(&o) != SPORE_OK) lib_failure(kExitRuntime);
            std::unique_ptr<spore_options, void (*)(spore_options *)> opts(o, spore_options_free);
            bool has_timeout = false;
            for (auto &kv : hop.options) {
                set_option(o, kv.first, kv.second);
                has_timeout |= kv.first == "connect_timeout";
            }
            set_hop_argument(o, hop);
            bool has_password = false;
            for (auto &kv : hop.options) has_password |= kv.first == "password";
            if (!has_password && !g_password().empty() &&
                (hop.method == "ssh" || hop.method == "sudo" || hop.method == "su" || hop.method == "doas"))
                if (spore_options_set_str(o, "password", g_password().c_str()) != SPORE_OK) lib_failure(kExitUsage);
            if (g_.connect_timeout_ms && !has_timeout)
                set_option(o, "connect_timeout", std::to_string(*g_.connect_timeout_ms));
            // Through a daemon, the same target is the same connection for
            // every command (unless the target says otherwise).
            bool has_reuse = false;
            for (auto &kv : hop.options) has_reuse |= kv.first == "reuse";
            if (!g_.daemon_path.empty() && !has_reuse && spore_options_set_bool(o, "reuse", 1) != SPORE_OK)
                lib_failure(kExitRuntime);
            spore_context *ctx = nullptr;
            if (spore_connect(&ctx, router_, hop.method.c_str(), o, via) != SPORE_OK) {
                const spore_error *e = spore_last_error();
                std::string where = via ? " through " + std::string(spore_context_name(via)) : "";
                throw Failure{exit_code_for_connect(e->code),
                              "cannot open '" + hop.text + "'" + where + ": " + error_text(e)};
            }
            contexts_.push_back(ctx);
            via = ctx;
        }
        return via;
    }

    // Runs a call, waiting for it, for a signal or for --timeout.
    ResultPtr call(spore_context *ctx, const char *fn, const std::string &args, const std::string &data) {
        spore_pending *pc = nullptr;
        if (spore_call_async(&pc, ctx, fn, args.c_str(), data.empty() ? nullptr : data.data(), data.size()) !=
            SPORE_OK)
            lib_failure(exit_code_for_call(spore_last_error()->code));
        std::unique_ptr<spore_pending, void (*)(spore_pending *)> call(pc, spore_call_free);
        int cfd = spore_call_fd(pc);
        if (cfd < 0) lib_failure(kExitRuntime);

        g_waiting.store(true);
        struct Unwait {
            ~Unwait() { g_waiting.store(false); }
        } unwait;
        const int timeout = g_.call_timeout_ms;
        int left = timeout;
        for (;;) {
            pollfd p[2] = {{cfd, POLLIN, 0}, {g_sigpipe[0], POLLIN, 0}};
            struct timespec t0 {};
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int n = poll(p, 2, timeout < 0 ? -1 : left);
            if (n < 0 && errno != EINTR) throw Failure{kExitRuntime, std::string("poll: ") + std::strerror(errno)};
            if (n > 0 && p[1].revents) {
                unsigned char b = 0;
                if (::read(g_sigpipe[0], &b, 1) == 1) throw Interrupted{b};
            }
            if (spore_call_done(pc)) break;
            if (timeout >= 0) {
                struct timespec t1 {};
                clock_gettime(CLOCK_MONOTONIC, &t1);
                left -= int((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
                if (left <= 0)
                    throw Failure{kExitTimeout, std::string("call of ") + fn + " in " + spore_context_name(ctx) +
                                                    " timed out after " + std::to_string(timeout) + " ms"};
            }
        }
        spore_result *res = nullptr;
        if (spore_call_wait(pc, &res, 0) != SPORE_OK) lib_failure(exit_code_for_call(spore_last_error()->code));
        return ResultPtr(res);
    }

private:
    const Global &g_;
    spore_router *router_ = nullptr;
    std::vector<spore_context *> contexts_;
    std::unique_ptr<LogPump> pump_;
};

// ------------------------------------------------------------------- help

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
    "  help [command]                         show this help or a command's\n"
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

// ---------------------------------------------------------------- commands

int cmd_call(Args &a, Global &g) {
    bool compact = false, raw = false;
    std::optional<std::string> data_file;
    std::vector<std::string> pos;
    bool options_done = false;
    while (!a.done()) {
        const std::string &s = a.peek();
        if (options_done || s.empty() || s[0] != '-' || s == "-") {
            pos.push_back(s);
            ++a.i;
            continue;
        }
        std::string value;
        if (s == "--") {
            options_done = true;
            ++a.i;
        } else if (a.flag("--help", "-h")) {
            out_stdout(kCallHelp);
            return kExitOk;
        } else if (a.flag("--compact")) {
            compact = true;
        } else if (a.flag("--raw-data")) {
            raw = true;
        } else if (a.value_opt("--data", nullptr, value)) {
            data_file = value;
        } else if (!global_option(a, g)) {
            usage_error("unknown option '" + s + "' for call (see spore call --help)");
        }
    }
    if (pos.size() < 2) usage_error("call needs a target and a function (see spore call --help)");
    if (pos.size() > 3) usage_error("call takes one JSON argument object, got extra '" + pos[3] + "'");
    if (g.verbose && g.quiet) usage_error("--verbose and --quiet exclude each other");
    std::vector<Hop> hops = parse_target(pos[0]);
    const std::string &fn = pos[1];
    std::string args = pos.size() > 2 ? pos[2] : "{}";
    {
        JsonReader r(args);
        auto v = r.parse();
        if (!v) usage_error("arguments are not valid JSON: " + r.error());
        if (v->type != JValue::kObject) usage_error("arguments must be a JSON object, e.g. '{\"path\": \"/\"}'");
    }
    std::string data = data_file ? read_file(*data_file) : std::string();

    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_WARNING, g.verbose, 10000);
    spore_context *ctx = s.open(hops);
    ResultPtr res = s.call(ctx, fn.c_str(), args, data);
    if (s.pump()) s.pump()->stop();

    std::string json = spore_result_json(res.get());
    JsonReader r(json);
    auto v = r.parse();
    std::string text;
    if (v) json_write(*v, text, !compact, 0);
    else text = json;  // not expected: print what came
    text += '\n';
    size_t len = 0;
    const void *bytes = spore_result_bytes(res.get(), &len);
    if (raw) {
        if (!g.quiet) out_stderr(text);
        if (len) out_stdout(std::string_view(static_cast<const char *>(bytes), len));
    } else {
        out_stdout(text);
        if (len && !g.quiet)
            out_stderr("spore: note: the result has a binary part of " + std::to_string(len) +
                       " bytes (--raw-data writes it to stdout)\n");
    }
    if (g_stdout_broken) throw Interrupted{SIGPIPE};
    return kExitOk;
}

int cmd_run(Args &a, Global &g) {
    std::optional<std::string> target, cwd, input_file;
    std::vector<std::pair<std::string, std::string>> env;
    std::optional<int> cmd_timeout;
    std::vector<std::string> argv;
    while (!a.done()) {
        const std::string &s = a.peek();
        std::string value;
        if (s == "--") {
            ++a.i;
            break;
        }
        if (s.empty() || s[0] != '-' || s == "-") {
            if (target) break;  // the program
            target = s;
            ++a.i;
        } else if (a.flag("--help", "-h")) {
            out_stdout(kRunHelp);
            return kExitOk;
        } else if (a.value_opt("--cwd", nullptr, value)) {
            cwd = value;
        } else if (a.value_opt("--env", "-e", value)) {
            size_t eq = value.find('=');
            if (eq == std::string::npos || eq == 0) usage_error("--env needs NAME=VALUE, not '" + value + "'");
            env.emplace_back(value.substr(0, eq), value.substr(eq + 1));
        } else if (a.value_opt("--timeout", nullptr, value)) {
            cmd_timeout = parse_ms("--timeout", value);
        } else if (a.value_opt("--input", "-i", value)) {
            input_file = value;
        } else if (!global_option(a, g)) {
            usage_error("unknown option '" + s + "' for run (see spore run --help)");
        }
    }
    if (!target && !a.done()) {
        target = a.peek();
        ++a.i;
    }
    for (; !a.done(); ++a.i) argv.push_back(a.peek());
    if (!target) usage_error("run needs a target and a program (see spore run --help)");
    if (argv.empty()) usage_error("run needs a program to run, e.g. spore run local -- uname -a");
    if (g.verbose && g.quiet) usage_error("--verbose and --quiet exclude each other");
    std::vector<Hop> hops = parse_target(*target);

    std::string args = "{\"argv\":[";
    for (size_t k = 0; k < argv.size(); ++k) args += (k ? "," : "") + json_quote(argv[k]);
    args += "],\"stream\":true,\"capture\":false";
    if (cwd) args += ",\"cwd\":" + json_quote(*cwd);
    if (cmd_timeout) args += ",\"timeout_ms\":" + std::to_string(*cmd_timeout);
    if (!env.empty()) {
        args += ",\"env\":{";
        for (size_t k = 0; k < env.size(); ++k)
            args += (k ? "," : "") + json_quote(env[k].first) + ":" + json_quote(env[k].second);
        args += "}";
    }
    args += "}";
    std::string input = input_file ? read_file(*input_file) : std::string();

    // Output lines travel as INFO records: the level must let them through.
    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_INFO, true, 100000);
    spore_context *ctx = s.open(hops);
    s.pump()->set_output_context(spore_context_id(ctx));
    ResultPtr res = s.call(ctx, "proc.run", args, input);
    s.pump()->stop();  // prints every line that came before the result
    if (g_stdout_broken) throw Interrupted{SIGPIPE};
    if (uint64_t dropped = s.pump()->dropped(); dropped && !g.quiet)
        out_stderr("spore: warning: " + std::to_string(dropped) + " output lines were dropped (buffer full)\n");

    JsonReader r(spore_result_json(res.get()));
    auto v = r.parse();
    if (!v || v->type != JValue::kObject) throw Failure{kExitRuntime, "proc.run returned an unexpected result"};
    if (const JValue *t = v->get("timed_out"); t && t->text == "true")
        throw Failure{kExitCmdTimeout, "the command timed out after " + std::to_string(cmd_timeout.value_or(0)) +
                                           " ms and was killed"};
    if (const JValue *sig = v->get("signal")) {
        if (auto n = sig->as_int()) return 128 + int(*n);
    }
    if (const JValue *rc = v->get("rc")) {
        if (auto n = rc->as_int()) return int(*n);
    }
    throw Failure{kExitRuntime, "proc.run did not report the command's status"};
}

const char kShimHelp[] =
    "Usage: spore [OPTIONS] ssh-shim [--target TARGET] [ssh options] HOST COMMAND...\n"
    "\n"
    "Stands in for ssh where a tool wants one (rsync -e, GIT_SSH_COMMAND, scp -S):\n"
    "runs COMMAND (joined by spaces and given to /bin/sh -c, as ssh does) in the\n"
    "last hop of TARGET, or of HOST when there is no --target, and connects its\n"
    "stdin, stdout and stderr to ours as flow-controlled streams. Exits with the\n"
    "command's status (128+N if signal N killed it).\n"
    "\n"
    "ssh options the tools pass (-l USER -p PORT -o OPT -i FILE -F FILE -e CHAR\n"
    "-c CIPHER -m MAC and the flags -T -t -x -a -q -C -n -4 -6 -v) are accepted\n"
    "and ignored: the target says how to get there.\n"
    "\n"
    "Example (the host part of the rsync destination is not used with --target):\n"
    "  rsync -a -e 'spore ssh-shim --target ssh://deploy@web1/sudo:root' ./site/ x:/srv/site/\n";

int cmd_ssh_shim(Args &a, Global &g) {
    std::optional<std::string> target;
    std::vector<std::string> words;
    while (!a.done()) {
        const std::string s = a.peek();
        std::string value;
        if (s == "--") {
            ++a.i;
            break;
        }
        if (s.empty() || s[0] != '-') break;
        if (a.flag("--help", "-h")) {
            out_stdout(kShimHelp);
            return kExitOk;
        }
        if (a.value_opt("--target", nullptr, value)) {
            target = value;
            continue;
        }
        static const char *with_value[] = {"-l", "-p", "-o", "-i", "-F", "-e", "-c", "-m", "-b", "-J", "-E"};
        static const char *flags[] = {"-T", "-t", "-x", "-X", "-a", "-A", "-q", "-C", "-n", "-N", "-4", "-6", "-v", "-vv", "-vvv", "-k", "-K"};
        bool known = false;
        for (const char *o : with_value)
            if (s == o) {
                if (a.i + 1 >= a.v.size()) usage_error("option " + s + " needs a value");
                a.i += 2;
                known = true;
                break;
            } else if (s.size() > 2 && s.compare(0, 2, o) == 0) {  // -lUSER, -oOpt=...
                ++a.i;
                known = true;
                break;
            }
        if (known) continue;
        for (const char *o : flags)
            if (s == o) {
                ++a.i;
                known = true;
                break;
            }
        if (known) continue;
        if (global_option(a, g)) continue;
        usage_error("unknown option '" + s + "' for ssh-shim (see spore ssh-shim --help)");
    }
    if (a.done()) usage_error("ssh-shim needs a host (or --target) and a command");
    std::string host = a.peek();
    ++a.i;
    for (; !a.done(); ++a.i) words.push_back(a.peek());
    if (words.empty()) usage_error("ssh-shim needs a command to run (an interactive shell is not supported)");
    std::string command;
    for (size_t k = 0; k < words.size(); ++k) command += (k ? " " : "") + words[k];
    std::vector<Hop> hops = parse_target(target ? *target : host);

    Session s(g, g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_WARNING, g.verbose, 10000);
    spore_context *ctx = s.open(hops);
    spore_process *raw = nullptr;
    std::string args = "{\"shell\":" + json_quote(command) + "}";
    if (spore_proc_start(&raw, ctx, args.c_str(), nullptr) != SPORE_OK) lib_failure(kExitConnect);
    std::unique_ptr<spore_process, void (*)(spore_process *)> p(raw, spore_process_free);

    // stdin -> the process, until our stdin ends or the process is done.
    int stop[2];
    if (pipe2(stop, O_CLOEXEC) != 0) throw Failure{kExitRuntime, std::string("pipe: ") + std::strerror(errno)};
    std::thread in([&] {
        std::vector<char> buf(64 * 1024);
        for (;;) {
            pollfd fds[2] = {{0, POLLIN, 0}, {stop[0], POLLIN, 0}};
            if (poll(fds, 2, -1) < 0 && errno == EINTR) continue;
            if (fds[1].revents) return;
            ssize_t n = ::read(0, buf.data(), buf.size());
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (n <= 0) {
                spore_process_close_stdin(p.get());
                return;
            }
            if (spore_process_write(p.get(), buf.data(), size_t(n), -1) != SPORE_OK) return;
        }
    });
    auto copy_out = [&](int fd) {
        std::vector<char> buf(256 * 1024);
        for (;;) {
            int n = spore_process_read(p.get(), fd, buf.data(), buf.size(), -1);
            if (n <= 0) return;
            if (!write_all(fd, buf.data(), size_t(n))) return;
        }
    };
    std::thread err([&] { copy_out(2); });
    copy_out(1);
    err.join();
    int code = -1, sig = 0;
    int rc = spore_process_wait(p.get(), &code, &sig, -1);
    ssize_t w = ::write(stop[1], "x", 1);
    (void)w;
    in.join();
    ::close(stop[0]);
    ::close(stop[1]);
    if (rc != SPORE_OK) lib_failure(kExitRuntime);
    return sig ? 128 + sig : code;
}


const char kDaemonHelp[] =
    "Usage: spore daemon [--socket PATH] [--foreground] [--log-file FILE]\n"
    "       spore daemon --stop [--socket PATH]\n"
    "       spore daemon --status [--socket PATH]\n"
    "\n"
    "Runs a router in the background that listens on a Unix socket, so that\n"
    "commands given --daemon PATH (or $SPORE_DAEMON) open their targets through\n"
    "it: each hop is connected once and stays connected for every later command\n"
    "(SSH connections, sudo sessions, agents). Only this user can use it: the\n"
    "socket has mode 0600 in a directory of mode 0700 (created if missing).\n"
    "A command that is interrupted stops what it started; the daemon and its\n"
    "connections stay. The daemon stops on SIGTERM, SIGINT or --stop, and then\n"
    "shuts every context down.\n"
    "\n"
    "Options:\n"
    "  --socket PATH     where to listen (default: $SPORE_DAEMON, else\n"
    "                    $XDG_RUNTIME_DIR/spore/daemon.sock, else /tmp/spore-UID/daemon.sock)\n"
    "  --foreground      stay in the foreground, log records on stderr\n"
    "  --log-file FILE   append log records to FILE (default: none in the background)\n"
    "  --stop            stop the daemon listening at the socket and wait for it to go\n"
    "  --status          exit 0 if a daemon answers at the socket, 1 if not\n"
    "  -v, --verbose     log from level DEBUG (default INFO)\n"
    "\n"
    "Examples:\n"
    "  spore daemon\n"
    "  export SPORE_DAEMON=/tmp/spore-$(id -u)/daemon.sock\n"
    "  spore run ssh://web1/sudo:root -- systemctl restart nginx   # connects\n"
    "  spore run ssh://web1/sudo:root -- systemctl status nginx    # reuses the connection\n"
    "  rsync -a -e 'spore ssh-shim --target ssh://web1' ./site/ x:/srv/site/\n"
    "  spore daemon --stop\n";

std::string default_daemon_socket() {
    if (const char *e = std::getenv("SPORE_DAEMON"); e && *e) return e;
    if (const char *x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/spore/daemon.sock";
    return "/tmp/spore-" + std::to_string(::geteuid()) + "/daemon.sock";
}

// The daemon's pid, kept beside its socket for --stop.
std::string pid_file_for(const std::string &socket) { return socket + ".pid"; }

bool daemon_answers(const std::string &socket) {
    spore_options *o = nullptr;
    if (spore_options_new(&o) != SPORE_OK) return false;
    spore_options_set_int(o, "connect_timeout", 5000);
    spore_router *r = nullptr;
    int rc = spore_router_attach(&r, socket.c_str(), o);
    spore_options_free(o);
    spore_router_free(r);
    return rc == SPORE_OK;
}

// Runs the listening router until a signal; reports readiness (or the
// failure) on ready_fd when there is one.
int run_daemon(const std::string &socket, int log_level, int ready_fd, int log_fd) {
    auto report = [&](const std::string &msg) {
        if (ready_fd < 0) return;
        (void)write_all(ready_fd, msg.data(), msg.size());
        ::close(ready_fd);
        ready_fd = -1;
    };
    spore_options *o = nullptr;
    spore_router *router = nullptr;
    if (spore_options_new(&o) != SPORE_OK || spore_options_set_int(o, "log_level", log_level) != SPORE_OK ||
        spore_router_new(&router, o) != SPORE_OK) {
        spore_options_free(o);
        std::string m = error_text(spore_last_error());
        report("E" + m);
        throw Failure{kExitRuntime, m};
    }
    spore_options_free(o);
    struct RouterGuard {
        spore_router *r;
        ~RouterGuard() { spore_router_free(r); }
    } guard{router};
    if (spore_router_listen(router, socket.c_str()) != SPORE_OK) {
        std::string m = "cannot listen at " + socket + ": " + error_text(spore_last_error());
        report("E" + m);
        throw Failure{kExitRuntime, m};
    }
    std::string pidfile = pid_file_for(socket);
    {
        int fd = ::open(pidfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            std::string pid = std::to_string(::getpid()) + "\n";
            (void)write_all(fd, pid.data(), pid.size());
            ::close(fd);
        }
    }
    g_waiting.store(true);  // signals now end the loop below instead of the process
    report("R" + std::to_string(::getpid()));
    int log_src = spore_router_log_fd(router);
    int signo = 0;
    while (!signo) {
        pollfd p[2] = {{g_sigpipe[0], POLLIN, 0}, {log_src, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[0].revents) {
            unsigned char b = 0;
            if (::read(g_sigpipe[0], &b, 1) == 1) signo = b;
        }
        spore_log_record *rec = nullptr;
        while (spore_router_next_log(router, &rec, 0) == SPORE_OK) {
            if (log_fd >= 0) {
                char when[32];
                time_t t = time_t(spore_log_record_time(rec));
                struct tm tm {};
                localtime_r(&t, &tm);
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
                std::string line = std::string(when) + " " +
                                   record_line(rec, flatten(spore_log_record_message(rec))) + "\n";
                (void)write_all(log_fd, line.data(), line.size());
            }
            spore_log_record_free(rec);
        }
    }
    ::unlink(pidfile.c_str());
    return kExitOk;  // the guard frees the router: contexts shut down, socket removed
}

int cmd_daemon(Args &a, Global &g) {
    std::optional<std::string> socket, log_file;
    bool foreground = false, stop = false, status = false;
    while (!a.done()) {
        std::string value;
        const std::string &s = a.peek();
        if (a.flag("--help", "-h")) {
            out_stdout(kDaemonHelp);
            return kExitOk;
        }
        if (a.value_opt("--socket", nullptr, value)) socket = value;
        else if (a.value_opt("--log-file", nullptr, value)) log_file = value;
        else if (a.flag("--foreground")) foreground = true;
        else if (a.flag("--stop")) stop = true;
        else if (a.flag("--status")) status = true;
        else if (!global_option(a, g)) usage_error("unknown argument '" + s + "' for daemon (see spore daemon --help)");
    }
    if (stop && status) usage_error("--stop and --status exclude each other");
    std::string path = socket ? *socket : default_daemon_socket();

    if (status) {
        bool up = daemon_answers(path);
        if (!g.quiet) out_stdout(up ? "a spore daemon listens at " + path + "\n" : "no spore daemon at " + path + "\n");
        return up ? kExitOk : kExitRuntime;
    }
    if (stop) {
        if (!daemon_answers(path)) throw Failure{kExitRuntime, "no spore daemon answers at " + path};
        std::string text = read_file(pid_file_for(path));
        long pid = std::strtol(text.c_str(), nullptr, 10);
        if (pid <= 1) throw Failure{kExitRuntime, "no daemon pid in " + pid_file_for(path)};
        if (::kill(pid_t(pid), SIGTERM) != 0)
            throw Failure{kExitRuntime, "cannot stop the daemon (pid " + std::to_string(pid) + "): " + std::strerror(errno)};
        // Gone when its socket is: it removes it after shutting its contexts down.
        for (int i = 0; i < 300 && ::access(path.c_str(), F_OK) == 0; ++i) ::usleep(50000);
        if (::access(path.c_str(), F_OK) == 0)
            throw Failure{kExitRuntime, "the daemon (pid " + std::to_string(pid) + ") did not stop within 15 s"};
        if (!g.quiet) out_stderr("spore: stopped the daemon at " + path + "\n");
        return kExitOk;
    }

    int level = g.verbose ? SPORE_LOG_DEBUG : SPORE_LOG_INFO;
    int log_fd = -1;
    if (log_file) {
        log_fd = ::open(log_file->c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log_fd < 0) throw Failure{kExitRuntime, "cannot open " + *log_file + ": " + std::strerror(errno)};
    } else if (foreground) {
        log_fd = 2;
    }
    if (foreground) return run_daemon(path, level, -1, log_fd);

    // Background: the child runs the daemon in a session of its own and
    // tells the parent through a pipe once it listens (or why it cannot).
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) throw Failure{kExitRuntime, std::string("pipe: ") + std::strerror(errno)};
    pid_t child = ::fork();
    if (child < 0) throw Failure{kExitRuntime, std::string("fork: ") + std::strerror(errno)};
    if (child == 0) {
        ::close(ready[0]);
        ::setsid();
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            ::dup2(null, 0);
            ::dup2(null, 1);
            ::dup2(log_fd >= 0 ? log_fd : null, 2);
        }
        int rc = kExitRuntime;
        try {
            rc = run_daemon(path, level, ready[1], log_fd >= 0 ? 2 : -1);
        } catch (const Failure &) {
        } catch (...) {
        }
        ::_exit(rc);
    }
    ::close(ready[1]);
    if (log_fd >= 0) ::close(log_fd);
    std::string answer;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(ready[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        answer.append(buf, size_t(n));
    }
    ::close(ready[0]);
    if (answer.empty() || answer[0] != 'R') {
        int st = 0;
        ::waitpid(child, &st, 0);
        throw Failure{kExitRuntime, answer.size() > 1 ? answer.substr(1) : "the daemon exited before it listened"};
    }
    if (!g.quiet)
        out_stderr("spore: daemon listening at " + path + " (pid " + answer.substr(1) + ")\n");
    out_stdout(path + "\n");
    return kExitOk;
}

int run_main(int argc, char **argv) {
    Args a;
    for (int k = 1; k < argc; ++k) a.v.emplace_back(argv[k]);
    Global g;
    if (const char *d = std::getenv("SPORE_DAEMON"); d && *d) g.daemon_path = d;
    while (!a.done()) {
        const std::string &s = a.peek();
        if (s.empty() || s[0] != '-') break;
        if (a.flag("--help", "-h")) {
            out_stdout(kMainHelp);
            return kExitOk;
        }
        if (a.flag("--version", "-V")) {
            out_stdout(std::string("spore ") + SPORE_VERSION_STRING + " (libspore " + spore_version_string() + ")\n");
            return kExitOk;
        }
        if (!global_option(a, g)) usage_error("unknown option '" + s + "' (see spore --help)");
    }
    if (a.done()) usage_error("no command given: use call or run (see spore --help)");
    std::string cmd = a.peek();
    ++a.i;
    if (cmd == "help") {
        if (a.done()) out_stdout(kMainHelp);
        else if (a.peek() == "call") out_stdout(kCallHelp);
        else if (a.peek() == "run") out_stdout(kRunHelp);
        else if (a.peek() == "ssh-shim") out_stdout(kShimHelp);
        else if (a.peek() == "daemon") out_stdout(kDaemonHelp);
        else usage_error("no help for unknown command '" + a.peek() + "'");
        return kExitOk;
    }
    if (cmd != "call" && cmd != "run" && cmd != "ssh-shim" && cmd != "daemon")
        usage_error("unknown command '" + cmd + "' (commands: call, run, ssh-shim, daemon)");
    install_signals();
    if (cmd == "daemon") return cmd_daemon(a, g);
    if (cmd == "ssh-shim") return cmd_ssh_shim(a, g);
    return cmd == "call" ? cmd_call(a, g) : cmd_run(a, g);
}

}  // namespace

int main(int argc, char **argv) {
    g_password();  // taken out of the environment before anything is started
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
