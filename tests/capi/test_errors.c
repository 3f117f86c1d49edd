/* Calls that fail, one test per error code the C API can be made to return
 * from outside:
 *   EINVAL (bad arguments/JSON/function names), ENOFUNC, EBADARGS, EREMOTE,
 *   ETIMEDOUT, ETOOBIG (request and reply), ESHUTDOWN (router freed, and a
 *   context that is shutting down), EDISCONNECTED (see test_connect.c and
 *   test_lifecycle.c), ECONNECT (test_connect.c).
 * Not reachable through the public API alone, covered by unit tests:
 *   EREFUSED and ENOROUTE (need a misbehaving agent or a forged message),
 *   EPROTO (the API validates everything it sends), ENOMEM, EINTERNAL,
 *   EUNKNOWN (an unknown code name in a reply), ENOTFOUND and EBUSY (not
 *   produced by the library at all). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"

struct fixture {
    th_baseline base;
    spore_router *r;
    spore_context *c; /* local */
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

static int setup_small(void **state) {
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "max_message_size", 65536));
    int rc = setup_opts(state, o);
    spore_options_free(o);
    return rc;
}

static int teardown(void **state) {
    struct fixture *f = *state;
    spore_context_free(f->f);
    spore_context_free(f->c);
    spore_router_free(f->r);
    th_end(&f->base);
    free(f);
    return 0;
}

static void assert_alive(spore_context *c) {
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
}

/* ----------------------------------------------------------------- EINVAL */

static void test_einval_arguments_and_names(void **state) {
    struct fixture *f = *state;
    /* The last four: a NUL inside a string (escaped, which cJSON would cut
     * short), invalid UTF-8, an overlong form and a lone surrogate escape:
     * refused, not truncated or echoed. */
    const char *bad_args[] = {"[1,2]", "3", "\"text\"", "null", "true", "{", "{\"a\":}", "nope",
                              "{\"a\":1} trailing", "{\"a\":1,}", "{\"value\":\"a\\u0000b\"}",
                              "{\"value\":\"\xff\xfe\"}", "{\"value\":\"\xc0\x80\"}", "{\"value\":\"\\ud800\"}"};
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, f->c));
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        spore_result *res = (spore_result *)(uintptr_t)1;
        TH_ERR(spore_call(&res, f->c, "sys.echo", bad_args[i], NULL, 0, 5000), SPORE_EINVAL);
        assert_null(res);
        TH_CONTAINS(spore_last_error()->message, "sys.echo");
        spore_pending *p = (spore_pending *)(uintptr_t)1;
        TH_ERR(spore_call_async(&p, f->c, "sys.echo", bad_args[i], NULL, 0), SPORE_EINVAL);
        assert_null(p);
        TH_ERR(spore_call_no_reply(f->c, "sys.echo", bad_args[i], NULL, 0), SPORE_EINVAL);
        TH_ERR(spore_chain_call_no_reply(ch, "sys.echo", bad_args[i], NULL, 0), SPORE_EINVAL);
        TH_ERR(spore_chain_call(&res, ch, "sys.echo", bad_args[i], NULL, 0, 5000), SPORE_EINVAL);
    }
    /* the chain was not poisoned by calls that were never sent */
    spore_result *res = NULL;
    TH_OK(spore_chain_call(&res, ch, "sys.echo", "{\"value\":\"ok\"}", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "\"ok\"");
    spore_result_free(res);
    spore_chain_free(ch);

    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad_names[] = {"", "has space", "semi;colon", "quote\"", "slash/x", "new\nline", longname};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        TH_ERR(spore_call(&res, f->c, bad_names[i], NULL, NULL, 0, 5000), SPORE_EINVAL);
        TH_CONTAINS(spore_last_error()->message, "function name");
        spore_pending *p = NULL;
        TH_ERR(spore_call_async(&p, f->c, bad_names[i], NULL, NULL, 0), SPORE_EINVAL);
        TH_ERR(spore_call_no_reply(f->c, bad_names[i], NULL, NULL, 0), SPORE_EINVAL);
    }
    assert_alive(f->c);

    /* Negative timeouts other than -1 are mistakes, not "forever". */
    const int bad_timeouts[] = {-2, -1000, INT_MIN};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof bad_timeouts[0]; i++) {
        int t = bad_timeouts[i];
        TH_ERR(spore_call(&res, f->c, "sys.ping", NULL, NULL, 0, t), SPORE_EINVAL);
        TH_CONTAINS(spore_last_error()->message, "timeout_ms must be -1");
        spore_pending *p = NULL;
        TH_OK(spore_call_async(&p, f->c, "sys.ping", NULL, NULL, 0));
        TH_ERR(spore_call_wait(p, NULL, t), SPORE_EINVAL);
        TH_OK(spore_call_wait(p, NULL, -1));
        spore_call_free(p);
        TH_OK(spore_chain_new(&ch, f->c));
        TH_ERR(spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, t), SPORE_EINVAL);
        spore_chain_free(ch);
        spore_log_record *none = NULL;
        TH_ERR(spore_router_next_log(f->r, &none, t), SPORE_EINVAL);
        TH_ERR(spore_context_shutdown(f->f, t), SPORE_EINVAL);
    }
    assert_alive(f->f);

    /* Control characters in context names (they label logs, errors, ps). */
    const char *bad_ctx_names[] = {"tab\there", "new\nline", "esc\x1b[31m", "del\x7f", "", "\xff\xfe"};
    for (size_t i = 0; i < sizeof bad_ctx_names / sizeof bad_ctx_names[0]; i++) {
        for (int k = 0; k < 2; k++) {
            spore_options *o = NULL;
            TH_OK(spore_options_new(&o));
            TH_OK(spore_options_set_str(o, k ? "remote_name" : "name", bad_ctx_names[i]));
            spore_context *c = NULL;
            TH_ERR(spore_connect(&c, f->r, "local", o, NULL), SPORE_EINVAL);
            TH_CONTAINS(spore_last_error()->message, k ? "'remote_name'" : "'name'");
            assert_null(c);
            spore_options_free(o);
        }
    }
    /* nothing was logged by the context: none of those calls reached it */
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 50), SPORE_ETIMEDOUT);
}

