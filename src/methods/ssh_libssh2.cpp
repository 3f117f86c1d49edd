#include "methods/ssh_libssh2.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libssh2.h>
#include <nettle/base64.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/prompts.h"
#include "core/shlex.h"
#include "core/thread.h"
#include "methods/method.h"

namespace spore {

namespace {

constexpr size_t kPumpBuffer = 256 * 1024;
constexpr size_t kReadChunk = 64 * 1024;  // one read from the channel or the local stream
// Preferred ciphers and MACs (only those this libssh2 supports are offered;
// the server picks the first of ours it also has).
constexpr const char *kCipherOrder = "aes128-gcm@openssh.com,aes128-ctr,aes256-gcm@openssh.com,aes192-ctr,aes256-ctr";
constexpr const char *kMacOrder = "hmac-sha2-256-etm@openssh.com,hmac-sha2-256,hmac-sha2-512-etm@openssh.com,hmac-sha2-512,hmac-sha1";

// Bytes waiting to move, consumed from the front without moving the rest
// (libssh2 takes 32 KiB packets: erasing each from a std::string would copy
// the whole buffer again for every packet).
class ByteQueue {
public:
    const char *data() const { return buf_.data() + off_; }
    size_t size() const { return buf_.size() - off_; }
    bool empty() const { return off_ == buf_.size(); }
    void append(const char *p, size_t n) {
        if (off_ > 0 && off_ == buf_.size()) clear();
        buf_.append(p, n);
    }
    // Room for n more bytes at the end, to read into; give back what the
    // read did not fill with unused(). Reading straight into the queue
    // spares each session thread a 64 KiB buffer on its stack, which would
    // stay resident for the life of the session.
    char *tail(size_t n) {
        if (off_ > 0 && off_ == buf_.size()) clear();
        size_t old = buf_.size();
        buf_.resize(old + n);
        return buf_.data() + old;
    }
    void unused(size_t n) {
        buf_.resize(buf_.size() - n);
        if (empty()) clear();
    }
    void consume(size_t n) {
        off_ += n;
        if (off_ == buf_.size()) clear();
        else if (off_ >= kPumpBuffer) {  // keep the buffer from creeping
            buf_.erase(0, off_);
            off_ = 0;
        }
    }
    // An idle session keeps no large buffer (a thousand hosts are a
    // thousand sessions).
    void clear() {
        if (buf_.capacity() > kKeepCapacity) std::string().swap(buf_);
        else buf_.clear();
        off_ = 0;
    }

private:
    static constexpr size_t kKeepCapacity = 4096;
    std::string buf_;
    size_t off_ = 0;
};
constexpr unsigned kChannelWindow = 16 * 1024 * 1024;
constexpr unsigned kChannelPacket = 32768;

std::string home_dir() {
    const char *h = std::getenv("HOME");
    if (h && *h) return h;
    if (passwd *pw = getpwuid(geteuid())) return pw->pw_dir;
    return "/";
}

std::string current_user() {
    if (passwd *pw = getpwuid(geteuid())) return pw->pw_name;
    const char *u = std::getenv("USER");
    return u ? u : "root";
}

std::string base64(const unsigned char *data, size_t len) {
    std::string out(BASE64_ENCODE_RAW_LENGTH(len), '\0');
    base64_encode_raw(reinterpret_cast<char *>(out.data()), len, data);
    while (!out.empty() && out.back() == '=') out.pop_back();
    return out;
}

const char *key_type_name(int type) {
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "RSA";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "DSA";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ECDSA";
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ED25519";
    default: return "unknown";
    }
}

int known_host_key_bit(int type) {
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
    default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
    }
}

// Host key algorithm names for the known_hosts key type bits.
const char *algorithms_for_key_bit(int bit) {
    switch (bit) {
    case LIBSSH2_KNOWNHOST_KEY_ED25519: return "ssh-ed25519";
    case LIBSSH2_KNOWNHOST_KEY_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_KNOWNHOST_KEY_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_KNOWNHOST_KEY_ECDSA_521: return "ecdsa-sha2-nistp521";
    case LIBSSH2_KNOWNHOST_KEY_SSHRSA: return "rsa-sha2-512,rsa-sha2-256,ssh-rsa";
    default: return nullptr;
    }
}

constexpr const char *kDefaultHostKeyOrder =
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa";

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { libssh2_init(0); });
}

}  // namespace

class SshSession : public std::enable_shared_from_this<SshSession> {
public:
    SshSession(std::shared_ptr<Loop> loop, SshSessionHooks hooks) : loop_(std::move(loop)), hooks_(std::move(hooks)) {}
    ~SshSession() { teardown(); }

    void configure(const cJSON *o, const std::string &command, int stream_fd, int err_fd);
    void begin();
    void stop() {
        teardown();
        local_.reset();
        err_.reset();
    }
    std::string peer() const { return user_ + "@" + host_ + ":" + std::to_string(port_); }

private:
    enum class State { Resolving, Connecting, Handshake, HostKey, Auth, OpenChannel, Exec, Running, Done };
    enum class AuthStep { List, Agent, KeyFile, Password, KbdInt, Failed };
    // What an authentication step came to: the next step is set, wait for
    // the socket, done, or failed (fail() was called).
    enum class AuthOutcome { kNextStep, kWaiting, kAuthenticated, kFailed };

