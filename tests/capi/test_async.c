/* Asynchronous calls: spore_call_async, _wait (timeouts, taking the result
 * once), _done, _fd with poll and select, _error and _free of calls that
 * are still pending. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/select.h>

#include "helpers.h"

struct fixture {
    th_baseline base;
    spore_router *r;
    spore_context *c;
};

static int setup(void **state) {
    struct fixture *f = calloc(1, sizeof *f);
    f->base = th_begin();
    TH_OK(spore_router_new(&f->r, NULL));
    TH_OK(spore_connect(&f->c, f->r, "local", NULL, NULL));
    *state = f;
    return 0;
}

static int teardown(void **state) {
    struct fixture *f = *state;
    spore_context_free(f->c);
    spore_router_free(f->r);
    th_end(&f->base);
    free(f);
    return 0;
}

static spore_pending *start_sleep(spore_context *c, const char *seconds) {
    char args[128];
    snprintf(args, sizeof args, "{\"argv\":[\"sleep\",\"%s\"]}", seconds);
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, c, "proc.run", args, NULL, 0));
    assert_non_null(p);
    return p;
}

static void test_wait_timeout_leaves_call_pending(void **state) {
    struct fixture *f = *state;
    double t0 = th_now();
    spore_pending *p = start_sleep(f->c, "0.5");
    /* spore_call_async returns at once */
    assert_true(th_now() - t0 < 0.2 * th_time_factor());
    assert_int_equal(spore_call_done(p), 0);
    assert_int_equal(spore_call_error(p)->code, SPORE_OK);

    spore_result *res = (spore_result *)(uintptr_t)1;
    double t1 = th_now();
    TH_ERR(spore_call_wait(p, &res, 100), SPORE_ETIMEDOUT);
    double waited = th_now() - t1;
    assert_true(waited >= 0.09);
    assert_true(waited < 0.4);
    assert_null(res);
    assert_string_equal(spore_last_error()->function, "proc.run");
    assert_string_equal(spore_last_error()->context, spore_context_name(f->c));
    /* still pending, nothing recorded as its error */
    assert_int_equal(spore_call_done(p), 0);
    assert_int_equal(spore_call_error(p)->code, SPORE_OK);
    TH_ERR(spore_call_wait(p, &res, 0), SPORE_ETIMEDOUT);

    /* a later wait succeeds */
    TH_OK(spore_call_wait(p, &res, -1));
    double total = th_now() - t0;
    assert_true(total >= 0.45);
    assert_non_null(res);
    assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
    spore_result_free(res);
    assert_int_equal(spore_call_done(p), 1);
    assert_int_equal(spore_call_error(p)->code, SPORE_OK);

    /* the result can be taken once */
    res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call_wait(p, &res, 0), SPORE_EINVAL);
    assert_null(res);
    TH_CONTAINS(spore_last_error()->message, "already");
    TH_ERR(spore_call_wait(p, &res, -1), SPORE_EINVAL);
    /* ... and spore_call_done stays 1 */
    assert_int_equal(spore_call_done(p), 1);
    spore_call_free(p);

    /* out may be NULL to discard the result; the result is gone after that */
    TH_OK(spore_call_async(&p, f->c, "sys.echo", "{\"value\":1}", "x", 1));
    TH_OK(spore_call_wait(p, NULL, 5000));
    TH_ERR(spore_call_wait(p, &res, 0), SPORE_EINVAL);
    spore_call_free(p);
}

static void test_done_polling(void **state) {
    struct fixture *f = *state;
    double t0 = th_now();
    spore_pending *p = start_sleep(f->c, "0.3");
    int polls = 0;
    while (!spore_call_done(p)) {
        polls++;
        assert_true(th_now() - t0 < 5.0);
        th_sleep_ms(2);
    }
    double took = th_now() - t0;
    assert_true(took >= 0.29);
    assert_true(took < 1.0 * th_time_factor());
    assert_true(polls > 10);
    /* done: a zero-timeout wait returns the result */
    spore_result *res = NULL;
    TH_OK(spore_call_wait(p, &res, 0));
    assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
    spore_result_free(res);
    spore_call_free(p);
}

