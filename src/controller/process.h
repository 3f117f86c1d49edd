// The master's half of process streams (docs/protocol.md, "Process
// streams"): a process started in a context with proc.start, whose stdin,
// stdout and stderr are flow-controlled channels. Every method is called
// from the program's threads; the broker thread only moves channel
// messages into the inboxes and windows.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/channel.h"
#include "controller/router.h"

namespace spore {

class RemoteProcess {
public:
    // Starts the process and waits until it runs (or its start failed), at
    // most timeout_ms (< 0: without limit). args_json: proc.start's
    // arguments (argv or shell, env, env_clear, cwd, pty, rows, cols).
    // Throws spore::Error. A start given up on a timeout is cancelled in the
    // context: what it would have started does not run, or is killed.
    static std::unique_ptr<RemoteProcess> start(Router &m, const std::shared_ptr<ContextState> &ctx,
                                                const char *args_json, uint64_t window, int timeout_ms);
    // Kills the process if it still runs (or cancels its start), and
    // forgets it.
    ~RemoteProcess();
    RemoteProcess(const RemoteProcess &) = delete;
    RemoteProcess &operator=(const RemoteProcess &) = delete;

    // Each returns SPORE_OK or a code, with detail in err.
    int write(const char *data, size_t len, int timeout_ms, ErrorInfo &err);
    int close_stdin(ErrorInfo &err);
    // > 0 bytes read, 0 at the end of that output, < 0 a code.
    long read(int fd, char *buf, size_t cap, int timeout_ms, ErrorInfo &err);
    int signal(int signum, ErrorInfo &err);
    int resize(int rows, int cols, ErrorInfo &err);
    int wait(int *exit_code, int *signal, int timeout_ms, ErrorInfo &err);
    long pid() const { return pid_; }

private:
    RemoteProcess(Router &m, std::shared_ptr<ContextState> ctx, uint32_t ch, uint64_t window);
    int control(const char *function, const std::string &args, ErrorInfo &err);

    Router &m_;
    std::shared_ptr<ContextState> ctx_;
    const uint32_t ch_;
    std::shared_ptr<PendingCall> pc_;
    std::shared_ptr<ChannelWindow> in_;
    std::shared_ptr<ChannelInbox> out_[2];
    long pid_ = -1;
    bool started_ = false;  // the agent said it runs

    std::mutex write_mu_;
    bool stdin_closed_ = false;
    struct Reader {
        std::mutex mu;
        std::string chunk;  // the chunk being read
        size_t off = 0;
        bool eof = false;
    } readers_[2];
    std::mutex wait_mu_;
    bool exited_ = false;
    int exit_code_ = -1, exit_signal_ = 0;
};

}  // namespace spore
