// The routing rules of DESIGN §6, exercised on a real MessageRouter with real
// socketpair streams: frames are injected from the far end of each stream
// and whatever the router emits is read back there.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include "core/message_router.h"
#include "spore/spore.h"

using namespace spore;

namespace {

// The far end of a stream, played by the test.
struct Peer {
    int fd = -1;
    FrameDecoder dec;
    ~Peer() {
        if (fd >= 0) ::close(fd);
    }
    void send(const Message &m) {
        std::string b = encode_message(m);
        ASSERT_EQ(::write(fd, b.data(), b.size()), ssize_t(b.size()));
    }
    void send_bytes(const std::string &b) { ASSERT_EQ(::write(fd, b.data(), b.size()), ssize_t(b.size())); }
    // Non-blocking: whatever has arrived.
    bool next(Message &out) {
        for (;;) {
            auto st = dec.next(out);
            if (st == FrameDecoder::Status::kMessage) return true;
            if (st == FrameDecoder::Status::kError) return false;
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 0) <= 0) return false;
            char buf[65536];
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) return false;
            dec.feed(buf, size_t(n));
        }
    }
    bool eof() {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) return false;
        char c;
        return ::read(fd, &c, 1) == 0;
    }
};

class RouterTest : public ::testing::Test {
protected:
    void SetUp() override {
        // This router plays agent 5 whose parent is 1, grand-parent the master.
        router = std::make_unique<MessageRouter>(loop);
        router->set_identity(5, {1, 0}, "agent5");
        router->set_log([this](int, const std::string &m) { logs.push_back(m); });
        router->set_on_route_lost([this](uint32_t id, int, const std::string &) { lost.insert(id); });
        parent = make_stream(parent_peer, 1, "parent");
        router->set_parent(parent);
        child7 = make_stream(peer7, 7, "child7");
        router->attach_child(child7);
        child8 = make_stream(peer8, 8, "child8");
        router->attach_child(child8);
        router->set_handler(kHandleCall, Policy::kParentAuthority,
                            [this](Message &&m, const MessageRouter::StreamPtr &) { calls.push_back(std::move(m)); });
    }
    void TearDown() override {
        for (auto &s : {parent, child7, child8})
            if (s) s->close("test over");
    }
    std::shared_ptr<Stream> make_stream(Peer &peer, uint32_t remote, const char *name) {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        peer.fd = sv[1];
        auto s = std::make_shared<Stream>(loop, sv[0], sv[0], name, Limits{});
        s->set_remote_id(remote);
        s->start(false);
        return s;
    }
    void pump() {
        for (int i = 0; i < 5; ++i) event_base_loop(loop.base(), EVLOOP_NONBLOCK);
    }
    static Message msg(uint32_t dst, uint32_t src, uint32_t auth, uint32_t handle, uint32_t reply_to = 0,
                       std::string json = "{}") {
        Message m;
        m.h.dst_id = dst;
        m.h.src_id = src;
        m.h.auth_id = auth;
        m.h.handle = handle;
        m.h.reply_to = reply_to;
        m.json = std::move(json);
        return m;
    }
    static ErrorInfo err_of(const Message &m) { return MessageRouter::parse_error_json(m.json); }

    Loop loop;
    std::unique_ptr<MessageRouter> router;
    Peer parent_peer, peer7, peer8;
    std::shared_ptr<Stream> parent, child7, child8;
    std::vector<Message> calls;
    std::vector<std::string> logs;
    std::set<uint32_t> lost;
};

TEST_F(RouterTest, CallWithParentAuthorityIsDispatched) {
    parent_peer.send(msg(5, 0, 0, kHandleCall, 1000));
    pump();
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].h.reply_to, 1000u);
}

TEST_F(RouterTest, CallFromChildIsRefusedWithDeadReply) {
    peer7.send(msg(5, 7, 7, kHandleCall, 1234));
    pump();
    EXPECT_TRUE(calls.empty());
    Message r;
    ASSERT_TRUE(peer7.next(r));
    EXPECT_EQ(r.h.dst_id, 7u);
    EXPECT_EQ(r.h.handle, 1234u);
    EXPECT_TRUE(r.h.flags & kFlagError);
    EXPECT_EQ(err_of(r).code, SPORE_EREFUSED);
}