    void resolved(int err, std::vector<sockaddr_storage> addrs, std::vector<socklen_t> lens);
    void try_next_address();
    void step();
    bool step_handshake();
    bool check_host_key();
    std::string verify_host_key(int &code);
    bool step_auth();
    AuthOutcome auth_list_methods();
    AuthOutcome auth_with_agent();
    AuthOutcome auth_with_key_file();
    AuthOutcome auth_with_password();
    void report_auth_failure();
    bool step_channel();
    // Moves bytes both ways until nothing moves; false once the session
    // has ended (failed or torn down). Each step below is one direction.
    bool pump();
    bool read_channel(bool &progress);
    bool write_local(bool &progress);
    void read_local(bool &progress);
    bool write_channel(bool &progress);
    bool buffered_in_libssh2() const;
    void arm();
    void watch(EventPtr &ev, short &current, int fd, short what, event_callback_fn cb);
    void fail(int code, const std::string &why);
    void note(const std::string &line) {
        if (hooks_.debug) hooks_.debug("ssh " + peer() + ": " + line);
    }
    std::string last_error() const;
    std::string supported_only(int method, const std::string &list) const;
    std::string known_key_algorithms() const;
    void teardown(bool keep_stream = false);
    static void on_socket(evutil_socket_t, short, void *arg) { static_cast<SshSession *>(arg)->step(); }
    static void on_local(evutil_socket_t, short, void *arg) { static_cast<SshSession *>(arg)->step(); }
    static void kbd_callback(const char *, int, const char *, int, int num_prompts,
                             const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
                             LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract);

    std::shared_ptr<Loop> loop_;  // the session's own (see SshSessionThread)
    SshSessionHooks hooks_;
    // options
    std::string host_, user_, password_, passphrase_, identity_file_, known_hosts_, check_, command_, ciphers_;
    int port_ = 22;
    bool use_agent_ = true, compression_ = false;
    int64_t keepalive_interval_ = 15, keepalive_count_ = 3;
    // connection
    State state_ = State::Resolving;
    std::vector<sockaddr_storage> addrs_;
    std::vector<socklen_t> addr_lens_;
    size_t next_addr_ = 0;
    std::string connect_errors_;
    int sock_ = -1;
    EventPtr sock_ev_;
    LIBSSH2_SESSION *session_ = nullptr;
    LIBSSH2_CHANNEL *channel_ = nullptr;
    LIBSSH2_AGENT *agent_ = nullptr;
    LIBSSH2_KNOWNHOSTS *known_ = nullptr;  // from Connecting to the host key check
    libssh2_agent_publickey *agent_identity_ = nullptr;
    std::string auth_methods_;
    AuthStep auth_ = AuthStep::List;
    std::vector<std::string> key_files_;
    size_t next_key_ = 0;
    bool tried_password_ = false, tried_kbd_ = false, kbd_sent_password_ = false;
    std::string auth_notes_;
    // pump
    UniqueFd local_, err_;
    EventPtr local_ev_;
    ByteQueue to_channel_, to_local_, to_err_;
    bool local_eof_ = false, channel_eof_ = false, eof_sent_ = false;
    TimerPtr keepalive_timer_;
    double last_activity_ = 0;
    bool retry_soon_ = false;
    short sock_what_ = 0, local_what_ = 0;
    TimerPtr retry_timer_;
    bool finished_ = false;
};

void SshSession::configure(const cJSON *o, const std::string &command, int stream_fd, int err_fd) {
    host_ = json_str(o, "hostname");
    port_ = int(json_int(o, "port", 22));
    user_ = json_str(o, "username");
    if (user_.empty()) user_ = current_user();
    password_ = json_str(o, "password");
    passphrase_ = json_str(o, "identity_passphrase");
    identity_file_ = json_str(o, "identity_file");
    known_hosts_ = json_str(o, "known_hosts_file");
    if (known_hosts_.empty()) known_hosts_ = home_dir() + "/.ssh/known_hosts";
    check_ = json_str(o, "check_host_keys", "enforce");
    use_agent_ = json_bool(o, "use_agent", true) && std::getenv("SSH_AUTH_SOCK") != nullptr;
    compression_ = json_bool(o, "compression", false);
    // Unset: our order; "": libssh2's own.
    ciphers_ = cJSON_GetObjectItemCaseSensitive(o, "ciphers") ? json_str(o, "ciphers") : kCipherOrder;
    keepalive_interval_ = json_int(o, "keepalive_interval", 15);
    keepalive_count_ = json_int(o, "keepalive_count", 3);
    command_ = command;
    local_.reset(stream_fd);
    err_.reset(err_fd);
    set_nonblocking(stream_fd);
    set_nonblocking(err_fd);
    if (!identity_file_.empty()) {
        key_files_.push_back(identity_file_);
    } else if (password_.empty()) {
        for (const char *k : {"id_ed25519", "id_ecdsa", "id_rsa"}) {
            std::string p = home_dir() + "/.ssh/" + k;
            if (access(p.c_str(), R_OK) == 0) key_files_.push_back(p);
        }
    }
}

