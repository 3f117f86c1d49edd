// The tool's own input and output: file descriptors it owns, stdout that
// may go away (a closed pipe), stderr, and the files named on the command line.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace spore::cli {

// Closes the descriptor it holds when it goes.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd &operator=(UniqueFd &&o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd &) = delete;
    UniqueFd &operator=(const UniqueFd &) = delete;

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

struct Pipe {
    UniqueFd read_end, write_end;
};

// A pipe2() with these flags; a Failure when there is none.
Pipe make_pipe(int flags);

// Writes all of s to fd; false on error (EPIPE when the reader went away).
bool write_all(int fd, std::string_view s);

// Writes to stdout until its reader goes away; later output is dropped.
void out_stdout(std::string_view s);
void out_stderr(std::string_view s);
// True once stdout's reader went away.
bool stdout_broken();

// Everything fd gives until its end; a Failure naming what when it cannot be read.
std::string read_all(int fd, const std::string &what);

// The whole of a file, or of standard input for "-"; a Failure when it
// cannot be read.
std::string read_file(const std::string &path);

}  // namespace spore::cli
