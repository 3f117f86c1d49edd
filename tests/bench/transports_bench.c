/*
 * transports_bench.c - the "transports" benchmarks of spore (run by
 * scripts/bench transports against the throw-away sshd of tests/harness).
 *
 * Not a test: ctest never runs it. Through the public C API only, it
 * measures ssh connects (agent cached, and first contact), call round trips
 * over ssh and over ssh -> sudo, the extra connect time of sudo behind ssh,
 * 50 ssh contexts opened at once, and the bytes on the wire; plus the
 * OpenSSH floors (`ssh host true`, a 1-byte ping-pong through `ssh host cat`).
 *
 * Environment: SPORE_AGENT_PATH, BENCH_SSH_PORT, BENCH_SSH_USER (an account
 * with NOPASSWD sudo), BENCH_SSH_KEY, BENCH_KNOWN_HOSTS.
 * Output: "sample <metric> <unit> <v>..." and "info <metric> <key> <value>"
 * lines, as core_bench.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* tcp_info with byte counters (glibc's is older) */
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "transports_bench"
#include "bench_util.h"

extern char **environ;




static spore_context *ssh_connect(spore_router *r, const char *backend, int cache) {
    spore_options *o = bench_ssh_options(backend);
    if (!cache) spore_options_set_bool(o, "agent_cache", 0);
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "ssh", o, NULL);
    spore_options_free(o);
    if (rc != SPORE_OK) die_spore("spore_connect(ssh)", rc);
    return c;
}

static spore_context *sudo_via(spore_router *r, spore_context *via) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "sudo", NULL, via);
    if (rc != SPORE_OK) die_spore("spore_connect(sudo via ssh)", rc);
    return c;
}

static double rtt_us(spore_context *c, int n) {
    for (int i = 0; i < 50; i++) ping(c);
    double t0 = now_s();
    for (int i = 0; i < n; i++) ping(c);
    return (now_s() - t0) / n * 1e6;
}

/* Bytes this process has sent and received on TCP connections to the test
 * sshd (TCP_INFO of every such socket it has open). */
static void wire_bytes(uint64_t *sent, uint64_t *received) {
    *sent = *received = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int port = atoi(g_port);
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d)) continue;
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0 || peer.sin_family != AF_INET) continue;
        if (ntohs(peer.sin_port) != port) continue;
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) continue;
        *sent += ti.tcpi_bytes_acked;
        *received += ti.tcpi_bytes_received;
    }
    closedir(d);
}

/* --------------------------------------------------------------- spore */

static void bench_connect(const char *metric, const char *backend, int cache) {
    double v[MAX_RUNS];
    int n = runs(cache ? 15 : 5);
    spore_router *r = new_router();
    if (cache) close_ctx(ssh_connect(r, backend, 1)); /* the agent is cached from here on */
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        spore_context *c = ssh_connect(r, backend, cache);
        ping(c);
        v[i] = (now_s() - t0) * 1e3;
        close_ctx(c);
    }
    spore_router_free(r);
    emit(metric, "ms", v, n);
}

static void bench_wire(void) {
    spore_router *r = new_router();
    uint64_t s0, r0, s1, r1;
    spore_context *c = ssh_connect(r, "libssh2", 0); /* agent_cache off: the image is sent */
    ping(c);
    wire_bytes(&s1, &r1);
    printf("info wire_call_bytes first_contact_bytes_sent %llu\n", (unsigned long long)s1);
    printf("info wire_call_bytes first_contact_bytes_received %llu\n", (unsigned long long)r1);
    close_ctx(c);
    c = ssh_connect(r, "libssh2", 1);
    ping(c);
    wire_bytes(&s0, &r0);
    printf("info wire_call_bytes cached_connect_bytes_sent %llu\n", (unsigned long long)s0);
    printf("info wire_call_bytes cached_connect_bytes_received %llu\n", (unsigned long long)r0);
    for (int i = 0; i < 10; i++) ping(c);
    usleep(200000); /* let the acks of the warm-up arrive */
    wire_bytes(&s0, &r0);
    int n = 1000;
    for (int i = 0; i < n; i++) ping(c);
    usleep(200000);
    wire_bytes(&s1, &r1);
    printf("info wire_call_bytes call_bytes_sent %.1f\n", (double)(s1 - s0) / n);
    printf("info wire_call_bytes call_bytes_received %.1f\n", (double)(r1 - r0) / n);
    double v[2] = {(double)(s1 - s0 + r1 - r0) / n, 0};
    emit("wire_call_bytes", "bytes", v, 1);
    close_ctx(c);
    spore_router_free(r);
    fflush(stdout);
}

