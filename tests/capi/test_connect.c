/* spore_connect and the context accessors: local and fork contexts, chains
 * of contexts, option validation, connect timeouts and failures (with fake
 * agent images), and what the agent cache leaves on disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers.h"

/* The command line of a process, with NULs turned into spaces. */
static void read_cmdline(pid_t pid, char *buf, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0') buf[i] = ' ';
    buf[n] = '\0';
}

static long long info_int(spore_context *c, const char *key) {
    char *json = th_call(c, "sys.info", NULL);
    long long v = th_json_int(json, key, -1);
    free(json);
    return v;
}

static char *info_str(spore_context *c, const char *key) {
    char *json = th_call(c, "sys.info", NULL);
    char *v = th_json_str(json, key, NULL);
    free(json);
    assert_non_null(v);
    return v;
}

/* -------------------------------------------------------------- success */

static void test_connect_local(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c1 = th_connect(r, "local", NULL);
    spore_context *c2 = th_connect(r, "local", NULL);

    assert_true(spore_context_id(c1) > 0);
    assert_true(spore_context_id(c2) > 0);
    assert_int_not_equal(spore_context_id(c1), spore_context_id(c2));
    char want[64];
    snprintf(want, sizeof want, "local.%u", spore_context_id(c1));
    assert_string_equal(spore_context_name(c1), want);
    snprintf(want, sizeof want, "local.%u", spore_context_id(c2));
    assert_string_equal(spore_context_name(c2), want);
    assert_int_equal(spore_context_alive(c1), 1);
    assert_int_equal(spore_context_alive(c2), 1);
    /* the name pointer is borrowed and stable */
    assert_ptr_equal(spore_context_name(c1), spore_context_name(c1));

    /* The agent knows its name, is our direct child and is labelled in ps. */
    char *ctxname = info_str(c1, "context");
    assert_string_equal(ctxname, spore_context_name(c1));
    free(ctxname);
    pid_t pid = th_agent_pid(c1);
    assert_int_equal(info_int(c1, "ppid"), getpid());
    assert_int_not_equal(pid, th_agent_pid(c2));
    char cmd[512];
    read_cmdline(pid, cmd, sizeof cmd);
    snprintf(want, sizeof want, "spore:%s", spore_context_name(c1));
    TH_CONTAINS(cmd, want);

    /* name and remote_name options */
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "name", "worker-a"));
    TH_OK(spore_options_set_str(o, "remote_name", "capi-remote-label"));
    spore_context *c3 = NULL;
    TH_OK(spore_connect(&c3, r, "local", o, NULL));
    spore_options_free(o);
    assert_string_equal(spore_context_name(c3), "worker-a");
    read_cmdline(th_agent_pid(c3), cmd, sizeof cmd);
    TH_CONTAINS(cmd, "spore:capi-remote-label");
    ctxname = info_str(c3, "context");
    assert_string_equal(ctxname, "worker-a");
    free(ctxname);

    spore_context_free(c1);
    spore_context_free(c2);
    spore_context_free(c3);
    spore_router_free(r);
    th_end(&b);
}

static void test_connect_fork_via_local(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    spore_context *f2 = th_connect(r, "fork", l);

    char want[128];
    snprintf(want, sizeof want, "%s/fork.%u", spore_context_name(l), spore_context_id(f));
    assert_string_equal(spore_context_name(f), want);
    assert_int_not_equal(spore_context_id(f), spore_context_id(f2));
    assert_int_equal(spore_context_alive(f), 1);

    pid_t lpid = th_agent_pid(l), fpid = th_agent_pid(f), f2pid = th_agent_pid(f2);
    assert_int_not_equal(lpid, fpid);
    assert_int_not_equal(fpid, f2pid);
    /* a fork context is started by the agent it goes through */
    assert_int_equal(info_int(f, "ppid"), lpid);
    assert_int_equal(info_int(f2, "ppid"), lpid);
    char *ctxname = info_str(f, "context");
    assert_string_equal(ctxname, spore_context_name(f));
    free(ctxname);

    /* fork of a fork */
    spore_context *ff = th_connect(r, "fork", f);
    assert_int_equal(info_int(ff, "ppid"), fpid);
    snprintf(want, sizeof want, "%s/fork.%u", spore_context_name(f), spore_context_id(ff));
    assert_string_equal(spore_context_name(ff), want);

    spore_context_free(ff);
    spore_context_free(f2);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    assert_true(th_wait_pid_gone(fpid, 3.0));
    assert_true(th_wait_pid_gone(f2pid, 3.0));
    th_end(&b);
}

