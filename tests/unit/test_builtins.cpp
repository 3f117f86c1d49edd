// Unit tests of the agent's built-in functions (src/agent/builtins*.cpp).
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/builtins.h"
#include "agent/builtins_util.h"

namespace {

using namespace spore;
using namespace spore::agent;
namespace fsys = std::filesystem;

struct LogRecord {
    int level;
    std::string logger, message;
};

class FakeServices : public Services {
public:
    void log(int level, std::string_view logger, std::string_view message) override {
        std::lock_guard<std::mutex> lock(mu);
        logs.push_back({level, std::string(logger), std::string(message)});
    }
    bool log_enabled(int level) const override { return level >= min_level; }
    int begin_spawn(uint32_t) override { return refuse_spawns; }
    bool register_process(pid_t pid, uint32_t) override {
        std::lock_guard<std::mutex> lock(mu);
        if (pid > 0) registered.push_back(pid);
        return true;
    }
    void unregister_process(pid_t pid) override {
        std::lock_guard<std::mutex> lock(mu);
        unregistered.push_back(pid);
    }
    std::string context_name() const override { return "test.ctx"; }
    ChannelTable *channels() override { return &table; }

    std::vector<std::string> lines(const std::string &logger) {
        std::lock_guard<std::mutex> lock(mu);
        std::vector<std::string> out;
        for (const LogRecord &r : logs)
            if (r.logger == logger) out.push_back(r.message);
        return out;
    }

    std::mutex mu;
    int min_level = 0;
    int refuse_spawns = SPORE_OK;  // what begin_spawn answers
    ChannelTable table;
    std::vector<LogRecord> logs;
    std::vector<pid_t> registered, unregistered;
};

// A JSON string literal for s.
std::string js(const std::string &s) {
    Json j(cJSON_CreateString(s.c_str()));
    return json_print(j.get());
}

void write_file(const std::string &path, const std::string &content) {
    FILE *f = fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << path;
    ASSERT_EQ(fwrite(content.data(), 1, content.size(), f), content.size());
    fclose(f);
}

std::string read_file(const std::string &path) {
    std::string out;
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) return "<missing>";
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    fclose(f);
    return out;
}

mode_t mode_of(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

bool exists(const std::string &path) {
    struct stat st;
    return lstat(path.c_str(), &st) == 0;
}

int count_fds() {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (readdir(d)) ++n;
    closedir(d);
    return n;
}

// Every name under dir (recursively) that looks like one of fs.write's temp files.
std::vector<std::string> temp_leftovers(const std::string &dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto &e : fsys::recursive_directory_iterator(dir, ec))
        if (e.path().filename().string().find(".spore-") != std::string::npos)
            out.push_back(e.path().string());
    return out;
}

class Builtins : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/spore-builtins-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
        old_umask = umask(022);
    }
    void TearDown() override {
        umask(old_umask);
        std::error_code ec;
        fsys::remove_all(dir, ec);
        // Every process started was reaped and unregistered exactly once.
        auto r = svc.registered, u = svc.unregistered;
        std::sort(r.begin(), r.end());
        std::sort(u.begin(), u.end());
        EXPECT_EQ(r, u);
    }

    std::string p(const std::string &name) const { return dir + "/" + name; }

    CallReply call(std::string_view fn, const std::string &args = "{}",
                   std::string_view data = {}) {
        const Builtin *b = find_builtin(fn);
        if (!b) throw Error(SPORE_ENOFUNC, std::string(fn));
        std::string err;
        Json j = json_parse(args, kDefaultMaxJsonDepth, &err);
        if (!j) throw Error(SPORE_EINVAL, "test bug: " + err + " in " + args);
        CallRequest req;
        req.function = b->name;
        req.args = j.get();
        req.data = data;
        CallReply reply;
        b->fn(req, reply, svc);
        return reply;
    }

    ErrorInfo call_err(std::string_view fn, const std::string &args = "{}",
                       std::string_view data = {}) {
        try {
            call(fn, args, data);
        } catch (const Error &e) {
            return e.info();
        }
        ADD_FAILURE() << fn << " " << args << ": no error";
        return {};
    }

    // proc.run with extra members appended to the args object.
    CallReply sh(const std::string &script, const std::string &extra = "",
                 std::string_view data = {}) {
        return call("proc.run", "{\"shell\":" + js(script) + extra + "}", data);
    }

    FakeServices svc;
    std::string dir;
    mode_t old_umask = 022;
};

const cJSON *member(const CallReply &r, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r.result.get(), key);
    EXPECT_NE(v, nullptr) << "missing member " << key << " in " << json_print(r.result.get());
    return v;
}
double num(const CallReply &r, const char *key) {
    const cJSON *v = member(r, key);
    EXPECT_TRUE(cJSON_IsNumber(v)) << key;
    return v && cJSON_IsNumber(v) ? v->valuedouble : -12345;
}
std::string str(const CallReply &r, const char *key) {
    const cJSON *v = member(r, key);
    EXPECT_TRUE(cJSON_IsString(v)) << key;
    return v && cJSON_IsString(v) ? v->valuestring : "<not a string>";
}
bool is_null(const CallReply &r, const char *key) { return cJSON_IsNull(member(r, key)); }
bool is_true(const CallReply &r, const char *key) { return cJSON_IsTrue(member(r, key)); }

#define EXPECT_BADARGS(info, fn, arg)                                                \
    do {                                                                              \
        ErrorInfo i_ = (info);                                                        \
        EXPECT_EQ(i_.code, SPORE_EBADARGS) << i_.message;                             \
        EXPECT_EQ(i_.message.rfind(std::string(fn) + ": argument '" arg "'", 0), 0u)  \
            << i_.message;                                                            \
    } while (0)

#define EXPECT_REMOTE(info, type, substr)                                \
    do {                                                                  \
        ErrorInfo i_ = (info);                                            \
        EXPECT_EQ(i_.code, SPORE_EREMOTE) << i_.message;                  \
        EXPECT_EQ(i_.remote_type, type) << i_.message;                    \
        EXPECT_NE(i_.message.find(substr), std::string::npos) << i_.message; \
    } while (0)

// ---- registry --------------------------------------------------------------

TEST(BuiltinsRegistry, FindsEveryFunction) {
    const char *inline_fns[] = {"sys.ping", "sys.echo", "sys.getenv", "sys.info"};
    const char *blocking_fns[] = {"proc.run", "fs.stat", "fs.read", "fs.write", "fs.list",
                                  "fs.mkdir", "fs.remove", "fs.rename", "fs.chmod", "fs.chown",
                                  "fs.readlink", "fs.symlink", "fs.mktemp"};
    for (const char *n : inline_fns) {
        const Builtin *b = find_builtin(n);
        ASSERT_NE(b, nullptr) << n;
        EXPECT_EQ(b->name, n);
        EXPECT_NE(b->fn, nullptr);
        EXPECT_FALSE(b->blocking) << n;
    }
    for (const char *n : blocking_fns) {
        const Builtin *b = find_builtin(n);
        ASSERT_NE(b, nullptr) << n;
        EXPECT_TRUE(b->blocking) << n;
    }
    EXPECT_EQ(find_builtin("sys.nope"), nullptr);
    EXPECT_EQ(find_builtin(""), nullptr);
    EXPECT_EQ(find_builtin("sys.ping2"), nullptr);
}

