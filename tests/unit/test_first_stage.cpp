// The POSIX sh first stage, run for real under dash and bash with a stand-in
// agent image (a small script), against private cache directories.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "core/error.h"
#include "core/image.h"
#include "core/json.h"

namespace fs = std::filesystem;
using namespace spore;

namespace {

const char *kFakeAgent =
    "#!/bin/sh\n"
    "if [ \"$1\" = --version ]; then echo fake-agent; exit 0; fi\n"
    "echo \"FAKE-AGENT-RAN $0 $*\"\n";

struct RunResult {
    std::string out;
    int status = -1;
    bool saw_ready = false;
    std::string ready_line;
};

class FirstStage : public ::testing::TestWithParam<const char *> {
protected:
    void SetUp() override {
        if (access(GetParam(), X_OK) != 0) GTEST_SKIP() << GetParam() << " is not installed";
        char tmpl[] = "/tmp/spore-fs-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root = tmpl;
        fs::create_directories(root + "/run");
        fs::create_directories(root + "/home");
        chmod((root + "/run").c_str(), 0700);
        image = kFakeAgent;
        hash = sha256_hex(image);
    }
    void TearDown() override {
        if (!root.empty()) {
            umount2((root + "/run").c_str(), MNT_DETACH);
            fs::remove_all(root);
        }
    }
    // Runs the script; answers the ready marker with `payload` (or the image
    // in the first form the line names, raw when !compressed) and tells the
    // script it is `word` (the chosen codec's word by default).
    RunResult run(const std::string &script, const std::string *payload = nullptr, bool compressed = true,
                  const char *word = nullptr, const std::string &path = "/usr/bin:/bin") {
        int in[2], out[2];
        EXPECT_EQ(pipe(in), 0);
        EXPECT_EQ(pipe(out), 0);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(out[1], 2);
            close(in[0]); close(in[1]); close(out[0]); close(out[1]);
            std::string home = "HOME=" + root + "/home", xdg = "XDG_RUNTIME_DIR=" + root + "/run";
            std::string path_env = "PATH=" + path;
            char *env[] = {const_cast<char *>(home.c_str()), const_cast<char *>(xdg.c_str()),
                           const_cast<char *>(path_env.c_str()), nullptr};
            execle(GetParam(), GetParam(), "-c", script.c_str(), (char *)nullptr, env);
            _exit(127);
        }
        close(in[0]);
        close(out[1]);
        RunResult r;
        std::string buf;
        char tmp[4096];
        ssize_t n;
        while ((n = read(out[0], tmp, sizeof tmp)) > 0) {
            buf.append(tmp, size_t(n));
            size_t pos = buf.find("SPORE-READY");
            size_t eol = pos == std::string::npos ? pos : buf.find('\n', pos);
            if (!r.saw_ready && eol != std::string::npos) {
                r.saw_ready = true;
                r.ready_line = buf.substr(pos, eol - pos);
                ImageCodec codec = ImageCodec::raw;
                for (ImageCodec c : {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip})
                    if (compressed && codec == ImageCodec::raw &&
                        (" " + r.ready_line + " ").find(std::string(" ") + codec_word(c) + " ") != std::string::npos)
                        codec = c;
                std::string body = payload ? *payload : compress_image(image, codec);
                std::string msg = std::to_string(body.size()) + " " + (word ? word : codec_word(codec)) + "\n" + body;
                EXPECT_EQ(write(in[1], msg.data(), msg.size()), ssize_t(msg.size()));
            }
        }
        close(in[1]);
        close(out[0]);
        waitpid(pid, &r.status, 0);
        r.out = buf;
        return r;
    }
    // Each entry left in dir, as a failure.
    static void expect_empty(const std::string &dir) {
        for (auto &e : fs::directory_iterator(dir)) ADD_FAILURE() << "left behind: " << e.path();
    }
    // A copy of /bin/true changed so that it runs nowhere: "foreign" claims
    // to be for another machine, "truncated" stops after its headers.
    static std::string unrunnable_elf(const std::string &how) {
        std::ifstream f("/bin/true", std::ios::binary);
        std::string elf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (elf.size() < 4096) return elf;
        if (how == "foreign") {
            uint16_t machine = uint8_t(elf[18]) == 183 ? 62 : 183;  // EM_AARCH64, or EM_X86_64 on arm64
            std::memcpy(&elf[18], &machine, 2);
            return elf;
        }
        return elf.substr(0, 4096);
    }
    std::string cached(const std::string &dir) { return dir + "/spore-agent-" + hash; }
    static int mode_of(const std::string &p) {
        struct stat st;
        return stat(p.c_str(), &st) == 0 ? int(st.st_mode & 07777) : -1;
    }