void SshSession::begin() {
    global_init();
    note("resolving " + host_);
    // getaddrinfo blocks; it runs on a thread of its own so the loop never waits.
    // It holds the loop only weakly: a session stopped meanwhile takes its
    // loop with it, and the answer goes nowhere.
    std::weak_ptr<SshSession> weak = weak_from_this();
    std::weak_ptr<Loop> weak_loop = loop_;
    std::string host = host_, port = std::to_string(port_);
    std::thread([weak, weak_loop, host, port] {
        addrinfo hints{}, *res = nullptr;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
        std::vector<sockaddr_storage> addrs;
        std::vector<socklen_t> lens;
        for (addrinfo *a = res; a; a = a->ai_next) {
            sockaddr_storage ss{};
            std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
            addrs.push_back(ss);
            lens.push_back(a->ai_addrlen);
        }
        if (res) freeaddrinfo(res);
        if (auto loop = weak_loop.lock())
            loop->post([weak, rc, addrs = std::move(addrs), lens = std::move(lens)]() mutable {
                if (auto self = weak.lock()) self->resolved(rc, std::move(addrs), std::move(lens));
            });
    }).detach();
}

void SshSession::resolved(int err, std::vector<sockaddr_storage> addrs, std::vector<socklen_t> lens) {
    if (finished_) return;
    if (err != 0 || addrs.empty()) {
        return fail(SPORE_ECONNECT, "ssh: Could not resolve hostname " + host_ + ": " + gai_strerror(err));
    }
    addrs_ = std::move(addrs);
    addr_lens_ = std::move(lens);
    state_ = State::Connecting;
    try_next_address();
}

void SshSession::try_next_address() {
    while (next_addr_ < addrs_.size()) {
        const sockaddr_storage &ss = addrs_[next_addr_];
        socklen_t len = addr_lens_[next_addr_];
        ++next_addr_;
        sock_ev_.reset();
        if (sock_ >= 0) ::close(sock_);
        sock_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (sock_ < 0) {
            connect_errors_ += std::string("; socket: ") + std::strerror(errno);
            continue;
        }
        int one = 1;
        setsockopt(sock_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int rc = ::connect(sock_, reinterpret_cast<const sockaddr *>(&ss), len);
        if (rc == 0 || errno == EINPROGRESS) {
            arm();
            if (rc == 0) step();
            return;
        }
        connect_errors_ += std::string("; ") + std::strerror(errno);
    }
    fail(SPORE_ECONNECT, "ssh: connect to host " + host_ + " port " + std::to_string(port_) + ": " +
                             (connect_errors_.size() > 2 ? connect_errors_.substr(2) : "no address"));
}

// The host key algorithms of the keys known_hosts has for this host, the
// way OpenSSH prefers them: a server with several keys is then checked
// against the one we know.
std::string SshSession::known_key_algorithms() const {
    std::string order;
    if (!known_) return order;
    std::string want = port_ == 22 ? host_ : "[" + host_ + "]:" + std::to_string(port_);
    libssh2_knownhost *node = nullptr, *prev = nullptr;
    while (libssh2_knownhost_get(known_, &node, prev) == 0) {
        prev = node;
        if (!node->name || want != node->name) continue;
        const char *alg = algorithms_for_key_bit(node->typemask & LIBSSH2_KNOWNHOST_KEY_MASK);
        if (alg && order.find(alg) == std::string::npos) order += std::string(order.empty() ? "" : ",") + alg;
    }
    return order;
}

// The names of `list` that this libssh2 supports, each once, in order.
// (libssh2 1.10 strips unsupported names itself with an overlapping memcpy.)
std::string SshSession::supported_only(int method, const std::string &list) const {
    const char **algs = nullptr;
    int n = libssh2_session_supported_algs(session_, method, &algs);
    std::vector<std::string> supported;
    for (int i = 0; i < n; ++i) supported.emplace_back(algs[i]);
    if (algs) libssh2_free(session_, algs);
    std::string out;
    std::vector<std::string> seen;
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        std::string name = list.substr(pos, comma - pos);
        pos = comma + 1;
        bool ok = false, dup = false;
        for (auto &a : supported) ok = ok || a == name;
        for (auto &a : seen) dup = dup || a == name;
        if (!ok || dup || name.empty()) continue;
        seen.push_back(name);
        out += (out.empty() ? "" : ",") + name;
    }
    return out;
}

std::string SshSession::last_error() const {
    if (!session_) return "no session";
    char *msg = nullptr;
    int len = 0;
    libssh2_session_last_error(session_, &msg, &len, 0);
    return msg ? std::string(msg, size_t(len)) : "unknown libssh2 error";
}

