/*
 * children_bench.c - what a controller pays per context it holds (run by
 * scripts/bench core). Not a test.
 *
 *   master_kib_per_child        VmRSS growth of this process per idle direct
 *                               child, holding N local contexts at once
 *                               (default 1,000: a fleet of ssh hosts is that
 *                               many direct children)
 *   master_kib_per_child_tree   the same N contexts as a tree: N/50 local
 *                               children with 49 forks under each
 *
 * Output lines as core_bench.c's ("sample <metric> <unit> <v>...",
 * "info <metric> <key> <value>"). The agent is $SPORE_AGENT_PATH.
 * BENCH_CHILDREN sets N (a multiple of 50); BENCH_QUICK=1 makes it 200.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_NAME "children_bench"
#include "bench_util.h"

static spore_context *open_ctx(spore_router *r, const char *method, spore_context *via) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, method, NULL, via);
    if (rc != SPORE_OK) die_spore("spore_connect", rc);
    return c;
}

/* Opens n contexts (flat, or as a tree of n/50 locals with 49 forks each),
 * pings each once, and reports the RSS growth per context. */
static double kib_per_context(int n, int tree, long *threads) {
    spore_router *r = new_router();
    /* Warm up: the agent image read, the first stream, the loop's buffers. */
    spore_context *warm = open_ctx(r, "local", NULL);
    ping(warm);
    long before = self_status("VmRSS");
    spore_context **all = calloc((size_t)n, sizeof *all);
    if (!all) exit(1);
    for (int i = 0; i < n; i++) {
        spore_context *via = tree && i % 50 ? all[i - i % 50] : NULL;
        all[i] = open_ctx(r, via ? "fork" : "local", via);
        ping(all[i]);
    }
    long after = self_status("VmRSS");
    *threads = self_status("Threads");
    for (int i = n - 1; i >= 0; i--) spore_context_free(all[i]);
    free(all);
    spore_context_free(warm);
    spore_router_free(r);
    return (double)(after - before) / n;
}

int main(void) {
    int n = env_int("BENCH_QUICK", 0) ? 200 : env_int("BENCH_CHILDREN", 1000);
    n -= n % 50;
    if (n < 50) n = 50;
    int nruns = env_int("BENCH_QUICK", 0) ? 1 : runs(3);
    double flat[MAX_RUNS], tree[MAX_RUNS];
    long threads_flat = 0, threads_tree = 0;
    for (int i = 0; i < nruns; i++) {
        flat[i] = kib_per_context(n, 0, &threads_flat);
        tree[i] = kib_per_context(n, 1, &threads_tree);
    }
    emit("master_kib_per_child", "KiB", flat, nruns);
    printf("info master_kib_per_child children %d\n", n);
    printf("info master_kib_per_child threads %ld\n", threads_flat);
    emit("master_kib_per_child_tree", "KiB", tree, nruns);
    printf("info master_kib_per_child_tree children %d\n", n);
    printf("info master_kib_per_child_tree threads %ld\n", threads_tree);
    return 0;
}