TEST_F(RouterTest, ForgedSourceIsDroppedAndLogged) {
    // Child 7 pretends to be the parent (and the master) to gain authority.
    peer7.send(msg(5, 1, 1, kHandleCall, 1000));
    peer7.send(msg(5, 7, 0, kHandleCall, 1000));
    peer7.send(msg(5, 0, 0, kHandleCall, 1000));
    pump();
    EXPECT_TRUE(calls.empty());
    Message r;
    EXPECT_FALSE(peer7.next(r));  // dropped silently toward a liar
    EXPECT_FALSE(parent_peer.next(r));
    ASSERT_GE(logs.size(), 3u);
    EXPECT_NE(logs[0].find("source id"), std::string::npos);
    EXPECT_NE(logs[1].find("authority id"), std::string::npos);
}

TEST_F(RouterTest, ParentCannotClaimAChildsIdentity) {
    parent_peer.send(msg(5, 7, 7, kHandleCall, 1000));
    pump();
    EXPECT_TRUE(calls.empty());
}

TEST_F(RouterTest, SiblingForwardingRefusedWhenUnidirectional) {
    peer7.send(msg(8, 7, 7, kHandleCall, 1001));
    pump();
    Message r;
    EXPECT_FALSE(peer8.next(r));
    ASSERT_TRUE(peer7.next(r));
    EXPECT_EQ(err_of(r).code, SPORE_EREFUSED);
    EXPECT_NE(err_of(r).message.find("routing mode"), std::string::npos);
}

TEST_F(RouterTest, SiblingForwardingAllowedWhenBidirectional) {
    router->set_unidirectional(false);
    peer7.send(msg(8, 7, 7, kHandleCall, 1001));
    pump();
    Message r;
    ASSERT_TRUE(peer8.next(r));
    EXPECT_EQ(r.h.src_id, 7u);
}

TEST_F(RouterTest, ParentToChildAndChildToParentAreForwarded) {
    parent_peer.send(msg(7, 0, 0, kHandleCall, 1002));
    peer8.send(msg(0, 8, 8, kHandleLog));
    pump();
    Message r;
    ASSERT_TRUE(peer7.next(r));
    EXPECT_EQ(r.h.reply_to, 1002u);
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(r.h.handle, uint32_t(kHandleLog));
    EXPECT_EQ(r.h.src_id, 8u);
}

TEST_F(RouterTest, NoRouteGivesDeadReply) {
    parent_peer.send(msg(99, 0, 0, kHandleCall, 1003));
    pump();
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(r.h.dst_id, 0u);
    EXPECT_EQ(r.h.handle, 1003u);
    EXPECT_EQ(err_of(r).code, SPORE_ENOROUTE);
}

TEST_F(RouterTest, UnknownHandleGivesDeadReply) {
    parent_peer.send(msg(5, 0, 0, 555, 1004));
    pump();
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(err_of(r).code, SPORE_EPROTO);
}

TEST_F(RouterTest, ErrorsAndNoReplyMessagesAreNeverAnswered) {
    Message m = msg(5, 0, 0, 555, 1005);
    m.h.flags = kFlagError;
    parent_peer.send(m);
    parent_peer.send(msg(5, 0, 0, 555, 0));
    pump();
    Message r;
    EXPECT_FALSE(parent_peer.next(r));
}

TEST_F(RouterTest, AddRouteFromChildIsRecordedAndPropagated) {
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":9,\"name\":\"grandchild\"}"));
    pump();
    EXPECT_TRUE(router->has_route(9));
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(r.h.handle, uint32_t(kHandleAddRoute));
    EXPECT_EQ(r.h.dst_id, 1u);
    EXPECT_EQ(r.h.src_id, 5u);
    // Now the new context is reachable from above, and may talk upward.
    parent_peer.send(msg(9, 0, 0, kHandleCall, 1006));
    peer7.send(msg(0, 9, 9, kHandleLog));
    pump();
    ASSERT_TRUE(peer7.next(r));
    EXPECT_EQ(r.h.dst_id, 9u);
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(r.h.src_id, 9u);
}

