// The agent: the program that runs in every non-master context. A single
// libevent loop does all I/O and routing; blocking built-ins run on a worker
// pool. It can open children of its own (via), shipping its own image.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <list>
#include <map>
#include <set>
#include <string>
#include <unordered_map>

#include "agent/builtins.h"
#include "agent/module_relay.h"
#include "agent/python_worker.h"
#include "agent/worker_pool.h"
#include "core/child_agents.h"
#include "core/connection.h"
#include "core/image.h"
#include "core/loop.h"
#include "core/message_router.h"

namespace spore::agent {

// `spore-agent --setns ...`: enter a process's namespaces and run a command
// there (setns_helper.cpp). Returns the command's exit status.
int run_setns_helper(int argc, char **argv);

class Agent : public Services {
public:
    Agent();
    ~Agent() override;

    // Runs the agent over the given parent stream fds; returns the exit code.
    int run(int parent_in, int parent_out);

    // Services
    void log(int level, std::string_view logger, std::string_view message) override;
    void log_to(uint32_t dst, int level, std::string_view logger, std::string_view message) override;
    bool log_enabled(int level) const override { return level >= level_.load(); }
    int begin_spawn(uint32_t owner) override;
    bool register_process(pid_t pid, uint32_t owner) override;
    void unregister_process(pid_t pid) override;
    std::string context_name() const override;
    ChannelTable *channels() override { return &channels_; }
    int send(Message &m) override;

private:
    struct Job {
        Message msg;
        std::string fn;
        Json args;
        std::string chain;
        std::shared_ptr<void> prepared;  // what the built-in's prepare step made (its channels)
    };
    struct Chain {
        bool busy = false;
        std::optional<ErrorInfo> error;
        std::deque<Job> queue;
    };

    void on_init(Message &&m);
    void on_call(Message &&m);
    void start_job(Job &&job);
    void finish_job(const Job &job, CallReply &&reply, const ErrorInfo *err);
    // Runs a built-in's step (prepare, or the built-in itself) with the
    // call's request; a throw becomes the error it returns, naming the
    // context and the function.
    ErrorInfo run_builtin_step(const Job &job, const std::function<void(const CallRequest &)> &step);
    void chain_step_done(const std::string &chain, const ErrorInfo *err);
    void reply(const Message &req, CallReply &&r, const ErrorInfo *err);
    void internal_connect(Job &&job);
    void on_shutdown_request();
    void on_set_log_level(Message &&m);
    void on_chan_data(Message &&m);
    void on_peer_gone(Message &&m);
    void on_module_request(Message &&m);
    void on_module_answer(Message &&m);
    void start_python_job(Job &&job);
    void begin_exit(const std::string &why);
    void final_cleanup();
    void setup_output_capture();
    void forward_output(int fd, std::string &buf, const char *logger, EventPtr &ev);
    std::shared_ptr<AgentImage> self_image();

    Loop loop_;
    MessageRouter router_;
    WorkerPool pool_;
    std::shared_ptr<Stream> parent_;
    bool initialized_ = false;
    std::atomic<int> level_{20};
    mutable std::mutex state_mu_;  // guards name_ and pre_init_logs_
    std::string name_ = "agent";
    std::vector<Message> pre_init_logs_;
    ChildAgents children_{router_};
    std::unordered_map<std::string, Chain> chains_;
    ChannelTable channels_;
    std::mutex procs_mu_;  // guards procs_, spawning_, no_more_spawns_ and gone_callers_
    std::condition_variable spawns_done_;
    std::map<pid_t, uint32_t> procs_;  // process (group) -> the caller that started it
    int spawning_ = 0;                 // starts between begin_spawn and register_process
    bool no_more_spawns_ = false;      // set by final_cleanup
    std::set<uint32_t> gone_callers_;  // attached routers that went away (ids are never reused)
    std::shared_ptr<AgentImage> image_;
    std::mutex image_mu_;
    std::atomic<bool> shutting_down_{false};  // read by worker threads
    TimerPtr shutdown_timer_;
    std::list<TimerPtr> peer_timers_;  // SIGKILLs pending for processes of callers that went away
    // Set when a large message passed; a periodic timer then returns free
    // heap pages to the system, so an idle agent stays small.
    std::atomic<bool> heap_dirty_{false};
    TimerPtr trim_timer_;
    void arm_trim();
    // stdout/stderr of the agent itself (and of anything that inherits them)
    int out_r_ = -1, err_r_ = -1;
    EventPtr out_ev_, err_ev_;
    std::string out_buf_, err_buf_;
    // Python: the module cache every py: import goes through, and the warm
    // worker. Declared last: the worker goes first, while all it uses is
    // still there.
    ModuleRelay modules_{[this](const std::vector<std::string> &names) { ask_modules(names); }};
    void ask_modules(const std::vector<std::string> &names);
    std::unique_ptr<PythonWorker> python_;
};

}  // namespace spore::agent
