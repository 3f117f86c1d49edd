/*
 * bench_util.h - what the benchmark programs of tests/bench share: a clock,
 * the "sample" output lines, run and iteration counts from the environment,
 * and a quiet router. Define BENCH_NAME (for messages) before including it.
 */
#ifndef SPORE_BENCH_UTIL_H
#define SPORE_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "spore/spore.h"

#define MAX_RUNS 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die_spore(const char *what, int rc) {
    const spore_error *e = spore_last_error();
    fprintf(stderr, BENCH_NAME ": %s failed: %s (%d): %s\n", what, spore_strerror(rc), rc, e->message);
    exit(1);
}

static void emit(const char *metric, const char *unit, const double *v, int n) {
    printf("sample %s %s", metric, unit);
    for (int i = 0; i < n; i++) printf(" %.6g", v[i]);
    printf("\n");
    fflush(stdout);
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Number of runs of each measurement; BENCH_QUICK=1 makes every count small. */
static int runs(int def) {
    int n = env_int("BENCH_RUNS", def);
    if (env_int("BENCH_QUICK", 0)) n = 3;
    return n < 1 ? 1 : (n > MAX_RUNS ? MAX_RUNS : n);
}

static int iters(int def) { return env_int("BENCH_QUICK", 0) ? (def / 10 > 0 ? def / 10 : 1) : def; }

/* A router whose log level is WARNING: log records are not what is measured. */
static spore_router *new_router(void) {
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

static void ping(spore_context *c) {
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "sys.ping", NULL, NULL, 0, 30000);
    if (rc != SPORE_OK) die_spore("spore_call(sys.ping)", rc);
    spore_result_free(res);
}

static void close_ctx(spore_context *c) {
    spore_context_shutdown(c, 5000);
    spore_context_free(c);
}

#endif