/* local -> local (via) -> fork (via) -> local (via), a call in the deepest,
 * then shutting the top down takes the whole branch with it. */
static void test_connect_chain_depth_4(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c[4];
    c[0] = th_connect(r, "local", NULL);
    c[1] = th_connect(r, "local", c[0]);
    c[2] = th_connect(r, "fork", c[1]);
    c[3] = th_connect(r, "local", c[2]);
    const char *methods[4] = {"local", "local", "fork", "local"};
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        char want[256];
        if (i == 0) snprintf(want, sizeof want, "local.%u", spore_context_id(c[0]));
        else
            snprintf(want, sizeof want, "%s/%s.%u", spore_context_name(c[i - 1]), methods[i],
                     spore_context_id(c[i]));
        assert_string_equal(spore_context_name(c[i]), want);
        pids[i] = th_agent_pid(c[i]);
        if (i > 0) assert_int_equal(info_int(c[i], "ppid"), pids[i - 1]);
    }

    /* a real round trip through three hops */
    static char blob[300000];
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (char)(i * 7 + 3);
    spore_result *res = NULL;
    TH_OK(spore_call(&res, c[3], "sys.echo", "{\"value\":{\"deep\":[1,2,{\"x\":\"y\"}]}}", blob,
                     sizeof blob, 10000));
    assert_string_equal(spore_result_json(res), "{\"deep\":[1,2,{\"x\":\"y\"}]}");
    size_t len = 0;
    const void *bytes = spore_result_bytes(res, &len);
    assert_int_equal(len, sizeof blob);
    assert_memory_equal(bytes, blob, sizeof blob);
    spore_result_free(res);
    /* errors from the deepest context name it */
    TH_ERR(spore_call(&res, c[3], "no.such_function", NULL, NULL, 0, 10000), SPORE_ENOFUNC);
    assert_string_equal(spore_last_error()->context, spore_context_name(c[3]));

    /* Shutting down the top one takes the branch down. */
    TH_OK(spore_context_shutdown(c[0], 5000));
    for (int i = 0; i < 4; i++) {
        double end = th_now() + 2.0 * th_time_factor();
        while (spore_context_alive(c[i]) && th_now() < end) th_sleep_ms(5);
        assert_int_equal(spore_context_alive(c[i]), 0);
        assert_true(th_wait_pid_gone(pids[i], 3.0 * th_time_factor()));
    }
    TH_ERR(spore_call(&res, c[3], "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    for (int i = 0; i < 4; i++) spore_context_free(c[i]);
    spore_router_free(r);
    th_end(&b);
}

/* ----------------------------------------------------- invalid requests */

static void expect_connect_einval(spore_router *r, const char *method, spore_options *o,
                                  spore_context *via, const char *needle) {
    spore_context *c = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(&c, r, method, o, via), SPORE_EINVAL);
    assert_null(c);
    if (needle) TH_CONTAINS(spore_last_error()->message, needle);
}