TEST(BuiltinsUtf8, SanitizeReplacesInvalidBytes) {
    using detail::utf8_sanitize;
    const std::string r = "\xEF\xBF\xBD";
    EXPECT_EQ(utf8_sanitize("plain ascii"), "plain ascii");
    EXPECT_EQ(utf8_sanitize("\xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E"), "\xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E");
    EXPECT_EQ(utf8_sanitize("a\xFF" "b"), "a" + r + "b");
    EXPECT_EQ(utf8_sanitize("\xC0\x80"), r + r);                  // overlong
    EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), r + r + r);          // surrogate
    EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), r + r + r + r);  // > U+10FFFF
    EXPECT_EQ(utf8_sanitize("x\xE2\x82"), "x" + r);               // truncated: one U+FFFD
    EXPECT_EQ(utf8_sanitize("\xE2\x82x"), r + "x");
    EXPECT_EQ(utf8_sanitize(std::string("a\0b", 3)), "a" + r + "b");
    EXPECT_EQ(utf8_sanitize(""), "");
}

// ---- sys.* -------------------------------------------------------------------

TEST_F(Builtins, PingReturnsTrue) {
    CallReply r = call("sys.ping");
    EXPECT_TRUE(cJSON_IsTrue(r.result.get()));
    EXPECT_TRUE(r.data.empty());
}

TEST_F(Builtins, EchoCopiesValueAndData) {
    std::string data("bin\0ary\xff", 8);
    CallReply r = call("sys.echo", R"({"value":{"a":[1,2,{"b":"c"}],"d":null}})", data);
    EXPECT_EQ(json_print(r.result.get()), R"({"a":[1,2,{"b":"c"}],"d":null})");
    EXPECT_EQ(r.data, data);
    CallReply none = call("sys.echo");
    EXPECT_TRUE(cJSON_IsNull(none.result.get()));
    EXPECT_TRUE(none.data.empty());
}

TEST_F(Builtins, GetenvOneAndAll) {
    setenv("SPORE_TEST_VAR", "v\xC3\xA9", 1);
    CallReply one = call("sys.getenv", R"({"name":"SPORE_TEST_VAR"})");
    ASSERT_TRUE(cJSON_IsString(one.result.get()));
    EXPECT_STREQ(one.result->valuestring, "v\xC3\xA9");
    CallReply missing = call("sys.getenv", R"({"name":"SPORE_NO_SUCH_VAR_X"})");
    EXPECT_TRUE(cJSON_IsNull(missing.result.get()));
    CallReply all = call("sys.getenv");
    ASSERT_TRUE(cJSON_IsObject(all.result.get()));
    EXPECT_EQ(str(all, "SPORE_TEST_VAR"), "v\xC3\xA9");
    EXPECT_EQ(str(all, "PATH"), getenv("PATH"));
    unsetenv("SPORE_TEST_VAR");
    EXPECT_BADARGS(call_err("sys.getenv", R"({"name":5})"), "sys.getenv", "name");
}

TEST_F(Builtins, InfoDescribesTheProcess) {
    CallReply r = call("sys.info");
    EXPECT_EQ(num(r, "pid"), getpid());
    EXPECT_EQ(num(r, "ppid"), getppid());
    EXPECT_EQ(num(r, "uid"), getuid());
    EXPECT_EQ(num(r, "gid"), getgid());
    EXPECT_EQ(num(r, "euid"), geteuid());
    EXPECT_EQ(num(r, "egid"), getegid());
    EXPECT_EQ(str(r, "os"), "Linux");
    EXPECT_FALSE(str(r, "release").empty());
    EXPECT_FALSE(str(r, "arch").empty());
    EXPECT_FALSE(str(r, "hostname").empty());
    EXPECT_EQ(str(r, "version"), agent_version());
    EXPECT_EQ(str(r, "context"), "test.ctx");
    char *cwd = getcwd(nullptr, 0);
    EXPECT_EQ(str(r, "cwd"), cwd);
    free(cwd);
    if (getuid() == 0) {
        EXPECT_EQ(str(r, "user"), "root");
        EXPECT_EQ(str(r, "home"), "/root");
    } else {
        EXPECT_FALSE(str(r, "user").empty());
    }
    member(r, "shell");
}

// ---- proc.run ---------------------------------------------------------------

TEST_F(Builtins, RunArgvReturnsCode) {
    CallReply r = call("proc.run", R"({"argv":["sh","-c","echo out; echo err >&2; exit 3"]})");
    EXPECT_EQ(num(r, "rc"), 3);
    EXPECT_TRUE(is_null(r, "signal"));
    EXPECT_EQ(str(r, "stdout"), "out\n");
    EXPECT_EQ(str(r, "stderr"), "err\n");
    EXPECT_FALSE(is_true(r, "timed_out"));
    EXPECT_FALSE(is_true(r, "truncated"));
    pid_t pid = pid_t(num(r, "pid"));
    EXPECT_GT(pid, 0);
    ASSERT_EQ(svc.registered.size(), 1u);
    EXPECT_EQ(svc.registered[0], pid);
    EXPECT_EQ(svc.unregistered, svc.registered);
    EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);  // already reaped
}

TEST_F(Builtins, RunShellSuccess) {
    CallReply r = sh("printf hello");
    EXPECT_EQ(num(r, "rc"), 0);
    EXPECT_EQ(str(r, "stdout"), "hello");
    EXPECT_EQ(str(r, "stderr"), "");
}

TEST_F(Builtins, RunReportsSignal) {
    CallReply r = sh("kill -9 $$");
    EXPECT_TRUE(is_null(r, "rc"));
    EXPECT_EQ(num(r, "signal"), SIGKILL);
    EXPECT_FALSE(is_true(r, "timed_out"));
}

TEST_F(Builtins, RunTimeoutKillsQuickly) {
    auto t0 = std::chrono::steady_clock::now();
    CallReply r = call("proc.run", R"({"argv":["sleep","10"],"timeout_ms":200})");
    auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(elapsed, std::chrono::seconds(3));
    EXPECT_GE(elapsed, std::chrono::milliseconds(190));
    EXPECT_TRUE(is_true(r, "timed_out"));
    EXPECT_TRUE(is_null(r, "rc"));
    EXPECT_EQ(num(r, "signal"), SIGKILL);
    pid_t pid = pid_t(num(r, "pid"));
    errno = 0;
    EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);  // no zombie left behind
    EXPECT_EQ(errno, ECHILD);
    EXPECT_EQ(svc.unregistered, svc.registered);
}

TEST_F(Builtins, RunTimeoutKillsTheProcessGroup) {
    // The background sleep keeps stdout open: only a group kill ends the call.
    auto t0 = std::chrono::steady_clock::now();
    CallReply r = sh("sleep 10 & sleep 10", R"(,"timeout_ms":200)");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
    EXPECT_TRUE(is_true(r, "timed_out"));
}

