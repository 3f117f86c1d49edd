#include "core/keepalive.h"

#include <time.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/stream.h"
#include "spore/spore.h"

namespace spore {

namespace {

int int_option(const cJSON *options, const char *key, int fallback, int min, int max) {
    const cJSON *v = options ? cJSON_GetObjectItemCaseSensitive(options, key) : nullptr;
    if (!v) return fallback;
    if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max || v->valuedouble != double(int(v->valuedouble)))
        throw Error(SPORE_EINVAL, "option '" + std::string(key) + "' must be an integer from " + std::to_string(min) +
                                      " to " + std::to_string(max));
    return int(v->valuedouble);
}

}  // namespace

KeepaliveSettings keepalive_from_options(const cJSON *options, KeepaliveSettings inherited) {
    KeepaliveSettings k;
    k.interval_ms = int_option(options, "liveness_interval", inherited.interval_ms, 0, 86400000);
    k.count = int_option(options, "liveness_count", inherited.count, 1, 1000);
    return k;
}

int64_t monotonic_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Keepalive::Keepalive(Loop &loop, PingFn ping, DeadFn dead) : loop_(loop), ping_(std::move(ping)), dead_(std::move(dead)) {}

void Keepalive::watch(const std::shared_ptr<Stream> &s, KeepaliveSettings k) {
    if (!k.on()) return;
    watched_[s.get()] = Watched{s, k, monotonic_ms(), 0, s->bytes_out(), 0};
    // Ticks a few times per interval, so a death is noticed within about
    // interval * count + interval / 4 whatever the phase.
    int tick = std::clamp(k.interval_ms / 4, 20, 1000);
    if (!timer_ || tick < tick_ms_) {
        tick_ms_ = tick;
        arm();
    }
}

void Keepalive::forget(const Stream *s) {
    watched_.erase(s);
    stop_if_idle();
}

void Keepalive::stop_if_idle() {
    if (!watched_.empty()) return;
    timer_.reset();
    tick_ms_ = 0;
}

void Keepalive::arm() {
    timer_ = std::make_unique<Timer>(loop_, tick_ms_ / 1000.0, [this] { tick(); });
}

void Keepalive::tick() {
    int64_t now = monotonic_ms();
    std::vector<std::pair<std::shared_ptr<Stream>, std::string>> dead;
    for (auto it = watched_.begin(); it != watched_.end();) {
        auto s = it->second.stream.lock();
        if (!s || s->closed()) {
            it = watched_.erase(it);
            continue;
        }
        Watched &w = it->second;
        uint64_t out = s->bytes_out();
        if (out - w.bytes_out_seen > w.pings_since * kHeaderSize) w.since_ms = now;  // it took our bytes
        w.bytes_out_seen = out;
        w.pings_since = 0;
        int64_t idle = now - std::max(w.since_ms, s->last_read_ms());
        int64_t limit = int64_t(w.settings.interval_ms) * w.settings.count;
        if (idle >= limit) {
            dead.emplace_back(s, "unresponsive: " + s->name() + " sent nothing for " + std::to_string(idle) +
                                     " ms (keepalive every " + std::to_string(w.settings.interval_ms) + " ms, " +
                                     std::to_string(w.settings.count) + " missed)");
            it = watched_.erase(it);
            continue;
        }
        if (idle >= w.settings.interval_ms && now - w.last_ping_ms >= w.settings.interval_ms) {
            w.last_ping_ms = now;
            ping_(*s);
            ++w.pings_since;
        }
        ++it;
    }
    // Settled before the dead are reported: reporting closes their streams,
    // which comes back here through forget().
    if (watched_.empty()) stop_if_idle();
    else arm();
    for (auto &d : dead) dead_(*d.first, d.second);
}

}  // namespace spore
