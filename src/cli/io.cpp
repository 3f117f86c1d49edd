#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "failure.h"

namespace spore::cli {

namespace {
std::atomic<bool> g_stdout_broken{false};
}  // namespace

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

Pipe make_pipe(int flags) {
    int fds[2];
    if (pipe2(fds, flags) != 0) system_failure("pipe");
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool write_all(int fd, std::string_view s) {
    const char *buf = s.data();
    size_t len = s.size();
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
    if (!write_all(1, s) && errno == EPIPE) g_stdout_broken = true;
}

void out_stderr(std::string_view s) { (void)write_all(2, s); }

bool stdout_broken() { return g_stdout_broken; }

std::string read_all(int fd, const std::string &what) {
    std::string data;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Failure{kExitRuntime, "cannot read " + what + ": " + std::strerror(errno)};
        if (n == 0) break;
        data.append(buf, size_t(n));
    }
    return data;
}

std::string read_file(const std::string &path) {
    if (path == "-") return read_all(0, path);
    UniqueFd opened(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!opened) throw Failure{kExitRuntime, "cannot open " + path + ": " + std::strerror(errno)};
    return read_all(opened.get(), path);
}

}  // namespace spore::cli
