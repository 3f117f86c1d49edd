/* Lifecycles: the program dying under its agents, agents dying under their
 * callers (kill -9), handles freed in odd orders, and 1,000 connect and
 * disconnect cycles that must leave nothing behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>

#include "helpers.h"

/* Must run first: it forks, and forking is only safe while this process
 * has no router (no I/O thread) yet. */
static void test_parent_death_takes_agents_down(void **state) {
    (void)state;
    th_baseline b = th_begin();
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* the "program": a router, a local context and a fork behind it */
        close(pfd[0]);
        spore_router *r = NULL;
        spore_context *l = NULL, *f = NULL;
        spore_result *res = NULL;
        long long lpid = -1, fpid = -1;
        if (spore_router_new(&r, NULL) == SPORE_OK && spore_connect(&l, r, "local", NULL, NULL) == SPORE_OK &&
            spore_connect(&f, r, "fork", NULL, l) == SPORE_OK) {
            if (spore_call(&res, l, "sys.info", NULL, NULL, 0, 10000) == SPORE_OK)
                lpid = th_json_int(spore_result_json(res), "pid", -1);
            spore_result_free(res);
            if (spore_call(&res, f, "sys.info", NULL, NULL, 0, 10000) == SPORE_OK)
                fpid = th_json_int(spore_result_json(res), "pid", -1);
            spore_result_free(res);
        }
        char line[64];
        int n = snprintf(line, sizeof line, "%lld %lld\n", lpid, fpid);
        if (write(pfd[1], line, (size_t)n) != n) _exit(2);
        for (;;) pause();
    }
    close(pfd[1]);
    char line[64] = {0};
    assert_true(th_readable(pfd[0], 20000));
    ssize_t n = read(pfd[0], line, sizeof line - 1);
    close(pfd[0]);
    assert_true(n > 0);
    long long lpid = -1, fpid = -1;
    assert_int_equal(sscanf(line, "%lld %lld", &lpid, &fpid), 2);
    if (lpid <= 1 || fpid <= 1) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        fail_msg("the child could not open its contexts (%s)", line);
    }
    assert_true(th_pid_exists((pid_t)lpid));
    assert_true(th_pid_exists((pid_t)fpid));
    /* the agents are the child's descendants, not ours directly */
    assert_true(th_is_descendant((pid_t)lpid, child));
    assert_true(th_is_descendant((pid_t)fpid, child));

    assert_int_equal(kill(child, SIGKILL), 0);
    double t0 = th_now();
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFSIGNALED(st));
    int l_gone = th_wait_exited((pid_t)lpid, 2.0 * th_time_factor());
    int f_gone = th_wait_exited((pid_t)fpid, 2.0 * th_time_factor());
    double took = th_now() - t0;
    /* do not leave them running if the test failed */
    if (!l_gone) kill((pid_t)lpid, SIGKILL);
    if (!f_gone) kill((pid_t)fpid, SIGKILL);
    print_message("agents gone %.3f s after their program was killed\n", took);
    assert_true(l_gone);
    assert_true(f_gone);
    th_end(&b);
}

