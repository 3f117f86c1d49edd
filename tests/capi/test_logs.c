/* Forwarded log records: streamed process output, record fields, the log
 * fd, log levels pushed down to contexts (also behind others), timeouts of
 * spore_router_next_log, the bounded queue and its drop counter, warnings
 * of failed no-reply calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "helpers.h"

struct fixture {
    th_baseline base;
    spore_router *r;
    spore_context *c;
    spore_context *f; /* fork behind c */
};

static int setup_opts(void **state, spore_options *o) {
    struct fixture *f = calloc(1, sizeof *f);
    f->base = th_begin();
    TH_OK(spore_router_new(&f->r, o));
    TH_OK(spore_connect(&f->c, f->r, "local", NULL, NULL));
    TH_OK(spore_connect(&f->f, f->r, "fork", NULL, f->c));
    *state = f;
    return 0;
}

static int setup(void **state) { return setup_opts(state, NULL); }

static int teardown(void **state) {
    struct fixture *f = *state;
    spore_context_free(f->f);
    spore_context_free(f->c);
    spore_router_free(f->r);
    th_end(&f->base);
    free(f);
    return 0;
}

/* Takes every record that arrives within timeout_ms of the last one. */
static int drain(spore_router *r, int timeout_ms) {
    int n = 0;
    spore_log_record *rec = NULL;
    while (spore_router_next_log(r, &rec, timeout_ms) == SPORE_OK) {
        spore_log_record_free(rec);
        n++;
    }
    return n;
}

static void run_streaming(spore_context *c, const char *shell) {
    char args[1024];
    snprintf(args, sizeof args, "{\"shell\":\"%s\",\"stream\":true}", shell);
    char *json = th_call(c, "proc.run", args);
    assert_int_equal(th_json_int(json, "rc", -1), 0);
    free(json);
}

static void check_streamed_records(spore_router *r, spore_context *c) {
    double t0 = th_wall_now();
    run_streaming(c, "echo out-line-1; echo err-line-1 >&2; echo out-line-2");
    int got_out = 0, got_err = 0;
    for (int i = 0; i < 3; i++) {
        spore_log_record *rec = NULL;
        TH_OK(spore_router_next_log(r, &rec, 5000));
        const char *logger = spore_log_record_logger(rec), *msg = spore_log_record_message(rec);
        assert_int_equal(spore_log_record_level(rec), SPORE_LOG_INFO);
        assert_string_equal(spore_log_record_context(rec), spore_context_name(c));
        assert_int_equal(spore_log_record_context_id(rec), spore_context_id(c));
        double t = spore_log_record_time(rec);
        if (t < t0 - 2.0 || t > th_wall_now() + 2.0) fail_msg("record time %.3f, now %.3f", t, th_wall_now());
        if (strcmp(logger, "stdout") == 0) {
            /* lines of one stream keep their order and lose their newline */
            assert_string_equal(msg, got_out == 0 ? "out-line-1" : "out-line-2");
            got_out++;
        } else if (strcmp(logger, "stderr") == 0) {
            assert_string_equal(msg, "err-line-1");
            got_err++;
        } else {
            fail_msg("unexpected logger '%s' (%s)", logger, msg);
        }
        /* borrowed strings are stable while the record lives */
        assert_ptr_equal(spore_log_record_message(rec), msg);
        spore_log_record_free(rec);
    }
    assert_int_equal(got_out, 2);
    assert_int_equal(got_err, 1);
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(r, &rec, 100), SPORE_ETIMEDOUT);
    assert_null(rec);
}

static void test_streamed_output_records(void **state) {
    struct fixture *f = *state;
    check_streamed_records(f->r, f->c);
    check_streamed_records(f->r, f->f);
    /* without stream:true nothing is forwarded */
    char *json = th_call(f->c, "proc.run", "{\"shell\":\"echo quiet; echo quiet >&2\"}");
    free(json);
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);
    /* a last line without newline, and a long line */
    run_streaming(f->c, "printf 'no-newline'");
    TH_OK(spore_router_next_log(f->r, &rec, 5000));
    assert_string_equal(spore_log_record_message(rec), "no-newline");
    spore_log_record_free(rec);
    run_streaming(f->c, "head -c 10000 /dev/zero | tr '\\\\0' y; echo");
    TH_OK(spore_router_next_log(f->r, &rec, 5000));
    assert_int_equal(strlen(spore_log_record_message(rec)), 10000);
    spore_log_record_free(rec);
}