TEST_F(Builtins, RunTimeoutAfterOutputsClosed) {
    auto t0 = std::chrono::steady_clock::now();
    CallReply r = sh("exec >/dev/null 2>&1; sleep 10", R"(,"timeout_ms":200)");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
    EXPECT_TRUE(is_true(r, "timed_out"));
    EXPECT_EQ(num(r, "signal"), SIGKILL);
}

TEST_F(Builtins, RunWithinTimeoutIsNormal) {
    CallReply r = sh("exit 0", R"(,"timeout_ms":10000)");
    EXPECT_EQ(num(r, "rc"), 0);
    EXPECT_FALSE(is_true(r, "timed_out"));
}

TEST_F(Builtins, RunStreamsLinesInOrder) {
    CallReply r = sh("for i in 1 2 3; do echo o$i; echo e$i >&2; done; printf tail",
                     R"(,"stream":true)");
    EXPECT_EQ(str(r, "stdout"), "o1\no2\no3\ntail");
    std::vector<std::string> out = {"o1", "o2", "o3", "tail"}, err = {"e1", "e2", "e3"};
    EXPECT_EQ(svc.lines("stdout"), out);
    EXPECT_EQ(svc.lines("stderr"), err);
    for (const LogRecord &l : svc.logs) EXPECT_EQ(l.level, 20);
}

TEST_F(Builtins, RunStreamSplitsLongLines) {
    CallReply r = sh("head -c 200000 /dev/zero | tr '\\0' a; echo; printf '%65536s\\n' x",
                     R"(,"stream":true,"capture":false)");
    EXPECT_EQ(str(r, "stdout"), "");
    std::vector<std::string> lines = svc.lines("stdout");
    ASSERT_EQ(lines.size(), 5u);
    EXPECT_EQ(lines[0], std::string(65536, 'a'));
    EXPECT_EQ(lines[1].size(), 65536u);
    EXPECT_EQ(lines[2].size(), 65536u);
    EXPECT_EQ(lines[3], std::string(200000 - 3 * 65536, 'a'));
    EXPECT_EQ(lines[4].size(), 65536u);  // exactly 64 KiB: not followed by an empty line
}

TEST_F(Builtins, RunStreamOffWhenLevelFiltered) {
    svc.min_level = 30;
    CallReply r = sh("echo hi", R"(,"stream":true)");
    EXPECT_EQ(str(r, "stdout"), "hi\n");
    EXPECT_TRUE(svc.logs.empty());
}

TEST_F(Builtins, RunCaptures8MiBStderr) {
    CallReply r = sh("head -c 8388608 /dev/zero | tr '\\0' x >&2; echo done");
    EXPECT_EQ(num(r, "rc"), 0);
    std::string err = str(r, "stderr");
    EXPECT_EQ(err.size(), 8388608u);
    EXPECT_EQ(err.find_first_not_of('x'), std::string::npos);
    EXPECT_EQ(str(r, "stdout"), "done\n");
}

TEST_F(Builtins, RunNoDeadlockWithBigStdinAndOutput) {
    std::string input;
    for (int i = 0; input.size() < (4u << 20); ++i) input += std::to_string(i) + "\n";
    CallReply r = sh("cat; head -c 2000000 /dev/zero | tr '\\0' e >&2", "", input);
    EXPECT_EQ(num(r, "rc"), 0);
    EXPECT_EQ(str(r, "stdout"), input);
    EXPECT_EQ(str(r, "stderr").size(), 2000000u);
}

TEST_F(Builtins, RunStdinFromArgumentAndData) {
    CallReply a = call("proc.run", R"({"argv":["cat"],"stdin":"from arg"})");
    EXPECT_EQ(str(a, "stdout"), "from arg");
    CallReply b = call("proc.run", R"({"argv":["cat"]})", "from data");
    EXPECT_EQ(str(b, "stdout"), "from data");
    CallReply c = call("proc.run", R"({"argv":["cat"]})");  // /dev/null
    EXPECT_EQ(str(c, "stdout"), "");
    EXPECT_EQ(num(c, "rc"), 0);
}

TEST_F(Builtins, RunChildIgnoringStdin) {
    std::string input(4 << 20, 'z');
    CallReply r = call("proc.run", R"({"argv":["true"]})", input);
    EXPECT_EQ(num(r, "rc"), 0);  // and the test process got no SIGPIPE
}

TEST_F(Builtins, RunEnvAndCwd) {
    CallReply a = sh("echo \"$SPORE_A-$PATH\"", R"(,"env":{"SPORE_A":"1"})");
    EXPECT_EQ(str(a, "stdout"), std::string("1-") + getenv("PATH") + "\n");
    CallReply b = call("proc.run", R"({"argv":["/usr/bin/env"],"env_clear":true,"env":{"X":"y"}})");
    EXPECT_EQ(str(b, "stdout"), "X=y\n");
    setenv("SPORE_UNSET_ME", "1", 1);
    CallReply c = sh("echo ${SPORE_UNSET_ME-unset}", R"(,"env":{"SPORE_UNSET_ME":null})");
    EXPECT_EQ(str(c, "stdout"), "unset\n");
    unsetenv("SPORE_UNSET_ME");
    CallReply d = call("proc.run", R"({"argv":["pwd"],"cwd":)" + js(dir) + "}");
    char *real = realpath(dir.c_str(), nullptr);
    EXPECT_EQ(str(d, "stdout"), std::string(real) + "\n");
    free(real);
}

TEST_F(Builtins, RunUsesPathOfChildEnv) {
    ASSERT_EQ(mkdir(p("bin").c_str(), 0755), 0);
    write_file(p("bin/spore-test-prog"), "#!/bin/sh\necho from-prog\n");
    chmod(p("bin/spore-test-prog").c_str(), 0755);
    CallReply r = call("proc.run", R"({"argv":["spore-test-prog"],"env":{"PATH":)" +
                                       js(p("bin") + ":/usr/bin:/bin") + "}}");
    EXPECT_EQ(str(r, "stdout"), "from-prog\n");
}

TEST_F(Builtins, RunBadCwd) {
    ErrorInfo e = call_err("proc.run", R"({"argv":["true"],"cwd":)" + js(p("nope")) + "}");
    EXPECT_REMOTE(e, "FileNotFoundError", p("nope"));
    EXPECT_TRUE(svc.registered.empty());
}