static void test_connect_invalid_requests(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);

    expect_connect_einval(r, "fork", NULL, NULL, "via");
    expect_connect_einval(r, "teleport", NULL, NULL, "teleport");
    expect_connect_einval(r, "teleport", NULL, l, "teleport");
    expect_connect_einval(r, "", NULL, NULL, NULL);
    expect_connect_einval(r, "LOCAL", NULL, NULL, NULL);

    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "colour", "blue"));
    expect_connect_einval(r, "local", o, NULL, "colour");
    expect_connect_einval(r, "fork", o, l, "colour");
    spore_options_free(o);

    struct {
        const char *key;
        int kind; /* 0 str, 1 int, 2 bool */
    } wrong[] = {
        {"name", 1},          {"name", 2},        {"connect_timeout", 0}, {"connect_timeout", 2},
        {"remote_name", 1},   {"agent_cache", 0}, {"agent_cache", 1},     {"agent_compress", 0},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        TH_OK(spore_options_new(&o));
        if (wrong[i].kind == 0) TH_OK(spore_options_set_str(o, wrong[i].key, "x"));
        else if (wrong[i].kind == 1) TH_OK(spore_options_set_int(o, wrong[i].key, 5));
        else TH_OK(spore_options_set_bool(o, wrong[i].key, 1));
        expect_connect_einval(r, "local", o, NULL, wrong[i].key);
        expect_connect_einval(r, "fork", o, l, wrong[i].key);
        spore_options_free(o);
    }

    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "connect_timeout", 0));
    expect_connect_einval(r, "local", o, NULL, "connect_timeout");
    TH_OK(spore_options_set_int(o, "connect_timeout", -5));
    expect_connect_einval(r, "local", o, NULL, "connect_timeout");
    spore_options_free(o);

    /* via from another router */
    spore_router *r2 = th_router(NULL);
    expect_connect_einval(r2, "fork", NULL, l, "router");
    spore_router_free(r2);

    /* None of this started a process or broke the context. */
    char *json = th_call(l, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);

    /* via a context that is gone */
    TH_OK(spore_context_shutdown(l, 5000));
    spore_context *c = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(&c, r, "fork", NULL, l), SPORE_EDISCONNECTED);
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, spore_context_name(l));
    TH_ERR(spore_connect(&c, r, "local", NULL, l), SPORE_EDISCONNECTED);

    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------- fake agents */

/* A private XDG_RUNTIME_DIR and HOME for tests that ship fake images, so
 * their cached copies never reach the shared test cache; set while no
 * router exists (the agents inherit the environment). */
struct fake_env {
    char *dir;
    char *old_xdg, *old_home;
};

static void fake_env_enter(struct fake_env *f) {
    f->dir = th_mkdtemp("fake");
    assert_non_null(f->dir);
    const char *x = getenv("XDG_RUNTIME_DIR"), *h = getenv("HOME");
    f->old_xdg = x ? strdup(x) : NULL;
    f->old_home = h ? strdup(h) : NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/run", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    setenv("XDG_RUNTIME_DIR", path, 1);
    snprintf(path, sizeof path, "%s/home", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    setenv("HOME", path, 1);
}

static void fake_env_leave(struct fake_env *f) {
    if (f->old_xdg) setenv("XDG_RUNTIME_DIR", f->old_xdg, 1);
    else unsetenv("XDG_RUNTIME_DIR");
    if (f->old_home) setenv("HOME", f->old_home, 1);
    else unsetenv("HOME");
    free(f->old_xdg);
    free(f->old_home);
    th_rm_rf(f->dir);
    free(f->dir);
}

/* Writes an executable fake agent image and returns a router shipping it. */
static spore_router *router_with_fake(const char *dir, const char *name, const char *script) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(th_write_file(path, script, strlen(script), 0755), 0);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", path));
    spore_router *r = th_router(o);
    spore_options_free(o);
    return r;
}

