/*
 * files_bench.c - file transfer benchmarks (scripts/bench files).
 *
 *   put_local_1gib        spore_put_file of 1 GiB to a local context (MB/s)
 *   get_local_1gib        spore_get_file of the same back (MB/s)
 *   floor_pipe_1gib       the same bytes through one pipe to a child that writes them (MB/s)
 *   files_1000x1k         a tree of 1,000 files of 1 KiB, spore_put_tree (s)
 *   files_1000x1k_each    the same files, one spore_put_bytes each (s), and
 *                         files_1000x1k_each_nosync with sync=false
 *   ping_during_transfer  sys.ping every 2 ms during a 2 GiB put through
 *                         two hops: p50 and p99 (ms), as info
 *   peak_mem_per_hop      the largest RSS growth of the master or of an
 *                         agent during a 2 GiB put through three hops (MiB)
 *   put_ssh_1gib          spore_put_file of 1 GiB over ssh on loopback (MB/s)
 *   floor_scp_1gib        scp of the same file (MB/s)
 *   floor_ssh_cat_1gib    `ssh host 'cat > file' < file` (MB/s)
 *
 * Files live in /dev/shm, so the disk is not what is measured (except for
 * the 1,000 small files, which go to a directory under /tmp). The ssh
 * metrics need BENCH_SSH_PORT, BENCH_SSH_USER, BENCH_SSH_KEY and
 * BENCH_KNOWN_HOSTS (scripts/bench files sets them up). BENCH_QUICK=1 makes
 * every file 64 MiB. Output: "sample <metric> <unit> <v>..." and "info ...".
 */
#define BENCH_NAME "files_bench"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

static long long g_size;

static double mbps(long long bytes, double s) { return (double)bytes / 1e6 / s; }

static void make_source(const char *path, long long size) {
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror(path); exit(1); }
    static unsigned char buf[1 << 20];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (long long done = 0; done < size; done += (long long)sizeof buf) {
        buf[0]++;
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) { perror("write"); exit(1); }
    }
    close(fd);
}

static spore_options *nosync(void) {
    spore_options *o = NULL;
    spore_options_new(&o);
    spore_options_set_bool(o, "sync", 0);
    return o;
}

static spore_context *connect_or_die(spore_router *r, const char *method, spore_options *o, spore_context *via) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, method, o, via);
    if (rc != SPORE_OK) die_spore("spore_connect", rc);
    return c;
}

static void bench_local(const char *src, const char *dst) {
    spore_router *r = new_router();
    spore_context *c = connect_or_die(r, "local", NULL, NULL);
    spore_options *o = nosync();
    int n = runs(5);
    double put[MAX_RUNS], get[MAX_RUNS];
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        int rc = spore_put_file(c, src, dst, o);
        if (rc != SPORE_OK) die_spore("spore_put_file", rc);
        put[i] = mbps(g_size, now_s() - t0);
        t0 = now_s();
        rc = spore_get_file(c, dst, "/dev/shm/spore-bench-back", o);
        if (rc != SPORE_OK) die_spore("spore_get_file", rc);
        get[i] = mbps(g_size, now_s() - t0);
        unlink("/dev/shm/spore-bench-back");
        unlink(dst);
    }
    emit("put_local_1gib", "MB/s", put, n);
    emit("get_local_1gib", "MB/s", get, n);
    spore_options_free(o);
    close_ctx(c);
    spore_router_free(r);
}

static void bench_pipe(const char *src, const char *dst) {
    int n = runs(5);
    double v[MAX_RUNS];
    static char buf[1 << 18];
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe(p) != 0) exit(1);
        fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
        double t0 = now_s();
        pid_t pid = fork();
        if (pid == 0) {
            close(p[1]);
            int out = open(dst, O_CREAT | O_WRONLY | O_TRUNC, 0644);
            ssize_t k;
            while ((k = read(p[0], buf, sizeof buf)) > 0)
                if (write(out, buf, (size_t)k) != k) _exit(1);
            close(out);
            _exit(0);
        }
        close(p[0]);
        int in = open(src, O_RDONLY);
        ssize_t k;
        while ((k = read(in, buf, sizeof buf)) > 0)
            if (write(p[1], buf, (size_t)k) != k) exit(1);
        close(in);
        close(p[1]);
        waitpid(pid, NULL, 0);
        v[i] = mbps(g_size, now_s() - t0);
        unlink(dst);
    }
    emit("floor_pipe_1gib", "MB/s", v, n);
}