void SshSession::step() {
    if (finished_) return;
    // A failure hook may drop the last outside reference to this session.
    auto keep = shared_from_this();
    for (;;) {
        switch (state_) {
        case State::Resolving:
        case State::Done:
            return;
        case State::Connecting: {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(sock_, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == EINPROGRESS || err == EALREADY) return arm();
            if (err != 0) {
                connect_errors_ += std::string("; ") + std::strerror(err);
                return try_next_address();
            }
            // Connected?
            sockaddr_storage peer{};
            socklen_t pl = sizeof peer;
            if (getpeername(sock_, reinterpret_cast<sockaddr *>(&peer), &pl) != 0) return arm();
            note("TCP connected");
            session_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
            if (!session_) return fail(SPORE_EINTERNAL, "libssh2_session_init failed");
            libssh2_session_set_blocking(session_, 0);
            if (compression_) libssh2_session_flag(session_, LIBSSH2_FLAG_COMPRESS, 1);
            if (check_ != "ignore") {
                // Read once: the list orders the host key algorithms now and
                // checks the key after the handshake.
                known_ = libssh2_knownhost_init(session_);
                if (known_) libssh2_knownhost_readfile(known_, known_hosts_.c_str(), LIBSSH2_KNOWNHOST_FILE_OPENSSH);
            }
            std::string order = known_key_algorithms();
            order += std::string(order.empty() ? "" : ",") + kDefaultHostKeyOrder;
            std::string pref = supported_only(LIBSSH2_METHOD_HOSTKEY, order);
            if (!pref.empty()) libssh2_session_method_pref(session_, LIBSSH2_METHOD_HOSTKEY, pref.c_str());
            // Bulk data is bounded by the cipher and the MAC: the cheapest
            // strong ones first (AES-128 in CTR mode runs on AES-NI).
            for (int m : {LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC}) {
                if (ciphers_.empty()) break;  // "": libssh2's own order
                std::string c = supported_only(m, ciphers_);
                if (c.empty()) return fail(SPORE_EINVAL, "ssh: none of the ciphers '" + ciphers_ + "' is supported by this libssh2");
                libssh2_session_method_pref(session_, m, c.c_str());
            }
            for (int m : {LIBSSH2_METHOD_MAC_CS, LIBSSH2_METHOD_MAC_SC}) {
                std::string c = supported_only(m, kMacOrder);
                if (!c.empty()) libssh2_session_method_pref(session_, m, c.c_str());
            }
            state_ = State::Handshake;
            break;
        }
        case State::Handshake:
            if (!step_handshake()) return;
            break;
        case State::HostKey:
            if (!check_host_key()) return;
            state_ = State::Auth;
            break;
        case State::Auth:
            if (!step_auth()) return;
            break;
        case State::OpenChannel:
        case State::Exec:
            if (!step_channel()) return;
            break;
        case State::Running:
            if (!pump()) return;
            return arm();
        }
    }
}

bool SshSession::step_handshake() {
    int rc = libssh2_session_handshake(session_, sock_);
    if (rc == LIBSSH2_ERROR_EAGAIN) {
        arm();
        return false;
    }
    if (rc != 0) {
        fail(SPORE_ECONNECT, "ssh: handshake with " + host_ + " failed: " + last_error());
        return false;
    }
    if (keepalive_interval_ > 0) libssh2_keepalive_config(session_, 1, unsigned(keepalive_interval_));
    state_ = State::HostKey;
    return true;
}

bool SshSession::check_host_key() {
    int code = 0;
    std::string why = verify_host_key(code);
    if (code) {
        fail(code, why);
        return false;
    }
    return true;
}

// Returns the failure (code set) or an empty string. The known_hosts list
// lives in the session, so it is freed before any failure tears that down.
std::string SshSession::verify_host_key(int &code) {
    size_t len = 0;
    int type = 0;
    const char *key = libssh2_session_hostkey(session_, &len, &type);
    if (!key) {
        code = SPORE_EHOSTKEY;
        return ("ssh: " + host_ + " sent no host key");
    }
    const char *hash = libssh2_hostkey_hash(session_, LIBSSH2_HOSTKEY_HASH_SHA256);
    std::string fp = hash ? "SHA256:" + base64(reinterpret_cast<const unsigned char *>(hash), 32) : "(no fingerprint)";
    std::string what = std::string(key_type_name(type)) + " key " + fp;
    note("host key " + what);
    if (check_ == "ignore") {
        code = 0;
        return "";
    }

    LIBSSH2_KNOWNHOSTS *kh = known_;
    if (!kh) {
        code = SPORE_EINTERNAL;
        return ("libssh2_knownhost_init failed");
    }
    // Not needed after this check (it lives in the session, so it goes
    // before any failure tears the session down).
    struct KhFree {
        LIBSSH2_KNOWNHOSTS *&k;
        ~KhFree() {
            libssh2_knownhost_free(k);
            k = nullptr;
        }
    } kh_free{known_};
    int mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | known_host_key_bit(type);
    libssh2_knownhost *found = nullptr;
    int rc = libssh2_knownhost_checkp(kh, host_.c_str(), port_, key, len, mask, &found);
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
        code = 0;
        return "";
    }
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        code = SPORE_EHOSTKEY;
        return ("the host key of " + host_ + " has changed: it sent the " + what + ", which " +
                                 known_hosts_ + " does not have for it");
    }
    if (check_ != "accept") {
        code = SPORE_EHOSTKEY;
        return ("the host key of " + host_ + " is not known: it sent the " + what + " (not in " +
                                 known_hosts_ + "; check_host_keys=accept adds it)");
    }
    // accept: add the key, one line appended (the rest of the file is kept as it is).
    std::string name = port_ == 22 ? host_ : "[" + host_ + "]:" + std::to_string(port_);
    libssh2_knownhost *added = nullptr;
    if (libssh2_knownhost_addc(kh, name.c_str(), nullptr, key, len, nullptr, 0, mask, &added) != 0 || !added) {
        code = SPORE_EHOSTKEY;
        return ("cannot record the host key of " + host_ + ": " + last_error());
    }
    char line[16384];
    size_t outlen = 0;
    if (libssh2_knownhost_writeline(kh, added, line, sizeof line, &outlen, LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
        code = SPORE_EHOSTKEY;
        return ("cannot format the host key of " + host_);
    }
    int fd = ::open(known_hosts_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, line, outlen) != ssize_t(outlen)) {
        if (fd >= 0) ::close(fd);
        code = SPORE_EHOSTKEY;
        return ("cannot add the host key of " + host_ + " to " + known_hosts_ + ": " + std::strerror(errno));
    }
    ::close(fd);
    note("added the " + what + " to " + known_hosts_);
    code = 0;
    return "";
}