/* kill -9 of an agent in the middle of a call. */
static void test_kill_agent_mid_call(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    pid_t lpid = th_agent_pid(l), fpid = th_agent_pid(f);
    char *dir = th_mkdtemp("kill9");
    char args[1024], pidfile[512];
    snprintf(pidfile, sizeof pidfile, "%s/sleep.pid", dir);
    snprintf(args, sizeof args, "{\"shell\":\"echo $$ > '%s'; exec sleep 10\"}", pidfile);
    spore_pending *p = NULL, *pf = NULL;
    TH_OK(spore_call_async(&p, l, "proc.run", args, NULL, 0));
    TH_OK(spore_call_async(&pf, f, "proc.run", "{\"argv\":[\"sleep\",\"10\"]}", NULL, 0));
    /* wait for the sleep to be running */
    double end = th_now() + 5.0;
    while (!th_file_exists(pidfile) && th_now() < end) th_sleep_ms(5);
    th_sleep_ms(50);
    assert_int_equal(spore_call_done(p), 0);

    assert_int_equal(kill(lpid, SIGKILL), 0);
    double t0 = th_now();
    int rc = spore_call_wait(p, NULL, 5000);
    double took = th_now() - t0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
    print_message("caller saw the kill after %.1f ms: %s\n", took * 1000, msg);
    assert_int_equal(rc, SPORE_EDISCONNECTED);
    assert_true(took < 0.1 * th_time_factor());
    assert_int_equal(spore_call_error(p)->code, SPORE_EDISCONNECTED);
    assert_string_equal(spore_call_error(p)->context, spore_context_name(l));
    assert_string_equal(spore_call_error(p)->function, "proc.run");
    assert_int_equal(spore_context_alive(l), 0);

    /* the fork behind it: its call fails, it is not alive, its agent exits */
    TH_ERR(spore_call_wait(pf, NULL, 2000), SPORE_EDISCONNECTED);
    end = th_now() + 2.0;
    while (spore_context_alive(f) && th_now() < end) th_sleep_ms(2);
    assert_int_equal(spore_context_alive(f), 0);
    assert_true(th_wait_exited(fpid, 2.0 * th_time_factor()));

    /* new calls and connects through it fail at once */
    spore_result *res = NULL;
    TH_ERR(spore_call(&res, l, "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    TH_ERR(spore_call(&res, f, "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    spore_context *c = NULL;
    TH_ERR(spore_connect(&c, r, "fork", NULL, l), SPORE_EDISCONNECTED);
    TH_OK(spore_context_shutdown(l, 1000));

    /* the program's other contexts are unaffected */
    spore_context *other = th_connect(r, "local", NULL);
    char *json = th_call(other, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);

    /* The command the killed agent ran: the agent could not clean up after
     * itself, so its parent killed what was left in the agent's session. */
    FILE *pf_file = fopen(pidfile, "r");
    int sleep_pid = 0;
    if (pf_file) {
        if (fscanf(pf_file, "%d", &sleep_pid) != 1) sleep_pid = 0;
        fclose(pf_file);
    }
    assert_true(sleep_pid > 1);
    if (!th_wait_exited(sleep_pid, 2.0)) {
        kill(-sleep_pid, SIGKILL);
        kill(sleep_pid, SIGKILL);
        fail_msg("proc.run child %d of the killed agent outlived it", sleep_pid);
    }

    spore_call_free(p);
    spore_call_free(pf);
    spore_context_free(other);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_rm_rf(dir);
    free(dir);
    th_end(&b);
}

/* An idle agent that dies is noticed without any call. */
static void test_idle_agent_death_noticed(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    pid_t lpid = th_agent_pid(l), fpid = th_agent_pid(f);

    /* the fork in the middle dies: only it goes */
    assert_int_equal(kill(fpid, SIGKILL), 0);
    double t0 = th_now();
    while (spore_context_alive(f) && th_now() - t0 < 2.0) usleep(500);
    print_message("fork death noticed after %.1f ms\n", (th_now() - t0) * 1000);
    assert_int_equal(spore_context_alive(f), 0);
    assert_true(th_now() - t0 < 0.1 * th_time_factor());
    assert_int_equal(spore_context_alive(l), 1);
    char *json = th_call(l, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    /* its parent reaps it */
    assert_true(th_wait_pid_gone(fpid, 2.0 * th_time_factor()));

    /* the local one dies: noticed, and reaped by the router */
    assert_int_equal(kill(lpid, SIGKILL), 0);
    t0 = th_now();
    while (spore_context_alive(l) && th_now() - t0 < 2.0) usleep(500);
    assert_int_equal(spore_context_alive(l), 0);
    assert_true(th_now() - t0 < 0.1 * th_time_factor());
    assert_true(th_wait_pid_gone(lpid, 2.0 * th_time_factor()));
    assert_int_equal(th_count_descendants(), 0);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* A context's shutdown takes the processes its calls started with it. */
static void test_shutdown_kills_running_commands(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    spore_pending *p[4];
    TH_OK(spore_call_async(&p[0], l, "proc.run", "{\"argv\":[\"sleep\",\"30\"]}", NULL, 0));
    TH_OK(spore_call_async(&p[1], l, "proc.run", "{\"shell\":\"sleep 30 & sleep 30; wait\"}", NULL, 0));
    TH_OK(spore_call_async(&p[2], f, "proc.run", "{\"argv\":[\"sleep\",\"30\"]}", NULL, 0));
    TH_OK(spore_call_async(&p[3], f, "proc.run", "{\"shell\":\"trap '' TERM; sleep 30\"}", NULL, 0));
    th_sleep_ms(200);
    int before = th_count_descendants();
    assert_true(before >= 2 + 5);
    double t0 = th_now();
    TH_OK(spore_context_shutdown(l, 10000));
    /* spore.h says the pending calls fail with EDISCONNECTED; the agent
     * may also answer first with the result of the killed command */
    for (int i = 0; i < 4; i++) {
        spore_result *res = NULL;
        int rc = spore_call_wait(p[i], &res, 5000);
        if (rc == SPORE_OK) {
            print_message("note: call %d answered during shutdown: %s\n", i, spore_result_json(res));
            assert_false(th_json_is_null(spore_result_json(res), "signal"));
            spore_result_free(res);
        } else {
            assert_int_equal(rc, SPORE_EDISCONNECTED);
        }
        spore_call_free(p[i]);
    }
    /* no process is left, even before the router goes */
    assert_int_equal(th_wait_no_descendants(3.0 * th_time_factor()), 0);
    print_message("context with 4 running commands shut down in %.3f s\n", th_now() - t0);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* Handles freed in odd orders: the router first, then the rest. */
static void test_free_router_first(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, f));
    TH_OK(spore_chain_call_no_reply(ch, "sys.ping", NULL, NULL, 0));
    spore_pending *done = NULL, *pending = NULL;
    TH_OK(spore_call_async(&done, f, "sys.ping", NULL, NULL, 0));
    TH_OK(spore_call_wait(done, NULL, 5000));
    TH_OK(spore_call_async(&pending, l, "proc.run", "{\"argv\":[\"sleep\",\"10\"]}", NULL, 0));
    spore_result *res = NULL;
    TH_OK(spore_call(&res, f, "proc.run", "{\"shell\":\"echo rec\",\"stream\":true}", NULL, 0, 5000));
    spore_result_free(res);
    spore_log_record *rec = NULL;
    TH_OK(spore_router_next_log(r, &rec, 5000));
    TH_OK(spore_call(&res, l, "sys.echo", "{\"value\":\"kept\"}", "bin", 3, 5000));
    spore_options *o;
    TH_OK(spore_options_new(&o));

    double t0 = th_now();
    spore_router_free(r);
    assert_true(th_now() - t0 < 4.0 * th_time_factor());
    /* everything else is still valid to use and free, in any order */
    assert_int_equal(th_count_descendants(), 0);
    assert_int_equal(spore_context_alive(l), 0);
    assert_int_equal(spore_context_alive(f), 0);
    assert_string_equal(spore_log_record_message(rec), "rec");
    spore_log_record_free(rec);
    spore_context_free(l);
    assert_string_equal(spore_context_name(f), spore_context_name(f));
    spore_chain_free(ch);
    assert_int_equal(spore_call_done(pending), 1);
    assert_int_not_equal(spore_call_wait(pending, NULL, 0), SPORE_OK);
    spore_context_free(f);
    assert_string_equal(spore_result_json(res), "\"kept\"");
    spore_call_free(pending);
    spore_result_free(res);
    spore_call_free(done);
    spore_options_free(o);
    th_end(&b);
}

/* spore_router_close: a connect that would take 10 s and a thread waiting
 * for log records both return promptly with ESHUTDOWN, the handle stays
 * valid until spore_router_free, and close may be repeated. */
struct close_waiter {
    spore_router *r;
    int rc;
    spore_context *ctx;
};
static void *connect_slowly(void *p) {
    struct close_waiter *w = p;
    spore_options *o = NULL;
    if (spore_options_new(&o) != SPORE_OK) return NULL;
    spore_options_add_str(o, "command_prefix", "/bin/sh");
    spore_options_add_str(o, "command_prefix", "-c");
    spore_options_add_str(o, "command_prefix", "sleep 10");
    spore_options_add_str(o, "command_prefix", "sh");
    w->rc = spore_connect(&w->ctx, w->r, "local", o, NULL);
    spore_options_free(o);
    return NULL;
}
static void *wait_for_logs(void *p) {
    struct close_waiter *w = p;
    spore_log_record *rec = NULL;
    while ((w->rc = spore_router_next_log(w->r, &rec, -1)) == SPORE_OK) spore_log_record_free(rec);
    return NULL;
}
static void test_router_close_releases_waiting_threads(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    struct close_waiter cw = {r, 1, NULL}, lw = {r, 1, NULL};
    pthread_t ct, lt;
    assert_int_equal(pthread_create(&ct, NULL, connect_slowly, &cw), 0);
    assert_int_equal(pthread_create(&lt, NULL, wait_for_logs, &lw), 0);
    usleep(300 * 1000);
    double t0 = th_now();
    spore_router_close(r);
    pthread_join(ct, NULL);
    pthread_join(lt, NULL);
    double took = th_now() - t0;
    assert_true(took < 4.0 * th_time_factor());
    assert_int_equal(cw.rc, SPORE_ESHUTDOWN);
    assert_null(cw.ctx);
    assert_int_equal(lw.rc, SPORE_ESHUTDOWN);
    /* still a valid handle: connects are refused, its context is down */
    spore_router_close(r);
    spore_context *again = NULL;
    assert_int_equal(spore_connect(&again, r, "local", NULL, NULL), SPORE_ESHUTDOWN);
    assert_int_equal(spore_context_alive(l), 0);
    spore_log_record *rec = NULL;
    assert_int_equal(spore_router_next_log(r, &rec, 0), SPORE_ESHUTDOWN);
    spore_router_free(r);
    spore_context_free(l);
    spore_router_close(NULL);
    assert_int_equal(th_count_descendants(), 0);
    th_end(&b);
}

/* Other odd orders: contexts freed before the calls and chains made on
 * them, a via context freed before the context behind it. */
static void test_free_contexts_before_calls(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    spore_pending *p = NULL;
    TH_OK(spore_call_async(&p, f, "proc.run", "{\"argv\":[\"sleep\",\"0.2\"]}", NULL, 0));
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, f));
    /* the via handle first: the context behind it stays usable */
    spore_context_free(l);
    char *json = th_call(f, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(f);
    /* the call and the chain still work without any context handle */
    spore_result *res = NULL;
    TH_OK(spore_call_wait(p, &res, 5000));
    assert_int_equal(th_json_int(spore_result_json(res), "rc", -1), 0);
    spore_result_free(res);
    spore_call_free(p);
    TH_OK(spore_chain_call(&res, ch, "sys.echo", "{\"value\":5}", NULL, 0, 5000));
    assert_string_equal(spore_result_json(res), "5");
    spore_result_free(res);
    spore_chain_free(ch);
    /* contexts with no handle stay up until the router goes */
    assert_true(th_count_descendants() >= 2);
    spore_router_free(r);
    th_end(&b);
}

/* A private, empty /tmp for this process and the agents it starts (a
 * mount namespace; needs CAP_SYS_ADMIN and a single-threaded process), so
 * that what appears in it can only come from this test and not from other
 * programs running at the same time. 0 when not possible. */
static int under_tmp(const char *path) { return path && strncmp(path, "/tmp/", 5) == 0; }

static int private_tmp(void) {
    /* Not when the build itself lives in /tmp (a checkout there): the agent
     * image and the cache directory would disappear under the new mount. */
    char cwd[4096];
    if (under_tmp(getenv("SPORE_AGENT_PATH")) || under_tmp(getenv("XDG_RUNTIME_DIR")) ||
        (getcwd(cwd, sizeof cwd) && under_tmp(cwd)))
        return 0;
    if (unshare(CLONE_NEWNS) != 0) return 0;
    /* keep our mounts from propagating to the rest of the machine */
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0) return 0;
    if (mount("capi-tmp", "/tmp", "tmpfs", 0, "mode=1777") != 0) return 0;
    return 1;
}

/* 1,000 cycles of connect, ping, shutdown, free on one router. */
static void test_1000_connect_cycles(void **state) {
    (void)state;
    th_baseline b = th_begin();
    /* last test of this program: /tmp may become private now */
    int isolated = private_tmp();
    if (!isolated) print_message("note: /tmp is shared with other programs (no mount namespace)\n");
    char *tmp_before = th_list_dir_prefix("/tmp", "spore");
    spore_router *r = th_router(NULL);
    int fds_with_router = th_count_fds();
    double t0 = th_now();
    for (int i = 0; i < 1000; i++) {
        spore_context *c = NULL;
        TH_OK(spore_connect(&c, r, "local", NULL, NULL));
        spore_result *res = NULL;
        TH_OK(spore_call(&res, c, "sys.ping", NULL, NULL, 0, 10000));
        assert_string_equal(spore_result_json(res), "true");
        spore_result_free(res);
        TH_OK(spore_context_shutdown(c, 10000));
        assert_int_equal(spore_context_alive(c), 0);
        spore_context_free(c);
    }
    double took = th_now() - t0;
    print_message("1000 connect/ping/shutdown/free cycles: %.3f s (%.2f ms each)\n", took, took);
    /* nothing accumulates while the router lives on */
    assert_int_equal(th_wait_no_descendants(3.0), 0);
    double end = th_now() + 2.0;
    while (th_count_fds() != fds_with_router && th_now() < end) th_sleep_ms(10);
    if (th_count_fds() != fds_with_router) th_print_fds();
    assert_int_equal(th_count_fds(), fds_with_router);
    spore_context *c = th_connect(r, "local", NULL);
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    spore_router_free(r);
    char *tmp_after = th_list_dir_prefix("/tmp", "spore");
    /* New entries only: other test programs may remove theirs meanwhile.
     * On a shared /tmp, /tmp/spore-<uid> is the first stage's per-user
     * fallback, which any spore program on the machine (e.g. a parallel
     * test) may create; these agents never use it, as they run from
     * $XDG_RUNTIME_DIR. In a private /tmp everything counts. */
    char shared[64], added[4096] = "";
    snprintf(shared, sizeof shared, "spore-%u", (unsigned)getuid());
    char *before_nl = malloc(strlen(tmp_before) + 2);
    sprintf(before_nl, "\n%s", tmp_before);
    for (char *line = strtok(tmp_after, "\n"); line; line = strtok(NULL, "\n")) {
        char needle[300];
        snprintf(needle, sizeof needle, "\n%s\n", line);
        if ((!isolated && strcmp(line, shared) == 0) || strstr(before_nl, needle)) continue;
        if (strlen(added) + strlen(needle) < sizeof added) strcat(added, needle + 1);
    }
    free(before_nl);
    if (added[0]) fail_msg("new entries in /tmp: %s", added);
    free(tmp_before);
    free(tmp_after);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parent_death_takes_agents_down),
        cmocka_unit_test(test_kill_agent_mid_call),
        cmocka_unit_test(test_idle_agent_death_noticed),
        cmocka_unit_test(test_shutdown_kills_running_commands),
        cmocka_unit_test(test_free_router_first),
        cmocka_unit_test(test_router_close_releases_waiting_threads),
        cmocka_unit_test(test_free_contexts_before_calls),
        cmocka_unit_test(test_1000_connect_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
