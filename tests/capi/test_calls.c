/* Blocking calls and no-reply calls that succeed: JSON and binary round
 * trips, the built-ins' results, argument handling, large outputs. (Calls
 * that fail are in test_errors.c.) */
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
};

static int setup(void **state) {
    struct fixture *f = calloc(1, sizeof *f);
    f->base = th_begin();
    TH_OK(spore_router_new(&f->r, NULL));
    TH_OK(spore_connect(&f->c, f->r, "local", NULL, NULL));
    *state = f;
    return 0;
}

/* Every test ends with the router freed and no process or fd left. */
static int teardown(void **state) {
    struct fixture *f = *state;
    spore_context_free(f->c);
    spore_router_free(f->r);
    th_end(&f->base);
    free(f);
    return 0;
}

static char *echo(spore_context *c, const char *value_json) {
    char args[4096];
    snprintf(args, sizeof args, "{\"value\":%s}", value_json);
    return th_call(c, "sys.echo", args);
}

static void test_ping_and_null_args(void **state) {
    struct fixture *f = *state;
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f->c, "sys.ping", NULL, NULL, 0, -1));
    assert_string_equal(spore_result_json(res), "true");
    size_t len = 77;
    assert_null(spore_result_bytes(res, &len));
    assert_int_equal(len, 0);
    spore_result_free(res);
    /* "" and "{}" mean no arguments too; whitespace is fine */
    TH_OK(spore_call(&res, f->c, "sys.ping", "", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "true");
    spore_result_free(res);
    TH_OK(spore_call(&res, f->c, "sys.echo", "  { }  ", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "null");
    spore_result_free(res);
}

static void test_echo_json_round_trip(void **state) {
    struct fixture *f = *state;
    const char *values[] = {
        "null",
        "true",
        "false",
        "0",
        "-17",
        "2.5",
        "12345678901",
        "\"\"",
        "\"plain\"",
        "\"quote\\\" backslash\\\\ newline\\n tab\\t\"",
        "\"\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\"", /* ü € 😀 as UTF-8 */
        "[]",
        "{}",
        "[1,[2,[3,[4,[5,[]]]]]]",
        "{\"a\":[1,2.5,\"x\\\"y\",true,false,null,{\"b\":{}}],\"c\":{\"d\":{\"e\":\"f\"}}}",
        "[{\"k\":[]},{\"k\":{}},\"\",0]",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char *got = echo(f->c, values[i]);
        assert_string_equal(got, values[i]);
        free(got);
    }
    /* a long string and a wide array */
    size_t n = 100000;
    char *big = malloc(n + 3);
    big[0] = '"';
    for (size_t i = 0; i < n; i++) big[i + 1] = (char)('a' + i % 26);
    big[n + 1] = '"';
    big[n + 2] = '\0';
    char *args = malloc(n + 32);
    snprintf(args, n + 32, "{\"value\":%s}", big);
    char *got = th_call(f->c, "sys.echo", args);
    assert_string_equal(got, big);
    free(got);
    free(args);
    free(big);

    char *arr = malloc(64 * 1024);
    size_t off = (size_t)sprintf(arr, "{\"value\":[");
    for (int i = 0; i < 5000; i++) off += (size_t)sprintf(arr + off, i ? ",%d" : "%d", i);
    sprintf(arr + off, "]}");
    got = th_call(f->c, "sys.echo", arr);
    assert_memory_equal(got, arr + 9, strlen(got));
    assert_int_equal(strlen(got), strlen(arr) - 10);
    free(got);
    free(arr);
}

static void check_binary_echo(spore_context *c, const unsigned char *data, size_t len) {
    spore_result *res = NULL;
    TH_OK(spore_call(&res, c, "sys.echo", "{\"value\":\"bin\"}", data, len, 30000));
    assert_string_equal(spore_result_json(res), "\"bin\"");
    size_t got_len = 12345;
    const void *got = spore_result_bytes(res, &got_len);
    assert_int_equal(got_len, len);
    if (len) {
        assert_non_null(got);
        assert_memory_equal(got, data, len);
        /* len may be NULL */
        assert_ptr_equal(spore_result_bytes(res, NULL), got);
    } else {
        assert_null(got);
    }
    spore_result_free(res);
}

static void test_echo_binary_round_trip(void **state) {
    struct fixture *f = *state;
    /* zero-length data (NULL or not) means no binary part */
    check_binary_echo(f->c, NULL, 0);
    unsigned char one = 0;
    check_binary_echo(f->c, &one, 0);
    /* a single zero byte, all-zero data, every byte value */
    check_binary_echo(f->c, &one, 1);
    static unsigned char zeros[4096];
    check_binary_echo(f->c, zeros, sizeof zeros);
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    check_binary_echo(f->c, all, sizeof all);
    /* 1 MiB of a pattern with zero bytes in it, and an odd size above it */
    size_t big = 1 << 20;
    unsigned char *data = malloc(big + 12345);
    for (size_t i = 0; i < big + 12345; i++) data[i] = (unsigned char)((i * 2654435761u) >> 13);
    for (size_t i = 0; i < big; i += 1000) data[i] = 0;
    check_binary_echo(f->c, data, big);
    check_binary_echo(f->c, data, big + 12345);
    free(data);
}

/* proc.run: results, stdin, env, cwd, binary stdout, exit codes. */
static void test_proc_run_results(void **state) {
    struct fixture *f = *state;
    char *json = th_call(f->c, "proc.run", "{\"argv\":[\"sh\",\"-c\",\"echo out; echo err >&2; exit 7\"]}");
    assert_int_equal(th_json_int(json, "rc", -1), 7);
    assert_true(th_json_is_null(json, "signal"));
    char *out = th_json_str(json, "stdout", NULL), *err = th_json_str(json, "stderr", NULL);
    assert_string_equal(out, "out\n");
    assert_string_equal(err, "err\n");
    assert_int_equal(th_json_bool(json, "timed_out"), 0);
    assert_int_equal(th_json_bool(json, "truncated"), 0);
    assert_true(th_json_int(json, "pid", 0) > 1);
    free(out);
    free(err);
    free(json);

    /* stdin from the binary part; env and cwd */
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f->c, "proc.run",
                     "{\"shell\":\"cat; printf %s \\\"$CAPI_VAR\\\"; pwd\",\"env\":{\"CAPI_VAR\":\"v=1\"},"
                     "\"cwd\":\"/\"}",
                     "from-stdin|", 11, 10000));
    out = th_json_str(spore_result_json(res), "stdout", NULL);
    assert_string_equal(out, "from-stdin|v=1/\n");
    free(out);
    spore_result_free(res);

    /* binary stdout */
    TH_OK(spore_call(&res, f->c, "proc.run",
                     "{\"shell\":\"printf 'a\\\\000b\\\\377'\",\"stdout_binary\":true}", NULL, 0, 10000));
    size_t len = 0;
    const unsigned char *bytes = spore_result_bytes(res, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(bytes, "a\0b\377", 4);
    out = th_json_str(spore_result_json(res), "stdout", NULL);
    assert_string_equal(out, "");
    free(out);
    spore_result_free(res);

    /* killed by a signal */
    json = th_call(f->c, "proc.run", "{\"shell\":\"kill -TERM $$\"}");
    assert_true(th_json_is_null(json, "rc"));
    assert_int_equal(th_json_int(json, "signal", -1), 15);
    free(json);

    /* its own timeout: the process group is killed, the call succeeds */
    double t0 = th_now();
    json = th_call(f->c, "proc.run", "{\"argv\":[\"sleep\",\"5\"],\"timeout_ms\":200}");
    assert_true(th_now() - t0 < 1.5 * th_time_factor());
    assert_int_equal(th_json_bool(json, "timed_out"), 1);
    assert_int_equal(th_json_int(json, "signal", -1), 9);
    free(json);
}

