// Unit tests of the wire codec: the 32-byte header, message encoding and the
// incremental FrameDecoder (limits are checked before any allocation).
#include "core/frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SPORE_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPORE_TEST_ASAN 1
#endif
#endif

#ifdef SPORE_TEST_ASAN
// From <sanitizer/allocator_interface.h>, declared here because GCC does not
// install that header; both GCC's and Clang's ASan runtimes export them.
extern "C" {
size_t __sanitizer_get_current_allocated_bytes(void);
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
}
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define SPORE_TEST_MALLINFO2 1
#endif

namespace spore {
namespace {

using Status = FrameDecoder::Status;

// ---------------------------------------------------------------------------
// Heap probe: how many bytes are live, and (under ASan) the largest single
// allocation made while armed. Used to prove that hostile lengths never make
// the decoder allocate.

#ifdef SPORE_TEST_ASAN
std::atomic<bool> g_probe_armed{false};
std::atomic<size_t> g_probe_largest{0};

void probe_malloc_hook(const volatile void *, size_t size) {
    if (!g_probe_armed.load(std::memory_order_relaxed)) return;
    size_t cur = g_probe_largest.load(std::memory_order_relaxed);
    while (size > cur && !g_probe_largest.compare_exchange_weak(cur, size)) {
    }
}
void probe_free_hook(const volatile void *) {}

bool install_probe_hooks() {
    __sanitizer_install_malloc_and_free_hooks(probe_malloc_hook, probe_free_hook);
    return true;
}
#endif

struct HeapProbe {
    static bool can_measure_live() {
#if defined(SPORE_TEST_ASAN) || defined(SPORE_TEST_MALLINFO2)
        return true;
#else
        return false;
#endif
    }
    static bool can_measure_largest() {
#ifdef SPORE_TEST_ASAN
        return true;
#else
        return false;
#endif
    }
    static long long live_bytes() {
#if defined(SPORE_TEST_ASAN)
        return static_cast<long long>(__sanitizer_get_current_allocated_bytes());
#elif defined(SPORE_TEST_MALLINFO2)
        struct mallinfo2 mi = mallinfo2();
        return static_cast<long long>(mi.uordblks + mi.hblkhd);
#else
        return 0;
#endif
    }
    void arm() {
#ifdef SPORE_TEST_ASAN
        static const bool installed = install_probe_hooks();
        (void)installed;
        g_probe_largest = 0;
        g_probe_armed = true;
#endif
    }
    // Largest single allocation since arm().
    size_t disarm() {
#ifdef SPORE_TEST_ASAN
        g_probe_armed = false;
        return g_probe_largest.load();
#else
        return 0;
#endif
    }
};

// ---------------------------------------------------------------------------
// Helpers.

std::string bytes(std::initializer_list<int> list) {
    std::string s;
    for (int b : list) s.push_back(char(uint8_t(b)));
    return s;
}

std::string raw_header(const Header &h) {
    uint8_t buf[kHeaderSize];
    encode_header(h, buf);
    return std::string(reinterpret_cast<const char *>(buf), kHeaderSize);
}

Message make_msg(uint32_t handle, std::string json, std::string bin = {}) {
    Message m;
    m.h.dst_id = 7;
    m.h.src_id = 3;
    m.h.auth_id = 3;
    m.h.handle = handle;
    m.h.reply_to = 1000 + handle;
    m.json = std::move(json);
    m.bin = std::move(bin);
    return m;
}

void expect_same(const Message &got, const Message &want) {
    EXPECT_EQ(got.h.magic, kMagic);
    EXPECT_EQ(got.h.version, kProtocolVersion);
    EXPECT_EQ(got.h.flags, want.h.flags);
    EXPECT_EQ(got.h.dst_id, want.h.dst_id);
    EXPECT_EQ(got.h.src_id, want.h.src_id);
    EXPECT_EQ(got.h.auth_id, want.h.auth_id);
    EXPECT_EQ(got.h.handle, want.h.handle);
    EXPECT_EQ(got.h.reply_to, want.h.reply_to);
    EXPECT_EQ(got.h.json_len, want.json.size());
    EXPECT_EQ(got.h.bin_len, want.bin.size());
    EXPECT_EQ(got.json, want.json);
    EXPECT_EQ(got.bin, want.bin);
}

// A header with every field distinct, and its hand-written big-endian bytes.
Header sample_header() {
    Header h;
    h.magic = 0x5350;
    h.version = 1;
    h.flags = 0x01;
    h.dst_id = 0x01020304;
    h.src_id = 0x05060708;
    h.auth_id = 0x090A0B0C;
    h.handle = 0x0D0E0F10;
    h.reply_to = 0x11121314;
    h.json_len = 0x15161718;
    h.bin_len = 0x191A1B1C;
    return h;
}

const uint8_t kSampleBytes[kHeaderSize] = {
    0x53, 0x50,              // magic "SP"
    0x01,                    // version
    0x01,                    // flags
    0x01, 0x02, 0x03, 0x04,  // dst_id
    0x05, 0x06, 0x07, 0x08,  // src_id
    0x09, 0x0A, 0x0B, 0x0C,  // auth_id
    0x0D, 0x0E, 0x0F, 0x10,  // handle
    0x11, 0x12, 0x13, 0x14,  // reply_to
    0x15, 0x16, 0x17, 0x18,  // json_len
    0x19, 0x1A, 0x1B, 0x1C,  // bin_len
};

// A header that passes the magic/version checks but announces the given sizes.
std::string announce(uint32_t json_len, uint32_t bin_len) {
    Header h;
    h.handle = kHandleCall;
    h.json_len = json_len;
    h.bin_len = bin_len;
    return raw_header(h);
}

// ---------------------------------------------------------------------------
// Header.

TEST(FrameHeader, ConstantsMatchTheProtocol) {
    EXPECT_EQ(kHeaderSize, 32u);
    EXPECT_EQ(kMagic, 0x5350);
    EXPECT_EQ(kProtocolVersion, 1);
    EXPECT_EQ(kDefaultMaxMessageSize, 128ull << 20);
    EXPECT_EQ(kFirstDynamicHandle, 1000u);
    Header h;
    EXPECT_EQ(h.magic, kMagic);
    EXPECT_EQ(h.version, kProtocolVersion);
    EXPECT_EQ(h.flags, 0);
}

TEST(FrameHeader, EncodeIsBigEndianByteForByte) {
    uint8_t out[kHeaderSize];
    std::memset(out, 0xEE, sizeof out);
    encode_header(sample_header(), out);
    for (size_t i = 0; i < kHeaderSize; ++i)
        EXPECT_EQ(out[i], kSampleBytes[i]) << "byte " << i;
}

TEST(FrameHeader, DecodeHandWrittenBytes) {
    Header h = decode_header(kSampleBytes);
    EXPECT_EQ(h.magic, 0x5350);
    EXPECT_EQ(h.version, 1);
    EXPECT_EQ(h.flags, 0x01);
    EXPECT_EQ(h.dst_id, 0x01020304u);
    EXPECT_EQ(h.src_id, 0x05060708u);
    EXPECT_EQ(h.auth_id, 0x090A0B0Cu);
    EXPECT_EQ(h.handle, 0x0D0E0F10u);
    EXPECT_EQ(h.reply_to, 0x11121314u);
    EXPECT_EQ(h.json_len, 0x15161718u);
    EXPECT_EQ(h.bin_len, 0x191A1B1Cu);
}

TEST(FrameHeader, RoundTripEveryFieldAtExtremes) {
    const uint32_t values[] = {0u, 1u, 0x7Fu, 0x80u, 0xFFu, 0x100u, 0x8000'0000u, 0xFFFF'FFFFu,
                               0xDEAD'BEEFu};
    for (uint32_t v : values) {
        Header h;
        h.magic = uint16_t(v);
        h.version = uint8_t(v);
        h.flags = uint8_t(v >> 3);
        h.dst_id = v;
        h.src_id = ~v;
        h.auth_id = v ^ 0x5A5A5A5A;
        h.handle = v + 1;
        h.reply_to = v - 1;
        h.json_len = v >> 1;
        h.bin_len = v << 1;
        uint8_t buf[kHeaderSize];
        encode_header(h, buf);
        Header d = decode_header(buf);
        EXPECT_EQ(d.magic, h.magic);
        EXPECT_EQ(d.version, h.version);
        EXPECT_EQ(d.flags, h.flags);
        EXPECT_EQ(d.dst_id, h.dst_id);
        EXPECT_EQ(d.src_id, h.src_id);
        EXPECT_EQ(d.auth_id, h.auth_id);
        EXPECT_EQ(d.handle, h.handle);
        EXPECT_EQ(d.reply_to, h.reply_to);
        EXPECT_EQ(d.json_len, h.json_len);
        EXPECT_EQ(d.bin_len, h.bin_len);
        // And bytes -> header -> bytes is the identity.
        uint8_t again[kHeaderSize];
        encode_header(d, again);
        EXPECT_EQ(0, std::memcmp(buf, again, kHeaderSize));
    }
}

TEST(FrameHeader, CheckHeader) {
    Limits lim;
    lim.max_message_size = 1000;
    lim.max_json_size = 100;
    Header h;
    EXPECT_EQ(check_header(h, lim), "");

    Header bad = h;
    bad.magic = 0x5351;
    EXPECT_NE(check_header(bad, lim).find("magic"), std::string::npos);

    bad = h;
    bad.version = 2;
    EXPECT_NE(check_header(bad, lim).find("version 2"), std::string::npos);

    bad = h;
    bad.json_len = 101;
    EXPECT_NE(check_header(bad, lim).find("JSON part of 101"), std::string::npos);
    bad.json_len = 100;
    EXPECT_EQ(check_header(bad, lim), "");

    bad = h;
    bad.json_len = 100;
    bad.bin_len = 1000 - 32 - 100;  // exactly at the limit
    EXPECT_EQ(check_header(bad, lim), "");
    bad.bin_len += 1;
    EXPECT_NE(check_header(bad, lim).find("message of 1001 bytes"), std::string::npos);

    // Lengths are summed in 64 bits: no wrap-around to a small total.
    bad = h;
    bad.json_len = 0xFFFFFFFF;
    bad.bin_len = 0xFFFFFFFF;
    Limits huge;
    huge.max_json_size = 0xFFFFFFFF;
    huge.max_message_size = 0xFFFFFFFFull;
    EXPECT_NE(check_header(bad, huge).find("exceeds"), std::string::npos);
}

// ---------------------------------------------------------------------------
// encode_message.

TEST(EncodeMessage, LengthsComeFromTheParts) {
    Message m = make_msg(kHandleLog, R"({"msg":"hi"})", std::string("\0\1\2\3", 4));
    m.h.json_len = 999;  // stale values must be ignored
    m.h.bin_len = 12345;
    std::string wire = encode_message(m);
    ASSERT_EQ(wire.size(), kHeaderSize + m.json.size() + 4);
    EXPECT_EQ(wire.size(), m.wire_size());
    Header h = decode_header(reinterpret_cast<const uint8_t *>(wire.data()));
    EXPECT_EQ(h.json_len, m.json.size());
    EXPECT_EQ(h.bin_len, 4u);
    EXPECT_EQ(h.handle, uint32_t(kHandleLog));
    EXPECT_EQ(wire.substr(kHeaderSize, m.json.size()), m.json);
    EXPECT_EQ(wire.substr(kHeaderSize + m.json.size()), m.bin);
    // The header bytes spell the lengths big-endian.
    EXPECT_EQ(wire.substr(24, 8), bytes({0, 0, 0, 12, 0, 0, 0, 4}));
}

TEST(EncodeMessage, EmptyPartsGiveAHeaderOnly) {
    Message m;
    std::string wire = encode_message(m);
    EXPECT_EQ(wire.size(), kHeaderSize);
    EXPECT_EQ(m.wire_size(), kHeaderSize);
    EXPECT_EQ(wire.substr(0, 4), bytes({0x53, 0x50, 0x01, 0x00}));
    EXPECT_EQ(wire.substr(4), std::string(28, '\0'));
}

TEST(EncodeMessage, AppendsToExistingOutput) {
    std::string out = "prefix";
    Message a = make_msg(1, "[1]");
    Message b = make_msg(2, "", "bin");
    encode_message(a, out);
    encode_message(b, out);
    ASSERT_EQ(out.size(), 6 + a.wire_size() + b.wire_size());
    EXPECT_EQ(out.substr(0, 6), "prefix");
    EXPECT_EQ(out.substr(6, a.wire_size()), encode_message(a));
    EXPECT_EQ(out.substr(6 + a.wire_size()), encode_message(b));
}

// ---------------------------------------------------------------------------
// FrameDecoder: happy paths.

TEST(FrameDecoder, WholeMessage) {
    Message m = make_msg(kHandleCall, R"({"fn":"x","args":[1,2]})", std::string("a\0b", 3));
    m.h.flags = kFlagError;
    FrameDecoder d;
    std::string wire = encode_message(m);
    d.feed(wire.data(), wire.size());
    EXPECT_EQ(d.buffered(), wire.size());
    Message got;
    ASSERT_EQ(d.next(got), Status::kMessage);
    expect_same(got, m);
    EXPECT_EQ(d.buffered(), 0u);
    EXPECT_EQ(d.next(got), Status::kNeedMore);
    EXPECT_TRUE(d.error().empty());
}

TEST(FrameDecoder, HeaderOnlyMessage) {
    Message m = make_msg(kHandleShutdown, "");
    FrameDecoder d;
    std::string wire = encode_message(m);
    d.feed(wire.data(), wire.size());
    Message got;
    got.json = "stale";
    got.bin = "stale";
    ASSERT_EQ(d.next(got), Status::kMessage);
    expect_same(got, m);
    EXPECT_TRUE(got.json.empty());
    EXPECT_TRUE(got.bin.empty());
}

TEST(FrameDecoder, ByteByByte) {
    std::vector<Message> msgs = {make_msg(100, R"({"a":1})", "xyz"), make_msg(101, ""),
                                 make_msg(1000, "[]", std::string(300, '\xff'))};
    std::string wire;
    for (auto &m : msgs) encode_message(m, wire);
    FrameDecoder d;
    std::vector<Message> got;
    for (char c : wire) {
        d.feed(&c, 1);
        Message m;
        Status s;
        while ((s = d.next(m)) == Status::kMessage) got.push_back(m);
        ASSERT_EQ(s, Status::kNeedMore);
    }
    ASSERT_EQ(got.size(), msgs.size());
    for (size_t i = 0; i < msgs.size(); ++i) expect_same(got[i], msgs[i]);
    EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoder, ManyMessagesInOneFeed) {
    std::vector<Message> msgs;
    std::string wire;
    for (uint32_t i = 0; i < 500; ++i) {
        msgs.push_back(make_msg(1000 + i, "{\"i\":" + std::to_string(i) + "}",
                                std::string(i % 7, char('a' + i % 26))));
        encode_message(msgs.back(), wire);
    }
    FrameDecoder d;
    d.feed(wire.data(), wire.size());
    Message m;
    size_t n = 0;
    while (d.next(m) == Status::kMessage) {
        ASSERT_LT(n, msgs.size());
        expect_same(m, msgs[n]);
        ++n;
    }
    EXPECT_EQ(n, msgs.size());
    EXPECT_EQ(d.buffered(), 0u);
    EXPECT_TRUE(d.error().empty());
}

TEST(FrameDecoder, SplitAcrossFeedsWithCompaction) {
    // One and a half messages, take one, then the rest: exercises moving the
    // live tail to the front of the buffer while reserving for the frame.
    Message a = make_msg(1, R"({"first":true})", std::string(100, 'A'));
    Message b = make_msg(2, R"({"second":true})", std::string(5000, 'B'));
    std::string wire = encode_message(a) + encode_message(b);
    size_t cut = a.wire_size() + 40;  // header of b and 8 bytes of its body
    FrameDecoder d;
    d.feed(wire.data(), cut);
    Message m;
    ASSERT_EQ(d.next(m), Status::kMessage);
    expect_same(m, a);
    EXPECT_EQ(d.buffered(), 40u);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    EXPECT_EQ(d.buffered(), 40u);
    d.feed(wire.data() + cut, wire.size() - cut);
    ASSERT_EQ(d.next(m), Status::kMessage);
    expect_same(m, b);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
}

TEST(FrameDecoder, PrepareCommitPath) {
    std::vector<Message> msgs;
    std::string wire;
    for (uint32_t i = 0; i < 50; ++i) {
        msgs.push_back(make_msg(i, "[" + std::to_string(i) + "]", std::string(i * 37, 'z')));
        encode_message(msgs.back(), wire);
    }
    FrameDecoder d;
    std::vector<Message> got;
    size_t pos = 0, step = 1;
    while (pos < wire.size()) {
        // Simulate read(): ask for room for a fixed-size read, get fewer bytes.
        const size_t want = 4096;
        char *p = d.prepare(want);
        ASSERT_NE(p, nullptr);
        std::memset(p, 0xCC, want);  // the whole window must be writable
        size_t n = std::min({step, want, wire.size() - pos});
        std::memcpy(p, wire.data() + pos, n);
        d.commit(n);
        pos += n;
        step = step * 3 % 1001 + 1;
        Message m;
        Status s;
        while ((s = d.next(m)) == Status::kMessage) got.push_back(m);
        ASSERT_EQ(s, Status::kNeedMore);
    }
    ASSERT_EQ(got.size(), msgs.size());
    for (size_t i = 0; i < msgs.size(); ++i) expect_same(got[i], msgs[i]);
    EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoder, PrepareZeroAndFeedNothing) {
    FrameDecoder d;
    EXPECT_NE(d.prepare(0), nullptr);
    d.commit(0);
    d.feed(nullptr, 0);
    d.feed("", 0);
    EXPECT_EQ(d.buffered(), 0u);
    Message m;
    EXPECT_EQ(d.next(m), Status::kNeedMore);
}

TEST(FrameDecoder, LimitsAccessors) {
    Limits l;
    l.max_message_size = 4096;
    l.max_json_size = 1024;
    l.max_json_depth = 8;
    FrameDecoder d(l);
    EXPECT_EQ(d.limits().max_message_size, 4096u);
    EXPECT_EQ(d.limits().max_json_size, 1024u);
    EXPECT_EQ(d.limits().max_json_depth, 8);
    Limits l2;
    l2.max_message_size = 64;
    d.set_limits(l2);
    EXPECT_EQ(d.limits().max_message_size, 64u);
    // The new limit applies to the next frame.
    std::string wire = encode_message(make_msg(1, std::string(40, ' ')));
    d.feed(wire.data(), wire.size());
    Message m;
    EXPECT_EQ(d.next(m), Status::kError);
    EXPECT_NE(d.error().find("exceeds"), std::string::npos);
}

// ---------------------------------------------------------------------------
// FrameDecoder: truncation and hostile input.

TEST(FrameDecoder, TruncatedFramesStayNeedMore) {
    Message msg = make_msg(kHandleCall, R"({"k":"v"})", "binary");
    std::string wire = encode_message(msg);
    for (size_t len = 0; len < wire.size(); ++len) {
        FrameDecoder d;
        d.feed(wire.data(), len);
        Message m;
        for (int i = 0; i < 3; ++i) ASSERT_EQ(d.next(m), Status::kNeedMore) << "len " << len;
        EXPECT_EQ(d.buffered(), len);
        EXPECT_TRUE(d.error().empty());
        // Completing the frame then yields it.
        d.feed(wire.data() + len, wire.size() - len);
        ASSERT_EQ(d.next(m), Status::kMessage) << "len " << len;
        expect_same(m, msg);
    }
}

TEST(FrameDecoder, BadMagicDetectedWithTwoBytes) {
    FrameDecoder d;
    Message m;
    d.feed("G", 1);
    EXPECT_EQ(d.next(m), Status::kNeedMore);  // one byte cannot tell yet
    d.feed("E", 1);
    ASSERT_EQ(d.next(m), Status::kError);
    EXPECT_NE(d.error().find("magic"), std::string::npos);
    EXPECT_EQ(d.error_context(), "47 45");
}

TEST(FrameDecoder, BadMagicSecondByte) {
    FrameDecoder d;
    Message m;
    d.feed("S", 1);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    d.feed("Q", 1);
    EXPECT_EQ(d.next(m), Status::kError);
    EXPECT_EQ(d.error_context(), "53 51");
}

TEST(FrameDecoder, GoodMagicWithFewBytesWaits) {
    FrameDecoder d;
    Message m;
    d.feed("SP", 2);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    d.feed("\x01", 1);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
}

TEST(FrameDecoder, BadMagicInFullHeader) {
    std::string wire = encode_message(make_msg(1, "{}"));
    wire[0] = 'X';
    FrameDecoder d;
    d.feed(wire.data(), wire.size());
    Message m;
    EXPECT_EQ(d.next(m), Status::kError);
    EXPECT_NE(d.error().find("magic"), std::string::npos);
    EXPECT_EQ(d.error_context().substr(0, 11), "58 50 01 00");
}

TEST(FrameDecoder, BadMagicAfterAGoodMessage) {
    std::string wire = encode_message(make_msg(1, "{}")) + "HTTP/1.1 200 OK\r\n";
    FrameDecoder d;
    d.feed(wire.data(), wire.size());
    Message m;
    EXPECT_EQ(d.next(m), Status::kMessage);
    EXPECT_EQ(d.next(m), Status::kError);
    EXPECT_EQ(d.error_context(), hex_dump("HTTP/1.1 200 OK\r\n"));
}

TEST(FrameDecoder, UnsupportedVersion) {
    for (int v : {0, 2, 255}) {
        Message msg = make_msg(1, "{}");
        msg.h.version = uint8_t(v);
        std::string wire = encode_message(msg);
        FrameDecoder d;
        Message m;
        // Not reported before the whole header is in.
        d.feed(wire.data(), kHeaderSize - 1);
        EXPECT_EQ(d.next(m), Status::kNeedMore);
        d.feed(wire.data() + kHeaderSize - 1, wire.size() - (kHeaderSize - 1));
        ASSERT_EQ(d.next(m), Status::kError) << v;
        EXPECT_EQ(d.error(), "unsupported protocol version " + std::to_string(v));
    }
}

TEST(FrameDecoder, JsonLenOverMaxJsonSize) {
    Limits lim;
    lim.max_message_size = 1 << 20;
    lim.max_json_size = 1000;
    FrameDecoder d(lim);
    std::string hdr = announce(1001, 0);
    d.feed(hdr.data(), hdr.size());
    Message m;
    ASSERT_EQ(d.next(m), Status::kError);
    EXPECT_NE(d.error().find("JSON part of 1001 bytes exceeds the limit of 1000"),
              std::string::npos);
}

TEST(FrameDecoder, JsonLenExactlyAtMaxJsonSizeIsAccepted) {
    Limits lim;
    lim.max_message_size = 1 << 20;
    lim.max_json_size = 1000;
    FrameDecoder d(lim);
    Message msg = make_msg(1, std::string(1000, ' '), "b");
    std::string wire = encode_message(msg);
    d.feed(wire.data(), wire.size());
    Message m;
    ASSERT_EQ(d.next(m), Status::kMessage) << d.error();
    expect_same(m, msg);
}

// A header that announces far more than the limit must be rejected from the
// header alone, without allocating room for the announced body.
void expect_rejected_without_allocation(uint32_t json_len, uint32_t bin_len,
                                        const char *why) {
    Limits lim;
    lim.max_message_size = 1 << 20;  // 1 MiB
    lim.max_json_size = 1 << 19;
    FrameDecoder d(lim);
    std::string hdr = announce(json_len, bin_len);
    d.feed(hdr.data(), hdr.size());
    ASSERT_EQ(d.buffered(), kHeaderSize);

    Message m;
    HeapProbe probe;
    long long before = HeapProbe::live_bytes();
    probe.arm();
    Status s = d.next(m);
    size_t largest = probe.disarm();
    long long after = HeapProbe::live_bytes();

    ASSERT_EQ(s, Status::kError);
    EXPECT_NE(d.error().find(why), std::string::npos) << d.error();
    EXPECT_EQ(d.buffered(), kHeaderSize);  // nothing consumed, nothing grown
    EXPECT_TRUE(m.json.empty());
    EXPECT_TRUE(m.bin.empty());
    if (HeapProbe::can_measure_largest()) {
        EXPECT_LT(largest, 4096u);
    }
    if (HeapProbe::can_measure_live()) {
        EXPECT_LT(after - before, 4096);
    }
    // Asking again changes nothing.
    EXPECT_EQ(d.next(m), Status::kError);
    EXPECT_EQ(d.buffered(), kHeaderSize);
}

TEST(FrameDecoder, HugeBinLenRejectedWithoutAllocating) {
    expect_rejected_without_allocation(0, 0xFFFFFFFFu, "message of 4294967327 bytes exceeds");
}

TEST(FrameDecoder, HugeJsonLenRejectedWithoutAllocating) {
    expect_rejected_without_allocation(0xFFFFFFFFu, 0, "JSON part of 4294967295 bytes exceeds");
}

TEST(FrameDecoder, BothLengthsHugeRejectedWithoutAllocating) {
    // json_len within its own limit, the sum far over: no 32-bit wrap-around.
    expect_rejected_without_allocation(1 << 19, 0xFFFFFFFFu, "exceeds");
}

TEST(FrameDecoder, OneByteOverMessageLimitRejectedWithoutAllocating) {
    expect_rejected_without_allocation(100, (1u << 20) - 32 - 100 + 1,
                                       "message of 1048577 bytes exceeds the limit of 1048576");
}

TEST(FrameDecoder, ExactlyAtMessageLimitIsAccepted) {
    Limits lim;
    lim.max_message_size = 1 << 20;
    lim.max_json_size = 1 << 20;
    Message msg = make_msg(1, R"({"pad":")" + std::string(1000, 'p') + "\"}");
    msg.bin.assign(size_t(lim.max_message_size) - kHeaderSize - msg.json.size(), '\x5a');
    ASSERT_EQ(msg.wire_size(), lim.max_message_size);
    std::string wire = encode_message(msg);
    FrameDecoder d(lim);
    Message m;
    // Fed in a few pieces so the reservation path runs too.
    size_t third = wire.size() / 3;
    d.feed(wire.data(), third);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    d.feed(wire.data() + third, third);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    d.feed(wire.data() + 2 * third, wire.size() - 2 * third);
    ASSERT_EQ(d.next(m), Status::kMessage) << d.error();
    expect_same(m, msg);
    EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoder, ErrorsAreSticky) {
    FrameDecoder d;
    d.feed("XX", 2);
    Message m;
    ASSERT_EQ(d.next(m), Status::kError);
    std::string first_error = d.error();
    std::string first_context = d.error_context();
    // A perfectly good frame afterwards does not resynchronise the stream.
    std::string wire = encode_message(make_msg(1, "{}"));
    d.feed(wire.data(), wire.size());
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(d.next(m), Status::kError);
        EXPECT_EQ(d.error(), first_error);
        EXPECT_EQ(d.error_context(), first_context);
    }
    EXPECT_TRUE(m.json.empty());
}

TEST(FrameDecoder, ErrorContextShowsHexOfTheOffendingFrame) {
    Limits lim;
    lim.max_message_size = 1024;
    FrameDecoder d(lim);
    std::string good = encode_message(make_msg(1, "{}"));
    std::string bad = announce(0, 5000) + std::string(100, '\x7f');
    std::string wire = good + bad;
    d.feed(wire.data(), wire.size());
    Message m;
    ASSERT_EQ(d.next(m), Status::kMessage);
    ASSERT_EQ(d.next(m), Status::kError);
    // The context starts at the offending frame, not the good one before it,
    // and is bounded to the first 64 bytes.
    std::string ctx = d.error_context();
    EXPECT_EQ(ctx, hex_dump(bad.substr(0, 64)));
    EXPECT_EQ(ctx.substr(0, 12), "53 50 01 00 ");
    EXPECT_NE(ctx.find("00 00 13 88"), std::string::npos);  // bin_len 5000
    EXPECT_EQ(ctx.size(), 64u * 3 - 1);
    EXPECT_EQ(ctx.find("..."), std::string::npos);
}

TEST(FrameDecoder, NoErrorContextBeforeAnError) {
    FrameDecoder d;
    EXPECT_EQ(d.error_context(), "");
    EXPECT_EQ(d.error(), "");
}

TEST(HexDump, Format) {
    EXPECT_EQ(hex_dump(""), "");
    EXPECT_EQ(hex_dump(std::string("\x00\x01\xab\xff", 4)), "00 01 ab ff");
    EXPECT_EQ(hex_dump("abcdef", 3), "61 62 63 ...");
    EXPECT_EQ(hex_dump("abc", 3), "61 62 63");
    EXPECT_EQ(hex_dump("abc", 0), " ...");
    std::string big(100, '\x10');
    std::string out = hex_dump(big);
    EXPECT_EQ(out.size(), 64u * 3 - 1 + 4);
    EXPECT_EQ(out.substr(out.size() - 4), " ...");
}

TEST(FrameDecoder, BufferReleasedAfterLargeMessage) {
    if (!HeapProbe::can_measure_live()) GTEST_SKIP() << "no heap statistics in this build";
    Limits lim;
    lim.max_message_size = 16 << 20;
    lim.max_json_size = 1 << 20;
    Message msg = make_msg(5, R"({"big":true})", std::string(8 << 20, '\x42'));
    std::string wire = encode_message(msg);
    msg.bin = std::string();  // keep only the wire copy around

    FrameDecoder d(lim);
    long long baseline = HeapProbe::live_bytes();
    {
        // Fed in chunks, like a socket reader.
        for (size_t pos = 0; pos < wire.size(); pos += 65536)
            d.feed(wire.data() + pos, std::min<size_t>(65536, wire.size() - pos));
        EXPECT_GT(HeapProbe::live_bytes() - baseline, 8ll << 20);
        Message m;
        ASSERT_EQ(d.next(m), Status::kMessage);
        EXPECT_EQ(m.bin.size(), size_t(8) << 20);
    }
    // The message is gone; the decoder must not keep an 8 MiB buffer.
    EXPECT_LT(HeapProbe::live_bytes() - baseline, 1ll << 20);
    EXPECT_EQ(d.buffered(), 0u);

    // And it still works afterwards.
    std::string small = encode_message(make_msg(6, "[]"));
    d.feed(small.data(), small.size());
    Message m;
    ASSERT_EQ(d.next(m), Status::kMessage);
    EXPECT_EQ(m.h.handle, 6u);
}

TEST(FrameDecoder, AHeaderAloneReservesNothing) {
    // A header within the limits announcing 127 MiB: nothing is reserved for
    // the body until its bytes arrive (issue: a header alone made the
    // controller allocate and zero the announced size).
    if (!HeapProbe::can_measure_largest()) GTEST_SKIP() << "needs ASan allocation hooks";
    Limits lim;
    FrameDecoder d(lim);
    std::string hdr = announce(10, 127u << 20);
    HeapProbe probe;
    probe.arm();
    d.feed(hdr.data(), hdr.size());
    Message m;
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    size_t largest = probe.disarm();
    EXPECT_LE(largest, 4096u);
}

TEST(FrameDecoder, MemoryGrowsOnlyWithTheBytesThatArrived) {
    // Read like a socket reader (read_window/prepare/commit) a frame that
    // announces 127 MiB but trickles in: the buffer stays within a small
    // multiple of what arrived, whatever the header says.
    FrameDecoder d;
    std::string hdr = announce(10, 127u << 20);
    d.feed(hdr.data(), hdr.size());
    Message m;
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    EXPECT_LE(d.capacity(), 64u * 1024);
    size_t arrived = hdr.size();
    for (int i = 0; i < 40; ++i) {
        size_t window = d.read_window(256 * 1024);
        char *p = d.prepare(window);
        std::memset(p, 'x', window);
        d.commit(window);
        arrived += window;
        EXPECT_EQ(d.next(m), Status::kNeedMore);
        EXPECT_LE(d.capacity(), 2 * (2 * arrived + 64 * 1024)) << "after " << arrived << " bytes";
    }
    EXPECT_GT(arrived, size_t(8) << 20);
}

TEST(FrameDecoder, AnEmptyDecoderHoldsNoBuffer) {
    // An idle stream keeps no read buffer (memory per direct child).
    FrameDecoder d;
    std::string wire = encode_message(make_msg(7, R"({"a":1})", std::string(300000, 'b')));
    d.feed(wire.data(), wire.size() - 1);
    EXPECT_GT(d.capacity(), 0u);
    d.feed(wire.data() + wire.size() - 1, 1);
    Message m;
    ASSERT_EQ(d.next(m), Status::kMessage);
    EXPECT_EQ(d.capacity(), 0u);
    EXPECT_EQ(d.next(m), Status::kNeedMore);
    EXPECT_EQ(d.capacity(), 0u);
}

}  // namespace
}  // namespace spore
