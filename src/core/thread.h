// Threads with a stack size of our choosing: std::thread always takes the
// default (8 MiB of address space on Linux), which adds up for the agent's
// workers and for one ssh session thread per host in a fleet.
#pragma once

#include <pthread.h>

#include <cstddef>
#include <functional>

namespace spore {

inline constexpr size_t kSmallStack = 256 * 1024;

// Runs fn on a detached thread with the given stack. False if no thread
// could be created (fn is then dropped without running).
bool start_detached_thread(size_t stack_bytes, std::function<void()> fn);

// A joinable thread with the given stack; joined by join() or on
// destruction.
class SizedThread {
public:
    SizedThread() = default;
    // Throws std::system_error when the thread cannot be created.
    SizedThread(size_t stack_bytes, std::function<void()> fn);
    SizedThread(const SizedThread &) = delete;
    SizedThread &operator=(const SizedThread &) = delete;
    SizedThread(SizedThread &&o) noexcept;
    SizedThread &operator=(SizedThread &&o) noexcept;
    ~SizedThread() { join(); }

    bool joinable() const { return started_; }
    void join();

private:
    pthread_t thread_{};
    bool started_ = false;
};

}  // namespace spore