static void test_log_fd_readable_while_records_wait(void **state) {
    struct fixture *f = *state;
    int fd = spore_router_log_fd(f->r);
    assert_true(fd >= 0);
    assert_int_equal(spore_router_log_fd(f->r), fd);
    assert_false(th_readable(fd, 0));

    run_streaming(f->c, "for i in 1 2 3 4 5; do echo line-$i; done");
    /* the records were forwarded before the reply: readable now */
    assert_true(th_readable(fd, 0));
    spore_log_record *rec = NULL;
    for (int i = 1; i <= 5; i++) {
        /* still readable while records remain */
        assert_true(th_readable(fd, 0));
        TH_OK(spore_router_next_log(f->r, &rec, 0));
        char want[16];
        snprintf(want, sizeof want, "line-%d", i);
        assert_string_equal(spore_log_record_message(rec), want);
        spore_log_record_free(rec);
    }
    /* drained: not readable */
    assert_false(th_readable(fd, 0));
    TH_ERR(spore_router_next_log(f->r, &rec, 0), SPORE_ETIMEDOUT);
    assert_false(th_readable(fd, 0));

    /* a blocking poll wakes up when a record arrives */
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, f->f, "proc.run", "{\"shell\":\"sleep 0.2; echo late\",\"stream\":true}", NULL, 0));
    double t0 = th_now();
    assert_true(th_readable(fd, 5000));
    assert_true(th_now() - t0 >= 0.15);
    TH_OK(spore_router_next_log(f->r, &rec, 0));
    assert_string_equal(spore_log_record_message(rec), "late");
    assert_string_equal(spore_log_record_context(rec), spore_context_name(f->f));
    spore_log_record_free(rec);
    TH_OK(spore_call_wait(p, NULL, 5000));
    spore_call_free(p);
    assert_false(th_readable(fd, 0));
}

static void test_next_log_timeouts(void **state) {
    struct fixture *f = *state;
    spore_log_record *rec = (spore_log_record *)(uintptr_t)1;
    double t0 = th_now();
    TH_ERR(spore_router_next_log(f->r, &rec, 0), SPORE_ETIMEDOUT);
    assert_true(th_now() - t0 < 0.05);
    assert_null(rec);
    t0 = th_now();
    TH_ERR(spore_router_next_log(f->r, &rec, 250), SPORE_ETIMEDOUT);
    double took = th_now() - t0;
    assert_true(took >= 0.24);
    assert_true(took < 0.8 * th_time_factor());
    TH_CONTAINS(spore_last_error()->message, "250");

    /* -1 waits until a record comes */
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, f->c, "proc.run", "{\"shell\":\"sleep 0.2; echo waited\",\"stream\":true}", NULL, 0));
    t0 = th_now();
    TH_OK(spore_router_next_log(f->r, &rec, -1));
    assert_true(th_now() - t0 >= 0.15);
    assert_string_equal(spore_log_record_message(rec), "waited");
    spore_log_record_free(rec);
    TH_OK(spore_call_wait(p, NULL, 5000));
    spore_call_free(p);
}

/* A failed no-reply call is reported by its target as a WARNING record. */
static void test_no_reply_failure_logged(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        double t0 = th_wall_now();
        TH_OK(spore_call_no_reply(both[i], "fs.stat", "{\"path\":\"/nonexistent/capi-nr\"}", NULL, 0));
        TH_OK(spore_call_no_reply(both[i], "no.such_fn", NULL, NULL, 0));
        TH_OK(spore_call_no_reply(both[i], "fs.stat", "{}", NULL, 0));
        /* blocking built-ins run on a pool: the records may come in any order */
        const char *want[3][2] = {{"fs.stat", "/nonexistent/capi-nr"}, {"no.such_fn", "unknown function"},
                                  {"fs.stat", "'path'"}};
        int matched[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) {
            spore_log_record *rec = NULL;
            TH_OK(spore_router_next_log(f->r, &rec, 5000));
            assert_int_equal(spore_log_record_level(rec), SPORE_LOG_WARNING);
            assert_string_equal(spore_log_record_logger(rec), "spore.agent");
            assert_string_equal(spore_log_record_context(rec), spore_context_name(both[i]));
            assert_int_equal(spore_log_record_context_id(rec), spore_context_id(both[i]));
            const char *msg = spore_log_record_message(rec);
            int which = -1;
            for (int w = 0; w < 3; w++)
                if (!matched[w] && strstr(msg, want[w][0]) && strstr(msg, want[w][1])) which = w;
            if (which < 0) fail_msg("unexpected record: %s", msg);
            matched[which] = 1;
            double t = spore_log_record_time(rec);
            assert_true(t >= t0 - 2.0 && t <= th_wall_now() + 2.0);
            spore_log_record_free(rec);
        }
    }
    /* successful no-reply calls log nothing */
    TH_OK(spore_call_no_reply(f->c, "sys.ping", NULL, NULL, 0));
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);
}

/* Level WARNING: INFO records stop, from the local context and from the
 * fork behind it; WARNING records still come; back to INFO they return. */