    std::string root, image, hash;
};

TEST_P(FirstStage, ColdCacheReceivesCachesAndRunsTheImage) {
    RunResult r = run(first_stage_script(hash, true, "spore:test"));
    EXPECT_TRUE(r.saw_ready);
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("spore:test"), std::string::npos);
    std::string dir = root + "/run/spore";
    EXPECT_EQ(mode_of(dir), 0700);
    EXPECT_EQ(mode_of(cached(dir)), 0700);
    // Nothing but the cached image is left in the directory.
    int entries = 0;
    for (auto &e : fs::directory_iterator(dir)) { (void)e; ++entries; }
    EXPECT_EQ(entries, 1);
}

TEST_P(FirstStage, WarmCacheRunsWithoutTransfer) {
    ASSERT_TRUE(run(first_stage_script(hash, true, "spore:a")).saw_ready);
    RunResult r = run(first_stage_script(hash, true, "spore:b"));
    EXPECT_FALSE(r.saw_ready);
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, RawTransferWhenNoCompressionIsOffered) {
    RunResult r = run(first_stage_script(hash, true, "spore:raw", {}));
    EXPECT_TRUE(r.saw_ready);
    EXPECT_EQ(r.ready_line, "SPORE-READY raw");
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, AnnouncesTheOfferedDecompressorsItFinds) {
    const std::vector<ImageCodec> all = {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip};
    for (const char *tool : {"xz", "zstd", "gzip"})
        if (access((std::string("/usr/bin/") + tool).c_str(), X_OK) != 0) GTEST_SKIP() << tool << " is not installed";
    RunResult r = run(first_stage_script(hash, true, "spore:all", all));
    EXPECT_EQ(r.ready_line, "SPORE-READY xz zstd gz raw");
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
    // Only the offered ones are looked for.
    fs::remove_all(root + "/run/spore");
    r = run(first_stage_script(hash, true, "spore:one", {ImageCodec::zstd}));
    EXPECT_EQ(r.ready_line, "SPORE-READY zstd raw");
    // A PATH without xz and zstd: only gzip is announced.
    std::string bin = root + "/bin";
    fs::create_directories(bin);
    for (const char *tool : {"id", "head", "mkdir", "chmod", "rm", "rmdir", "mv", "cp", "cat", "sha256sum", "gzip"})
        fs::create_symlink(std::string("/usr/bin/") + tool, bin + "/" + tool);
    fs::remove_all(root + "/run/spore");
    r = run(first_stage_script(hash, true, "spore:gz", all), nullptr, true, nullptr, bin);
    EXPECT_EQ(r.ready_line, "SPORE-READY gz raw");
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, EveryCodecRoundTrips) {
    for (ImageCodec c : {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip, ImageCodec::raw}) {
        if (!can_compress(c)) continue;
        fs::remove_all(root + "/run/spore");
        std::string body = compress_image(image, c);
        RunResult r = run(first_stage_script(hash, true, "spore:rt", {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip}),
                          &body, true, codec_word(c));
        EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << codec_word(c) << ": " << r.out;
        EXPECT_EQ(mode_of(cached(root + "/run/spore")), 0700) << codec_word(c);
    }
}