/* ---------------------------------------------------------------- ENOFUNC */

static void check_enofunc(spore_context *c) {
    spore_result *res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call(&res, c, "no.such_function", "{\"x\":1}", NULL, 0, 5000), SPORE_ENOFUNC);
    assert_null(res);
    const spore_error *e = spore_last_error();
    assert_string_equal(e->function, "no.such_function");
    assert_string_equal(e->context, spore_context_name(c));
    TH_CONTAINS(e->message, "no.such_function");
    TH_CONTAINS(e->message, spore_context_name(c));
    assert_string_equal(e->remote_type, "");
    /* names are case-sensitive */
    TH_ERR(spore_call(&res, c, "SYS.PING", NULL, NULL, 0, 5000), SPORE_ENOFUNC);
    assert_string_equal(spore_last_error()->function, "SYS.PING");
    /* and the internal ones are not callable as functions */
    TH_ERR(spore_call(&res, c, "spore.forget_chain", NULL, NULL, 0, 5000), SPORE_ENOFUNC);
    assert_alive(c);
}

static void test_enofunc(void **state) {
    struct fixture *f = *state;
    check_enofunc(f->c);
    check_enofunc(f->f);
}

/* --------------------------------------------------------------- EBADARGS */

static void check_ebadargs(spore_context *c, const char *fn, const char *args, const char *needle) {
    spore_result *res = NULL;
    TH_ERR(spore_call(&res, c, fn, args, NULL, 0, 5000), SPORE_EBADARGS);
    const spore_error *e = spore_last_error();
    assert_string_equal(e->function, fn);
    assert_string_equal(e->context, spore_context_name(c));
    TH_CONTAINS(e->message, needle);
    TH_CONTAINS(e->message, fn);
}