void SshSession::kbd_callback(const char *, int, const char *, int, int num_prompts,
                              const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
                              LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract) {
    auto *self = static_cast<SshSession *>(*abstract);
    for (int i = 0; i < num_prompts; ++i) {
        std::string p(reinterpret_cast<const char *>(prompts[i].text), prompts[i].length);
        for (auto &c : p) c = char(tolower(static_cast<unsigned char>(c)));
        // Only a password prompt gets the password; anything else (a one-time
        // code) gets an empty answer and the attempt fails.
        if (p.find("password") != std::string::npos && !self->password_.empty()) {
            responses[i].text = strdup(self->password_.c_str());
            responses[i].length = unsigned(self->password_.size());
            self->kbd_sent_password_ = true;
        } else {
            responses[i].text = strdup("");
            responses[i].length = 0;
            self->auth_notes_ += "; keyboard-interactive asked '" + p + "'";
        }
    }
}

bool SshSession::step_auth() {
    for (;;) {
        AuthOutcome o = AuthOutcome::kFailed;
        switch (auth_) {
        case AuthStep::List: o = auth_list_methods(); break;
        case AuthStep::Agent: o = auth_with_agent(); break;
        case AuthStep::KeyFile: o = auth_with_key_file(); break;
        case AuthStep::Password:
        case AuthStep::KbdInt: o = auth_with_password(); break;
        case AuthStep::Failed: report_auth_failure(); return false;
        }
        switch (o) {
        case AuthOutcome::kNextStep: continue;
        case AuthOutcome::kWaiting: arm(); return false;
        case AuthOutcome::kAuthenticated: state_ = State::OpenChannel; return true;
        case AuthOutcome::kFailed: return false;
        }
    }
}

SshSession::AuthOutcome SshSession::auth_list_methods() {
    char *list = libssh2_userauth_list(session_, user_.c_str(), unsigned(user_.size()));
    if (!list) {
        if (libssh2_userauth_authenticated(session_)) return AuthOutcome::kAuthenticated;
        if (libssh2_session_last_errno(session_) == LIBSSH2_ERROR_EAGAIN) return AuthOutcome::kWaiting;
        fail(SPORE_ECONNECT, "ssh: " + host_ + " ended the session before authentication: " + last_error());
        return AuthOutcome::kFailed;
    }
    auth_methods_ = list;
    note("server offers " + auth_methods_);
    auth_ = use_agent_ ? AuthStep::Agent : AuthStep::KeyFile;
    return AuthOutcome::kNextStep;
}

SshSession::AuthOutcome SshSession::auth_with_agent() {
    if (auth_methods_.find("publickey") == std::string::npos) {
        auth_ = AuthStep::KeyFile;
        return AuthOutcome::kNextStep;
    }
    if (!agent_) {
        agent_ = libssh2_agent_init(session_);
        agent_identity_ = nullptr;
        if (!agent_ || libssh2_agent_connect(agent_) != 0 || libssh2_agent_list_identities(agent_) != 0) {
            note("ssh-agent not usable");
            auth_ = AuthStep::KeyFile;
            return AuthOutcome::kNextStep;
        }
        if (libssh2_agent_get_identity(agent_, &agent_identity_, nullptr) != 0) {
            auth_ = AuthStep::KeyFile;
            return AuthOutcome::kNextStep;
        }
    }
    int rc = libssh2_agent_userauth(agent_, user_.c_str(), agent_identity_);
    if (rc == LIBSSH2_ERROR_EAGAIN) return AuthOutcome::kWaiting;
    if (rc == 0) {
        note("authenticated with a key from ssh-agent");
        return AuthOutcome::kAuthenticated;
    }
    libssh2_agent_publickey *prev = agent_identity_;
    if (libssh2_agent_get_identity(agent_, &agent_identity_, prev) != 0) auth_ = AuthStep::KeyFile;
    return AuthOutcome::kNextStep;
}

SshSession::AuthOutcome SshSession::auth_with_key_file() {
    if (next_key_ >= key_files_.size() || auth_methods_.find("publickey") == std::string::npos) {
        auth_ = AuthStep::Password;
        return AuthOutcome::kNextStep;
    }
    const std::string &k = key_files_[next_key_];
    int rc = libssh2_userauth_publickey_fromfile(session_, user_.c_str(), nullptr, k.c_str(),
                                                 passphrase_.empty() ? nullptr : passphrase_.c_str());
    if (rc == LIBSSH2_ERROR_EAGAIN) return AuthOutcome::kWaiting;
    if (rc == 0) {
        note("authenticated with " + k);
        return AuthOutcome::kAuthenticated;
    }
    if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED || rc == LIBSSH2_ERROR_METHOD_NOT_SUPPORTED) {
        // The key could not be loaded: most often a wrong or missing passphrase.
        std::string why = last_error();
        if (!identity_file_.empty()) {
            if (passphrase_.empty())
                fail(SPORE_EPASSREQ, "ssh: cannot use " + k + " (" + why + "); if it is protected, give identity_passphrase");
            else
                fail(SPORE_EAUTH, "ssh: incorrect passphrase for " + k + " (" + why + ")");
            return AuthOutcome::kFailed;
        }
        auth_notes_ += "; " + k + ": " + why;
    } else {
        auth_notes_ += "; public key " + k + " was not accepted";
    }
    ++next_key_;
    return AuthOutcome::kNextStep;
}

