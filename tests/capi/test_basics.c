/* Library-level functions of the C API: versions, error strings, the
 * thread-local last error, options objects, router options, and the
 * NULL-argument checks of every entry point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "helpers.h"

/* ------------------------------------------------------------- versions */

static void test_version_functions_match_macros(void **state) {
    (void)state;
    th_baseline b = th_begin();
    int major = -1, minor = -1, patch = -1;
    spore_version(&major, &minor, &patch);
    assert_int_equal(major, SPORE_VERSION_MAJOR);
    assert_int_equal(minor, SPORE_VERSION_MINOR);
    assert_int_equal(patch, SPORE_VERSION_PATCH);
    /* Any pointer may be NULL. */
    spore_version(NULL, NULL, NULL);
    int only_minor = -1;
    spore_version(NULL, &only_minor, NULL);
    assert_int_equal(only_minor, SPORE_VERSION_MINOR);

    const char *s = spore_version_string();
    assert_non_null(s);
    assert_string_equal(s, SPORE_VERSION_STRING);
    char built[64];
    snprintf(built, sizeof built, "%d.%d.%d", major, minor, patch);
    assert_string_equal(s, built);
    /* A static string: the same pointer every time. */
    assert_ptr_equal(s, spore_version_string());

    assert_int_equal(SPORE_VERSION_NUMBER,
                     SPORE_VERSION_MAJOR * 10000 + SPORE_VERSION_MINOR * 100 + SPORE_VERSION_PATCH);
    assert_true(SPORE_VERSION_CHECK(SPORE_VERSION_MAJOR, SPORE_VERSION_MINOR, SPORE_VERSION_PATCH));
    assert_true(SPORE_VERSION_CHECK(0, 0, 0));
    assert_false(SPORE_VERSION_CHECK(SPORE_VERSION_MAJOR + 1, 0, 0));
    assert_false(SPORE_VERSION_CHECK(SPORE_VERSION_MAJOR, SPORE_VERSION_MINOR, SPORE_VERSION_PATCH + 1));
    th_end(&b);
}

/* --------------------------------------------------------------- errors */

