/* File transfers (spore_put_file, spore_put_bytes, spore_get_file,
 * spore_get_bytes): content, metadata and atomic replacement through one
 * and three hops; every error path leaves nothing behind; ENOSPC on a real
 * small tmpfs; a source that grows or shrinks while it is sent; a killed
 * agent in mid-transfer; calls answered during a large transfer; bounded
 * memory in the master and every agent during 1 GiB through three hops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "harness_env.h"
#include "helpers.h"

static char *g_dir;        /* a private directory for every file of this program */
static char *g_small_fs;   /* a 1 MiB tmpfs (NULL when it could not be mounted) */

/* Bytes with a pattern that changes everywhere, so misplaced chunks show. */
static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
    return p;
}

static char *path_in(const char *dir, const char *name) {
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void assert_same_file(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    unsigned char *pa = read_all(a, &la), *pb = read_all(b, &lb);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    free(pa);
    free(pb);
}

/* Only the named files (space separated, sorted) are in dir: no temporary
 * file was left. */
static void assert_dir_holds(const char *dir, const char *expected) {
    char *names = th_list_dir_prefix(dir, "");
    char got[4096] = "";
    for (char *tok = strtok(names, "\n"); tok; tok = strtok(NULL, "\n")) {
        if (!strcmp(tok, ".") || !strcmp(tok, "..")) continue;
        if (*got) strncat(got, " ", sizeof got - strlen(got) - 1);
        strncat(got, tok, sizeof got - strlen(got) - 1);
    }
    free(names);
    if (strcmp(got, expected) != 0) fail_msg("%s holds [%s], expected [%s]", dir, got, expected);
}

static void make_file(const char *path, size_t n, unsigned seed, mode_t mode) {
    unsigned char *p = pattern(n, seed);
    assert_int_equal(th_write_file(path, p, n, mode), 0);
    free(p);
}

static spore_options *opts_with(const char *key, long long v) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, key, v));
    return o;
}

/* ------------------------------------------------------------ round trips */

static void round_trip(spore_context *ctx, const char *tag, size_t n) {
    char name[64];
    snprintf(name, sizeof name, "%s-src", tag);
    char *src = path_in(g_dir, name);
    snprintf(name, sizeof name, "%s-dst", tag);
    char *dst = path_in(g_dir, name);
    snprintf(name, sizeof name, "%s-back", tag);
    char *back = path_in(g_dir, name);
    make_file(src, n, (unsigned)n, 0640);
    struct timeval tv[2] = {{1000000000, 0}, {1234567890, 0}};
    assert_int_equal(utimes(src, tv), 0);

    TH_OK(spore_put_file(ctx, src, dst, NULL));
    assert_same_file(src, dst);
    struct stat st;
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_mtim.tv_sec, 1234567890);

    TH_OK(spore_get_file(ctx, dst, back, NULL));
    assert_same_file(src, back);
    assert_int_equal(stat(back, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_mtim.tv_sec, 1234567890);

    /* bytes in memory, both ways */
    unsigned char *p = pattern(n, 7);
    TH_OK(spore_put_bytes(ctx, p, n, dst, NULL));
    spore_result *res = NULL;
    TH_OK(spore_get_bytes(&res, ctx, dst, NULL));
    size_t got = 0;
    const void *data = spore_result_bytes(res, &got);
    assert_int_equal(got, n);
    if (n) assert_memory_equal(data, p, n);
    assert_int_equal(th_json_int(spore_result_json(res), "size", -1), (long long)n);
    assert_int_equal(th_json_int(spore_result_json(res), "mode", -1), 0640); /* the replaced file's mode is kept */
    spore_result_free(res);
    free(p);
    unlink(src);
    unlink(dst);
    unlink(back);
    free(src);
    free(dst);
    free(back);
}

