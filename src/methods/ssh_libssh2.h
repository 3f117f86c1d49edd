// The in-process ssh backend (the default in the master): an SSH session
// made with libssh2, driven without blocking from the router's libevent
// loop. It authenticates, checks the host key, runs the boot command in an
// exec channel, and then pumps bytes between that channel and a local
// socketpair, so that the rest of spore sees an ordinary stream. The agent
// has no libssh2; its ssh hops use the OpenSSH client.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/json.h"
#include "core/loop.h"

namespace spore {

class SshSession;

struct SshSessionHooks {
    // Called once when the session cannot be set up or dies before it is
    // stopped: code is a SPORE_E* value, why names the reason.
    std::function<void(int code, const std::string &why)> failed;
    // Debug notes (what is tried, what the server offers).
    std::function<void(const std::string &line)> debug;
};

// Starts a session on the loop thread. options are the connect options of
// method ssh; command is the command line for the remote login shell.
// stream_fd is our end of the bytes the channel's stdin/stdout carry;
// err_fd receives the channel's stderr. Both are owned by the session.
// Throws spore::Error(SPORE_EINVAL) for options it cannot honour.
std::shared_ptr<SshSession> start_ssh_session(Loop &loop, const cJSON *options, const std::string &command,
                                              int stream_fd, int err_fd, SshSessionHooks hooks);

// Ends the session at once (loop thread): the channel and TCP connection
// are closed, which ends the remote agent's stdin.
void stop_ssh_session(const std::shared_ptr<SshSession> &s);

// Makes backend=libssh2 available to connects of this process (the master
// library calls it once; the agent never does).
void register_libssh2_backend();

}  // namespace spore
