// Talks to a real spore-agent process over a socketpair, playing its parent:
// the hello marker, the init message, and hostile or malformed frames.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "core/frame.h"
#include "core/image.h"
#include "core/message_router.h"
#include "spore/spore.h"

extern char **environ;
using namespace spore;

namespace {

class AgentProcess : public ::testing::Test {
protected:
    void SetUp() override {
        const char *agent = std::getenv("SPORE_AGENT_PATH");
        if (!agent) GTEST_SKIP() << "SPORE_AGENT_PATH is not set (run through ctest)";
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
        char *argv[] = {const_cast<char *>(agent), const_cast<char *>("spore:unit-test"), nullptr};
        ASSERT_EQ(posix_spawn(&pid, agent, &fa, nullptr, argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        ::close(sv[1]);
        fd = sv[0];
        std::string line = read_line();
        ASSERT_EQ(line, std::string(kHelloMarker) + " " + SPORE_VERSION_STRING);
    }
    void TearDown() override {
        if (fd >= 0) ::close(fd);
        if (pid > 0) {
            // The agent must leave on its own once its parent stream closes.
            EXPECT_TRUE(wait_exit(2000)) << "agent did not exit after its parent stream closed";
            if (pid > 0) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
            }
        }
    }
    bool wait_exit(int ms) {
        for (int i = 0; i < ms / 5; ++i) {
            if (waitpid(pid, nullptr, WNOHANG) == pid) {
                pid = -1;
                return true;
            }
            usleep(5000);
        }
        return false;
    }
    std::string read_line() {
        std::string line;
        char c;
        while (::read(fd, &c, 1) == 1) {
            if (c == '\n') {
                if (line.empty()) continue;  // the marker starts with a newline
                return line;
            }
            line.push_back(c);
        }
        return line;
    }
    void send(const Message &m) {
        std::string b = encode_message(m);
        ASSERT_EQ(::write(fd, b.data(), b.size()), ssize_t(b.size()));
    }
    void init(uint32_t id = 3) {
        Message m;
        m.h.dst_id = id;
        m.h.handle = kHandleInit;
        m.json = "{\"id\":" + std::to_string(id) + ",\"parent_ids\":[0],\"name\":\"t\",\"log_level\":40}";
        send(m);
    }
    Message call(const std::string &json, uint32_t auth = 0, uint32_t reply_to = 1000) {
        Message m;
        m.h.dst_id = 3;
        m.h.src_id = auth;
        m.h.auth_id = auth;
        m.h.handle = kHandleCall;
        m.h.reply_to = reply_to;
        m.json = json;
        return m;
    }
    // Next message, waiting up to ms; false on EOF or timeout.
    bool next(Message &out, int ms = 3000) {
        for (;;) {
            if (dec.next(out) == FrameDecoder::Status::kMessage) return true;
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, ms) <= 0) return false;
            char buf[65536];
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) return false;
            dec.feed(buf, size_t(n));
        }
    }
    Message roundtrip(const std::string &json) {
        send(call(json));
        Message r;
        EXPECT_TRUE(next(r));
        return r;
    }

    pid_t pid = -1;
    int fd = -1;
    FrameDecoder dec;
};

TEST_F(AgentProcess, AnswersAfterInit) {
    init();
    Message r = roundtrip("{\"fn\":\"sys.ping\",\"args\":{}}");
    EXPECT_EQ(r.h.dst_id, 0u);
    EXPECT_EQ(r.h.src_id, 3u);
    EXPECT_EQ(r.h.handle, 1000u);
    EXPECT_FALSE(r.h.flags & kFlagError);
    EXPECT_EQ(r.json, "true");
}

TEST_F(AgentProcess, FirstMessageMustBeInit) {
    send(call("{\"fn\":\"sys.ping\",\"args\":{}}"));
    Message r;
    EXPECT_FALSE(next(r));  // closed without answering
    EXPECT_TRUE(wait_exit(2000));
}

TEST_F(AgentProcess, MalformedCallsGetErrorsAndTheStreamSurvives) {
    init();
    const char *bad[] = {"not json", "{\"fn\":\"sys.ping\"", "{\"args\":{}}", "[1,2]",
                         "{\"fn\":\"sys.ping\",\"args\":[1]}"};
    for (const char *b : bad) {
        Message r = roundtrip(b);
        ASSERT_TRUE(r.h.flags & kFlagError) << b;
        EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_EPROTO) << b;
    }
    std::string deep(10000, '[');
    deep += std::string(10000, ']');
    Message r = roundtrip("{\"fn\":\"sys.echo\",\"args\":{\"value\":" + deep + "}}");
    EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_EPROTO);
    EXPECT_NE(MessageRouter::parse_error_json(r.json).message.find("deeper"), std::string::npos);
    EXPECT_EQ(roundtrip("{\"fn\":\"sys.ping\",\"args\":{}}").json, "true");
}

