#include "failure.h"

#include <errno.h>

#include <cstring>
#include <utility>

namespace spore::cli {

void usage_error(std::string msg) { throw Failure{kExitUsage, std::move(msg)}; }

void lib_failure(int exit_code) { throw Failure{exit_code, error_text(spore_last_error())}; }

void system_failure(const char *call) { throw Failure{kExitRuntime, std::string(call) + ": " + std::strerror(errno)}; }

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

std::string error_text(const spore_error *e) {
    std::string msg = e->message && *e->message ? e->message : spore_strerror(e->code);
    // Added only when the message does not already name it.
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

}  // namespace spore::cli