SshSession::AuthOutcome SshSession::auth_with_password() {
    // The password, through the "password" method, then through
    // keyboard-interactive (which PAM setups often use instead).
    bool kbd = auth_ == AuthStep::KbdInt;
    bool &tried = kbd ? tried_kbd_ : tried_password_;
    AuthStep next = kbd ? AuthStep::Failed : AuthStep::KbdInt;
    if (password_.empty() || tried || auth_methods_.find(kbd ? "keyboard-interactive" : "password") == std::string::npos) {
        auth_ = next;
        return AuthOutcome::kNextStep;
    }
    int rc = kbd ? libssh2_userauth_keyboard_interactive(session_, user_.c_str(), &SshSession::kbd_callback)
                 : libssh2_userauth_password(session_, user_.c_str(), password_.c_str());
    if (rc == LIBSSH2_ERROR_EAGAIN) return AuthOutcome::kWaiting;
    tried = true;
    if (rc == 0) {
        note(kbd ? "authenticated by keyboard-interactive" : "authenticated with a password");
        return AuthOutcome::kAuthenticated;
    }
    auth_ = next;
    return AuthOutcome::kNextStep;
}

void SshSession::report_auth_failure() {
    std::string detail = "(server offers " + auth_methods_ + auth_notes_ + ")";
    if (tried_password_ || kbd_sent_password_) {
        fail(SPORE_EAUTH, "ssh: incorrect password for " + user_ + "@" + host_ + " " + detail);
    } else if (password_.empty() && (auth_methods_.find("password") != std::string::npos ||
                                     auth_methods_.find("keyboard-interactive") != std::string::npos)) {
        fail(SPORE_EPASSREQ, "ssh: password required for " + user_ + "@" + host_ + " " + detail);
    } else {
        fail(SPORE_EAUTH, "ssh: authentication failed for " + user_ + "@" + host_ + " " + detail);
    }
}

bool SshSession::step_channel() {
    if (state_ == State::OpenChannel) {
        wipe(password_);
        wipe(passphrase_);
        if (agent_) {
            libssh2_agent_disconnect(agent_);
            libssh2_agent_free(agent_);
            agent_ = nullptr;
        }
        channel_ = libssh2_channel_open_ex(session_, "session", sizeof "session" - 1, kChannelWindow, kChannelPacket,
                                           nullptr, 0);
        if (!channel_) {
            if (libssh2_session_last_errno(session_) == LIBSSH2_ERROR_EAGAIN) {
                arm();
                return false;
            }
            fail(SPORE_ECONNECT, "ssh: cannot open a session channel on " + host_ + ": " + last_error());
            return false;
        }
        state_ = State::Exec;
    }
    int rc = libssh2_channel_process_startup(channel_, "exec", sizeof "exec" - 1, command_.data(), unsigned(command_.size()));
    if (rc == LIBSSH2_ERROR_EAGAIN) {
        arm();
        return false;
    }
    if (rc != 0) {
        fail(SPORE_ECONNECT, "ssh: " + host_ + " refused to run the boot command: " + last_error());
        return false;
    }
    note("boot command started");
    state_ = State::Running;
    if (keepalive_interval_ > 0) {
        std::weak_ptr<SshSession> weak = weak_from_this();
        // libssh2 says when the next keepalive is due; a server that stays
        // silent for interval * count seconds is taken for dead.
        struct Tick {
            static void schedule(std::weak_ptr<SshSession> w, double secs) {
                auto self = w.lock();
                if (!self || self->finished_) return;
                self->keepalive_timer_ = std::make_unique<Timer>(*self->loop_, secs, [w] {
                    auto s = w.lock();
                    if (!s || s->finished_ || !s->session_) return;
                    int next = 0;
                    libssh2_keepalive_send(s->session_, &next);
                    double idle = now_monotonic() - s->last_activity_;
                    if (idle > double(s->keepalive_interval_ * std::max<int64_t>(1, s->keepalive_count_))) {
                        s->fail(SPORE_EDISCONNECTED, "ssh: no answer from " + s->host_ + " to keepalives for " +
                                                         std::to_string(int(idle)) + " s");
                        return;
                    }
                    s->arm();
                    schedule(w, next > 0 ? double(next) : double(s->keepalive_interval_));
                });
            }
            static double now_monotonic() {
                timespec ts{};
                clock_gettime(CLOCK_MONOTONIC, &ts);
                return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
            }
        };
        last_activity_ = Tick::now_monotonic();
        Tick::schedule(weak, double(keepalive_interval_));
    }
    return true;
}

// Moves bytes both ways until nothing more can move. False after a failure
// or the end of the session.
bool SshSession::buffered_in_libssh2() const {
    return (to_local_.size() < kPumpBuffer && !channel_eof_ && libssh2_poll_channel_read(channel_, 0) > 0) ||
           libssh2_poll_channel_read(channel_, 1) > 0;
}