// Prepare steps register a call's channels as it arrives, refuse channels
// in use without touching them, and undo themselves when dropped.
TEST_F(Builtins, PrepareRegistersChannelsAndUndoesItself) {
    const Builtin *put = find_builtin("fs.put"), *start = find_builtin("proc.start");
    ASSERT_TRUE(put && put->prepare && start && start->prepare);
    Json at10 = json_parse(R"({"ch":10})", kDefaultMaxJsonDepth, nullptr);
    Json at11 = json_parse(R"({"ch":11})", kDefaultMaxJsonDepth, nullptr);
    std::shared_ptr<void> first = start->prepare(CallRequest{"proc.start", at10.get(), {}, 7, nullptr}, svc);
    EXPECT_EQ(svc.table.size(), 3u);
    auto refused = [&](const Builtin *b, const cJSON *args, const char *want) {
        try {
            b->prepare(CallRequest{b->name, args, {}, 7, nullptr}, svc);
            ADD_FAILURE() << b->name << ": no error";
        } catch (const Error &e) {
            EXPECT_EQ(e.info().code, SPORE_EPROTO);
            EXPECT_NE(e.info().message.find(want), std::string::npos) << e.info().message;
        }
        EXPECT_EQ(svc.table.size(), 3u);  // the channels in use are left alone
    };
    refused(start, at11.get(), "proc.start: channels 11-13 are already in use");
    refused(put, at11.get(), "fs.put: channel 11 is already in use");
    // The same numbers from another caller are other channels.
    std::shared_ptr<void> other = start->prepare(CallRequest{"proc.start", at10.get(), {}, 8, nullptr}, svc);
    std::shared_ptr<void> file = put->prepare(CallRequest{"fs.put", at11.get(), {}, 9, nullptr}, svc);
    EXPECT_EQ(svc.table.size(), 7u);
    first.reset();
    EXPECT_EQ(svc.table.size(), 4u);
    other.reset();
    file.reset();
    EXPECT_EQ(svc.table.size(), 0u);
    // Without ch fs.put has nothing to prepare.
    Json none = json_parse("{}", kDefaultMaxJsonDepth, nullptr);
    EXPECT_EQ(put->prepare(CallRequest{"fs.put", none.get(), {}, 7, nullptr}, svc), nullptr);
}

// A caller that gave up before its process started (its abort failed the
// output channels): proc.start starts nothing and fails with that error.
TEST_F(Builtins, ProcStartGivenUpBeforeItRunsStartsNothing) {
    const Builtin *start = find_builtin("proc.start");
    Json args = json_parse(R"({"argv":["true"],"ch":20})", kDefaultMaxJsonDepth, nullptr);
    CallRequest req{"proc.start", args.get(), {}, 7, nullptr};
    req.prepared = start->prepare(req, svc);
    auto out = svc.table.find(7, 21);
    ASSERT_TRUE(out && out->window);
    out->window->fail(ErrorInfo{SPORE_EDISCONNECTED, "the caller gave up on the process", "", "", ""});
    CallReply reply;
    try {
        start->fn(req, reply, svc);
        ADD_FAILURE() << "proc.start ran";
    } catch (const Error &e) {
        EXPECT_EQ(e.info().code, SPORE_EDISCONNECTED);
        EXPECT_EQ(e.info().message, "the caller gave up on the process");
    }
    EXPECT_TRUE(svc.registered.empty());
}

// An exiting agent, or a caller that has gone, starts nothing.
TEST_F(Builtins, RunRefusedWhenSpawnsAreClosed) {
    svc.refuse_spawns = SPORE_ESHUTDOWN;
    ErrorInfo e = call_err("proc.run", R"({"argv":["true"]})");
    EXPECT_EQ(e.code, SPORE_ESHUTDOWN);
    EXPECT_NE(e.message.find("proc.run: nothing started: context test.ctx is exiting"), std::string::npos) << e.message;
    svc.refuse_spawns = SPORE_EDISCONNECTED;
    ErrorInfo g = call_err("proc.run", R"({"argv":["true"]})");
    EXPECT_EQ(g.code, SPORE_EDISCONNECTED);
    EXPECT_NE(g.message.find("its caller has gone"), std::string::npos) << g.message;
    EXPECT_TRUE(svc.registered.empty());
}

TEST_F(Builtins, RunReplacesInvalidUtf8) {
    CallReply r = sh("printf 'a\\377b\\300\\200c'; printf '\\351t\\351' >&2");
    EXPECT_EQ(str(r, "stdout"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c");
    EXPECT_EQ(str(r, "stderr"), "\xEF\xBF\xBDt\xEF\xBF\xBD");
}

TEST_F(Builtins, RunStdoutBinary) {
    CallReply r = sh("printf 'a\\000\\377'", R"(,"stdout_binary":true)");
    EXPECT_EQ(r.data, std::string("a\0\xff", 3));
    EXPECT_EQ(str(r, "stdout"), "");
}

TEST_F(Builtins, RunMaxOutputTruncates) {
    CallReply r = sh("head -c 100000 /dev/zero | tr '\\0' q", R"(,"max_output":100)");
    EXPECT_EQ(str(r, "stdout"), std::string(100, 'q'));
    EXPECT_TRUE(is_true(r, "truncated"));
    EXPECT_EQ(num(r, "rc"), 0);
}

TEST_F(Builtins, RunMissingProgram) {
    ErrorInfo e = call_err("proc.run", R"({"argv":["nosuchprog"]})");
    EXPECT_REMOTE(e, "FileNotFoundError",
                  "proc.run: cannot execute 'nosuchprog': No such file or directory");
    EXPECT_TRUE(svc.registered.empty());
    ErrorInfo e2 = call_err("proc.run", R"({"argv":["/no/such/prog"]})");
    EXPECT_REMOTE(e2, "FileNotFoundError", "/no/such/prog");
}

TEST_F(Builtins, RunBadArguments) {
    EXPECT_BADARGS(call_err("proc.run", "{}"), "proc.run", "argv");
    EXPECT_BADARGS(call_err("proc.run", R"({"argv":[]})"), "proc.run", "argv");
    EXPECT_BADARGS(call_err("proc.run", R"({"argv":"ls"})"), "proc.run", "argv");
    EXPECT_BADARGS(call_err("proc.run", R"({"argv":["ls",1]})"), "proc.run", "argv");
    EXPECT_BADARGS(call_err("proc.run", R"({"argv":["ls"],"shell":"ls"})"), "proc.run", "argv");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":1})"), "proc.run", "shell");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","timeout_ms":"x"})"), "proc.run", "timeout_ms");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","timeout_ms":-1})"), "proc.run", "timeout_ms");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","env":{"A":1}})"), "proc.run", "env");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","env":{"A=B":"1"}})"), "proc.run", "env");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","env":[]})"), "proc.run", "env");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","cwd":3})"), "proc.run", "cwd");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","stream":1})"), "proc.run", "stream");
    EXPECT_BADARGS(call_err("proc.run", R"({"shell":"true","max_output":1.5})"), "proc.run", "max_output");
    EXPECT_TRUE(svc.registered.empty());
}

TEST_F(Builtins, RunLeaksNoDescriptors) {
    int before = count_fds();
    sh("echo hi; echo there >&2", "", "input");
    call("proc.run", R"({"argv":["sleep","5"],"timeout_ms":50})");
    call_err("proc.run", R"({"argv":["nosuchprog"]})");
    EXPECT_EQ(count_fds(), before);
}