static void test_fd_readable_exactly_when_done(void **state) {
    struct fixture *f = *state;
    spore_pending *p = start_sleep(f->c, "0.3");
    int fd = spore_call_fd(p);
    assert_true(fd >= 0);
    /* the same fd every time; an open fd of ours */
    assert_int_equal(spore_call_fd(p), fd);
    assert_true(th_fd_open(fd));
    assert_false(th_readable(fd, 0));
    assert_int_equal(spore_call_done(p), 0);

    /* while waiting: readable implies done, and done implies readable */
    double t0 = th_now();
    for (;;) {
        int readable = th_readable(fd, 0);
        int done = spore_call_done(p);
        if (readable) assert_int_equal(done, 1);
        int done2 = spore_call_done(p);
        int readable2 = th_readable(fd, 0);
        if (done2) assert_true(readable2);
        if (readable && done) break;
        assert_true(th_now() - t0 < 5.0);
        usleep(500);
    }
    double took = th_now() - t0;
    assert_true(took >= 0.25);
    /* a blocking poll returns at once now, and keeps doing so until freed */
    assert_true(th_readable(fd, -1));
    assert_true(th_readable(fd, 0));
    spore_result *res = NULL;
    TH_OK(spore_call_wait(p, &res, 0));
    spore_result_free(res);
    assert_true(th_readable(fd, 0));
    spore_call_free(p);
    assert_true(th_wait_fd_closed(fd, 1.0));

    /* an fd asked for after the call finished is readable at once */
    TH_OK(spore_call_async(&p, f->c, "sys.ping", NULL, NULL, 0));
    TH_OK(spore_call_wait(p, &res, 5000));
    spore_result_free(res);
    fd = spore_call_fd(p);
    assert_true(fd >= 0);
    assert_true(th_readable(fd, 0));
    spore_call_free(p);
    assert_true(th_wait_fd_closed(fd, 1.0));

    /* a blocking poll wakes up when the call ends */
    p = start_sleep(f->c, "0.2");
    fd = spore_call_fd(p);
    t0 = th_now();
    assert_true(th_readable(fd, 5000));
    took = th_now() - t0;
    assert_true(took >= 0.15);
    assert_true(took < 1.0 * th_time_factor());
    assert_int_equal(spore_call_done(p), 1);
    spore_call_free(p);
    assert_true(th_wait_fd_closed(fd, 1.0));
    /* (the fixture's teardown checks the fd count against the start) */
}

/* select() over several calls: they are seen finishing in the order of
 * their durations, not of their starts. */
static void test_select_over_many_calls(void **state) {
    struct fixture *f = *state;
    enum { N = 5 };
    spore_pending *p[N];
    int fds[N], order[N], finished = 0, seen[N] = {0};
    const char *durations[N] = {"0.75", "0.6", "0.45", "0.3", "0.15"};
    for (int i = 0; i < N; i++) {
        p[i] = start_sleep(f->c, durations[i]);
        fds[i] = spore_call_fd(p[i]);
        assert_true(fds[i] >= 0);
    }
    double t0 = th_now();
    while (finished < N) {
        fd_set set;
        FD_ZERO(&set);
        int maxfd = -1;
        for (int i = 0; i < N; i++)
            if (!seen[i]) {
                FD_SET(fds[i], &set);
                if (fds[i] > maxfd) maxfd = fds[i];
            }
        struct timeval tv = {5, 0};
        int n = select(maxfd + 1, &set, NULL, NULL, &tv);
        assert_true(n > 0);
        for (int i = 0; i < N; i++)
            if (!seen[i] && FD_ISSET(fds[i], &set)) {
                assert_int_equal(spore_call_done(p[i]), 1);
                spore_result *res = NULL;
                TH_OK(spore_call_wait(p[i], &res, 0));
                assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
                spore_result_free(res);
                seen[i] = 1;
                order[finished++] = i;
            }
    }
    double took = th_now() - t0;
    /* they ran at the same time */
    assert_true(took < 1.5 * th_time_factor());
    for (int k = 0; k < N; k++) assert_int_equal(order[k], N - 1 - k);
    for (int i = 0; i < N; i++) spore_call_free(p[i]);
}

