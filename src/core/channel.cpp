#include "core/channel.h"

#include <cerrno>
#include <cmath>

#include "core/json.h"
#include "core/message_router.h"

namespace spore {

namespace {

// Sleeps on cv until pred, the deadline, or poll_ms; true when pred holds.
template <typename Pred>
bool wait_slice(std::condition_variable &cv, std::unique_lock<std::mutex> &lk, Clock::time_point deadline,
                int poll_ms, Pred pred) {
    auto until = std::min(deadline, Clock::now() + std::chrono::milliseconds(poll_ms));
    return cv.wait_until(lk, until, pred);
}

}  // namespace

// ---------------------------------------------------------------- window

int ChannelWindow::acquire(uint64_t n, Clock::time_point deadline, ErrorInfo &err, int poll_ms) {
    std::unique_lock<std::mutex> lk(mu_);
    // A chunk larger than the whole window still goes, once nothing else is
    // in flight.
    auto room = [&] { return failed_ || in_flight_ == 0 || in_flight_ + n <= window_; };
    if (!room()) {
        if (!wait_slice(cv_, lk, deadline, poll_ms, room)) return SPORE_ETIMEDOUT;
    }
    if (failed_) {
        err = *failed_;
        return err.code ? err.code : SPORE_EINTERNAL;
    }
    in_flight_ += n;
    return SPORE_OK;
}

void ChannelWindow::credit(uint64_t n) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        in_flight_ = n >= in_flight_ ? 0 : in_flight_ - n;
    }
    cv_.notify_all();
}

void ChannelWindow::fail(const ErrorInfo &e) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!failed_) failed_ = e;
    }
    cv_.notify_all();
}

bool ChannelWindow::failed(ErrorInfo *out) const {
    std::lock_guard<std::mutex> lk(mu_);
    if (failed_ && out) *out = *failed_;
    return failed_.has_value();
}

uint64_t ChannelWindow::room() const {
    std::lock_guard<std::mutex> lk(mu_);
    if (failed_) return 0;
    return in_flight_ >= window_ ? 0 : window_ - in_flight_;
}

bool ChannelWindow::try_acquire(uint64_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    if (failed_ || (in_flight_ != 0 && in_flight_ + n > window_)) return false;
    in_flight_ += n;
    return true;
}

uint64_t ChannelWindow::in_flight() const {
    std::lock_guard<std::mutex> lk(mu_);
    return in_flight_;
}

// ----------------------------------------------------------------- inbox

bool ChannelInbox::push(ChannelChunk &&c) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (failed_) return false;
        if (queued_ + c.data.size() > limit_) {
            failed_ = ErrorInfo{SPORE_EPROTO,
                                "the sender overran the channel window (" + std::to_string(queued_ + c.data.size()) +
                                    " bytes waiting, at most " + std::to_string(limit_) + ")",
                                "", "", ""};
            q_.clear();
            queued_ = 0;
        } else {
            queued_ += c.data.size();
            q_.push_back(std::move(c));
        }
    }
    cv_.notify_all();
    return true;
}

int ChannelInbox::pop(ChannelChunk &out, Clock::time_point deadline, ErrorInfo &err, int poll_ms) {
    std::unique_lock<std::mutex> lk(mu_);
    auto ready = [&] { return failed_ || !q_.empty(); };
    if (!ready()) {
        if (!wait_slice(cv_, lk, deadline, poll_ms, ready)) return SPORE_ETIMEDOUT;
    }
    // Data that arrived before a failure is still handed out, then the error.
    if (!q_.empty()) {
        out = std::move(q_.front());
        q_.pop_front();
        queued_ -= out.data.size();
        return SPORE_OK;
    }
    err = *failed_;
    return err.code ? err.code : SPORE_EINTERNAL;
}

void ChannelInbox::fail(const ErrorInfo &e) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!failed_) failed_ = e;
    }
    cv_.notify_all();
}

bool ChannelInbox::ready() const {
    std::lock_guard<std::mutex> lk(mu_);
    return !q_.empty() || failed_.has_value();
}

uint64_t ChannelInbox::queued() const {
    std::lock_guard<std::mutex> lk(mu_);
    return queued_;
}

// ----------------------------------------------------------------- table

bool ChannelTable::add(uint32_t peer, uint32_t ch, ChannelEndpoint ep) {
    std::lock_guard<std::mutex> lk(mu_);
    ep.peer = peer;
    return map_.emplace(std::make_pair(peer, ch), std::move(ep)).second;
}

void ChannelTable::remove(uint32_t peer, uint32_t ch) {
    std::lock_guard<std::mutex> lk(mu_);
    map_.erase(std::make_pair(peer, ch));
}

std::optional<ChannelEndpoint> ChannelTable::find(uint32_t peer, uint32_t ch) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = map_.find(std::make_pair(peer, ch));
    if (it == map_.end()) return std::nullopt;
    return it->second;
}