static void bench_small_files(void) {
    char dir[] = "/tmp/spore-bench-files-XXXXXX";
    if (!mkdtemp(dir)) exit(1);
    char src[256], dst[256];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);
    mkdir(src, 0755);
    char data[1024];
    memset(data, 'x', sizeof data);
    for (int f = 0; f < 1000; f++) {
        char path[300];
        snprintf(path, sizeof path, "%s/f%04d", src, f);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0 || write(fd, data, sizeof data) != (ssize_t)sizeof data) exit(1);
        close(fd);
    }
    spore_router *r = new_router();
    spore_context *c = connect_or_die(r, "local", NULL, NULL);
    int n = runs(5);
    double v[MAX_RUNS];
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        int rc = spore_put_tree(c, src, dst, NULL);
        if (rc != SPORE_OK) die_spore("spore_put_tree", rc);
        v[i] = now_s() - t0;
    }
    emit("files_1000x1k", "s", v, n);
    for (int mode = 0; mode < 2; mode++) {
        spore_options *o = mode ? nosync() : NULL;
        for (int i = 0; i < n; i++) {
            double t0 = now_s();
            for (int f = 0; f < 1000; f++) {
                char path[300];
                snprintf(path, sizeof path, "%s/f%04d", dst, f);
                int rc = spore_put_bytes(c, data, sizeof data, path, o);
                if (rc != SPORE_OK) die_spore("spore_put_bytes", rc);
            }
            v[i] = now_s() - t0;
        }
        emit(mode ? "files_1000x1k_each_nosync" : "files_1000x1k_each", "s", v, n);
        spore_options_free(o);
    }
    close_ctx(c);
    spore_router_free(r);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "files_bench: %s failed\n", cmd);
}

struct put_job {
    spore_context *c;
    const char *src, *dst;
    volatile int done;
    int rc;
};

static void *put_thread(void *p) {
    struct put_job *j = p;
    spore_options *o = nosync();
    j->rc = spore_put_file(j->c, j->src, j->dst, o);
    spore_options_free(o);
    j->done = 1;
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_ping_during_transfer(const char *big, const char *dst) {
    spore_router *r = new_router();
    spore_context *l = connect_or_die(r, "local", NULL, NULL);
    spore_context *f = connect_or_die(r, "fork", NULL, l);
    int n = runs(3);
    double p50[MAX_RUNS], p99[MAX_RUNS];
    static double lat[200000];
    for (int i = 0; i < n; i++) {
        struct put_job j = {f, big, dst, 0, 0};
        pthread_t t;
        pthread_create(&t, NULL, put_thread, &j);
        usleep(50000);
        int k = 0;
        while (!j.done && k < 200000) {
            double t0 = now_s();
            ping(f);
            lat[k++] = (now_s() - t0) * 1e3;
            usleep(2000);
        }
        pthread_join(t, NULL);
        if (j.rc != SPORE_OK) die_spore("spore_put_file (2 GiB)", j.rc);
        qsort(lat, (size_t)k, sizeof lat[0], cmp_double);
        p50[i] = lat[k / 2];
        p99[i] = lat[(size_t)(k * 0.99)];
        printf("info ping_during_transfer pings_run%d %d\n", i + 1, k);
        unlink(dst);
    }
    emit("ping_during_transfer_p50", "ms", p50, n);
    emit("ping_during_transfer_p99", "ms", p99, n);
    close_ctx(f);
    close_ctx(l);
    spore_router_free(r);
}

static pid_t agent_pid(spore_context *c) {
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "sys.info", NULL, NULL, 0, 10000);
    if (rc != SPORE_OK) die_spore("sys.info", rc);
    const char *p = strstr(spore_result_json(res), "\"pid\":");
    pid_t pid = p ? (pid_t)atoi(p + 6) : -1;
    spore_result_free(res);
    return pid;
}

static void bench_memory(const char *big, const char *dst) {
    spore_router *r = new_router();
    spore_context *l = connect_or_die(r, "local", NULL, NULL);
    spore_context *f1 = connect_or_die(r, "fork", NULL, l);
    spore_context *f2 = connect_or_die(r, "fork", NULL, f1);
    pid_t pids[4] = {getpid(), agent_pid(l), agent_pid(f1), agent_pid(f2)};
    int n = runs(3);
    double v[MAX_RUNS];
    for (int i = 0; i < n; i++) {
        long base[4], peak[4];
        for (int k = 0; k < 4; k++) base[k] = peak[k] = vmrss_kib(pids[k]);
        struct put_job j = {f2, big, dst, 0, 0};
        pthread_t t;
        pthread_create(&t, NULL, put_thread, &j);
        while (!j.done) {
            for (int k = 0; k < 4; k++) {
                long x = vmrss_kib(pids[k]);
                if (x > peak[k]) peak[k] = x;
            }
            usleep(5000);
        }
        pthread_join(t, NULL);
        if (j.rc != SPORE_OK) die_spore("spore_put_file (3 hops)", j.rc);
        long worst = 0;
        for (int k = 0; k < 4; k++) {
            if (peak[k] - base[k] > worst) worst = peak[k] - base[k];
            printf("info peak_mem_per_hop run%d_%s_kib +%ld\n", i + 1, k == 0 ? "master" : k == 1 ? "agent1" : k == 2 ? "agent2" : "agent3",
                   peak[k] - base[k]);
        }
        v[i] = (double)worst / 1024.0;
        unlink(dst);
    }
    emit("peak_mem_per_hop", "MiB", v, n);
    close_ctx(f2);
    close_ctx(f1);
    close_ctx(l);
    spore_router_free(r);
}

