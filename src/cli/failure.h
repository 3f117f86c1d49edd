// How the tool fails: its exit codes, the exceptions that end it, and the
// library's errors as one line of text.
#pragma once

#include <string>
#include <string_view>

#include "spore/spore.h"

namespace spore::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;      // any other failure
inline constexpr int kExitUsage = 2;        // bad command line, target, options or JSON
inline constexpr int kExitConnect = 3;      // a hop of the target could not be opened
inline constexpr int kExitTimeout = 4;      // the call took longer than --timeout
inline constexpr int kExitRemote = 5;       // the function failed in the target
inline constexpr int kExitCmdTimeout = 124;  // run: the command hit its own --timeout

// A failure that ends the program: one "spore: <message>" line and a code.
struct Failure {
    int exit_code;
    std::string message;
};

// Interruption by a signal (SIGINT, SIGTERM, SIGHUP) or a closed stdout (SIGPIPE).
struct Interrupted {
    int signo;
};

[[noreturn]] void usage_error(std::string msg);

// The library's last error, with the given exit code.
[[noreturn]] void lib_failure(int exit_code);

// A system call that failed: "<call>: <strerror(errno)>", exit code 1.
[[noreturn]] void system_failure(const char *call);

// One line: newlines become " | ", trailing ones are dropped.
std::string flatten(std::string_view s);

// The detail of a spore_error as one message, naming the remote error type.
std::string error_text(const spore_error *e);

int exit_code_for_call(int code);
int exit_code_for_connect(int code);

}  // namespace spore::cli
