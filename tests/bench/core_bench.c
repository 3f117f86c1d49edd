/*
 * core_bench.c - the "core" benchmarks of spore (run by scripts/bench core).
 *
 * Not a test: nothing here is run by ctest. It measures, through the public
 * C API only, the cost of opening local contexts and of calls, plus the
 * "floors" the operating system imposes on this machine (fork+exec of sh,
 * a raw pipe round trip, a raw 1 MiB pipe echo).
 *
 * Usage: core_bench all            every metric that uses the cached agent
 *        core_bench first-contact  connects with an empty agent cache, with
 *                                  each compression of the image (the caller
 *                                  gives a fresh XDG_RUNTIME_DIR and HOME)
 *        core_bench NAME           one metric of "all" (see usage())
 * The agent is the one named by $SPORE_AGENT_PATH.
 *
 * Output, one line each, for scripts/bench to parse:
 *   sample <metric> <unit> <v1> <v2> ...   one value per run (a run averages
 *                                          many iterations where the metric
 *                                          is per call)
 *   info <metric> <key> <value>            extra facts about a metric
 *   check <metric> <problem>               the measurement is not what it
 *                                          claims to be (reported as such)
 * Diagnostics go to stderr. Exit status 0 unless a measurement failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "core_bench"
#include "bench_util.h"

extern char **environ;

#define MIB (1024u * 1024u)

/* ------------------------------------------------------------- helpers */

static void die_errno(const char *what) {
    fprintf(stderr, "core_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static spore_context *connect_local(spore_router *r) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "local", NULL, NULL);
    if (rc != SPORE_OK) die_spore("spore_connect(local)", rc);
    return c;
}

/* The "pid" member of sys.info's JSON result. */
static long agent_pid(spore_context *c) {
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "sys.info", NULL, NULL, 0, 30000);
    if (rc != SPORE_OK) die_spore("spore_call(sys.info)", rc);
    const char *j = spore_result_json(res);
    const char *p = strstr(j, "\"pid\"");
    long pid = -1;
    if (p && (p = strchr(p, ':'))) pid = strtol(p + 1, NULL, 10);
    spore_result_free(res);
    if (pid <= 0) {
        fprintf(stderr, "core_bench: no pid in sys.info result: %s\n", j);
        exit(1);
    }
    return pid;
}

/* ------------------------------------------------------------- floors */

/* fork+exec of `sh -c true` and its wait: what any local connect pays at
 * least (the local method starts /bin/sh with the first stage). */
static void bench_sh_spawn(void) {
    int n = runs(11), k = iters(20);
    double v[MAX_RUNS];
    char *argv[] = {"/bin/sh", "-c", "true", NULL};
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        for (int i = 0; i < k; i++) {
            pid_t pid;
            int st;
            if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0) die_errno("posix_spawn");
            if (waitpid(pid, &st, 0) < 0) die_errno("waitpid");
        }
        v[r] = (now_s() - t0) / k * 1e3;
    }
    emit("floor_sh_spawn", "ms", v, n);
}

/* Pins the calling thread (and what it creates or forks later) to one CPU,
 * or to all of them again with cpu < 0. */
static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0) CPU_SET(cpu, &set);
    else
        for (int i = 0; i < CPU_SETSIZE; i++) CPU_SET(i, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0 && cpu >= 0) die_errno("sched_setaffinity");
}

/* Raw pipe ping-pong between two processes, 1-byte messages.
 * placement 0: wherever the scheduler puts them; 1: both on CPU 0;
 * 2: parent on CPU 0, child on CPU 1 (every message wakes the other CPU). */
static void pipe_rtt(const char *metric, int placement) {
    int n = runs(placement ? 7 : 11), k = iters(5000);
    double v[MAX_RUNS];
    if (placement) pin(0);
    /* A new pair of processes each run: each run is an independent sample of
     * where the scheduler puts them. */
    for (int r = 0; r < n; r++) {
        int down[2], up[2];
        if (pipe(down) || pipe(up)) die_errno("pipe");
        pid_t pid = fork();
        if (pid < 0) die_errno("fork");
        if (pid == 0) {
            char b;
            if (placement == 2) pin(1);
            close(down[1]);
            close(up[0]);
            while (read(down[0], &b, 1) == 1)
                if (write(up[1], &b, 1) != 1) break;
            _exit(0);
        }
        close(down[0]);
        close(up[1]);
        char b = 'x';
        for (int i = 0; i < k / 10; i++) /* warm up */
            if (write(down[1], &b, 1) != 1 || read(up[0], &b, 1) != 1) die_errno("pipe ping-pong");
        double t0 = now_s();
        for (int i = 0; i < k; i++) {
            if (write(down[1], &b, 1) != 1 || read(up[0], &b, 1) != 1) die_errno("pipe ping-pong");
        }
        v[r] = (now_s() - t0) / k * 1e6;
        close(down[1]);
        close(up[0]);
        waitpid(pid, NULL, 0);
    }
    if (placement) pin(-1);
    emit(metric, "us", v, n);
}

