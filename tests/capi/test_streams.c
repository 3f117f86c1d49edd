/* Process streams (spore_proc_start and spore_process_*): stdin to stdout
 * through cat, both ways at once, through two hops; stderr apart; exit
 * status and signals; a pty with its size and a resize; flow control that
 * blocks a writer whose reader does not read, with bounded memory; start
 * failures; a handle freed while its process runs; a start that times out,
 * cancelled in the context. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "helpers.h"

static spore_process *start(spore_context *ctx, const char *args) {
    spore_process *p = NULL;
    TH_OK(spore_proc_start(&p, ctx, args, NULL));
    assert_non_null(p);
    assert_true(spore_process_pid(p) > 1);
    return p;
}

/* Reads fd until its end into a malloc'd buffer. */
static char *read_all(spore_process *p, int fd, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        int got = spore_process_read(p, fd, buf + n, cap - n, 30000);
        if (got == 0) break;
        if (got < 0) fail_msg("read fd %d: %d %s", fd, got, spore_last_error()->message);
        n += (size_t)got;
    }
    buf[n < cap ? n : cap - 1] = '\0';
    if (n == cap) buf = realloc(buf, cap + 1), buf[n] = '\0';
    *len = n;
    return buf;
}

struct writer {
    spore_process *p;
    const unsigned char *data;
    size_t len;
    int rc;
};

static void *write_all(void *arg) {
    struct writer *w = arg;
    size_t off = 0;
    w->rc = 0;
    while (off < w->len) {
        size_t n = w->len - off < 100000 ? w->len - off : 100000;
        int rc = spore_process_write(w->p, w->data + off, n, 30000);
        if (rc != SPORE_OK) {
            w->rc = rc;
            return NULL;
        }
        off += n;
    }
    w->rc = spore_process_close_stdin(w->p);
    return NULL;
}

static void test_cat_both_ways_through_two_hops(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    size_t len = 8 * 1024 * 1024 + 3;
    unsigned char *data = malloc(len);
    for (size_t i = 0; i < len; i++) data[i] = (unsigned char)(i * 131 + (i >> 9));
    spore_process *p = start(f, "{\"argv\":[\"cat\"]}");
    struct writer w = {p, data, len, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_all, &w), 0);
    size_t got = 0;
    char *out = read_all(p, 1, &got);
    pthread_join(t, NULL);
    TH_OK(w.rc);
    assert_int_equal(got, len);
    assert_memory_equal(out, data, len);
    int code = -2, sig = -2;
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, 0);
    assert_int_equal(sig, 0);
    /* the output has ended: reads say so, again */
    char c;
    assert_int_equal(spore_process_read(p, 1, &c, 1, 0), 0);
    assert_int_equal(spore_process_read(p, 2, &c, 1, 1000), 0);
    /* stdin is closed */
    TH_ERR(spore_process_write(p, "x", 1, 100), SPORE_EINVAL);
    spore_process_free(p);
    free(out);
    free(data);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

static void test_stderr_exit_status_and_signals(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_process *p = start(l, "{\"shell\":\"echo out; echo err >&2; echo $FOO; exit 3\",\"env\":{\"FOO\":\"bar\"}}");
    size_t n1 = 0, n2 = 0;
    char *out = read_all(p, 1, &n1), *err = read_all(p, 2, &n2);
    assert_string_equal(out, "out\nbar\n");
    assert_string_equal(err, "err\n");
    int code = 0, sig = -1;
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, 3);
    assert_int_equal(sig, 0);
    /* Bytes for a process that has exited are refused, not dropped. */
    TH_ERR(spore_process_write(p, "late\n", 5, 1000), SPORE_EDISCONNECTED);
    free(out);
    free(err);
    /* many chunks queued at once before the process reads them all, then
     * the end of stdin (once lost a wake-up and hung) */
    spore_process_free(p);
    p = start(l, "{\"argv\":[\"wc\",\"-c\"]}");
    static char zeros[65536];
    for (int i = 0; i < 32; i++) TH_OK(spore_process_write(p, zeros, sizeof zeros, 10000));
    TH_OK(spore_process_close_stdin(p));
    out = read_all(p, 1, &n1);
    assert_string_equal(out, "2097152\n");
    free(out);
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, 0);
    /* a signal ends a process that would run on */
    spore_process_free(p);
    p = start(l, "{\"argv\":[\"sleep\",\"100\"]}");
    TH_ERR(spore_process_wait(p, &code, &sig, 200), SPORE_ETIMEDOUT);
    TH_OK(spore_process_signal(p, SIGTERM));
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, -1);
    assert_int_equal(sig, SIGTERM);
    TH_ERR(spore_process_signal(p, SIGTERM), SPORE_EINVAL); /* it has ended */
    TH_ERR(spore_process_signal(p, 0), SPORE_EINVAL);
    TH_ERR(spore_process_resize(p, 10, 10), SPORE_EINVAL);
    spore_process_free(p);
    /* a program that does not exist */
    spore_process *bad = NULL;
    TH_ERR(spore_proc_start(&bad, l, "{\"argv\":[\"/nonexistent/spore-prog\"]}", NULL), SPORE_EREMOTE);
    assert_string_equal(spore_last_error()->remote_type, "FileNotFoundError");
    assert_null(bad);
    TH_ERR(spore_proc_start(&bad, l, "{\"argv\":\"not a list\"}", NULL), SPORE_EBADARGS);
    TH_ERR(spore_proc_start(&bad, l, "[1]", NULL), SPORE_EINVAL);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* Reads stdout until it contains want (or fails after 10 s); also, when
 * not NULL, must have come before it in the same output. */
