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

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_churn)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
