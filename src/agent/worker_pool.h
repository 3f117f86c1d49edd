// Threads for built-ins that block (process execution, file I/O), so a slow
// call never stalls routing. Threads are started on demand up to a maximum
// and leave after being idle for a while, which keeps an idle agent small.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace spore::agent {

class WorkerPool {
public:
    explicit WorkerPool(size_t max_threads = 256, int idle_exit_s = 10)
        : max_threads_(max_threads), idle_exit_s_(idle_exit_s) {}
    WorkerPool(const WorkerPool &) = delete;
    WorkerPool &operator=(const WorkerPool &) = delete;

    // Queues a job; starts a thread when none is idle. Thread-safe.
    void submit(std::function<void()> job);
    size_t threads() const;

private:
    void worker();

    const size_t max_threads_;
    const int idle_exit_s_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    size_t threads_ = 0;
    size_t idle_ = 0;
};

}  // namespace spore::agent