void ChannelTable::fail_peer(uint32_t peer, const ErrorInfo &e) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = map_.lower_bound(std::make_pair(peer, 0u)); it != map_.end() && it->first.first == peer; ++it)
        it->second.fail(e);
}

void ChannelTable::fail_all(const ErrorInfo &e) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &kv : map_) kv.second.fail(e);
}

size_t ChannelTable::size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return map_.size();
}

bool ChannelTable::deliver_data(Message &&m) {
    uint32_t src = m.h.src_id, ch = 0;
    ChannelChunk c;
    if (!parse_chan_data(std::move(m), ch, c)) return false;
    auto ep = find(src, ch);
    if (!ep) return true;  // finished or abandoned: late data is dropped
    if (ep->inbox) ep->inbox->push(std::move(c));
    else if (ep->window && c.abort) ep->window->fail(*c.abort);  // the receiver gave up
    if (ep->notify) ep->notify();
    return true;
}

void ChannelTable::deliver_ack(const Message &m) {
    uint32_t ch = 0;
    uint64_t n = 0;
    if (!parse_chan_ack(m, ch, n)) return;
    auto ep = find(m.h.src_id, ch);
    if (ep && ep->window) ep->window->credit(n);
    if (ep && ep->notify) ep->notify();
}

// -------------------------------------------------------------- messages

Message chan_data_message(uint32_t dst, uint32_t ch, std::string data) {
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleChanData;
    m.json = "{\"ch\":" + std::to_string(ch) + "}";
    m.bin = std::move(data);
    return m;
}

Message chan_eof_message(uint32_t dst, uint32_t ch, const std::string &meta_json_members) {
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleChanData;
    m.json = "{\"ch\":" + std::to_string(ch) + ",\"eof\":true" +
             (meta_json_members.empty() ? "" : "," + meta_json_members) + "}";
    return m;
}

Message chan_abort_message(uint32_t dst, uint32_t ch, const ErrorInfo &why) {
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleChanData;
    m.json = "{\"ch\":" + std::to_string(ch) + ",\"abort\":" + MessageRouter::error_json(why) + "}";
    return m;
}

Message chan_control_message(uint32_t dst, uint32_t ch, const std::string &json_members) {
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleChanData;
    m.json = "{\"ch\":" + std::to_string(ch) + (json_members.empty() ? "" : "," + json_members) + "}";
    return m;
}

Message chan_ack_message(uint32_t dst, uint32_t ch, uint64_t n) {
    Message m;
    m.h.dst_id = dst;
    m.h.handle = kHandleChanAck;
    m.json = "{\"ch\":" + std::to_string(ch) + ",\"n\":" + std::to_string(n) + "}";
    return m;
}

namespace {
bool channel_number(const cJSON *obj, uint32_t &ch) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "ch");
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 4294967295.0 ||
        v->valuedouble != std::floor(v->valuedouble))
        return false;
    ch = uint32_t(v->valuedouble);
    return true;
}
}  // namespace

bool parse_chan_data(Message &&m, uint32_t &ch, ChannelChunk &out) {
    Json j = json_parse(m.json, 8, nullptr);
    if (!j || !cJSON_IsObject(j.get()) || !channel_number(j.get(), ch)) return false;
    out = ChannelChunk{};
    const cJSON *abort = cJSON_GetObjectItemCaseSensitive(j.get(), "abort");
    if (abort) {
        if (!cJSON_IsObject(abort)) return false;
        out.abort = MessageRouter::parse_error_json(json_print(abort));
        if (out.abort->code == SPORE_OK) out.abort->code = SPORE_EREMOTE;
        out.meta = m.json;
        return true;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j.get(), "eof"))) out.eof = true;
    if (m.bin.empty()) out.meta = m.json;
    out.data = std::move(m.bin);
    return true;
}

bool parse_chan_ack(const Message &m, uint32_t &ch, uint64_t &n) {
    Json j = json_parse(m.json, 4, nullptr);
    if (!j || !cJSON_IsObject(j.get()) || !channel_number(j.get(), ch)) return false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j.get(), "n");
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15) return false;
    n = uint64_t(v->valuedouble);
    return true;
}

// ----------------------------------------------------------------- errors

int file_error_code(int err) noexcept {
    switch (err) {
    case ENOENT:
    case ENOTDIR: return SPORE_ENOENT;
    case EACCES:
    case EPERM:
    case EROFS: return SPORE_EACCES;
    case ENOSPC:
    case EDQUOT: return SPORE_ENOSPC;
    default: return SPORE_EREMOTE;
    }
}

const char *file_error_type(int err) noexcept {
    switch (err) {
    case ENOENT: return "FileNotFoundError";
    case EEXIST: return "FileExistsError";
    case EACCES:
    case EPERM: return "PermissionError";
    case ENOTDIR: return "NotADirectoryError";
    case EISDIR: return "IsADirectoryError";
    default: return "OSError";
    }
}

}  // namespace spore
