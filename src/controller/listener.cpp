#include "controller/listener.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/file_io.h"
#include "core/json.h"
#include "controller/router.h"
#include "spore/spore.h"

namespace spore {
namespace {

constexpr size_t kMaxPeers = 4096;     // attached routers at once
constexpr size_t kMaxServices = 256;   // connect requests served at once
constexpr double kHelloTimeout = 10.0; // seconds a new connection may take to say hello

sockaddr_un socket_address(const std::string &path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof a.sun_path)
        throw Error(SPORE_EINVAL, "socket path '" + path + "' must be 1 to " + std::to_string(sizeof a.sun_path - 1) +
                                      " bytes long");
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

std::string octal_mode(mode_t m) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", unsigned(m & 07777));
    return buf;
}

// The socket's directory must keep everyone else out: the socket's own mode
// is set only after bind, and the directory is what protects that moment.
void check_socket_dir(const std::string &path) {
    std::string dir = parent_dir(path);
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
        if (errno != ENOENT) throw Error(SPORE_EINVAL, "cannot use directory " + dir + ": " + std::strerror(errno));
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
            throw Error(SPORE_EINVAL, "cannot create directory " + dir + " for the socket: " + std::strerror(errno));
        if (::lstat(dir.c_str(), &st) != 0)
            throw Error(SPORE_EINVAL, "cannot use directory " + dir + ": " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) throw Error(SPORE_EINVAL, "the socket's directory " + dir + " is not a directory");
    if (st.st_uid != ::geteuid())
        throw Error(SPORE_EINVAL, "the socket's directory " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                                      ", not to this user (uid " + std::to_string(::geteuid()) + ")");
    if (st.st_mode & 077)
        throw Error(SPORE_EINVAL, "the socket's directory " + dir + " is open to other users (mode " +
                                      octal_mode(st.st_mode) + "); use a directory with mode 0700");
}

// Whether a listener answers at the socket path (a stale file does not).
bool socket_is_live(const sockaddr_un &a) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    return ::connect(fd.get(), reinterpret_cast<const sockaddr *>(&a), sizeof a) == 0;
}

double now_seconds() {
    timeval tv;
    gettimeofday(&tv, nullptr);
    return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

}  // namespace

ListenSocket bind_listen_socket(const std::string &path) {
    sockaddr_un a = socket_address(path);
    check_socket_dir(path);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) throw Error(SPORE_EINVAL, path + " exists and is not a socket");
        if (socket_is_live(a)) throw Error(SPORE_EINVAL, "a router already listens at " + path);
        ::unlink(path.c_str());  // left by a listener that died
    }
    ListenSocket ls;
    ls.path = path;
    ls.fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!ls.fd) throw Error(SPORE_EINTERNAL, std::string("socket: ") + std::strerror(errno));
    if (::bind(ls.fd.get(), reinterpret_cast<const sockaddr *>(&a), sizeof a) != 0)
        throw Error(SPORE_EINVAL, "cannot listen at " + path + ": " + std::strerror(errno));
    if (::chmod(path.c_str(), 0600) != 0 || ::listen(ls.fd.get(), 128) != 0 || ::stat(path.c_str(), &st) != 0) {
        int e = errno;
        ::unlink(path.c_str());
        throw Error(SPORE_EINVAL, "cannot listen at " + path + ": " + std::strerror(e));
    }
    ls.dev = st.st_dev;
    ls.ino = st.st_ino;
    return ls;
}

