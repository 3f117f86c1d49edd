// Shared routers (docs/protocol.md, "Shared routers"): a router listens on a
// Unix socket, and other processes of the same user attach to it. An
// attached router's messages act with the listener's authority, so it uses
// the listener's contexts as if it were the listener: it calls them, moves
// files to them and opens new contexts through the listener. This is how
// many short-lived workers share persistent connections.
//
// The Listener is the listening side, a part of the Router that listens: it
// accepts connections, checks that they come from this user, names each
// attached router with a context id and serves the calls they make to the
// listener itself (opening and finding contexts). The attaching side lives
// in Router (Router::attach).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "core/frame.h"
#include "core/loop.h"
#include "core/message_router.h"

namespace spore {

class Router;
class ContextState;

// A bound, listening Unix socket and what identifies its file.
struct ListenSocket {
    UniqueFd fd;
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
};

// Binds a socket at path, mode 0600. Its directory must belong to this user
// and be closed to everyone else (mode 0700); it is created so when missing.
// A stale socket left by a dead listener is replaced; a live one is an
// error. Throws spore::Error (SPORE_EINVAL).
ListenSocket bind_listen_socket(const std::string &path);

// Connects to the listener at path and checks that it runs as this user.
// Throws spore::Error: SPORE_ECONNECT (nothing listens there), SPORE_EACCES.
UniqueFd connect_listen_socket(const std::string &path);

// The hello an attaching router sends first, and the protocol it speaks.
inline constexpr int kSharedProtocol = 1;

class Listener {
public:
    Listener(Router &master, ListenSocket sock);
    ~Listener();
    Listener(const Listener &) = delete;
    Listener &operator=(const Listener &) = delete;

    const std::string &path() const { return sock_.path; }

    // Loop thread: starts accepting.
    void start();
    // Loop thread: stops accepting, removes the socket file and disconnects
    // every attached router. Idempotent.
    void stop(const std::string &why);
    // Joins the threads that served connect requests; after the loop stopped.
    void join_services();

    // Loop thread, from the Router's handlers.
    bool is_attached(const MessageRouter::StreamPtr &s) const;
    void on_call(Message &&m, const MessageRouter::StreamPtr &ingress);
    void on_set_log_level(Message &&m, const MessageRouter::StreamPtr &ingress);
    // A record that reached the listener: passed on to each attached router
    // whose level admits it.
    void forward_log(const Message &m, int level);
    // A route was lost. True when it was an attached router's: the contexts
    // learn that their caller is gone. Otherwise the attached routers learn
    // that the context is gone.
    bool on_route_lost(uint32_t id, const std::string &reason);

private:
    struct Peer {
        std::shared_ptr<Stream> stream;
        pid_t pid = 0;
        uint32_t id = 0;
        int level = 20;
        bool ready = false;
        TimerPtr hello_timer;
    };
    struct Service {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };

    void on_accept();
    void unlink_if_ours();
    void on_peer_message(const std::shared_ptr<Peer> &p, Message &&m);
    void on_peer_closed(const std::weak_ptr<Peer> &wp, Stream &s, const std::string &reason);
    void on_hello(const std::shared_ptr<Peer> &p, Message &&m);
    void serve_connect(const Header &req, std::shared_ptr<cJSON> args);
    void spawn(const Header &req, std::function<void()> fn);
    // Replies to a call of an attached router (any thread).
    void reply(const Header &req, std::string json, bool error);
    void reply_error(const Header &req, int code, const std::string &message);
    void log(int level, const std::string &message);

    Router &master_;
    ListenSocket sock_;
    EventPtr accept_ev_;
    TimerPtr accept_retry_;  // accepting paused after a failure (out of fds)
    bool stopped_ = false;
    std::unordered_map<Stream *, std::shared_ptr<Peer>> hello_;  // connected, hello not yet seen
    std::unordered_map<uint32_t, std::shared_ptr<Peer>> peers_;  // attached, by id
    std::list<Service> services_;
};

// The JSON description of a context that listeners send to attached routers.
std::string context_info_json(const ContextState &c);

}  // namespace spore
