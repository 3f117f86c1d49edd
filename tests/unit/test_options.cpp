// The option tables (src/core/options.cpp): validation follows them, and
// the documentation agrees with them key by key and default by default.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "controller/router.h"
#include "controller/transfer.h"
#include "core/error.h"
#include "core/keepalive.h"
#include "core/options.h"

namespace spore {
namespace {

std::vector<std::string> read_lines(const std::string &rel) {
    const char *src = std::getenv("SPORE_SOURCE_DIR");
    std::ifstream in(std::string(src ? src : ".") + "/" + rel);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
}

// The rows of the first Markdown table after the line containing marker.
std::vector<std::string> table_after(const std::vector<std::string> &lines, const std::string &marker) {
    std::vector<std::string> rows;
    size_t i = 0;
    while (i < lines.size() && lines[i].find(marker) == std::string::npos) ++i;
    while (i < lines.size() && lines[i].rfind("|", 0) != 0) ++i;
    for (; i < lines.size() && lines[i].rfind("|", 0) == 0; ++i) rows.push_back(lines[i]);
    return rows;
}

std::vector<std::string> cells(const std::string &row) {
    std::vector<std::string> out;
    std::stringstream ss(row.substr(1));
    for (std::string c; std::getline(ss, c, '|');) {
        size_t a = c.find_first_not_of(' '), b = c.find_last_not_of(' ');
        out.push_back(a == std::string::npos ? "" : c.substr(a, b - a + 1));
    }
    return out;
}

// Every key of the table has a row (first cell naming it in backquotes),
// and where the table gives a default, the row's default cell starts with it.
void expect_documented(std::span<const OptionSpec> table, const std::vector<std::string> &rows, const char *where) {
    ASSERT_FALSE(rows.empty()) << "no table found in " << where;
    for (const OptionSpec &s : table) {
        std::string quoted = "`" + std::string(s.key) + "`";
        const std::string *hit = nullptr;
        for (const auto &r : rows)
            if (cells(r).at(0).find(quoted) != std::string::npos) hit = &r;
        ASSERT_NE(hit, nullptr) << s.key << " is not in the table of " << where;
        if (s.fallback.empty()) continue;
        std::string def = cells(*hit).at(2);
        EXPECT_EQ(def.rfind(std::string(s.fallback), 0), 0u)
            << s.key << ": the table says " << s.fallback << ", " << where << " says " << def;
    }
}

TEST(OptionTables, DocsAgree) {
    auto capi = read_lines("docs/c-api.md");
    auto methods = read_lines("docs/methods.md");
    ASSERT_FALSE(capi.empty()) << "docs/c-api.md not found (SPORE_SOURCE_DIR)";
    expect_documented(router_option_table(), table_after(capi, "**Router options**"), "c-api.md (router)");
    expect_documented(connect_option_table(), table_after(methods, "## Options every method takes"), "methods.md");
    expect_documented(transfer_option_table(), table_after(capi, "removes the temporary file."), "c-api.md (files)");
    for (auto [table, fn] : {std::pair{attach_option_table(), "int spore_router_attach("},
                             std::pair{process_option_table(), "int spore_proc_start("}}) {
        std::string row;
        for (const auto &l : capi)
            if (l.find(fn) != std::string::npos) row = l;
        ASSERT_FALSE(row.empty()) << fn;
        for (const OptionSpec &s : table)
            EXPECT_NE(row.find("`" + std::string(s.key) + "`"), std::string::npos) << s.key << " in " << fn;
    }
}

TEST(OptionTables, DefaultsAreTheCodes) {
    // The defaults the tables print are the ones the code uses.
    Router::Options ro;
    KeepaliveSettings k;
    TransferOptions t;
    auto fallback = [](std::span<const OptionSpec> table, const char *key) {
        const OptionSpec *s = find_option(table, key);
        return s ? std::string(s->fallback) : std::string("(missing)");
    };
    EXPECT_EQ(fallback(router_option_table(), "max_message_size"), std::to_string(ro.max_message_size));
    EXPECT_EQ(fallback(router_option_table(), "log_level"), std::to_string(ro.log_level));
    EXPECT_EQ(fallback(router_option_table(), "log_queue_size"), std::to_string(ro.log_queue_size));
    EXPECT_EQ(fallback(router_option_table(), "log_queue_bytes"), std::to_string(ro.log_queue_bytes));
    EXPECT_EQ(fallback(router_option_table(), "liveness_interval"), std::to_string(k.interval_ms));
    EXPECT_EQ(fallback(router_option_table(), "liveness_count"), std::to_string(k.count));
    EXPECT_EQ(fallback(transfer_option_table(), "window"), std::to_string(t.window));
    EXPECT_EQ(fallback(transfer_option_table(), "max_size"), std::to_string(t.max_size));
    EXPECT_EQ(fallback(transfer_option_table(), "timeout"), std::to_string(t.timeout_ms));
    EXPECT_EQ(fallback(transfer_option_table(), "sync"), t.sync ? "true" : "false");
    EXPECT_EQ(fallback(transfer_option_table(), "preserve_mtime"), t.preserve_mtime ? "true" : "false");
    EXPECT_EQ(fallback(transfer_option_table(), "preserve_owner"), t.preserve_owner ? "true" : "false");
}

TEST(OptionTables, CheckOptionMessages) {
    OptionSpec ranged{"log_level", OptionType::kInteger, 0, 100};
    Json j(cJSON_Parse(R"({"a":101,"b":1.5,"c":"x","d":50,"e":[],"f":true})"));
    auto item = [&](const char *k) { return cJSON_GetObjectItemCaseSensitive(j.get(), k); };
    EXPECT_NO_THROW(check_option(ranged, item("d"), "router"));
    for (const char *bad : {"a", "b", "c"}) {
        try {
            check_option(ranged, item(bad), "router");
            ADD_FAILURE() << bad << " was accepted";
        } catch (const Error &e) {
            EXPECT_STREQ(e.what(), "router option 'log_level' must be an integer from 0 to 100");
        }
    }
    OptionSpec list{"ssh_args", OptionType::kList};
    EXPECT_NO_THROW(check_option(list, item("e"), ""));
    EXPECT_NO_THROW(check_option(list, item("c"), ""));
    try {
        check_option(list, item("f"), "");
        ADD_FAILURE();
    } catch (const Error &e) {
        EXPECT_STREQ(e.what(), "option 'ssh_args' must be a list of strings or a string");
    }
    EXPECT_EQ(find_option(router_option_table(), "nope"), nullptr);
}

}  // namespace
}  // namespace spore
