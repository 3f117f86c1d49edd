// `spore-agent --setns kind=K (pid=N | container=C tool=T) [user=U] -- argv...`
// The helper behind the setns and machinectl methods: it finds the leader
// process of a container (or takes a pid), enters that process's namespaces
// and root directory, optionally becomes a user of the container, and runs
// argv (the first stage) there. It is single-threaded, as setns() into a
// user or mount namespace requires, and static, so it runs anywhere.
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/agent.h"

namespace spore::agent {

namespace {

[[noreturn]] void die(const std::string &msg) {
    std::string line = "spore setns: " + msg + "\n";
    (void)!::write(2, line.data(), line.size());
    _exit(1);
}

// Runs argv and returns its stdout (at most 64 KiB); dies when it fails.
std::string capture(const std::vector<std::string> &argv) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) die(std::string("pipe: ") + std::strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        dup2(p[1], 1);
        std::vector<char *> a;
        for (auto &s : argv) a.push_back(const_cast<char *>(s.c_str()));
        a.push_back(nullptr);
        execvp(a[0], a.data());
        std::fprintf(stderr, "spore setns: cannot run %s: %s\n", a[0], std::strerror(errno));
        _exit(127);
    }
    ::close(p[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && out.size() < 65536) out.append(buf, size_t(n));
    ::close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("'" + argv[0] + "' failed to name the container's process");
    return out;
}

// The value of the first line "<key>: <number>" or "<key>=<number>" (key
// case-insensitive, at the start of the line), e.g. "PID: 42" of lxc-info
// and `lxc info`, "Leader=42" of machinectl; -1 when there is none. Only
// whole lines count: `lxc info rapid7` prints "Name: rapid7" before "Pid:",
// and that 7 is not the container's process.
long number_after(const std::string &text, std::initializer_list<const char *> keys) {
    for (const char *k : keys) {
        const size_t klen = std::strlen(k);
        size_t start = 0;
        while (start < text.size()) {
            size_t end = text.find('\n', start);
            if (end == std::string::npos) end = text.size();
            std::string line = text.substr(start, end - start);
            start = end + 1;
            size_t pos = line.find_first_not_of(" \t");
            if (pos == std::string::npos || line.size() - pos < klen || strncasecmp(line.c_str() + pos, k, klen) != 0)
                continue;
            pos += klen;
            while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
            if (pos >= line.size() || (line[pos] != ':' && line[pos] != '=')) continue;  // "Pids", "PID_FILE"
            ++pos;
            while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
            if (pos >= line.size() || line[pos] < '0' || line[pos] > '9') continue;
            char *stop = nullptr;
            errno = 0;
            long v = std::strtol(line.c_str() + pos, &stop, 10);
            while (*stop == ' ' || *stop == '\t' || *stop == '\r') ++stop;
            if (*stop == '\0' && errno == 0 && v > 0) return v;
        }
    }
    return -1;
}

long leader_pid(const std::string &kind, const std::string &container, const std::string &tool) {
    if (kind == "docker" || kind == "podman") {
        std::string out = capture({tool, "inspect", "--format={{.State.Pid}}", container});
        long v = std::strtol(out.c_str(), nullptr, 10);
        if (v <= 0) die(kind + " says container " + container + " has no running process");
        return v;
    }
    if (kind == "lxc") return number_after(capture({tool, "--name", container, "--pid"}), {"pid"});
    if (kind == "lxd") return number_after(capture({tool, "info", container}), {"pid"});
    if (kind == "machinectl")
        return number_after(capture({tool, "show", "--property=Leader", container}), {"leader"});
    die("unknown kind '" + kind + "'");
}

struct Passwd {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string home, shell;
};

// /etc/passwd of the target's root, read directly: a static binary has no
// NSS, and the container's accounts are not the host's anyway.
bool find_user(const std::string &name, Passwd &pw) {
    FILE *f = std::fopen("/etc/passwd", "re");
    if (!f) return false;
    char line[1024];
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f)) {
        std::vector<std::string> fields;
        std::string cur;
        for (char *p = line; *p && *p != '\n'; ++p) {
            if (*p == ':') {
                fields.push_back(cur);
                cur.clear();
            } else {
                cur.push_back(*p);
            }
        }
        fields.push_back(cur);
        if (fields.size() < 7 || fields[0] != name) continue;
        pw.uid = uid_t(std::strtoul(fields[2].c_str(), nullptr, 10));
        pw.gid = gid_t(std::strtoul(fields[3].c_str(), nullptr, 10));
        pw.home = fields[5];
        pw.shell = fields[6];
        found = true;
    }
    std::fclose(f);
    return found;
}

