/* Connection delegation through real hops: many connects through one ssh
 * context run in parallel, and killing the intermediate hop fails every
 * call behind it at once and takes the agents behind it down. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness_env.h"
#include "helpers.h"

#define N_SUDO 20

static spore_context *ssh_hop(spore_router *r, const char *user) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "hostname", th_hvar("SPORE_TEST_SSHD_HOST")));
    TH_OK(spore_options_set_int(o, "port", atoi(th_hvar("SPORE_TEST_SSHD_PORT"))));
    TH_OK(spore_options_set_str(o, "known_hosts_file", th_hvar("SPORE_TEST_KNOWN_HOSTS")));
    TH_OK(spore_options_set_str(o, "identity_file", th_hvar("SPORE_TEST_KEY")));
    TH_OK(spore_options_set_str(o, "username", user));
    TH_OK(spore_options_set_str(o, "ssh_args", "-F /dev/null"));
    TH_OK(spore_options_set_str(o, "backend", "openssh"));
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, "ssh", o, NULL));
    spore_options_free(o);
    return c;
}

struct job {
    spore_router *r;
    spore_context *via;
    spore_context *ctx;
    int rc;
    double took;
    pthread_barrier_t *go;
};

static void *open_sudo(void *arg) {
    struct job *j = arg;
    pthread_barrier_wait(j->go);
    double t0 = th_now();
    j->rc = spore_connect(&j->ctx, j->r, "sudo", NULL, j->via);
    j->took = th_now() - t0;
    return NULL;
}

static void test_parallel_connects_through_one_ssh_hop(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *s = ssh_hop(r, "spore-test-sudo-nopw");
    /* One sudo first, so the agent image is cached for the account. */
    spore_context *warm = NULL;
    TH_OK(spore_connect(&warm, r, "sudo", NULL, s));
    double one_t0 = th_now();
    spore_context *single = NULL;
    TH_OK(spore_connect(&single, r, "sudo", NULL, s));
    double one = th_now() - one_t0;

    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N_SUDO + 1);
    struct job jobs[N_SUDO];
    pthread_t th[N_SUDO];
    for (int i = 0; i < N_SUDO; i++) {
        jobs[i] = (struct job){r, s, NULL, 0, 0, &go};
        pthread_create(&th[i], NULL, open_sudo, &jobs[i]);
    }
    double t0 = th_now();
    pthread_barrier_wait(&go);
    for (int i = 0; i < N_SUDO; i++) pthread_join(th[i], NULL);
    double all = th_now() - t0;
    pthread_barrier_destroy(&go);
    print_message("one sudo through ssh: %.1f ms; %d at once: %.1f ms\n", one * 1000, N_SUDO, all * 1000);
    for (int i = 0; i < N_SUDO; i++) {
        if (jobs[i].rc != SPORE_OK) fail_msg("connect %d failed: %d", i, jobs[i].rc);
        char *json = th_call(jobs[i].ctx, "sys.info", NULL);
        TH_CONTAINS(json, "\"user\":\"root\"");
        free(json);
    }
    /* Serialized, N connects would take N times one; in parallel far less. */
    assert_true(all < one * N_SUDO / 2 + 0.5 * th_time_factor());
    for (int i = 0; i < N_SUDO; i++) spore_context_free(jobs[i].ctx);
    spore_context_free(single);
    spore_context_free(warm);
    spore_context_free(s);
    spore_router_free(r);
    th_end(&b);
}

struct waiter {
    spore_pending *pc;
    int rc;
    double at;
};

static void test_killing_an_intermediate_hop(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *s = ssh_hop(r, "spore-test-sudo-nopw");
    pid_t hop_pid = th_agent_pid(s);
    spore_context *behind[4];
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        behind[i] = NULL;
        TH_OK(spore_connect(&behind[i], r, i < 2 ? "sudo" : "fork", NULL, i < 2 ? s : behind[0]));
        pids[i] = th_agent_pid(behind[i]);
    }
    /* A call in flight to every context behind the hop. */
    spore_pending *pc[4];
    for (int i = 0; i < 4; i++)
        TH_OK(spore_call_async(&pc[i], behind[i], "proc.run", "{\"argv\": [\"sleep\", \"30\"]}", NULL, 0));
    th_sleep_ms(200);
    double t0 = th_now();
    assert_int_equal(kill(hop_pid, SIGKILL), 0);
    for (int i = 0; i < 4; i++) {
        spore_result *res = NULL;
        TH_ERR(spore_call_wait(pc[i], &res, 5000), SPORE_EDISCONNECTED);
        spore_call_free(pc[i]);
    }
    double took = th_now() - t0;
    print_message("every call behind the killed hop failed after %.1f ms\n", took * 1000);
    assert_true(took < 0.1 * th_time_factor());
    for (int i = 0; i < 4; i++) {
        spore_result *res = NULL;
        TH_ERR(spore_call(&res, behind[i], "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    }
    /* Their agents exit. */
    for (int i = 0; i < 4; i++)
        if (!th_wait_pid_gone(pids[i], 5.0)) fail_msg("agent %d behind the killed hop is still running", (int)pids[i]);
    for (int i = 0; i < 4; i++) spore_context_free(behind[i]);
    spore_context_free(s);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_connects_through_one_ssh_hop),
        cmocka_unit_test(test_killing_an_intermediate_hop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
