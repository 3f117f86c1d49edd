/* Call chains: pipelined no-reply steps run in order, the first failure
 * fails every later step with the same error without running them, chains
 * are independent of each other, spore_chain_free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"

struct fixture {
    th_baseline base;
    spore_router *r;
    spore_context *c;
    spore_context *f; /* fork behind c */
    char *dir;
};

static int setup(void **state) {
    struct fixture *f = calloc(1, sizeof *f);
    f->base = th_begin();
    TH_OK(spore_router_new(&f->r, NULL));
    TH_OK(spore_connect(&f->c, f->r, "local", NULL, NULL));
    TH_OK(spore_connect(&f->f, f->r, "fork", NULL, f->c));
    f->dir = th_mkdtemp("chain");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    struct fixture *f = *state;
    spore_context_free(f->f);
    spore_context_free(f->c);
    spore_router_free(f->r);
    th_rm_rf(f->dir);
    free(f->dir);
    th_end(&f->base);
    free(f);
    return 0;
}

static void path_in(const struct fixture *f, const char *name, char *out, size_t size) {
    snprintf(out, size, "%s/%s", f->dir, name);
}

static void write_step(spore_chain *ch, const char *path, const char *text) {
    char args[1024];
    snprintf(args, sizeof args, "{\"path\":\"%s\",\"text\":\"%s\"}", path, text);
    TH_OK(spore_chain_call_no_reply(ch, "fs.write", args, NULL, 0));
}

/* Steps run in order although blocking built-ins run on a thread pool:
 * write, rename, rename again, then read the final name. */
static void check_order(struct fixture *f, spore_context *c) {
    char a[512], b[512], d[512], args[2048];
    path_in(f, "a", a, sizeof a);
    path_in(f, "b", b, sizeof b);
    path_in(f, "d", d, sizeof d);
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, c));
    for (int round = 0; round < 20; round++) {
        char text[32];
        snprintf(text, sizeof text, "round-%d", round);
        write_step(ch, a, text);
        snprintf(args, sizeof args, "{\"src\":\"%s\",\"dst\":\"%s\"}", a, b);
        TH_OK(spore_chain_call_no_reply(ch, "fs.rename", args, NULL, 0));
        snprintf(args, sizeof args, "{\"src\":\"%s\",\"dst\":\"%s\"}", b, d);
        TH_OK(spore_chain_call_no_reply(ch, "fs.rename", args, NULL, 0));
        snprintf(args, sizeof args, "{\"path\":\"%s\"}", d);
        spore_result *res = NULL;
        TH_OK(spore_chain_call(&res, ch, "fs.read", args, NULL, 0, 10000));
        size_t len = 0;
        const char *bytes = spore_result_bytes(res, &len);
        assert_int_equal(len, strlen(text));
        assert_memory_equal(bytes, text, len);
        spore_result_free(res);
    }
    spore_chain_free(ch);
}

static void test_chain_steps_run_in_order(void **state) {
    struct fixture *f = *state;
    check_order(f, f->c);
    check_order(f, f->f);
}

/* After a failing step every later step fails with the same error (code,
 * message, type, function) and does not run. */