TEST_F(Builtins, RunConcurrentlyFromWorkerThreads) {
    // Blocking built-ins run on several worker threads at once.
    std::vector<std::thread> threads;
    std::vector<std::string> outs(6), errs(6);
    for (int t = 0; t < 6; ++t)
        threads.emplace_back([&, t] {
            std::string input(300000 + t, char('a' + t));
            CallReply r = sh("cat; echo err" + std::to_string(t) + " >&2", "", input);
            outs[size_t(t)] = str(r, "stdout");
            errs[size_t(t)] = str(r, "stderr");
            call("sys.info");
        });
    for (std::thread &th : threads) th.join();
    for (int t = 0; t < 6; ++t) {
        EXPECT_EQ(outs[size_t(t)], std::string(300000 + t, char('a' + t)));
        EXPECT_EQ(errs[size_t(t)], "err" + std::to_string(t) + "\n");
    }
    EXPECT_EQ(svc.registered.size(), 6u);
}

TEST_F(Builtins, RunChildSeesDefaultSignalsAndOwnGroup) {
    // A SIGPIPE ignored by the agent must not be inherited; the child leads
    // its own process group.
    signal(SIGPIPE, SIG_IGN);
    CallReply r = sh("sed -n 's/^Sig\\(Blk\\|Ign\\):\\t//p' /proc/self/status; cut -d' ' -f5 /proc/$$/stat");
    signal(SIGPIPE, SIG_DFL);
    unsigned long long blocked = 1, ignored = 1;
    long pgid = 0;
    ASSERT_EQ(sscanf(str(r, "stdout").c_str(), "%llx %llx %ld", &blocked, &ignored, &pgid), 3)
        << str(r, "stdout");
    EXPECT_EQ(blocked, 0u);
    // glibc's posix_spawn leaves its own internal signals 32/33 ignored; the
    // standard ones (SIGPIPE among them) are back to default.
    EXPECT_EQ(ignored & 0x7fffffffull, 0u);  // bit n-1 is signal n
    EXPECT_EQ(pgid, long(num(r, "pid")));
}

// ---- fs.stat ----------------------------------------------------------------

