// The I/O loop: one libevent event_base run by exactly one thread, plus a
// thread-safe task queue woken through an eventfd, so any thread can hand
// work to the loop without touching libevent.
#pragma once

#include <event2/event.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace spore {

// Owns a libevent event and frees it.
struct EventDeleter {
    void operator()(event *e) const noexcept {
        if (e) event_free(e);
    }
};
using EventPtr = std::unique_ptr<event, EventDeleter>;

class Loop {
public:
    Loop();
    ~Loop();
    Loop(const Loop &) = delete;
    Loop &operator=(const Loop &) = delete;

    event_base *base() const { return base_; }

    // Runs fn on the loop thread. Thread-safe; never runs fn inline.
    void post(std::function<void()> fn);

    // Runs the loop on the calling thread until stop() is called.
    void run();
    // Makes run() return after the current iteration. Thread-safe.
    void stop();
    bool stopping() const { return stop_.load(); }

    bool in_loop_thread() const { return std::this_thread::get_id() == loop_thread_.load(); }

    // A buffer of at least n bytes that the loop thread's readers share: a
    // stream reads into it and keeps only what it must, so a thousand idle
    // streams do not hold a thousand read buffers. Loop thread only; valid
    // until the next call.
    char *read_scratch(size_t n);


private:
    static void on_wake(evutil_socket_t fd, short what, void *arg);
    void drain();

    event_base *base_ = nullptr;
    int wake_fd_ = -1;
    EventPtr wake_ev_;
    std::mutex mu_;
    std::deque<std::function<void()>> tasks_;
    bool wake_pending_ = false;
    std::atomic<bool> stop_{false};
    std::atomic<std::thread::id> loop_thread_{};
    std::unique_ptr<char[]> scratch_;
    size_t scratch_size_ = 0;
};

// A one-shot timer on a loop; destroying it cancels it. It may be destroyed
// from inside its own callback.
class Timer {
public:
    Timer(Loop &loop, double seconds, std::function<void()> fn);
    Timer(const Timer &) = delete;
    Timer &operator=(const Timer &) = delete;

private:
    static void on_fire(evutil_socket_t, short, void *arg);
    std::function<void()> fn_;
    EventPtr ev_;
};
using TimerPtr = std::unique_ptr<Timer>;

// Sets O_NONBLOCK / FD_CLOEXEC; return false on failure.
bool set_nonblocking(int fd, bool on = true);
bool set_cloexec(int fd, bool on = true);

// An owned file descriptor.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd &&o) noexcept : fd_(o.release()) {}
    UniqueFd &operator=(UniqueFd &&o) noexcept {
        if (this != &o) reset(o.release());
        return *this;
    }
    ~UniqueFd() { reset(); }
    int get() const { return fd_; }
    int release() { int f = fd_; fd_ = -1; return f; }
    void reset(int fd = -1);
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

}  // namespace spore
