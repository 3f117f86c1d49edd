/* Routers created and freed while other threads have calls in flight, 200
 * times. Run under ThreadSanitizer by scripts/test; also a plain test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"

#define ROUNDS 200
#define CALLERS 3

struct caller {
    spore_context *ctx;
    int ok, failed, bad;
};

static void *call_loop(void *arg) {
    struct caller *c = arg;
    for (;;) {
        spore_result *res = NULL;
        int rc = spore_call(&res, c->ctx, "sys.echo", "{\"value\":[1,2,3]}", "xyz", 3, 5000);
        if (rc == SPORE_OK) {
            c->ok++;
            spore_result_free(res);
            continue;
        }
        /* Once the router is freed every call must fail cleanly and fast. */
        if (rc == SPORE_ESHUTDOWN || rc == SPORE_EDISCONNECTED) c->failed++;
        else c->bad++;
        if (c->failed + c->bad > 3) break;
    }
    return NULL;
}

static void test_churn(void **state) {
    (void)state;
    int fds0 = th_count_fds();
    int total_ok = 0;
    for (int round = 0; round < ROUNDS; round++) {
        spore_router *r = NULL;
        assert_int_equal(spore_router_new(&r, NULL), SPORE_OK);
        spore_context *ctx = NULL;
        assert_int_equal(spore_connect(&ctx, r, "local", NULL, NULL), SPORE_OK);
        struct caller callers[CALLERS];
        pthread_t threads[CALLERS];
        for (int i = 0; i < CALLERS; i++) {
            callers[i] = (struct caller){ctx, 0, 0, 0};
            assert_int_equal(pthread_create(&threads[i], NULL, call_loop, &callers[i]), 0);
        }
        usleep(2000 + (round % 5) * 1000);
        spore_router_free(r); /* calls are in flight right now */
        for (int i = 0; i < CALLERS; i++) {
            pthread_join(threads[i], NULL);
            assert_int_equal(callers[i].bad, 0);
            total_ok += callers[i].ok;
        }
        assert_int_equal(spore_context_alive(ctx), 0);
        spore_context_free(ctx);
    }
    assert_true(total_ok > 0);
    assert_int_equal(th_wait_no_descendants(5.0), 0);
    assert_int_equal(th_count_fds(), fds0);
}

struct connector {
    spore_router *r;
    int rc;
    double took;
};

static void *connect_silent(void *arg) {
    struct connector *c = arg;
    spore_options *o = NULL;
    spore_options_new(&o);
    spore_options_set_int(o, "connect_timeout", 20000);
    spore_context *ctx = NULL;
    double t0 = th_now();
    c->rc = spore_connect(&ctx, c->r, "local", o, NULL);
    c->took = th_now() - t0;
    spore_options_free(o);
    spore_context_free(ctx);
    return NULL;
}

/* Freeing the router while a connect waits for an agent that never answers:
 * the connect fails with SPORE_ESHUTDOWN at once and the child is gone. */
static void test_free_during_connect(void **state) {
    (void)state;
    char dir[] = "/tmp/spore-churn-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/silent-agent", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nexec sleep 30\n", f);
    fclose(f);
    spore_options *ro = NULL;
    spore_options_new(&ro);
    spore_options_set_str(ro, "agent_path", path);
    struct connector c = {NULL, 0, 0};
    assert_int_equal(spore_router_new(&c.r, ro), SPORE_OK);
    spore_options_free(ro);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, connect_silent, &c), 0);
    usleep(300000);
    double t0 = th_now();
    spore_router_free(c.r);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, SPORE_ESHUTDOWN);
    assert_true(th_now() - t0 < 2.0);
    assert_true(c.took < 3.0);
    assert_int_equal(th_wait_no_descendants(3.0), 0);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_churn), cmocka_unit_test(test_free_during_connect)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