static void test_strerror_every_code(void **state) {
    (void)state;
    th_baseline b = th_begin();
    int count = 0;
    int seen[64] = {0};
#define CHECK_CODE(name, num, text)                                            \
    do {                                                                       \
        assert_int_equal(SPORE_##name, num);                                   \
        assert_true((num) < 0 && (num) >= SPORE__ERROR_LAST);                  \
        assert_int_equal(seen[-(num)], 0); /* numbers are unique */            \
        seen[-(num)] = 1;                                                      \
        assert_non_null(spore_strerror(num));                                  \
        assert_string_equal(spore_strerror(num), text);                        \
        assert_ptr_equal(spore_strerror(num), spore_strerror(num));            \
        count++;                                                               \
    } while (0);
    SPORE_ERROR_MAP(CHECK_CODE)
#undef CHECK_CODE
    assert_int_equal(count, -SPORE__ERROR_LAST);
    /* every number from -1 to the last one is used */
    for (int i = 1; i <= -SPORE__ERROR_LAST; i++) assert_int_equal(seen[i], 1);

    assert_string_equal(spore_strerror(SPORE_OK), "success");
    assert_string_equal(spore_strerror(SPORE__ERROR_LAST - 1), "unknown error");
    assert_string_equal(spore_strerror(-1000), "unknown error");
    assert_string_equal(spore_strerror(1), "unknown error");
    assert_string_equal(spore_strerror(INT32_MIN), "unknown error");
    assert_string_equal(spore_strerror(INT32_MAX), "unknown error");
    th_end(&b);
}

static void test_last_error_never_null_and_sticky(void **state) {
    (void)state;
    th_baseline b = th_begin();
    const spore_error *e = spore_last_error();
    assert_non_null(e);
    assert_non_null(e->message);
    assert_non_null(e->remote_type);
    assert_non_null(e->context);
    assert_non_null(e->function);

    TH_ERR(spore_options_new(NULL), SPORE_EINVAL);
    e = spore_last_error();
    assert_int_equal(e->code, SPORE_EINVAL);
    TH_CONTAINS(e->message, "spore_options_new");
    assert_string_equal(e->remote_type, "");
    assert_string_equal(e->context, "");
    assert_string_equal(e->function, "");

    /* A successful call leaves the last error as it was. */
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    assert_int_equal(spore_last_error()->code, SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "spore_options_new");

    /* The next failure replaces it. */
    TH_ERR(spore_options_set_int(o, "", 1), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "key");
    spore_options_free(o);
    th_end(&b);
}

struct tl_arg {
    pthread_barrier_t *barrier;
    int initial_code;
    int rc;
    int code_after;
    char message_after[256];
};

static void *tl_thread(void *p) {
    struct tl_arg *a = p;
    a->initial_code = spore_last_error()->code; /* fresh thread: nothing failed yet */
    pthread_barrier_wait(a->barrier);           /* main thread has failed by now */
    a->rc = spore_router_next_log(NULL, NULL, 0);
    pthread_barrier_wait(a->barrier); /* both have failed */
    pthread_barrier_wait(a->barrier); /* main thread has failed again */
    a->code_after = spore_last_error()->code;
    snprintf(a->message_after, sizeof a->message_after, "%s", spore_last_error()->message);
    return NULL;
}

static void test_last_error_is_thread_local(void **state) {
    (void)state;
    th_baseline b = th_begin();
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    struct tl_arg a;
    memset(&a, 0, sizeof a);
    a.barrier = &barrier;
    a.initial_code = 12345;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, tl_thread, &a), 0);

    TH_ERR(spore_options_new(NULL), SPORE_EINVAL);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    /* The other thread failed in between; ours is unchanged. */
    TH_CONTAINS(spore_last_error()->message, "spore_options_new");
    /* Fail differently here; the other thread must not see it. */
    TH_ERR(spore_call(NULL, NULL, NULL, NULL, NULL, 0, 0), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "spore_call");
    pthread_barrier_wait(&barrier);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&barrier);

    assert_int_equal(a.initial_code, SPORE_OK);
    assert_int_equal(a.rc, SPORE_EINVAL);
    assert_int_equal(a.code_after, SPORE_EINVAL);
    TH_CONTAINS(a.message_after, "spore_router_next_log");
    assert_null(strstr(a.message_after, "spore_call"));
    th_end(&b);
}

static void test_free_functions_accept_null(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_free(NULL);
    spore_options_free(NULL);
    spore_router_free(NULL);
    spore_context_free(NULL);
    spore_call_free(NULL);
    spore_chain_free(NULL);
    spore_result_free(NULL);
    spore_log_record_free(NULL);
    /* spore_free frees malloc'd memory. */
    spore_free(malloc(16));
    th_end(&b);
}

/* -------------------------------------------------------------- options */