static void bench_pipe_rtt(void) { pipe_rtt("floor_pipe_rtt", 0); }
static void bench_pipe_rtt_1cpu(void) { pipe_rtt("floor_pipe_rtt_1cpu", 1); }
static void bench_pipe_rtt_2cpu(void) {
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) pipe_rtt("floor_pipe_rtt_2cpu", 2);
}

/* Writes 1 MiB into a pipe to a child that echoes it back through another
 * pipe, reading the echo while writing. MB/s as for the sys.echo metric:
 * bytes one way / (round trip / 2). */
static void bench_pipe_echo(void) {
    int n = runs(7), k = iters(40);
    double v[MAX_RUNS];
    int down[2], up[2];
    if (pipe(down) || pipe(up)) die_errno("pipe");
    pid_t pid = fork();
    if (pid < 0) die_errno("fork");
    if (pid == 0) {
        static char buf[65536];
        close(down[1]);
        close(up[0]);
        for (;;) {
            ssize_t got = read(down[0], buf, sizeof buf);
            if (got <= 0) break;
            for (ssize_t off = 0; off < got;) {
                ssize_t w = write(up[1], buf + off, (size_t)(got - off));
                if (w <= 0) _exit(1);
                off += w;
            }
        }
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    fcntl(down[1], F_SETFL, O_NONBLOCK);
    char *out = malloc(MIB), *in = malloc(MIB);
    if (!out || !in) die_errno("malloc");
    memset(out, 0xA5, MIB);
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        for (int i = 0; i < k; i++) {
            size_t sent = 0, got = 0;
            while (got < MIB) {
                struct pollfd p[2] = {{up[0], POLLIN, 0}, {down[1], POLLOUT, 0}};
                int np = sent < MIB ? 2 : 1;
                if (poll(p, (nfds_t)np, -1) < 0) die_errno("poll");
                if (np == 2 && (p[1].revents & POLLOUT)) {
                    ssize_t w = write(down[1], out + sent, MIB - sent);
                    if (w > 0) sent += (size_t)w;
                    else if (w < 0 && errno != EAGAIN) die_errno("write");
                }
                if (p[0].revents & (POLLIN | POLLHUP)) {
                    ssize_t rd = read(up[0], in + got, MIB - got);
                    if (rd <= 0) die_errno("read");
                    got += (size_t)rd;
                }
            }
        }
        double rtt = (now_s() - t0) / k;
        v[r] = (double)MIB / (rtt / 2) / 1e6;
    }
    close(down[1]);
    close(up[0]);
    waitpid(pid, NULL, 0);
    free(out);
    free(in);
    emit("floor_pipe_echo_1mib", "MB/s", v, n);
}

/* ------------------------------------------------------------- spore */

/* A router and one local context on it, made anew for each run of a
 * per-call metric, so that runs are independent samples of where the
 * scheduler puts the caller, the router's I/O thread and the agent (on a
 * small VM a wake-up of another CPU costs as much as the call itself). */
struct session {
    spore_router *r;
    spore_context *c;
};

static struct session session_open(int warm_calls) {
    struct session s;
    s.r = new_router();
    s.c = connect_local(s.r);
    for (int i = 0; i < warm_calls; i++) ping(s.c);
    return s;
}

static void session_close(struct session *s) {
    close_ctx(s->c);
    spore_router_free(s->r);
}

/* Open a local context (cached agent) and make its first call. */
static void bench_connect(void) {
    int n = runs(15);
    double v[MAX_RUNS];
    spore_router *r = new_router();
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        spore_context *c = connect_local(r);
        ping(c);
        v[i] = (now_s() - t0) * 1e3;
        close_ctx(c);
    }
    spore_router_free(r);
    emit("connect_first_call", "ms", v, n);
}

