/* Shared routers (spore_router_listen, spore_router_attach,
 * spore_context_find): a router listens on a Unix socket and other routers
 * attach to it, in this process and in separate worker processes (this
 * executable run again with "--worker"). The attached side opens contexts
 * through the listener (shared with "reuse"), finds the listener's contexts
 * by name, calls them, moves files and runs process streams in them; an
 * attached process that dies leaves the listener and its contexts intact and
 * what it started is stopped, even a start still on its way to the agent; a
 * listener that goes away fails the attached side cleanly; bad paths, unsafe
 * directories, stale sockets, hostile bytes on the socket. */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cmocka.h>
#include <pthread.h>

#include "harness_env.h"
#include "helpers.h"

extern char **environ;

static char *g_dir;   /* 0700 directory of the sockets */
static char g_sock[512];

static int setup(void **state) {
    (void)state;
    g_dir = th_mkdtemp("shared");
    snprintf(g_sock, sizeof g_sock, "%s/sock/router.sock", g_dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    th_rm_rf(g_dir);
    free(g_dir);
    return 0;
}

static spore_router *attach(const char *path) {
    spore_router *r = NULL;
    TH_OK(spore_router_attach(&r, path, NULL));
    assert_non_null(r);
    return r;
}

static spore_context *connect_named(spore_router *r, const char *method, const char *name, int reuse,
                                    spore_context *via) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    if (name) TH_OK(spore_options_set_str(o, "name", name));
    if (reuse >= 0) TH_OK(spore_options_set_bool(o, "reuse", reuse));
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, method, o, via));
    spore_options_free(o);
    return c;
}

/* ------------------------------------------------------------ workers */

/* A worker: another process that attaches. Returns its exit status. */
static int worker_main(int argc, char **argv) {
    if (argc < 4) return 64;
    const char *mode = argv[2], *path = argv[3];
    spore_options *o = NULL;
    spore_options_new(&o);
    spore_options_set_int(o, "log_level", SPORE_LOG_INFO);
    spore_router *r = NULL;
    int rc = spore_router_attach(&r, path, o);
    spore_options_free(o);
    if (strcmp(mode, "other-user") == 0) {
        /* Run as another user: the attach must be refused as EACCES. */
        if (rc == SPORE_EACCES) {
            printf("%s\n", spore_last_error()->message);
            return 0;
        }
        fprintf(stderr, "worker: attach as another user gave %d: %s\n", rc, rc ? spore_last_error()->message : "");
        spore_router_free(r);
        return 30;
    }
    if (rc != SPORE_OK) {
        fprintf(stderr, "worker: attach: %s\n", spore_last_error()->message);
        return 10;
    }
    spore_context *web = NULL;
    if (spore_context_find(&web, r, "web") != SPORE_OK) {
        fprintf(stderr, "worker: find web: %s\n", spore_last_error()->message);
        return 11;
    }
    if (strcmp(mode, "other-user") == 0) return 0;  /* not reached: attach must fail */
    if (strcmp(mode, "use") == 0) {
        /* A call, a file both ways, a command whose output records come to
         * us, a context of our own through the shared one. */
        spore_result *res = NULL;
        if (spore_call(&res, web, "sys.ping", NULL, NULL, 0, 30000) != SPORE_OK) return 12;
        spore_result_free(res);
        const char *file = argv[4];
        if (spore_put_bytes(web, "from the worker\n", 16, file, NULL) != SPORE_OK) {
            fprintf(stderr, "worker: put: %s\n", spore_last_error()->message);
            return 13;
        }
        if (spore_get_bytes(&res, web, file, NULL) != SPORE_OK) return 14;
        size_t len = 0;
        const void *data = spore_result_bytes(res, &len);
        int same = len == 16 && memcmp(data, "from the worker\n", 16) == 0;
        spore_result_free(res);
        if (!same) return 15;
        if (spore_call(&res, web, "proc.run", "{\"argv\":[\"echo\",\"worker-line\"],\"stream\":true}", NULL, 0, 30000) !=
            SPORE_OK)
            return 16;
        spore_result_free(res);
        int seen = 0;
        for (int i = 0; i < 50 && !seen; i++) {
            spore_log_record *rec = NULL;
            if (spore_router_next_log(r, &rec, 100) != SPORE_OK) continue;
            seen = strcmp(spore_log_record_message(rec), "worker-line") == 0 &&
                   strcmp(spore_log_record_logger(rec), "stdout") == 0;
            spore_log_record_free(rec);
        }
        if (!seen) return 17;
        spore_context *f = NULL;
        if (spore_connect(&f, r, "fork", NULL, web) != SPORE_OK) {
            fprintf(stderr, "worker: fork: %s\n", spore_last_error()->message);
            return 18;
        }
        printf("%s\n", spore_context_name(f));
        spore_context_free(f);
    } else if (strcmp(mode, "hold") == 0) {
        /* Starts long processes (one per kind of call) and waits to be killed. */
        spore_process *p = NULL;
        if (spore_proc_start(&p, web, "{\"argv\":[\"sleep\",\"4242.17\"]}", NULL) != SPORE_OK) return 20;
        spore_pending *pc = NULL;
        if (spore_call_async(&pc, web, "proc.run", "{\"argv\":[\"sleep\",\"4242.19\"]}", NULL, 0) != SPORE_OK) return 21;
        printf("ready\n");
        fflush(stdout);
        pause();
    } else if (strcmp(mode, "start-late") == 0) {
        /* Its start waits in a stopped agent until it is killed. */
        printf("starting\n");
        fflush(stdout);
        spore_options *so = NULL;
        spore_options_new(&so);
        spore_options_set_int(so, "timeout_ms", -1);
        spore_process *p = NULL;
        spore_proc_start(&p, web, "{\"argv\":[\"sleep\",\"4242.23\"]}", so);
        return 22;
    }
    spore_context_free(web);
    spore_router_free(r);
    return 0;
}