static void read_until2(spore_process *p, const char *want, const char *also) {
    char buf[4096];
    size_t n = 0;
    double end = th_now() + 10.0;
    while (th_now() < end) {
        int got = spore_process_read(p, 1, buf + n, sizeof buf - 1 - n, 200);
        if (got > 0) {
            n += (size_t)got;
            buf[n] = '\0';
            if (strstr(buf, want)) {
                if (also && !strstr(buf, also)) fail_msg("no '%s' before '%s' in the pty output: %s", also, want, buf);
                return;
            }
            if (n > sizeof buf / 2) {
                memmove(buf, buf + n / 2, n - n / 2 + 1);
                n -= n / 2;
            }
        } else if (got == 0) {
            break;
        }
    }
    buf[n] = '\0';
    fail_msg("no '%s' in the pty output: %s", want, buf);
}

static void read_until(spore_process *p, const char *want) { read_until2(p, want, NULL); }

static void test_pty(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_process *p = start(l, "{\"argv\":[\"/bin/sh\"],\"pty\":true,\"rows\":40,\"cols\":100}");
    const char *cmd = "tty; stty size\n";
    TH_OK(spore_process_write(p, cmd, strlen(cmd), 5000));
    read_until2(p, "40 100", "/dev/pts/");
    TH_OK(spore_process_resize(p, 50, 120));
    cmd = "stty size\n";
    TH_OK(spore_process_write(p, cmd, strlen(cmd), 5000));
    read_until(p, "50 120");
    TH_OK(spore_process_close_stdin(p)); /* ^D: the shell exits */
    int code = -2, sig = -2;
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, 0);
    char c;
    while (spore_process_read(p, 1, &c, 1, 1000) > 0) {
    }
    assert_int_equal(spore_process_read(p, 2, &c, 1, 1000), 0);
    spore_process_free(p);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* A writer whose reader does not read is held back by the window; once the
 * reader reads, everything flows, and the agent's memory stays flat. */
static void test_flow_control(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    pid_t agent = th_agent_pid(l);
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "window", 256 * 1024));
    spore_process *p = NULL;
    TH_OK(spore_proc_start(&p, l, "{\"argv\":[\"cat\"]}", o));
    spore_options_free(o);
    static char chunk[65536];
    memset(chunk, 'z', sizeof chunk);
    long base = th_rss_kib(agent);
    /* nothing reads stdout: writes stop after a few windows and pipe buffers */
    size_t sent = 0;
    int rc = SPORE_OK;
    while (sent < (64u << 20)) {
        rc = spore_process_write(p, chunk, sizeof chunk, 300);
        if (rc != SPORE_OK) break;
        sent += sizeof chunk;
    }
    assert_int_equal(rc, SPORE_ETIMEDOUT);
    print_message("a writer without a reader stopped after %zu KiB\n", sent / 1024);
    assert_true(sent < (8u << 20));
    long held = th_rss_kib(agent);
    /* now 256 MiB through it, read as it comes */
    struct writer w = {p, NULL, 0, -1};
    unsigned char *big = malloc(256u << 20);
    memset(big, 'y', 256u << 20);
    w.data = big;
    w.len = 256u << 20;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_all, &w), 0);
    size_t total = 0;
    long peak = held;
    char buf[1 << 16];
    for (;;) {
        int got = spore_process_read(p, 1, buf, sizeof buf, 30000);
        if (got == 0) break;
        assert_true(got > 0);
        total += (size_t)got;
        if ((total & ((8u << 20) - 1)) < sizeof buf) {
            long k = th_rss_kib(agent);
            if (k > peak) peak = k;
        }
    }
    pthread_join(t, NULL);
    TH_OK(w.rc);
    assert_int_equal(total, sent + (256u << 20));
    print_message("agent RSS %ld KiB, %ld while held, at most %ld while 256 MiB went through\n", base, held, peak);
    assert_true(peak - base < 16 * 1024);
    TH_OK(spore_process_wait(p, NULL, NULL, 10000));
    spore_process_free(p);
    free(big);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