static void test_set_log_level_pushed_down(void **state) {
    struct fixture *f = *state;
    TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_WARNING));
    run_streaming(f->c, "echo filtered-local; echo filtered-local >&2");
    run_streaming(f->f, "echo filtered-fork; echo filtered-fork >&2");
    spore_log_record *rec = NULL;
    int rc = spore_router_next_log(f->r, &rec, 200);
    if (rc == SPORE_OK) fail_msg("record at WARNING level: %s", spore_log_record_message(rec));
    assert_int_equal(rc, SPORE_ETIMEDOUT);

    /* a failed no-reply call still logs its warning, from both contexts */
    TH_OK(spore_call_no_reply(f->f, "fs.stat", "{\"path\":\"/nonexistent/capi-warn\"}", NULL, 0));
    TH_OK(spore_router_next_log(f->r, &rec, 5000));
    assert_int_equal(spore_log_record_level(rec), SPORE_LOG_WARNING);
    assert_string_equal(spore_log_record_context(rec), spore_context_name(f->f));
    TH_CONTAINS(spore_log_record_message(rec), "fs.stat");
    TH_CONTAINS(spore_log_record_message(rec), "/nonexistent/capi-warn");
    spore_log_record_free(rec);

    /* a context opened now starts at the current level */
    spore_context *late = th_connect(f->r, "fork", f->c);
    run_streaming(late, "echo filtered-late");
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);

    /* ERROR filters warnings too */
    TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_ERROR));
    TH_OK(spore_call_no_reply(f->c, "fs.stat", "{\"path\":\"/nonexistent/capi-warn\"}", NULL, 0));
    char *json = th_call(f->c, "sys.ping", NULL);
    free(json);
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);

    /* back to INFO: all of them forward again (give the level a moment to
     * travel: test_set_log_level_ordered_with_later_calls is about that) */
    TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_INFO));
    th_sleep_ms(100);
    spore_context *ctxs[3] = {f->c, f->f, late};
    for (int i = 0; i < 3; i++) {
        run_streaming(ctxs[i], "echo visible-again");
        TH_OK(spore_router_next_log(f->r, &rec, 5000));
        assert_string_equal(spore_log_record_message(rec), "visible-again");
        assert_string_equal(spore_log_record_context(rec), spore_context_name(ctxs[i]));
        spore_log_record_free(rec);
    }
    spore_context_free(late);
}

/* A call made after spore_router_set_log_level returns runs at the new
 * level: lowering the level to INFO and at once running a streaming command
 * must forward its output. Repeated, because a lost ordering shows only
 * now and then. */
static void test_set_log_level_ordered_with_later_calls(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    int missing[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 300; k++) {
            TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_WARNING));
            TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_INFO));
            run_streaming(both[i], "echo at-info");
            spore_log_record *rec = NULL;
            if (spore_router_next_log(f->r, &rec, 0) == SPORE_OK) {
                assert_string_equal(spore_log_record_message(rec), "at-info");
                spore_log_record_free(rec);
            } else {
                missing[i]++;
            }
        }
    if (missing[0] || missing[1])
        fail_msg("streamed output lost after lowering the level: %d/300 calls in %s, %d/300 in %s", missing[0],
                 spore_context_name(f->c), missing[1], spore_context_name(f->f));
}

/* DEBUG shows the agents' own debug records, e.g. their "ready" line. */
static void test_debug_level_records(void **state) {
    struct fixture *f = *state;
    TH_OK(spore_router_set_log_level(f->r, SPORE_LOG_DEBUG));
    spore_context *c = th_connect(f->r, "local", NULL);
    spore_context *k = th_connect(f->r, "fork", c);
    char *json = th_call(k, "sys.ping", NULL);
    free(json);
    int ready_c = 0, ready_k = 0;
    spore_log_record *rec = NULL;
    double end = th_now() + 5.0;
    while ((!ready_c || !ready_k) && th_now() < end && spore_router_next_log(f->r, &rec, 1000) == SPORE_OK) {
        if (spore_log_record_level(rec) == SPORE_LOG_DEBUG && strstr(spore_log_record_message(rec), "ready")) {
            assert_string_equal(spore_log_record_logger(rec), "spore.agent");
            if (spore_log_record_context_id(rec) == spore_context_id(c)) ready_c++;
            if (spore_log_record_context_id(rec) == spore_context_id(k)) {
                assert_string_equal(spore_log_record_context(rec), spore_context_name(k));
                ready_k++;
            }
        }
        spore_log_record_free(rec);
    }
    assert_int_equal(ready_c, 1);
    assert_int_equal(ready_k, 1);
    spore_context_free(k);
    spore_context_free(c);
}

/* The router's log_level option applies from the start. */
static int setup_warning(void **state) {
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "log_level", SPORE_LOG_WARNING));
    int rc = setup_opts(state, o);
    spore_options_free(o);
    return rc;
}