/* Blocking sys.ping round trips; with one_cpu, the caller, the router's
 * I/O thread and the agent all run on CPU 0. */
static void call_rtt(const char *metric, int one_cpu) {
    int n = runs(one_cpu ? 7 : 15), k = iters(3000);
    double v[MAX_RUNS];
    if (one_cpu) pin(0);
    for (int j = 0; j < n; j++) {
        struct session s = session_open(300);
        double t0 = now_s();
        for (int i = 0; i < k; i++) ping(s.c);
        v[j] = (now_s() - t0) / k * 1e6;
        session_close(&s);
    }
    if (one_cpu) pin(-1);
    emit(metric, "us", v, n);
}

static void bench_call_rtt(void) { call_rtt("call_rtt", 0); }
static void bench_call_rtt_1cpu(void) { call_rtt("call_rtt_1cpu", 1); }

/* Many spore_call_async, then wait for all of them. */
static void bench_pipelined_async(void) {
    int n = runs(15), k = iters(20000);
    double v[MAX_RUNS];
    spore_pending **calls = calloc((size_t)k, sizeof *calls);
    if (!calls) die_errno("calloc");
    for (int j = 0; j < n; j++) {
        struct session s = session_open(300);
        double t0 = now_s();
        for (int i = 0; i < k; i++) {
            int rc = spore_call_async(&calls[i], s.c, "sys.ping", NULL, NULL, 0);
            if (rc != SPORE_OK) die_spore("spore_call_async", rc);
        }
        for (int i = 0; i < k; i++) {
            int rc = spore_call_wait(calls[i], NULL, -1);
            if (rc != SPORE_OK) die_spore("spore_call_wait", rc);
        }
        v[j] = k / (now_s() - t0);
        for (int i = 0; i < k; i++) spore_call_free(calls[i]);
        session_close(&s);
    }
    free(calls);
    emit("pipelined_async", "calls/s", v, n);
}

/* A chain of no-reply steps closed by one blocking call. */
static void bench_pipelined_chain(void) {
    int n = runs(15), k = iters(20000);
    double v[MAX_RUNS];
    for (int j = 0; j < n; j++) {
        struct session s = session_open(300);
        spore_chain *ch = NULL;
        int rc = spore_chain_new(&ch, s.c);
        if (rc != SPORE_OK) die_spore("spore_chain_new", rc);
        double t0 = now_s();
        for (int i = 0; i < k - 1; i++) {
            rc = spore_chain_call_no_reply(ch, "sys.ping", NULL, NULL, 0);
            if (rc != SPORE_OK) die_spore("spore_chain_call_no_reply", rc);
        }
        spore_result *res = NULL;
        rc = spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, 60000);
        if (rc != SPORE_OK) die_spore("spore_chain_call", rc);
        v[j] = k / (now_s() - t0);
        spore_result_free(res);
        spore_chain_free(ch);
        session_close(&s);
    }
    emit("pipelined_chain", "calls/s", v, n);
}

/* sys.echo of 1 MiB of binary data: the call carries 1 MiB out and the
 * reply 1 MiB back. MB/s = 1 MiB / (round trip / 2), MB = 10^6 bytes. */
static void bench_echo(void) {
    int n = runs(7), k = iters(40);
    double v[MAX_RUNS];
    unsigned char *data = malloc(MIB);
    if (!data) die_errno("malloc");
    for (size_t i = 0; i < MIB; i++) data[i] = (unsigned char)(i * 131u + (i >> 9));
    long kib = 0;
    for (int j = 0; j < n; j++) {
        struct session s = session_open(0);
        for (int i = 0; i < 3; i++) { /* warm up, and check the echo once */
            spore_result *res = NULL;
            int rc = spore_call(&res, s.c, "sys.echo", NULL, data, MIB, 30000);
            if (rc != SPORE_OK) die_spore("spore_call(sys.echo)", rc);
            size_t len = 0;
            const void *b = spore_result_bytes(res, &len);
            if (i == 0 && (len != MIB || memcmp(b, data, MIB) != 0)) {
                fprintf(stderr, "core_bench: sys.echo returned %zu bytes that differ from what was sent\n", len);
                exit(1);
            }
            spore_result_free(res);
        }
        double t0 = now_s();
        for (int i = 0; i < k; i++) {
            spore_result *res = NULL;
            int rc = spore_call(&res, s.c, "sys.echo", NULL, data, MIB, 30000);
            if (rc != SPORE_OK) die_spore("spore_call(sys.echo)", rc);
            spore_result_free(res);
        }
        double rtt = (now_s() - t0) / k;
        v[j] = (double)MIB / (rtt / 2) / 1e6;
        /* How much of the 1 MiB messages the agent keeps afterwards. */
        if (j == 0) kib = vmrss_kib(agent_pid(s.c));
        session_close(&s);
    }
    printf("info echo_1mib agent_rss_after_kib %ld\n", kib);
    free(data);
    emit("echo_1mib", "MB/s", v, n);
}