static void test_round_trips_through_one_and_three_hops(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f1 = th_connect(r, "fork", l);
    spore_context *f2 = th_connect(r, "fork", f1);
    /* empty, inline, exactly the inline limit, just above it, several chunks */
    size_t sizes[] = {0, 1, 4096, 128 * 1024, 128 * 1024 + 1, 3 * 1024 * 1024 + 17};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        round_trip(l, "one", sizes[i]);
        round_trip(f2, "three", sizes[i]);
    }
    assert_dir_holds(g_dir, "");
    spore_context_free(f2);
    spore_context_free(f1);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* A small window still moves a file larger than it, in order. */
static void test_small_window_and_options(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    char *src = path_in(g_dir, "w-src"), *dst = path_in(g_dir, "w-dst");
    make_file(src, 5 * 1024 * 1024 + 3, 11, 0600);
    spore_options *o = opts_with("window", 65536);
    TH_OK(spore_options_set_int(o, "mode", 0604));
    TH_OK(spore_options_set_bool(o, "preserve_mtime", 0));
    TH_OK(spore_options_set_bool(o, "sync", 0));
    TH_OK(spore_put_file(l, src, dst, o));
    assert_same_file(src, dst);
    struct stat st;
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0604);
    assert_true(st.st_mtim.tv_sec > 1600000000); /* now, not the source's */
    spore_options_free(o);

    /* the owner: kept with preserve_owner (this test runs as root) */
    if (geteuid() == 0) {
        assert_int_equal(chown(src, 65534, 65534), 0);
        o = NULL;
        TH_OK(spore_options_new(&o));
        TH_OK(spore_options_set_bool(o, "preserve_owner", 1));
        TH_OK(spore_put_file(l, src, dst, o));
        assert_int_equal(stat(dst, &st), 0);
        assert_int_equal(st.st_uid, 65534);
        assert_int_equal(st.st_gid, 65534);
        spore_options_free(o);
    }

    /* bad options */
    o = opts_with("window", 10);
    TH_ERR(spore_put_file(l, src, dst, o), SPORE_EINVAL);
    spore_options_free(o);
    o = opts_with("no_such_option", 1);
    TH_ERR(spore_put_file(l, src, dst, o), SPORE_EINVAL);
    spore_options_free(o);
    /* get_bytes refuses more than max_size */
    o = opts_with("max_size", 1024);
    spore_result *res = NULL;
    TH_ERR(spore_get_bytes(&res, l, src, o), SPORE_ETOOBIG);
    assert_null(res);
    spore_options_free(o);
    unlink(src);
    unlink(dst);
    free(src);
    free(dst);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* ----------------------------------------------------------------- errors */

static void test_missing_paths_and_directories(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    char *src = path_in(g_dir, "e-src"), *missing_dir = path_in(g_dir, "no/such/dir/x");
    make_file(src, 300000, 3, 0644);

    TH_ERR(spore_put_file(l, "/nonexistent/spore-src", "/tmp/x", NULL), SPORE_ENOENT);
    assert_non_null(strstr(spore_last_error()->message, "/nonexistent/spore-src"));
    assert_string_equal(spore_last_error()->context, spore_context_name(l));
    TH_ERR(spore_put_file(l, src, missing_dir, NULL), SPORE_ENOENT);
    assert_non_null(strstr(spore_last_error()->message, "no/such/dir"));
    TH_ERR(spore_put_bytes(l, "x", 1, missing_dir, NULL), SPORE_ENOENT);
    TH_ERR(spore_get_file(l, "/nonexistent/spore-src", src, NULL), SPORE_ENOENT);
    TH_ERR(spore_get_file(l, src, missing_dir, NULL), SPORE_ENOENT);
    spore_result *res = NULL;
    TH_ERR(spore_get_bytes(&res, l, "/nonexistent/spore-src", NULL), SPORE_ENOENT);
    /* directories are neither sources nor destinations */
    TH_ERR(spore_put_file(l, g_dir, "/tmp/x", NULL), SPORE_EINVAL);
    TH_ERR(spore_put_file(l, src, g_dir, NULL), SPORE_EINVAL);
    TH_ERR(spore_get_file(l, g_dir, "/tmp/spore-never", NULL), SPORE_EINVAL);
    TH_ERR(spore_put_file(NULL, src, "/tmp/x", NULL), SPORE_EINVAL);
    assert_dir_holds(g_dir, "e-src");
    unlink(src);
    free(src);
    free(missing_dir);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

static void test_permission_denied(void **state) {
    (void)state;
    if (geteuid() != 0 || !th_harness()) {
        print_message("skipped: needs root and the test harness (an account to become)\n");
        skip();
    }
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "username", "spore-test-target"));
    spore_context *u = NULL;
    TH_OK(spore_connect(&u, r, "sudo", o, NULL));
    spore_options_free(o);
    char *src = path_in(g_dir, "p-src");
    make_file(src, 200000, 5, 0644);
    TH_ERR(spore_put_file(u, src, "/root/spore-test-denied", NULL), SPORE_EACCES);
    assert_string_equal(spore_last_error()->remote_type, "PermissionError");
    TH_ERR(spore_get_file(u, "/etc/shadow", src, NULL), SPORE_EACCES);
    assert_false(th_file_exists("/root/spore-test-denied"));
    assert_dir_holds(g_dir, "p-src");
    unlink(src);
    free(src);
    spore_context_free(u);
    spore_router_free(r);
    th_end(&b);
}

