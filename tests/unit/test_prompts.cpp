// The prompt table, the command-word parser and the launch commands that
// the terminal-using methods build.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/prompts.h"
#include "core/shlex.h"
#include "methods/method.h"
#include "methods/ssh_libssh2.h"

using namespace spore;

namespace {

PromptTable sudo_like() {
    PromptTable t;
    t.add_failure("sorry, try again", SPORE_EAUTH, "incorrect password");
    t.add_failure("is not in the sudoers file", SPORE_EDENIED, "not in sudoers");
    t.add_prompt("password[^\n]*:[[:space:]]*$", "password");
    return t;
}

PromptMatcher::Outcome feed(PromptMatcher &m, std::string_view bytes) {
    std::vector<std::string> lines;
    return m.feed(bytes, lines);
}

}  // namespace

TEST(Prompts, AnswersAPromptOnceTheOutputPauses) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "s3cret"}});
    auto o = feed(m, "[sudo] password for deploy: ");
    EXPECT_EQ(o.code, 0);
    EXPECT_TRUE(o.reply.empty());  // not before the pause
    EXPECT_TRUE(m.prompt_pending());
    o = m.settle();
    EXPECT_EQ(o.reply, "s3cret\n");
    EXPECT_EQ(m.secrets_sent(), 1u);
}

TEST(Prompts, ABannerLineWithPasswordIsNotAPrompt) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "s3cret"}});
    std::vector<std::string> lines;
    auto o = m.feed("Never share your password: with anyone\nPassword: is not the word here\n", lines);
    EXPECT_EQ(o.code, 0);
    EXPECT_FALSE(m.prompt_pending());
    EXPECT_TRUE(m.settle().reply.empty());
    EXPECT_EQ(lines.size(), 2u);
}

TEST(Prompts, ABannerSplitAtPasswordColonIsNotAnswered) {
    // The tail ends like a prompt for a moment, then the line goes on: the
    // caller only settles after a pause, and new output cancels it.
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "s3cret"}});
    feed(m, "Your password:");
    EXPECT_TRUE(m.prompt_pending());
    feed(m, " must be changed every 90 days\n");
    EXPECT_FALSE(m.prompt_pending());
    EXPECT_TRUE(m.settle().reply.empty());
}

TEST(Prompts, ASecondPromptMeansTheFirstAnswerWasWrong) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "wrong"}});
    feed(m, "Password: ");
    EXPECT_EQ(m.settle().reply, "wrong\n");
    feed(m, "\nPassword: ");
    auto o = m.settle();
    EXPECT_EQ(o.code, SPORE_EAUTH);
    EXPECT_NE(o.message.find("incorrect"), std::string::npos);
}

TEST(Prompts, APromptWithoutASecretIsPasswordRequired) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", ""}});
    feed(m, "Password: ");
    auto o = m.settle();
    EXPECT_EQ(o.code, SPORE_EPASSREQ);
}

TEST(Prompts, FailureLinesBecomeTheirCodes) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "x"}});
    auto o = feed(m, "deploy is not in the sudoers file.  This incident will be reported.\n");
    EXPECT_EQ(o.code, SPORE_EDENIED);
    PromptMatcher m2(t, {{"password", "x"}});
    o = feed(m2, "Sorry, try again.\r\n");
    EXPECT_EQ(o.code, SPORE_EAUTH);
}

TEST(Prompts, FailureLinesMatchOnlyWhenComplete) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "x"}});
    EXPECT_EQ(feed(m, "Sorry, try").code, 0);
    EXPECT_EQ(feed(m, " again.\n").code, SPORE_EAUTH);
}

TEST(Prompts, SecretsAreMaskedInRememberedLines) {
    auto t = sudo_like();
    PromptMatcher m(t, {{"password", "hunter2"}});
    std::vector<std::string> lines;
    m.feed("echoed hunter2 back\n", lines);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0].find("hunter2"), std::string::npos);
    EXPECT_EQ(m.mask("a hunter2 b hunter2"), "a ****** b ******");
}