static void bench_rtt(const char *metric, const char *backend, int via_sudo) {
    double v[MAX_RUNS];
    int n = runs(9);
    spore_router *r = new_router();
    spore_context *s = ssh_connect(r, backend, 1);
    spore_context *c = via_sudo ? sudo_via(r, s) : s;
    for (int i = 0; i < n; i++) v[i] = rtt_us(c, iters(2000));
    if (via_sudo) close_ctx(c);
    close_ctx(s);
    spore_router_free(r);
    emit(metric, "us", v, n);
}

static void bench_sudo_extra(void) {
    double v[MAX_RUNS];
    int n = runs(15);
    spore_router *r = new_router();
    spore_context *s = ssh_connect(r, "libssh2", 1);
    close_ctx(sudo_via(r, s)); /* cache the agent for root too */
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        spore_context *c = sudo_via(r, s);
        ping(c);
        v[i] = (now_s() - t0) * 1e3;
        close_ctx(c);
    }
    close_ctx(s);
    spore_router_free(r);
    emit("sudo_via_ssh_connect", "ms", v, n);
}

#define N_CONCURRENT 50
struct cjob {
    spore_router *r;
    pthread_barrier_t *go;
    spore_context *c;
    double done;
};

static void *cthread(void *p) {
    struct cjob *j = p;
    pthread_barrier_wait(j->go);
    j->c = ssh_connect(j->r, "libssh2", 1);
    j->done = now_s();
    return NULL;
}

static void bench_concurrent(void) {
    double v[MAX_RUNS];
    int n = runs(5);
    for (int k = 0; k < n; k++) {
        spore_router *r = new_router();
        if (k == 0) close_ctx(ssh_connect(r, "libssh2", 1));
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N_CONCURRENT + 1);
        struct cjob jobs[N_CONCURRENT];
        pthread_t th[N_CONCURRENT];
        for (int i = 0; i < N_CONCURRENT; i++) {
            jobs[i] = (struct cjob){r, &go, NULL, 0};
            pthread_create(&th[i], NULL, cthread, &jobs[i]);
        }
        double t0 = now_s();
        pthread_barrier_wait(&go);
        double last = t0;
        for (int i = 0; i < N_CONCURRENT; i++) {
            pthread_join(th[i], NULL);
            if (jobs[i].done > last) last = jobs[i].done;
        }
        v[k] = (last - t0) * 1e3;
        for (int i = 0; i < N_CONCURRENT; i++) spore_context_free(jobs[i].c);
        spore_router_free(r);
        pthread_barrier_destroy(&go);
    }
    emit("ssh_contexts_concurrent", "ms", v, n);
    printf("info ssh_contexts_concurrent contexts %d\n", N_CONCURRENT);
}

/* What the controller pays per ssh host held open (libssh2: one session
 * thread each): VmRSS and address space per session, and the threads. */
static void bench_sessions(void) {
    int n = env_int("BENCH_QUICK", 0) ? 20 : env_int("BENCH_SSH_SESSIONS", 200);
    spore_router *r = new_router();
    close_ctx(ssh_connect(r, "libssh2", 1)); /* warm: image read, libssh2 initialised */
    long rss0 = self_status("VmRSS"), vm0 = self_status("VmSize"), th0 = self_status("Threads");
    spore_context **c = calloc((size_t)n, sizeof *c);
    if (!c) exit(1);
    for (int i = 0; i < n; i++) {
        c[i] = ssh_connect(r, "libssh2", 1);
        ping(c[i]);
    }
    long rss = self_status("VmRSS") - rss0, vm = self_status("VmSize") - vm0, th = self_status("Threads") - th0;
    double per_rss = (double)rss / n, per_vm = (double)vm / n;
    emit("ssh_master_kib_per_session", "KiB", &per_rss, 1);
    printf("info ssh_master_kib_per_session sessions %d\n", n);
    printf("info ssh_master_kib_per_session address_space_kib_per_session %.0f\n", per_vm);
    printf("info ssh_master_kib_per_session threads_per_session %.2f\n", (double)th / n);
    for (int i = 0; i < n; i++) spore_context_free(c[i]);
    free(c);
    spore_router_free(r);
}

