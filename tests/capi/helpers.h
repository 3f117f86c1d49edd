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

/* ------------------------------------------------------------------------
 * Additions for the CMocka suites: small JSON probes, process and file
 * helpers, and (when cmocka.h was included first) assertion helpers.
 * ---------------------------------------------------------------------- */
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

/* Wall-clock seconds since the epoch (log record times use this clock). */
static inline double th_wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Time limits are multiplied by this: 1 normally, more under valgrind (or
 * as set by $SPORE_TEST_TIME_FACTOR). */
static inline double th_time_factor(void) {
    const char *env = getenv("SPORE_TEST_TIME_FACTOR");
    if (env && atof(env) > 0) return atof(env);
    FILE *f = fopen("/proc/self/maps", "r");
    double factor = 1.0;
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strstr(line, "vgpreload")) {
                factor = 10.0;
                break;
            }
        fclose(f);
    }
    return factor;
}

static inline void th_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Start of the value of "key" in a compact JSON text (first occurrence of
 * the key anywhere, which is fine for the flat objects the built-ins
 * return), or NULL. */
static inline const char *th_json_value(const char *json, const char *key) {
    size_t klen = strlen(key);
    const char *p = json;
    while (json && (p = strstr(p, "\"")) != NULL) {
        if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '"') {
            const char *q = p + 2 + klen;
            while (*q == ' ') q++;
            if (*q == ':') {
                q++;
                while (*q == ' ') q++;
                return q;
            }
        }
        p++;
    }
    return NULL;
}

/* 1 and *out set when "key" holds a number. */
static inline int th_json_num(const char *json, const char *key, double *out) {
    const char *v = th_json_value(json, key);
    char *end;
    if (!v) return 0;
    double d = strtod(v, &end);
    if (end == v) return 0;
    if (out) *out = d;
    return 1;
}

/* The integer value of "key", or `fallback` when it is missing. */
static inline long long th_json_int(const char *json, const char *key, long long fallback) {
    double d;
    return th_json_num(json, key, &d) ? (long long)d : fallback;
}

/* 1 true, 0 false, -1 missing or not a boolean. */
static inline int th_json_bool(const char *json, const char *key) {
    const char *v = th_json_value(json, key);
    if (v && strncmp(v, "true", 4) == 0) return 1;
    if (v && strncmp(v, "false", 5) == 0) return 0;
    return -1;
}

/* 1 when "key" holds null. */
static inline int th_json_is_null(const char *json, const char *key) {
    const char *v = th_json_value(json, key);
    return v && strncmp(v, "null", 4) == 0;
}

/* The string value of "key", unescaped (\uXXXX kept as '?'), malloc'd; NULL
 * when missing or not a string. *len (if given) receives its length. */