TEST_F(Builtins, StatFile) {
    write_file(p("f"), "hello");
    chmod(p("f").c_str(), 0640);
    CallReply r = call("fs.stat", R"({"path":)" + js(p("f")) + "}");
    EXPECT_EQ(str(r, "type"), "file");
    EXPECT_EQ(num(r, "size"), 5);
    EXPECT_EQ(num(r, "mode"), 0640);
    EXPECT_EQ(num(r, "uid"), geteuid());
    EXPECT_EQ(num(r, "gid"), getegid());
    EXPECT_EQ(num(r, "nlink"), 1);
    if (geteuid() == 0) {
        EXPECT_EQ(str(r, "user"), "root");
        EXPECT_EQ(str(r, "group"), "root");
    }
    struct stat st;
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(num(r, "ino"), double(st.st_ino));
    EXPECT_EQ(num(r, "dev"), double(st.st_dev));
    EXPECT_NEAR(num(r, "mtime"), double(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec / 1e9, 1e-6);
    EXPECT_NEAR(num(r, "mtime"), double(time(nullptr)), 5);
    member(r, "atime");
    member(r, "ctime");
}

TEST_F(Builtins, StatTypes) {
    ASSERT_EQ(mkdir(p("d").c_str(), 0755), 0);
    ASSERT_EQ(symlink("d", p("l").c_str()), 0);
    ASSERT_EQ(mkfifo(p("fifo").c_str(), 0600), 0);
    EXPECT_EQ(str(call("fs.stat", R"({"path":)" + js(p("d")) + "}"), "type"), "dir");
    EXPECT_EQ(str(call("fs.stat", R"({"path":)" + js(p("l")) + "}"), "type"), "dir");
    EXPECT_EQ(str(call("fs.stat", R"({"path":)" + js(p("l")) + R"(,"follow":false})"), "type"),
              "symlink");
    EXPECT_EQ(str(call("fs.stat", R"({"path":)" + js(p("fifo")) + "}"), "type"), "fifo");
    EXPECT_EQ(str(call("fs.stat", R"({"path":"/dev/null"})"), "type"), "char");
    // uid without a name: user null.
    write_file(p("orphan"), "");
    if (geteuid() == 0 && chown(p("orphan").c_str(), 54321, 54321) == 0) {
        CallReply r = call("fs.stat", R"({"path":)" + js(p("orphan")) + "}");
        EXPECT_TRUE(is_null(r, "user"));
        EXPECT_TRUE(is_null(r, "group"));
        EXPECT_EQ(num(r, "uid"), 54321);
    }
}

TEST_F(Builtins, StatErrors) {
    ErrorInfo e = call_err("fs.stat", R"({"path":)" + js(p("missing")) + "}");
    EXPECT_REMOTE(e, "FileNotFoundError", "fs.stat: " + p("missing") + ": No such file or directory");
    EXPECT_NE(e.message.find("errno 2"), std::string::npos) << e.message;
    write_file(p("f"), "x");
    EXPECT_REMOTE(call_err("fs.stat", R"({"path":)" + js(p("f/x")) + "}"), "NotADirectoryError", p("f/x"));
    ErrorInfo b = call_err("fs.stat", "{}");
    EXPECT_EQ(b.code, SPORE_EBADARGS);
    EXPECT_EQ(b.message, "fs.stat: argument 'path' must be a string");
    EXPECT_BADARGS(call_err("fs.stat", R"({"path":5})"), "fs.stat", "path");
    EXPECT_BADARGS(call_err("fs.stat", R"({"path":""})"), "fs.stat", "path");
    EXPECT_BADARGS(call_err("fs.stat", R"({"path":"/","follow":"yes"})"), "fs.stat", "follow");
}

// ---- fs.read ----------------------------------------------------------------

TEST_F(Builtins, ReadWholeAndRange) {
    std::string content("0123456789\0\xff", 12);
    write_file(p("f"), content);
    CallReply r = call("fs.read", R"({"path":)" + js(p("f")) + "}");
    EXPECT_EQ(r.data, content);
    EXPECT_EQ(num(r, "size"), 12);
    CallReply part = call("fs.read", R"({"path":)" + js(p("f")) + R"(,"offset":3,"length":4})");
    EXPECT_EQ(part.data, "3456");
    EXPECT_EQ(num(part, "size"), 4);
    CallReply tail = call("fs.read", R"({"path":)" + js(p("f")) + R"(,"offset":10})");
    EXPECT_EQ(tail.data, std::string("\0\xff", 2));
    CallReply past = call("fs.read", R"({"path":)" + js(p("f")) + R"(,"offset":100})");
    EXPECT_EQ(past.data, "");
    EXPECT_EQ(num(past, "size"), 0);
    CallReply zero = call("fs.read", R"({"path":)" + js(p("f")) + R"(,"length":0})");
    EXPECT_EQ(zero.data, "");
}

TEST_F(Builtins, ReadLargeAndUnsizedFiles) {
    std::string big;
    for (int i = 0; big.size() < 3000000; ++i) big += std::to_string(i * 7919LL) + ",";
    write_file(p("big"), big);
    EXPECT_EQ(call("fs.read", R"({"path":)" + js(p("big")) + "}").data, big);
    CallReply proc = call("fs.read", R"({"path":"/proc/self/status"})");
    EXPECT_NE(proc.data.find("Pid:"), std::string::npos);
    write_file(p("empty"), "");
    EXPECT_EQ(call("fs.read", R"({"path":)" + js(p("empty")) + "}").data, "");
}

TEST_F(Builtins, ReadErrors) {
    EXPECT_REMOTE(call_err("fs.read", R"({"path":)" + js(p("missing")) + "}"), "FileNotFoundError",
                  p("missing"));
    EXPECT_REMOTE(call_err("fs.read", R"({"path":)" + js(dir) + "}"), "IsADirectoryError", dir);
    EXPECT_BADARGS(call_err("fs.read", R"({"path":"/etc/passwd","offset":-1})"), "fs.read", "offset");
    EXPECT_BADARGS(call_err("fs.read", R"({"path":"/etc/passwd","length":"1"})"), "fs.read", "length");
    EXPECT_BADARGS(call_err("fs.read", "{}"), "fs.read", "path");
}

// ---- fs.write ---------------------------------------------------------------

TEST_F(Builtins, WriteDataAndText) {
    std::string data("bytes\0\xff", 7);
    CallReply r = call("fs.write", R"({"path":)" + js(p("a")) + "}", data);
    EXPECT_EQ(num(r, "size"), 7);
    EXPECT_EQ(read_file(p("a")), data);
    EXPECT_EQ(mode_of(p("a")), 0644u);  // 0644 & ~022
    CallReply t = call("fs.write", R"({"path":)" + js(p("b")) + R"(,"text":"h\u00e9"})");
    EXPECT_EQ(num(t, "size"), 3);
    EXPECT_EQ(read_file(p("b")), "h\xC3\xA9");
    call("fs.write", R"({"path":)" + js(p("c")) + "}");  // empty file
    EXPECT_EQ(read_file(p("c")), "");
    EXPECT_TRUE(temp_leftovers(dir).empty());
}

TEST_F(Builtins, WriteHonoursUmaskAndMode) {
    umask(077);
    call("fs.write", R"({"path":)" + js(p("u")) + R"(,"text":"x"})");
    EXPECT_EQ(mode_of(p("u")), 0600u);
    call("fs.write", R"({"path":)" + js(p("m")) + R"(,"text":"x","mode":1911})");  // 03567
    EXPECT_EQ(mode_of(p("m")), 03567u);
}

TEST_F(Builtins, WriteKeepsExistingModeAndOwner) {
    write_file(p("f"), "old");
    chmod(p("f").c_str(), 0751);
    bool chowned = geteuid() == 0 && chown(p("f").c_str(), 1234, 4321) == 0;
    call("fs.write", R"({"path":)" + js(p("f")) + "}", "new content");
    EXPECT_EQ(read_file(p("f")), "new content");
    EXPECT_EQ(mode_of(p("f")), 0751u);
    if (chowned) {
        struct stat st;
        ASSERT_EQ(stat(p("f").c_str(), &st), 0);
        EXPECT_EQ(st.st_uid, 1234u);
        EXPECT_EQ(st.st_gid, 4321u);
    }
    call("fs.write", R"({"path":)" + js(p("f")) + R"(,"mode":384})", "again");  // explicit wins
    EXPECT_EQ(mode_of(p("f")), 0600u);
    EXPECT_TRUE(temp_leftovers(dir).empty());
}

TEST_F(Builtins, WriteOwner) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    call("fs.write", R"({"path":)" + js(p("o")) + R"(,"uid":1111,"gid":2222,"mode":)" +
                             std::to_string(02755) + "}",
         "x");
    struct stat st;
    ASSERT_EQ(stat(p("o").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1111u);
    EXPECT_EQ(st.st_gid, 2222u);
    EXPECT_EQ(st.st_mode & 07777, 02755u);  // set-gid survives: chown came first
}

TEST_F(Builtins, WriteMkdirs) {
    std::string path = p("x/y/z/file");
    EXPECT_REMOTE(call_err("fs.write", R"({"path":)" + js(path) + "}", "d"), "FileNotFoundError", path);
    call("fs.write", R"({"path":)" + js(path) + R"(,"mkdirs":true})", "d");
    EXPECT_EQ(read_file(path), "d");
    EXPECT_EQ(mode_of(p("x/y")), 0755u);
}

TEST_F(Builtins, WriteIsAtomicAndCleansUp) {
    write_file(p("keep"), "original");
    // Failures: missing directory, destination is a directory, parent is a file.
    EXPECT_REMOTE(call_err("fs.write", R"({"path":)" + js(p("nodir/f")) + "}", "x"),
                  "FileNotFoundError", p("nodir/f"));
    ASSERT_EQ(mkdir(p("adir").c_str(), 0755), 0);
    EXPECT_REMOTE(call_err("fs.write", R"({"path":)" + js(p("adir")) + "}", "x"),
                  "IsADirectoryError", p("adir"));
    EXPECT_REMOTE(call_err("fs.write", R"({"path":)" + js(p("adir/")) + "}", "x"),
                  "IsADirectoryError", p("adir/"));
    EXPECT_REMOTE(call_err("fs.write", R"({"path":)" + js(p("keep/f")) + "}", "x"),
                  "NotADirectoryError", p("keep/f"));
    EXPECT_BADARGS(call_err("fs.write", R"({"path":)" + js(p("keep")) + R"(,"mode":4096})", "x"),
                   "fs.write", "mode");
    EXPECT_BADARGS(call_err("fs.write", R"({"path":)" + js(p("keep")) + R"(,"text":1})"),
                   "fs.write", "text");
    EXPECT_EQ(read_file(p("keep")), "original");
    EXPECT_TRUE(temp_leftovers(dir).empty());
    // Success: the old inode is replaced, not rewritten in place.
    struct stat before, after;
    ASSERT_EQ(stat(p("keep").c_str(), &before), 0);
    call("fs.write", R"({"path":)" + js(p("keep")) + "}", "replaced");
    ASSERT_EQ(stat(p("keep").c_str(), &after), 0);
    EXPECT_NE(before.st_ino, after.st_ino);
    EXPECT_EQ(read_file(p("keep")), "replaced");
    std::vector<std::string> names;
    for (auto &e : fsys::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"adir", "keep"}));
}

TEST_F(Builtins, WriteRelativePathAndLongName) {
    char *cwd = getcwd(nullptr, 0);
    ASSERT_EQ(chdir(dir.c_str()), 0);
    call("fs.write", R"({"path":"rel"})", "r");
    std::string longname(250, 'n');
    call("fs.write", R"({"path":)" + js(longname) + "}", "l");
    ASSERT_EQ(chdir(cwd), 0);
    free(cwd);
    EXPECT_EQ(read_file(p("rel")), "r");
    EXPECT_EQ(read_file(p(std::string(250, 'n'))), "l");
    EXPECT_TRUE(temp_leftovers(dir).empty());
}

// ---- fs.list ----------------------------------------------------------------