TEST(Prompts, DeniedDependsOnWhatWasSent) {
    PromptTable t;
    t.add_denied("^([^ ]+@[^ ]+: )?permission denied \\([a-z,-]+\\)", "ssh: authentication failed");
    t.add_prompt("password:[[:space:]]*$", "password");
    {
        PromptMatcher m(t, {{"password", ""}});
        auto o = feed(m, "u@h: Permission denied (publickey,password).\n");
        EXPECT_EQ(o.code, SPORE_EPASSREQ);
    }
    {
        PromptMatcher m(t, {{"password", ""}});
        auto o = feed(m, "u@h: Permission denied (publickey).\n");
        EXPECT_EQ(o.code, SPORE_EAUTH);
    }
    {
        PromptMatcher m(t, {{"password", "pw"}});
        feed(m, "u@h's password: ");
        EXPECT_EQ(m.settle().reply, "pw\n");
        auto o = feed(m, "\nu@h: Permission denied (publickey,password).\n");
        EXPECT_EQ(o.code, SPORE_EAUTH);
        EXPECT_NE(o.message.find("incorrect"), std::string::npos);
    }
    {
        // A remote shell's complaint is not ssh's refusal.
        PromptMatcher m(t, {{"password", ""}});
        EXPECT_EQ(feed(m, "bash: line 1: cd: /root: Permission denied\n").code, 0);
        EXPECT_EQ(feed(m, "Permission denied\n").code, 0);
    }
}

TEST(Prompts, BadPatternIsInvalidArgument) {
    PromptTable t;
    try {
        t.add_prompt("([unclosed", "password");
        FAIL() << "no error";
    } catch (const Error &e) {
        EXPECT_EQ(e.code(), SPORE_EINVAL);
        EXPECT_NE(std::string(e.what()).find("([unclosed"), std::string::npos);
    }
}

// ------------------------------------------------------------------ words

TEST(Words, QuotesAndEscapes) {
    auto w = split_words(R"(nice -n 10 'a b' "c \"d\" e" f\ g)", "x");
    std::vector<std::string> want = {"nice", "-n", "10", "a b", "c \"d\" e", "f g"};
    EXPECT_EQ(w, want);
}

TEST(Words, OperatorsAreWordsOfTheirOwn) {
    auto w = split_words("source /opt/env.sh &&", "command_prefix");
    std::vector<std::string> want = {"source", "/opt/env.sh", "&&"};
    EXPECT_EQ(w, want);
    w = split_words("a;b||c", "x");
    want = {"a", ";", "b", "||", "c"};
    EXPECT_EQ(w, want);
}

TEST(Words, NothingExpands) {
    for (const char *bad : {"echo $HOME", "a `id`", "a > f", "a | b", "a & b", "a (b)", "ls *", "\"$x\"", "'open",
                            "\"open", "trailing\\"}) {
        try {
            split_words(bad, "command_prefix");
            ADD_FAILURE() << "accepted: " << bad;
        } catch (const Error &e) {
            EXPECT_EQ(e.code(), SPORE_EINVAL) << bad;
            EXPECT_NE(std::string(e.what()).find("command_prefix"), std::string::npos) << bad;
        }
    }
    // Quoted, the same characters are plain text.
    auto w = split_words("'$HOME' '*' 'a|b' a#b", "x");
    std::vector<std::string> want = {"$HOME", "*", "a|b", "a#b"};
    EXPECT_EQ(w, want);
}

TEST(Words, ListOptionTakesArrayOrString) {
    Json o = json_parse(R"({"a": ["x y", "z"], "b": "x 'y z'", "c": 5, "d": [1]})", 8, nullptr);
    ASSERT_TRUE(o);
    EXPECT_EQ(option_words(o.get(), "a"), (std::vector<std::string>{"x y", "z"}));
    EXPECT_EQ(option_words(o.get(), "b"), (std::vector<std::string>{"x", "y z"}));
    EXPECT_TRUE(option_words(o.get(), "missing").empty());
    EXPECT_THROW(option_words(o.get(), "c"), Error);
    EXPECT_THROW(option_words(o.get(), "d"), Error);
}

TEST(Words, JoinQuotesAllButOperators) {
    EXPECT_EQ(join_for_shell({"source", "/opt/my env.sh", "&&", "it's"}), "'source' '/opt/my env.sh' && 'it'\\''s'");
}

TEST(Words, LogQuotingIsMinimal) {
    EXPECT_EQ(quote_for_log({"sudo", "-u", "root", "--", "a b"}), "sudo -u root -- 'a b'");
}

// ----------------------------------------------------------------- launch

namespace {
LaunchSpec build(const char *method, const char *options_json) {
    Json o = json_parse(options_json, 8, nullptr);
    EXPECT_TRUE(o) << options_json;
    const MethodInfo *m = find_method(method);
    EXPECT_NE(m, nullptr);
    validate_options(*m, o.get());
    LaunchInput in;
    in.options = o.get();
    in.first_stage = "echo hi $X\n";
    in.local_agent = "/opt/spore-agent";
    return m->build(in);
}

std::vector<std::string> head(const LaunchSpec &s, size_t n_boot = 3) {
    return std::vector<std::string>(s.argv.begin(), s.argv.end() - long(n_boot));
}
}  // namespace

