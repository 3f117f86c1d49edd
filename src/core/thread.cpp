#include "core/thread.h"

#include <cerrno>
#include <memory>
#include <system_error>
#include <utility>

namespace spore {

namespace {

void *run_function(void *arg) {
    std::unique_ptr<std::function<void()>> fn(static_cast<std::function<void()> *>(arg));
    (*fn)();
    return nullptr;
}

// pthread_create with a stack size; 0 on success, else the error number.
int create(pthread_t *out, size_t stack_bytes, bool detached, std::function<void()> fn) {
    auto heap_fn = std::make_unique<std::function<void()>>(std::move(fn));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_bytes);
    if (detached) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(out, &attr, &run_function, heap_fn.get());
    pthread_attr_destroy(&attr);
    if (rc == 0) heap_fn.release();  // the thread owns it now
    return rc;
}

}  // namespace

bool start_detached_thread(size_t stack_bytes, std::function<void()> fn) {
    pthread_t t;
    return create(&t, stack_bytes, true, std::move(fn)) == 0;
}

SizedThread::SizedThread(size_t stack_bytes, std::function<void()> fn) {
    int rc = create(&thread_, stack_bytes, false, std::move(fn));
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "cannot start a thread");
    started_ = true;
}

SizedThread::SizedThread(SizedThread &&o) noexcept : thread_(o.thread_), started_(std::exchange(o.started_, false)) {}

SizedThread &SizedThread::operator=(SizedThread &&o) noexcept {
    if (this != &o) {
        join();
        thread_ = o.thread_;
        started_ = std::exchange(o.started_, false);
    }
    return *this;
}

void SizedThread::join() {
    if (!started_) return;
    started_ = false;
    pthread_join(thread_, nullptr);
}

}  // namespace spore
