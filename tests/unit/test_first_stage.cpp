// The POSIX sh first stage, run for real under dash and bash with a stand-in
// agent image (a small script), against private cache directories.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/image.h"

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
    // Runs the script; answers the ready marker with `payload` (or the image,
    // gzipped when the script says gz and gz_ok).
    RunResult run(const std::string &script, const std::string *payload = nullptr, bool gz_ok = true) {
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
            char *env[] = {const_cast<char *>(home.c_str()), const_cast<char *>(xdg.c_str()),
                           const_cast<char *>("PATH=/usr/bin:/bin"), nullptr};
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
            if (!r.saw_ready && pos != std::string::npos && buf.find('\n', pos) != std::string::npos) {
                r.saw_ready = true;
                bool gz = buf.find("SPORE-READY gz") != std::string::npos && gz_ok;
                std::string body = payload ? *payload : (gz ? gzip_compress(image) : image);
                std::string msg = std::to_string(body.size()) + "\n" + body;
                EXPECT_EQ(write(in[1], msg.data(), msg.size()), ssize_t(msg.size()));
            }
        }
        close(in[1]);
        close(out[0]);
        waitpid(pid, &r.status, 0);
        r.out = buf;
        return r;
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

TEST_P(FirstStage, RawTransferWhenGzipIsNotUsed) {
    RunResult r = run(first_stage_script(hash, true, "spore:raw", false), nullptr, false);
    EXPECT_TRUE(r.saw_ready);
    EXPECT_NE(r.out.find("SPORE-READY raw"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, CorruptTransferFailsFastInsteadOfWaiting) {
    // Raw bytes where gzip was announced: the script must give up at once
    // rather than wait for more input.
    std::string raw = image;
    RunResult r = run(first_stage_script(hash, true, "spore:bad"), &raw);
    EXPECT_NE(WEXITSTATUS(r.status), 0);
    EXPECT_EQ(r.out.find("FAKE-AGENT-RAN"), std::string::npos) << r.out;
}

TEST_P(FirstStage, HashMismatchIsRefusedAndLeavesNothing) {
    std::string evil = "#!/bin/sh\necho EVIL-RAN\n";
    RunResult r = run(first_stage_script(hash, true, "spore:x", false), &evil);
    EXPECT_EQ(r.out.find("EVIL-RAN"), std::string::npos);
    EXPECT_NE(r.out.find("hash mismatch"), std::string::npos) << r.out;
    EXPECT_NE(WEXITSTATUS(r.status), 0);
    EXPECT_FALSE(fs::exists(cached(root + "/run/spore")));
    for (auto &e : fs::directory_iterator(root + "/run/spore")) ADD_FAILURE() << "left behind: " << e.path();
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
    for (auto &e : fs::directory_iterator(root + "/run/spore")) ADD_FAILURE() << "left behind: " << e.path();
}

INSTANTIATE_TEST_SUITE_P(Shells, FirstStage, ::testing::Values("/bin/dash", "/bin/bash"),
                         [](const auto &info) { return std::string(info.param).substr(5); });

TEST(ShellQuote, QuotesEverything) {
    EXPECT_EQ(shell_quote("abc"), "'abc'");
    EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
    EXPECT_EQ(shell_quote(""), "''");
}

TEST(AgentImage, HashAndGzip) {
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::string gz = gzip_compress(std::string(100000, 'a'));
    EXPECT_LT(gz.size(), 1000u);
    EXPECT_EQ(uint8_t(gz[0]), 0x1f);
    EXPECT_EQ(uint8_t(gz[1]), 0x8b);
}

}  // namespace
