#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>

#include "failure.h"

namespace spore::cli {

namespace {

// Plain descriptors, never closed: the handler may write at any time.
int g_interrupt_pipe[2] = {-1, -1};
std::atomic<bool> g_reporting{false};

extern "C" void on_signal(int signo) {
    int saved = errno;
    if (!g_reporting.load()) {
        signal(signo, SIG_DFL);
        raise(signo);
    } else {
        notify_interrupt(signo);
    }
    errno = saved;
}

}  // namespace

void install_signal_handlers() {
    if (pipe2(g_interrupt_pipe, O_CLOEXEC | O_NONBLOCK) != 0) system_failure("pipe");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

int interrupt_fd() { return g_interrupt_pipe[0]; }

int take_interrupt() {
    unsigned char b = 0;
    return ::read(g_interrupt_pipe[0], &b, 1) == 1 ? b : 0;
}

void notify_interrupt(int signo) {
    unsigned char b = static_cast<unsigned char>(signo);
    ssize_t r = ::write(g_interrupt_pipe[1], &b, 1);
    (void)r;
}

void report_signals(bool on) { g_reporting.store(on); }

}  // namespace spore::cli