TEST_F(AgentProcess, UnknownFunction) {
    init();
    Message r = roundtrip("{\"fn\":\"no.such\",\"args\":{}}");
    ErrorInfo e = MessageRouter::parse_error_json(r.json);
    EXPECT_EQ(e.code, SPORE_ENOFUNC);
    EXPECT_EQ(e.function, "no.such");
    EXPECT_EQ(e.context, "t");
}

TEST_F(AgentProcess, CallsWithoutParentAuthorityAreRefused) {
    init();
    send(call("{\"fn\":\"proc.run\",\"args\":{\"shell\":\"touch /tmp/spore-must-not-exist\"}}", 42));
    Message r;
    ASSERT_TRUE(next(r));
    EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_EREFUSED);
    EXPECT_EQ(access("/tmp/spore-must-not-exist", F_OK), -1);
}

TEST_F(AgentProcess, UnknownHandleGetsDeadReply) {
    init();
    Message m = call("{}");
    m.h.handle = 777;
    send(m);
    Message r;
    ASSERT_TRUE(next(r));
    EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_EPROTO);
}

TEST_F(AgentProcess, NoRouteGetsDeadReply) {
    init();
    Message m = call("{\"fn\":\"sys.ping\",\"args\":{}}");
    m.h.dst_id = 99;
    send(m);
    Message r;
    ASSERT_TRUE(next(r));
    EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_ENOROUTE);
}

TEST_F(AgentProcess, BadMagicMakesTheAgentExit) {
    init();
    ASSERT_EQ(::write(fd, "garbage!garbage!garbage!garbage!garbage!", 40), 40);
    Message r;
    EXPECT_FALSE(next(r));
    EXPECT_TRUE(wait_exit(2000));
}

TEST_F(AgentProcess, OversizedFrameMakesTheAgentExitWithoutAllocating) {
    Message m;
    m.h.dst_id = 3;
    m.h.handle = kHandleInit;
    m.json = "{\"id\":3,\"parent_ids\":[0],\"name\":\"t\",\"max_message_size\":65536}";
    send(m);
    Header h;
    h.dst_id = 3;
    h.handle = kHandleCall;
    h.bin_len = 0xFFFFFF00u;
    uint8_t raw[kHeaderSize];
    encode_header(h, raw);
    ASSERT_EQ(::write(fd, raw, kHeaderSize), ssize_t(kHeaderSize));
    Message r;
    EXPECT_FALSE(next(r));
    EXPECT_TRUE(wait_exit(2000));
}

TEST_F(AgentProcess, ReplyOverTheLimitBecomesTooBig) {
    Message m;
    m.h.dst_id = 3;
    m.h.handle = kHandleInit;
    m.json = "{\"id\":3,\"parent_ids\":[0],\"name\":\"t\",\"max_message_size\":65536}";
    send(m);
    std::string big = "{\"fn\":\"proc.run\",\"args\":{\"shell\":\"head -c 100000 /dev/zero | tr '\\\\0' x\"}}";
    Message r = roundtrip(big);
    EXPECT_EQ(MessageRouter::parse_error_json(r.json).code, SPORE_ETOOBIG);
    EXPECT_EQ(roundtrip("{\"fn\":\"sys.ping\",\"args\":{}}").json, "true");
}

TEST_F(AgentProcess, ParentLossKillsRunningChildren) {
    init();
    send(call("{\"fn\":\"proc.run\",\"args\":{\"shell\":\"echo $$ > /tmp/spore-unit-sleep.pid; exec sleep 60\"}}", 0, 0));
    pid_t sleeper = -1;
    for (int i = 0; i < 200 && sleeper <= 0; ++i) {
        usleep(10000);
        FILE *f = fopen("/tmp/spore-unit-sleep.pid", "r");
        if (f) {
            if (fscanf(f, "%d", &sleeper) != 1) sleeper = -1;
            fclose(f);
        }
    }
    unlink("/tmp/spore-unit-sleep.pid");
    ASSERT_GT(sleeper, 0);
    ASSERT_EQ(kill(sleeper, 0), 0);
    ::close(fd);
    fd = -1;
    EXPECT_TRUE(wait_exit(3000));
    bool gone = false;
    for (int i = 0; i < 300 && !gone; ++i) {
        gone = kill(sleeper, 0) != 0 && errno == ESRCH;
        if (!gone) usleep(10000);
    }
    EXPECT_TRUE(gone) << "the agent's child " << sleeper << " outlived it";
}

TEST_F(AgentProcess, ShutdownMessageEndsTheAgent) {
    init();
    Message m;
    m.h.dst_id = 3;
    m.h.handle = kHandleShutdown;
    send(m);
    Message r;
    EXPECT_FALSE(next(r));
    EXPECT_TRUE(wait_exit(2000));
}

TEST_F(AgentProcess, VersionFlag) {
    init();
    const char *agent = std::getenv("SPORE_AGENT_PATH");
    std::string cmd = std::string(agent) + " --version";
    FILE *p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[128] = {0};
    ASSERT_NE(fgets(buf, sizeof buf, p), nullptr);
    EXPECT_EQ(pclose(p), 0);
    EXPECT_EQ(std::string(buf), std::string("spore-agent ") + SPORE_VERSION_STRING + "\n");
}

}  // namespace