/* Many calls in flight, each result goes to its own call. */
static void test_many_in_flight_results_matched(void **state) {
    struct fixture *f = *state;
    enum { N = 300 };
    spore_pending *p[N];
    for (int i = 0; i < N; i++) {
        char args[64], data[32];
        snprintf(args, sizeof args, "{\"value\":%d}", i);
        int len = snprintf(data, sizeof data, "data-%d", i);
        TH_OK(spore_call_async(&p[i], f->c, "sys.echo", args, data, (size_t)len));
    }
    for (int i = N - 1; i >= 0; i--) {
        spore_result *res = NULL;
        TH_OK(spore_call_wait(p[i], &res, 10000));
        char want[32];
        snprintf(want, sizeof want, "%d", i);
        assert_string_equal(spore_result_json(res), want);
        int len = snprintf(want, sizeof want, "data-%d", i);
        size_t got = 0;
        const void *bytes = spore_result_bytes(res, &got);
        assert_int_equal(got, (size_t)len);
        assert_memory_equal(bytes, want, (size_t)len);
        spore_result_free(res);
        spore_call_free(p[i]);
    }
}

static void test_call_error_after_failure(void **state) {
    struct fixture *f = *state;
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, f->c, "fs.stat", "{\"path\":\"/nonexistent/capi-async\"}", NULL, 0));
    /* finished but not yet waited for: the error is visible already */
    double end = th_now() + 5.0;
    while (!spore_call_done(p) && th_now() < end) th_sleep_ms(1);
    const spore_error *e = spore_call_error(p);
    assert_int_equal(e->code, SPORE_EREMOTE);

    spore_result *res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call_wait(p, &res, 5000), SPORE_EREMOTE);
    assert_null(res);
    e = spore_call_error(p);
    assert_non_null(e);
    assert_int_equal(e->code, SPORE_EREMOTE);
    assert_string_equal(e->remote_type, "FileNotFoundError");
    assert_string_equal(e->function, "fs.stat");
    assert_string_equal(e->context, spore_context_name(f->c));
    TH_CONTAINS(e->message, "/nonexistent/capi-async");

    /* the call's error is its own: other failures on this thread leave it */
    TH_ERR(spore_options_new(NULL), SPORE_EINVAL);
    assert_int_equal(spore_call_error(p)->code, SPORE_EREMOTE);
    TH_CONTAINS(spore_call_error(p)->message, "/nonexistent/capi-async");
    /* later waits repeat the call's error */
    TH_ERR(spore_call_wait(p, &res, 0), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->remote_type, "FileNotFoundError");
    assert_int_equal(spore_call_done(p), 1);
    spore_call_free(p);

    /* ENOFUNC and EBADARGS through the async path */
    TH_OK(spore_call_async(&p, f->c, "no.such", NULL, NULL, 0));
    TH_ERR(spore_call_wait(p, NULL, 5000), SPORE_ENOFUNC);
    assert_int_equal(spore_call_error(p)->code, SPORE_ENOFUNC);
    assert_string_equal(spore_call_error(p)->function, "no.such");
    spore_call_free(p);
    TH_OK(spore_call_async(&p, f->c, "fs.stat", "{}", NULL, 0));
    TH_ERR(spore_call_wait(p, NULL, 5000), SPORE_EBADARGS);
    assert_int_equal(spore_call_error(p)->code, SPORE_EBADARGS);
    spore_call_free(p);

    /* a successful call's error is SPORE_OK */
    TH_OK(spore_call_async(&p, f->c, "sys.ping", NULL, NULL, 0));
    TH_OK(spore_call_wait(p, NULL, 5000));
    assert_int_equal(spore_call_error(p)->code, SPORE_OK);
    spore_call_free(p);
}

