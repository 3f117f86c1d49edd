// libFuzzer target for the wire decoder: arbitrary bytes are a peer's stream.
//
// Build (see tests/fuzz/make_corpus.py for the seed corpus):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
//       src/core/frame.cpp src/core/json.cpp tests/fuzz/fuzz_decoder.cpp -lcjson -o fuzz_decoder
//   cp -r tests/fuzz/corpus /tmp/corpus-copy   # so the repo corpus does not grow
//   UBSAN_OPTIONS=halt_on_error=1 ./fuzz_decoder -max_len=65536 -malloc_limit_mb=16 /tmp/corpus-copy
// (halt_on_error makes undefined behaviour fatal instead of a printed warning.)
//
// The input is the byte stream itself (so corpus files are plain frames). A
// PRNG seeded from a hash of the input picks the limits and how the stream is
// cut into reads. Each input is decoded three times - in one feed, one byte
// at a time, and in random chunks through feed() or prepare()/commit() - and
// the three runs must agree. Every decoded message is checked against the
// bytes it came from and its JSON part goes through json_parse (depth 64).
// Under ASan, every allocation made by the decoder is checked against the
// limits: a hostile length must never buy a large allocation.
#include "core/frame.h"
#include "core/json.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SPORE_FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPORE_FUZZ_ASAN 1
#endif
#endif

#ifdef SPORE_FUZZ_ASAN
extern "C" int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t), void (*free_hook)(const volatile void *));
#endif

