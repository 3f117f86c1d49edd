// The context's warm Python worker (docs/protocol.md, "Python functions"):
// started on the first py: call, kept for the agent's lifetime, restarted
// by the next call after it dies. Its code comes from the master through
// the module relay (name spore:worker), so a context that never runs Python
// never receives it. Loop thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/builtins.h"
#include "agent/module_relay.h"
#include "core/loop.h"
#include "core/stream.h"

namespace spore::agent {

class PythonWorker {
public:
    // Runs on the loop once the call ends: a reply, or err set.
    using DoneFn = std::function<void(CallReply &&, const ErrorInfo *err)>;

    PythonWorker(Loop &loop, Services &services, ModuleRelay &relay);
    ~PythonWorker();
    PythonWorker(const PythonWorker &) = delete;
    PythonWorker &operator=(const PythonWorker &) = delete;

    // The argv prefix from the context's init message (empty: candidates).
    void set_python_path(std::vector<std::string> words) { python_path_ = std::move(words); }
    void set_limits(const Limits &l) { limits_ = l; }
    void set_log_level(int level);

    // Runs the py: call in m (its JSON body as the caller sent it, its
    // binary part moved out of m). done runs exactly once.
    void call(Message &m, const std::string &fn, DoneFn done);

    // Kills the worker and its process group and reaps it; calls in flight
    // fail with SPORE_ESHUTDOWN. For the agent's exit.
    void stop(const std::string &why);

private:
    enum class State { kIdle, kStarting, kReady };
    struct Pending {
        Message frame;
        std::string fn;
        DoneFn done;
    };
    struct InFlight {
        uint32_t caller;
        std::string fn;
        DoneFn done;
    };

    void start();
    // Asks the relay for the worker's code (once at a time).
    void fetch_source();
    void send_source();
    // Ends a started worker that cannot get its code; its calls fail.
    void abandon_start(const std::string &why);
    // SIGKILLs the worker and its process group, reaps it, and fails every
    // call waiting or in flight with code.
    void kill_and_fail(int code, const std::string &why);
    void spawn_next();
    // Spawns one candidate; false (why set) when it cannot even start.
    bool spawn_candidate(const std::vector<std::string> &words, std::string &why);
    void on_message(Message &&m);
    void on_hello(const Message &m);
    void on_reply(Message &&m);
    void on_log(const Message &m);
    void on_need(const Message &m);
    void on_closed(const std::string &reason);
    void violation(const std::string &what);
    // Closes the link (if open) and drops it safely from any callback.
    void release_stream(const std::string &why);
    void send_to_worker(Message &m);
    // Every call waiting or in flight fails with err; the worker is gone.
    void fail_all(const ErrorInfo &err);
    void reap_now();
    void read_output(int which);
    void drain_output();
    std::string describe_exit() const;
    std::string stderr_tail() const;
    std::string who() const;

    Loop &loop_;
    Services &services_;
    ModuleRelay &relay_;
    std::vector<std::string> python_path_;
    Limits limits_;
    int level_ = 20;

    State state_ = State::kIdle;
    std::string source_;  // the worker's code, once fetched
    bool fetching_ = false;
    bool source_sent_ = false;
    std::vector<std::vector<std::string>> candidates_;
    size_t next_candidate_ = 0;
    std::vector<std::string> tried_;  // what each candidate that failed said
    std::vector<std::string> current_;  // the argv prefix now running

    pid_t pid_ = -1;
    int wait_status_ = -1;
    std::shared_ptr<Stream> stream_;
    UniqueFd out_fd_, err_fd_;
    EventPtr out_ev_, err_ev_;
    std::string out_buf_, err_buf_;
    std::deque<std::string> err_lines_;
    TimerPtr hello_timer_;
    uint64_t generation_ = 0;  // counts the workers started
    // This worker as a requester of the module relay (child agents are
    // keyed by their context ids, which never have the top bit set).
    uint64_t relay_key() const { return (uint64_t(1) << 63) | generation_; }
    uint32_t next_id_ = 1;
    std::deque<Pending> queue_;
    std::unordered_map<uint32_t, InFlight> inflight_;
};

}  // namespace spore::agent