static void test_connect_timeout_silent_agent(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    /* Passes the first stage's --version check, then never says hello. */
    spore_router *r = router_with_fake(fe.dir, "silent-agent",
                                       "#!/bin/sh\n"
                                       "case \"$1\" in --version) echo fake-agent; exit 0;; esac\n"
                                       "exec sleep 30\n");
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "connect_timeout", 300));
    TH_OK(spore_options_set_str(o, "name", "silent"));
    spore_context *c = (spore_context *)(uintptr_t)1;
    double t0 = th_now();
    TH_ERR(spore_connect(&c, r, "local", o, NULL), SPORE_ETIMEDOUT);
    double took = th_now() - t0;
    assert_null(c);
    assert_true(took >= 0.29);
    assert_true(took < 1.0 * th_time_factor());
    TH_CONTAINS(spore_last_error()->message, "silent");
    TH_CONTAINS(spore_last_error()->message, "300");
    assert_string_equal(spore_last_error()->context, "silent");
    spore_options_free(o);
    /* the silent child is killed and reaped without waiting for the router */
    assert_int_equal(th_wait_no_descendants(2.0 * th_time_factor()), 0);
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

static void test_connect_failure_shows_child_output(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    spore_router *r = router_with_fake(fe.dir, "boom-agent",
                                       "#!/bin/sh\n"
                                       "case \"$1\" in --version) echo fake-agent; exit 0;; esac\n"
                                       "echo early-line >&2\n"
                                       "echo boom-marker >&2\n"
                                       "exit 3\n");
    spore_context *c = (spore_context *)(uintptr_t)1;
    double t0 = th_now();
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    assert_true(th_now() - t0 < 3.0 * th_time_factor());
    assert_null(c);
    const spore_error *e = spore_last_error();
    TH_CONTAINS(e->message, "boom-marker");
    TH_CONTAINS(e->message, "early-line");
    TH_CONTAINS(e->message, "local.");
    TH_CONTAINS(e->context, "local.");
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

static void test_connect_agent_version_mismatch(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    spore_router *r = router_with_fake(fe.dir, "old-agent",
                                       "#!/bin/sh\n"
                                       "case \"$1\" in --version) echo fake-agent; exit 0;; esac\n"
                                       "printf '\\nSPORE-HELLO 9.9.9\\n'\n"
                                       "exec sleep 30\n");
    spore_context *c = NULL;
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "9.9.9");
    TH_CONTAINS(spore_last_error()->message, SPORE_VERSION_STRING);
    assert_int_equal(th_wait_no_descendants(2.0 * th_time_factor()), 0);
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

/* An image that fails its --version check is refused in every directory. */
/* The candidate directories shared with other users of this uid, after the
 * private ones: a first stage that tells a bad image from a noexec mount
 * never gets to them. */
struct shared_dirs {
    char path[3][64];
    int existed[3];
};

static void shared_dirs_note(struct shared_dirs *d) {
    snprintf(d->path[0], sizeof d->path[0], "/dev/shm/spore-%u", (unsigned)getuid());
    snprintf(d->path[1], sizeof d->path[1], "/tmp/spore-%u", (unsigned)getuid());
    snprintf(d->path[2], sizeof d->path[2], "/var/tmp/spore-%u", (unsigned)getuid());
    for (int i = 0; i < 3; i++) d->existed[i] = th_file_exists(d->path[i]);
}

/* Asserts that no shared directory was made, and removes any that was. */
static void shared_dirs_check(const struct shared_dirs *d) {
    int made = 0;
    for (int i = 0; i < 3; i++)
        if (!d->existed[i] && th_file_exists(d->path[i])) {
            print_error("made %s\n", d->path[i]);
            rmdir(d->path[i]);
            made = 1;
        }
    assert_false(made);
}

/* Connects with an image that does not run; asserts the failure names it
 * and the context, and that the first stage left no directory of its own. */
static void expect_image_does_not_run(const char *dir, const char *name, const void *image, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(th_write_file(path, image, len, 0755), 0);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_path", path));
    spore_router *r = th_router(o);
    spore_options_free(o);
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "name", name));
    spore_context *c = NULL;
    TH_ERR(spore_connect(&c, r, "local", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    assert_null(c);
    const spore_error *e = spore_last_error();
    TH_CONTAINS(e->message, "does not run on the target");
    TH_CONTAINS(e->message, path);
    TH_CONTAINS(e->message, name);
    assert_string_equal(e->context, name);
    assert_null(strstr(e->message, "no writable directory"));
    spore_router_free(r);
    /* $XDG_RUNTIME_DIR/spore was made for the image and is gone again; the
     * later candidates were never tried. */
    snprintf(path, sizeof path, "%s/run/spore", dir);
    assert_false(th_file_exists(path));
    snprintf(path, sizeof path, "%s/home/.cache", dir);
    assert_false(th_file_exists(path));
}

/* A copy of the agent's first `keep` bytes (all if 0), with its ELF machine
 * changed to `machine` unless that is 0; malloc'd, length in *len. */
static char *agent_copy(size_t keep, uint16_t machine, size_t *len) {
    FILE *f = fopen(getenv("SPORE_AGENT_PATH"), "rb");
    assert_non_null(f);
    size_t cap = 4u << 20, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) n += got;
    fclose(f);
    assert_true(n > 4096 && n < cap);
    if (keep && keep < n) n = keep;
    if (machine) memcpy(buf + 18, &machine, 2);
    *len = n;
    return buf;
}

