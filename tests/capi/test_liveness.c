/* Liveness. A hop that stops answering (SIGSTOP) is noticed by keepalives
 * at every position of a 3-hop chain: calls behind it fail with
 * EUNRESPONSIVE, it and everything behind it stop being alive, and their
 * agents and processes are killed. spore_router_free leaves no descendant,
 * stopped or not, with keepalives off. A busy but healthy context is never
 * declared dead, and the settings are checked. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"

enum { kHops = 3 };

static spore_router *router_with_keepalive(int interval_ms, int count) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "liveness_interval", interval_ms));
    TH_OK(spore_options_set_int(o, "liveness_count", count));
    spore_router *r = th_router(o);
    spore_options_free(o);
    return r;
}

/* local.1 -> local -> local, with the pid of each agent. */
static void open_chain(spore_router *r, spore_context *hops[kHops], pid_t pids[kHops]) {
    for (int i = 0; i < kHops; i++) {
        hops[i] = th_connect(r, "local", i ? hops[i - 1] : NULL);
        pids[i] = th_agent_pid(hops[i]);
    }
}

static spore_process *start_sleep(spore_context *ctx, pid_t *pid) {
    spore_process *p = NULL;
    TH_OK(spore_proc_start(&p, ctx, "{\"argv\": [\"sleep\", \"60\"]}", NULL));
    *pid = (pid_t)spore_process_pid(p);
    assert_true(*pid > 1);
    return p;
}

static void assert_gone(pid_t pid, const char *what) {
    if (!th_wait_exited(pid, 10.0 * th_time_factor())) {
        kill(pid, SIGKILL);
        fail_msg("%s (pid %d) is still there (state %c)", what, (int)pid, th_pid_state(pid));
    }
}

static void test_stopped_hop_is_declared_dead_at_every_position(void **state) {
    (void)state;
    for (int pos = 0; pos < kHops; pos++) {
        th_baseline b = th_begin();
        spore_router *r = router_with_keepalive(200, 3);
        spore_context *hops[kHops];
        pid_t pids[kHops], sleeper;
        open_chain(r, hops, pids);
        spore_process *proc = start_sleep(hops[kHops - 1], &sleeper);
        spore_pending *call = NULL;
        TH_OK(spore_call_async(&call, hops[kHops - 1], "proc.run", "{\"argv\": [\"sleep\", \"30\"]}", NULL, 0));

        assert_int_equal(kill(pids[pos], SIGSTOP), 0);
        double t0 = th_now();
        TH_ERR(spore_call_wait(call, NULL, 20000), SPORE_EUNRESPONSIVE);
        double took = th_now() - t0;
        const char *msg = spore_last_error()->message;
        print_message("hop %d stopped: the call failed after %.0f ms: %s\n", pos, took * 1000, msg);
        TH_CONTAINS(msg, "stopped responding");
        TH_CONTAINS(msg, spore_context_name(hops[kHops - 1]));
        /* 3 intervals of 200 ms, plus a tick and scheduling. */
        assert_true(took >= 0.5 && took < 3.0 * th_time_factor());
        spore_call_free(call);

        for (int i = 0; i < kHops; i++) assert_int_equal(spore_context_alive(hops[i]), i < pos);
        for (int i = 0; i < pos; i++) free(th_call(hops[i], "sys.ping", NULL));
        /* The stopped agent, everything behind it and their processes go. */
        for (int i = pos; i < kHops; i++) assert_gone(pids[i], "an agent at or behind the stopped hop");
        assert_gone(sleeper, "the process started behind the stopped hop");
        spore_result *res = NULL;
        TH_ERR(spore_call(&res, hops[kHops - 1], "sys.ping", NULL, NULL, 0, 5000), SPORE_EDISCONNECTED);

        spore_process_free(proc);
        for (int i = kHops - 1; i >= 0; i--) spore_context_free(hops[i]);
        spore_router_free(r);
        for (int i = 0; i < kHops; i++) assert_gone(pids[i], "an agent after spore_router_free");
        th_end(&b);
    }
}

/* Without keepalives, freeing the router still kills every descendant:
 * one stopped hop at each position, then all three stopped. */
