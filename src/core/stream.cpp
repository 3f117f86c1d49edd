#include "core/stream.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/keepalive.h"

namespace spore {
namespace {
constexpr size_t kReadChunk = 256 * 1024;
// Bytes read per wake-up before yielding to other streams.
constexpr size_t kReadBudget = 4 * 1024 * 1024;
constexpr size_t kCoalesceLimit = 64 * 1024;

bool is_socket(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}
}  // namespace

Stream::Stream(Loop &loop, int rfd, int wfd, std::string name, Limits limits)
    : loop_(loop), rfd_(rfd), wfd_(wfd), name_(std::move(name)), decoder_(limits) {
    set_nonblocking(rfd_);
    set_cloexec(rfd_);
    if (wfd_ != rfd_) {
        set_nonblocking(wfd_);
        set_cloexec(wfd_);
    }
    wfd_is_socket_ = is_socket(wfd_);
    rev_.reset(event_new(loop_.base(), rfd_, EV_READ | EV_PERSIST, &Stream::on_read_cb, this));
    wev_.reset(event_new(loop_.base(), wfd_, EV_WRITE | EV_PERSIST, &Stream::on_write_cb, this));
    if (!rev_ || !wev_) throw std::bad_alloc();
}

Stream::~Stream() {
    rev_.reset();
    wev_.reset();
    if (rfd_ >= 0) ::close(rfd_);
    if (wfd_ >= 0 && wfd_ != rfd_) ::close(wfd_);
}

void Stream::start(bool raw_mode) {
    raw_mode_ = raw_mode;
    event_add(rev_.get(), nullptr);
}

void Stream::switch_to_frames(std::string_view leftover) {
    raw_mode_ = false;
    if (!leftover.empty()) decoder_.feed(leftover.data(), leftover.size());
}

bool Stream::closed() const {
    std::lock_guard<std::mutex> lk(wmu_);
    return closed_;
}

// A pipe whose reader died raises SIGPIPE; keep it off this thread and
// swallow it, since a library must not change the process's signal setup.
template <typename WriteFn>
static ssize_t without_sigpipe(WriteFn &&write_fn) {
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = write_fn();
    if (n < 0 && errno == EPIPE) {
        int saved = errno;
        timespec zero{0, 0};
        sigtimedwait(&pipe_set, nullptr, &zero);
        errno = saved;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return n;
}

ssize_t Stream::write_fd(const void *buf, size_t len) {
    if (wfd_is_socket_) return ::send(wfd_, buf, len, MSG_NOSIGNAL);
    return without_sigpipe([&] { return ::write(wfd_, buf, len); });
}

bool Stream::send(const Message &m) {
    std::string bytes;
    encode_message(m, bytes);
    // Channel data (file and process stream chunks) waits behind everything
    // else, so a call or an acknowledgement never queues behind bulk bytes.
    return send_raw(std::move(bytes), m.h.handle == kHandleChanData);
}

bool Stream::queue_empty_locked() const { return cur_.empty() && pq_.empty() && bq_.empty(); }

bool Stream::send_raw(std::string bytes, bool bulk) {
    std::unique_lock<std::mutex> lk(wmu_);
    if (closed_) return false;
    if (loop_.in_loop_thread() && corked_) {  // corked_ is loop-thread state
        enqueue_locked(std::move(bytes), bulk);
        return true;
    }
    if (queue_empty_locked()) {
        // Fast path: write straight from the calling thread.
        size_t off = 0;
        while (off < bytes.size()) {
            ssize_t n = write_fd(bytes.data() + off, bytes.size() - off);
            if (n > 0) {
                off += size_t(n);
                bytes_out_.fetch_add(uint64_t(n), std::memory_order_relaxed);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            // Fatal error: the read side will notice EOF/ERR and close.
            int e = errno;
            lk.unlock();
            close_async(std::string("write failed: ") + std::strerror(e));
            return false;
        }
        if (off == bytes.size()) return true;
        // The rest of a message that has started must leave first.
        wq_bytes_ += bytes.size() - off;
        cur_ = std::move(bytes);
        cur_off_ = off;
    } else {
        enqueue_locked(std::move(bytes), bulk);
    }
    if (!wev_active_) {
        wev_active_ = true;
        lk.unlock();
        request_write_event();
    }
    return true;
}

void Stream::enqueue_locked(std::string bytes, bool bulk) {
    wq_bytes_ += bytes.size();
    if (bulk) {
        bq_bytes_ += bytes.size();
        bq_.push_back(std::move(bytes));
        return;
    }
    // Small messages queued back to back (a batch of replies) share one
    // buffer, so they leave in few large writes instead of many tiny ones.
    if (!pq_.empty() && bytes.size() < kCoalesceLimit && pq_.back().size() + bytes.size() <= kCoalesceLimit) {
        pq_.back() += bytes;
        return;
    }
    pq_.push_back(std::move(bytes));
}

size_t Stream::queued_bytes() const {
    std::lock_guard<std::mutex> lk(wmu_);
    return wq_bytes_;
}

void Stream::request_write_event() {
    if (loop_.in_loop_thread()) {
        event_add(wev_.get(), nullptr);
        return;
    }
    auto self = shared_from_this();
    loop_.post([self] {
        std::lock_guard<std::mutex> lk(self->wmu_);
        if (!self->closed_ && self->wev_active_) event_add(self->wev_.get(), nullptr);
    });
}

bool Stream::flush_locked(int &errno_out) {
    // Order on the wire: the message already started (cur_), then control
    // messages (pq_), then channel data (bq_).
    while (!queue_empty_locked()) {
        iovec iov[64];
        int n_iov = 0;
        if (!cur_.empty()) {
            iov[n_iov].iov_base = cur_.data() + cur_off_;
            iov[n_iov].iov_len = cur_.size() - cur_off_;
            ++n_iov;
        }
        for (auto it = pq_.begin(); it != pq_.end() && n_iov < 64; ++it, ++n_iov) {
            iov[n_iov].iov_base = it->data();
            iov[n_iov].iov_len = it->size();
        }
        for (auto it = bq_.begin(); it != bq_.end() && n_iov < 64; ++it, ++n_iov) {
            iov[n_iov].iov_base = it->data();
            iov[n_iov].iov_len = it->size();
        }
        ssize_t n;
        if (wfd_is_socket_) {
            msghdr mh{};
            mh.msg_iov = iov;
            mh.msg_iovlen = size_t(n_iov);
            n = ::sendmsg(wfd_, &mh, MSG_NOSIGNAL);
        } else {
            n = without_sigpipe([&] { return ::writev(wfd_, iov, n_iov); });
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            errno_out = errno;
            return false;
        }
        bytes_out_.fetch_add(uint64_t(n), std::memory_order_relaxed);
        size_t left = size_t(n);
        wq_bytes_ -= left;
        // Consume in the order of the iovecs; a message left half written
        // becomes cur_.
        if (!cur_.empty()) {
            size_t avail = cur_.size() - cur_off_;
            if (left >= avail) {
                left -= avail;
                cur_.clear();
                cur_.shrink_to_fit();
                cur_off_ = 0;
            } else {
                cur_off_ += left;
                left = 0;
            }
        }
        auto take = [&](std::deque<std::string> &q, bool bulk) {
            while (left > 0 && !q.empty()) {
                size_t sz = q.front().size();
                if (left >= sz) {
                    left -= sz;
                    if (bulk) bq_bytes_ -= sz;
                    q.pop_front();
                } else {
                    if (bulk) bq_bytes_ -= sz;
                    cur_ = std::move(q.front());
                    cur_off_ = left;
                    q.pop_front();
                    left = 0;
                }
            }
        };
        take(pq_, false);
        take(bq_, true);
    }
    return true;
}

void Stream::on_write_cb(evutil_socket_t, short, void *arg) { static_cast<Stream *>(arg)->handle_write(); }

void Stream::handle_write() {
    auto keep = shared_from_this();
    int err = 0;
    std::unique_lock<std::mutex> lk(wmu_);
    if (closed_) return;
    bool ok = flush_locked(err);
    if (ok && queue_empty_locked()) {
        wev_active_ = false;
        event_del(wev_.get());
    }
    lk.unlock();
    if (!ok) close(std::string("write failed: ") + std::strerror(err));
}

void Stream::on_read_cb(evutil_socket_t, short, void *arg) { static_cast<Stream *>(arg)->handle_read(); }

void Stream::handle_read() {
    auto keep = shared_from_this();
    size_t total = 0;
    bool eof = false;
    std::string err;
    while (total < kReadBudget) {
        ssize_t n;
        if (raw_mode_) {
            char buf[16384];
            n = ::read(rfd_, buf, sizeof buf);
            if (n > 0) {
                bytes_in_ += uint64_t(n);
                total += size_t(n);
                last_read_ms_ = monotonic_ms();
                if (on_raw_) on_raw_(*this, std::string_view(buf, size_t(n)));
                if (closed()) return;
                if (!raw_mode_) break;  // switched to frames: decode below
                continue;
            }
        } else {
            // An empty decoder reads into the loop's scratch buffer and keeps
            // only the bytes of an unfinished frame, so an idle stream holds
            // no read buffer; a frame in progress is read straight into the
            // decoder, which grows with what arrives.
            bool direct = decoder_.buffered() > 0;
            size_t window = direct ? decoder_.read_window(kReadChunk) : kReadChunk;
            char *p = direct ? decoder_.prepare(window) : loop_.read_scratch(window);
            n = ::read(rfd_, p, window);
            if (n > 0) {
                last_read_ms_ = monotonic_ms();
                if (direct) decoder_.commit(size_t(n));
                else decoder_.feed(p, size_t(n));
                bytes_in_ += uint64_t(n);
                total += size_t(n);
                if (size_t(n) < window) break;
                continue;
            }
        }
        if (n == 0) {
            eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EIO) {
            // A pty master reads EIO once the last slave fd is closed: EOF.
            eof = true;
            break;
        }
        err = std::string("read failed: ") + std::strerror(errno);
        break;
    }
    if (!raw_mode_) {
        Message m;
        corked_ = true;
        struct Uncork {
            Stream *s;
            ~Uncork() { s->uncork(); }
        } uncork_at_exit{this};
        for (;;) {
            auto st = decoder_.next(m);
            if (st == FrameDecoder::Status::kNeedMore) break;
            if (st == FrameDecoder::Status::kError) {
                close("protocol error: " + decoder_.error() + " (first bytes: " + decoder_.error_context() + ")");
                return;
            }
            if (on_message_) on_message_(*this, std::move(m));
            if (closed()) return;
        }
    }
    if (eof) close("EOF");
    else if (!err.empty()) close(err);
}

void Stream::uncork() {
    corked_ = false;
    int err = 0;
    std::unique_lock<std::mutex> lk(wmu_);
    if (closed_ || queue_empty_locked() || wev_active_) return;
    bool ok = flush_locked(err);
    if (ok && !queue_empty_locked()) {
        wev_active_ = true;
        event_add(wev_.get(), nullptr);
    }
    lk.unlock();
    if (!ok) close(std::string("write failed: ") + std::strerror(err));
}

void Stream::close(const std::string &reason, int code) {
    auto keep = shared_from_this();
    {
        std::lock_guard<std::mutex> lk(wmu_);
        if (closed_) return;
        closed_ = true;
        close_code_ = code;
        cur_.clear();
        pq_.clear();
        bq_.clear();
        wq_bytes_ = bq_bytes_ = 0;
    }
    rev_.reset();
    wev_.reset();
    if (rfd_ >= 0) ::close(rfd_);
    if (wfd_ >= 0 && wfd_ != rfd_) ::close(wfd_);
    rfd_ = wfd_ = -1;
    if (!close_notified_) {
        close_notified_ = true;
        if (on_close_) on_close_(*this, reason);
    }
}

void Stream::close_async(const std::string &reason) {
    if (loop_.in_loop_thread()) {
        close(reason);
        return;
    }
    auto self = shared_from_this();
    loop_.post([self, reason] { self->close(reason); });
}

}  // namespace spore
