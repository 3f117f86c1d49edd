/* Concurrency: many blocking calls in one context at once, many threads
 * calling one context, many contexts opened at once from many threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "helpers.h"

/* 50 `sleep 1` in one context run side by side, and the context still
 * answers a ping at once meanwhile. */
static void test_50_concurrent_sleeps(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = th_connect(r, "local", NULL);
    enum { N = 50 };
    spore_pending *p[N];
    double t0 = th_now();
    for (int i = 0; i < N; i++) TH_OK(spore_call_async(&p[i], c, "proc.run", "{\"argv\":[\"sleep\",\"1\"]}", NULL, 0));
    th_sleep_ms(200); /* all of them are running now */
    double worst_ping = 0;
    for (int k = 0; k < 5; k++) {
        double p0 = th_now();
        char *json = th_call(c, "sys.ping", NULL);
        double took = th_now() - p0;
        assert_string_equal(json, "true");
        free(json);
        if (took > worst_ping) worst_ping = took;
        th_sleep_ms(50);
    }
    /* a blocking built-in meanwhile is not queued behind the sleeps either */
    double s0 = th_now();
    char *json = th_call(c, "fs.stat", "{\"path\":\"/\"}");
    double stat_took = th_now() - s0;
    free(json);
    for (int i = 0; i < N; i++) {
        spore_result *res = NULL;
        TH_OK(spore_call_wait(p[i], &res, 10000));
        assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
        spore_result_free(res);
        spore_call_free(p[i]);
    }
    double total = th_now() - t0;
    print_message("50 x sleep 1: %.3f s; worst ping meanwhile %.1f ms; fs.stat %.1f ms\n", total,
                  worst_ping * 1000, stat_took * 1000);
    assert_true(total >= 0.99);
    assert_true(total < 2.5 * th_time_factor());
    assert_true(worst_ping < 0.1 * th_time_factor());
    assert_true(stat_took < 0.1 * th_time_factor());
    spore_context_free(c);
    spore_router_free(r);
    th_end(&b);
}

/* 8 threads x 1,000 calls on one context. */
struct caller {
    spore_context *c;
    int id, ok, bad;
    char first_error[256];
};

static void note_bad(struct caller *a, const char *what) {
    if (a->bad++ == 0) snprintf(a->first_error, sizeof a->first_error, "%s", what);
}

static void *call_many(void *p) {
    struct caller *a = p;
    for (int i = 0; i < 1000; i++) {
        spore_result *res = NULL;
        int rc;
        if (i % 2 == 0) {
            rc = spore_call(&res, a->c, "sys.ping", NULL, NULL, 0, 30000);
            if (rc != SPORE_OK) {
                note_bad(a, spore_last_error()->message);
                continue;
            }
            if (strcmp(spore_result_json(res), "true") != 0) note_bad(a, "ping did not return true");
            else a->ok++;
        } else {
            char args[64], want[64], data[32];
            snprintf(args, sizeof args, "{\"value\":[%d,%d]}", a->id, i);
            snprintf(want, sizeof want, "[%d,%d]", a->id, i);
            int len = snprintf(data, sizeof data, "t%d-c%d", a->id, i);
            rc = spore_call(&res, a->c, "sys.echo", args, data, (size_t)len, 30000);
            if (rc != SPORE_OK) {
                note_bad(a, spore_last_error()->message);
                continue;
            }
            size_t got = 0;
            const void *bytes = spore_result_bytes(res, &got);
            if (strcmp(spore_result_json(res), want) != 0 || got != (size_t)len || memcmp(bytes, data, got) != 0)
                note_bad(a, "echo returned another call's result");
            else a->ok++;
        }
        spore_result_free(res);
    }
    return NULL;
}