static void test_router_free_leaves_no_stopped_descendant(void **state) {
    (void)state;
    for (int pos = 0; pos <= kHops; pos++) {
        th_baseline b = th_begin();
        spore_router *r = router_with_keepalive(0, 3);
        spore_context *hops[kHops];
        pid_t pids[kHops], sleepers[kHops];
        spore_process *procs[kHops];
        open_chain(r, hops, pids);
        for (int i = 0; i < kHops; i++) procs[i] = start_sleep(hops[i], &sleepers[i]);
        for (int i = 0; i < kHops; i++)
            if (i == pos || pos == kHops) assert_int_equal(kill(pids[i], SIGSTOP), 0);
        /* Nothing notices: keepalives are off. */
        th_sleep_ms(300);
        for (int i = 0; i < kHops; i++) assert_true(spore_context_alive(hops[i]));

        double t0 = th_now();
        spore_router_free(r);
        print_message("%s stopped: spore_router_free took %.0f ms\n", pos == kHops ? "every hop" : "one hop",
                      (th_now() - t0) * 1000);
        for (int i = 0; i < kHops; i++) {
            assert_gone(pids[i], "an agent");
            assert_gone(sleepers[i], "a process started by an agent");
            spore_process_free(procs[i]);
            spore_context_free(hops[i]);
        }
        th_end(&b);
    }
}

/* A context whose calls keep it busy answers keepalives from its I/O loop,
 * so it is never declared dead; nor is one busy moving bytes. */
static void test_busy_context_stays_alive(void **state) {
    (void)state;
    th_baseline b = th_begin();
    /* A 900 ms window: shorter than the busy spells below, long enough that
     * a loaded machine (the sanitizer runs share two cores) does not stall
     * a healthy agent past it. */
    int interval = (int)(300 * th_time_factor());
    spore_router *r = router_with_keepalive(interval, 3);
    spore_context *parent = th_connect(r, "local", NULL);
    spore_context *child = th_connect(r, "local", parent);
    spore_result *res = NULL;
    TH_OK(spore_call(&res, child, "proc.run", "{\"argv\": [\"sleep\", \"2\"]}", NULL, 0, 20000));
    spore_result_free(res);
    size_t n = 8u << 20;
    char *blob = malloc(n);
    assert_non_null(blob);
    memset(blob, 'x', n);
    for (int i = 0; i < 5; i++) {
        TH_OK(spore_call(&res, child, "sys.echo", NULL, blob, n, 20000));
        spore_result_free(res);
    }
    free(blob);
    /* Idle for several windows: the pings keep it alive. */
    th_sleep_ms(interval * 8);
    assert_true(spore_context_alive(parent));
    assert_true(spore_context_alive(child));
    free(th_call(child, "sys.ping", NULL));
    spore_context_free(child);
    spore_context_free(parent);
    spore_router_free(r);
    th_end(&b);
}

/* liveness_interval and liveness_count on one context override the
 * router's (here: off), and bad values are EINVAL. */
static void test_keepalive_settings(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_with_keepalive(0, 3);
    spore_context *plain = th_connect(r, "local", NULL);
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "liveness_interval", 150));
    TH_OK(spore_options_set_int(o, "liveness_count", 2));
    spore_context *watched = NULL;
    TH_OK(spore_connect(&watched, r, "local", o, plain));
    spore_options_free(o);
    pid_t plain_pid = th_agent_pid(plain), watched_pid = th_agent_pid(watched);

    assert_int_equal(kill(watched_pid, SIGSTOP), 0);
    double end = th_now() + 5.0 * th_time_factor();
    while (spore_context_alive(watched) && th_now() < end) th_sleep_ms(20);
    assert_false(spore_context_alive(watched));
    assert_gone(watched_pid, "the stopped context's agent");

    /* The plain one is not watched: stopped, it stays "alive". */
    assert_int_equal(kill(plain_pid, SIGSTOP), 0);
    th_sleep_ms(500);
    assert_true(spore_context_alive(plain));
    kill(plain_pid, SIGCONT);
    free(th_call(plain, "sys.ping", NULL));

    const char *keys[] = {"liveness_interval", "liveness_interval", "liveness_count", "liveness_count"};
    const int64_t values[] = {-1, 86400001, 0, 1001};
    for (size_t i = 0; i < 4; i++) {
        TH_OK(spore_options_new(&o));
        TH_OK(spore_options_set_int(o, keys[i], values[i]));
        spore_context *c = NULL;
        TH_ERR(spore_connect(&c, r, "local", o, NULL), SPORE_EINVAL);
        TH_CONTAINS(spore_last_error()->message, keys[i]);
        spore_router *bad = NULL;
        TH_ERR(spore_router_new(&bad, o), SPORE_EINVAL);
        TH_CONTAINS(spore_last_error()->message, keys[i]);
        spore_options_free(o);
    }
    spore_context_free(watched);
    spore_context_free(plain);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stopped_hop_is_declared_dead_at_every_position),
        cmocka_unit_test(test_router_free_leaves_no_stopped_descendant),
        cmocka_unit_test(test_busy_context_stays_alive),
        cmocka_unit_test(test_keepalive_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