static void test_ebadargs(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        check_ebadargs(both[i], "fs.stat", "{}", "path");
        check_ebadargs(both[i], "fs.stat", "{\"path\":5}", "path");
        check_ebadargs(both[i], "fs.stat", "{\"path\":\"\"}", "path");
        check_ebadargs(both[i], "fs.stat", "{\"path\":\"/\",\"follow\":\"yes\"}", "follow");
        check_ebadargs(both[i], "proc.run", "{\"argv\":[]}", "argv");
        check_ebadargs(both[i], "proc.run", "{\"argv\":[\"true\"],\"shell\":\"true\"}", "shell");
        check_ebadargs(both[i], "proc.run", "{\"argv\":[\"true\"],\"timeout_ms\":-1}", "timeout_ms");
        check_ebadargs(both[i], "proc.run", "{\"argv\":[\"true\"],\"env\":{\"A=B\":\"c\"}}", "env");
        check_ebadargs(both[i], "fs.read", "{\"path\":\"/etc/hostname\",\"offset\":1.5}", "offset");
        check_ebadargs(both[i], "sys.getenv", "{\"name\":7}", "name");
        assert_alive(both[i]);
    }
}

/* ---------------------------------------------------------------- EREMOTE */

static void check_eremote(spore_context *c, const char *fn, const char *path, const char *type) {
    char args[512];
    snprintf(args, sizeof args, "{\"path\":\"%s\"}", path);
    spore_result *res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call(&res, c, fn, args, NULL, 0, 5000), SPORE_EREMOTE);
    assert_null(res);
    const spore_error *e = spore_last_error();
    assert_string_equal(e->remote_type, type);
    assert_string_equal(e->function, fn);
    assert_string_equal(e->context, spore_context_name(c));
    TH_CONTAINS(e->message, path);
    TH_CONTAINS(e->message, fn);
}

static void test_eremote_fields(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        check_eremote(both[i], "fs.stat", "/nonexistent/capi/missing-file", "FileNotFoundError");
        check_eremote(both[i], "fs.read", "/nonexistent/capi/missing-file", "FileNotFoundError");
        check_eremote(both[i], "fs.stat", "/etc/passwd/below-a-file", "NotADirectoryError");
        check_eremote(both[i], "fs.read", "/", "IsADirectoryError");
        spore_result *res = NULL;
        TH_ERR(spore_call(&res, both[i], "proc.run", "{\"argv\":[\"/nonexistent/capi-prog\"]}", NULL, 0, 5000),
               SPORE_EREMOTE);
        assert_string_equal(spore_last_error()->remote_type, "FileNotFoundError");
        TH_CONTAINS(spore_last_error()->message, "/nonexistent/capi-prog");
        assert_alive(both[i]);
    }
}

/* The spore.h contract: an error's message names the context. */
static void test_error_messages_name_the_context(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        spore_result *res = NULL;
        TH_ERR(spore_call(&res, both[i], "fs.stat", "{\"path\":\"/nonexistent/capi/x\"}", NULL, 0, 5000),
               SPORE_EREMOTE);
        TH_CONTAINS(spore_last_error()->message, spore_context_name(both[i]));
        TH_ERR(spore_call(&res, both[i], "fs.stat", "{}", NULL, 0, 5000), SPORE_EBADARGS);
        TH_CONTAINS(spore_last_error()->message, spore_context_name(both[i]));
    }
}

/* -------------------------------------------------------------- ETIMEDOUT */

static void test_etimedout_call(void **state) {
    struct fixture *f = *state;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        spore_result *res = (spore_result *)(uintptr_t)1;
        double t0 = th_now();
        TH_ERR(spore_call(&res, both[i], "proc.run", "{\"argv\":[\"sleep\",\"5\"]}", NULL, 0, 200), SPORE_ETIMEDOUT);
        double took = th_now() - t0;
        assert_null(res);
        assert_true(took >= 0.19);
        assert_true(took < 1.0 * th_time_factor());
        const spore_error *e = spore_last_error();
        assert_string_equal(e->function, "proc.run");
        assert_string_equal(e->context, spore_context_name(both[i]));
        TH_CONTAINS(e->message, "200");
        /* timeout 0 does not wait at all */
        t0 = th_now();
        TH_ERR(spore_call(&res, both[i], "proc.run", "{\"argv\":[\"sleep\",\"5\"]}", NULL, 0, 0), SPORE_ETIMEDOUT);
        assert_true(th_now() - t0 < 0.1 * th_time_factor());
        /* the late reply of the abandoned call is not mistaken for a later one */
        for (int k = 0; k < 5; k++) {
            TH_OK(spore_call(&res, both[i], "sys.echo", "{\"value\":\"fresh\"}", NULL, 0, 5000));
            assert_string_equal(spore_result_json(res), "\"fresh\"");
            spore_result_free(res);
        }
    }
}