TEST(Launch, SudoArgv) {
    auto s = build("sudo", R"({"username": "deploy", "preserve_env": true, "set_home": true, "selinux_role": "r"})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"sudo", "-S", "-p", "spore-sudo-prompt:", "-u", "deploy", "-E", "-H", "-r", "r", "--"}));
    EXPECT_EQ(s.argv[s.argv.size() - 3], "/bin/sh");
    EXPECT_EQ(s.tty, TtyMode::None);
    EXPECT_TRUE(s.answer_on_stdin);
    s = build("sudo", R"({"use_tty": true})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"sudo", "-p", "spore-sudo-prompt:", "-u", "root", "--"}));
    EXPECT_EQ(s.tty, TtyMode::Hybrid);
}

TEST(Launch, SudoArgsAreReparsed) {
    auto s = build("sudo", R"({"sudo_args": "-u app -EH -n --login"})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"sudo", "-S", "-p", "spore-sudo-prompt:", "-u", "app", "-E", "-H", "-i", "--"}));
    for (const char *bad : {R"({"sudo_args": "-s"})", R"({"sudo_args": "--shell"})", R"({"sudo_args": "-u"})",
                            R"({"sudo_args": "rm"})", R"({"sudo_args": "-C 5"})", R"({"sudo_args": "--"})"}) {
        try {
            build("sudo", bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const Error &e) {
            EXPECT_EQ(e.code(), SPORE_EINVAL) << bad;
            EXPECT_NE(std::string(e.what()).find("sudo_args"), std::string::npos) << e.what();
        }
    }
}

TEST(Launch, SudoLoginCommandHasNoDollar) {
    // sudo -i hands the command to the login shell with '$' unescaped.
    auto s = build("sudo", R"({"login": true})");
    for (auto &w : s.argv) EXPECT_EQ(w.find('$'), std::string::npos) << w;
}

TEST(Launch, CommandPrefix) {
    auto s = build("local", R"({"command_prefix": "nice -n 10"})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"nice", "-n", "10"}));
    s = build("local", R"({"command_prefix": ["/usr/bin/env", "A=b c"]})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"/usr/bin/env", "A=b c"}));
    // With an operator the whole command goes through sh.
    s = build("local", R"({"command_prefix": ". /opt/env.sh &&"})");
    ASSERT_EQ(s.argv.size(), 3u);
    EXPECT_EQ(s.argv[0], "/bin/sh");
    EXPECT_EQ(s.argv[2].rfind("'.' '/opt/env.sh' && '/bin/sh' '-c' ", 0), 0u) << s.argv[2];
}

TEST(Launch, SuRunsOnAFullTerminal) {
    auto s = build("su", R"({"username": "app"})");
    ASSERT_EQ(s.argv.size(), 4u);
    EXPECT_EQ(s.argv[0], "su");
    EXPECT_EQ(s.argv[1], "app");
    EXPECT_EQ(s.argv[2], "-c");
    EXPECT_EQ(s.tty, TtyMode::Full);
}

TEST(Launch, DoasArgv) {
    auto s = build("doas", R"({"username": "app", "doas_path": "/usr/bin/doas"})");
    EXPECT_EQ(head(s), (std::vector<std::string>{"/usr/bin/doas", "-u", "app", "--"}));
}

// Where the CPU has AES instructions, AES-GCM goes before ssh's default
// order, unless the options or ssh_args choose the ciphers.
TEST(Launch, SshOpenSshPrefersAesGcmWithHardwareAes) {
    auto ciphers_words = [](const LaunchSpec &s) {
        std::vector<std::string> out;
        for (size_t i = 0; i + 1 < s.argv.size(); i++)
            if (s.argv[i] == "-o" && s.argv[i + 1].rfind("Ciphers", 0) == 0) out.push_back(s.argv[i + 1]);
        return out;
    };
    using V = std::vector<std::string>;
    auto s = build("ssh", R"({"backend": "openssh", "hostname": "h"})");
    if (cpu_has_aes()) EXPECT_EQ(ciphers_words(s), (V{"Ciphers ^aes128-gcm@openssh.com,aes256-gcm@openssh.com"}));
    else EXPECT_EQ(ciphers_words(s), V{});
    EXPECT_EQ(ciphers_words(build("ssh", R"({"backend": "openssh", "hostname": "h", "ciphers": ""})")), V{});
    EXPECT_EQ(ciphers_words(build("ssh", R"({"backend": "openssh", "hostname": "h", "ciphers": "aes256-ctr"})")),
              V{"Ciphers aes256-ctr"});
    for (const char *args : {"-c aes256-ctr", "-caes256-ctr", "-o Ciphers=aes256-ctr", "-oCiphers=aes256-ctr",
                             "-o 'ciphers aes256-ctr'"}) {
        std::string o = std::string(R"({"backend": "openssh", "hostname": "h", "ssh_args": ")") + args + "\"}";
        auto t = build("ssh", o.c_str());
        for (auto &w : ciphers_words(t)) EXPECT_EQ(w.find('^'), std::string::npos) << args << ": " << w;
    }
}

TEST(Launch, SshOpenSshArgv) {
    auto s = build("ssh", R"({"backend": "openssh", "hostname": "web1", "username": "deploy", "port": 2222, "identity_file": "/k",
                              "check_host_keys": "enforce", "known_hosts_file": "/kh", "ssh_args": "-o 'ConnectTimeout 5'",
                              "ciphers": "aes256-ctr,aes128-ctr"})");
    std::vector<std::string> want = {"ssh", "-o", "LogLevel ERROR", "-l", "deploy", "-p", "2222", "-i", "/k", "-o",
                                     "IdentitiesOnly yes", "-o", "ServerAliveInterval 15", "-o", "ServerAliveCountMax 3",
                                     "-o", "BatchMode yes", "-o", "StrictHostKeyChecking yes", "-o",
                                     "UserKnownHostsFile /kh", "-o", "Ciphers aes256-ctr,aes128-ctr",
                                     "-o", "ConnectTimeout 5", "web1"};
    EXPECT_EQ(std::vector<std::string>(s.argv.begin(), s.argv.end() - 1), want);
    EXPECT_EQ(s.tty, TtyMode::None);
    EXPECT_EQ(s.argv.back().rfind("'/bin/sh' '-c' ", 0), 0u);
    // A password needs a terminal and no BatchMode.
    s = build("ssh", R"({"backend": "openssh", "hostname": "h", "password": "pw", "ssh_debug_level": 2})");
    EXPECT_EQ(s.tty, TtyMode::Hybrid);
    EXPECT_EQ(s.argv[1], "-vv");
    for (auto &w : s.argv) {
        EXPECT_NE(w, "BatchMode yes");
        EXPECT_EQ(w.find("pw"), std::string::npos) << "the password must never be in argv: " << w;
    }
}

TEST(Launch, OptionChecks) {
    for (auto [m, o] : std::vector<std::pair<const char *, const char *>>{
             {"ssh", "{}"},
             {"ssh", R"({"hostname": "h", "check_host_keys": "maybe"})"},
             {"ssh", R"({"hostname": "h", "ssh_debug_level": 4})"},
             {"docker", "{}"},
             {"docker", R"({"container": "c", "image": "i"})"},
             {"kubectl", "{}"},
             {"lxc", "{}"},
             {"setns", "{}"},
             {"setns", R"({"kind": "pid"})"}}) {
        try {
            build(m, o);
            ADD_FAILURE() << m << " accepted " << o;
        } catch (const Error &e) {
            EXPECT_EQ(e.code(), SPORE_EINVAL) << m << " " << o;
        }
    }
    Json bad = json_parse(R"({"username": 5})", 8, nullptr);
    EXPECT_THROW(validate_options(*find_method("sudo"), bad.get()), Error);
    Json unknown = json_parse(R"({"hostname": "h"})", 8, nullptr);
    EXPECT_THROW(validate_options(*find_method("sudo"), unknown.get()), Error);
}

TEST(Launch, Libssh2BackendRefusesWhatOnlyOpenSshKnows) {
    register_libssh2_backend();
    auto s = build("ssh", R"({"hostname": "web1", "username": "deploy", "port": 2222})");
    EXPECT_TRUE(s.in_process_ssh);  // the default in the master
    EXPECT_NE(s.remote_command.find("'/bin/sh' '-c' "), std::string::npos);
    for (const char *bad : {R"({"backend": "libssh2", "hostname": "h", "ssh_args": "-v"})",
                            R"({"backend": "libssh2", "hostname": "h", "ssh_path": "/x"})",
                            R"({"backend": "libssh2", "hostname": "h", "password_prompts": "x"})",
                            R"({"backend": "carrier-pigeon", "hostname": "h"})"}) {
        try {
            build("ssh", bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const Error &e) {
            EXPECT_EQ(e.code(), SPORE_EINVAL) << bad;
        }
    }
    // An agent has no libssh2: an onward hop asked for it is refused, by default it uses OpenSSH.
    Json o = json_parse(R"({"hostname": "h", "backend": "libssh2"})", 8, nullptr);
    LaunchInput in;
    in.options = o.get();
    in.in_agent = true;
    EXPECT_THROW(build_ssh(in), Error);
    Json d = json_parse(R"({"hostname": "h"})", 8, nullptr);
    in.options = d.get();
    EXPECT_FALSE(build_ssh(in).in_process_ssh);
}