UniqueFd connect_listen_socket(const std::string &path) {
    sockaddr_un a = socket_address(path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw Error(SPORE_EINTERNAL, std::string("socket: ") + std::strerror(errno));
    int rc;
    do {
        rc = ::connect(fd.get(), reinterpret_cast<const sockaddr *>(&a), sizeof a);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        int e = errno;
        if (e == EACCES || e == EPERM)
            throw Error(SPORE_EACCES, "cannot attach to the router at " + path + ": " + std::strerror(e));
        throw Error(SPORE_ECONNECT, "no router listens at " + path + ": " + std::strerror(e));
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        throw Error(SPORE_EINTERNAL, std::string("SO_PEERCRED: ") + std::strerror(errno));
    if (cred.uid != ::geteuid())
        throw Error(SPORE_EACCES, "the router at " + path + " runs as uid " + std::to_string(cred.uid) +
                                      ", not as this user (uid " + std::to_string(::geteuid()) + ")");
    if (!set_nonblocking(fd.get())) throw Error(SPORE_EINTERNAL, std::string("fcntl: ") + std::strerror(errno));
    return fd;
}

std::string context_info_json(const ContextState &c) {
    Json j = json_object();
    cJSON_AddNumberToObject(j.get(), "id", c.id);
    cJSON_AddStringToObject(j.get(), "name", c.name.c_str());
    cJSON_AddStringToObject(j.get(), "method", c.method.c_str());
    cJSON_AddNumberToObject(j.get(), "via", c.via_id);
    cJSON *path = cJSON_AddArrayToObject(j.get(), "path");
    for (uint32_t p : c.path) cJSON_AddItemToArray(path, cJSON_CreateNumber(p));
    return json_print(j.get());
}

// ---------------------------------------------------------------- Listener

Listener::Listener(Router &master, ListenSocket sock) : master_(master), sock_(std::move(sock)) {}

Listener::~Listener() {
    // The loop is gone when this runs; the streams close with their owners.
    if (!stopped_) unlink_if_ours();
    join_services();
}

void Listener::log(int level, const std::string &message) {
    if (level < master_.level_.load()) return;
    master_.push_log(LogRecord{0, "master", "spore.listener", message, level, now_seconds()});
}

void Listener::start() {
    accept_ev_.reset(event_new(
        master_.loop_.base(), sock_.fd.get(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void *arg) { static_cast<Listener *>(arg)->on_accept(); }, this));
    if (!accept_ev_) throw std::bad_alloc();
    event_add(accept_ev_.get(), nullptr);
}

void Listener::stop(const std::string &why) {
    if (stopped_) return;
    stopped_ = true;
    accept_ev_.reset();
    accept_retry_.reset();
    unlink_if_ours();
    sock_.fd.reset();
    std::vector<std::shared_ptr<Peer>> all;
    for (auto &kv : hello_) all.push_back(kv.second);
    for (auto &kv : peers_) all.push_back(kv.second);
    for (auto &p : all) p->stream->close(why);
}

void Listener::unlink_if_ours() {
    // Only our own socket file: a newer listener may have replaced it.
    struct stat st {};
    if (::stat(sock_.path.c_str(), &st) == 0 && st.st_dev == sock_.dev && st.st_ino == sock_.ino)
        ::unlink(sock_.path.c_str());
}

void Listener::join_services() {
    for (auto &s : services_)
        if (s.thread.joinable()) s.thread.join();
    services_.clear();
}

void Listener::on_accept() {
    for (;;) {
        int fd = ::accept4(sock_.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            // Out of fds (EMFILE, ENFILE) or memory: the connection stays
            // queued and the socket readable, so waiting for it again at
            // once would spin. Pause accepting for a moment instead.
            log(SPORE_LOG_WARNING, "accept on " + sock_.path + ": " + std::strerror(errno) + "; retrying in 100 ms");
            event_del(accept_ev_.get());
            accept_retry_ = std::make_unique<Timer>(master_.loop_, 0.1, [this] {
                event_add(accept_ev_.get(), nullptr);
                accept_retry_.reset();  // a timer may be destroyed inside its callback
            });
            return;
        }
        UniqueFd owned(fd);
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != ::geteuid()) {
            // The socket's mode already keeps others out; this is the proof.
            log(SPORE_LOG_WARNING, "refused a connection on " + sock_.path + " from uid " + std::to_string(cred.uid) +
                                       ": only uid " + std::to_string(::geteuid()) + " may attach");
            continue;
        }
        if (hello_.size() + peers_.size() >= kMaxPeers) {
            log(SPORE_LOG_WARNING, "refused a connection on " + sock_.path + ": " + std::to_string(kMaxPeers) +
                                       " routers are attached already");
            continue;
        }
        auto p = std::make_shared<Peer>();
        p->pid = cred.pid;
        p->stream = std::make_shared<Stream>(master_.loop_, owned.get(), owned.get(),
                                             "attached router (pid " + std::to_string(cred.pid) + ")",
                                             master_.router_.limits());
        owned.release();
        p->stream->set_attached(true);
        std::weak_ptr<Peer> wp = p;
        p->stream->on_message([this, wp](Stream &, Message &&m) {
            if (auto sp = wp.lock()) on_peer_message(sp, std::move(m));
        });
        p->stream->on_close([this, wp](Stream &s, const std::string &reason) { on_peer_closed(wp, s, reason); });
        p->hello_timer = std::make_unique<Timer>(master_.loop_, kHelloTimeout, [wp] {
            if (auto sp = wp.lock()) sp->stream->close("no hello within 10 s");
        });
        hello_[p->stream.get()] = p;
        p->stream->start(false);
    }
}

void Listener::on_peer_message(const std::shared_ptr<Peer> &p, Message &&m) {
    if (p->ready) {
        master_.router_.dispatch(std::move(m), p->stream);
        return;
    }
    on_hello(p, std::move(m));
}

void Listener::on_hello(const std::shared_ptr<Peer> &p, Message &&m) {
    std::string err;
    Json j = m.h.handle == kHandleInit ? json_parse(m.json, kDefaultMaxJsonDepth, &err) : nullptr;
    if (!j || !cJSON_IsObject(j.get())) return p->stream->close("the first message was not a hello");
    int64_t proto = json_int(j.get(), "protocol", 0);
    if (proto != kSharedProtocol) {
        Message r;
        r.h.handle = kHandleInit;
        r.h.flags = kFlagError;
        r.json = MessageRouter::error_json(ErrorInfo{SPORE_EPROTO,
                                              "the router at " + sock_.path + " speaks protocol " +
                                                  std::to_string(kSharedProtocol) + ", not " + std::to_string(proto),
                                              "", "", ""});
        p->stream->send(r);
        // Closed once the answer has left: writes made while the loop
        // dispatches what it read go out when that batch ends, and a close
        // now would drop them.
        std::string why = "unsupported protocol " + std::to_string(proto);
        master_.loop_.post([w = std::weak_ptr<Stream>(p->stream), why] {
            if (auto s = w.lock()) s->close(why);
        });
        return;
    }
    p->level = int(json_int(j.get(), "log_level", SPORE_LOG_INFO));
    p->id = master_.next_id_.fetch_add(1);
    p->stream->set_remote_id(p->id);
    if (!master_.router_.attach_peer(p->stream)) return p->stream->close("no route for the attached router");
    p->ready = true;
    p->hello_timer.reset();
    hello_.erase(p->stream.get());
    peers_[p->id] = p;

    Message r;
    r.h.dst_id = p->id;
    r.h.handle = kHandleInit;
    Json ij = json_object();
    cJSON_AddNumberToObject(ij.get(), "protocol", kSharedProtocol);
    cJSON_AddNumberToObject(ij.get(), "id", p->id);
    cJSON *pids = cJSON_AddArrayToObject(ij.get(), "parent_ids");
    cJSON_AddItemToArray(pids, cJSON_CreateNumber(0));
    cJSON_AddStringToObject(ij.get(), "name", ("attached." + std::to_string(p->id)).c_str());
    cJSON_AddNumberToObject(ij.get(), "listener_pid", ::getpid());
    cJSON_AddStringToObject(ij.get(), "version", SPORE_VERSION_STRING);
    cJSON_AddNumberToObject(ij.get(), "max_message_size", double(master_.router_.limits().max_message_size));
    r.json = json_print(ij.get());
    p->stream->send(r);
    log(SPORE_LOG_DEBUG, "router of pid " + std::to_string(p->pid) + " attached as context " + std::to_string(p->id));
}

void Listener::on_peer_closed(const std::weak_ptr<Peer> &wp, Stream &s, const std::string &reason) {
    auto p = wp.lock();
    if (!p) return;
    // Released later: the stream is inside its own close callback.
    master_.loop_.post([p] {});
    if (!p->ready) {
        hello_.erase(&s);
        return;
    }
    master_.router_.stream_closed(s, reason);  // reports the route lost: on_route_lost below
}

bool Listener::on_route_lost(uint32_t id, const std::string &reason) {
    auto it = peers_.find(id);
    Json j = json_object();
    cJSON_AddNumberToObject(j.get(), "id", id);
    cJSON_AddStringToObject(j.get(), "reason", reason.c_str());
    std::string text = json_print(j.get());
    if (it != peers_.end()) {
        auto p = it->second;
        peers_.erase(it);
        master_.loop_.post([p] {});
        log(SPORE_LOG_DEBUG, "attached router " + std::to_string(id) + " (pid " + std::to_string(p->pid) +
                                 ") went away: " + reason);
        // What it started in the contexts must stop with it.
        master_.router_.send_down(kHandlePeerGone, text);
        return true;
    }
    for (auto &kv : peers_) {
        Message m;
        m.h.dst_id = kv.first;
        m.h.handle = kHandlePeerGone;
        m.json = text;
        kv.second->stream->send(m);
    }
    return false;
}

bool Listener::is_attached(const MessageRouter::StreamPtr &s) const {
    if (!s || !s->attached()) return false;
    auto it = peers_.find(s->remote_id());
    return it != peers_.end() && it->second->stream == s;
}

void Listener::forward_log(const Message &m, int level) {
    for (auto &kv : peers_) {
        if (level < kv.second->level) continue;
        Message f;
        f.h = m.h;
        f.h.dst_id = kv.first;
        f.json = m.json;
        kv.second->stream->send(f);
    }
}

void Listener::on_set_log_level(Message &&m, const MessageRouter::StreamPtr &ingress) {
    if (!is_attached(ingress)) return;
    std::string err;
    Json j = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    if (j) peers_[ingress->remote_id()]->level = int(json_int(j.get(), "level", SPORE_LOG_INFO));
}

void Listener::reply(const Header &req, std::string json, bool error) {
    if (!req.reply_to) return;
    Message r;
    r.h.dst_id = req.src_id;
    r.h.handle = req.reply_to;
    if (error) r.h.flags = kFlagError;
    r.json = std::move(json);
    master_.send(r);
}

void Listener::reply_error(const Header &req, int code, const std::string &message) {
    reply(req, MessageRouter::error_json(ErrorInfo{code, message, "", "", ""}), true);
}

void Listener::on_call(Message &&m, const MessageRouter::StreamPtr &ingress) {
    if (!is_attached(ingress)) {
        master_.router_.send_dead(m.h, SPORE_EREFUSED, "the master does not accept calls");
        return;
    }
    std::string err;
    Json body = json_parse(m.json, kDefaultMaxJsonDepth, &err);
    std::string fn = body ? json_str(body.get(), "fn") : "";
    cJSON *args = body ? cJSON_DetachItemFromObjectCaseSensitive(body.get(), "args") : nullptr;
    std::shared_ptr<cJSON> shared_args(args ? args : cJSON_CreateObject(), cJSON_Delete);
    if (fn == "spore.listener.connect") {
        Header h = m.h;
        spawn(h, [this, h, shared_args] { serve_connect(h, shared_args); });
    } else if (fn == "spore.listener.find") {
        std::string name = json_str(shared_args.get(), "name");
        auto c = master_.find_context_named(name);
        if (!c) reply_error(m.h, SPORE_ENOENT, "the router at " + sock_.path + " has no context named '" + name + "'");
        else reply(m.h, context_info_json(*c), false);
    } else {
        reply_error(m.h, SPORE_ENOFUNC, "the router at " + sock_.path + " has no function '" + fn + "'");
    }
}

void Listener::spawn(const Header &req, std::function<void()> fn) {
    for (auto it = services_.begin(); it != services_.end();) {
        if (it->done->load()) {
            it->thread.join();
            it = services_.erase(it);
        } else {
            ++it;
        }
    }
    if (services_.size() >= kMaxServices)
        return reply_error(req, SPORE_EREFUSED,
                           "the router at " + sock_.path + " is serving " + std::to_string(kMaxServices) +
                               " connects already");
    auto done = std::make_shared<std::atomic<bool>>(false);
    try {
        services_.push_back(Service{std::thread([fn = std::move(fn), done] {
                                        fn();
                                        done->store(true);
                                    }),
                                    done});
    } catch (const std::exception &e) {
        reply_error(req, SPORE_EINTERNAL, std::string("cannot start a thread: ") + e.what());
    }
}

void Listener::serve_connect(const Header &req, std::shared_ptr<cJSON> args) {
    // A thread of its own: connecting blocks, and one slow host must not
    // hold up the others.
    try {
        std::string method = json_str(args.get(), "method");
        int64_t via_id = json_int(args.get(), "via", 0);
        std::shared_ptr<ContextState> via;
        if (via_id != 0) {
            via = master_.find_context(uint32_t(via_id));
            if (!via || !via->alive.load())
                throw Error(SPORE_EDISCONNECTED, "context " + std::to_string(via_id) + " (via) is not connected to the router at " +
                                                     sock_.path);
        }
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(args.get(), "options");
        Json options(o ? cJSON_Duplicate(o, 1) : cJSON_CreateObject());
        if (!options) throw std::bad_alloc();
        auto c = master_.connect(method, std::move(options), via);
        if (!c->alive.load()) throw Error(ErrorInfo{SPORE_EDISCONNECTED, c->name + " disconnected", "", c->name, ""});
        reply(req, context_info_json(*c), false);
    } catch (const Error &e) {
        reply(req, MessageRouter::error_json(e.info()), true);
    } catch (const std::bad_alloc &) {
        reply_error(req, SPORE_ENOMEM, "out of memory");
    } catch (const std::exception &e) {
        reply_error(req, SPORE_EINTERNAL, std::string("internal error: ") + e.what());
    }
}

}  // namespace spore