static void test_options_set_and_null_arguments(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_options *o = (spore_options *)(uintptr_t)1;
    TH_ERR(spore_options_new(NULL), SPORE_EINVAL);
    TH_OK(spore_options_new(&o));
    assert_non_null(o);

    TH_OK(spore_options_set_str(o, "name", "x"));
    TH_OK(spore_options_set_int(o, "connect_timeout", 1000));
    TH_OK(spore_options_set_bool(o, "agent_cache", 1));
    TH_OK(spore_options_set_int(o, "whatever", INT64_MIN));
    TH_OK(spore_options_set_str(o, "empty", ""));

    TH_ERR(spore_options_set_str(NULL, "k", "v"), SPORE_EINVAL);
    TH_ERR(spore_options_set_str(o, NULL, "v"), SPORE_EINVAL);
    TH_ERR(spore_options_set_str(o, "", "v"), SPORE_EINVAL);
    TH_ERR(spore_options_set_str(o, "k", NULL), SPORE_EINVAL);
    TH_ERR(spore_options_set_int(NULL, "k", 1), SPORE_EINVAL);
    TH_ERR(spore_options_set_int(o, NULL, 1), SPORE_EINVAL);
    TH_ERR(spore_options_set_int(o, "", 1), SPORE_EINVAL);
    TH_ERR(spore_options_set_bool(NULL, "k", 1), SPORE_EINVAL);
    TH_ERR(spore_options_set_bool(o, NULL, 1), SPORE_EINVAL);
    TH_ERR(spore_options_set_bool(o, "", 0), SPORE_EINVAL);
    TH_OK(spore_options_add_str(o, "command_prefix", "nice"));
    TH_ERR(spore_options_add_str(NULL, "k", "v"), SPORE_EINVAL);
    TH_ERR(spore_options_add_str(o, NULL, "v"), SPORE_EINVAL);
    TH_ERR(spore_options_add_str(o, "", "v"), SPORE_EINVAL);
    TH_ERR(spore_options_add_str(o, "k", NULL), SPORE_EINVAL);
    spore_options_free(o);
    th_end(&b);
}

/* A list option built word by word reaches the launcher as exactly those
 * words (no splitting, no expansion); a string is split shell-like. */
static void test_options_list(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "command_prefix", "replaced by the list"));
    TH_OK(spore_options_add_str(o, "command_prefix", "/usr/bin/env"));
    TH_OK(spore_options_add_str(o, "command_prefix", "SPORE_LIST_WORD=two words $HOME"));
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, "local", o, NULL));
    char *json = th_call(c, "sys.getenv", "{\"name\": \"SPORE_LIST_WORD\"}");
    assert_string_equal(json, "\"two words $HOME\"");
    free(json);
    spore_context_free(c);
    /* The same as one string, quoted. */
    TH_OK(spore_options_set_str(o, "command_prefix", "/usr/bin/env 'SPORE_LIST_WORD=two words $HOME'"));
    TH_OK(spore_connect(&c, r, "local", o, NULL));
    json = th_call(c, "sys.getenv", "{\"name\": \"SPORE_LIST_WORD\"}");
    assert_string_equal(json, "\"two words $HOME\"");
    free(json);
    spore_context_free(c);
    /* Unquoted expansion characters are refused before anything runs. */
    TH_OK(spore_options_set_str(o, "command_prefix", "/usr/bin/env X=$HOME"));
    TH_ERR(spore_connect(&c, r, "local", o, NULL), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "command_prefix");
    spore_options_free(o);
    spore_router_free(r);
    th_end(&b);
}

/* A later set of the same key replaces the earlier one, whatever its type:
 * proven through what the router and spore_connect accept. */
