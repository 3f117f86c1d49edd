// What the C API calls a router (spore_router): the master side of spore.
// Owns the broker thread (a Loop), the MessageRouter with id 0, the
// contexts it opened, the calls in flight and the queue of forwarded log
// records. The C API is a thin shell over this class.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <algorithm>
#include <unordered_map>
#include <vector>

#include "controller/module_server.h"
#include "core/child_agents.h"
#include "core/channel.h"
#include "core/connection.h"
#include "core/error.h"
#include "core/image.h"
#include "core/json.h"
#include "core/loop.h"
#include "core/message_router.h"

namespace spore {

// The log queue's default bound in bytes, and the longest message a record
// keeps (longer ones are cut at a character boundary and marked).
inline constexpr size_t kDefaultLogQueueBytes = 4u << 20;
inline constexpr size_t kMaxLogMessageBytes = 64u << 10;

struct LogRecord {
    uint32_t context_id = 0;
    std::string context;
    std::string logger;
    std::string message;
    int level = 20;
    double time = 0;
};

// One call in flight. Completed on the broker thread, waited on by callers.
class PendingCall {
public:
    PendingCall(uint32_t handle, uint32_t target, std::string function, std::string context,
                std::vector<uint32_t> path = {})
        : handle_(handle), target_(target), function_(std::move(function)), context_(std::move(context)),
          path_(std::move(path)) {}
    ~PendingCall();

    uint32_t handle() const { return handle_; }
    uint32_t target() const { return target_; }
    const std::string &function() const { return function_; }
    const std::string &context() const { return context_; }
    // Whether src may answer: the target itself, or (with an error only) an
    // intermediary on the way to it that could not deliver.
    bool may_answer(uint32_t src, bool is_error) const {
        if (src == target_) return true;
        return is_error && (src == 0 || std::find(path_.begin(), path_.end(), src) != path_.end());
    }

    // First completion wins; later ones are ignored.
    void complete(ErrorInfo err, std::string json, std::string bin);
    // Waits up to timeout_ms (-1 forever); true when done.
    bool wait(int timeout_ms);
    bool done() const;
    int fd();  // eventfd readable once done (created on first use)

    // Valid once done.
    const ErrorInfo &error() const { return err_; }
    std::string take_json() { return std::move(json_); }
    std::string take_bin() { return std::move(bin_); }
    bool taken = false;

private:
    const uint32_t handle_, target_;
    const std::string function_, context_;
    const std::vector<uint32_t> path_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::atomic<bool> done_flag_{false};  // done_, readable without the lock
    ErrorInfo err_;
    std::string json_, bin_;
    int efd_ = -1;
};

class ContextState {
public:
    uint32_t id = 0;
    std::string name;
    std::string method;
    uint32_t via_id = 0;  // 0: a direct child of the master
    std::vector<uint32_t> path;  // the intermediaries from the master down to it
    std::atomic<bool> alive{true};
    std::mutex mu;
    std::condition_variable cv;  // signalled when alive turns false
    std::string lost_reason;     // guarded by mu
};

class Listener;

class Router : public std::enable_shared_from_this<Router> {
public:
    struct Options {
        std::string agent_path;
        uint64_t max_message_size = kDefaultMaxMessageSize;
        int log_level = 20;
        size_t log_queue_size = 10000;
        size_t log_queue_bytes = kDefaultLogQueueBytes;
        KeepaliveSettings keepalive;  // for every child without settings of its own
        std::vector<std::string> module_path;  // directories Python modules are served from
        std::vector<std::string> module_deny;  // module names (and packages) never served
    };

    static std::shared_ptr<Router> create(Options opts);
    // An attached router: connects to the router listening at path and acts
    // with its authority (docs/protocol.md, "Shared routers"). Throws
    // spore::Error: SPORE_ECONNECT, SPORE_EACCES, SPORE_ETIMEDOUT, SPORE_EPROTO.
    static std::shared_ptr<Router> attach(const std::string &path, Options opts, int timeout_ms);
    bool attached() const { return attached_; }
    // The Python modules this router serves (thread-safe).
    ModuleServer &modules() { return modules_; }
    // How many times the Python worker's own code was sent to a context.
    uint64_t worker_sources_sent() const { return worker_sources_sent_.load(); }
    // Starts accepting attached routers on a Unix socket at path. Throws
    // spore::Error (SPORE_EINVAL: bad or unsafe path, already listening).
    void listen(const std::string &path);
    // A live context by name: this router's own or, attached, the
    // listener's. Null when there is none. Throws spore::Error.
    std::shared_ptr<ContextState> find_context_named(const std::string &name);
    ~Router();
    Router(const Router &) = delete;
    Router &operator=(const Router &) = delete;

    // Shuts every context down, fails pending calls, joins the broker thread.
    // Idempotent; must not run on the broker thread.
    void close();
    bool closing() const { return closing_.load(); }

    // Throws spore::Error. With the option "reuse" (default: true when
    // attached) a live context opened before with the same method, options
    // and via is returned instead of a new one.
    std::shared_ptr<ContextState> connect(const std::string &method, Json options,
                                          const std::shared_ptr<ContextState> &via);

    // Starts a call; throws spore::Error for failures known before sending.
    // With no_reply no PendingCall is returned.
    std::shared_ptr<PendingCall> call_async(const std::shared_ptr<ContextState> &ctx, const std::string &function,
                                            const char *args_json, const void *data, size_t len,
                                            const std::string &chain, bool no_reply);
    // Blocks; throws spore::Error; returns {json, bin}.
    std::pair<std::string, std::string> call(const std::shared_ptr<ContextState> &ctx, const std::string &function,
                                             const char *args_json, const void *data, size_t len,
                                             const std::string &chain, int timeout_ms);
    // Wait helper shared by call() and the async API. Throws on failure.
    static ErrorInfo wait_error(PendingCall &pc, int timeout_ms, bool *timed_out);
    void forget(const PendingCall &pc);