TEST_P(FirstStage, UnknownEncodingIsRefused) {
    std::string raw = image;
    RunResult r = run(first_stage_script(hash, true, "spore:u", {ImageCodec::gzip}), &raw, true, "lz4");
    EXPECT_NE(WEXITSTATUS(r.status), 0);
    EXPECT_NE(r.out.find("unknown image encoding 'lz4'"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, CorruptTransferFailsFastInsteadOfWaiting) {
    // Raw bytes where gzip was announced: the script must give up at once
    // rather than wait for more input.
    std::string raw = image;
    RunResult r = run(first_stage_script(hash, true, "spore:bad"), &raw, true, "gz");
    EXPECT_NE(WEXITSTATUS(r.status), 0);
    EXPECT_EQ(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, HashMismatchIsRefusedAndLeavesNothing) {
    std::string evil = "#!/bin/sh\necho EVIL-RAN\n";
    RunResult r = run(first_stage_script(hash, true, "spore:x", {}), &evil);
    EXPECT_EQ(r.out.find("EVIL-RAN"), std::string::npos);
    EXPECT_NE(r.out.find("hash mismatch"), std::string::npos) << r.out;
    EXPECT_NE(WEXITSTATUS(r.status), 0);
    // The directory it made is gone again.
    EXPECT_FALSE(fs::exists(root + "/run/spore"));
}

TEST_P(FirstStage, FailureRemovesOnlyTheEmptyDirectoriesItMade) {
    // XDG_RUNTIME_DIR unusable (a file): the image goes to $HOME/.cache/spore,
    // and the script makes .cache too.
    fs::remove_all(root + "/run");
    std::ofstream(root + "/run") << "not a directory";
    std::string evil = "#!/bin/sh\necho EVIL-RAN\n";
    RunResult r = run(first_stage_script(hash, true, "spore:x", {}), &evil);
    EXPECT_NE(r.out.find("hash mismatch"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(root + "/home/.cache")) << r.out;
    // A directory that was there before is kept, and so is one with content.
    fs::create_directories(root + "/home/.cache/spore");
    std::ofstream(root + "/home/.cache/other") << "x";
    r = run(first_stage_script(hash, true, "spore:x", {}), &evil);
    EXPECT_NE(r.out.find("hash mismatch"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::is_directory(root + "/home/.cache/spore"));
    expect_empty(root + "/home/.cache/spore");
}

TEST_P(FirstStage, ImageThatDoesNotRunIsReportedAsSuch) {
    // A program for another machine, a truncated one, and one whose
    // --version fails: each runs in no directory, so the script says so in
    // the first directory that does run programs and tries no other.
    for (const char *how : {"foreign", "truncated", "failing"}) {
        SCOPED_TRACE(how);
        image = std::string(how) == "failing" ? std::string("#!/bin/sh\nexit 3\n") : unrunnable_elf(how);
        hash = sha256_hex(image);
        RunResult r = run(first_stage_script(hash, true, "spore:nx", {ImageCodec::gzip}));
        EXPECT_TRUE(r.saw_ready);
        EXPECT_NE(WEXITSTATUS(r.status), 0);
        EXPECT_NE(r.out.find(std::string("spore: ") + kImageDoesNotRun), std::string::npos) << r.out;
        EXPECT_EQ(r.out.find("no writable directory"), std::string::npos) << r.out;
        if (std::string(how) == "failing") {
            EXPECT_NE(r.out.find("exit status 3"), std::string::npos) << r.out;
        }
        // Neither the directory it made nor any later candidate is left.
        EXPECT_FALSE(fs::exists(root + "/run/spore")) << r.out;
        EXPECT_FALSE(fs::exists(root + "/home/.cache")) << r.out;
    }
}

TEST_P(FirstStage, CacheOffUnlinksTheImage) {
    RunResult r = run(first_stage_script(hash, false, "spore:nocache"));
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--unlink"), std::string::npos);
    EXPECT_FALSE(fs::exists(cached(root + "/run/spore")));
    // Without a cache the image is always sent again.
    EXPECT_TRUE(run(first_stage_script(hash, false, "spore:nocache")).saw_ready);
}

TEST_P(FirstStage, ForeignOrSymlinkedCacheDirsAreNotTrusted) {
    // A cache dir that is a symlink to somewhere else is skipped for both
    // running and writing: the image lands in the next candidate.
    fs::create_directories(root + "/elsewhere");
    fs::create_directory_symlink(root + "/elsewhere", root + "/run/spore");
    RunResult r = run(first_stage_script(hash, true, "spore:l"));
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(root + "/elsewhere/spore-agent-" + hash));
    EXPECT_TRUE(fs::exists(cached(root + "/home/.cache/spore")));
    if (geteuid() == 0) {
        // A planted image in a dir owned by someone else is never executed.
        fs::remove(root + "/run/spore");
        fs::remove(cached(root + "/home/.cache/spore"));
        fs::create_directories(root + "/run/spore");
        std::string planted = root + "/run/spore/spore-agent-" + hash;
        FILE *f = fopen(planted.c_str(), "w");
        fputs("#!/bin/sh\necho PLANTED-RAN\n", f);
        fclose(f);
        chmod(planted.c_str(), 0755);
        ASSERT_EQ(chown((root + "/run/spore").c_str(), 65534, 65534), 0);
        RunResult r2 = run(first_stage_script(hash, true, "spore:p"));
        EXPECT_EQ(r2.out.find("PLANTED-RAN"), std::string::npos) << r2.out;
        EXPECT_NE(r2.out.find("FAKE-AGENT-RAN"), std::string::npos) << r2.out;
    }
}

TEST_P(FirstStage, NoexecDirectoryFallsBackToTheNextOne) {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a noexec tmpfs needs root";
    if (mount("tmpfs", (root + "/run").c_str(), "tmpfs", MS_NOEXEC | MS_NOSUID | MS_NODEV, "mode=0700") != 0)
        GTEST_SKIP() << "cannot mount tmpfs here";
    RunResult r = run(first_stage_script(hash, true, "spore:nx"));
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::exists(cached(root + "/home/.cache/spore")));
    EXPECT_FALSE(fs::exists(cached(root + "/run/spore")));
    // Nothing is left in the noexec directory either.
    expect_empty(root + "/run/spore");
    // An image that does not run: the noexec directory is passed over, and
    // the next one, which runs programs, tells that the image is at fault.
    image = unrunnable_elf("foreign");
    hash = sha256_hex(image);
    fs::remove_all(root + "/home/.cache");
    fs::remove_all(root + "/run/spore");
    r = run(first_stage_script(hash, true, "spore:nx"));
    EXPECT_NE(r.out.find(std::string("spore: ") + kImageDoesNotRun), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(root + "/run/spore")) << r.out;
    EXPECT_FALSE(fs::exists(root + "/home/.cache")) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Shells, FirstStage, ::testing::Values("/bin/dash", "/bin/bash"),
                         [](const auto &info) { return std::string(info.param).substr(5); });

TEST(ShellQuote, QuotesEverything) {
    EXPECT_EQ(shell_quote("abc"), "'abc'");
    EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
    EXPECT_EQ(shell_quote(""), "''");
}

TEST(AgentImage, CompressionOptions) {
    auto parse = [](const char *text) {
        spore::Json o(cJSON_Parse(text));  // freed also when parse_agent_compress throws
        return parse_agent_compress(o.get());
    };
    EXPECT_EQ(parse("{}"), CompressOption::automatic);
    EXPECT_EQ(parse(R"({"agent_compress":true})"), CompressOption::automatic);
    EXPECT_EQ(parse(R"({"agent_compress":false})"), CompressOption::none);
    EXPECT_EQ(parse(R"({"agent_compress":"xz"})"), CompressOption::xz);
    EXPECT_EQ(parse(R"({"agent_compress":"zstd"})"), CompressOption::zstd);
    EXPECT_EQ(parse(R"({"agent_compress":"gzip"})"), CompressOption::gzip);
    EXPECT_EQ(parse(R"({"agent_compress":"none"})"), CompressOption::none);
    EXPECT_EQ(parse(R"({"agent_compress":"auto"})"), CompressOption::automatic);
    try {
        parse(R"({"agent_compress":"lz4"})");
        ADD_FAILURE() << "lz4 accepted";
    } catch (const Error &e) {
        EXPECT_EQ(e.code(), SPORE_EINVAL);
        EXPECT_NE(std::string(e.what()).find("\"lz4\""), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse(R"({"agent_compress":3})"), Error);
    // The library makes every codec; strongest first.
    EXPECT_EQ(codecs_to_offer(CompressOption::automatic),
              (std::vector<ImageCodec>{ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip}));
    EXPECT_TRUE(codecs_to_offer(CompressOption::none).empty());
    EXPECT_EQ(codecs_to_offer(CompressOption::zstd), std::vector<ImageCodec>{ImageCodec::zstd});
}

TEST(AgentImage, ChoosesTheStrongestCodecBothEndsHave) {
    const std::vector<ImageCodec> all = {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip};
    EXPECT_EQ(choose_codec("SPORE-READY xz zstd gz raw", all, CompressOption::automatic), ImageCodec::xz);
    EXPECT_EQ(choose_codec("SPORE-READY zstd gz raw", all, CompressOption::automatic), ImageCodec::zstd);
    EXPECT_EQ(choose_codec("SPORE-READY gz raw", all, CompressOption::automatic), ImageCodec::gzip);
    EXPECT_EQ(choose_codec("SPORE-READY gz", {ImageCodec::gzip}, CompressOption::automatic), ImageCodec::gzip);
    EXPECT_EQ(choose_codec("SPORE-READY raw", all, CompressOption::automatic), ImageCodec::raw);
    EXPECT_EQ(choose_codec("SPORE-READY xz gz raw", {}, CompressOption::none), ImageCodec::raw);
    // Words, not substrings: "xzz" is not xz.
    EXPECT_EQ(choose_codec("SPORE-READY xzz raw", all, CompressOption::automatic), ImageCodec::raw);
    // A codec asked for by name that the target lacks fails the connect.
    try {
        choose_codec("SPORE-READY gz raw", {ImageCodec::xz}, CompressOption::xz);
        ADD_FAILURE() << "no error";
    } catch (const Error &e) {
        EXPECT_EQ(e.code(), SPORE_ECONNECT);
        EXPECT_NE(std::string(e.what()).find("has no xz command"), std::string::npos) << e.what();
    }
}

TEST(AgentImage, CompressedFormsUnpackWithTheTargetsTools) {
    std::string data;
    for (int i = 0; i < 20000; ++i) data += "line " + std::to_string(i * 7919 % 1000) + "\n";
    for (ImageCodec c : {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip}) {
        SCOPED_TRACE(codec_word(c));
        std::string packed = compress_image(data, c);
        EXPECT_LT(packed.size(), data.size() / 4);
        char tmpl[] = "/tmp/spore-codec-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, packed.data(), packed.size()), ssize_t(packed.size()));
        close(fd);
        std::string cmd = std::string(c == ImageCodec::xz ? "xz -dc" : c == ImageCodec::zstd ? "zstd -qdc" : "gzip -dc") +
                          " <" + tmpl;
        FILE *p = popen(cmd.c_str(), "r");
        ASSERT_NE(p, nullptr);
        std::string back;
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, p)) > 0) back.append(buf, n);
        EXPECT_EQ(pclose(p), 0);
        unlink(tmpl);
        EXPECT_TRUE(back == data) << back.size() << " bytes back of " << data.size();
    }
}

TEST(AgentImage, RefusesAFileThatIsNoProgram) {
    char tmpl[] = "/tmp/spore-notprog-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "hello\n", 6), 6);
    close(fd);
    try {
        AgentImage::load(tmpl);
        ADD_FAILURE() << "a text file was taken as the agent image";
    } catch (const Error &e) {
        EXPECT_EQ(e.code(), SPORE_ECONNECT);
        EXPECT_NE(std::string(e.what()).find("is not an executable program"), std::string::npos) << e.what();
    }
    unlink(tmpl);
}

TEST(AgentImage, HashAndGzip) {
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::string gz = gzip_compress(std::string(100000, 'a'));
    EXPECT_LT(gz.size(), 1000u);
    EXPECT_EQ(uint8_t(gz[0]), 0x1f);
    EXPECT_EQ(uint8_t(gz[1]), 0x8b);
}

}  // namespace
