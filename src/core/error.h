// The error type that travels inside the core and across the wire. At the C
// ABI it becomes an int code plus the thread's spore_last_error() detail.
#pragma once

#include <exception>
#include <string>

#include "spore/errors.h"

namespace spore {

struct ErrorInfo {
    int code = SPORE_OK;
    std::string message;
    std::string remote_type;
    std::string context;
    std::string function;
    // A Python function's formatted remote traceback (docs/protocol.md).
    std::string traceback = {};
};

// Thrown inside the core; never crosses the C ABI.
class Error : public std::exception {
public:
    Error(int code, std::string message) { info_.code = code; info_.message = std::move(message); }
    explicit Error(ErrorInfo info) : info_(std::move(info)) {}
    const char *what() const noexcept override { return info_.message.c_str(); }
    int code() const noexcept { return info_.code; }
    const ErrorInfo &info() const noexcept { return info_; }
    ErrorInfo &info() noexcept { return info_; }

private:
    ErrorInfo info_;
};

// Name used on the wire for a code ("ETIMEDOUT"), and back.
const char *error_code_name(int code) noexcept;
int error_code_from_name(const char *name) noexcept;
const char *error_code_text(int code) noexcept;

}  // namespace spore