bool SshSession::pump() {
    bool progress = true, extra_round = false;
    retry_soon_ = false;
    // sshd leaves Nagle on for sessions without a pty: a reply it sends in
    // two TCP segments waits for our ACK of the first, which Linux delays
    // (milliseconds per call). Acknowledge at once instead. Linux resets
    // quick-ACK mode by itself, so it is asked for on every wake-up.
    int one = 1;
    setsockopt(sock_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    while (progress && !finished_) {
        progress = false;
        if (!read_channel(progress) || !write_local(progress)) return false;
        read_local(progress);
        if (!write_channel(progress)) return false;
        if (channel_eof_ && local_eof_ && to_local_.empty() && to_channel_.empty()) {
            teardown();
            return false;
        }
        // Any libssh2 call may read packets from the socket into its own
        // buffers (a stderr read can bring in stdout data, a write a window
        // adjust): data waiting there would never wake the socket again. It
        // gets one more round here; if libssh2 still holds it back (it can
        // report data that a read then refuses with EAGAIN), a short timer
        // tries again rather than spinning.
        if (!progress && !finished_ && buffered_in_libssh2()) {
            if (extra_round) {
                retry_soon_ = true;
            } else {
                extra_round = true;
                progress = true;
            }
        }
    }
    return !finished_;
}

bool SshSession::read_channel(bool &progress) {
    if (to_local_.size() < kPumpBuffer && !channel_eof_) {
        ssize_t n = libssh2_channel_read_ex(channel_, 0, to_local_.tail(kReadChunk), kReadChunk);
        to_local_.unused(n > 0 ? kReadChunk - size_t(n) : kReadChunk);
        if (n > 0) {
            progress = true;
            timespec ts{};
            clock_gettime(CLOCK_MONOTONIC, &ts);
            last_activity_ = double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
        } else if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
            fail(SPORE_EDISCONNECTED, "ssh: the channel to " + host_ + " failed: " + last_error());
            return false;
        }
    }
    // stderr is read even when its queue is full (and then dropped), so it
    // never holds up the channel.
    bool err_full = to_err_.size() >= kPumpBuffer;
    ssize_t en = libssh2_channel_read_ex(channel_, SSH_EXTENDED_DATA_STDERR, to_err_.tail(kReadChunk), kReadChunk);
    to_err_.unused(en > 0 && !err_full ? kReadChunk - size_t(en) : kReadChunk);
    if (en > 0) progress = true;
    if (!channel_eof_ && libssh2_channel_eof(channel_)) channel_eof_ = true;
    return true;
}

