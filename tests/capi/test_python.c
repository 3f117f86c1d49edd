/* Python functions through the C API ("py:" calls): functions the target
 * has, modules served from a router's module_path (through hops, cached at
 * each), errors, bytes, python_path, a worker that crashes and a hostile
 * one. The Python binding's own tests cover calling Python callables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"
#include "contexts.h"
#include "harness_env.h"

static char data_dir[1024];
static char pymods[1100];

static spore_router *router_serving(const char *deny) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_add_str(o, "module_path", pymods));
    if (deny) TH_OK(spore_options_add_str(o, "module_deny", deny));
    spore_router *r = th_router(o);
    spore_options_free(o);
    return r;
}

static spore_context *local_with(spore_router *r, const char *python_path) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    if (python_path) TH_OK(spore_options_set_str(o, "python_path", python_path));
    spore_context *c = NULL;
    TH_OK(th_connect_opts(&c, r, "local", o, NULL));
    return c;
}

/* The call's error (code returned), with its message and type kept. */
static int py_fail(spore_context *c, const char *fn, const char *args) {
    spore_result *res = NULL;
    int rc = spore_call(&res, c, fn, args, NULL, 0, 30000);
    if (rc == SPORE_OK) {
        fail_msg("%s succeeded: %s", fn, spore_result_json(res));
    }
    return rc;
}

static void test_functions_the_target_has(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = local_with(r, NULL);
    /* Both name forms: module:qualname, and a dotted name. */
    char *got = th_call(c, "py:posixpath:join", "{\"args\": [\"a\", \"b\"]}");
    assert_string_equal(got, "\"a/b\"");
    free(got);
    got = th_call(c, "py:json.dumps", "{\"args\": [[1, 2.5, {\"$t\": [true, null]}]], \"kwargs\": {\"sort_keys\": true}}");
    assert_string_equal(got, "\"[1, 2.5, [true, null]]\"");
    free(got);
    /* Floats stay floats, integers beyond 2^53 stay exact. */
    got = th_call(c, "py:builtins:float", "{\"args\": [2]}");
    assert_string_equal(got, "2.0");
    free(got);
    got = th_call(c, "py:builtins:pow", "{\"args\": [2, 70]}");
    assert_string_equal(got, "1180591620717411303424");
    free(got);
    /* The standard library is the target's: nothing was shipped but the
     * worker's own code, once. */
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_BYTES_SENT), 0);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_SENT), 0);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_WORKERS), 1);
    th_done(r);
    th_end(&b);
}

static void test_modules_served_once_and_cached_at_the_hop(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    spore_context *c = local_with(r, NULL);
    char *got = th_call(c, "py:sporet_tool:add", "{\"args\": [2, 3]}");
    assert_string_equal(got, "5");
    free(got);
    /* One request: the module came with everything it imports. */
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_REQUESTS), 1);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_SENT), 5);
    uint64_t bytes = spore_router_module_stat(r, SPORE_MODULE_BYTES_SENT);
    assert_true(bytes > 100);
    got = th_call(c, "py:sporet_tool:describe", NULL);
    TH_CONTAINS(got, "\"helpers\":\"helpers\"");
    TH_CONTAINS(got, "helpers via sporet_pkg.sub");
    TH_CONTAINS(got, "sporet_tool.py");
    free(got);
    /* A second context behind the same agent: its worker's code and every
     * module come from that agent's cache, none from here. */
    spore_context *f = NULL;
    TH_OK(th_connect_opts(&f, r, "fork", NULL, c));
    got = th_call(f, "py:sporet_tool:describe", NULL);
    TH_CONTAINS(got, "helpers via sporet_pkg.sub");
    free(got);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_BYTES_SENT), bytes);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_REQUESTS), 1);
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_WORKERS), 1);
    th_done(r);
    th_end(&b);
}

static void test_three_hops_to_another_account(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    spore_context *c = local_with(r, NULL);
    spore_context *f = NULL, *s = NULL;
    TH_OK(th_connect_opts(&f, r, "fork", NULL, c));
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "username", "spore-test-target"));
    TH_OK(th_connect_opts(&s, r, "sudo", o, f));
    th_assert_user(s, "spore-test-target");
    char *got = th_call(s, "py:sporet_tool:describe", NULL);
    TH_CONTAINS(got, "helpers via sporet_pkg.sub");
    free(got);
    char *info = th_call(s, "sys.info", NULL);
    long long uid = th_json_int(info, "uid", -1);
    free(info);
    got = th_call(s, "py:os:getuid", NULL);
    assert_int_equal(atoll(got), uid);
    free(got);
    th_done(r);
    th_end(&b);
}