static void test_connect_image_that_does_not_run(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct shared_dirs sd;
    shared_dirs_note(&sd);
    struct fake_env fe;
    fake_env_enter(&fe);
    /* A program whose --version fails: it runs nowhere. */
    const char *failing = "#!/bin/sh\nexit 1\n";
    expect_image_does_not_run(fe.dir, "failing-agent", failing, strlen(failing));
    /* The agent built for another machine (aarch64, or x86-64 on aarch64). */
    size_t len;
    char *img = agent_copy(0, 0, &len);
    uint16_t other = (uint8_t)img[18] == 183 ? 62 : 183;
    free(img);
    img = agent_copy(0, other, &len);
    expect_image_does_not_run(fe.dir, "foreign-agent", img, len);
    free(img);
    /* The agent cut short after 64 KiB. */
    img = agent_copy(65536, 0, &len);
    expect_image_does_not_run(fe.dir, "truncated-agent", img, len);
    free(img);
    fake_env_leave(&fe);
    shared_dirs_check(&sd);
    th_end(&b);
}

/* A file that is no program at all is refused before anything is started:
 * sh would run it as a script. */
static void test_connect_image_that_is_no_program(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    spore_router *r = router_with_fake(fe.dir, "notes.txt", "echo this is text, not a program\n");
    spore_context *c = NULL;
    TH_ERR(spore_connect(&c, r, "local", NULL, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "notes.txt is not an executable program");
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

/* agent_cache true keeps the image in $XDG_RUNTIME_DIR/spore; false leaves
 * nothing. */
static int count_cached_agents(const char *dir) {
    char *list = th_list_dir_prefix(dir, "spore-agent-");
    int n = 0;
    for (char *p = list; *p; p++) n += *p == '\n';
    free(list);
    char *hidden = th_list_dir_prefix(dir, ".spore-agent-");
    for (char *p = hidden; *p; p++) n += *p == '\n';
    free(hidden);
    return n;
}

static void test_connect_agent_cache_option(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    char cache[512];
    snprintf(cache, sizeof cache, "%s/run/spore", fe.dir);
    spore_router *r = th_router(NULL);

    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_bool(o, "agent_cache", 0));
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, "local", o, NULL));
    spore_options_free(o);
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    assert_int_equal(count_cached_agents(cache), 0);
    /* its fork children need no file either */
    spore_context *f = th_connect(r, "fork", c);
    json = th_call(f, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    assert_int_equal(count_cached_agents(cache), 0);
    spore_context_free(f);
    spore_context_free(c);

    c = th_connect(r, "local", NULL);
    assert_int_equal(count_cached_agents(cache), 1);
    spore_context *c2 = th_connect(r, "local", NULL); /* reuses the cached copy */
    assert_int_equal(count_cached_agents(cache), 1);
    spore_context_free(c2);
    spore_context_free(c);
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

/* agent_compress false: the image is sent uncompressed, also to a target
 * that has gzip. */
static void test_connect_agent_compress_off(void **state) {
    (void)state;
    th_baseline b = th_begin();
    struct fake_env fe;
    fake_env_enter(&fe);
    spore_router *r = th_router(NULL);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_bool(o, "agent_compress", 0));
    TH_OK(spore_options_set_int(o, "connect_timeout", 5000));
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "local", o, NULL);
    spore_options_free(o);
    if (rc != SPORE_OK) {
        print_error("%s\n", spore_last_error()->message);
        spore_router_free(r);
        fake_env_leave(&fe);
        fail_msg("connect with agent_compress=false failed: %d (%s)", rc, spore_strerror(rc));
    }
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    spore_router_free(r);
    fake_env_leave(&fe);
    th_end(&b);
}

