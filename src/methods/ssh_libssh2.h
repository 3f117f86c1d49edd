// The in-process ssh backend (the default in the master): an SSH session
// made with libssh2, driven without blocking from a libevent loop and a
// thread of its own. It authenticates, checks the host key, runs the boot
// command in an exec channel, and then pumps bytes between that channel and
// a local socketpair, so that the rest of spore sees an ordinary stream.
// The agent has no libssh2; its ssh hops use the OpenSSH client.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/json.h"
#include "core/loop.h"

namespace spore {

class SshSessionThread;

struct SshSessionHooks {
    // Called once when the session cannot be set up or dies before it is
    // stopped: code is a SPORE_E* value, why names the reason.
    std::function<void(int code, const std::string &why)> failed;
    // Debug notes (what is tried, what the server offers).
    std::function<void(const std::string &line)> debug;
};

// Starts a session on a loop and thread of its own. The hooks run on
// `loop` (the caller's, which must outlive the session), never on the
// session's thread. options are the connect options of method ssh; command
// is the command line for the remote login shell. stream_fd is our end of
// the bytes the channel's stdin/stdout carry; err_fd receives the channel's
// stderr. Both are owned by the session.
std::shared_ptr<SshSessionThread> start_ssh_session(Loop &loop, const cJSON *options, const std::string &command,
                                                    int stream_fd, int err_fd, SshSessionHooks hooks);

// Ends the session: the channel and TCP connection are closed, which ends
// the remote agent's stdin. Returns once the session's thread has finished
// (libssh2's goodbye waits at most 200 ms); no hook runs afterwards.
// Dropping the last reference does the same.
void stop_ssh_session(const std::shared_ptr<SshSessionThread> &s);

// Makes backend=libssh2 available to connects of this process (the master
// library calls it once; the agent never does).
void register_libssh2_backend();

}  // namespace spore