static void check_failure_propagation(struct fixture *f, spore_context *c) {
    char before[512], after1[512], after2[512], last[512], missing[512], args[1024];
    path_in(f, "before", before, sizeof before);
    path_in(f, "after1", after1, sizeof after1);
    path_in(f, "after2", after2, sizeof after2);
    path_in(f, "last", last, sizeof last);
    path_in(f, "missing", missing, sizeof missing);
    unlink(before);

    /* the error the failing step gives on its own */
    snprintf(args, sizeof args, "{\"path\":\"%s\"}", missing);
    spore_result *res = NULL;
    TH_ERR(spore_call(&res, c, "fs.stat", args, NULL, 0, 5000), SPORE_EREMOTE);
    char want_msg[1024], want_type[64];
    snprintf(want_msg, sizeof want_msg, "%s", spore_last_error()->message);
    snprintf(want_type, sizeof want_type, "%s", spore_last_error()->remote_type);

    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, c));
    write_step(ch, before, "ran");
    TH_OK(spore_chain_call_no_reply(ch, "fs.stat", args, NULL, 0)); /* fails */
    write_step(ch, after1, "must not run");
    /* a slow step that would create a file if it ran */
    char slow[1200];
    snprintf(slow, sizeof slow, "{\"shell\":\"sleep 0.05; echo x > '%s'\"}", after2);
    TH_OK(spore_chain_call_no_reply(ch, "proc.run", slow, NULL, 0));

    snprintf(args, sizeof args, "{\"path\":\"%s\",\"text\":\"final\"}", last);
    res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_chain_call(&res, ch, "fs.write", args, NULL, 0, 5000), SPORE_EREMOTE);
    assert_null(res);
    const spore_error *e = spore_last_error();
    assert_string_equal(e->message, want_msg);
    assert_string_equal(e->remote_type, want_type);
    assert_string_equal(e->function, "fs.stat");
    assert_string_equal(e->context, spore_context_name(c));

    /* and again for any later step, also a sys.* one */
    TH_ERR(spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, 5000), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->message, want_msg);
    assert_string_equal(spore_last_error()->function, "fs.stat");
    /* an unknown function does not change the chain's error either */
    TH_ERR(spore_chain_call(&res, ch, "no.such", NULL, NULL, 0, 5000), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->message, want_msg);

    /* the step before the failure ran; none after it did (give a step that
     * wrongly ran time to show) */
    th_sleep_ms(150);
    assert_true(th_file_exists(before));
    assert_false(th_file_exists(after1));
    assert_false(th_file_exists(after2));
    assert_false(th_file_exists(last));

    /* the context itself is fine, and a new chain starts clean */
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_chain *ch2 = NULL;
    TH_OK(spore_chain_new(&ch2, c));
    TH_OK(spore_chain_call(&res, ch2, "fs.write", args, NULL, 0, 5000));
    spore_result_free(res);
    assert_true(th_file_exists(last));
    unlink(last);
    spore_chain_free(ch2);
    /* the failed chain stays failed */
    TH_ERR(spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, 5000), SPORE_EREMOTE);
    spore_chain_free(ch);
    unlink(before);
}

static void test_chain_failure_propagates(void **state) {
    struct fixture *f = *state;
    check_failure_propagation(f, f->c);
    check_failure_propagation(f, f->f);
}

/* A step that fails with a reply (spore_chain_call) poisons the chain too,
 * and other error kinds are carried the same way. */
static void test_chain_failure_with_reply(void **state) {
    struct fixture *f = *state;
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, f->c));
    spore_result *res = NULL;
    TH_OK(spore_chain_call(&res, ch, "sys.echo", "{\"value\":1}", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "1");
    spore_result_free(res);
    TH_ERR(spore_chain_call(&res, ch, "no.such_fn", NULL, NULL, 0, 5000), SPORE_ENOFUNC);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
    TH_ERR(spore_chain_call(&res, ch, "sys.echo", "{\"value\":2}", NULL, 0, 5000), SPORE_ENOFUNC);
    assert_string_equal(spore_last_error()->message, msg);
    assert_string_equal(spore_last_error()->function, "no.such_fn");
    spore_chain_free(ch);

    TH_OK(spore_chain_new(&ch, f->c));
    TH_ERR(spore_chain_call(&res, ch, "fs.stat", "{}", NULL, 0, 5000), SPORE_EBADARGS);
    TH_ERR(spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, 5000), SPORE_EBADARGS);
    assert_string_equal(spore_last_error()->function, "fs.stat");
    spore_chain_free(ch);
}

/* Two chains on one context are independent; a chain does not make plain
 * calls wait or fail. */