/* ------------------------------------------------------------ shutdown */

/* The debug note of the router's last first contact ("... sent the agent
 * image, N bytes xz ..."), malloc'd; NULL if there was none. */
static char *first_contact_note(spore_router *r) {
    char *note = NULL;
    spore_log_record *rec;
    while (spore_router_next_log(r, &rec, 0) == SPORE_OK) {
        const char *m = spore_log_record_message(rec);
        if (strcmp(spore_log_record_logger(rec), "spore.connect") == 0 && strstr(m, "sent the agent image")) {
            free(note);
            note = strdup(m);
        }
        spore_log_record_free(rec);
    }
    return note;
}

/* Connects (agent_cache off, so the image always travels) with
 * agent_compress set by `set`, pings, and returns the first contact's note. */
static char *connect_compressed(spore_router *r, int (*set)(spore_options *, const char *, const char *),
                                const char *value, spore_context *via) {
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_bool(o, "agent_cache", 0));
    if (set) TH_OK(set(o, "agent_compress", value));
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "local", o, via);
    spore_options_free(o);
    if (rc != SPORE_OK) fail_msg("agent_compress %s: %s", value, spore_last_error()->message);
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(c);
    return first_contact_note(r);
}

static int set_bool_word(spore_options *o, const char *key, const char *value) {
    return spore_options_set_bool(o, key, strcmp(value, "true") == 0);
}

/* Every value of agent_compress sends the image in its form; xz is the
 * smallest and what "auto" picks here (xz-utils is installed). */
static void test_connect_agent_compress_values(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_options *ro;
    TH_OK(spore_options_new(&ro));
    TH_OK(spore_options_set_int(ro, "log_level", SPORE_LOG_DEBUG));
    spore_router *r = th_router(ro);
    spore_options_free(ro);
    static const struct {
        const char *value, *word;
        int boolean;
    } cases[] = {{"xz", " xz ", 0},     {"zstd", " zstd ", 0}, {"gzip", " gz ", 0}, {"none", " raw ", 0},
                 {"auto", " xz ", 0},   {"true", " xz ", 1},   {"false", " raw ", 1}};
    long bytes[5] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *note = connect_compressed(r, cases[i].boolean ? set_bool_word : spore_options_set_str, cases[i].value, NULL);
        assert_non_null(note);
        if (!strstr(note, cases[i].word)) fail_msg("agent_compress %s: %s", cases[i].value, note);
        const char *n = strstr(note, "image, ");
        assert_non_null(n);
        if (i < 5) bytes[i] = strtol(n + 7, NULL, 10);
        free(note);
    }
    /* xz < zstd < gzip < raw, and auto is xz */
    assert_true(bytes[0] < bytes[1] && bytes[1] < bytes[2] && bytes[2] < bytes[3]);
    assert_int_equal(bytes[4], bytes[0]);
    spore_router_free(r);
    th_end(&b);
}

static void test_connect_agent_compress_invalid(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_compress", "lz4"));
    expect_connect_einval(r, "local", o, NULL, "option 'agent_compress' must be true, false, \"auto\"");
    TH_CONTAINS(spore_last_error()->message, "not \"lz4\"");
    TH_OK(spore_options_set_int(o, "agent_compress", 9));
    expect_connect_einval(r, "local", o, NULL, "'agent_compress' must be a boolean or a string");
    spore_options_free(o);
    spore_router_free(r);
    th_end(&b);
}

