// An agent's module cache (src/agent/module_relay.cpp) and the module
// messages it speaks: one request upward however many wait, every answer
// kept, extras handed on with the module they came with, and what a
// requester was sent never sent to it again.
#include <gtest/gtest.h>

#include "agent/module_relay.h"

namespace spore::agent {
namespace {

using Names = std::vector<std::string>;

ModuleEntry found(const std::string &name, const std::string &source) {
    ModuleEntry e;
    e.name = name;
    e.found = true;
    e.file = "/ctl/" + name + ".py";
    e.hash = "h-" + name;
    e.source = source;
    return e;
}

Names names_of(const std::vector<ModuleRelay::EntryPtr> &es) {
    Names out;
    for (const auto &e : es) out.push_back(e->name);
    return out;
}

TEST(ModuleRelay, OneRequestUpwardForManyWaiters) {
    std::vector<Names> asked;
    ModuleRelay relay([&](const Names &n) { asked.push_back(n); });
    std::vector<Names> a1, a2;
    relay.request(1, {"app"}, [&](auto es) { a1.push_back(names_of(es)); });
    relay.request(2, {"app"}, [&](auto es) { a2.push_back(names_of(es)); });
    ASSERT_EQ(asked, (std::vector<Names>{{"app"}}));
    EXPECT_TRUE(a1.empty());
    ModuleAnswer ans;
    ans.modules = {found("app", "import util\n"), found("util", "X = 1\n")};
    relay.deliver(std::move(ans));
    EXPECT_EQ(a1, (std::vector<Names>{{"app", "util"}}));
    EXPECT_EQ(a2, (std::vector<Names>{{"app", "util"}}));
    // From the cache now: nothing more asked; util is not sent twice to 1.
    std::vector<Names> again;
    relay.request(1, {"app"}, [&](auto es) { again.push_back(names_of(es)); });
    relay.request(3, {"app"}, [&](auto es) { again.push_back(names_of(es)); });
    EXPECT_EQ(asked.size(), 1u);
    EXPECT_EQ(again, (std::vector<Names>{{"app"}, {"app", "util"}}));
}

TEST(ModuleRelay, NotFoundIsKeptAndInvalidNamesNeverGoUp) {
    std::vector<Names> asked;
    ModuleRelay relay([&](const Names &n) { asked.push_back(n); });
    std::vector<ModuleRelay::EntryPtr> got;
    relay.request(1, {"nothere", "../etc/passwd", "/etc/shadow"}, [&](auto es) { got = es; });
    ASSERT_EQ(asked, (std::vector<Names>{{"nothere"}}));
    ModuleEntry nf;
    nf.name = "nothere";
    nf.reason = "no module named 'nothere' in the controller";
    ModuleAnswer ans;
    ans.modules = {nf};
    relay.deliver(std::move(ans));
    ASSERT_EQ(got.size(), 3u);
    for (const auto &e : got) EXPECT_FALSE(e->found) << e->name;
    EXPECT_EQ(got[1]->reason, "not a module name");
    relay.request(2, {"nothere"}, [&](auto es) { got = es; });
    EXPECT_EQ(asked.size(), 1u);
    EXPECT_EQ(got[0]->reason, nf.reason);
}

TEST(ModuleMessages, RequestAndAnswerRoundTrip) {
    auto req = ModuleRequest::decode(ModuleRequest{{"a.b", "__main__", "spore:worker"}}.encode());
    ASSERT_TRUE(req);
    EXPECT_EQ(req->names, (Names{"a.b", "__main__", "spore:worker"}));
    EXPECT_FALSE(ModuleRequest::decode(R"({"names":[]})"));
    EXPECT_FALSE(ModuleRequest::decode(R"({"names":[1]})"));
    EXPECT_FALSE(ModuleRequest::decode(R"({"names":"a"})"));
    std::string many = R"({"names":[)";
    for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + "\"m\"";
    EXPECT_FALSE(ModuleRequest::decode(many + "]}"));

    ModuleAnswer a;
    ModuleEntry nf;
    nf.name = "gone";
    nf.reason = "refused";
    a.modules = {found("x", "A = 1\n"), nf, found("y.z", "")};
    std::string json, bin;
    a.encode(json, bin);
    EXPECT_EQ(bin, "A = 1\n");
    auto back = ModuleAnswer::decode(json, bin);
    ASSERT_TRUE(back);
    ASSERT_EQ(back->modules.size(), 3u);
    EXPECT_EQ(back->modules[0].source, "A = 1\n");
    EXPECT_EQ(back->modules[0].file, "/ctl/x.py");
    EXPECT_FALSE(back->modules[1].found);
    EXPECT_EQ(back->modules[1].reason, "refused");
    // A slice outside the binary part, or a name that is not one, is refused.
    EXPECT_FALSE(ModuleAnswer::decode(R"({"modules":[{"name":"x","found":true,"offset":0,"length":9}]})", "abc"));
    EXPECT_FALSE(ModuleAnswer::decode(R"({"modules":[{"name":"x","found":true,"offset":4,"length":0}]})", "abc"));
    EXPECT_FALSE(ModuleAnswer::decode(R"({"modules":[{"name":"../x","found":false}]})", ""));
}

TEST(ModuleMessages, Names) {
    for (const char *ok : {"a", "a.b", "_x.y_2", "__main__"}) EXPECT_TRUE(valid_module_name(ok)) << ok;
    for (const char *bad : {"", ".a", "a.", "a..b", "1a", "a-b", "a/b", "../x", "a b", "spore:worker"})
        EXPECT_FALSE(valid_module_name(bad)) << bad;
    EXPECT_TRUE(valid_request_name("spore:worker"));
    EXPECT_FALSE(valid_module_name(std::string(201, 'a')));
}

}  // namespace
}  // namespace spore::agent