/* A child writing 8 MiB to stderr at full speed, captured, not streamed. */
static void test_proc_run_8mib_stderr(void **state) {
    struct fixture *f = *state;
    double t0 = th_now();
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f->c, "proc.run",
                     "{\"shell\":\"head -c 8388608 /dev/zero | tr '\\\\0' x >&2; echo done\","
                     "\"stream\":false,\"capture\":true}",
                     NULL, 0, 60000));
    double took = th_now() - t0;
    size_t len = 0;
    char *err = th_json_str(spore_result_json(res), "stderr", &len);
    assert_non_null(err);
    assert_int_equal(len, 8388608);
    for (size_t i = 0; i < len; i++)
        if (err[i] != 'x') fail_msg("byte %zu of stderr is 0x%02x", i, (unsigned char)err[i]);
    free(err);
    char *out = th_json_str(spore_result_json(res), "stdout", NULL);
    assert_string_equal(out, "done\n");
    free(out);
    assert_int_equal(th_json_bool(spore_result_json(res), "truncated"), 0);
    spore_result_free(res);
    /* nothing was streamed */
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);
    print_message("8 MiB stderr captured in %.3f s\n", took);
}

/* fs built-ins in one round: write, stat, read, list, rename, remove. */
static void test_fs_round_trip(void **state) {
    struct fixture *f = *state;
    char *dir = th_mkdtemp("fs");
    char args[2048], path[512], path2[512];
    snprintf(path, sizeof path, "%s/sub/a.bin", dir);
    snprintf(path2, sizeof path2, "%s/b.bin", dir);
    unsigned char data[3000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i % 251);

    spore_result *res = NULL;
    snprintf(args, sizeof args, "{\"path\":\"%s\",\"mkdirs\":true,\"mode\":384}", path);
    TH_OK(spore_call(&res, f->c, "fs.write", args, data, sizeof data, 10000));
    spore_result_free(res);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, sizeof data);
    assert_int_equal(st.st_mode & 0777, 0600);

    snprintf(args, sizeof args, "{\"path\":\"%s\"}", path);
    char *json = th_call(f->c, "fs.stat", args);
    char *type = th_json_str(json, "type", NULL);
    assert_string_equal(type, "file");
    free(type);
    assert_int_equal(th_json_int(json, "size", -1), sizeof data);
    assert_int_equal(th_json_int(json, "mode", -1), 0600);
    free(json);

    TH_OK(spore_call(&res, f->c, "fs.read", args, NULL, 0, 10000));
    size_t len = 0;
    const void *bytes = spore_result_bytes(res, &len);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(bytes, data, sizeof data);
    spore_result_free(res);

    snprintf(args, sizeof args, "{\"src\":\"%s\",\"dst\":\"%s\"}", path, path2);
    TH_OK(spore_call(&res, f->c, "fs.rename", args, NULL, 0, 10000));
    spore_result_free(res);
    assert_false(th_file_exists(path));
    assert_true(th_file_exists(path2));

    snprintf(args, sizeof args, "{\"path\":\"%s\"}", dir);
    json = th_call(f->c, "fs.list", args);
    TH_CONTAINS(json, "\"b.bin\"");
    TH_CONTAINS(json, "\"sub\"");
    free(json);

    snprintf(args, sizeof args, "{\"path\":\"%s\",\"recursive\":true}", dir);
    TH_OK(spore_call(&res, f->c, "fs.remove", args, NULL, 0, 10000));
    spore_result_free(res);
    assert_false(th_file_exists(dir));
    free(dir);
}