/* -------------------------------------------------------------- floors */

static void ssh_argv(char **argv, int *argc, const char *cmd) {
    static char port[16], login[128], key[512], kh[600];
    snprintf(port, sizeof port, "%s", g_port);
    snprintf(login, sizeof login, "%s@127.0.0.1", g_user);
    snprintf(key, sizeof key, "%s", g_key);
    snprintf(kh, sizeof kh, "UserKnownHostsFile=%s", g_known);
    int i = 0;
    argv[i++] = "ssh";
    argv[i++] = "-F";
    argv[i++] = "/dev/null";
    argv[i++] = "-o";
    argv[i++] = "BatchMode=yes";
    argv[i++] = "-o";
    argv[i++] = kh;
    argv[i++] = "-o";
    argv[i++] = "IdentityAgent=none";
    argv[i++] = "-i";
    argv[i++] = key;
    argv[i++] = "-p";
    argv[i++] = port;
    argv[i++] = login;
    argv[i++] = (char *)cmd;
    argv[i] = NULL;
    *argc = i;
}

static void bench_floor_ssh_true(void) {
    double v[MAX_RUNS];
    int n = runs(11);
    char *argv[20];
    int argc;
    ssh_argv(argv, &argc, "true");
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        pid_t pid;
        if (posix_spawnp(&pid, "ssh", NULL, NULL, argv, environ) != 0) exit(1);
        int st;
        waitpid(pid, &st, 0);
        v[i] = (now_s() - t0) * 1e3;
    }
    emit("floor_openssh_exec", "ms", v, n);
}

/* A 1-byte ping-pong through `ssh host cat`: the least any call over an
 * OpenSSH session can cost here. */
static void bench_floor_ssh_cat(void) {
    int in[2], out[2];
    if (pipe(in) || pipe(out)) exit(1);
    char *argv[20];
    int argc;
    ssh_argv(argv, &argc, "exec cat");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    pid_t pid;
    if (posix_spawnp(&pid, "ssh", &fa, NULL, argv, environ) != 0) exit(1);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    double v[MAX_RUNS];
    int n = runs(9), k = iters(2000);
    char b = 'x';
    for (int i = 0; i < 100; i++)
        if (write(in[1], &b, 1) != 1 || read(out[0], &b, 1) != 1) exit(1);
    for (int r = 0; r < n; r++) {
        double t0 = now_s();
        for (int i = 0; i < k; i++)
            if (write(in[1], &b, 1) != 1 || read(out[0], &b, 1) != 1) exit(1);
        v[r] = (now_s() - t0) / k * 1e6;
    }
    close(in[1]);
    int st;
    waitpid(pid, &st, 0);
    close(out[0]);
    emit("floor_ssh_cat_rtt", "us", v, n);
}

int main(int argc, char **argv) {
    if (!bench_ssh_env()) {
        fprintf(stderr, "transports_bench: BENCH_SSH_PORT, BENCH_SSH_USER, BENCH_SSH_KEY and BENCH_KNOWN_HOSTS are needed\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *only = argc > 1 ? argv[1] : "all";
    int all = strcmp(only, "all") == 0;
    if (all || !strcmp(only, "connect")) bench_connect("ssh_connect_first_call", "libssh2", 1);
    if (all || !strcmp(only, "first-contact")) bench_connect("ssh_connect_first_contact", "libssh2", 0);
    if (all || !strcmp(only, "connect-openssh")) bench_connect("ssh_connect_first_call_openssh", "openssh", 1);
    if (all || !strcmp(only, "rtt")) bench_rtt("ssh_call_rtt", "libssh2", 0);
    if (all || !strcmp(only, "rtt-openssh")) bench_rtt("ssh_call_rtt_openssh", "openssh", 0);
    if (all || !strcmp(only, "sudo")) bench_sudo_extra();
    if (all || !strcmp(only, "rtt-sudo")) bench_rtt("ssh_sudo_call_rtt", "libssh2", 1);
    if (all || !strcmp(only, "concurrent")) bench_concurrent();
    if (all || !strcmp(only, "sessions")) bench_sessions();
    if (all || !strcmp(only, "wire")) bench_wire();
    if (all || !strcmp(only, "floors")) {
        bench_floor_ssh_true();
        bench_floor_ssh_cat();
    }
    return 0;
}