static void run_callers(spore_context *c, const char *label) {
    enum { T = 8 };
    pthread_t t[T];
    struct caller a[T];
    double t0 = th_now();
    for (int i = 0; i < T; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].c = c;
        a[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, call_many, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    print_message("8 threads x 1000 calls (%s): %.3f s\n", label, th_now() - t0);
    for (int i = 0; i < T; i++) {
        if (a[i].bad) fail_msg("thread %d: %d bad calls, first: %s", i, a[i].bad, a[i].first_error);
        assert_int_equal(a[i].ok, 1000);
    }
}

static void test_8_threads_x_1000_calls(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = th_connect(r, "local", NULL);
    run_callers(c, "local");
    spore_context *f = th_connect(r, "fork", c);
    run_callers(f, "fork behind local");
    spore_context_free(f);
    spore_context_free(c);
    spore_router_free(r);
    th_end(&b);
}

/* 100 contexts opened at once: 10 threads x 10 connects. */
struct opener {
    spore_router *r;
    spore_context *via;
    spore_context *ctx[10];
    int failed;
    char first_error[256];
};

static void *open_many(void *p) {
    struct opener *o = p;
    for (int i = 0; i < 10; i++) {
        int rc = spore_connect(&o->ctx[i], o->r, o->via ? "fork" : "local", NULL, o->via);
        if (rc != SPORE_OK && o->failed++ == 0)
            snprintf(o->first_error, sizeof o->first_error, "%s", spore_last_error()->message);
    }
    return NULL;
}

static void open_100(spore_router *r, spore_context *via, spore_context **all) {
    enum { T = 10 };
    pthread_t t[T];
    struct opener o[T];
    double t0 = th_now();
    for (int i = 0; i < T; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].r = r;
        o[i].via = via;
        assert_int_equal(pthread_create(&t[i], NULL, open_many, &o[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    print_message("100 %s contexts opened from 10 threads: %.3f s\n", via ? "fork" : "local", th_now() - t0);
    for (int i = 0; i < T; i++) {
        if (o[i].failed) fail_msg("thread %d: %d connects failed, first: %s", i, o[i].failed, o[i].first_error);
        for (int k = 0; k < 10; k++) all[i * 10 + k] = o[i].ctx[k];
    }
}

static void test_100_contexts_concurrently(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *all[100];
    open_100(r, NULL, all);
    /* all distinct, all alive, each answers with its own name */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(spore_context_alive(all[i]), 1);
        for (int k = 0; k < i; k++) {
            assert_int_not_equal(spore_context_id(all[i]), spore_context_id(all[k]));
            assert_string_not_equal(spore_context_name(all[i]), spore_context_name(all[k]));
        }
    }
    spore_pending *p[100];
    for (int i = 0; i < 100; i++) TH_OK(spore_call_async(&p[i], all[i], "sys.info", NULL, NULL, 0));
    for (int i = 0; i < 100; i++) {
        spore_result *res = NULL;
        TH_OK(spore_call_wait(p[i], &res, 30000));
        char *name = th_json_str(spore_result_json(res), "context", NULL);
        assert_string_equal(name, spore_context_name(all[i]));
        free(name);
        assert_int_equal(th_json_int(spore_result_json(res), "ppid", -1), getpid());
        spore_result_free(res);
        spore_call_free(p[i]);
    }
    assert_true(th_count_descendants() >= 100);
    /* the router goes first, the handles after it */
    double t0 = th_now();
    spore_router_free(r);
    print_message("router with 100 contexts freed in %.3f s\n", th_now() - t0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(spore_context_alive(all[i]), 0);
        spore_context_free(all[i]);
    }
    th_end(&b);
}

/* 100 fork contexts at once through one agent. */
static void test_100_forks_concurrently(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *via = th_connect(r, "local", NULL);
    pid_t via_pid = th_agent_pid(via);
    spore_context *all[100];
    open_100(r, via, all);
    for (int i = 0; i < 100; i++) {
        char *json = th_call(all[i], "sys.info", NULL);
        assert_int_equal(th_json_int(json, "ppid", -1), via_pid);
        free(json);
    }
    spore_router_free(r);
    for (int i = 0; i < 100; i++) spore_context_free(all[i]);
    spore_context_free(via);
    th_end(&b);
}

/* Calls from several threads to several contexts while another thread
 * opens and shuts down contexts on the same router. */
struct churner {
    spore_router *r;
    int stop; /* read and written with __atomic builtins */
    int cycles, failed;
    char first_error[256];
};

static void *churn(void *p) {
    struct churner *ch = p;
    while (!__atomic_load_n(&ch->stop, __ATOMIC_ACQUIRE)) {
        spore_context *c = NULL;
        int rc = spore_connect(&c, ch->r, "local", NULL, NULL);
        if (rc == SPORE_OK) {
            spore_result *res = NULL;
            rc = spore_call(&res, c, "sys.ping", NULL, NULL, 0, 10000);
            spore_result_free(res);
            if (rc == SPORE_OK) rc = spore_context_shutdown(c, 5000);
            spore_context_free(c);
        }
        if (rc != SPORE_OK && ch->failed++ == 0)
            snprintf(ch->first_error, sizeof ch->first_error, "%s", spore_last_error()->message);
        ch->cycles++;
    }
    return NULL;
}

static void test_calls_while_contexts_come_and_go(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c1 = th_connect(r, "local", NULL);
    spore_context *c2 = th_connect(r, "fork", c1);
    struct churner ch;
    memset(&ch, 0, sizeof ch);
    ch.r = r;
    pthread_t tc;
    assert_int_equal(pthread_create(&tc, NULL, churn, &ch), 0);
    enum { T = 4 };
    pthread_t t[T];
    struct caller a[T];
    for (int i = 0; i < T; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].c = i % 2 ? c2 : c1;
        a[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, call_many, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    __atomic_store_n(&ch.stop, 1, __ATOMIC_RELEASE);
    pthread_join(tc, NULL);
    print_message("%d connect/shutdown cycles alongside the calls\n", ch.cycles);
    for (int i = 0; i < T; i++) {
        if (a[i].bad) fail_msg("thread %d: %d bad calls, first: %s", i, a[i].bad, a[i].first_error);
        assert_int_equal(a[i].ok, 1000);
    }
    if (ch.failed) fail_msg("%d of %d churn cycles failed, first: %s", ch.failed, ch.cycles, ch.first_error);
    assert_true(ch.cycles > 0);
    spore_context_free(c2);
    spore_context_free(c1);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_50_concurrent_sleeps),
        cmocka_unit_test(test_8_threads_x_1000_calls),
        cmocka_unit_test(test_100_contexts_concurrently),
        cmocka_unit_test(test_100_forks_concurrently),
        cmocka_unit_test(test_calls_while_contexts_come_and_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