struct conn_thread {
    spore_router *r;
    pthread_barrier_t *start;
    spore_context *ctx;
    int rc;
};

static void *conn_thread_main(void *p) {
    struct conn_thread *t = p;
    pthread_barrier_wait(t->start);
    t->rc = spore_connect(&t->ctx, t->r, "local", NULL, NULL);
    if (t->rc != SPORE_OK)
        fprintf(stderr, "core_bench: concurrent connect failed: %s\n", spore_last_error()->message);
    return NULL;
}

/* N local contexts opened at once, one thread each; time until all are up. */
static void bench_concurrent(void) {
    int n = runs(5), nctx = env_int("BENCH_CONCURRENT", 100);
    double v[MAX_RUNS];
    struct conn_thread *t = calloc((size_t)nctx, sizeof *t);
    pthread_t *th = calloc((size_t)nctx, sizeof *th);
    if (!t || !th) die_errno("calloc");
    for (int j = 0; j < n; j++) {
        spore_router *r = new_router();
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)nctx + 1);
        for (int i = 0; i < nctx; i++) {
            t[i] = (struct conn_thread){r, &start, NULL, 0};
            pthread_attr_t a;
            pthread_attr_init(&a);
            pthread_attr_setstacksize(&a, 256 * 1024);
            if (pthread_create(&th[i], &a, conn_thread_main, &t[i]) != 0) die_errno("pthread_create");
            pthread_attr_destroy(&a);
        }
        pthread_barrier_wait(&start);
        double t0 = now_s();
        int failed = 0;
        for (int i = 0; i < nctx; i++) {
            pthread_join(th[i], NULL);
            if (t[i].rc != SPORE_OK) failed++;
        }
        v[j] = (now_s() - t0) * 1e3;
        pthread_barrier_destroy(&start);
        if (failed) {
            fprintf(stderr, "core_bench: %d of %d concurrent connects failed\n", failed, nctx);
            exit(1);
        }
        for (int i = 0; i < nctx; i++) spore_context_free(t[i].ctx);
        spore_router_free(r);
    }
    free(t);
    free(th);
    printf("info contexts_concurrent contexts %d\n", nctx);
    emit("contexts_concurrent", "ms", v, n);
}

/* VmRSS of an idle agent after a few calls. */
static void bench_rss(void) {
    int n = runs(5);
    double v[MAX_RUNS];
    spore_router *r = new_router();
    for (int j = 0; j < n; j++) {
        spore_context *c = connect_local(r);
        for (int i = 0; i < 10; i++) ping(c);
        spore_result *res = NULL;
        int rc = spore_call(&res, c, "sys.echo", "{\"value\":\"hello\"}", "abc", 3, 30000);
        if (rc != SPORE_OK) die_spore("spore_call(sys.echo)", rc);
        spore_result_free(res);
        long pid = agent_pid(c);
        usleep(20000); /* idle */
        long kib = vmrss_kib(pid);
        if (kib < 0) {
            fprintf(stderr, "core_bench: cannot read /proc/%ld/status\n", pid);
            exit(1);
        }
        v[j] = (double)kib / 1024.0;
        close_ctx(c);
    }
    spore_router_free(r);
    emit("agent_rss", "MiB", v, n);
}

/* ------------------------------------------------------------- first contact */

static int agent_cached_in(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "spore-agent-", 12) == 0) found = 1;
    closedir(d);
    return found;
}

/* The master's debug note of the last first contact, "...: sent the agent
 * image, N bytes CODEC (sha256 ...[, compressed in M ms])": *bytes and
 * *compress_ms (-1 when the image was already compressed). 0 if none. */