static void test_router_log_level_option(void **state) {
    struct fixture *f = *state;
    run_streaming(f->c, "echo hidden");
    run_streaming(f->f, "echo hidden");
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 200), SPORE_ETIMEDOUT);
    TH_OK(spore_call_no_reply(f->c, "no.such", NULL, NULL, 0));
    TH_OK(spore_router_next_log(f->r, &rec, 5000));
    assert_int_equal(spore_log_record_level(rec), SPORE_LOG_WARNING);
    TH_CONTAINS(spore_log_record_message(rec), "no.such");
    spore_log_record_free(rec);
}

/* log_queue_size 10: older records are dropped and counted. */
static int setup_queue10(void **state) {
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "log_queue_size", 10));
    int rc = setup_opts(state, o);
    spore_options_free(o);
    return rc;
}

static void test_dropped_logs(void **state) {
    struct fixture *f = *state;
    assert_int_equal(spore_router_dropped_logs(f->r), 0);
    /* records come before the reply, so all 100 are in when it returns */
    run_streaming(f->c, "i=1; while [ $i -le 100 ]; do echo rec-$i; i=$((i+1)); done");
    assert_int_equal(spore_router_dropped_logs(f->r), 90);
    /* the newest 10 were kept, oldest first */
    for (int i = 91; i <= 100; i++) {
        spore_log_record *rec = NULL;
        TH_OK(spore_router_next_log(f->r, &rec, 0));
        char want[16];
        snprintf(want, sizeof want, "rec-%d", i);
        assert_string_equal(spore_log_record_message(rec), want);
        spore_log_record_free(rec);
    }
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 0), SPORE_ETIMEDOUT);
    /* the counter only grows; taking records in time drops none */
    run_streaming(f->f, "echo a; echo b");
    assert_int_equal(drain(f->r, 100), 2);
    assert_int_equal(spore_router_dropped_logs(f->r), 90);
}

/* Records outlive the router; next_log after every context went away. */
static void test_records_outlive_router(void **state) {
    struct fixture *f = *state;
    run_streaming(f->c, "echo keep-me");
    spore_log_record *rec = NULL;
    TH_OK(spore_router_next_log(f->r, &rec, 5000));
    spore_router_free(f->r);
    f->r = NULL;
    assert_string_equal(spore_log_record_message(rec), "keep-me");
    assert_string_equal(spore_log_record_logger(rec), "stdout");
    spore_log_record_free(rec);
}

/* Threads blocked in spore_router_next_log are woken with ESHUTDOWN by
 * spore_router_free, which returns only after they left. */
struct log_waiter {
    spore_router *r;
    int timeout_ms;
    int rc;
    int returned; /* __atomic builtins: read while the thread runs */
    double returned_at;
};

static void *wait_for_log(void *p) {
    struct log_waiter *w = p;
    spore_log_record *rec = NULL;
    w->rc = spore_router_next_log(w->r, &rec, w->timeout_ms);
    spore_log_record_free(rec);
    w->returned_at = th_now();
    __atomic_store_n(&w->returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_next_log_woken_by_router_free(void **state) {
    struct fixture *f = *state;
    enum { N = 3 };
    pthread_t t[N];
    struct log_waiter w[N];
    drain(f->r, 200); /* records of the fixture's start are not what we wait for */
    for (int i = 0; i < N; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].r = f->r;
        w[i].timeout_ms = i == 0 ? -1 : 60000;
        assert_int_equal(pthread_create(&t[i], NULL, wait_for_log, &w[i]), 0);
    }
    th_sleep_ms(100);
    int early = 0;
    for (int i = 0; i < N; i++) early += __atomic_load_n(&w[i].returned, __ATOMIC_ACQUIRE);
    if (early) {
        spore_router_free(f->r); /* wakes and waits for them before the assert leaves */
        f->r = NULL;
        for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
        fail_msg("%d waiters returned before the router was freed", early);
    }
    double t0 = th_now();
    spore_router_free(f->r);
    double freed_at = th_now();
    f->r = NULL;
    /* (that they no longer touch the freed router is for ASan to see) */
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL); /* before any assert can leave */
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].rc, SPORE_ESHUTDOWN);
        assert_true(w[i].returned_at - freed_at < 0.5 * th_time_factor());
    }
    assert_true(freed_at - t0 < 4.0 * th_time_factor());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_streamed_output_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_fd_readable_while_records_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_log_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_reply_failure_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_log_level_pushed_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_log_level_ordered_with_later_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_level_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_router_log_level_option, setup_warning, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_logs, setup_queue10, teardown),
        cmocka_unit_test_setup_teardown(test_records_outlive_router, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_log_woken_by_router_free, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