/* A codec asked for by name that the target has no command for fails the
 * connect (no silent fallback); "auto" falls back to what it has. */
static void test_connect_agent_compress_missing_on_target(void **state) {
    (void)state;
    th_baseline b = th_begin();
    char *bin = th_mkdtemp("nobin");
    assert_non_null(bin);
    static const char *tools[] = {"id", "head", "mkdir", "chmod", "rm", "rmdir", "mv", "cp", "cat", "sha256sum", "gzip"};
    char link[512], target[512];
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
        snprintf(link, sizeof link, "%s/%s", bin, tools[i]);
        snprintf(target, sizeof target, "/usr/bin/%s", tools[i]);
        if (access(target, X_OK) != 0) snprintf(target, sizeof target, "/bin/%s", tools[i]);
        assert_int_equal(symlink(target, link), 0);
    }
    char *old_path = strdup(getenv("PATH"));
    setenv("PATH", bin, 1); /* the local agent's first stage inherits it */
    spore_options *ro;
    TH_OK(spore_options_new(&ro));
    TH_OK(spore_options_set_int(ro, "log_level", SPORE_LOG_DEBUG));
    spore_router *r = th_router(ro);
    spore_options_free(ro);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_bool(o, "agent_cache", 0));
    TH_OK(spore_options_set_str(o, "agent_compress", "xz"));
    TH_OK(spore_options_set_str(o, "name", "no-xz"));
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, "local", o, NULL);
    spore_options_free(o);
    char *msg = strdup(spore_last_error()->message);
    char *note = rc == SPORE_ECONNECT ? connect_compressed(r, spore_options_set_str, "auto", NULL) : NULL;
    spore_router_free(r);
    setenv("PATH", old_path, 1);
    free(old_path);
    th_rm_rf(bin);
    free(bin);
    assert_int_equal(rc, SPORE_ECONNECT);
    TH_CONTAINS(msg, "no-xz");
    TH_CONTAINS(msg, "agent_compress is \"xz\" but the target has no xz command (it offered: raw)");
    free(msg);
    assert_non_null(note);
    TH_CONTAINS(note, " gz ");
    free(note);
    th_end(&b);
}

/* An agent ships its own image with gzip: asked for xz by name it says so,
 * and "auto" and "gzip" work through it. */
static void test_connect_agent_compress_via_agent(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *via = th_connect(r, "local", NULL);
    char *note = connect_compressed(r, spore_options_set_str, "gzip", via);
    free(note);
    note = connect_compressed(r, spore_options_set_str, "auto", via);
    free(note);
    spore_options *o;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "agent_compress", "xz"));
    expect_connect_einval(r, "local", o, via, "agent_compress \"xz\" is not available here");
    TH_CONTAINS(spore_last_error()->message, "gzip only");
    spore_options_free(o);
    spore_context_free(via);
    spore_router_free(r);
    th_end(&b);
}

