// The master's own checks that need no agent: connect options, function
// names and arguments, and who may answer a call.
#include <gtest/gtest.h>

#include "controller/router.h"
#include "spore/spore.h"

using namespace spore;

namespace {

Json parse(const char *text) {
    std::string err;
    Json j = json_parse(text, 64, &err);
    EXPECT_TRUE(j) << err;
    return j;
}

int connect_code(Router &m, const char *method, const char *opts) {
    try {
        m.connect(method, parse(opts), nullptr);
        return SPORE_OK;
    } catch (const Error &e) {
        return e.code();
    }
}

class MasterChecks : public ::testing::Test {
protected:
    void SetUp() override {
        Router::Options o;
        o.agent_path = "/nonexistent/spore-agent";
        master = Router::create(o);
    }
    void TearDown() override { master->close(); }
    std::shared_ptr<Router> master;
};

TEST_F(MasterChecks, UnknownMethod) { EXPECT_EQ(connect_code(*master, "telnet", "{}"), SPORE_EINVAL); }

TEST_F(MasterChecks, ForkNeedsVia) { EXPECT_EQ(connect_code(*master, "fork", "{}"), SPORE_EINVAL); }

TEST_F(MasterChecks, UnknownOption) {
    EXPECT_EQ(connect_code(*master, "local", "{\"colour\":\"blue\"}"), SPORE_EINVAL);
    EXPECT_EQ(connect_code(*master, "local", "{\"debug\":true}"), SPORE_EINVAL);
}

TEST_F(MasterChecks, OptionTypes) {
    EXPECT_EQ(connect_code(*master, "local", "{\"name\":5}"), SPORE_EINVAL);
    EXPECT_EQ(connect_code(*master, "local", "{\"connect_timeout\":\"soon\"}"), SPORE_EINVAL);
    EXPECT_EQ(connect_code(*master, "local", "{\"agent_cache\":1}"), SPORE_EINVAL);
    EXPECT_EQ(connect_code(*master, "local", "{\"connect_timeout\":0}"), SPORE_EINVAL);
}

TEST_F(MasterChecks, ValidOptionsReachTheSpawnAndReportTheMissingImage) {
    try {
        master->connect("local", parse("{\"name\":\"x\",\"connect_timeout\":5000,\"agent_cache\":false}"), nullptr);
        FAIL() << "connect with a missing agent image succeeded";
    } catch (const Error &e) {
        EXPECT_EQ(e.code(), SPORE_ECONNECT);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/spore-agent"), std::string::npos) << e.what();
        EXPECT_EQ(e.info().context, "x");
    }
}

TEST_F(MasterChecks, AfterCloseEverythingIsShutdown) {
    master->close();
    EXPECT_EQ(connect_code(*master, "local", "{}"), SPORE_ESHUTDOWN);
    LogRecord r;
    EXPECT_EQ(master->next_log(r, 0), SPORE_ESHUTDOWN);
}

TEST(PendingCallAnswers, OnlyTheTargetOrAnIntermediaryWithAnError) {
    PendingCall pc(1000, 7, "sys.ping", "local.1/fork.7", {1, 4});
    EXPECT_TRUE(pc.may_answer(7, false));
    EXPECT_TRUE(pc.may_answer(7, true));
    EXPECT_TRUE(pc.may_answer(4, true));   // an intermediary could not deliver
    EXPECT_TRUE(pc.may_answer(0, true));   // the master's own dead reply
    EXPECT_FALSE(pc.may_answer(4, false)); // but it may not answer for the target
    EXPECT_FALSE(pc.may_answer(9, true));  // nor may anyone else
    EXPECT_FALSE(pc.may_answer(9, false));
}

TEST(PendingCallAnswers, FirstCompletionWinsAndWaitTimesOut) {
    PendingCall pc(1000, 7, "f", "c");
    EXPECT_FALSE(pc.wait(20));
    EXPECT_FALSE(pc.done());
    pc.complete(ErrorInfo{}, "1", "");
    pc.complete(ErrorInfo{SPORE_EREMOTE, "late", "", "", ""}, "2", "");
    EXPECT_TRUE(pc.wait(0));
    EXPECT_EQ(pc.error().code, SPORE_OK);
    EXPECT_EQ(pc.take_json(), "1");
}

}  // namespace