static void test_chains_are_independent(void **state) {
    struct fixture *f = *state;
    spore_chain *bad = NULL, *good = NULL;
    TH_OK(spore_chain_new(&bad, f->c));
    TH_OK(spore_chain_new(&good, f->c));
    TH_OK(spore_chain_call_no_reply(bad, "fs.stat", "{\"path\":\"/nonexistent/capi-chain\"}", NULL, 0));
    /* a long step in the good chain does not block plain calls */
    TH_OK(spore_chain_call_no_reply(good, "proc.run", "{\"argv\":[\"sleep\",\"0.3\"]}", NULL, 0));
    double t0 = th_now();
    char *json = th_call(f->c, "sys.ping", NULL);
    assert_true(th_now() - t0 < 0.2 * th_time_factor());
    free(json);
    spore_result *res = NULL;
    TH_OK(spore_chain_call(&res, good, "sys.echo", "{\"value\":\"good\"}", NULL, 0, 5000));
    /* ... but the next step of its own chain waited for it */
    assert_true(th_now() - t0 >= 0.25);
    assert_string_equal(spore_result_json(res), "\"good\"");
    spore_result_free(res);
    TH_ERR(spore_chain_call(&res, bad, "sys.ping", NULL, NULL, 0, 5000), SPORE_EREMOTE);
    TH_CONTAINS(spore_last_error()->message, "/nonexistent/capi-chain");
    spore_chain_free(bad);
    spore_chain_free(good);
}

/* Many pipelined steps, and many chains created and freed. */
static void test_chain_pipelining_and_free(void **state) {
    struct fixture *f = *state;
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, f->c));
    double t0 = th_now();
    for (int i = 0; i < 2000; i++) TH_OK(spore_chain_call_no_reply(ch, "sys.echo", "{\"value\":0}", "d", 1));
    spore_result *res = NULL;
    TH_OK(spore_chain_call(&res, ch, "sys.echo", "{\"value\":\"end\"}", NULL, 0, 10000));
    assert_string_equal(spore_result_json(res), "\"end\"");
    spore_result_free(res);
    print_message("2000 pipelined chain steps + 1 round trip: %.3f s\n", th_now() - t0);
    spore_chain_free(ch);

    for (int i = 0; i < 200; i++) {
        TH_OK(spore_chain_new(&ch, f->c));
        if (i % 3 == 0) TH_OK(spore_chain_call_no_reply(ch, "fs.stat", "{}", NULL, 0));
        if (i % 3 == 1) TH_OK(spore_chain_call_no_reply(ch, "sys.ping", NULL, NULL, 0));
        spore_chain_free(ch);
    }
    /* the failed no-reply steps were logged as warnings */
    int warnings = 0;
    spore_log_record *rec = NULL;
    while (spore_router_next_log(f->r, &rec, 500) == SPORE_OK) {
        if (spore_log_record_level(rec) == SPORE_LOG_WARNING) warnings++;
        spore_log_record_free(rec);
        if (warnings == 67) break;
    }
    assert_int_equal(warnings, 67);
    char *json = th_call(f->c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
}

/* Chains outlive their context's shutdown and their router. */
static void test_chain_free_after_context_and_router(void **state) {
    struct fixture *f = *state;
    spore_chain *a = NULL, *b = NULL, *c = NULL;
    TH_OK(spore_chain_new(&a, f->c));
    TH_OK(spore_chain_new(&b, f->f));
    TH_OK(spore_chain_new(&c, f->c));
    TH_OK(spore_chain_call_no_reply(a, "sys.ping", NULL, NULL, 0));
    TH_OK(spore_context_shutdown(f->f, 5000));
    spore_result *res = NULL;
    TH_ERR(spore_chain_call(&res, b, "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    spore_chain_free(b);
    spore_context_free(f->c);
    f->c = NULL;
    /* the chain keeps the context usable */
    TH_OK(spore_chain_call(&res, a, "sys.echo", "{\"value\":3}", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "3");
    spore_result_free(res);
    spore_router_free(f->r);
    f->r = NULL;
    TH_ERR(spore_chain_call(&res, c, "sys.ping", NULL, NULL, 0, 1000), SPORE_ESHUTDOWN);
    spore_chain_free(a);
    spore_chain_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_steps_run_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_failure_propagates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_failure_with_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chains_are_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_pipelining_and_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_free_after_context_and_router, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