TEST_F(RouterTest, AddRouteCannotHijackKnownIds) {
    for (const char *id : {"1", "0", "5", "8"})
        peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, std::string("{\"id\":") + id + "}"));
    pump();
    EXPECT_EQ(router->route_for(8), child8);
    EXPECT_EQ(router->route_for(1), parent);  // via the parent, not child 7
    Message r;
    EXPECT_FALSE(parent_peer.next(r));
}

TEST_F(RouterTest, AddRouteFromBeyondTheImmediateChildIsRefused) {
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":9}"));
    pump();
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    // 9 (behind 7) may not add routes itself.
    peer7.send(msg(5, 9, 9, kHandleAddRoute, 0, "{\"id\":10}"));
    pump();
    EXPECT_FALSE(router->has_route(10));
}

TEST_F(RouterTest, RoutesBehindOneStreamAreCapped) {
    // A child announcing ever more contexts cannot grow the table forever.
    const uint32_t n = 100500;
    for (uint32_t i = 0; i < n; ++i) {
        peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":" + std::to_string(10000 + i) + "}"));
        // Small writes each cost a socket buffer's worth of overhead: pump
        // often so the peer never blocks.
        if (i % 50 == 0) {
            pump();
            Message drain;
            while (parent_peer.next(drain)) {
            }
        }
    }
    pump();
    EXPECT_TRUE(router->has_route(10000));
    EXPECT_TRUE(router->has_route(10000 + 99998));
    EXPECT_FALSE(router->has_route(10000 + n - 1));
    EXPECT_EQ(router->ids_behind(child7.get()).size(), 100000u);
}

TEST_F(RouterTest, MalformedRouteMessagesAreDropped) {
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "not json"));
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":-4}"));
    peer7.send(msg(5, 7, 7, kHandleDelRoute, 0, "{\"id\":1e300}"));
    pump();
    EXPECT_EQ(logs.size(), 3u);
    EXPECT_TRUE(lost.empty());
}

TEST_F(RouterTest, DelRouteOnlyFromTheOwningStream) {
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":9}"));
    pump();
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    peer8.send(msg(5, 8, 8, kHandleDelRoute, 0, "{\"id\":9}"));
    pump();
    EXPECT_TRUE(router->has_route(9));
    peer7.send(msg(5, 7, 7, kHandleDelRoute, 0, "{\"id\":9}"));
    pump();
    EXPECT_FALSE(router->has_route(9));
    EXPECT_EQ(lost.count(9), 1u);
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(r.h.handle, uint32_t(kHandleDelRoute));
}

TEST_F(RouterTest, ChildStreamLossWithdrawsEveryIdBehindIt) {
    peer7.send(msg(5, 7, 7, kHandleAddRoute, 0, "{\"id\":9}"));
    pump();
    Message r;
    ASSERT_TRUE(parent_peer.next(r));
    ::close(peer7.fd);
    peer7.fd = -1;
    pump();
    EXPECT_EQ(lost, (std::set<uint32_t>{7, 9}));
    std::set<std::string> del;
    while (parent_peer.next(r)) {
        EXPECT_EQ(r.h.handle, uint32_t(kHandleDelRoute));
        del.insert(r.json);
    }
    EXPECT_EQ(del.size(), 2u);
    // A call to the lost context now gets a dead reply.
    parent_peer.send(msg(7, 0, 0, kHandleCall, 1007));
    pump();
    ASSERT_TRUE(parent_peer.next(r));
    EXPECT_EQ(err_of(r).code, SPORE_ENOROUTE);
}

TEST_F(RouterTest, BadMagicClosesOnlyThatStream) {
    peer7.send_bytes("GET / HTTP/1.1\r\n\r\n");
    pump();
    EXPECT_TRUE(child7->closed());
    EXPECT_FALSE(child8->closed());
    EXPECT_TRUE(peer7.eof());
    EXPECT_EQ(lost.count(7), 1u);
    // The reason is logged, with the first bytes of the bad frame.
    ASSERT_FALSE(logs.empty());
    EXPECT_NE(logs.back().find("bad frame magic"), std::string::npos) << logs.back();
    EXPECT_NE(logs.back().find("47 45 54"), std::string::npos) << logs.back();  // "GET"
}