static void test_no_space_left(void **state) {
    (void)state;
    if (!g_small_fs) {
        print_message("skipped: no 1 MiB tmpfs (needs root and a mount namespace)\n");
        skip();
    }
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    char *src = path_in(g_dir, "n-src"), *dst = path_in(g_small_fs, "big"), *small = path_in(g_small_fs, "small");
    make_file(src, 4 * 1024 * 1024, 9, 0644);
    TH_ERR(spore_put_file(f, src, dst, NULL), SPORE_ENOSPC);
    assert_non_null(strstr(spore_last_error()->message, "big"));
    assert_dir_holds(g_small_fs, "");
    /* the filesystem is usable again: nothing was left on it */
    TH_OK(spore_put_bytes(f, "fits", 4, small, NULL));
    assert_dir_holds(g_small_fs, "small");
    unlink(small);
    /* a get onto the full filesystem, from the other side */
    TH_ERR(spore_get_file(f, src, dst, NULL), SPORE_ENOSPC);
    assert_dir_holds(g_small_fs, "");
    unlink(src);
    free(src);
    free(dst);
    free(small);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* A file that keeps changing while it is sent. */
struct changer {
    const char *path;
    int grow;  /* 1: append, 0: truncate */
    atomic_int stop;
    atomic_int ticks;
};

static void *change_file(void *p) {
    struct changer *c = p;
    int fd = open(c->path, O_WRONLY | O_APPEND);
    if (fd < 0) return NULL;
    struct stat st;
    while (!atomic_load(&c->stop)) {
        if (c->grow) {
            if (write(fd, "grow", 4) != 4) break;
        } else if (fstat(fd, &st) == 0 && st.st_size > 65536) {
            if (ftruncate(fd, st.st_size - 65536) != 0) break;
        }
        atomic_fetch_add(&c->ticks, 1);
        usleep(200);
    }
    close(fd);
    return NULL;
}

static void changing_source(spore_context *ctx, int grow, int put) {
    char *src = path_in(g_dir, grow ? "c-grows" : "c-shrinks"), *dst = path_in(g_dir, "c-dst");
    make_file(src, 64 * 1024 * 1024, 13, 0644);
    struct changer c = {src, grow, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, change_file, &c), 0);
    while (atomic_load(&c.ticks) < 2) usleep(100);
    spore_options *o = opts_with("window", 256 * 1024); /* slow enough for the changes to land */
    int rc = put ? spore_put_file(ctx, src, dst, o) : spore_get_file(ctx, src, dst, o);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    spore_options_free(o);
    if (rc != SPORE_ECHANGED) fail_msg("%s of a file that %s: rc %d (%s)", put ? "put" : "get",
                                       grow ? "grows" : "shrinks", rc, msg);
    assert_non_null(strstr(msg, grow ? "grew" : "shrank"));
    assert_false(th_file_exists(dst));
    unlink(src);
    assert_dir_holds(g_dir, "");
    free(src);
    free(dst);
}