std::vector<gid_t> groups_of(const std::string &name, gid_t primary) {
    std::vector<gid_t> out{primary};
    FILE *f = std::fopen("/etc/group", "re");
    if (!f) return out;
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        std::string l(line);
        if (!l.empty() && l.back() == '\n') l.pop_back();
        size_t a = l.find(':'), b = l.find(':', a + 1), c = l.find(':', b + 1);
        if (c == std::string::npos) continue;
        std::string members = "," + l.substr(c + 1) + ",";
        if (members.find("," + name + ",") != std::string::npos)
            out.push_back(gid_t(std::strtoul(l.substr(b + 1, c - b - 1).c_str(), nullptr, 10)));
    }
    std::fclose(f);
    return out;
}

}  // namespace

int run_setns_helper(int argc, char **argv) {
    std::string kind, container, tool, user;
    long pid = -1;
    int i = 2;
    for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
        std::string a = argv[i];
        size_t eq = a.find('=');
        std::string k = a.substr(0, eq), v = eq == std::string::npos ? "" : a.substr(eq + 1);
        if (k == "kind") kind = v;
        else if (k == "pid") pid = std::strtol(v.c_str(), nullptr, 10);
        else if (k == "container") container = v;
        else if (k == "tool") tool = v;
        else if (k == "user") user = v;
        else die("unknown argument '" + a + "'");
    }
    if (i >= argc - 1) die("no command after --");
    char **cmd = argv + i + 1;
    if (kind != "pid") pid = leader_pid(kind, container, tool);
    if (pid <= 0) die("no process found for " + kind + " " + container);

    std::string base = "/proc/" + std::to_string(pid);
    int root = ::open((base + "/root").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) die("cannot open " + base + "/root: " + std::strerror(errno));
    // The user namespace first (it grants the rights for the others), the
    // mount namespace last (after it, /proc may be the target's).
    static const char *const kinds[] = {"user", "ipc", "uts", "net", "pid", "cgroup", "mnt"};
    std::vector<std::pair<int, std::string>> fds;
    for (const char *ns : kinds) {
        struct stat theirs {}, ours {};
        std::string path = base + "/ns/" + ns;
        if (::stat(path.c_str(), &theirs) != 0) continue;  // kernel without it
        if (::stat((std::string("/proc/self/ns/") + ns).c_str(), &ours) == 0 && ours.st_ino == theirs.st_ino &&
            ours.st_dev == theirs.st_dev)
            continue;  // already shared
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("cannot open " + path + ": " + std::strerror(errno));
        fds.emplace_back(fd, ns);
    }
    for (auto &[fd, ns] : fds) {
        if (setns(fd, 0) != 0) die("cannot enter the " + ns + " namespace of process " + std::to_string(pid) + ": " + std::strerror(errno));
        ::close(fd);
    }
    if (fchdir(root) != 0 || chroot(".") != 0 || chdir("/") != 0)
        die("cannot enter the root directory of process " + std::to_string(pid) + ": " + std::strerror(errno));
    ::close(root);

    if (!user.empty()) {
        Passwd pw;
        if (!find_user(user, pw)) die("no user '" + user + "' in the target's /etc/passwd");
        auto groups = groups_of(user, pw.gid);
        if (setgroups(groups.size(), groups.data()) != 0 || setgid(pw.gid) != 0 || setuid(pw.uid) != 0)
            die("cannot become " + user + ": " + std::strerror(errno));
        setenv("HOME", pw.home.c_str(), 1);
        setenv("USER", user.c_str(), 1);
        setenv("LOGNAME", user.c_str(), 1);
        if (!pw.shell.empty()) setenv("SHELL", pw.shell.c_str(), 1);
        if (chdir(pw.home.c_str()) != 0 && chdir("/") != 0) die("cannot change to /");
    }

    // A new pid namespace applies to children only: the command runs in a
    // child, and this process stays to pass on its exit status.
    pid_t child = fork();
    if (child < 0) die(std::string("fork: ") + std::strerror(errno));
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execvp(cmd[0], cmd);
        std::fprintf(stderr, "spore setns: cannot run %s: %s\n", cmd[0], std::strerror(errno));
        _exit(127);
    }
    // Our stdio belongs to the child now.
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        ::close(devnull);
    }
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

}  // namespace spore::agent