TEST_F(Builtins, ListSortedWithTypes) {
    write_file(p("b"), "");
    write_file(p("a"), "");
    ASSERT_EQ(mkdir(p("c").c_str(), 0755), 0);
    ASSERT_EQ(symlink("a", p("d").c_str()), 0);
    ASSERT_EQ(mkfifo(p("B").c_str(), 0600), 0);
    CallReply r = call("fs.list", R"({"path":)" + js(dir) + "}");
    EXPECT_EQ(json_print(r.result.get()),
              R"([{"name":"B","type":"fifo"},{"name":"a","type":"file"},{"name":"b","type":"file"},)"
              R"({"name":"c","type":"dir"},{"name":"d","type":"symlink"}])");
    CallReply empty = call("fs.list", R"({"path":)" + js(p("c")) + "}");
    EXPECT_EQ(json_print(empty.result.get()), "[]");
}

TEST_F(Builtins, ListErrors) {
    EXPECT_REMOTE(call_err("fs.list", R"({"path":)" + js(p("missing")) + "}"), "FileNotFoundError",
                  p("missing"));
    write_file(p("f"), "");
    EXPECT_REMOTE(call_err("fs.list", R"({"path":)" + js(p("f")) + "}"), "NotADirectoryError", p("f"));
    EXPECT_BADARGS(call_err("fs.list", R"({"path":[]})"), "fs.list", "path");
}

// ---- fs.mkdir ---------------------------------------------------------------

TEST_F(Builtins, MkdirModesAndFlags) {
    CallReply r = call("fs.mkdir", R"({"path":)" + js(p("d")) + "}");
    EXPECT_TRUE(cJSON_IsNull(r.result.get()) || !r.result);
    EXPECT_EQ(mode_of(p("d")), 0755u);
    call("fs.mkdir", R"({"path":)" + js(p("private")) + R"(,"mode":448})");
    EXPECT_EQ(mode_of(p("private")), 0700u);
    EXPECT_REMOTE(call_err("fs.mkdir", R"({"path":)" + js(p("d")) + "}"), "FileExistsError", p("d"));
    call("fs.mkdir", R"({"path":)" + js(p("d")) + R"(,"exist_ok":true})");
    call("fs.mkdir", R"({"path":)" + js(p("d/")) + R"(,"exist_ok":true})");
    write_file(p("f"), "");
    EXPECT_REMOTE(call_err("fs.mkdir", R"({"path":)" + js(p("f")) + R"(,"exist_ok":true})"),
                  "FileExistsError", p("f"));
    EXPECT_REMOTE(call_err("fs.mkdir", R"({"path":)" + js(p("x/y")) + "}"), "FileNotFoundError", p("x/y"));
    call("fs.mkdir", R"({"path":)" + js(p("x//y/z/")) + R"(,"parents":true})");
    EXPECT_TRUE(fsys::is_directory(p("x/y/z")));
    call("fs.mkdir", R"({"path":)" + js(p("x/y/z")) + R"(,"parents":true,"exist_ok":true})");
    EXPECT_REMOTE(call_err("fs.mkdir", R"({"path":)" + js(p("f/sub")) + R"(,"parents":true})"),
                  "NotADirectoryError", p("f"));
    EXPECT_BADARGS(call_err("fs.mkdir", R"({"path":"/x","mode":-1})"), "fs.mkdir", "mode");
    EXPECT_BADARGS(call_err("fs.mkdir", R"({"path":"/x","parents":"yes"})"), "fs.mkdir", "parents");
}

// ---- fs.remove --------------------------------------------------------------

TEST_F(Builtins, RemoveFilesAndDirs) {
    write_file(p("f"), "");
    call("fs.remove", R"({"path":)" + js(p("f")) + "}");
    EXPECT_FALSE(exists(p("f")));
    ASSERT_EQ(mkdir(p("empty").c_str(), 0755), 0);
    call("fs.remove", R"({"path":)" + js(p("empty")) + "}");
    EXPECT_FALSE(exists(p("empty")));
    ASSERT_EQ(mkdir(p("full").c_str(), 0755), 0);
    write_file(p("full/x"), "");
    EXPECT_REMOTE(call_err("fs.remove", R"({"path":)" + js(p("full")) + "}"), "OSError", p("full"));
    EXPECT_TRUE(exists(p("full/x")));
    EXPECT_REMOTE(call_err("fs.remove", R"({"path":)" + js(p("missing")) + "}"), "FileNotFoundError",
                  p("missing"));
    call("fs.remove", R"({"path":)" + js(p("missing")) + R"(,"missing_ok":true})");
    EXPECT_BADARGS(call_err("fs.remove", R"({"path":"/x","recursive":1})"), "fs.remove", "recursive");
}