static void test_context_shutdown_then_calls(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = th_connect(r, "local", NULL);
    spore_context *other = th_connect(r, "local", NULL);
    pid_t pid = th_agent_pid(c);
    char name[64];
    snprintf(name, sizeof name, "%s", spore_context_name(c));

    TH_OK(spore_context_shutdown(c, 5000));
    assert_int_equal(spore_context_alive(c), 0);
    assert_true(th_wait_pid_gone(pid, 3.0 * th_time_factor()));
    /* the name and id stay readable */
    assert_string_equal(spore_context_name(c), name);
    assert_true(spore_context_id(c) > 0);

    spore_result *res = (spore_result *)(uintptr_t)1;
    TH_ERR(spore_call(&res, c, "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    assert_null(res);
    assert_string_equal(spore_last_error()->context, name);
    assert_string_equal(spore_last_error()->function, "sys.ping");
    TH_CONTAINS(spore_last_error()->message, name);
    spore_pending *p = (spore_pending *)(uintptr_t)1;
    TH_ERR(spore_call_async(&p, c, "sys.ping", NULL, NULL, 0), SPORE_EDISCONNECTED);
    assert_null(p);
    TH_ERR(spore_call_no_reply(c, "sys.ping", NULL, NULL, 0), SPORE_EDISCONNECTED);
    spore_chain *ch = NULL;
    TH_OK(spore_chain_new(&ch, c));
    TH_ERR(spore_chain_call_no_reply(ch, "sys.ping", NULL, NULL, 0), SPORE_EDISCONNECTED);
    TH_ERR(spore_chain_call(&res, ch, "sys.ping", NULL, NULL, 0, 1000), SPORE_EDISCONNECTED);
    spore_chain_free(ch);
    /* a second shutdown is a no-op */
    TH_OK(spore_context_shutdown(c, 0));
    TH_OK(spore_context_shutdown(c, -1));

    /* the other context is unaffected */
    assert_int_equal(spore_context_alive(other), 1);
    char *json = th_call(other, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);

    spore_context_free(c);
    spore_context_free(other);
    spore_router_free(r);
    th_end(&b);
}

/* Shutting down a context with a fork child behind it: children first, and
 * the child's handle notices. */
static void test_context_shutdown_with_children(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);
    spore_context *f = th_connect(r, "fork", l);
    pid_t lpid = th_agent_pid(l), fpid = th_agent_pid(f);
    double t0 = th_now();
    TH_OK(spore_context_shutdown(l, 5000));
    assert_true(th_now() - t0 < 2.5 * th_time_factor());
    assert_int_equal(spore_context_alive(l), 0);
    double end = th_now() + 2.0;
    while (spore_context_alive(f) && th_now() < end) th_sleep_ms(5);
    assert_int_equal(spore_context_alive(f), 0);
    assert_true(th_wait_pid_gone(fpid, 3.0 * th_time_factor()));
    assert_true(th_wait_pid_gone(lpid, 3.0 * th_time_factor()));

    /* shutting down only the fork child leaves its parent up */
    spore_context *l2 = th_connect(r, "local", NULL);
    spore_context *f2 = th_connect(r, "fork", l2);
    pid_t f2pid = th_agent_pid(f2);
    TH_OK(spore_context_shutdown(f2, 5000));
    assert_int_equal(spore_context_alive(f2), 0);
    assert_true(th_wait_pid_gone(f2pid, 3.0 * th_time_factor()));
    assert_int_equal(spore_context_alive(l2), 1);
    char *json = th_call(l2, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    /* and a new fork through it works */
    spore_context *f3 = th_connect(r, "fork", l2);
    json = th_call(f3, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);

    spore_context_free(f3);
    spore_context_free(f2);
    spore_context_free(l2);
    spore_context_free(f);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_local),
        cmocka_unit_test(test_connect_fork_via_local),
        cmocka_unit_test(test_connect_chain_depth_4),
        cmocka_unit_test(test_connect_invalid_requests),
        cmocka_unit_test(test_connect_timeout_silent_agent),
        cmocka_unit_test(test_connect_failure_shows_child_output),
        cmocka_unit_test(test_connect_agent_version_mismatch),
        cmocka_unit_test(test_connect_image_that_does_not_run),
        cmocka_unit_test(test_connect_image_that_is_no_program),
        cmocka_unit_test(test_connect_agent_cache_option),
        cmocka_unit_test(test_connect_agent_compress_off),
        cmocka_unit_test(test_connect_agent_compress_values),
        cmocka_unit_test(test_connect_agent_compress_invalid),
        cmocka_unit_test(test_connect_agent_compress_missing_on_target),
        cmocka_unit_test(test_connect_agent_compress_via_agent),
        cmocka_unit_test(test_context_shutdown_then_calls),
        cmocka_unit_test(test_context_shutdown_with_children),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