static void test_free_while_running(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_process *p = start(l, "{\"shell\":\"sleep 100 & sleep 100; wait\"}");
    long pid = spore_process_pid(p);
    assert_true(th_pid_exists((pid_t)pid));
    spore_process_free(p);
    assert_true(th_wait_pid_gone((pid_t)pid, 5.0));
    /* the context is still fine, and so is a process left running at the
     * router's end */
    p = start(l, "{\"argv\":[\"sleep\",\"100\"]}");
    spore_context_free(l);
    spore_router_free(r);
    char c;
    assert_true(spore_process_read(p, 1, &c, 1, 1000) <= 0);
    spore_process_free(p);
    th_end(&b);
}

/* A start that times out is cancelled in the context. The agent is stopped
 * (SIGSTOP) so the call waits unread; spore_proc_start gives up after its
 * timeout_ms and returns at once; once the agent runs again, the process
 * must never run, and the context still works. The same for a handle freed
 * right after a start that did return, and for bad timeout values. */
static void test_start_timeout_is_cancelled(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    pid_t agent = th_agent_pid(l);
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "timeout_ms", 300));
    assert_int_equal(kill(agent, SIGSTOP), 0);
    spore_process *p = NULL;
    double t0 = th_now();
    TH_ERR(spore_proc_start(&p, l, "{\"argv\":[\"sleep\",\"1002.25\"]}", o), SPORE_ETIMEDOUT);
    double took = th_now() - t0;
    assert_null(p);
    assert_true(strstr(spore_last_error()->message, "did not start within 300 ms") != NULL);
    assert_true(took >= 0.25 && took < 3.0 * th_time_factor());
    assert_int_equal(kill(agent, SIGCONT), 0);
    /* A round trip after the agent has read the call and the abort behind
     * it, then time for a worker that might still spawn. */
    free(th_call(l, "sys.ping", "{}"));
    for (int i = 0; i < 20; i++) {
        assert_int_equal(th_count_processes_with("sleep 1002.25"), 0);
        th_sleep_ms(25);
    }
    /* The context still runs processes. */
    p = start(l, "{\"argv\":[\"sleep\",\"1002.5\"]}");
    spore_process_free(p);
    double end = th_now() + 5.0;
    while (th_count_processes_with("sleep 1002.5") > 0 && th_now() < end) th_sleep_ms(20);
    assert_int_equal(th_count_processes_with("sleep 1002.5"), 0);

    spore_options *bad = NULL;
    TH_OK(spore_options_new(&bad));
    TH_OK(spore_options_set_int(bad, "timeout_ms", -2));
    TH_ERR(spore_proc_start(&p, l, "{\"argv\":[\"true\"]}", bad), SPORE_EINVAL);
    assert_true(strstr(spore_last_error()->message, "timeout_ms") != NULL);
    spore_options_free(bad);
    TH_OK(spore_options_new(&bad));
    TH_OK(spore_options_set_int(bad, "timeout", 5));
    TH_ERR(spore_proc_start(&p, l, "{\"argv\":[\"true\"]}", bad), SPORE_EINVAL);
    assert_true(strstr(spore_last_error()->message, "unknown option 'timeout'") != NULL);
    spore_options_free(bad);
    /* -1: no limit. */
    TH_OK(spore_options_set_int(o, "timeout_ms", -1));
    TH_OK(spore_proc_start(&p, l, "{\"argv\":[\"true\"]}", o));
    int code = -1;
    TH_OK(spore_process_wait(p, &code, NULL, 10000));
    assert_int_equal(code, 0);
    spore_process_free(p);
    spore_options_free(o);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cat_both_ways_through_two_hops),
        cmocka_unit_test(test_stderr_exit_status_and_signals),
        cmocka_unit_test(test_pty),
        cmocka_unit_test(test_flow_control),
        cmocka_unit_test(test_free_while_running),
        cmocka_unit_test(test_start_timeout_is_cancelled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
