#include "core/loop.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace spore {

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

bool set_nonblocking(int fd, bool on) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return false;
    int nfl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return nfl == fl || fcntl(fd, F_SETFL, nfl) == 0;
}

bool set_cloexec(int fd, bool on) {
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0) return false;
    int nfl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
    return nfl == fl || fcntl(fd, F_SETFD, nfl) == 0;
}

Loop::Loop() {
    event_config *cfg = event_config_new();
    if (!cfg) throw std::bad_alloc();
    // The loop is only ever driven by one thread; libevent's own locking is
    // not needed because other threads go through post().
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    base_ = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base_) throw std::runtime_error("event_base_new failed");
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) {
        event_base_free(base_);
        throw std::runtime_error("eventfd failed");
    }
    wake_ev_.reset(event_new(base_, wake_fd_, EV_READ | EV_PERSIST, &Loop::on_wake, this));
    event_add(wake_ev_.get(), nullptr);
}

Loop::~Loop() {
    wake_ev_.reset();
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (base_) event_base_free(base_);
}

void Loop::post(std::function<void()> fn) {
    bool need_wake;
    {
        std::lock_guard<std::mutex> lk(mu_);
        tasks_.push_back(std::move(fn));
        need_wake = !wake_pending_;
        wake_pending_ = true;
    }
    if (need_wake) {
        uint64_t one = 1;
        ssize_t r = ::write(wake_fd_, &one, sizeof one);
        (void)r;  // EAGAIN means the counter is already non-zero: still awake.
    }
}

void Loop::on_wake(evutil_socket_t fd, short, void *arg) {
    uint64_t v;
    ssize_t r = ::read(fd, &v, sizeof v);
    (void)r;
    static_cast<Loop *>(arg)->drain();
}

void Loop::drain() {
    std::deque<std::function<void()>> batch;
    {
        std::lock_guard<std::mutex> lk(mu_);
        batch.swap(tasks_);
        wake_pending_ = false;
    }
    for (auto &fn : batch) fn();
}

void Loop::run() {
    loop_thread_.store(std::this_thread::get_id());
    while (!stop_.load()) {
        event_base_loop(base_, EVLOOP_ONCE);
    }
    drain();
}

void Loop::stop() {
    stop_.store(true);
    post([] {});
}

Timer::Timer(Loop &loop, double seconds, std::function<void()> fn) : fn_(std::move(fn)) {
    ev_.reset(event_new(loop.base(), -1, 0, &Timer::on_fire, this));
    if (!ev_) throw std::bad_alloc();
    timeval tv;
    tv.tv_sec = long(seconds);
    tv.tv_usec = long((seconds - double(tv.tv_sec)) * 1e6);
    event_add(ev_.get(), &tv);
}

void Timer::on_fire(evutil_socket_t, short, void *arg) {
    // Copy first: the callback may destroy this timer.
    auto fn = static_cast<Timer *>(arg)->fn_;
    fn();
}

char *Loop::read_scratch(size_t n) {
    if (scratch_size_ < n) {
        scratch_ = std::make_unique_for_overwrite<char[]>(n);
        scratch_size_ = n;
    }
    return scratch_.get();
}

}  // namespace spore