static void test_errors(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    spore_context *c = local_with(r, NULL);
    /* A function in a module neither side has: no such function, naming it. */
    assert_int_equal(py_fail(c, "py:sporet_nothere:f", NULL), SPORE_ENOFUNC);
    TH_CONTAINS(spore_last_error()->message, "sporet_nothere");
    TH_CONTAINS(spore_last_error()->context, "local.");
    assert_string_equal(spore_last_error()->function, "py:sporet_nothere:f");
    /* A remote exception: its class, message and traceback. */
    assert_int_equal(py_fail(c, "py:sporet_tool:add", "{\"args\": [1, \"x\"]}"), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->remote_type, "TypeError");
    TH_CONTAINS(spore_last_error()->traceback, "sporet_tool.py");
    TH_CONTAINS(spore_last_error()->traceback, "return a + b");
    /* No such function; malformed arguments. */
    assert_int_equal(py_fail(c, "py:posixpath:no_such_function", NULL), SPORE_ENOFUNC);
    TH_CONTAINS(spore_last_error()->message, "no_such_function");
    assert_int_equal(py_fail(c, "py:posixpath:join", "{\"arguments\": []}"), SPORE_EBADARGS);
    assert_int_equal(py_fail(c, "py:posixpath:join", "{\"args\": {\"a\": 1}}"), SPORE_EBADARGS);
    assert_int_equal(py_fail(c, "py:", NULL), SPORE_ENOFUNC);
    th_done(r);
    /* A denied package: refused, and counted. */
    r = router_serving("sporet_pkg.sub");
    c = local_with(r, NULL);
    assert_int_equal(py_fail(c, "py:sporet_tool:describe", NULL), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->remote_type, "ModuleNotFoundError");
    TH_CONTAINS(spore_last_error()->message, "refused");
    assert_true(spore_router_module_stat(r, SPORE_MODULE_REFUSED) >= 1);
    th_done(r);
    th_end(&b);
}

static void test_bytes_both_ways(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    spore_context *c = local_with(r, NULL);
    size_t n = 16u << 20;
    spore_result *res = NULL;
    TH_OK(spore_call(&res, c, "py:sporet_tool:blob", "{\"args\": [16777216]}", NULL, 0, 60000));
    assert_string_equal(spore_result_json(res), "{\"$b\":[0,16777216]}");
    size_t len = 0;
    const unsigned char *p = spore_result_bytes(res, &len);
    assert_int_equal(len, n);
    assert_int_equal(p[0], 0x00);
    assert_int_equal(p[1], 0xff);
    assert_int_equal(p[n - 1], 0xff);
    spore_result_free(res);
    /* Bytes in: the binary part, named by offset and length. */
    unsigned char *in = malloc(n);
    for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 7);
    TH_OK(spore_call(&res, c, "py:builtins:len", "{\"args\": [{\"$b\": [16, 16777200]}]}", in, n, 60000));
    assert_string_equal(spore_result_json(res), "16777200");
    spore_result_free(res);
    /* A slice outside the binary part is refused. */
    assert_int_equal(py_fail(c, "py:builtins:len", "{\"args\": [{\"$b\": [0, 99]}]}"), SPORE_EBADARGS);
    free(in);
    th_done(r);
    th_end(&b);
}

static void test_python_path(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = local_with(r, "/usr/bin/env python3");
    char *got = th_call(c, "py:sys:getrecursionlimit", NULL);
    assert_true(atoi(got) > 0);
    free(got);
    c = local_with(r, "/nonexistent/python3 -X utf8");
    assert_int_equal(py_fail(c, "py:os:getpid", NULL), SPORE_ENOPYTHON);
    TH_CONTAINS(spore_last_error()->message, "/nonexistent/python3");
    TH_CONTAINS(spore_last_error()->message, "No such file");
    /* An interpreter that is not Python at all. */
    c = local_with(r, "/bin/false");
    assert_int_equal(py_fail(c, "py:os:getpid", NULL), SPORE_ENOPYTHON);
    TH_CONTAINS(spore_last_error()->message, "/bin/false");
    /* No expansion, ever: the syntax is refused at connect. */
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "python_path", "python3 $(id)"));
    spore_context *bad = NULL;
    TH_ERR(th_connect_opts(&bad, r, "local", o, NULL), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "python_path");
    th_done(r);
    th_end(&b);
}