static char *self_exe(void) {
    static char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    return buf;
}

/* Copies a file, keeping it executable. */
static void copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    assert_true(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

/* This test program and the libspore it runs with, copied into a new
 * directory that every user may enter: the build tree may be under a
 * private home (/root). Returns the directory (malloc'd). */
static char *public_copy_of_self(void) {
    char *dir = th_mkdtemp("shared-pub");
    assert_int_equal(chmod(dir, 0755), 0);
    char to[PATH_MAX], lib[PATH_MAX] = "";
    snprintf(to, sizeof to, "%s/capi_test_shared", dir);
    copy_file(self_exe(), to);
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[PATH_MAX + 128];
    while (!lib[0] && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, "/libspore.so")) {
            path[strcspn(path, "\n")] = '\0';
            snprintf(lib, sizeof lib, "%s", path);
        }
    }
    fclose(maps);
    assert_true(lib[0]);
    snprintf(to, sizeof to, "%s/libspore.so.0", dir);
    copy_file(lib, to);
    return dir;
}

/* Starts a worker with its stdout on a pipe; returns its pid. */
/* Starts argv (searched in PATH) with its stdout on a pipe; returns its pid. */
static pid_t spawn_piped(char *const argv[], int *out_fd) {
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    pid_t pid = 0;
    assert_int_equal(posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    *out_fd = p[0];
    return pid;
}

static pid_t start_worker(const char *mode, const char *arg, int *out_fd) {
    char *argv[] = {self_exe(), "--worker", (char *)mode, g_sock, (char *)arg, NULL};
    return spawn_piped(argv, out_fd);
}

static int wait_status(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static size_t read_some(int fd, char *buf, size_t cap, int timeout_ms) {
    size_t n = 0;
    while (n + 1 < cap && th_readable(fd, timeout_ms)) {
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got <= 0) break;
        n += (size_t)got;
        if (memchr(buf, '\n', n)) break;
    }
    buf[n] = '\0';
    return n;
}

/* A listener played by a thread: it answers the first hello with one init
 * frame (flags and JSON given) and closes. */
struct fake_listener {
    int fd;
    unsigned char flags;
    const char *json;
};
static void *fake_listener(void *arg) {
    struct fake_listener *fl = arg;
    int ls = fl->fd;
    int c = accept(ls, NULL, NULL);
    if (c < 0) return NULL;
    unsigned char h[32];
    size_t got = 0;
    while (got < sizeof h) {
        ssize_t n = read(c, h + got, sizeof h - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    size_t len = strlen(fl->json);
    unsigned char f[512] = {0x53, 0x50, 1, fl->flags};
    f[19] = 110; /* init */
    f[27] = (unsigned char)len;
    memcpy(f + 32, fl->json, len);
    if (write(c, f, 32 + len) != (ssize_t)(32 + len)) perror("fake_listener");
    usleep(200000);
    close(c);
    return NULL;
}

/* -------------------------------------------------------------- tests */

static void test_attach_in_process(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *l = th_router(NULL);
    TH_OK(spore_router_listen(l, g_sock));
    struct stat st;
    assert_int_equal(stat(g_sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sock", g_dir);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    spore_router *a = attach(g_sock);
    /* Opened through the listener, shared by default. */
    spore_context *c1 = connect_named(a, "local", "shared", -1, NULL);
    spore_context *c2 = connect_named(a, "local", "shared", -1, NULL);
    assert_int_equal(spore_context_id(c1), spore_context_id(c2));
    spore_context *c3 = connect_named(a, "local", "shared", 0, NULL);
    assert_int_not_equal(spore_context_id(c1), spore_context_id(c3));
    free(th_call(c1, "sys.ping", NULL));
    /* The listener has it and finds it by name. */
    spore_context *lc = NULL;
    TH_OK(spore_context_find(&lc, l, "shared"));
    assert_int_equal(spore_context_id(lc), spore_context_id(c1));
    free(th_call(lc, "sys.ping", NULL));
    /* A fork through the shared context, opened by the attached router. */
    spore_context *f = connect_named(a, "fork", NULL, -1, c1);
    char *info = th_call(f, "sys.info", NULL);
    TH_CONTAINS(info, "\"pid\"");
    free(info);
    TH_CONTAINS(spore_context_name(f), "shared/");
    /* Files and process streams from the attached side. */
    char remote[600];
    snprintf(remote, sizeof remote, "%s/through-attached", g_dir);
    size_t big = 3 * 1024 * 1024 + 7;
    unsigned char *data = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (unsigned char)(i * 7 + (i >> 11));
    TH_OK(spore_put_bytes(f, data, big, remote, NULL));
    spore_result *res = NULL;
    TH_OK(spore_get_bytes(&res, c1, remote, NULL));
    size_t len = 0;
    const void *got = spore_result_bytes(res, &len);
    assert_int_equal(len, big);
    assert_memory_equal(got, data, big);
    spore_result_free(res);
    free(data);
    spore_process *p = NULL;
    TH_OK(spore_proc_start(&p, f, "{\"argv\":[\"cat\"]}", NULL));
    TH_OK(spore_process_write(p, "ping\n", 5, 10000));
    TH_OK(spore_process_close_stdin(p));
    char buf[64];
    int n = spore_process_read(p, 1, buf, sizeof buf, 10000);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "ping\n", 5);
    int code = -1, sig = -1;
    TH_OK(spore_process_wait(p, &code, &sig, 10000));
    assert_int_equal(code, 0);
    spore_process_free(p);
    /* Unknown names. */
    spore_context *none = NULL;
    TH_ERR(spore_context_find(&none, a, "no-such-context"), SPORE_ENOENT);
    TH_ERR(spore_context_find(&none, l, "no-such-context"), SPORE_ENOENT);
    assert_null(none);

    /* The attached router goes; the contexts stay with the listener. */
    spore_context_free(f);
    spore_context_free(c1);
    spore_context_free(c2);
    spore_context_free(c3);
    spore_router_free(a);
    free(th_call(lc, "sys.ping", NULL));
    assert_true(spore_context_alive(lc));
    spore_context_free(lc);
    spore_router_free(l);
    assert_int_equal(access(g_sock, F_OK), -1);  /* the socket file went with it */
    th_end(&b);
}

static void test_second_process(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *l = th_router(NULL);
    spore_context *web = connect_named(l, "local", "web", -1, NULL);
    TH_OK(spore_router_listen(l, g_sock));
    char file[600];
    snprintf(file, sizeof file, "%s/worker-file", g_dir);

    /* Two workers one after the other, each a separate process. */
    for (int round = 0; round < 2; round++) {
        int out = -1;
        pid_t w = start_worker("use", file, &out);
        char line[256];
        read_some(out, line, sizeof line, 60000);
        int st = wait_status(w);
        close(out);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("worker %d failed: status %d", round, st);
        TH_CONTAINS(line, "web/fork.");
    }
    char *content = NULL;
    size_t len = 0;
    FILE *fp = fopen(file, "rb");
    assert_non_null(fp);
    content = calloc(1, 64);
    len = fread(content, 1, 63, fp);
    fclose(fp);
    assert_int_equal(len, 16);
    assert_string_equal(content, "from the worker\n");
    free(content);
    free(th_call(web, "sys.ping", NULL));

    /* A worker killed while its processes run: they are stopped, the
     * listener and its context carry on. */
    int out = -1;
    pid_t w = start_worker("hold", NULL, &out);
    char line[64];
    read_some(out, line, sizeof line, 60000);
    TH_CONTAINS(line, "ready");
    double end = th_now() + 10;
    while (th_count_processes_with("sleep 4242.1") < 2 && th_now() < end) th_sleep_ms(20);
    assert_int_equal(th_count_processes_with("sleep 4242.17"), 1);
    assert_int_equal(th_count_processes_with("sleep 4242.19"), 1);
    kill(w, SIGKILL);
    wait_status(w);
    close(out);
    end = th_now() + 10 * th_time_factor();
    while (th_count_processes_with("sleep 4242.1") > 0 && th_now() < end) th_sleep_ms(20);
    assert_int_equal(th_count_processes_with("sleep 4242.1"), 0);
    assert_true(spore_context_alive(web));
    free(th_call(web, "sys.ping", NULL));

    /* A worker killed while its start is still on its way: the agent is
     * stopped, so the call and then the listener's news that the worker
     * went away wait unread. When it runs again, the process must not be
     * left running (it is not started, or killed as it starts). */
    pid_t agent = th_agent_pid(web);
    assert_int_equal(kill(agent, SIGSTOP), 0);
    w = start_worker("start-late", NULL, &out);
    read_some(out, line, sizeof line, 60000);
    TH_CONTAINS(line, "starting");
    th_sleep_ms(300);
    kill(w, SIGKILL);
    wait_status(w);
    close(out);
    th_sleep_ms(100);
    assert_int_equal(kill(agent, SIGCONT), 0);
    free(th_call(web, "sys.ping", NULL));
    end = th_now() + 10 * th_time_factor();
    while (th_count_processes_with("sleep 4242.23") > 0 && th_now() < end) th_sleep_ms(20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(th_count_processes_with("sleep 4242.23"), 0);
        th_sleep_ms(25);
    }
    /* And a new worker can still attach. */
    w = start_worker("use", file, &out);
    read_some(out, line, sizeof line, 60000);
    int st = wait_status(w);
    close(out);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    spore_context_free(web);
    spore_router_free(l);
    th_end(&b);
}

/* Another user cannot attach: the 0700 directory keeps it from the socket,
 * and where a mistake opened both, the listener refuses it by its uid (and
 * the attaching side refuses a listener of another uid). */
static void test_other_users_are_refused(void **state) {
    (void)state;
    if (geteuid() != 0 || !th_harness()) {
        print_message("skipped: needs root and the test harness (an account to run as)\n");
        skip();
    }
    th_baseline b = th_begin();
    char *pub = public_copy_of_self();
    char exe[PATH_MAX], libpath[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/capi_test_shared", pub);
    snprintf(libpath, sizeof libpath, "LD_LIBRARY_PATH=%s", pub);
    spore_router *l = th_router(NULL);
    TH_OK(spore_router_listen(l, g_sock));
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sock", g_dir);
    for (int opened = 0; opened < 2; opened++) {
        if (opened) {
            /* the mistake: everything open to everyone */
            assert_int_equal(chmod(g_dir, 0755), 0);
            assert_int_equal(chmod(dir, 0755), 0);
            assert_int_equal(chmod(g_sock, 0666), 0);
        }
        char *argv[] = {"runuser", "-u", "spore-test-target", "--", "env", libpath, exe, "--worker", "other-user", g_sock,
                        NULL};
        int out = -1;
        pid_t pid = spawn_piped(argv, &out);
        char line[512];
        read_some(out, line, sizeof line, 30000);
        close(out);
        int st = wait_status(pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("worker as another user: status %d (%s)", st, line);
        if (opened) TH_CONTAINS(line, "runs as uid 0");
        else TH_CONTAINS(line, "Permission denied");
    }
    /* The listener saw the second attempt and refused it by uid. */
    int refused = 0;
    for (int i = 0; i < 100 && !refused; i++) {
        spore_log_record *rec = NULL;
        if (spore_router_next_log(l, &rec, 50) != SPORE_OK) continue;
        refused = strstr(spore_log_record_message(rec), "refused a connection") != NULL;
        spore_log_record_free(rec);
    }
    assert_true(refused);
    spore_router_free(l);
    assert_int_equal(chmod(g_dir, 0700), 0);
    th_rm_rf(pub);
    free(pub);
    th_end(&b);
}

static void test_listener_goes_away(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *l = th_router(NULL);
    TH_OK(spore_router_listen(l, g_sock));
    spore_router *a = attach(g_sock);
    spore_context *c = connect_named(a, "local", NULL, -1, NULL);
    free(th_call(c, "sys.ping", NULL));
    spore_pending *pc = NULL;
    TH_OK(spore_call_async(&pc, c, "proc.run", "{\"argv\":[\"sleep\",\"30\"]}", NULL, 0));
    spore_router_free(l);  /* shuts its contexts down */
    spore_result *res = NULL;
    int rc = spore_call_wait(pc, &res, 10000);
    assert_true(rc == SPORE_EDISCONNECTED);
    spore_call_free(pc);
    assert_false(spore_context_alive(c));
    TH_ERR(spore_call(&res, c, "sys.ping", NULL, NULL, 0, 5000), SPORE_EDISCONNECTED);
    spore_context *c2 = NULL;
    rc = spore_connect(&c2, a, "local", NULL, NULL);
    assert_true(rc == SPORE_EDISCONNECTED);
    TH_ERR(spore_context_find(&c2, a, "local.2"), SPORE_EDISCONNECTED);
    spore_context_free(c);
    spore_router_free(a);
    th_end(&b);
}

static void test_errors(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = NULL;
    char path[700];
    /* Nothing listens. */
    snprintf(path, sizeof path, "%s/none.sock", g_dir);
    TH_ERR(spore_router_attach(&r, path, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, path);
    assert_null(r);
    /* Options that belong to the listener. */
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", "/bin/true"));
    TH_ERR(spore_router_attach(&r, path, o), SPORE_EINVAL);
    spore_options_free(o);
    /* Bad values of the log options, refused before anything is tried. */
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "log_level", 101));
    TH_ERR(spore_router_attach(&r, path, o), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "attach option 'log_level'");
    spore_options_free(o);
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "log_queue_size", 0));
    TH_ERR(spore_router_attach(&r, path, o), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "attach option 'log_queue_size'");
    spore_options_free(o);
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "no_such_option", "x"));
    TH_ERR(spore_router_attach(&r, path, o), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "unknown attach option 'no_such_option'");
    spore_options_free(o);

    spore_router *l = th_router(NULL);
    /* An unsafe directory, a path too long, a file that is no socket. */
    char open_dir[600];
    snprintf(open_dir, sizeof open_dir, "%s/open", g_dir);
    assert_int_equal(mkdir(open_dir, 0755), 0);
    snprintf(path, sizeof path, "%s/open/x.sock", g_dir);
    TH_ERR(spore_router_listen(l, path), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "0755");
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    TH_ERR(spore_router_listen(l, longp), SPORE_EINVAL);
    snprintf(path, sizeof path, "%s/plain-file", g_dir);
    assert_int_equal(th_write_file(path, "x", 1, 0600), 0);
    TH_ERR(spore_router_listen(l, path), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "not a socket");

    /* A stale socket is replaced; a live one is not; listening twice is not. */
    snprintf(path, sizeof path, "%s/stale.sock", g_dir);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    close(s);
    TH_OK(spore_router_listen(l, path));
    TH_ERR(spore_router_listen(l, g_sock), SPORE_EINVAL);
    spore_router *l2 = th_router(NULL);
    TH_ERR(spore_router_listen(l2, path), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "already listens");
    spore_router_free(l2);

    /* Hostile bytes on the socket: that connection is dropped, the listener
     * and its other attached routers carry on. */
    spore_router *good = attach(path);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    const char junk[] = "GET / HTTP/1.0\r\n\r\n0123456789abcdef0123456789abcdef";
    assert_int_equal(write(s, junk, sizeof junk), (ssize_t)sizeof junk);
    char buf[64];
    assert_true(th_readable(s, 5000));
    assert_true(read(s, buf, sizeof buf) <= 0);
    close(s);
    /* A frame that is not a hello. */
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    unsigned char frame[32] = {0x53, 0x50, 1, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100};
    assert_int_equal(write(s, frame, sizeof frame), (ssize_t)sizeof frame);
    assert_true(th_readable(s, 5000));
    assert_true(read(s, buf, sizeof buf) <= 0);
    close(s);
    /* Out of fds: the listener pauses accepting instead of spinning on the
     * readable socket, and takes the connection once fds are back. */
    {
        int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(client >= 0);
        spore_log_record *old = NULL;
        while (spore_router_next_log(l, &old, 0) == SPORE_OK) spore_log_record_free(old);
        struct rlimit saved, low;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
        low = saved;
        low.rlim_cur = 64;
        while (low.rlim_cur <= (rlim_t)client) low.rlim_cur *= 2;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
        int fills[4096], nfill = 0;
        while (nfill < 4096 && (fills[nfill] = dup(client)) >= 0) nfill++;
        assert_int_equal(connect(client, (struct sockaddr *)&a, sizeof a), 0);
        th_sleep_ms(350);
        for (int k = 0; k < nfill; k++) close(fills[k]);
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
        int warnings = 0;
        spore_log_record *rec = NULL;
        while (spore_router_next_log(l, &rec, 0) == SPORE_OK) {
            if (strstr(spore_log_record_message(rec), "retrying in 100 ms")) warnings++;
            spore_log_record_free(rec);
        }
        if (warnings < 1 || warnings > 10) fail_msg("%d accept warnings in 350 ms", warnings);
        /* Accepted at last (a connection left in the backlog would take the
         * bytes and never end), and dropped: for the junk, or already
         * (EPIPE) where it was taken while fds were short. */
        ssize_t w = write(client, junk, sizeof junk);
        assert_true(w == (ssize_t)sizeof junk || (w < 0 && (errno == EPIPE || errno == ECONNRESET)));
        assert_true(th_readable(client, 5000));
        assert_true(read(client, buf, sizeof buf) <= 0);
        close(client);
    }
    /* A hello of another protocol version: an error answer, then the end. */
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    const char hello[] = "{\"protocol\":99}";
    unsigned char hf[32 + sizeof hello - 1] = {0x53, 0x50, 1, 0};
    hf[19] = 110; /* init */
    hf[27] = (unsigned char)(sizeof hello - 1);
    memcpy(hf + 32, hello, sizeof hello - 1);
    assert_int_equal(write(s, hf, sizeof hf), (ssize_t)sizeof hf);
    unsigned char ans[4096];
    size_t got = 0;
    while (got < sizeof ans && th_readable(s, 5000)) {
        ssize_t n = read(s, ans + got, sizeof ans - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(s);
    assert_true(got > 32);
    assert_int_equal(ans[3] & 1, 1); /* the error flag */
    ans[got < sizeof ans ? got : sizeof ans - 1] = '\0';
    TH_CONTAINS((char *)ans + 32, "EPROTO");
    TH_CONTAINS((char *)ans + 32, "protocol 1, not 99");
    /* A socket where nobody answers the hello: the attach times out. */
    char mute[700];
    snprintf(mute, sizeof mute, "%s/mute.sock", g_dir);
    int ms = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un ma = {.sun_family = AF_UNIX};
    memcpy(ma.sun_path, mute, strlen(mute) + 1);
    assert_int_equal(bind(ms, (struct sockaddr *)&ma, sizeof ma), 0);
    assert_int_equal(listen(ms, 4), 0);
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "connect_timeout", 300));
    spore_router *deaf = NULL;
    TH_ERR(spore_router_attach(&deaf, mute, o), SPORE_ETIMEDOUT);
    TH_CONTAINS(spore_last_error()->message, "did not answer within 300 ms");
    assert_null(deaf);
    spore_options_free(o);
    close(ms);
    /* A listener of another protocol version refuses us, and one that
     * answers nonsense: EPROTO both. */
    struct fake_listener fakes[] = {
        {-1, 1, "{\"code\":\"EPROTO\",\"message\":\"this listener speaks protocol 7\"}"},
        {-1, 0, "{\"protocol\":1}"},
    };
    const char *expect[] = {"speaks protocol 7", "sent a malformed answer"};
    for (int k = 0; k < 2; k++) {
        unlink(mute);
        fakes[k].fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(bind(fakes[k].fd, (struct sockaddr *)&ma, sizeof ma), 0);
        assert_int_equal(listen(fakes[k].fd, 4), 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, fake_listener, &fakes[k]), 0);
        int rc = spore_router_attach(&deaf, mute, NULL);
        pthread_join(t, NULL);
        close(fakes[k].fd);
        assert_int_equal(rc, SPORE_EPROTO);
        TH_CONTAINS(spore_last_error()->message, expect[k]);
    }
    /* An attached router cannot listen. */
    TH_ERR(spore_router_listen(good, g_sock), SPORE_EINVAL);
    spore_context *c = connect_named(good, "local", NULL, -1, NULL);
    free(th_call(c, "sys.ping", NULL));
    /* Errors of calls come back as before. */
    spore_result *res = NULL;
    TH_ERR(spore_call(&res, c, "no.such.function", NULL, NULL, 0, 5000), SPORE_ENOFUNC);
    spore_context_free(c);
    spore_router_free(good);
    spore_router_free(l);
    assert_int_equal(access(path, F_OK), -1);
    th_end(&b);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--worker") == 0) return worker_main(argc, argv);
    /* A peer that closes first must fail a write (EPIPE), not end the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attach_in_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_users_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_goes_away, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