static void test_source_changes_during_transfer(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    changing_source(l, 1, 1);
    changing_source(l, 0, 1);
    changing_source(l, 1, 0);
    changing_source(l, 0, 0);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* -------------------------------------------------- disconnects, fairness */

struct putter {
    spore_context *ctx;
    const char *src, *dst;
    int rc;
    double took;
};

static void *put_in_thread(void *p) {
    struct putter *a = p;
    double t0 = th_now();
    spore_options *o = opts_with("window", 256 * 1024);
    TH_OK(spore_options_set_bool(o, "sync", 0));
    a->rc = spore_put_file(a->ctx, a->src, a->dst, o);
    spore_options_free(o);
    a->took = th_now() - t0;
    return NULL;
}

static void test_agent_killed_mid_transfer(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    char *src = path_in(g_dir, "k-src"), *dst = path_in(g_dir, "k-dst");
    /* sparse: reads cost no disk */
    int fd = open(src, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8LL << 30), 0);
    close(fd);
    pid_t pid = th_agent_pid(f);
    struct putter a = {f, src, dst, 1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_in_thread, &a), 0);
    th_sleep_ms(300);
    double t0 = th_now();
    kill(pid, SIGKILL);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, SPORE_EDISCONNECTED);
    assert_true(th_now() - t0 < 3.0 * th_time_factor());
    unlink(src);
    /* the agent died with its temporary file open: it is the only thing left */
    char *names = th_list_dir_prefix(g_dir, ".k-dst.spore-");
    if (*names) {
        names[strcspn(names, "\n")] = '\0';
        char *tmp = path_in(g_dir, names);
        unlink(tmp);
        free(tmp);
    }
    free(names);
    assert_dir_holds(g_dir, "");
    free(src);
    free(dst);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* Calls are answered promptly while a large transfer fills the stream. */
