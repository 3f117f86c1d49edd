// The bodies of the standard messages: what is encoded decodes to the same,
// and every malformed body is refused the same way wherever it arrives.
#include <gtest/gtest.h>

#include "core/messages.h"

namespace spore {
namespace {

TEST(ContextId, RangeAndType) {
    for (const char *ok : {R"({"id":1})", R"({"id":4294967295})", R"({"id":1e3})"}) {
        Json j(cJSON_Parse(ok));
        EXPECT_TRUE(json_context_id(j.get()).has_value()) << ok;
    }
    for (const char *bad : {R"({"id":0})", R"({"id":-1})", R"({"id":4294967296})", R"({"id":1.5})",
                            R"({"id":"7"})", R"({"id":null})", R"({})", R"([])"}) {
        Json j(cJSON_Parse(bad));
        EXPECT_FALSE(json_context_id(j.get()).has_value()) << bad;
    }
    EXPECT_FALSE(json_context_id(nullptr).has_value());
    Json other(cJSON_Parse(R"({"ch":9})"));
    EXPECT_EQ(json_context_id(other.get(), "ch").value_or(0), 9u);
}

TEST(InitMessage, RoundTrip) {
    InitMessage m;
    m.id = 7;
    m.parent_ids = {3, 1, 0};
    m.name = "local.1/fork.3/local.7";
    m.log_level = 10;
    m.max_message_size = 65536;
    m.unidirectional = true;
    m.liveness = KeepaliveSettings{250, 4};
    std::string why;
    auto back = InitMessage::decode(m.encode(), &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(back->id, 7u);
    EXPECT_EQ(back->parent_ids, (std::vector<uint32_t>{3, 1, 0}));
    EXPECT_EQ(back->name, m.name);
    EXPECT_EQ(back->log_level, 10);
    EXPECT_EQ(back->max_message_size, 65536u);
    EXPECT_EQ(back->liveness.interval_ms, 250);
    EXPECT_EQ(back->liveness.count, 4);
}

TEST(InitMessage, Refusals) {
    std::string why;
    EXPECT_FALSE(InitMessage::decode("not json", &why));
    EXPECT_EQ(why, "malformed init message");
    EXPECT_FALSE(InitMessage::decode(R"({"id":0,"parent_ids":[0]})", &why));
    EXPECT_FALSE(InitMessage::decode(R"({"id":2})", &why));
    EXPECT_EQ(why, "init message without parent ids");
    EXPECT_FALSE(InitMessage::decode(R"({"id":2,"parent_ids":["x",-1]})", &why));
    // A tiny size limit is raised to the floor; a bad liveness keeps the default.
    auto m = InitMessage::decode(R"({"id":2,"parent_ids":[0],"max_message_size":10,"liveness_interval":-5})", &why);
    ASSERT_TRUE(m) << why;
    EXPECT_EQ(m->max_message_size, 4096u);
    EXPECT_EQ(m->liveness.interval_ms, KeepaliveSettings{}.interval_ms);
}

TEST(RouteAdded, RoundTripAndRefusal) {
    auto back = RouteAdded::decode(RouteAdded{42, "ssh.42"}.encode());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->id, 42u);
    EXPECT_EQ(back->name, "ssh.42");
    EXPECT_FALSE(RouteAdded::decode(R"({"id":0,"name":"x"})"));
    EXPECT_FALSE(RouteAdded::decode("[["));
}

TEST(LossNotice, CodeIsOneOfTwo) {
    auto back = LossNotice::decode(LossNotice{5, "stopped", SPORE_EUNRESPONSIVE}.encode());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->id, 5u);
    EXPECT_EQ(back->reason, "stopped");
    EXPECT_EQ(back->code, SPORE_EUNRESPONSIVE);
    back = LossNotice::decode(LossNotice{5, "gone"}.encode());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->code, SPORE_EDISCONNECTED);
    // Whatever else a child claims is a plain disconnect.
    back = LossNotice::decode(R"({"id":5,"code":"ESHUTDOWN"})");
    ASSERT_TRUE(back);
    EXPECT_EQ(back->code, SPORE_EDISCONNECTED);
    EXPECT_EQ(back->reason, "disconnected");
    EXPECT_FALSE(LossNotice::decode(R"({"id":-5})"));
}

}  // namespace
}  // namespace spore