bool SshSession::write_local(bool &progress) {
    while (!to_local_.empty()) {
        ssize_t w = ::write(local_.get(), to_local_.data(), to_local_.size());
        if (w > 0) {
            to_local_.consume(size_t(w));
            progress = true;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // Our stream end is gone: the session has no purpose any more.
        teardown();
        return false;
    }
    while (!to_err_.empty() && err_) {
        ssize_t w = ::write(err_.get(), to_err_.data(), to_err_.size());
        if (w > 0) {
            to_err_.consume(size_t(w));
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        err_.reset();
        to_err_.clear();
    }
    if (channel_eof_ && to_local_.empty()) {
        // The remote side is done: so is the local stream.
        ::shutdown(local_.get(), SHUT_WR);
        if (err_) err_.reset();
    }
    return true;
}

void SshSession::read_local(bool &progress) {
    if (to_channel_.size() >= kPumpBuffer || local_eof_) return;
    ssize_t n = ::read(local_.get(), to_channel_.tail(kReadChunk), kReadChunk);
    int err = errno;
    to_channel_.unused(n > 0 ? kReadChunk - size_t(n) : kReadChunk);
    if (n > 0) {
        progress = true;
    } else if (n == 0 || (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)) {
        local_eof_ = true;
    }
}

bool SshSession::write_channel(bool &progress) {
    while (!to_channel_.empty()) {
        ssize_t w = libssh2_channel_write_ex(channel_, 0, to_channel_.data(), to_channel_.size());
        if (w > 0) {
            to_channel_.consume(size_t(w));
            progress = true;
            continue;
        }
        if (w == LIBSSH2_ERROR_EAGAIN) break;
        fail(SPORE_EDISCONNECTED, "ssh: writing to " + host_ + " failed: " + last_error());
        return false;
    }
    if (local_eof_ && to_channel_.empty() && !eof_sent_) {
        if (libssh2_channel_send_eof(channel_) != LIBSSH2_ERROR_EAGAIN) eof_sent_ = true;
    }
    return true;
}

// Events are persistent and only changed when the directions they wait
// for change: re-creating them on every wake-up cost four epoll_ctl calls
// per message.
void SshSession::watch(EventPtr &ev, short &current, int fd, short what, event_callback_fn cb) {
    if (ev && current == what) return;
    ev.reset();
    current = what;
    if (!what) return;
    ev.reset(event_new(loop_->base(), fd, what | EV_PERSIST, cb, this));
    event_add(ev.get(), nullptr);
}

void SshSession::arm() {
    if (finished_ || sock_ < 0) return;
    short what = EV_READ;
    if (state_ == State::Connecting) {
        what = EV_WRITE;
    } else if (session_) {
        int dir = libssh2_session_block_directions(session_);
        if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND) what |= EV_WRITE;
    }
    watch(sock_ev_, sock_what_, sock_, what, &SshSession::on_socket);
    if (state_ == State::Running) {
        short lw = 0;
        if (to_channel_.size() < kPumpBuffer && !local_eof_) lw |= EV_READ;
        if (!to_local_.empty()) lw |= EV_WRITE;
        watch(local_ev_, local_what_, local_.get(), lw, &SshSession::on_local);
    }
    // With data held in libssh2's buffers the socket may stay quiet: come
    // back after a millisecond as well.
    if (retry_soon_) {
        std::weak_ptr<SshSession> weak = weak_from_this();
        retry_timer_ = std::make_unique<Timer>(*loop_, 0.001, [weak] {
            if (auto self = weak.lock()) self->step();
        });
    }
}

void SshSession::fail(int code, const std::string &why) {
    if (finished_) return;
    // The hook runs later, on the caller's loop. Until the boot command
    // runs, the caller must learn of a failure from the hook alone, so the
    // stream stays open until stop(): its end of file cannot overtake the
    // hook and turn, say, an authentication failure into "the child
    // exited". Once running, the end of the stream is how the caller learns
    // that the context is gone.
    bool keep_stream = state_ != State::Running;
    auto hook = hooks_.failed;
    teardown(keep_stream);
    if (hook) hook(code, why);
}

void SshSession::teardown(bool keep_stream) {
    if (finished_) return;
    finished_ = true;
    bool handshaken = state_ != State::Resolving && state_ != State::Connecting && state_ != State::Handshake;
    state_ = State::Done;
    keepalive_timer_.reset();
    retry_timer_.reset();
    sock_ev_.reset();
    local_ev_.reset();
    wipe(password_);
    wipe(passphrase_);
    if (agent_) {
        libssh2_agent_disconnect(agent_);
        libssh2_agent_free(agent_);
        agent_ = nullptr;
    }
    if (known_) {
        libssh2_knownhost_free(known_);
        known_ = nullptr;
    }
    if (session_) {
        // In non-blocking mode libssh2's free functions may return EAGAIN
        // and keep everything: free in blocking mode, briefly. One try at a
        // polite goodbye, then the socket is shut so nothing waits on it.
        libssh2_session_set_blocking(session_, 1);
        libssh2_session_set_timeout(session_, 200);
        if (handshaken) libssh2_session_disconnect(session_, "spore: done");
        if (sock_ >= 0) ::shutdown(sock_, SHUT_RDWR);
        if (channel_) libssh2_channel_free(channel_);
        channel_ = nullptr;
        libssh2_session_free(session_);
        session_ = nullptr;
    }
    if (sock_ >= 0) ::close(sock_);
    sock_ = -1;
    if (!keep_stream) {
        local_.reset();
        err_.reset();
    }
}

// A session with the loop and the thread it runs on. libssh2 1.10 encrypts
// one 16-byte block per call, so a session moving bulk data keeps a core
// busy: on a thread of its own it never holds up the router's loop (calls
// and acknowledgements of every other stream), the router's framing and
// the session's crypto run on two cores, and several sessions on several.
class SshSessionThread {
public:
    SshSessionThread(Loop &caller, const cJSON *options, const std::string &command, int stream_fd, int err_fd,
                     SshSessionHooks hooks)
        : loop_(std::make_shared<Loop>()) {
        UniqueFd s(stream_fd), e(err_fd);  // closed here if configure throws
        session_ = std::make_shared<SshSession>(loop_, on_loop(caller, std::move(hooks)));
        session_->configure(options, command, s.release(), e.release());  // may throw: nothing runs yet
        // A small stack: a fleet of a thousand hosts is a thousand of these.
        thread_ = SizedThread(kSessionStack, [loop = loop_, session = session_] {
            session->begin();
            loop->run();
        });
    }
    SshSessionThread(const SshSessionThread &) = delete;
    SshSessionThread &operator=(const SshSessionThread &) = delete;
    ~SshSessionThread() { stop(); }

    // Ends the session on its thread and waits for that thread: afterwards
    // no hook can run any more. At most libssh2's 200 ms goodbye.
    void stop() {
        if (!thread_.joinable()) return;
        Loop *loop = loop_.get();
        loop->post([session = session_, loop] {
            session->stop();
            loop->stop();
        });
        thread_.join();
        session_.reset();
    }

private:
    // The hooks are for the caller's loop; the session calls them on its own.
    static SshSessionHooks on_loop(Loop &caller, SshSessionHooks h) {
        SshSessionHooks out;
        if (h.failed)
            out.failed = [&caller, f = std::move(h.failed)](int code, const std::string &why) {
                caller.post([f, code, why] { f(code, why); });
            };
        if (h.debug)
            out.debug = [&caller, d = std::move(h.debug)](const std::string &line) {
                caller.post([d, line] { d(line); });
            };
        return out;
    }

    // libssh2's key exchange and OpenSSL's crypto use well under 64 KiB.
    static constexpr size_t kSessionStack = kSmallStack;

    std::shared_ptr<Loop> loop_;
    std::shared_ptr<SshSession> session_;
    SizedThread thread_;
};

std::shared_ptr<SshSessionThread> start_ssh_session(Loop &loop, const cJSON *options, const std::string &command,
                                                    int stream_fd, int err_fd, SshSessionHooks hooks) {
    return std::make_shared<SshSessionThread>(loop, options, command, stream_fd, err_fd, std::move(hooks));
}

void stop_ssh_session(const std::shared_ptr<SshSessionThread> &s) {
    if (s) s->stop();
}


namespace {
std::shared_ptr<void> start_for_connection(Loop &loop, const LaunchSpec &spec, int stream_fd, int err_fd,
                                           InProcessSshHooks hooks) {
    UniqueFd s(stream_fd), e(err_fd);  // owned here until the session has them
    SshSessionHooks h{std::move(hooks.failed), std::move(hooks.debug)};
    auto session = start_ssh_session(loop, spec.ssh_options.get(), spec.remote_command, s.release(), e.release(),
                                     std::move(h));
    return std::static_pointer_cast<void>(session);
}

void stop_for_connection(const std::shared_ptr<void> &session) {
    stop_ssh_session(std::static_pointer_cast<SshSessionThread>(session));
}

const InProcessSsh kBackend{&start_for_connection, &stop_for_connection};
}  // namespace

void register_libssh2_backend() { register_in_process_ssh(&kBackend); }

}  // namespace spore
