// The wire format (docs/protocol.md): a fixed 32-byte big-endian header, a
// JSON part and a raw binary part. Decoding checks every limit before any
// allocation, so hostile input can only close the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace spore {

inline constexpr uint16_t kMagic = 0x5350;  // "SP"
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 32;
inline constexpr uint64_t kDefaultMaxMessageSize = 128ull << 20;
inline constexpr uint32_t kDefaultMaxJsonSize = 16u << 20;

// Header flags.
enum : uint8_t {
    kFlagError = 0x01,  // the JSON part is an error object (a failed reply or a dead message)
};

// Standard handles (< 1000). Dynamic handles (call replies) start at 1000.
enum Handle : uint32_t {
    kHandleCall = 100,        // run a function (parent authority required)
    kHandleLog = 101,         // a forwarded log record, to the master
    kHandleAddRoute = 102,    // {"id","name"}: a context appeared behind the sender
    kHandleDelRoute = 103,    // {"id"}: a context and everything behind it is gone
    kHandleAllocIds = 104,    // ask the master for a block of context ids
    kHandleShutdown = 105,    // shut down gracefully (parent authority required)
    kHandleChanData = 106,    // {"ch", ...} + bytes: data of a channel (file transfer, process stream)
    kHandleChanAck = 107,     // {"ch","n"}: n bytes of a channel consumed; refills the sender's window
    kHandleStreamData = 108,  // reserved: process stream data
    kHandleDetach = 109,      // reserved: child detaches from its parent
    kHandleInit = 110,        // parent -> new child: its configuration
    kHandleSetLogLevel = 111, // {"level"}: minimum level to forward, pushed down the tree
    kHandlePeerGone = 112,    // {"id","reason"}: a caller (attached router) or context is gone;
                              // parent -> children, listener -> attached routers
    kHandleKeepalive = 113,   // parent -> child: are you there? (empty)
    kHandleKeepaliveAck = 114,  // child -> parent: yes (empty)
    kHandleModuleRequest = 115,  // child -> parent: {"names"}: Python modules a worker needs
    kHandleModuleAnswer = 116,   // parent -> child: {"modules"} + sources
    kFirstDynamicHandle = 1000,
};

struct Header {
    uint16_t magic = kMagic;
    uint8_t version = kProtocolVersion;
    uint8_t flags = 0;
    uint32_t dst_id = 0;
    uint32_t src_id = 0;
    uint32_t auth_id = 0;
    uint32_t handle = 0;
    uint32_t reply_to = 0;
    uint32_t json_len = 0;
    uint32_t bin_len = 0;
};

struct Message {
    Header h;
    std::string json;  // the JSON part (may be empty)
    std::string bin;   // the binary part (may be empty)

    uint64_t wire_size() const { return kHeaderSize + json.size() + bin.size(); }
};

struct Limits {
    uint64_t max_message_size = kDefaultMaxMessageSize;
    uint32_t max_json_size = kDefaultMaxJsonSize;
    int max_json_depth = 64;
};

void encode_header(const Header &h, uint8_t out[kHeaderSize]);
Header decode_header(const uint8_t in[kHeaderSize]);

// Reserves room for n more bytes in s and, for a large buffer, asks the
// kernel to back it with transparent huge pages before it is first
// written: faulting in megabytes of fresh 4 KiB pages costs more than
// copying them (about 3 ms per MiB on some VMs), and every large message
// lands in fresh memory. A no-op where THP is off or unsupported.
void reserve_bulk(std::string &s, size_t n);

// Appends header + json + bin to out (header lengths are taken from the parts).
void encode_message(const Message &m, std::string &out);
std::string encode_message(const Message &m);

// Checks a decoded header against the limits. Returns an empty string when it
// is acceptable, else the reason (bad magic, unsupported version, too large).
std::string check_header(const Header &h, const Limits &limits);

// A growable byte buffer that neither zero-fills nor keeps memory while empty.
class ByteBuffer {
public:
    ByteBuffer() = default;
    ByteBuffer(const ByteBuffer &) = delete;
    ByteBuffer &operator=(const ByteBuffer &) = delete;
    ByteBuffer(ByteBuffer &&o) noexcept { swap(o); }
    ByteBuffer &operator=(ByteBuffer &&o) noexcept {
        ByteBuffer tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    ~ByteBuffer();

    char *data() const { return data_; }
    size_t capacity() const { return cap_; }
    // Makes room for at least n bytes, keeping the first `keep` bytes.
    // Capacity at least doubles, so appending is amortised O(1). Throws
    // std::bad_alloc.
    void reserve(size_t n, size_t keep);
    void release();

private:
    void swap(ByteBuffer &o) noexcept {
        std::swap(data_, o.data_);
        std::swap(cap_, o.cap_);
    }
    char *data_ = nullptr;
    size_t cap_ = 0;
};

// Incremental decoder over a byte stream. Feed it bytes, then take messages.
//
// Memory follows the bytes that arrived, never a peer's header: a header
// claiming 127 MiB costs nothing until the bytes are there, and the buffer
// is released whenever it holds no byte (an idle stream keeps none).
class FrameDecoder {
public:
    enum class Status { kNeedMore, kMessage, kError };

    explicit FrameDecoder(Limits limits = {}) : limits_(limits) {}

    // Appends bytes to the internal buffer.
    void feed(const char *data, size_t len);
    // How many bytes a read straight into the buffer may take now: at most
    // max_read, and at most as many as are buffered already (but 64 KiB at
    // least), so a slow trickle cannot make the buffer outgrow its data.
    size_t read_window(size_t max_read) const;
    // Exposes spare capacity for reading straight into the buffer: returns a
    // pointer to at least `want` writable bytes; call commit(n) after.
    char *prepare(size_t want);
    void commit(size_t n);
    // Bytes the decoder holds memory for (for tests and the memory benchmark).
    size_t capacity() const { return buf_.capacity(); }

    // Takes the next complete message. On kError, error() says why and the
    // stream must be closed (framing is lost).
    Status next(Message &out);
    const std::string &error() const { return error_; }
    // The first bytes of the offending frame, hex-dumped, for the log.
    std::string error_context() const;
    size_t buffered() const { return end_ - begin_; }
    const Limits &limits() const { return limits_; }
    void set_limits(const Limits &l) { limits_ = l; }

private:
    void consumed_all();

    Limits limits_;
    ByteBuffer buf_;
    size_t begin_ = 0, end_ = 0;
    std::string error_;
    std::string bad_bytes_;
};

std::string hex_dump(std::string_view bytes, size_t max_bytes = 64);

}  // namespace spore