/* Freeing calls that are still pending: no crash, their replies are
 * discarded, other calls are unaffected. */
static void test_free_pending_call(void **state) {
    struct fixture *f = *state;
    for (int i = 0; i < 20; i++) {
        spore_pending *p = NULL;
        TH_OK(spore_call_async(&p, f->c, "proc.run", "{\"argv\":[\"sleep\",\"0.2\"]}", NULL, 0));
        int fd = i % 2 ? spore_call_fd(p) : -1;
        if (i % 2) assert_true(th_fd_open(fd));
        spore_call_free(p);
        if (i % 2) assert_true(th_wait_fd_closed(fd, 1.0));
        /* and calls whose reply is about to arrive */
        TH_OK(spore_call_async(&p, f->c, "sys.echo", "{\"value\":\"dropped\"}", "x", 1));
        spore_call_free(p);
    }
    /* meanwhile and after the abandoned replies arrive, calls are fine */
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 20; i++) {
            spore_result *res = NULL;
            char args[64], want[32];
            snprintf(args, sizeof args, "{\"value\":\"kept-%d\"}", i);
            snprintf(want, sizeof want, "\"kept-%d\"", i);
            TH_OK(spore_call(&res, f->c, "sys.echo", args, NULL, 0, 5000));
            assert_string_equal(spore_result_json(res), want);
            spore_result_free(res);
        }
        th_sleep_ms(300);
    }
    /* no log record about the discarded replies */
    spore_log_record *rec = NULL;
    int rc = spore_router_next_log(f->r, &rec, 0);
    if (rc == SPORE_OK) {
        print_error("unexpected log: %s: %s\n", spore_log_record_logger(rec), spore_log_record_message(rec));
        spore_log_record_free(rec);
    }
    assert_int_equal(rc, SPORE_ETIMEDOUT);
}

/* A call handle outlives its context handle and its router. */
static void test_call_outlives_handles(void **state) {
    struct fixture *f = *state;
    spore_pending *done = NULL, *pending = NULL;
    TH_OK(spore_call_async(&done, f->c, "sys.echo", "{\"value\":\"survivor\"}", NULL, 0));
    double end = th_now() + 5.0;
    while (!spore_call_done(done) && th_now() < end) th_sleep_ms(1);
    assert_int_equal(spore_call_done(done), 1);
    TH_OK(spore_call_async(&pending, f->c, "proc.run", "{\"argv\":[\"sleep\",\"10\"]}", NULL, 0));
    spore_context_free(f->c);
    f->c = NULL;
    spore_router_free(f->r);
    f->r = NULL;
    /* the finished call still hands out its result */
    spore_result *res = NULL;
    TH_OK(spore_call_wait(done, &res, 0));
    assert_string_equal(spore_result_json(res), "\"survivor\"");
    spore_result_free(res);
    /* the pending one was failed by the router's end (which code: see
     * test_errors.c, test_eshutdown_after_router_free) */
    assert_int_equal(spore_call_done(pending), 1);
    int rc = spore_call_wait(pending, NULL, 0);
    assert_true(rc == SPORE_ESHUTDOWN || rc == SPORE_EDISCONNECTED);
    assert_true(th_readable(spore_call_fd(pending), 0));
    spore_call_free(pending);
    spore_call_free(done);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wait_timeout_leaves_call_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_polling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_readable_exactly_when_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select_over_many_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_in_flight_results_matched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_error_after_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_pending_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_outlives_handles, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