static inline char *th_json_str(const char *json, const char *key, size_t *len) {
    const char *v = th_json_value(json, key);
    if (!v || *v != '"') return NULL;
    v++;
    size_t cap = 64, n = 0;
    char *out = (char *)malloc(cap);
    if (!out) return NULL;
    while (*v && *v != '"') {
        char c = *v++;
        if (c == '\\') {
            char e = *v++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': c = '?'; for (int i = 0; i < 4 && *v; i++) v++; break;
            case '\0': v--; c = '\\'; break;
            default: c = e; break;
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            char *grown = (char *)realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        out[n++] = c;
    }
    out[n] = '\0';
    if (len) *len = n;
    return out;
}

/* Whether a process exists (zombies included). */
static inline int th_pid_exists(pid_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/* Waits up to timeout_s for pid to disappear; 1 when it did. */
static inline int th_wait_pid_gone(pid_t pid, double timeout_s) {
    double end = th_now() + timeout_s;
    for (;;) {
        if (!th_pid_exists(pid)) return 1;
        if (th_now() >= end) return 0;
        usleep(2000);
    }
}

/* The state letter of a process from /proc/<pid>/stat ('R', 'S', 'Z', ...)
 * or 0 when there is no such process. */
static inline char th_pid_state(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* Waits up to timeout_s for a process that is not our child to be gone:
 * no such pid (kill(pid, 0) fails with ESRCH), or a zombie waiting for its
 * new parent to reap it. 1 when it went. */
static inline int th_wait_exited(pid_t pid, double timeout_s) {
    double end = th_now() + timeout_s;
    for (;;) {
        if (kill(pid, 0) == -1 && errno == ESRCH) return 1;
        if (th_pid_state(pid) == 'Z') return 1;
        if (th_now() >= end) return 0;
        usleep(2000);
    }
}

/* Prints the descendants still around (for failure messages). */
static inline void th_print_descendants(void) {
    pid_t self = getpid();
    DIR *d = opendir("/proc");
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == self) continue;
        if (!th_is_descendant((pid_t)pid, self)) continue;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        FILE *f = fopen(path, "r");
        size_t n = 0;
        if (f) {
            n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
        }
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\0') buf[i] = ' ';
        buf[n] = '\0';
        fprintf(stderr, "  leftover descendant %ld: %s\n", pid, buf);
    }
    closedir(d);
}

/* The fd count once it has stopped changing (a new agent's bootstrap
 * stderr pipe is closed by the router's thread a moment after connect). */
static inline int th_settled_fds(void) {
    int last = th_count_fds(), same = 0;
    for (int i = 0; i < 100 && same < 3; i++) {
        usleep(10000);
        int n = th_count_fds();
        same = n == last ? same + 1 : 0;
        last = n;
    }
    return last;
}

/* 1 when fd is an open descriptor of this process. */
static inline int th_fd_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

/* Waits up to timeout_s for fd to be closed (the router's thread may drop
 * the last reference to an object a moment after the caller freed its
 * handle); 1 when it was. */
static inline int th_wait_fd_closed(int fd, double timeout_s) {
    double end = th_now() + timeout_s;
    while (th_fd_open(fd)) {
        if (th_now() >= end) return 0;
        usleep(1000);
    }
    return 1;
}

/* Prints this process's open fds and what they are (for failure messages). */
static inline void th_print_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

static inline int th__rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path. */
static inline int th_rm_rf(const char *path) {
    return nftw(path, th__rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes a fresh private directory under /tmp named "capi-<tag>-XXXXXX"; the
 * result is malloc'd. */
static inline char *th_mkdtemp(const char *tag) {
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "/tmp/capi-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

/* Writes a whole file; 0 on success. */
static inline int th_write_file(const char *path, const void *data, size_t len, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    const char *p = (const char *)data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

static inline int th_file_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static inline int th__cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, newline-separated names in `dir` that start with `prefix`
 * (malloc'd), for before/after comparisons of leftovers. */
static inline char *th_list_dir_prefix(const char *dir, const char *prefix) {
    char *names[4096];
    size_t n = 0, total = 1;
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d) {
        while ((e = readdir(d)) != NULL && n < 4096)
            if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
                names[n] = strdup(e->d_name);
                total += strlen(e->d_name) + 1;
                n++;
            }
        closedir(d);
    }
    qsort(names, n, sizeof names[0], th__cmp_str);
    char *out = (char *)malloc(total);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(out, names[i]);
        strcat(out, "\n");
        free(names[i]);
    }
    return out;
}

/* 1 when fd is readable right now (poll with timeout_ms). */
static inline int th_readable(int fd, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    return r > 0 && (p.revents & POLLIN);
}

#if defined(CMOCKA_H_)
/* ---- assertion helpers (need cmocka.h included before this header) ---- */

/* Asserts that a spore call returned SPORE_OK, printing the error if not. */
#define TH_OK(expr)                                                                      \
    do {                                                                                 \
        int th_rc_ = (expr);                                                             \
        if (th_rc_ != SPORE_OK)                                                          \
            fail_msg("%s returned %d (%s): %s", #expr, th_rc_, spore_strerror(th_rc_),  \
                     spore_last_error()->message);                                       \
    } while (0)

/* Asserts that a spore call failed with `code`, and that spore_last_error()
 * agrees. */
#define TH_ERR(expr, th_expected)                                                                    \
    do {                                                                                      \
        int th_rc_ = (expr);                                                                  \
        if (th_rc_ != (th_expected))                                                                 \
            fail_msg("%s returned %d (%s), expected %d (%s): %s", #expr, th_rc_,              \
                     spore_strerror(th_rc_), (int)(th_expected), spore_strerror(th_expected),               \
                     th_rc_ ? spore_last_error()->message : "");                              \
        assert_int_equal(spore_last_error()->code, (th_expected));                                   \
    } while (0)

/* Asserts that haystack contains needle, with a readable failure. */
#define TH_CONTAINS(haystack, needle)                                                   \
    do {                                                                                \
        const char *th_h_ = (haystack), *th_n_ = (needle);                             \
        if (!th_h_ || !strstr(th_h_, th_n_))                                            \
            fail_msg("'%s' does not contain '%s'", th_h_ ? th_h_ : "(null)", th_n_);   \
    } while (0)

/* VmRSS of a process in KiB (-1 when it is gone). */
static inline long th_rss_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(fp);
    return kib;
}

/* Resource baseline taken at the start of a test. */
typedef struct th_baseline {
    int fds;
} th_baseline;

static inline th_baseline th_begin(void) {
    th_baseline b;
    if (th_wait_no_descendants(5.0) != 0) th_print_descendants();
    b.fds = th_count_fds();
    return b;
}

/* End-of-test check: no descendant process (or zombie) is left and the fd
 * count is back to where it was. Call after freeing the router. */
static inline void th_end(const th_baseline *b) {
    int n = th_wait_no_descendants(5.0 * th_time_factor());
    if (n != 0) {
        th_print_descendants();
        fail_msg("%d descendant process(es) left behind", n);
    }
    double end = th_now() + 2.0;
    int fds;
    while ((fds = th_count_fds()) != b->fds && th_now() < end) usleep(10000);
    if (fds != b->fds) {
        th_print_fds();
        fail_msg("fd count is %d, was %d at the start", fds, b->fds);
    }
}

/* A router with default options (or `opts`), asserted to exist. */
static inline spore_router *th_router(const spore_options *opts) {
    spore_router *r = NULL;
    TH_OK(spore_router_new(&r, opts));
    assert_non_null(r);
    return r;
}

/* Opens a context, asserting success. */
static inline spore_context *th_connect(spore_router *r, const char *method, spore_context *via) {
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, method, NULL, via));
    assert_non_null(c);
    return c;
}

/* Runs a call that must succeed; returns its JSON (malloc'd). */
static inline char *th_call(spore_context *ctx, const char *fn, const char *args) {
    spore_result *res = NULL;
    TH_OK(spore_call(&res, ctx, fn, args, NULL, 0, 30000));
    assert_non_null(res);
    char *json = strdup(spore_result_json(res));
    spore_result_free(res);
    return json;
}

/* The pid of a context's agent (from sys.info). */
static inline pid_t th_agent_pid(spore_context *ctx) {
    char *json = th_call(ctx, "sys.info", NULL);
    long long pid = th_json_int(json, "pid", -1);
    free(json);
    assert_true(pid > 1);
    return (pid_t)pid;
}
#endif /* CMOCKA_H_ */

#endif
