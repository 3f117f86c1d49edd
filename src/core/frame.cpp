#include "core/frame.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace spore {
namespace {

void put16(uint8_t *p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
void put32(uint8_t *p, uint32_t v) {
    p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
uint16_t get16(const uint8_t *p) { return uint16_t((p[0] << 8) | p[1]); }
uint32_t get32(const uint8_t *p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

void encode_header(const Header &h, uint8_t out[kHeaderSize]) {
    put16(out, h.magic);
    out[2] = h.version;
    out[3] = h.flags;
    put32(out + 4, h.dst_id);
    put32(out + 8, h.src_id);
    put32(out + 12, h.auth_id);
    put32(out + 16, h.handle);
    put32(out + 20, h.reply_to);
    put32(out + 24, h.json_len);
    put32(out + 28, h.bin_len);
}

Header decode_header(const uint8_t in[kHeaderSize]) {
    Header h;
    h.magic = get16(in);
    h.version = in[2];
    h.flags = in[3];
    h.dst_id = get32(in + 4);
    h.src_id = get32(in + 8);
    h.auth_id = get32(in + 12);
    h.handle = get32(in + 16);
    h.reply_to = get32(in + 20);
    h.json_len = get32(in + 24);
    h.bin_len = get32(in + 28);
    return h;
}

void reserve_bulk(std::string &s, size_t n) {
    constexpr size_t kHuge = size_t(2) << 20;
    size_t want = s.size() + n;
    if (want <= s.capacity()) return;
    s.reserve(want);
    if (want < 2 * kHuge) return;
    // Only the 2 MiB-aligned part of the block can use huge pages.
    auto start = (reinterpret_cast<uintptr_t>(s.data()) + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
    auto end = (reinterpret_cast<uintptr_t>(s.data()) + s.capacity()) & ~(uintptr_t(kHuge) - 1);
    if (end > start) madvise(reinterpret_cast<void *>(start), end - start, MADV_HUGEPAGE);
}

void encode_message(const Message &m, std::string &out) {
    Header h = m.h;
    h.json_len = uint32_t(m.json.size());
    h.bin_len = uint32_t(m.bin.size());
    uint8_t hdr[kHeaderSize];
    encode_header(h, hdr);
    reserve_bulk(out, kHeaderSize + m.json.size() + m.bin.size());
    out.append(reinterpret_cast<const char *>(hdr), kHeaderSize);
    out.append(m.json);
    out.append(m.bin);
}

std::string encode_message(const Message &m) {
    std::string out;
    encode_message(m, out);
    return out;
}

std::string check_header(const Header &h, const Limits &limits) {
    if (h.magic != kMagic) return "bad frame magic (stream corrupt or not a spore peer)";
    if (h.version != kProtocolVersion)
        return "unsupported protocol version " + std::to_string(h.version);
    if (h.json_len > limits.max_json_size)
        return "JSON part of " + std::to_string(h.json_len) + " bytes exceeds the limit of " +
               std::to_string(limits.max_json_size);
    uint64_t total = kHeaderSize + uint64_t(h.json_len) + uint64_t(h.bin_len);
    if (total > limits.max_message_size)
        return "message of " + std::to_string(total) + " bytes exceeds the limit of " +
               std::to_string(limits.max_message_size);
    return {};
}

ByteBuffer::~ByteBuffer() { release(); }

void ByteBuffer::release() {
    std::free(data_);
    data_ = nullptr;
    cap_ = 0;
}

void ByteBuffer::reserve(size_t n, size_t keep) {
    if (n <= cap_) return;
    size_t cap = std::max(n, cap_ * 2);
    // realloc moves large blocks by remapping pages, without copying them.
    void *p = keep ? std::realloc(data_, cap) : nullptr;
    if (!keep) {
        p = std::malloc(cap);
        if (p) std::free(data_);
    }
    if (!p) throw std::bad_alloc();
    constexpr size_t kHuge = size_t(2) << 20;
    if (cap >= 2 * kHuge) {
        // As reserve_bulk: the new part is written next, in huge pages.
        auto start = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
        auto end = (reinterpret_cast<uintptr_t>(p) + cap) & ~(uintptr_t(kHuge) - 1);
        if (end > start) madvise(reinterpret_cast<void *>(start), end - start, MADV_HUGEPAGE);
    }
    data_ = static_cast<char *>(p);
    cap_ = cap;
}

void FrameDecoder::feed(const char *data, size_t len) {
    if (len == 0) return;  // data may be null then, and memcpy(null) is UB
    std::memcpy(prepare(len), data, len);
    commit(len);
}

size_t FrameDecoder::read_window(size_t max_read) const {
    constexpr size_t kMinWindow = 64 * 1024;
    return std::min(max_read, std::max(kMinWindow, buffered()));
}

char *FrameDecoder::prepare(size_t want) {
    want = std::max<size_t>(want, 1);  // a valid pointer even for an empty read
    if (begin_ == end_) begin_ = end_ = 0;
    if (buf_.capacity() - end_ < want) {
        // Compact first; grow only if the live bytes plus the request do not fit.
        if (begin_ > 0) {
            std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
        buf_.reserve(end_ + want, end_);
    }
    return buf_.data() + end_;
}

void FrameDecoder::commit(size_t n) {
    end_ += n;
    if (begin_ == end_) consumed_all();
}

void FrameDecoder::consumed_all() {
    begin_ = end_ = 0;
    buf_.release();
}

FrameDecoder::Status FrameDecoder::next(Message &out) {
    if (!error_.empty()) return Status::kError;
    size_t avail = end_ - begin_;
    if (avail < kHeaderSize) {
        // A bad magic is reported as soon as two bytes are there, so garbage
        // shorter than a header is not waited for forever.
        if (avail >= 2 && (uint8_t(buf_.data()[begin_]) << 8 | uint8_t(buf_.data()[begin_ + 1])) != kMagic) {
            error_ = "bad frame magic (stream corrupt or not a spore peer)";
            bad_bytes_.assign(buf_.data() + begin_, avail);
            return Status::kError;
        }
        return Status::kNeedMore;
    }
    const auto *p = reinterpret_cast<const uint8_t *>(buf_.data() + begin_);
    Header h = decode_header(p);
    std::string why = check_header(h, limits_);
    if (!why.empty()) {
        error_ = why;
        bad_bytes_.assign(buf_.data() + begin_, std::min<size_t>(avail, 64));
        return Status::kError;
    }
    uint64_t total = kHeaderSize + uint64_t(h.json_len) + uint64_t(h.bin_len);
    // Nothing is reserved for the rest of the frame: the buffer grows as its
    // bytes arrive (read_window), so a header alone costs no memory.
    if (avail < total) return Status::kNeedMore;
    out.h = h;
    const char *body = buf_.data() + begin_ + kHeaderSize;
    out.json.assign(body, h.json_len);
    out.bin.clear();
    reserve_bulk(out.bin, h.bin_len);
    out.bin.assign(body + h.json_len, h.bin_len);
    begin_ += size_t(total);
    if (begin_ == end_) consumed_all();
    return Status::kMessage;
}

std::string FrameDecoder::error_context() const { return hex_dump(bad_bytes_); }

std::string hex_dump(std::string_view bytes, size_t max_bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    size_t n = std::min(bytes.size(), max_bytes);
    for (size_t i = 0; i < n; ++i) {
        auto c = uint8_t(bytes[i]);
        if (i) out.push_back(' ');
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    if (bytes.size() > n) out += " ...";
    return out;
}

}  // namespace spore
