#include "agent/worker_pool.h"

#include <chrono>

#include "core/thread.h"

namespace spore::agent {

void WorkerPool::submit(std::function<void()> job) {
    std::unique_lock<std::mutex> lk(mu_);
    jobs_.push_back(std::move(job));
    if (idle_ >= jobs_.size() || threads_ >= max_threads_) {
        cv_.notify_one();
        return;
    }
    ++threads_;
    lk.unlock();
    // Small stacks: built-ins do not recurse deeply, and the agent's resident
    // size matters when 50 calls run at once.
    if (!start_detached_thread(kSmallStack, [this] { worker(); })) {
        lk.lock();
        --threads_;
        if (threads_ > 0) {
            cv_.notify_one();  // an existing thread will pick the job up
            return;
        }
        // No thread at all: run it here rather than never.
        auto fn = std::move(jobs_.back());
        jobs_.pop_back();
        lk.unlock();
        fn();
    }
}

size_t WorkerPool::threads() const {
    std::lock_guard<std::mutex> lk(mu_);
    return threads_;
}

void WorkerPool::worker() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        if (jobs_.empty()) {
            ++idle_;
            bool woke = cv_.wait_for(lk, std::chrono::seconds(idle_exit_s_), [this] { return !jobs_.empty(); });
            --idle_;
            if (!woke) {
                --threads_;
                return;
            }
        }
        auto job = std::move(jobs_.front());
        jobs_.pop_front();
        lk.unlock();
        job();
        lk.lock();
    }
}

}  // namespace spore::agent