/* A short call that ends in time is not affected by the timeout. */
static void test_timeout_not_hit(void **state) {
    struct fixture *f = *state;
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f->c, "proc.run", "{\"argv\":[\"sleep\",\"0.1\"]}", NULL, 0, 3000));
    assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
    spore_result_free(res);
}

/* ---------------------------------------------------------------- ETOOBIG */

static void test_etoobig_request(void **state) {
    struct fixture *f = *state;
    size_t big = 100 * 1024;
    char *data = calloc(1, big);
    spore_result *res = (spore_result *)(uintptr_t)1;
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        TH_ERR(spore_call(&res, both[i], "sys.echo", NULL, data, big, 5000), SPORE_ETOOBIG);
        assert_null(res);
        assert_string_equal(spore_last_error()->function, "sys.echo");
        assert_string_equal(spore_last_error()->context, spore_context_name(both[i]));
        TH_CONTAINS(spore_last_error()->message, "65536");
        spore_pending *p = (spore_pending *)(uintptr_t)1;
        TH_ERR(spore_call_async(&p, both[i], "sys.echo", NULL, data, big), SPORE_ETOOBIG);
        assert_null(p);
        TH_ERR(spore_call_no_reply(both[i], "sys.echo", NULL, data, big), SPORE_ETOOBIG);
        spore_chain *ch = NULL;
        TH_OK(spore_chain_new(&ch, both[i]));
        TH_ERR(spore_chain_call_no_reply(ch, "sys.echo", NULL, data, big), SPORE_ETOOBIG);
        TH_ERR(spore_chain_call(&res, ch, "sys.echo", NULL, data, big, 5000), SPORE_ETOOBIG);
        spore_chain_free(ch);
        /* large JSON arguments count too */
        char *args = malloc(big + 32);
        memset(args, 'a', big + 32);
        memcpy(args, "{\"value\":\"", 10);
        memcpy(args + big + 32 - 3, "\"}", 3);
        TH_ERR(spore_call(&res, both[i], "sys.echo", args, NULL, 0, 5000), SPORE_ETOOBIG);
        free(args);
        /* just below the limit goes through */
        TH_OK(spore_call(&res, both[i], "sys.echo", NULL, data, 60000, 5000));
        size_t len = 0;
        spore_result_bytes(res, &len);
        assert_int_equal(len, 60000);
        spore_result_free(res);
        assert_alive(both[i]);
    }
    free(data);
}

static void test_etoobig_reply(void **state) {
    struct fixture *f = *state;
    char *dir = th_mkdtemp("toobig");
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/big", dir);
    size_t big = 200 * 1024;
    char *data = malloc(big);
    memset(data, 'z', big);
    assert_int_equal(th_write_file(path, data, big, 0644), 0);
    free(data);
    snprintf(args, sizeof args, "{\"path\":\"%s\"}", path);
    spore_context *both[2] = {f->c, f->f};
    for (int i = 0; i < 2; i++) {
        spore_result *res = (spore_result *)(uintptr_t)1;
        TH_ERR(spore_call(&res, both[i], "fs.read", args, NULL, 0, 5000), SPORE_ETOOBIG);
        assert_null(res);
        assert_string_equal(spore_last_error()->context, spore_context_name(both[i]));
        assert_string_equal(spore_last_error()->function, "fs.read");
        TH_CONTAINS(spore_last_error()->message, "65536");
        /* a large proc.run output too */
        TH_ERR(spore_call(&res, both[i], "proc.run", "{\"shell\":\"head -c 204800 /dev/zero\"}", NULL, 0, 5000),
               SPORE_ETOOBIG);
        /* the context is fine, and a part of the file can be read */
        snprintf(args, sizeof args, "{\"path\":\"%s\",\"length\":50000}", path);
        TH_OK(spore_call(&res, both[i], "fs.read", args, NULL, 0, 5000));
        size_t len = 0;
        spore_result_bytes(res, &len);
        assert_int_equal(len, 50000);
        spore_result_free(res);
        snprintf(args, sizeof args, "{\"path\":\"%s\"}", path);
    }
    th_rm_rf(dir);
    free(dir);
}

/* -------------------------------------------------------------- ESHUTDOWN */

