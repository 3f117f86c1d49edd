// Forwarded log records: a command's output lines (run) and, with
// --verbose, the agents' own records.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "io.h"
#include "spore/spore.h"

namespace spore::cli {

// "[context] LEVEL logger: message", as --verbose and the daemon's log show a record.
std::string record_line(const spore_log_record *rec, std::string_view message);

// Takes forwarded log records as they arrive. Records with logger
// "stdout"/"stderr" from the command's context (run) are the command's
// output lines; any other record is shown only with --verbose.
//
// Two threads: the reader empties the router's queue at once into a buffer
// of its own, the writer writes that buffer out. A slow reader of our stdout
// thus does not make the router drop records (its queue is bounded and has
// no flow control back to the command); the buffer holds up to 64 MiB
// of text, after which lines are dropped and counted.
class LogPump {
public:
    LogPump(spore_router *router, bool verbose);
    ~LogPump();
    LogPump(const LogPump &) = delete;
    LogPump &operator=(const LogPump &) = delete;

    // From now on, output records of this context go to stdout/stderr.
    void set_output_context(uint32_t id) { output_ctx_.store(int64_t(id)); }

    // Takes what the router still holds and writes everything out, waiting
    // for the reader of our stdout as long as it takes (flush_ms < 0) or at
    // most flush_ms (leaving on an error: the rest is then dropped).
    void stop(int flush_ms = -1);

    // Lines dropped here or by the router.
    uint64_t dropped() const { return dropped_ + spore_router_dropped_logs(router_); }

private:
    static constexpr size_t kMaxBuffered = size_t(64) << 20;
    struct Chunk {
        int fd;
        std::string text;
    };
    // What the writer uses; shared so that a writer left behind stays valid.
    struct Shared {
        std::mutex mu;
        std::condition_variable cv;
        std::deque<Chunk> queue;
        size_t buffered = 0;
        bool done = false, discard = false, finished = false;
    };
    spore_router *router_;
    bool verbose_;
    Pipe wake_;
    int log_fd_ = -1;
    std::atomic<int64_t> output_ctx_{-1};
    std::shared_ptr<Shared> st_;
    std::thread reader_, writer_;
    uint64_t dropped_ = 0;  // reader thread; read after stop()

    void read_loop();
    void drain();
    void format(const spore_log_record *rec, std::vector<Chunk> &out);
    static void write_loop(Shared &st);
};

}  // namespace spore::cli
