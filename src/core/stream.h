// One connection to a neighbouring context: a pair of fds (or one socket)
// carrying framed messages. Reads and closing happen on the loop thread;
// send() may be called from any thread and writes straight to the fd when
// nothing is queued, so a caller's request costs no thread hop.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/frame.h"
#include "spore/errors.h"
#include "core/loop.h"

namespace spore {

class Stream : public std::enable_shared_from_this<Stream> {
public:
    using MessageFn = std::function<void(Stream &, Message &&)>;
    using CloseFn = std::function<void(Stream &, const std::string &reason)>;
    // Boot mode: raw bytes before the framed protocol starts.
    using RawFn = std::function<void(Stream &, std::string_view bytes)>;

    // Takes ownership of rfd and wfd (which may be the same fd).
    Stream(Loop &loop, int rfd, int wfd, std::string name, Limits limits);
    ~Stream();
    Stream(const Stream &) = delete;
    Stream &operator=(const Stream &) = delete;

    void on_message(MessageFn fn) { on_message_ = std::move(fn); }
    void on_close(CloseFn fn) { on_close_ = std::move(fn); }
    void on_raw(RawFn fn) { on_raw_ = std::move(fn); }

    // Starts reading (loop thread). In raw mode bytes go to the raw callback
    // until switch_to_frames() is called.
    void start(bool raw_mode);
    // Leaves raw mode; leftover bytes are decoded as frames. Loop thread.
    void switch_to_frames(std::string_view leftover);

    // Queues a message. Thread-safe. Returns false if the stream is closed.
    // Channel data (kHandleChanData) is bulk: it leaves after every control
    // message queued before or after it, never in the middle of one.
    bool send(const Message &m);
    bool send_raw(std::string bytes, bool bulk = false);
    // Bytes waiting to be written (all classes). Thread-safe.
    size_t queued_bytes() const;

    // Closes the stream (loop thread): fds closed, on_close called once.
    // code says why for those who learn of it later (close_code()):
    // SPORE_EDISCONNECTED, or SPORE_EUNRESPONSIVE when a keepalive gave up.
    void close(const std::string &reason, int code = SPORE_EDISCONNECTED);
    int close_code() const { return close_code_; }
    // Closes from any thread.
    void close_async(const std::string &reason);
    bool closed() const;

    const std::string &name() const { return name_; }
    uint32_t remote_id() const { return remote_id_; }
    void set_remote_id(uint32_t id) { remote_id_ = id; }
    // True for an agent's stream to its parent.
    bool toward_parent() const { return toward_parent_; }
    void set_toward_parent(bool v) { toward_parent_ = v; }
    // True for a listener's stream to an attached router (another process of
    // the same user): its messages act with the listener's own authority and
    // it may exchange messages with every context (docs/protocol.md,
    // "Shared routers"). Set before the stream starts.
    bool attached() const { return attached_; }
    void set_attached(bool v) { attached_ = v; }
    void set_limits(const Limits &l) { decoder_.set_limits(l); }
    const Limits &limits() const { return decoder_.limits(); }

    uint64_t bytes_in() const { return bytes_in_; }
    // When bytes last arrived (monotonic_ms()); loop thread.
    int64_t last_read_ms() const { return last_read_ms_; }
    // Bytes the fd has taken so far. Any thread.
    uint64_t bytes_out() const { return bytes_out_.load(std::memory_order_relaxed); }

private:
    static void on_read_cb(evutil_socket_t, short, void *arg);
    static void on_write_cb(evutil_socket_t, short, void *arg);
    void handle_read();
    void handle_write();
    // Writes as much of the queue as the fd takes. Caller holds wmu_.
    // Returns false on a fatal write error (errno_out set).
    bool flush_locked(int &errno_out);
    void request_write_event();
    void enqueue_locked(std::string bytes, bool bulk);
    bool queue_empty_locked() const;
    void uncork();
    ssize_t write_fd(const void *buf, size_t len);

    Loop &loop_;
    int rfd_, wfd_;
    bool wfd_is_socket_ = false;
    std::string name_;
    uint32_t remote_id_ = 0;
    bool toward_parent_ = false;
    bool attached_ = false;
    FrameDecoder decoder_;
    bool raw_mode_ = false;
    EventPtr rev_, wev_;
    MessageFn on_message_;
    CloseFn on_close_;
    RawFn on_raw_;

    mutable std::mutex wmu_;
    std::string cur_;           // a message partly written; the rest leaves first
    size_t cur_off_ = 0;        // bytes of cur_ already written
    std::deque<std::string> pq_;  // control messages (calls, replies, acks, logs)
    std::deque<std::string> bq_;  // channel data
    size_t wq_bytes_ = 0;       // everything queued
    size_t bq_bytes_ = 0;       // channel data queued
    bool wev_active_ = false;  // guarded by wmu_
    // While the loop thread dispatches a batch of messages read at once, its
    // own writes are queued and leave in one writev at the end of the batch.
    bool corked_ = false;      // loop thread only
    bool closed_ = false;      // guarded by wmu_
    bool close_notified_ = false;
    uint64_t bytes_in_ = 0;
    std::atomic<uint64_t> bytes_out_{0};  // written under wmu_, read by liveness checks
    int64_t last_read_ms_ = 0;
    int close_code_ = SPORE_EDISCONNECTED;
};

}  // namespace spore