static void test_options_replace_key(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_options *ro;
    TH_OK(spore_options_new(&ro));
    TH_OK(spore_options_set_str(ro, "log_queue_size", "not a number"));
    spore_router *r = NULL;
    TH_ERR(spore_router_new(&r, ro), SPORE_EINVAL);
    assert_null(r);
    TH_OK(spore_options_set_int(ro, "log_queue_size", 10));
    r = th_router(ro);
    spore_options_free(ro);

    spore_options *co;
    TH_OK(spore_options_new(&co));
    TH_OK(spore_options_set_str(co, "connect_timeout", "soon"));
    spore_context *c = NULL;
    TH_ERR(spore_connect(&c, r, "local", co, NULL), SPORE_EINVAL);
    assert_null(c);
    TH_OK(spore_options_set_int(co, "connect_timeout", 20000));
    TH_OK(spore_options_set_str(co, "name", "first"));
    TH_OK(spore_options_set_str(co, "name", "second"));
    TH_OK(spore_options_set_bool(co, "agent_compress", 1));
    TH_OK(spore_options_set_bool(co, "agent_compress", 0));
    TH_OK(spore_connect(&c, r, "local", co, NULL));
    /* the options may be freed at once: the context kept its copy */
    spore_options_free(co);
    assert_string_equal(spore_context_name(c), "second");
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------- router options */

static void expect_router_einval(spore_options *o, const char *needle) {
    spore_router *r = (spore_router *)(uintptr_t)1;
    TH_ERR(spore_router_new(&r, o), SPORE_EINVAL);
    assert_null(r);
    TH_CONTAINS(spore_last_error()->message, needle);
}

static void test_router_options_validation(void **state) {
    (void)state;
    th_baseline b = th_begin();
    TH_ERR(spore_router_new(NULL, NULL), SPORE_EINVAL);

    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "no_such_option", 1));
    expect_router_einval(o, "no_such_option");
    spore_options_free(o);

    struct {
        const char *key;
        int kind; /* 0 str, 1 int, 2 bool */
        const char *s;
        int64_t i;
    } bad[] = {
        {"agent_path", 1, NULL, 3},
        {"agent_path", 2, NULL, 1},
        {"max_message_size", 0, "65536", 0},
        {"max_message_size", 1, NULL, 100},         /* below the minimum of 4096 */
        {"max_message_size", 1, NULL, 1ll << 33},   /* above 4 GiB */
        {"max_message_size", 2, NULL, 1},
        {"log_level", 0, "WARNING", 0},
        {"log_level", 2, NULL, 1},
        {"log_queue_size", 0, "10", 0},
        {"log_queue_size", 1, NULL, 0},
        {"log_queue_size", 1, NULL, -5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TH_OK(spore_options_new(&o));
        if (bad[i].kind == 0) TH_OK(spore_options_set_str(o, bad[i].key, bad[i].s));
        else if (bad[i].kind == 1) TH_OK(spore_options_set_int(o, bad[i].key, bad[i].i));
        else TH_OK(spore_options_set_bool(o, bad[i].key, (int)bad[i].i));
        expect_router_einval(o, bad[i].key);
        spore_options_free(o);
    }

    /* All valid keys together. */
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", getenv("SPORE_AGENT_PATH")));
    TH_OK(spore_options_set_int(o, "max_message_size", 65536));
    TH_OK(spore_options_set_int(o, "log_level", SPORE_LOG_DEBUG));
    TH_OK(spore_options_set_int(o, "log_queue_size", 5));
    spore_router *r = th_router(o);
    spore_options_free(o);
    spore_router_free(r);

    /* NULL options: defaults. */
    r = th_router(NULL);
    spore_router_free(r);
    th_end(&b);
}

static void test_router_agent_path_option(void **state) {
    (void)state;
    th_baseline b = th_begin();
    /* agent_path is taken from the option rather than $SPORE_AGENT_PATH. */
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", "/nonexistent/capi-agent-x"));
    spore_router *r = th_router(o);
    spore_options_free(o);
    spore_context *c = (spore_context *)(uintptr_t)1;
    double t0 = th_now();
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    assert_true(th_now() - t0 < 2.0 * th_time_factor());
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, "/nonexistent/capi-agent-x");
    /* a second try fails the same way (nothing half-initialised remains) */
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "/nonexistent/capi-agent-x");
    spore_router_free(r);

    /* A directory is not an image either. */
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", "/tmp"));
    r = th_router(o);
    spore_options_free(o);
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "/tmp");
    spore_router_free(r);

    /* The real agent given explicitly works. */
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", getenv("SPORE_AGENT_PATH")));
    r = th_router(o);
    spore_options_free(o);
    c = th_connect(r, "local", NULL);
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    spore_router_free(r);
    th_end(&b);
}

/* ---------------------------------------------------- NULL-argument checks */