static int first_contact_note(spore_router *r, long *bytes, long *compress_ms) {
    int found = 0;
    spore_log_record *rec;
    while (spore_router_next_log(r, &rec, 0) == SPORE_OK) {
        const char *m = spore_log_record_message(rec), *p;
        if (strcmp(spore_log_record_logger(rec), "spore.connect") == 0 && (p = strstr(m, "agent image, "))) {
            *bytes = strtol(p + 13, NULL, 10);
            p = strstr(m, "compressed in ");
            *compress_ms = p ? strtol(p + 14, NULL, 10) : -1;
            found = 1;
        }
        spore_log_record_free(rec);
    }
    return found;
}

/* A fresh empty cache: XDG_RUNTIME_DIR and HOME point at a new directory
 * under the first one (the local agent inherits this environment; no
 * connect is in progress while it changes). Returns its spore/ path. */
static const char *fresh_cache(const char *base, const char *name) {
    static char dir[4096], cache[4200];
    snprintf(dir, sizeof dir, "%s/%s", base, name);
    if (mkdir(dir, 0700) != 0) die_errno("mkdir");
    setenv("XDG_RUNTIME_DIR", dir, 1);
    setenv("HOME", dir, 1);
    snprintf(cache, sizeof cache, "%s/spore", dir);
    return cache;
}

/* Connect + first call into a fresh cache with agent_compress = compress
 * (NULL: the default); the time in ms. */
static double timed_first_contact(spore_router *r, const char *base, const char *name, const char *compress,
                                  const char *metric) {
    const char *cache = fresh_cache(base, name);
    spore_options *o = NULL;
    int rc = spore_options_new(&o);
    if (rc != SPORE_OK) die_spore("spore_options_new", rc);
    if (compress) spore_options_set_str(o, "agent_compress", compress);
    double t0 = now_s();
    spore_context *c = NULL;
    rc = spore_connect(&c, r, "local", o, NULL);
    spore_options_free(o);
    if (rc != SPORE_OK) die_spore("spore_connect", rc);
    ping(c);
    double ms = (now_s() - t0) * 1e3;
    /* If the agent came from another cache (e.g. /dev/shm/spore-UID), no
     * image was sent and the figure is not a first contact. */
    if (!agent_cached_in(cache)) printf("check %s cached-elsewhere\n", metric);
    close_ctx(c);
    return ms;
}

/* First contacts, each into an empty cache, in a new process (the caller
 * made XDG_RUNTIME_DIR and HOME fresh):
 * - connect_first_contact: the default compression (the strongest the
 *   target has), the image compressed during this connect;
 * - connect_first_contact_later: the same router again, image already made;
 * - connect_first_contact_<codec> for xz, zstd, gzip, raw: agent_compress
 *   set to that codec, measured once the form is made (a first connect
 *   with it made it); info image_bytes and compress_ms;
 * then, through the first context, a connect with agent_cache off via
 * spore.connect, whose result tells the bytes an agent ships its child. */
