// SIGINT/SIGTERM/SIGHUP. While something waits (a call, the daemon), the
// handler writes the signal number into a pipe that the waiting thread
// polls, so that the program can free its router (which stops every agent
// and the commands they run) before it exits. At any other time (while
// connecting, say) the default action is taken at once.
#pragma once

namespace spore::cli {

// Installs the handlers and ignores SIGPIPE: write errors are handled (EPIPE).
void install_signal_handlers();

// Readable once a signal arrived while reported.
int interrupt_fd();

// The signal number read from interrupt_fd(), or 0.
int take_interrupt();

// Reports signo on interrupt_fd() as if it had arrived.
void notify_interrupt(int signo);

// Whether signals are reported on interrupt_fd() instead of taking their
// default action.
void report_signals(bool on);

// Reports signals while it lives.
class SignalsReported {
public:
    SignalsReported() { report_signals(true); }
    ~SignalsReported() { report_signals(false); }
    SignalsReported(const SignalsReported &) = delete;
    SignalsReported &operator=(const SignalsReported &) = delete;
};

}  // namespace spore::cli
