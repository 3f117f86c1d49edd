#include "log_pump.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>

#include "failure.h"
#include "signals.h"

namespace spore::cli {

namespace {

const char *level_name(int level, char *buf, size_t n) {
    switch (level) {
        case SPORE_LOG_DEBUG: return "DEBUG";
        case SPORE_LOG_INFO: return "INFO";
        case SPORE_LOG_WARNING: return "WARNING";
        case SPORE_LOG_ERROR: return "ERROR";
        case 50: return "CRITICAL";
        default: std::snprintf(buf, n, "LEVEL%d", level); return buf;
    }
}

}  // namespace

std::string record_line(const spore_log_record *rec, std::string_view message) {
    char buf[32];
    return "[" + std::string(spore_log_record_context(rec)) + "] " +
           level_name(spore_log_record_level(rec), buf, sizeof buf) + " " + spore_log_record_logger(rec) + ": " +
           std::string(message);
}

LogPump::LogPump(spore_router *router, bool verbose)
    : router_(router), verbose_(verbose), wake_(make_pipe(O_CLOEXEC)), st_(std::make_shared<Shared>()) {
    log_fd_ = spore_router_log_fd(router_);
    if (log_fd_ < 0) lib_failure(kExitRuntime);
    reader_ = std::thread([this] { read_loop(); });
    writer_ = std::thread([st = st_] { write_loop(*st); });
}

LogPump::~LogPump() { stop(std::uncaught_exceptions() ? 1000 : -1); }

void LogPump::stop(int flush_ms) {
    if (reader_.joinable()) {
        char b = 0;
        ssize_t r = ::write(wake_.write_end.get(), &b, 1);
        (void)r;
        reader_.join();
    }
    if (!writer_.joinable()) return;
    std::unique_lock<std::mutex> lk(st_->mu);
    st_->done = true;
    st_->cv.notify_all();
    if (flush_ms >= 0 &&
        !st_->cv.wait_for(lk, std::chrono::milliseconds(flush_ms), [this] { return st_->finished; })) {
        st_->discard = true;  // blocked on a stalled stdout: let it go
        writer_.detach();
        return;
    }
    lk.unlock();
    writer_.join();
}

void LogPump::read_loop() {
    for (;;) {
        pollfd p[2] = {{log_fd_, POLLIN, 0}, {wake_.read_end.get(), POLLIN, 0}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno != EINTR) break;
        drain();
        if (n > 0 && p[1].revents) break;
    }
    drain();
}

void LogPump::drain() {
    spore_log_record *rec = nullptr;
    std::vector<Chunk> batch;
    while (spore_router_next_log(router_, &rec, 0) == SPORE_OK) {
        format(rec, batch);
        spore_log_record_free(rec);
    }
    if (batch.empty()) return;
    std::lock_guard<std::mutex> lk(st_->mu);
    for (Chunk &c : batch) {
        if (st_->buffered + c.text.size() > kMaxBuffered) {
            ++dropped_;
            continue;
        }
        st_->buffered += c.text.size();
        // Consecutive lines for the same fd are written together.
        if (!st_->queue.empty() && st_->queue.back().fd == c.fd && st_->queue.back().text.size() < 65536)
            st_->queue.back().text += c.text;
        else
            st_->queue.push_back(std::move(c));
    }
    st_->cv.notify_all();
}

void LogPump::format(const spore_log_record *rec, std::vector<Chunk> &out) {
    std::string_view logger = spore_log_record_logger(rec);
    const char *msg = spore_log_record_message(rec);
    if (int64_t(spore_log_record_context_id(rec)) == output_ctx_.load() &&
        (logger == "stdout" || logger == "stderr")) {
        out.push_back({logger == "stdout" ? 1 : 2, std::string(msg) + "\n"});
        return;
    }
    if (!verbose_) return;
    out.push_back({2, record_line(rec, msg) + "\n"});
}

void LogPump::write_loop(Shared &st) {
    std::unique_lock<std::mutex> lk(st.mu);
    for (;;) {
        st.cv.wait(lk, [&] { return st.done || !st.queue.empty(); });
        if (st.discard || st.queue.empty()) break;
        Chunk c = std::move(st.queue.front());
        st.queue.pop_front();
        st.buffered -= c.text.size();
        lk.unlock();
        if (c.fd == 2) {
            out_stderr(c.text);
        } else if (!stdout_broken()) {
            out_stdout(c.text);
            if (stdout_broken()) notify_interrupt(SIGPIPE);
        }
        lk.lock();
    }
    st.finished = true;
    st.cv.notify_all();
}

}  // namespace spore::cli
