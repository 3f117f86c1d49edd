// spore-agent: started by the first stage (or by a parent agent for fork)
// with its parent stream on stdin/stdout.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstdio>
#include <cstring>

#include "agent/agent.h"

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "--setns") == 0) return spore::agent::run_setns_helper(argc, argv);
    bool unlink_self = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--version") == 0) {
            std::printf("spore-agent %s\n", spore::agent::agent_version());
            return 0;
        }
        if (std::strcmp(argv[i], "--unlink") == 0) unlink_self = true;
        // "spore:<name>" words only label the process in ps.
    }
    if (unlink_self) {
        // agent_cache off: leave nothing of spore on the target's disk.
        char path[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n > 0) {
            path[n] = '\0';
            unlink(path);
            // And the private directory, unless something else is in it.
            char *slash = std::strrchr(path, '/');
            if (slash && slash != path) {
                *slash = '\0';
                rmdir(path);
            }
        }
    }
    // The first stage ran with umask 077 for the agent's private files and
    // passed the login's umask on: files the agent and its programs make get
    // the modes the account's own would have.
    if (const char *mask = std::getenv("SPORE_UMASK")) {
        char *end = nullptr;
        long value = std::strtol(mask, &end, 8);
        if (end != mask && *end == '\0' && value >= 0 && value <= 0777) umask(mode_t(value));
        unsetenv("SPORE_UMASK");
    }
    signal(SIGPIPE, SIG_IGN);
    // Worker threads share two malloc arenas instead of one each: a burst of
    // 50 concurrent calls must not leave 50 arenas resident.
    mallopt(M_ARENA_MAX, 2);
    // Move the parent stream off fds 0/1 so they can be given to children.
    int in = fcntl(0, F_DUPFD_CLOEXEC, 3);
    int out = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (in < 0 || out < 0) return 1;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    spore::agent::Agent agent;
    int rc = agent.run(in, out);
    // Worker threads may still be inside a built-in; leave without running
    // destructors under their feet.
    _exit(rc);
}