static void test_entry_points_reject_null(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = th_connect(r, "local", NULL);
    spore_result *res = (spore_result *)(uintptr_t)1;
    spore_pending *p = (spore_pending *)(uintptr_t)1;
    spore_chain *ch = NULL;
    spore_log_record *rec = (spore_log_record *)(uintptr_t)1;
    char buf[4] = "abc";

    TH_ERR(spore_router_set_log_level(NULL, SPORE_LOG_INFO), SPORE_EINVAL);
    TH_ERR(spore_router_next_log(NULL, &rec, 0), SPORE_EINVAL);
    TH_ERR(spore_router_next_log(r, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_router_log_fd(NULL), SPORE_EINVAL);
    assert_int_equal(spore_router_dropped_logs(NULL), 0);

    spore_context *c2 = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(NULL, r, "local", NULL, NULL), SPORE_EINVAL);
    TH_ERR(spore_connect(&c2, NULL, "local", NULL, NULL), SPORE_EINVAL);
    TH_ERR(spore_connect(&c2, r, NULL, NULL, NULL), SPORE_EINVAL);
    assert_int_equal(spore_context_id(NULL), 0);
    assert_string_equal(spore_context_name(NULL), "");
    assert_int_equal(spore_context_alive(NULL), 0);
    TH_ERR(spore_context_shutdown(NULL, 0), SPORE_EINVAL);

    TH_ERR(spore_call(NULL, c, "sys.ping", NULL, NULL, 0, -1), SPORE_EINVAL);
    TH_ERR(spore_call(&res, NULL, "sys.ping", NULL, NULL, 0, -1), SPORE_EINVAL);
    assert_null(res);
    res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call(&res, c, NULL, NULL, NULL, 0, -1), SPORE_EINVAL);
    assert_null(res);
    TH_ERR(spore_call(&res, c, "sys.echo", NULL, NULL, 5, -1), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "len");
    TH_ERR(spore_call_async(NULL, c, "sys.ping", NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_call_async(&p, NULL, "sys.ping", NULL, NULL, 0), SPORE_EINVAL);
    assert_null(p);
    TH_ERR(spore_call_async(&p, c, NULL, NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_call_async(&p, c, "sys.echo", NULL, NULL, 1), SPORE_EINVAL);
    TH_ERR(spore_call_no_reply(NULL, "sys.ping", NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_call_no_reply(c, NULL, NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_call_no_reply(c, "sys.echo", NULL, NULL, 1), SPORE_EINVAL);
    TH_ERR(spore_call_wait(NULL, &res, 0), SPORE_EINVAL);
    assert_int_equal(spore_call_done(NULL), 0);
    TH_ERR(spore_call_fd(NULL), SPORE_EINVAL);
    const spore_error *ce = spore_call_error(NULL);
    assert_non_null(ce);
    assert_int_equal(ce->code, SPORE_EINVAL);

    TH_ERR(spore_chain_new(NULL, c), SPORE_EINVAL);
    TH_ERR(spore_chain_new(&ch, NULL), SPORE_EINVAL);
    TH_OK(spore_chain_new(&ch, c));
    TH_ERR(spore_chain_call_no_reply(NULL, "sys.ping", NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_chain_call_no_reply(ch, NULL, NULL, NULL, 0), SPORE_EINVAL);
    TH_ERR(spore_chain_call_no_reply(ch, "sys.echo", NULL, NULL, 2), SPORE_EINVAL);
    TH_ERR(spore_chain_call(NULL, ch, "sys.ping", NULL, NULL, 0, -1), SPORE_EINVAL);
    TH_ERR(spore_chain_call(&res, NULL, "sys.ping", NULL, NULL, 0, -1), SPORE_EINVAL);
    TH_ERR(spore_chain_call(&res, ch, NULL, NULL, NULL, 0, -1), SPORE_EINVAL);
    TH_ERR(spore_chain_call(&res, ch, "sys.echo", NULL, NULL, 3, -1), SPORE_EINVAL);
    /* none of the rejected steps poisoned the chain */
    TH_OK(spore_chain_call(&res, ch, "sys.echo", "{\"value\":7}", buf, 3, 10000));
    assert_string_equal(spore_result_json(res), "7");
    spore_result_free(res);
    spore_chain_free(ch);

    assert_string_equal(spore_result_json(NULL), "null");
    size_t len = 99;
    assert_null(spore_result_bytes(NULL, &len));
    assert_int_equal(len, 0);
    assert_null(spore_result_bytes(NULL, NULL));

    assert_string_equal(spore_log_record_context(NULL), "");
    assert_int_equal(spore_log_record_context_id(NULL), 0);
    assert_string_equal(spore_log_record_logger(NULL), "");
    assert_string_equal(spore_log_record_message(NULL), "");
    assert_int_equal(spore_log_record_level(NULL), 0);
    assert_true(spore_log_record_time(NULL) == 0.0);

    /* After all these failures the context is still fine. */
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    spore_router_free(r);
    th_end(&b);
}

/* A router with no context frees cleanly and quickly, many times. */
static void test_router_create_free_cycles(void **state) {
    (void)state;
    th_baseline b = th_begin();
    double t0 = th_now();
    for (int i = 0; i < 200; i++) {
        spore_router *r = th_router(NULL);
        assert_true(spore_router_log_fd(r) >= 0);
        spore_router_free(r);
    }
    assert_true(th_now() - t0 < 5.0 * th_time_factor());
    th_end(&b);
}

/* The option tables the library validates with, readable by any program:
 * every kind lists its keys, a key the router refuses is not in them, and
 * every key listed is accepted with a value of its own type. */
static void test_option_tables(void **state) {
    (void)state;
    const spore_option_info *t = (const spore_option_info *)(uintptr_t)1;
    assert_int_equal(spore_option_table("no-such-kind", &t), 0);
    assert_null(t);
    assert_int_equal(spore_option_table(NULL, &t), 0);
    assert_int_equal(spore_option_table("router", NULL), 0);
    const char *kinds[] = {"router", "attach", "connect", "transfer", "process"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n = spore_option_table(kinds[k], &t);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++) {
            assert_non_null(t[i].key);
            assert_non_null(t[i].type_name);
            assert_non_null(t[i].fallback);
            assert_non_null(t[i].doc);
            assert_true(t[i].min <= t[i].max);
        }
    }
    size_t n = spore_option_table("router", &t);
    int seen_liveness = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].key, "liveness_interval") == 0) {
            seen_liveness = 1;
            assert_string_equal(t[i].type_name, "integer");
            assert_string_equal(t[i].fallback, "10000");
        }
        /* Each router option takes a value of its type (strings: agent_path). */
        spore_options *o = NULL;
        TH_OK(spore_options_new(&o));
        if (strcmp(t[i].type_name, "integer") == 0) TH_OK(spore_options_set_int(o, t[i].key, t[i].min ? t[i].min : 1));
        else TH_OK(spore_options_set_str(o, t[i].key, getenv("SPORE_AGENT_PATH")));
        spore_router *r = th_router(o);
        spore_router_free(r);
        spore_options_free(o);
    }
    assert_true(seen_liveness);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_functions_match_macros),
        cmocka_unit_test(test_strerror_every_code),
        cmocka_unit_test(test_last_error_never_null_and_sticky),
        cmocka_unit_test(test_last_error_is_thread_local),
        cmocka_unit_test(test_free_functions_accept_null),
        cmocka_unit_test(test_options_set_and_null_arguments),
        cmocka_unit_test(test_options_list),
        cmocka_unit_test(test_options_replace_key),
        cmocka_unit_test(test_router_options_validation),
        cmocka_unit_test(test_router_agent_path_option),
        cmocka_unit_test(test_entry_points_reject_null),
        cmocka_unit_test(test_router_create_free_cycles),
        cmocka_unit_test(test_option_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