namespace {

using spore::FrameDecoder;
using spore::Message;
using Status = FrameDecoder::Status;

[[noreturn]] void fail(const char *what) {
    std::fprintf(stderr, "fuzz_decoder invariant violated: %s\n", what);
    std::abort();
}
#define CHECK(cond)                        \
    do {                                   \
        if (!(cond)) fail(#cond);          \
    } while (0)

// Largest single allocation made while armed (ASan builds only).
std::atomic<bool> g_armed{false};
std::atomic<size_t> g_largest{0};

#ifdef SPORE_FUZZ_ASAN
void on_malloc(const volatile void *, size_t size) {
    if (!g_armed.load(std::memory_order_relaxed)) return;
    size_t cur = g_largest.load(std::memory_order_relaxed);
    while (size > cur && !g_largest.compare_exchange_weak(cur, size)) {
    }
}
void on_free(const volatile void *) {}
#endif

struct Rng {
    uint64_t s;
    uint64_t next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
};

uint64_t fnv1a(const uint8_t *data, size_t size) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
    return h | 1;  // xorshift state must not be zero
}

struct Outcome {
    std::vector<Message> msgs;
    std::string error;  // empty when the stream ended cleanly (kNeedMore)
};

// Takes every complete message, checking each against the stream it came
// from. Returns false once the decoder reports an error.
bool drain(FrameDecoder &d, std::string_view stream, size_t &consumed, Outcome &out) {
    const spore::Limits &lim = d.limits();
    for (;;) {
        Message m;
        Status s = d.next(m);
        if (s == Status::kNeedMore) {
            CHECK(d.error().empty());
            return true;
        }
        if (s == Status::kError) {
            CHECK(!d.error().empty());
            (void)d.error_context();
            CHECK(d.next(m) == Status::kError);  // sticky
            out.error = d.error();
            return false;
        }
        // A message: within the limits and byte-identical to its frame.
        CHECK(m.h.magic == spore::kMagic);
        CHECK(m.h.version == spore::kProtocolVersion);
        CHECK(m.json.size() == m.h.json_len);
        CHECK(m.bin.size() == m.h.bin_len);
        CHECK(m.json.size() <= lim.max_json_size);
        CHECK(m.wire_size() <= lim.max_message_size);
        CHECK(consumed + m.wire_size() <= stream.size());
        std::string wire = spore::encode_message(m);
        CHECK(std::string_view(wire) == stream.substr(consumed, wire.size()));
        consumed += wire.size();
        out.msgs.push_back(std::move(m));
    }
}

void check_json(const std::string &text, int max_depth) {
    std::string err;
    spore::Json j = spore::json_parse(text, max_depth, &err);
    if (!j) {
        CHECK(!err.empty());
        return;
    }
    CHECK(spore::json_depth(text, max_depth) <= max_depth);
    // The typed getters must be safe on whatever arrived.
    (void)spore::json_str(j.get(), "fn", "x");
    (void)spore::json_int(j.get(), "id", 0);
    (void)spore::json_int(j.get(), "reply_to", -1);
    (void)spore::json_bool(j.get(), "ok", false);
    // What we print, we can read back.
    std::string printed = spore::json_print(j.get());
    spore::Json again = spore::json_parse(printed, max_depth, &err);
    CHECK(again);
    CHECK(spore::json_print(again.get()) == printed);
}

enum class Mode { kWhole, kByteByByte, kRandomChunks };

Outcome run(std::string_view stream, const spore::Limits &lim, Mode mode, Rng rng) {
    FrameDecoder d(lim);
    Outcome out;
    size_t pos = 0, consumed = 0;
    while (pos < stream.size()) {
        size_t n;
        switch (mode) {
        case Mode::kWhole: n = stream.size(); break;
        case Mode::kByteByByte: n = 1; break;
        default: {
            size_t r = rng.below(10);
            size_t left = stream.size() - pos;
            n = r < 6 ? 1 + rng.below(16) : r < 9 ? 1 + rng.below(512) : 1 + rng.below(left);
            if (n > left) n = left;
        }
        }
        if (mode == Mode::kRandomChunks && rng.below(2)) {
            // The socket-reader path: a window at least as big as the read.
            size_t want = n + rng.below(4096);
            char *p = d.prepare(want);
            CHECK(p != nullptr);
            std::memcpy(p, stream.data() + pos, n);
            d.commit(n);
        } else {
            d.feed(stream.data() + pos, n);
        }
        pos += n;
        CHECK(d.buffered() <= pos - consumed);
        if (!drain(d, stream, consumed, out)) return out;
        CHECK(d.buffered() == pos - consumed);
    }
    drain(d, stream, consumed, out);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
#ifdef SPORE_FUZZ_ASAN
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
#endif
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Rng rng{fnv1a(data, size)};
    spore::Limits lim;
    switch (rng.below(4)) {
    case 0: lim.max_message_size = 64; lim.max_json_size = 16; break;
    case 1: lim.max_message_size = 4096; lim.max_json_size = 1024; break;
    default: lim.max_message_size = 1 << 20; lim.max_json_size = 256 << 10; break;
    }
    lim.max_json_depth = 64;
    std::string_view stream(reinterpret_cast<const char *>(data), size);

    // Any single allocation the decoder makes is bounded by the bytes
    // actually fed and the prepare() window (the buffer at most doubles) -
    // never by a peer's header or the message size limit.
    const size_t bound = 2 * (size + 4096) + 4096;
    g_largest = 0;
    g_armed = true;
    Outcome whole = run(stream, lim, Mode::kWhole, rng);
    Outcome bytes = run(stream, lim, Mode::kByteByByte, rng);
    Outcome chunks = run(stream, lim, Mode::kRandomChunks, Rng{rng.next() | 1});
    g_armed = false;
#ifdef SPORE_FUZZ_ASAN
    if (g_largest.load() > bound) {
        std::fprintf(stderr, "allocation of %zu bytes exceeds bound %zu\n", g_largest.load(), bound);
        std::abort();
    }
#else
    (void)bound;
#endif

    // How the stream was cut must not change what was decoded.
    for (const Outcome *o : {&bytes, &chunks}) {
        CHECK(o->error == whole.error);
        CHECK(o->msgs.size() == whole.msgs.size());
        for (size_t i = 0; i < whole.msgs.size(); ++i) {
            CHECK(o->msgs[i].json == whole.msgs[i].json);
            CHECK(o->msgs[i].bin == whole.msgs[i].bin);
            uint8_t a[spore::kHeaderSize], b[spore::kHeaderSize];
            spore::encode_header(o->msgs[i].h, a);
            spore::encode_header(whole.msgs[i].h, b);
            CHECK(std::memcmp(a, b, spore::kHeaderSize) == 0);
        }
    }
    for (const Message &m : whole.msgs) check_json(m.json, lim.max_json_depth);
    return 0;
}
