/*
 * bench_util.h - what the benchmark programs of tests/bench share: a clock,
 * the "sample" output lines, run and iteration counts from the environment,
 * a quiet router, a process's memory and the options of an ssh context to the
 * harness sshd. Define BENCH_NAME (for messages) before including it.
 */
#ifndef SPORE_BENCH_UTIL_H
#define SPORE_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spore/spore.h"

#define MAX_RUNS 64

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void die_spore(const char *what, int rc) {
    const spore_error *e = spore_last_error();
    fprintf(stderr, BENCH_NAME ": %s failed: %s (%d): %s\n", what, spore_strerror(rc), rc, e->message);
    exit(1);
}

static inline void emit(const char *metric, const char *unit, const double *v, int n) {
    printf("sample %s %s", metric, unit);
    for (int i = 0; i < n; i++) printf(" %.6g", v[i]);
    printf("\n");
    fflush(stdout);
}

static inline int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Number of runs of each measurement; BENCH_QUICK=1 makes every count small. */
static inline int runs(int def) {
    int n = env_int("BENCH_RUNS", def);
    if (env_int("BENCH_QUICK", 0)) n = 3;
    return n < 1 ? 1 : (n > MAX_RUNS ? MAX_RUNS : n);
}

static inline int iters(int def) { return env_int("BENCH_QUICK", 0) ? (def / 10 > 0 ? def / 10 : 1) : def; }

/* A router whose log level is WARNING: log records are not what is measured. */
static inline spore_router *new_router(void) {
    spore_router *r = NULL;
    spore_options *o = NULL;
    int rc = spore_options_new(&o);
    if (rc != SPORE_OK) die_spore("spore_options_new", rc);
    spore_options_set_int(o, "log_level", SPORE_LOG_WARNING);
    rc = spore_router_new(&r, o);
    spore_options_free(o);
    if (rc != SPORE_OK) die_spore("spore_router_new", rc);
    return r;
}

static inline void ping(spore_context *c) {
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "sys.ping", NULL, NULL, 0, 30000);
    if (rc != SPORE_OK) die_spore("spore_call(sys.ping)", rc);
    spore_result_free(res);
}

static inline void close_ctx(spore_context *c) {
    spore_context_shutdown(c, 5000);
    spore_context_free(c);
}

/* VmRSS of a process in KiB, or -1 when it is gone. */
static inline long vmrss_kib(long pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

/* A field of this process's /proc/self/status ("VmRSS", "VmSize" in KiB,
 * "Threads"), or -1. */
static inline long self_status(const char *key) {
    char line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The test sshd of tests/harness, from BENCH_SSH_PORT, BENCH_SSH_USER,
 * BENCH_SSH_KEY and BENCH_KNOWN_HOSTS; 0 when one is missing. */
static const char *g_port, *g_user, *g_key, *g_known;
static inline int bench_ssh_env(void) {
    g_port = getenv("BENCH_SSH_PORT");
    g_user = getenv("BENCH_SSH_USER");
    g_key = getenv("BENCH_SSH_KEY");
    g_known = getenv("BENCH_KNOWN_HOSTS");
    return g_port && g_user && g_key && g_known;
}

/* Connect options of an ssh context to that sshd with backend "libssh2" or
 * "openssh" (its own configuration files ignored). */
static inline spore_options *bench_ssh_options(const char *backend) {
    spore_options *o = NULL;
    int rc = spore_options_new(&o);
    if (rc != SPORE_OK) die_spore("spore_options_new", rc);
    spore_options_set_str(o, "hostname", "127.0.0.1");
    spore_options_set_int(o, "port", atoi(g_port));
    spore_options_set_str(o, "username", g_user);
    spore_options_set_str(o, "identity_file", g_key);
    spore_options_set_str(o, "known_hosts_file", g_known);
    spore_options_set_bool(o, "use_agent", 0);
    spore_options_set_str(o, "backend", backend);
    if (strcmp(backend, "openssh") == 0) spore_options_set_str(o, "ssh_args", "-F /dev/null");
    return o;
}

#endif