static void test_eshutdown_after_router_free(void **state) {
    struct fixture *f = *state;
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, f->c, "proc.run", "{\"argv\":[\"sleep\",\"10\"]}", NULL, 0));
    spore_pending *pf = NULL;
    TH_OK(spore_call_async(&pf, f->f, "proc.run", "{\"argv\":[\"sleep\",\"10\"]}", NULL, 0));
    int fd = spore_call_fd(p);
    assert_true(fd >= 0);
    double t0 = th_now();
    spore_router_free(f->r);
    f->r = NULL;
    assert_true(th_now() - t0 < 4.0 * th_time_factor());
    /* the pending calls were failed with ESHUTDOWN and can still be used
     * (codes collected first so that a failure still frees everything) */
    int done = spore_call_done(p), readable = th_readable(fd, 0);
    spore_result *res = (spore_result *)(uintptr_t)1;
    int rc = spore_call_wait(p, &res, 0);
    char msg[512], fn[64];
    snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
    snprintf(fn, sizeof fn, "%s", spore_last_error()->function);
    int err_code = spore_call_error(p)->code;
    int rc_f = spore_call_wait(pf, NULL, -1);
    spore_call_free(p);
    spore_call_free(pf);
    assert_int_equal(done, 1);
    assert_true(readable);
    assert_null(res);
    assert_string_equal(fn, "proc.run");
    /* the contexts are down and refuse new calls */
    assert_int_equal(spore_context_alive(f->c), 0);
    assert_int_equal(spore_context_alive(f->f), 0);
    TH_ERR(spore_call(&res, f->c, "sys.ping", NULL, NULL, 0, 1000), SPORE_ESHUTDOWN);
    TH_ERR(spore_call_no_reply(f->f, "sys.ping", NULL, NULL, 0), SPORE_ESHUTDOWN);
    TH_OK(spore_context_shutdown(f->c, 0));
    /* spore.h: spore_router_free "fails every pending call with SPORE_ESHUTDOWN" */
    if (rc != SPORE_ESHUTDOWN || rc_f != SPORE_ESHUTDOWN || err_code != SPORE_ESHUTDOWN)
        fail_msg("pending calls at router free: %d / %d / %d, expected SPORE_ESHUTDOWN (%d): %s", rc, rc_f,
                 err_code, SPORE_ESHUTDOWN, msg);
}

/* A context that is shutting down (waiting for its own children) refuses
 * calls with ESHUTDOWN. Its fork child is stopped (SIGSTOP) so that the
 * shutdown lasts until we let it go on. */
static void test_eshutdown_from_context_shutting_down(void **state) {
    struct fixture *f = *state;
    pid_t fpid = th_agent_pid(f->f);
    assert_int_equal(kill(fpid, SIGSTOP), 0);
    int rc_shutdown = spore_context_shutdown(f->c, 0);
    int code_shutdown = spore_last_error()->code;
    char ctx_shutdown[128];
    snprintf(ctx_shutdown, sizeof ctx_shutdown, "%s", spore_last_error()->context);
    spore_result *res = NULL;
    int rc = spore_call(&res, f->c, "sys.ping", NULL, NULL, 0, 5000);
    char msg[512], ctx[128];
    snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
    snprintf(ctx, sizeof ctx, "%s", spore_last_error()->context);
    int alive_meanwhile = spore_context_alive(f->c);
    kill(fpid, SIGCONT);
    TH_OK(spore_context_shutdown(f->c, 5000));
    assert_int_equal(spore_context_alive(f->c), 0);

    assert_int_equal(rc_shutdown, SPORE_ETIMEDOUT);
    assert_int_equal(code_shutdown, SPORE_ETIMEDOUT);
    assert_string_equal(ctx_shutdown, spore_context_name(f->c));
    assert_int_equal(alive_meanwhile, 1);
    if (rc != SPORE_ESHUTDOWN)
        fail_msg("call during shutdown returned %d (%s): %s", rc, spore_strerror(rc), msg);
    assert_string_equal(ctx, spore_context_name(f->c));
    TH_CONTAINS(msg, "shutting down");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_einval_arguments_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enofunc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ebadargs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eremote_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_messages_name_the_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_etimedout_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_not_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_etoobig_request, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_etoobig_reply, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_eshutdown_after_router_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eshutdown_from_context_shutting_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
