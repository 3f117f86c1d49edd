// Stream write ordering: channel data (bulk) waits behind control messages,
// but a message that has started leaving is never interrupted.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "core/stream.h"

using namespace spore;

namespace {

Message make(uint32_t handle, uint32_t tag, size_t bin) {
    Message m;
    m.h.handle = handle;
    m.h.reply_to = tag;
    m.bin.assign(bin, char('a' + tag % 26));
    return m;
}

}  // namespace

TEST(StreamOrder, ControlMessagesOvertakeQueuedChannelData) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 16 * 1024;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    Loop loop;
    auto s = std::make_shared<Stream>(loop, sv[0], sv[0], "test", Limits{});
    // Nothing reads yet: the first chunk fills the socket and stays half
    // written, the rest queue.
    ASSERT_TRUE(s->send(make(kHandleChanData, 1, 1 << 20)));
    ASSERT_TRUE(s->send(make(kHandleChanData, 2, 1 << 20)));
    ASSERT_TRUE(s->send(make(kHandleCall, 3, 10)));
    ASSERT_TRUE(s->send(make(kHandleChanData, 4, 1000)));
    ASSERT_TRUE(s->send(make(kHandleChanAck, 5, 0)));
    EXPECT_GT(s->queued_bytes(), size_t(2 << 20) - 64 * 1024);

    std::thread t([&] { loop.run(); });
    FrameDecoder dec;
    std::vector<uint32_t> order;
    Message m;
    while (order.size() < 5) {
        pollfd p{sv[1], POLLIN, 5000};
        ASSERT_GT(poll(&p, 1, 5000), 0);
        char buf[65536];
        ssize_t n = ::read(sv[1], buf, sizeof buf);
        ASSERT_GT(n, 0);
        dec.feed(buf, size_t(n));
        while (dec.next(m) == FrameDecoder::Status::kMessage) {
            order.push_back(m.h.reply_to);
            EXPECT_EQ(m.bin, std::string(m.bin.size(), char('a' + m.h.reply_to % 26)));
        }
    }
    loop.post([&] { loop.stop(); });
    t.join();
    // 1 had started; 3 and 5 overtook the channel data queued before them;
    // channel data keeps its own order.
    EXPECT_EQ(order, (std::vector<uint32_t>{1, 3, 5, 2, 4}));
    EXPECT_EQ(s->queued_bytes(), 0u);
    s->close("done");
    ::close(sv[1]);
}