/* No-reply calls run (their effect is visible) and cost no round trip. */
static void test_no_reply_calls_take_effect(void **state) {
    struct fixture *f = *state;
    char *dir = th_mkdtemp("noreply");
    char args[1024], path[512];
    snprintf(path, sizeof path, "%s/written", dir);
    snprintf(args, sizeof args, "{\"path\":\"%s\",\"text\":\"hello no-reply\"}", path);
    TH_OK(spore_call_no_reply(f->c, "fs.write", args, NULL, 0));
    /* wait for the effect through the context (blocking built-ins run on a
     * pool, so poll with fs.stat) */
    double end = th_now() + 5.0;
    snprintf(args, sizeof args, "{\"path\":\"%s\"}", path);
    int rc;
    for (;;) {
        spore_result *res = NULL;
        rc = spore_call(&res, f->c, "fs.stat", args, NULL, 0, 5000);
        if (rc == SPORE_OK) {
            assert_int_equal(th_json_int(spore_result_json(res), "size", -1), 14);
            spore_result_free(res);
            break;
        }
        assert_int_equal(rc, SPORE_EREMOTE);
        assert_true(th_now() < end);
        th_sleep_ms(5);
    }

    /* many no-reply calls return at once; binary data works too */
    double t0 = th_now();
    for (int i = 0; i < 1000; i++) TH_OK(spore_call_no_reply(f->c, "sys.echo", "{\"value\":1}", "abc", 3));
    assert_true(th_now() - t0 < 1.0 * th_time_factor());
    /* a no-reply success logs nothing; the context still answers in order */
    char *json = th_call(f->c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_log_record *rec = NULL;
    TH_ERR(spore_router_next_log(f->r, &rec, 100), SPORE_ETIMEDOUT);

    th_rm_rf(dir);
    free(dir);
}

/* A call's result outlives the context and router handles. */
static void test_result_outlives_handles(void **state) {
    struct fixture *f = *state;
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f->c, "sys.echo", "{\"value\":[\"kept\"]}", "bytes", 5, 5000));
    spore_context_free(f->c);
    f->c = NULL;
    spore_router_free(f->r);
    f->r = NULL;
    assert_string_equal(spore_result_json(res), "[\"kept\"]");
    size_t len = 0;
    assert_memory_equal(spore_result_bytes(res, &len), "bytes", 5);
    assert_int_equal(len, 5);
    spore_result_free(res);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ping_and_null_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_json_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_binary_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_run_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_run_8mib_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fs_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_reply_calls_take_effect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_outlives_handles, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