TEST_F(RouterTest, OversizedFrameClosesTheStreamBeforeAllocating) {
    Limits small;
    small.max_message_size = 1 << 20;
    child7->set_limits(small);
    Header h;
    h.dst_id = 5;
    h.src_id = 7;
    h.auth_id = 7;
    h.handle = kHandleCall;
    h.bin_len = 0xFFFFFFF0u;
    uint8_t raw[kHeaderSize];
    encode_header(h, raw);
    peer7.send_bytes(std::string(reinterpret_cast<char *>(raw), kHeaderSize));
    pump();
    EXPECT_TRUE(child7->closed());
}

TEST_F(RouterTest, SendRefusesOversizedMessages) {
    Limits small;
    small.max_message_size = 4096;
    router->set_limits(small);
    Message m = msg(7, 5, 5, kHandleCall);
    m.bin.assign(8192, 'x');
    EXPECT_EQ(router->send(m), SPORE_ETOOBIG);
    EXPECT_EQ(router->send(msg(7, 5, 5, kHandleCall)), SPORE_OK);
}

TEST_F(RouterTest, ParentLossIsReported) {
    std::string why;
    router->set_on_parent_lost([&](const std::string &r) { why = r; });
    ::close(parent_peer.fd);
    parent_peer.fd = -1;
    pump();
    EXPECT_EQ(why, "EOF");
}

// A router attached through a listener (id 9): its messages act with this
// router's authority, pass to and from children under unidirectional
// routing, and cannot touch the routing table.
TEST_F(RouterTest, AttachedPeerActsWithThisRoutersAuthority) {
    Peer peer9;
    auto s9 = make_stream(peer9, 9, "attached9");
    s9->set_attached(true);
    s9->on_message([this, w = std::weak_ptr<Stream>(s9)](Stream &, Message &&m) {
        if (auto sp = w.lock()) router->dispatch(std::move(m), sp);
    });
    s9->on_close([this](Stream &st, const std::string &why) { router->stream_closed(st, why); });
    ASSERT_TRUE(router->attach_peer(s9));

    peer9.send(msg(5, 9, 9, kHandleCall, 1000));
    pump();
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].h.auth_id, 5u);  // stamped
    EXPECT_EQ(calls[0].h.src_id, 9u);

    peer9.send(msg(7, 9, 9, kHandleCall, 1001));
    pump();
    Message r;
    ASSERT_TRUE(peer7.next(r));
    EXPECT_EQ(r.h.src_id, 9u);
    EXPECT_EQ(r.h.auth_id, 5u);
    EXPECT_TRUE(router->has_parent_authority(r.h.auth_id));

    peer7.send(msg(9, 7, 7, 1001, 0, "\"reply\""));
    pump();
    ASSERT_TRUE(peer9.next(r));
    EXPECT_EQ(r.h.handle, 1001u);
    EXPECT_EQ(r.json, "\"reply\"");

    peer9.send(msg(5, 9, 9, kHandleAddRoute, 0, "{\"id\":77}"));
    pump();
    EXPECT_FALSE(router->has_route(77));

    s9->close("test over");
    pump();
    EXPECT_TRUE(lost.count(9));
    EXPECT_FALSE(router->has_route(9));
}

TEST(RouterErrors, ErrorJsonRoundTrip) {
    ErrorInfo e{SPORE_EREMOTE, "boom \"quoted\"\n", "OSError", "local.1", "fs.stat"};
    ErrorInfo back = MessageRouter::parse_error_json(MessageRouter::error_json(e));
    EXPECT_EQ(back.code, e.code);
    EXPECT_EQ(back.message, e.message);
    EXPECT_EQ(back.remote_type, e.remote_type);
    EXPECT_EQ(back.context, e.context);
    EXPECT_EQ(back.function, e.function);
    EXPECT_EQ(MessageRouter::parse_error_json("[[[").code, SPORE_EPROTO);
    EXPECT_EQ(MessageRouter::parse_error_json("{\"code\":\"ENOPE\"}").code, SPORE_EUNKNOWN);
}

}  // namespace