    // Returns SPORE_OK or SPORE_ETIMEDOUT.
    int shutdown_context(const std::shared_ptr<ContextState> &ctx, int timeout_ms);

    void set_log_level(int level);
    int log_level() const { return level_.load(); }
    // SPORE_OK, SPORE_ETIMEDOUT or SPORE_ESHUTDOWN.
    int next_log(LogRecord &out, int timeout_ms);
    int log_fd() const { return log_efd_; }
    uint64_t dropped_logs() const { return dropped_logs_.load(); }

    std::string new_chain_id();

    // Channels (file transfers, process streams) with this program's
    // contexts. Messages arrive on the broker thread; callers wait on the
    // endpoints from their own threads.
    ChannelTable &channels() { return channels_; }
    uint32_t new_channel_id() { return next_channel_.fetch_add(1); }
    // n consecutive channel numbers; returns the first.
    uint32_t new_channel_ids(uint32_t n) { return next_channel_.fetch_add(n); }
    // Sends a message from the master (src and auth 0) toward m.h.dst_id, from
    // any thread. Returns SPORE_OK or why it could not leave.
    int send(Message &m);
    uint64_t max_message_size() const { return opts_.max_message_size; }

private:
    friend class Listener;
    // One connect that several callers asking for the same context share.
    struct SharedConnect {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        std::shared_ptr<ContextState> ctx;
        ErrorInfo err;
    };

    explicit Router(Options opts);
    void start();
    std::shared_ptr<ContextState> connect_fresh(const std::string &method, Json options,
                                                const std::shared_ptr<ContextState> &via);
    std::shared_ptr<ContextState> connect_shared(const std::string &method, Json options,
                                                 const std::shared_ptr<ContextState> &via);
    std::shared_ptr<ContextState> connect_through_listener(const std::string &method, Json options,
                                                           const std::shared_ptr<ContextState> &via, bool reuse);
    // Attached: the local state of a context the listener described.
    std::shared_ptr<ContextState> adopt_context(const std::string &info_json);
    void handshake(UniqueFd fd, const std::string &path, int timeout_ms);
    void on_listener_lost(const std::string &reason);
    void on_peer_gone(Message &&m);
    void push_log(LogRecord rec);
    void on_route_lost(uint32_t id, int code, const std::string &reason);
    void on_reply(Message &&m);
    void on_log(Message &&m);
    void on_alloc_ids(Message &&m);
    void on_module_request(Message &&m);
    std::shared_ptr<AgentImage> image();
    void fail_all_pending(int code, const std::string &why);
    void send_init(const std::shared_ptr<Stream> &s, const ContextState &ctx,
                   const std::vector<std::string> &python_path);
    std::shared_ptr<ContextState> find_context(uint32_t id) const;
    void shutdown_on_loop();
    void shutdown_check();

    Options opts_;
    Loop loop_;
    MessageRouter router_;
    std::thread thread_;
    std::atomic<bool> closing_{false};
    std::mutex close_mu_;
    bool closed_ = false;

    std::atomic<uint32_t> next_id_{1};
    std::atomic<uint64_t> next_chain_{1};
    mutable std::mutex ctx_mu_;
    std::unordered_map<uint32_t, std::shared_ptr<ContextState>> contexts_;
    // Direct children's processes (broker thread only).
    ChildAgents children_{router_};
    std::unordered_map<uint32_t, std::shared_ptr<Connection>> connecting_;
    TimerPtr shutdown_timer_;
    double shutdown_deadline_ = 0;

    std::mutex pending_mu_;
    std::unordered_map<uint32_t, std::shared_ptr<PendingCall>> pending_;
    uint32_t next_handle_ = kFirstDynamicHandle;

    std::atomic<int> level_{20};
    std::mutex log_mu_;
    std::condition_variable log_cv_;
    std::deque<LogRecord> logs_;
    size_t log_bytes_ = 0;      // guarded by log_mu_: what logs_ holds, as counted by queued_size()
    bool logs_closed_ = false;  // guarded by log_mu_
    int log_efd_ = -1;
    std::atomic<uint64_t> dropped_logs_{0};

    std::mutex image_mu_;
    std::shared_ptr<AgentImage> image_;
    uint32_t next_id_block_ = 1u << 30;  // ids handed to agents that ask
    ChannelTable channels_;
    // Python modules for the contexts' workers, and per direct child what
    // it was already sent (loop thread).
    ModuleServer modules_;
    std::map<uint32_t, std::set<std::string>> modules_sent_;
    std::atomic<uint64_t> worker_sources_sent_{0};
    std::atomic<uint32_t> next_channel_{1};

    std::mutex shared_mu_;
    std::unordered_map<std::string, std::shared_ptr<SharedConnect>> shared_;

    // Listening (loop thread once started).
    std::shared_ptr<Listener> listener_;
    std::atomic<bool> listening_{false};
    // Attached.
    bool attached_ = false;
    std::string attach_path_;
    std::shared_ptr<ContextState> listener_ctx_;  // the listener itself, id 0, for calls to it
    std::shared_ptr<Stream> listener_stream_;
    bool attach_ready_ = false;  // loop thread
};

// Where the master finds spore-agent: option, $SPORE_AGENT_PATH, install path.
std::string default_agent_path();

}  // namespace spore