TEST_F(Builtins, RemoveRecursiveDoesNotFollowSymlinks) {
    // Outside the tree: must survive.
    ASSERT_EQ(mkdir(p("outside").c_str(), 0755), 0);
    write_file(p("outside/precious"), "keep me");
    // The tree, with links to the outside directory and file.
    std::string t = p("tree");
    ASSERT_EQ(mkdir(t.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((t + "/a").c_str(), 0755), 0);
    ASSERT_EQ(mkdir((t + "/a/b").c_str(), 0700), 0);
    write_file(t + "/a/b/deep", "x");
    write_file(t + "/top", "x");
    ASSERT_EQ(mkfifo((t + "/a/fifo").c_str(), 0600), 0);
    ASSERT_EQ(symlink(p("outside").c_str(), (t + "/a/link-dir").c_str()), 0);
    ASSERT_EQ(symlink(p("outside/precious").c_str(), (t + "/link-file").c_str()), 0);
    ASSERT_EQ(symlink("/nonexistent", (t + "/dangling").c_str()), 0);
    chmod((t + "/a/b").c_str(), 0);  // root ignores it; others would fail anyway
    chmod((t + "/a/b").c_str(), 0700);
    call("fs.remove", R"({"path":)" + js(t) + R"(,"recursive":true})");
    EXPECT_FALSE(exists(t));
    EXPECT_EQ(read_file(p("outside/precious")), "keep me");

    // A symlink to a directory given as the path: only the link goes.
    ASSERT_EQ(symlink(p("outside").c_str(), p("toplink").c_str()), 0);
    call("fs.remove", R"({"path":)" + js(p("toplink")) + R"(,"recursive":true})");
    EXPECT_FALSE(exists(p("toplink")));
    EXPECT_EQ(read_file(p("outside/precious")), "keep me");
    // Recursive on a plain file works too.
    call("fs.remove", R"({"path":)" + js(p("outside/precious")) + R"(,"recursive":true})");
    EXPECT_FALSE(exists(p("outside/precious")));
}

// ---- fs.rename, fs.chmod, fs.chown ------------------------------------------

TEST_F(Builtins, Rename) {
    write_file(p("a"), "A");
    write_file(p("b"), "B");
    call("fs.rename", R"({"src":)" + js(p("a")) + R"(,"dst":)" + js(p("b")) + "}");
    EXPECT_FALSE(exists(p("a")));
    EXPECT_EQ(read_file(p("b")), "A");
    EXPECT_REMOTE(call_err("fs.rename", R"({"src":)" + js(p("a")) + R"(,"dst":)" + js(p("c")) + "}"),
                  "FileNotFoundError", p("a"));
    ASSERT_EQ(mkdir(p("d").c_str(), 0755), 0);
    EXPECT_REMOTE(call_err("fs.rename", R"({"src":)" + js(p("b")) + R"(,"dst":)" + js(p("d")) + "}"),
                  "IsADirectoryError", p("d"));
    EXPECT_BADARGS(call_err("fs.rename", R"({"src":"/a"})"), "fs.rename", "dst");
}

TEST_F(Builtins, Chmod) {
    write_file(p("f"), "");
    call("fs.chmod", R"({"path":)" + js(p("f")) + R"(,"mode":420})");
    EXPECT_EQ(mode_of(p("f")), 0644u);
    call("fs.chmod", R"({"path":)" + js(p("f")) + R"(,"mode":2496})");  // 04700
    EXPECT_EQ(mode_of(p("f")), 04700u);
    EXPECT_REMOTE(call_err("fs.chmod", R"({"path":)" + js(p("nope")) + R"(,"mode":420})"),
                  "FileNotFoundError", p("nope"));
    EXPECT_BADARGS(call_err("fs.chmod", R"({"path":)" + js(p("f")) + "}"), "fs.chmod", "mode");
    EXPECT_BADARGS(call_err("fs.chmod", R"({"path":)" + js(p("f")) + R"(,"mode":4096})"), "fs.chmod", "mode");
    EXPECT_BADARGS(call_err("fs.chmod", R"({"path":)" + js(p("f")) + R"(,"mode":"644"})"), "fs.chmod", "mode");
}

TEST_F(Builtins, Chown) {
    write_file(p("f"), "");
    ASSERT_EQ(symlink("f", p("l").c_str()), 0);
    EXPECT_BADARGS(call_err("fs.chown", R"({"path":)" + js(p("f")) + "}"), "fs.chown", "uid");
    EXPECT_BADARGS(call_err("fs.chown", R"({"path":)" + js(p("f")) + R"(,"uid":-5})"), "fs.chown", "uid");
    EXPECT_BADARGS(call_err("fs.chown", R"({"path":)" + js(p("f")) + R"(,"uid":0,"user":"root"})"),
                   "fs.chown", "uid");
    EXPECT_REMOTE(call_err("fs.chown", R"({"path":)" + js(p("f")) + R"(,"user":"no-such-user-x"})"),
                  "LookupError", "no-such-user-x");
    EXPECT_REMOTE(call_err("fs.chown", R"({"path":)" + js(p("f")) + R"(,"group":"no-such-group-x"})"),
                  "LookupError", "no-such-group-x");
    EXPECT_REMOTE(call_err("fs.chown", R"({"path":)" + js(p("nope")) + R"(,"uid":0})"),
                  "FileNotFoundError", p("nope"));
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    call("fs.chown", R"({"path":)" + js(p("f")) + R"(,"uid":1234,"gid":5678})");
    struct stat st;
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 5678u);
    call("fs.chown", R"({"path":)" + js(p("f")) + R"(,"gid":42})");  // uid unchanged
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 42u);
    call("fs.chown", R"({"path":)" + js(p("f")) + R"(,"user":"root","group":"root"})");
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_gid, 0u);
    call("fs.chown", R"({"path":)" + js(p("l")) + R"(,"uid":777,"follow":false})");
    ASSERT_EQ(lstat(p("l").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 777u);
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    call("fs.chown", R"({"path":)" + js(p("l")) + R"(,"uid":888})");
    ASSERT_EQ(stat(p("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 888u);
}

// ---- fs.readlink, fs.symlink, fs.mktemp -------------------------------------

TEST_F(Builtins, SymlinkAndReadlink) {
    call("fs.symlink", R"({"target":"some/where","path":)" + js(p("l")) + "}");
    CallReply r = call("fs.readlink", R"({"path":)" + js(p("l")) + "}");
    ASSERT_TRUE(cJSON_IsString(r.result.get()));
    EXPECT_STREQ(r.result->valuestring, "some/where");
    std::string long_target(1000, 't');
    call("fs.symlink", R"({"target":)" + js(long_target) + R"(,"path":)" + js(p("l2")) + "}");
    EXPECT_STREQ(call("fs.readlink", R"({"path":)" + js(p("l2")) + "}").result->valuestring,
                 long_target.c_str());
    EXPECT_REMOTE(call_err("fs.symlink", R"({"target":"x","path":)" + js(p("l")) + "}"),
                  "FileExistsError", p("l"));
    write_file(p("f"), "");
    EXPECT_REMOTE(call_err("fs.readlink", R"({"path":)" + js(p("f")) + "}"), "OSError", p("f"));
    EXPECT_REMOTE(call_err("fs.readlink", R"({"path":)" + js(p("nope")) + "}"), "FileNotFoundError",
                  p("nope"));
    EXPECT_BADARGS(call_err("fs.symlink", R"({"path":"/x"})"), "fs.symlink", "target");
}

TEST_F(Builtins, Mktemp) {
    CallReply f = call("fs.mktemp", R"({"dir":)" + js(dir) + R"(,"prefix":"pre."})");
    ASSERT_TRUE(cJSON_IsString(f.result.get()));
    std::string fp = f.result->valuestring;
    EXPECT_EQ(fp.rfind(dir + "/pre.", 0), 0u) << fp;
    EXPECT_EQ(fp.size(), dir.size() + 5 + 6);
    EXPECT_TRUE(fsys::is_regular_file(fp));
    EXPECT_EQ(mode_of(fp), 0600u);
    CallReply d = call("fs.mktemp", R"({"dir":)" + js(dir) + R"(,"directory":true})");
    std::string dp = d.result->valuestring;
    EXPECT_EQ(dp.rfind(dir + "/spore-", 0), 0u) << dp;
    EXPECT_TRUE(fsys::is_directory(dp));
    EXPECT_EQ(mode_of(dp), 0700u);
    const char *old = getenv("TMPDIR");
    std::string saved = old ? old : "";
    setenv("TMPDIR", dir.c_str(), 1);
    CallReply e = call("fs.mktemp");
    if (old) setenv("TMPDIR", saved.c_str(), 1);
    else unsetenv("TMPDIR");
    EXPECT_EQ(std::string(e.result->valuestring).rfind(dir + "/spore-", 0), 0u);
    EXPECT_REMOTE(call_err("fs.mktemp", R"({"dir":)" + js(p("nope")) + "}"), "FileNotFoundError", p("nope"));
    EXPECT_BADARGS(call_err("fs.mktemp", R"({"prefix":"a/b"})"), "fs.mktemp", "prefix");
    EXPECT_BADARGS(call_err("fs.mktemp", R"({"directory":"yes"})"), "fs.mktemp", "directory");
}

TEST_F(Builtins, ErrorsCarryTheFunctionName) {
    ErrorInfo e = call_err("fs.stat", R"({"path":)" + js(p("missing")) + "}");
    EXPECT_EQ(e.function, "fs.stat");
    ErrorInfo b = call_err("fs.list", "{}");
    EXPECT_EQ(b.function, "fs.list");
}

}  // namespace
