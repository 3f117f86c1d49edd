// Liveness of the streams to a context's children (docs/architecture.md,
// "Liveness"). A child that sends nothing for one interval is pinged; one
// that stays silent for `count` intervals is declared dead, so a stopped or
// wedged hop is noticed even while no call waits on it. A child still
// taking bytes we write to it (other than pings) counts as alive: a ping
// waits behind a large message relayed to the child, however slowly it
// arrives from upstream. A stopped child takes bytes only until the socket
// buffers are full. Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/json.h"
#include "core/loop.h"

namespace spore {

class Stream;

struct KeepaliveSettings {
    int interval_ms = 10000;  // 0: off (a child is only lost when its stream closes)
    int count = 3;            // silent intervals before the child is declared dead
    bool on() const { return interval_ms > 0; }
};

// The settings in options ("liveness_interval" in ms, "liveness_count"), each
// falling back to `inherited`. Throws spore::Error(SPORE_EINVAL) for values
// out of range.
KeepaliveSettings keepalive_from_options(const cJSON *options, KeepaliveSettings inherited);

// Milliseconds on a coarse monotonic clock (cheap enough to read per read()).
int64_t monotonic_ms();

class Keepalive {
public:
    using PingFn = std::function<void(Stream &)>;
    using DeadFn = std::function<void(Stream &, const std::string &why)>;

    Keepalive(Loop &loop, PingFn ping, DeadFn dead);
    Keepalive(const Keepalive &) = delete;
    Keepalive &operator=(const Keepalive &) = delete;

    // Starts watching a child stream (nothing happens for settings that are off).
    void watch(const std::shared_ptr<Stream> &s, KeepaliveSettings k);
    void forget(const Stream *s);
    size_t watched() const { return watched_.size(); }

private:
    struct Watched {
        std::weak_ptr<Stream> stream;
        KeepaliveSettings settings;
        int64_t since_ms;         // when watching began, or the child last took bytes
        int64_t last_ping_ms = 0;
        uint64_t bytes_out_seen = 0;  // the stream's bytes_out() at the last tick
        uint64_t pings_since = 0;     // pings written since then
    };
    void tick();
    void arm();
    void stop_if_idle();

    Loop &loop_;
    PingFn ping_;
    DeadFn dead_;
    std::unordered_map<const Stream *, Watched> watched_;
    TimerPtr timer_;
    int tick_ms_ = 0;
};

}  // namespace spore
