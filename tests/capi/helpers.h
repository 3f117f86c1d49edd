/* Shared helpers of the CMocka tests: resource snapshots that prove a test
 * left no process, zombie or fd behind. Header-only, C99 + POSIX. */
#ifndef SPORE_TEST_HELPERS_H
#define SPORE_TEST_HELPERS_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spore/spore.h"

/* Number of open fds of this process. */
static inline int th_count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

/* Number of live processes whose cmdline contains "spore:" and whose session
 * or parent chain started from this test (approximated by: any process that
 * is a descendant of this pid). */
static inline int th_is_descendant(pid_t pid, pid_t ancestor) {
    for (int depth = 0; depth < 64 && pid > 1; depth++) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) return 0;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *rp = strrchr(buf, ')');
        if (!rp) return 0;
        int ppid = 0;
        char state;
        if (sscanf(rp + 2, "%c %d", &state, &ppid) != 2) return 0;
        if (ppid == ancestor) return 1;
        pid = ppid;
    }
    return 0;
}

/* Children and further descendants of this process that are still around
 * (zombies included). */
static inline int th_count_descendants(void) {
    int n = 0;
    pid_t self = getpid();
    DIR *d = opendir("/proc");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == self) continue;
        if (th_is_descendant((pid_t)pid, self)) n++;
    }
    closedir(d);
    return n;
}

/* Agents started by spore run in their own session, so after their parent
 * dies they are reparented; this counts every process on the machine whose
 * command line carries the given marker. */
static inline int th_count_processes_with(const char *marker) {
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1) continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            if (buf[i] == '\0') buf[i] = ' ';
        buf[len] = '\0';
        if (strstr(buf, marker)) n++;
    }
    closedir(d);
    return n;
}

static inline double th_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits up to timeout_s for the descendants of this process to go away. */
static inline int th_wait_no_descendants(double timeout_s) {
    double end = th_now() + timeout_s;
    int n;
    while ((n = th_count_descendants()) > 0 && th_now() < end) usleep(10000);
    return n;
}

#endif