static void test_calls_during_a_transfer(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    char *src = path_in(g_dir, "q-src"), *dst = "/dev/shm/spore-test-files-q";
    int fd = open(src, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_int_equal(ftruncate(fd, 1LL << 30), 0);
    close(fd);
    struct putter a = {f, src, dst, 1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_in_thread, &a), 0);
    th_sleep_ms(100);
    double worst = 0;
    int pings = 0;
    while (pings < 200) {
        double t0 = th_now();
        spore_result *res = NULL;
        TH_OK(spore_call(&res, f, "sys.ping", NULL, NULL, 0, 10000));
        spore_result_free(res);
        double d = th_now() - t0;
        if (d > worst) worst = d;
        pings++;
        th_sleep_ms(2);
    }
    pthread_join(t, NULL);
    TH_OK(a.rc);
    print_message("1 GiB through two hops in %.2f s; worst of %d pings during it: %.2f ms\n", a.took, pings,
                  worst * 1e3);
    assert_true(worst < 0.1 * th_time_factor());
    unlink(src);
    unlink(dst);
    free(src);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------------------ memory */

struct sampler {
    pid_t pids[4];
    long base[4], peak[4];
    atomic_int stop;
};

static void *sample_rss(void *p) {
    struct sampler *s = p;
    while (!atomic_load(&s->stop)) {
        for (int i = 0; i < 4; i++) {
            long k = th_rss_kib(s->pids[i]);
            if (k > s->peak[i]) s->peak[i] = k;
        }
        usleep(5000);
    }
    return NULL;
}

static void test_memory_bounded_through_three_hops(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f1 = th_connect(r, "fork", l);
    spore_context *f2 = th_connect(r, "fork", f1);
    char *src = path_in(g_dir, "m-src"), *dst = "/dev/shm/spore-test-files-m", *back = path_in(g_dir, "m-back");
    int fd = open(src, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_int_equal(ftruncate(fd, 1LL << 30), 0);
    close(fd);
    /* warm up: the first transfer allocates what every later one reuses */
    char *warm = path_in(g_dir, "m-warm");
    make_file(warm, 8 * 1024 * 1024, 1, 0644);
    TH_OK(spore_put_file(f2, warm, dst, NULL));
    TH_OK(spore_get_file(f2, dst, back, NULL));
    unlink(warm);
    free(warm);
    struct sampler s = {{getpid(), th_agent_pid(l), th_agent_pid(f1), th_agent_pid(f2)}, {0}, {0}, 0};
    for (int i = 0; i < 4; i++) s.base[i] = s.peak[i] = th_rss_kib(s.pids[i]);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sample_rss, &s), 0);
    spore_options *o = opts_with("window", 4 * 1024 * 1024);
    TH_OK(spore_options_set_bool(o, "sync", 0));
    double t0 = th_now();
    TH_OK(spore_put_file(f2, src, dst, o));
    double put_s = th_now() - t0;
    t0 = th_now();
    TH_OK(spore_get_file(f2, dst, back, o));
    double get_s = th_now() - t0;
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    spore_options_free(o);
    const char *who[4] = {"master", "agent 1", "agent 2", "agent 3"};
    /* A sanitizer's allocator keeps freed memory (ASan's quarantine) or
     * shadows it: this process's own RSS then says nothing. The agents are
     * never sanitized. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    const int first_checked = 1;
#else
    const int first_checked = 0;
#endif
    for (int i = 0; i < 4; i++) {
        long grew = s.peak[i] - s.base[i];
        print_message("%s: RSS %ld KiB, peak %ld KiB during 1 GiB put+get (+%ld KiB)%s\n", who[i], s.base[i],
                      s.peak[i], grew, i < first_checked ? " (not checked under a sanitizer)" : "");
        if (i >= first_checked) assert_true(grew <= 16 * 1024);
    }
    print_message("1 GiB through three hops: put %.0f MB/s, get %.0f MB/s\n", 1073.741824 / put_s,
                  1073.741824 / get_s);
    struct stat st;
    assert_int_equal(stat(back, &st), 0);
    assert_int_equal(st.st_size, 1LL << 30);
    unlink(src);
    unlink(dst);
    unlink(back);
    free(src);
    free(back);
    spore_context_free(f2);
    spore_context_free(f1);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------------------ trees */

static void make_tree(const char *root) {
    char *p;
    assert_int_equal(mkdir(root, 0750), 0);
    p = path_in(root, "a");
    assert_int_equal(mkdir(p, 0755), 0);
    free(p);
    p = path_in(root, "a/b");
    assert_int_equal(mkdir(p, 0700), 0);
    free(p);
    for (int i = 0; i < 50; i++) {
        char name[64];
        snprintf(name, sizeof name, "a/b/small-%02d", i);
        p = path_in(root, name);
        make_file(p, (size_t)(i * 97), (unsigned)i, 0640);
        free(p);
    }
    p = path_in(root, "a/large");
    make_file(p, 2 * 1024 * 1024 + 1, 77, 0600);
    free(p);
    p = path_in(root, "link");
    assert_int_equal(symlink("a/b/small-01", p), 0);
    free(p);
    p = path_in(root, "ro");
    assert_int_equal(mkdir(p, 0755), 0);
    char *f = path_in(root, "ro/inside");
    make_file(f, 10, 1, 0444);
    free(f);
    assert_int_equal(chmod(p, 0555), 0);
    free(p);
}

static void assert_same_tree(const char *a, const char *b) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "diff -r --no-dereference '%s' '%s'", a, b);
    assert_int_equal(system(cmd), 0);
    /* modes, which diff does not compare */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && find . -printf '%%p %%m %%y\\n' | sort > /tmp/spore-tree-a.$$ && cd '%s' && "
             "find . -printf '%%p %%m %%y\\n' | sort | cmp -s - /tmp/spore-tree-a.$$; rc=$?; rm -f /tmp/spore-tree-a.$$; exit $rc",
             a, b);
    assert_int_equal(system(cmd), 0);
}

