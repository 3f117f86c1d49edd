// Flow-controlled channels (docs/protocol.md, "Channels"): bulk data from
// one context to another as kHandleChanData messages, with a window of
// unacknowledged bytes that kHandleChanAck messages refill. Used by file
// transfers and process streams, in the master and in agents alike.
//
// A channel is named by its number and the context at the other end: the
// same number may be in use with several peers. The sender waits on a
// ChannelWindow before each chunk; the receiver's loop thread pushes chunks
// into a ChannelInbox that a worker (or the caller's thread) drains, and
// acknowledges what it has consumed. Both ends are bounded: the sender by
// its window, the receiver by refusing a peer that overruns it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/frame.h"

namespace spore {

inline constexpr size_t kChanChunk = 256 * 1024;           // bytes per data message
inline constexpr uint64_t kChanDefaultWindow = 4u << 20;   // unacknowledged bytes in flight
inline constexpr uint64_t kChanMinWindow = 64 * 1024;
inline constexpr uint64_t kChanMaxWindow = 64u << 20;
inline constexpr size_t kInlineMax = 128 * 1024;           // files up to this go in one message

using Clock = std::chrono::steady_clock;

// Sender side: how many bytes may still leave before acknowledgements.
class ChannelWindow {
public:
    explicit ChannelWindow(uint64_t window) : window_(window) {}

    // Waits until n more bytes may be in flight (n larger than the window
    // waits for an empty window), until the channel fails, or until the
    // deadline (Clock::time_point::max() for none). Returns SPORE_OK, the
    // failure's code (err filled), or SPORE_ETIMEDOUT. poll_ms bounds each
    // sleep, so a caller can also watch something else between them.
    int acquire(uint64_t n, Clock::time_point deadline, ErrorInfo &err, int poll_ms = 50);
    void credit(uint64_t n);
    void fail(const ErrorInfo &e);
    bool failed(ErrorInfo *out = nullptr) const;
    uint64_t in_flight() const;
    // Bytes that may leave now without waiting (0 when full or failed).
    uint64_t room() const;
    // Takes n bytes of window without waiting; false when they are not free.
    bool try_acquire(uint64_t n);

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    const uint64_t window_;
    uint64_t in_flight_ = 0;
    std::optional<ErrorInfo> failed_;
};

struct ChannelChunk {
    std::string data;
    bool eof = false;       // the sender has sent everything; meta holds its JSON
    std::string meta;       // the message's JSON when it carries no bytes (eof, abort, control)
    std::optional<ErrorInfo> abort;  // the sender gave up
};

// Receiver side: chunks in arrival order, pushed by the loop thread.
class ChannelInbox {
public:
    // limit: bytes that may wait before the sender is known to ignore its
    // window (the channel then fails instead of growing).
    explicit ChannelInbox(uint64_t limit) : limit_(limit) {}

    // Loop thread. Returns false (and fails the channel) when over the limit.
    bool push(ChannelChunk &&c);
    // Waits for the next chunk. Returns SPORE_OK with out set, the failure's
    // code with err filled, or SPORE_ETIMEDOUT.
    int pop(ChannelChunk &out, Clock::time_point deadline, ErrorInfo &err, int poll_ms = 50);
    void fail(const ErrorInfo &e);
    uint64_t queued() const;
    // Whether a pop would return at once (a chunk, or the failure).
    bool ready() const;

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    const uint64_t limit_;
    uint64_t queued_ = 0;
    std::deque<ChannelChunk> q_;
    std::optional<ErrorInfo> failed_;
};

struct ChannelEndpoint {
    uint32_t peer = 0;
    std::shared_ptr<ChannelWindow> window;  // when this end sends
    std::shared_ptr<ChannelInbox> inbox;    // when this end receives
    // Called (on the loop thread) after data, credit or a failure reached
    // the channel, for an owner that waits in poll() rather than on the
    // window or inbox (process streams).
    std::function<void()> notify;
    void fail(const ErrorInfo &e) const {
        if (window) window->fail(e);
        if (inbox) inbox->fail(e);
        if (notify) notify();
    }
};

// The channels of one context, by (peer, number). Thread-safe.
class ChannelTable {
public:
    // False when (peer, ch) is already in use.
    bool add(uint32_t peer, uint32_t ch, ChannelEndpoint ep);
    void remove(uint32_t peer, uint32_t ch);
    std::optional<ChannelEndpoint> find(uint32_t peer, uint32_t ch) const;
    // Fails every channel with peer (it went away), or every channel.
    void fail_peer(uint32_t peer, const ErrorInfo &e);
    void fail_all(const ErrorInfo &e);
    size_t size() const;

    // What the master and every agent do with the two channel messages.
    // Only the context at the other end of a channel may feed it; data for
    // a channel that has ended is dropped. deliver_data is false for a
    // malformed message.
    bool deliver_data(Message &&m);
    void deliver_ack(const Message &m);

private:
    mutable std::mutex mu_;
    std::map<std::pair<uint32_t, uint32_t>, ChannelEndpoint> map_;
};

// Builders of the two message kinds (src/auth set by the caller).
Message chan_data_message(uint32_t dst, uint32_t ch, std::string data);
Message chan_eof_message(uint32_t dst, uint32_t ch, const std::string &meta_json_members);
Message chan_abort_message(uint32_t dst, uint32_t ch, const ErrorInfo &why);
Message chan_ack_message(uint32_t dst, uint32_t ch, uint64_t n);
// A data message with no bytes and extra JSON members (e.g. "started").
Message chan_control_message(uint32_t dst, uint32_t ch, const std::string &json_members);

// Decodes a kHandleChanData message into (ch, chunk); false if malformed.
bool parse_chan_data(Message &&m, uint32_t &ch, ChannelChunk &out);
// Decodes a kHandleChanAck message; false if malformed.
bool parse_chan_ack(const Message &m, uint32_t &ch, uint64_t &n);

// A spore code for an errno of file I/O: SPORE_ENOENT, SPORE_EACCES,
// SPORE_ENOSPC, else SPORE_EREMOTE.
int file_error_code(int err) noexcept;
// Python-style type name for an errno ("FileNotFoundError", "OSError").
const char *file_error_type(int err) noexcept;

}  // namespace spore