/* ------------------------------------------------------------------ ssh */

static int run_argv(char **argv, const char *stdin_path) {
    pid_t pid = fork();
    if (pid == 0) {
        if (stdin_path) {
            int fd = open(stdin_path, O_RDONLY);
            dup2(fd, 0);
        }
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static spore_context *ssh_context(spore_router *r, const char *backend) {
    spore_options *o = bench_ssh_options(backend);
    spore_context *c = connect_or_die(r, "ssh", o, NULL);
    spore_options_free(o);
    return c;
}

static void bench_ssh(const char *src, const char *dst) {
    spore_router *r = new_router();
    spore_context *oc = ssh_context(r, "openssh");
    spore_context *c = ssh_context(r, "libssh2");
    spore_options *ns = nosync();
    int n = runs(5);
    double v[MAX_RUNS], vo[MAX_RUNS], scp[MAX_RUNS], cat[MAX_RUNS];
    char port[16], login[256], kh[600], target[512], cmd[600];
    snprintf(port, sizeof port, "%s", g_port);
    snprintf(login, sizeof login, "%s@127.0.0.1", g_user);
    snprintf(kh, sizeof kh, "UserKnownHostsFile=%s", g_known);
    snprintf(target, sizeof target, "%s@127.0.0.1:%s", g_user, dst);
    snprintf(cmd, sizeof cmd, "cat > %s", dst);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        int rc = spore_put_file(c, src, dst, ns);
        if (rc != SPORE_OK) die_spore("spore_put_file over ssh", rc);
        v[i] = mbps(g_size, now_s() - t0);
        unlink(dst);
        t0 = now_s();
        rc = spore_put_file(oc, src, dst, ns);
        if (rc != SPORE_OK) die_spore("spore_put_file over ssh (openssh)", rc);
        vo[i] = mbps(g_size, now_s() - t0);
        unlink(dst);

        char *sargv[] = {"scp", "-q", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", kh, "-o", "IdentityAgent=none",
                         "-i", (char *)g_key, "-P", port, (char *)src, target, NULL};
        t0 = now_s();
        if (run_argv(sargv, NULL) != 0) { fprintf(stderr, "files_bench: scp failed\n"); exit(1); }
        scp[i] = mbps(g_size, now_s() - t0);
        unlink(dst);

        char *cargv[] = {"ssh", "-q", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", kh, "-o", "IdentityAgent=none",
                         "-i", (char *)g_key, "-p", port, login, cmd, NULL};
        t0 = now_s();
        if (run_argv(cargv, src) != 0) { fprintf(stderr, "files_bench: ssh cat failed\n"); exit(1); }
        cat[i] = mbps(g_size, now_s() - t0);
        unlink(dst);
    }
    emit("put_ssh_1gib", "MB/s", v, n);
    emit("put_ssh_openssh_1gib", "MB/s", vo, n);
    emit("floor_scp_1gib", "MB/s", scp, n);
    emit("floor_ssh_cat_1gib", "MB/s", cat, n);
    spore_options_free(ns);
    close_ctx(oc);
    close_ctx(c);
    spore_router_free(r);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    g_size = env_int("BENCH_QUICK", 0) ? 64LL << 20 : 1LL << 30;
    const char *src = "/dev/shm/spore-bench-src", *big = "/dev/shm/spore-bench-big", *dst = "/dev/shm/spore-bench-dst";
    make_source(src, g_size);
    int all = strcmp(what, "all") == 0;
    if (all || !strcmp(what, "local")) {
        bench_local(src, dst);
        bench_pipe(src, dst);
        bench_small_files();
        make_source(big, 2 * g_size);
        bench_ping_during_transfer(big, dst);
        bench_memory(big, dst);
        unlink(big);
    }
    if ((all || !strcmp(what, "ssh")) && bench_ssh_env()) {
        /* the ssh account writes its copies in /dev/shm too */
        bench_ssh(src, "/dev/shm/spore-bench-ssh-dst");
    } else if (all || !strcmp(what, "ssh")) {
        printf("info put_ssh_1gib skipped no_BENCH_SSH_env\n");
    }
    unlink(src);
    unlink(dst);
    return 0;
}