static void test_worker_crash_and_restart(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = local_with(r, NULL);
    char *pid1 = th_call(c, "py:os:getpid", NULL);
    assert_int_equal(py_fail(c, "py:os:_exit", "{\"args\": [3]}"), SPORE_EWORKER);
    TH_CONTAINS(spore_last_error()->message, "exited with status 3");
    char *pid2 = th_call(c, "py:os:getpid", NULL);
    assert_string_not_equal(pid1, pid2);
    assert_int_equal(py_fail(c, "py:ctypes:string_at", "{\"args\": [0]}"), SPORE_EWORKER);
    TH_CONTAINS(spore_last_error()->message, "signal 11");
    char *pid3 = th_call(c, "py:os:getpid", NULL);
    assert_string_not_equal(pid2, pid3);
    /* The worker of each call is gone: only the new one is left. */
    assert_int_equal(kill(atoi(pid1), 0), -1);
    assert_int_equal(kill(atoi(pid2), 0), -1);
    free(pid1);
    free(pid2);
    free(pid3);
    th_done(r);
    th_end(&b);
}

static void test_hostile_worker(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    const char *modes[][2] = {
        {"shadow", "not a module name"},     {"dotdot", "not a module name"},
        {"garbage", "broke the protocol"},   {"stray-reply", "does not have"},
        {"bad-json", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char pp[2048];
        snprintf(pp, sizeof pp, "/usr/bin/python3 '%s/hostile_python.py' %s", data_dir, modes[i][0]);
        spore_context *c = local_with(r, pp);
        assert_int_equal(py_fail(c, "py:os:getpid", NULL), SPORE_EWORKER);
        TH_CONTAINS(spore_last_error()->message, modes[i][1]);
        /* The context itself is fine. */
        char *got = th_call(c, "sys.ping", NULL);
        free(got);
    }
    /* Nothing the hostile workers asked for reached this router. */
    assert_int_equal(spore_router_module_stat(r, SPORE_MODULE_REQUESTS), 0);
    th_done(r);
    th_end(&b);
}

static void test_output_and_logs_in_order(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = router_serving(NULL);
    spore_context *c = local_with(r, NULL);
    char *got = th_call(c, "py:sporet_tool:chatty", "{\"args\": [5]}");
    assert_string_equal(got, "5");
    free(got);
    int seen = 0;
    spore_log_record *rec = NULL;
    while (seen < 10 && spore_router_next_log(r, &rec, 5000) == SPORE_OK) {
        const char *logger = spore_log_record_logger(rec);
        char want[64];
        if (strcmp(logger, "stdout") == 0) {
            snprintf(want, sizeof want, "line %d", seen / 2);
            assert_int_equal(seen % 2, 0);
            assert_string_equal(spore_log_record_message(rec), want);
            assert_int_equal(spore_log_record_level(rec), SPORE_LOG_INFO);
            seen++;
        } else if (strcmp(logger, "sporet") == 0) {
            snprintf(want, sizeof want, "record %d", seen / 2);
            assert_int_equal(seen % 2, 1);
            assert_string_equal(spore_log_record_message(rec), want);
            assert_int_equal(spore_log_record_level(rec), SPORE_LOG_WARNING);
            TH_CONTAINS(spore_log_record_context(rec), "local.");
            seen++;
        }
        spore_log_record_free(rec);
    }
    assert_int_equal(seen, 10);
    th_done(r);
    th_end(&b);
}

int main(void) {
    const char *src = getenv("SPORE_SOURCE_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/capi/data", src ? src : ".");
    snprintf(pymods, sizeof pymods, "%s/pymods", data_dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_functions_the_target_has),
        cmocka_unit_test(test_modules_served_once_and_cached_at_the_hop),
        cmocka_unit_test(test_three_hops_to_another_account),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bytes_both_ways),
        cmocka_unit_test(test_python_path),
        cmocka_unit_test(test_worker_crash_and_restart),
        cmocka_unit_test(test_hostile_worker),
        cmocka_unit_test(test_output_and_logs_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