static void bench_first_contact(void) {
    static const struct {
        const char *option, *metric;
    } codecs[] = {{"xz", "connect_first_contact_xz"},
                  {"zstd", "connect_first_contact_zstd"},
                  {"gzip", "connect_first_contact_gzip"},
                  {"none", "connect_first_contact_raw"}};
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char cache[4096], base[4096];
    if (!xdg || !*xdg) {
        fprintf(stderr, "core_bench: first-contact needs a fresh XDG_RUNTIME_DIR\n");
        exit(1);
    }
    snprintf(base, sizeof base, "%s", xdg);
    snprintf(cache, sizeof cache, "%s/spore", xdg);
    if (agent_cached_in(cache)) {
        fprintf(stderr, "core_bench: %s already holds an agent: not a first contact\n", cache);
        exit(1);
    }
    /* Debug level for the master's note of the bytes sent; agents send
     * nothing more at it during a connect and ping. */
    spore_router *r = new_router();
    spore_router_set_log_level(r, SPORE_LOG_DEBUG);
    long bytes = 0, compress_ms = -1;
    double t0 = now_s();
    spore_context *c = connect_local(r);
    ping(c);
    double ms = (now_s() - t0) * 1e3;
    if (!agent_cached_in(cache)) printf("check connect_first_contact cached-elsewhere\n");
    printf("sample connect_first_contact ms %.6g\n", ms);
    if (first_contact_note(r, &bytes, &compress_ms)) {
        printf("info connect_first_contact image_bytes %ld\n", bytes);
        if (compress_ms >= 0) printf("info connect_first_contact compress_ms %ld\n", compress_ms);
    }
    ms = timed_first_contact(r, base, "later", NULL, "connect_first_contact_later");
    printf("sample connect_first_contact_later ms %.6g\n", ms);
    fflush(stdout);

    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        char name[64];
        long made_ms = -1;
        snprintf(name, sizeof name, "%s.make", codecs[i].option);
        timed_first_contact(r, base, name, codecs[i].option, codecs[i].metric);
        if (first_contact_note(r, &bytes, &compress_ms)) made_ms = compress_ms;
        snprintf(name, sizeof name, "%s.sent", codecs[i].option);
        ms = timed_first_contact(r, base, name, codecs[i].option, codecs[i].metric);
        printf("sample %s ms %.6g\n", codecs[i].metric, ms);
        if (first_contact_note(r, &bytes, &compress_ms)) printf("info %s image_bytes %ld\n", codecs[i].metric, bytes);
        if (made_ms >= 0) printf("info %s compress_ms %ld\n", codecs[i].metric, made_ms);
        fflush(stdout);
    }

    /* Agent to child: ask the agent to open a sibling with the cache off (so
     * the image is always sent) and read "image_bytes" from spore.connect. The
     * id is picked far above the ids the router hands out. */
    char args[256];
    snprintf(args, sizeof args,
             "{\"method\":\"local\",\"id\":%u,\"name\":\"bench-image\",\"agent_cache\":false}",
             (unsigned)(1u << 29) + (unsigned)getpid());
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "spore.connect", args, NULL, 0, 30000);
    if (rc == SPORE_OK) {
        const char *j = spore_result_json(res);
        const char *p = strstr(j, "\"image_bytes\"");
        if (p && (p = strchr(p, ':')))
            printf("info connect_first_contact agent_to_child_bytes %ld\n", strtol(p + 1, NULL, 10));
        spore_result_free(res);
    } else {
        fprintf(stderr, "core_bench: spore.connect through the agent failed (%s): agent-to-child bytes unknown\n",
                spore_last_error()->message);
    }
    fflush(stdout);
    close_ctx(c);
    spore_router_free(r);
}

/* ------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*fn)(void);
} benches[] = {
    {"floor_sh_spawn", bench_sh_spawn},
    {"connect_first_call", bench_connect},
    {"floor_pipe_rtt", bench_pipe_rtt},
    {"floor_pipe_rtt_1cpu", bench_pipe_rtt_1cpu},
    {"floor_pipe_rtt_2cpu", bench_pipe_rtt_2cpu},
    {"call_rtt", bench_call_rtt},
    {"call_rtt_1cpu", bench_call_rtt_1cpu},
    {"pipelined_async", bench_pipelined_async},
    {"pipelined_chain", bench_pipelined_chain},
    {"floor_pipe_echo_1mib", bench_pipe_echo},
    {"echo_1mib", bench_echo},
    {"contexts_concurrent", bench_concurrent},
    {"agent_rss", bench_rss},
};

static void usage(void) {
    fprintf(stderr, "usage: core_bench all|first-contact|NAME\n  NAMEs:");
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) fprintf(stderr, " %s", benches[i].name);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SPORE_AGENT_PATH"))
        fprintf(stderr, "core_bench: warning: SPORE_AGENT_PATH is not set; the installed agent is used\n");
    if (strcmp(argv[1], "first-contact") == 0) {
        bench_first_contact();
        return 0;
    }
    int verbose = env_int("BENCH_VERBOSE", 0);
    int all = strcmp(argv[1], "all") == 0, ran = 0;
    if (all) {
        /* Warm the agent cache once, so "connect" measures a cached agent. */
        spore_router *r = new_router();
        spore_context *c = connect_local(r);
        ping(c);
        close_ctx(c);
        spore_router_free(r);
    }
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (all || strcmp(argv[1], benches[i].name) == 0) {
            double t0 = now_s();
            benches[i].fn();
            if (verbose) fprintf(stderr, "core_bench: %s done in %.1f s\n", benches[i].name, now_s() - t0);
            ran++;
        }
    if (!ran) {
        usage();
        return 2;
    }
    return 0;
}
