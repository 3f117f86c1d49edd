// The parent side of a child context: starts the method's command, runs the
// bootstrap (ready marker -> image -> hello), then owns the child process for
// its lifetime: forwards its stderr lines and reaps it when its stream ends.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/image.h"
#include "core/json.h"
#include "core/keepalive.h"
#include "core/loop.h"
#include "core/prompts.h"
#include "core/stream.h"
#include "methods/method.h"

namespace spore {

struct ConnectRequest {
    std::string method;
    Json options;  // JSON object of the connect options
    uint32_t id = 0;
    std::string name;
    double timeout_s = 30.0;
    bool in_agent = false;
    bool agent_cache = true;
    CompressOption agent_compress = CompressOption::automatic;
    std::string remote_name;
    // A spore-agent executable on this machine (setns runs it as a helper).
    std::string local_agent;
    // How the parent watches the new context's stream (read from the
    // options before they are dropped with their secrets).
    KeepaliveSettings keepalive;
    // The connect option python_path, for the child's init message.
    std::vector<std::string> python_path;

    // The arguments of the call (kConnectFunction) that asks a via context
    // to make this connect: everything above but in_agent and local_agent,
    // the options included (so this leaves options empty).
    std::string to_call_args();
    // The request an agent reads from those arguments, with its own
    // liveness settings as the default. Throws spore::Error(SPORE_EBADARGS)
    // naming what is missing or wrong.
    static ConnectRequest from_call_args(const cJSON *args, KeepaliveSettings inherited);
};

// The internal function a context's parent calls to open a child through it.
inline constexpr const char *kConnectFunction = "spore.connect";

struct LoopHandoff;

class Connection : public std::enable_shared_from_this<Connection> {
public:
    using ImageFn = std::function<std::shared_ptr<AgentImage>()>;
    // On success err.code is SPORE_OK and stream() is in framed mode.
    using DoneFn = std::function<void(const ErrorInfo &err)>;
    using LineFn = std::function<void(const std::string &line)>;

    Connection(Loop &loop, ConnectRequest req, Limits limits, ImageFn image, DoneFn done);
    ~Connection();

    // Loop thread. Spawns the child; done is called exactly once.
    void start();
    // Gives up on a connect in progress (done gets SPORE_ESHUTDOWN).
    void cancel(const std::string &why) { fail(SPORE_ESHUTDOWN, why); }

    const std::shared_ptr<Stream> &stream() const { return stream_; }
    pid_t pid() const { return pid_; }
    const ConnectRequest &request() const { return req_; }
    size_t image_bytes_sent() const { return image_bytes_sent_; }

    // stderr lines after the hello.
    void on_stderr_line(LineFn fn) { on_stderr_ = std::move(fn); }
    // Debug notes about the bootstrap (image sent, its size).
    void on_debug(LineFn fn) { on_debug_ = std::move(fn); }

    // Waits for the child without blocking the loop: polls with back-off,
    // SIGTERM after term_after_s, SIGKILL after kill_after_s. on_reaped runs
    // once the pid is collected.
    void reap(double term_after_s, double kill_after_s, std::function<void()> on_reaped);
    // Reaps the child once its stream has closed with close_code: an agent
    // that merely disconnected gets time to leave on its own (SIGTERM after
    // 1 s, SIGKILL after 3 s); one that stopped responding gets SIGTERM at
    // once and SIGKILL after 1 s.
    void reap_after_close(int close_code, std::function<void()> on_reaped);
    // SIGKILL and a blocking wait; for final shutdown.
    void kill_and_wait();
    // SIGCONT to the child process, if there is one: a stopped agent reads
    // no shutdown request and sees no stream close until it is continued.
    void resume();
    // Collects the child if it has exited; true once it is reaped.
    bool try_reap();
    bool reaped() const { return pid_ <= 0 && !ssh_; }

private:
    void fail(int code, const std::string &why);
    void succeed();
    void on_raw(std::string_view bytes);
    void handle_line(const std::string &line, bool &hello_seen);
    // Bootstrap output that may hold prompts (the terminal, or stderr).
    void scan_prompts(std::string_view bytes);
    void apply(const PromptMatcher::Outcome &o);
    void fail_pending();
    void send_to_terminal(std::string bytes);
    void stderr_line(const std::string &line);
    int spawn(const LaunchSpec &spec, UniqueFd &stream_fd, UniqueFd &err_fd);
    void on_ready_line(const std::string &line);
    // made_now: this connect waited while the form was made.
    void send_image(const AgentImage &img, ImageCodec codec, bool made_now);
    void read_stderr();
    void drain_stderr_now();
    // Why the child closed its stream before the hello, from its output.
    std::string early_exit_reason() const;
    std::string last_output() const;
    void remember(const std::string &line);
    void reap_step();

    Loop &loop_;
    ConnectRequest req_;
    Limits limits_;
    ImageFn image_fn_;
    DoneFn done_;
    LineFn on_stderr_;
    LineFn on_debug_;
    pid_t pid_ = -1;
    // An in-process ssh session instead of a process (backend=libssh2).
    std::shared_ptr<void> ssh_;
    void stop_ssh();
    int start_in_process_ssh(UniqueFd &stream_fd, UniqueFd &err_fd);
    int exit_status_ = -1;
    std::shared_ptr<Stream> stream_;
    UniqueFd err_fd_;
    bool err_eof_ = false;
    EventPtr err_ev_;
    std::string out_buf_, err_buf_;
    std::deque<std::string> last_lines_;
    TimerPtr timeout_;
    LaunchSpec spec_;
    std::unique_ptr<PromptMatcher> prompts_;
    std::vector<std::string> prompt_lines_;
    TimerPtr settle_timer_;
    int pending_code_ = 0;  // a failure seen in the launcher's output
    std::string pending_why_;
    bool finished_ = false;
    bool booted_ = false;
    size_t image_bytes_sent_ = 0;
    // The codecs the first stage was asked to look for, strongest first.
    std::vector<ImageCodec> offered_codecs_;
    // Set while a thread compresses the image for this connection.
    std::shared_ptr<LoopHandoff> image_handoff_;
    // reaping state
    TimerPtr reap_timer_;
    double reap_elapsed_ = 0, reap_delay_ = 0.001, term_after_ = 1, kill_after_ = 3;
    bool termed_ = false, killed_ = false;
    std::function<void()> on_reaped_;
};

// Makes a context name safe to show in argv and logs.
std::string sanitize_name(const std::string &name);

}  // namespace spore