static void test_trees(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    char *src = path_in(g_dir, "tree-src"), *dst = path_in(g_dir, "tree-dst"), *back = path_in(g_dir, "tree-back");
    make_tree(src);
    TH_OK(spore_put_tree(f, src, dst, NULL));
    assert_same_tree(src, dst);
    TH_OK(spore_get_tree(f, dst, back, NULL));
    assert_same_tree(src, back);
    /* again onto the existing copies: files replaced, nothing lost */
    TH_OK(spore_put_tree(f, src, dst, NULL));
    assert_same_tree(src, dst);

    /* errors */
    char *missing_parent = path_in(g_dir, "no/such/parent");
    TH_ERR(spore_put_tree(f, "/nonexistent/spore-tree", dst, NULL), SPORE_ENOENT);
    TH_ERR(spore_put_tree(f, src, missing_parent, NULL), SPORE_ENOENT);
    TH_ERR(spore_get_tree(f, "/nonexistent/spore-tree", back, NULL), SPORE_ENOENT);
    char *file = path_in(src, "a/large");
    TH_ERR(spore_get_tree(f, file, back, NULL), SPORE_EINVAL);
    spore_options *o = opts_with("mode", 0644);
    TH_ERR(spore_put_tree(f, src, dst, o), SPORE_EINVAL);
    spore_options_free(o);
    free(file);
    free(missing_parent);

    /* 1,000 small files in one tree */
    char *many = path_in(g_dir, "many"), *many_dst = path_in(g_dir, "many-dst");
    assert_int_equal(mkdir(many, 0755), 0);
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%04d", i);
        char *p = path_in(many, name);
        make_file(p, 1024, (unsigned)i, 0644);
        free(p);
    }
    double t0 = th_now();
    TH_OK(spore_put_tree(f, many, many_dst, NULL));
    print_message("put_tree of 1,000 files of 1 KiB through two hops: %.3f s\n", th_now() - t0);
    assert_same_tree(many, many_dst);

    th_rm_rf(many);
    th_rm_rf(many_dst);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' '%s' '%s'", src, dst, back);
    assert_int_equal(system(cmd), 0);
    th_rm_rf(src);
    th_rm_rf(dst);
    th_rm_rf(back);
    assert_dir_holds(g_dir, "");
    free(many);
    free(many_dst);
    free(src);
    free(dst);
    free(back);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    /* A private mount namespace for a 1 MiB tmpfs: only while this process
     * is single-threaded, before any router exists. */
    char tmpl[] = "/tmp/spore-test-files-XXXXXX";
    g_dir = mkdtemp(tmpl);
    if (!g_dir) return 1;
    chmod(g_dir, 0755); /* the sudo test's account reads from it */
    static char small_tmpl[] = "/tmp/spore-test-smallfs-XXXXXX";
    char *small = mkdtemp(small_tmpl);
    if (small && geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0 &&
        mount("spore-test-small", small, "tmpfs", 0, "size=1m,mode=0755") == 0)
        g_small_fs = small;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips_through_one_and_three_hops),
        cmocka_unit_test(test_small_window_and_options),
        cmocka_unit_test(test_missing_paths_and_directories),
        cmocka_unit_test(test_permission_denied),
        cmocka_unit_test(test_no_space_left),
        cmocka_unit_test(test_source_changes_during_transfer),
        cmocka_unit_test(test_agent_killed_mid_transfer),
        cmocka_unit_test(test_calls_during_a_transfer),
        cmocka_unit_test(test_trees),
        cmocka_unit_test(test_memory_bounded_through_three_hops),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (g_small_fs) umount2(g_small_fs, MNT_DETACH);
    if (small) rmdir(small);
    th_rm_rf(g_dir);
    return rc;
}
