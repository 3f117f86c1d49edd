/* The container methods: docker, podman, lxc (lxc-attach), lxd (lxc exec),
 * kubectl, jail (jexec), setns and machinectl.
 *
 * The engines cannot run here, so each method runs a STAND-IN
 * (tests/standins/standin, linked here under the tools' names) that asserts
 * the exact argv it gets, logs it, and then runs the boot command locally
 * (or, for the leader lookups of setns, answers with a pid the way the real
 * tool prints it). setns itself is real: when running as root, a process
 * started with `unshare` provides pid, uts, net and mount namespaces to
 * enter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/resource.h>

#include "helpers.h"

/* ------------------------------------------------------------ stand-ins */

static const char *const kTools[] = {"docker", "podman", "lxc-attach", "lxc-info",
                                     "lxc",    "kubectl", "jexec",     "machinectl"};
#define N_TOOLS (sizeof kTools / sizeof kTools[0])

static struct {
    char *dir;               /* private temp dir */
    char expect[512];        /* $SPORE_STANDIN_EXPECT */
    char log[512];           /* $SPORE_STANDIN_LOG */
    char tool[N_TOOLS][700]; /* <dir>/bin/<tool> -> the stand-in */
} g;

/* The stand-in installed as `name`. */
static const char *tool(const char *name) {
    for (size_t i = 0; i < N_TOOLS; i++)
        if (strcmp(kTools[i], name) == 0) return g.tool[i];
    fail_msg("no stand-in named %s", name);
    return NULL;
}

/* The environment is set here, before any router (and its threads) exists,
 * and stays: agents inherit it when they start. */
static int group_setup(void **state) {
    (void)state;
    const char *src = getenv("SPORE_SOURCE_DIR");
    if (!src) {
        print_error("SPORE_SOURCE_DIR is not set (run this test through ctest)\n");
        return -1;
    }
    char standin[512], bin[600];
    snprintf(standin, sizeof standin, "%s/tests/standins/standin", src);
    if (access(standin, X_OK) != 0) {
        print_error("%s is not executable: %s\n", standin, strerror(errno));
        return -1;
    }
    g.dir = th_mkdtemp("containers");
    if (!g.dir) return -1;
    snprintf(bin, sizeof bin, "%s/bin", g.dir);
    if (mkdir(bin, 0755) != 0) return -1;
    for (size_t i = 0; i < N_TOOLS; i++) {
        snprintf(g.tool[i], sizeof g.tool[i], "%s/%s", bin, kTools[i]);
        if (symlink(standin, g.tool[i]) != 0) return -1;
    }
    snprintf(g.expect, sizeof g.expect, "%s/expect", g.dir);
    snprintf(g.log, sizeof g.log, "%s/log", g.dir);
    setenv("SPORE_STANDIN_EXPECT", g.expect, 1);
    setenv("SPORE_STANDIN_LOG", g.log, 1);
    unsetenv("SPORE_STANDIN_PID");
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    unsetenv("SPORE_STANDIN_EXPECT");
    unsetenv("SPORE_STANDIN_LOG");
    if (g.dir) th_rm_rf(g.dir);
    free(g.dir);
    g.dir = NULL;
    return 0;
}

/* Sets the argv the stand-in expects (after argv[0], one word a line; see
 * tests/standins/standin for <BOOT> and <CMD>) and empties its log. */
static void expect_words(const char *const *words) {
    char buf[4096];
    size_t n = 0;
    for (; *words; words++) {
        size_t len = strlen(*words);
        assert_true(n + len + 1 < sizeof buf);
        memcpy(buf + n, *words, len);
        n += len;
        buf[n++] = '\n';
    }
    assert_int_equal(th_write_file(g.expect, buf, n, 0600), 0);
    unlink(g.log);
}
#define EXPECT(...) expect_words((const char *const[]){__VA_ARGS__, NULL})

/* What the stand-ins logged since the last EXPECT (malloc'd, "" for nothing). */
static char *read_log(void) {
    FILE *f = fopen(g.log, "r");
    if (!f) return strdup("");
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_log(const char *want) {
    char *got = read_log();
    if (strcmp(got, want) != 0) {
        char w[4096], s[4096];
        snprintf(w, sizeof w, "%s", want);
        snprintf(s, sizeof s, "%s", got);
        free(got);
        fail_msg("stand-in log is\n%s\nexpected\n%s", s, w);
    }
    free(got);
}

/* Options from key/value string pairs. */
static spore_options *opts_words(const char *const *kv) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    for (; kv[0]; kv += 2) {
        assert_non_null(kv[1]);
        TH_OK(spore_options_set_str(o, kv[0], kv[1]));
    }
    return o;
}
#define OPTS(...) opts_words((const char *const[]){__VA_ARGS__, NULL})

static long long info_int(spore_context *c, const char *key) {
    char *json = th_call(c, "sys.info", NULL);
    long long v = th_json_int(json, key, -1);
    free(json);
    return v;
}

static char *info_str(spore_context *c, const char *key) {
    char *json = th_call(c, "sys.info", NULL);
    char *v = th_json_str(json, key, NULL);
    if (!v) fail_msg("sys.info has no string '%s': %s", key, json);
    free(json);
    return v;
}

/* Runs argv (a JSON array) in the context; returns its stdout (malloc'd),
 * asserting rc 0. */
static char *run_stdout(spore_context *c, const char *argv_json) {
    char args[1024];
    snprintf(args, sizeof args, "{\"argv\":%s}", argv_json);
    char *json = th_call(c, "proc.run", args);
    if (th_json_int(json, "rc", -1) != 0) fail_msg("proc.run %s: %s", argv_json, json);
    char *out = th_json_str(json, "stdout", NULL);
    free(json);
    assert_non_null(out);
    return out;
}

static pid_t parent_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    int ppid = -1;
    char st;
    if (!rp || sscanf(rp + 2, "%c %d", &st, &ppid) != 2) return -1;
    return (pid_t)ppid;
}

static int comm_is(pid_t pid, const char *comm) {
    char path[64], buf[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return strcmp(buf, comm) == 0;
}

/* Opens a context whose launcher is a stand-in and proves it works: ping,
 * sys.info names the context, and the agent is the stand-in's own process
 * (it exec'd the boot command), a child of whoever connected: this program,
 * or the via context's agent. With `via_sh` there is a /bin/sh in between
 * (a command_prefix with a shell operator runs as one sh -c script, and sh
 * does not exec the last command of an && list). Takes (frees) the options. */
static spore_context *connect_standin_sh(spore_router *r, const char *method, spore_options *o,
                                         spore_context *via, int via_sh) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, method, o, via);
    spore_options_free(o);
    if (rc != SPORE_OK) {
        char *log = read_log();
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", spore_last_error()->message);
        fprintf(stderr, "stand-in log:\n%s", log);
        free(log);
        fail_msg("connect %s returned %d (%s): %s", method, rc, spore_strerror(rc), msg);
    }
    assert_non_null(c);
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    char *name = info_str(c, "context");
    assert_string_equal(name, spore_context_name(c));
    free(name);
    pid_t parent = via ? th_agent_pid(via) : getpid();
    pid_t ppid = (pid_t)info_int(c, "ppid");
    if (via_sh) {
        assert_true(comm_is(ppid, "sh"));
        ppid = parent_of(ppid);
    }
    assert_int_equal(ppid, parent);
    return c;
}

static spore_context *connect_standin(spore_router *r, const char *method, spore_options *o,
                                      spore_context *via) {
    return connect_standin_sh(r, method, o, via, 0);
}

/* Shuts a context down and waits for its agent to go. */
static void shut(spore_context *c) {
    pid_t pid = th_agent_pid(c);
    TH_OK(spore_context_shutdown(c, 5000));
    assert_int_equal(spore_context_alive(c), 0);
    assert_true(th_wait_exited(pid, 3.0 * th_time_factor()));
    spore_context_free(c);
}

/* One whole round: expectation set by the caller, connect, calls, the log
 * holds exactly `log_line`, shut down. */
static void round_trip(spore_router *r, const char *method, spore_options *o, const char *log_line) {
    spore_context *c = connect_standin(r, method, o, NULL);
    char want[2048];
    snprintf(want, sizeof want, "%s\n", log_line);
    assert_log(want);
    shut(c);
}

/* --------------------------------------------------------- the methods */

static void test_docker(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("exec", "--interactive", "web1", "<BOOT>");
    round_trip(r, "docker", OPTS("container", "web1", "docker_path", tool("docker")),
               "docker exec --interactive web1 /bin/sh -c <script>");

    EXPECT("run", "--interactive", "--rm", "alpine:3.19", "<BOOT>");
    round_trip(r, "docker", OPTS("image", "alpine:3.19", "docker_path", tool("docker")),
               "docker run --interactive --rm alpine:3.19 /bin/sh -c <script>");

    EXPECT("exec", "--interactive", "--user=app", "web1", "<BOOT>");
    round_trip(r, "docker", OPTS("container", "web1", "username", "app", "docker_path", tool("docker")),
               "docker exec --interactive --user=app web1 /bin/sh -c <script>");

    EXPECT("run", "--interactive", "--rm", "--user=1000:1000", "registry.example/app:1", "<BOOT>");
    round_trip(r, "docker",
               OPTS("image", "registry.example/app:1", "username", "1000:1000", "docker_path", tool("docker")),
               "docker run --interactive --rm --user=1000:1000 registry.example/app:1 /bin/sh -c <script>");

    spore_router_free(r);
    th_end(&b);
}

static void test_podman(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("exec", "--interactive", "--", "web1", "<BOOT>");
    round_trip(r, "podman", OPTS("container", "web1", "podman_path", tool("podman")),
               "podman exec --interactive -- web1 /bin/sh -c <script>");

    EXPECT("run", "--interactive", "--rm", "--", "docker.io/library/alpine", "<BOOT>");
    round_trip(r, "podman", OPTS("image", "docker.io/library/alpine", "podman_path", tool("podman")),
               "podman run --interactive --rm -- docker.io/library/alpine /bin/sh -c <script>");

    EXPECT("exec", "--interactive", "--user=app", "--", "web1", "<BOOT>");
    round_trip(r, "podman", OPTS("container", "web1", "username", "app", "podman_path", tool("podman")),
               "podman exec --interactive --user=app -- web1 /bin/sh -c <script>");

    spore_router_free(r);
    th_end(&b);
}

static void test_lxc_and_lxd(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("--clear-env", "--name", "web1", "--", "<BOOT>");
    round_trip(r, "lxc", OPTS("container", "web1", "lxc_attach_path", tool("lxc-attach")),
               "lxc-attach --clear-env --name web1 -- /bin/sh -c <script>");

    EXPECT("exec", "--mode=non-interactive", "web1", "--", "<BOOT>");
    round_trip(r, "lxd", OPTS("container", "web1", "lxc_path", tool("lxc")),
               "lxc exec --mode=non-interactive web1 -- /bin/sh -c <script>");

    spore_router_free(r);
    th_end(&b);
}

/* kubectl_args is a list option: through the C API it is a string, split
 * shell-like (quotes group words, nothing is expanded). */
static void test_kubectl(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("exec", "-i", "api-7f9c", "--", "<BOOT>");
    round_trip(r, "kubectl", OPTS("pod", "api-7f9c", "kubectl_path", tool("kubectl")),
               "kubectl exec -i api-7f9c -- /bin/sh -c <script>");

    /* container, namespace and a plain kubectl_args string */
    EXPECT("--context=prod", "--request-timeout=5s", "--namespace=team-a", "exec", "-i", "api-7f9c", "-c", "app",
           "--", "<BOOT>");
    round_trip(r, "kubectl",
               OPTS("pod", "api-7f9c", "container", "app", "namespace", "team-a", "kubectl_args",
                    "--context=prod  --request-timeout=5s", "kubectl_path", tool("kubectl")),
               "kubectl --context=prod --request-timeout=5s --namespace=team-a exec -i api-7f9c -c app -- "
               "/bin/sh -c <script>");

    /* quoted words keep their spaces; an escaped one too */
    EXPECT("--kubeconfig", "/srv/kube configs/prod.yaml", "--as", "dev ops", "--v=2 3", "exec", "-i", "api-7f9c",
           "--", "<BOOT>");
    round_trip(r, "kubectl",
               OPTS("pod", "api-7f9c", "kubectl_args",
                    "--kubeconfig '/srv/kube configs/prod.yaml' --as \"dev ops\" --v=2\\ 3", "kubectl_path",
                    tool("kubectl")),
               "kubectl --kubeconfig /srv/kube\\ configs/prod.yaml --as dev\\ ops --v=2\\ 3 exec -i api-7f9c -- "
               "/bin/sh -c <script>");

    spore_router_free(r);
    th_end(&b);
}

static void test_jail(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("www", "<BOOT>");
    round_trip(r, "jail", OPTS("container", "www", "jexec_path", tool("jexec")), "jexec www /bin/sh -c <script>");

    EXPECT("-U", "www-data", "www", "<BOOT>");
    round_trip(r, "jail", OPTS("container", "www", "username", "www-data", "jexec_path", tool("jexec")),
               "jexec -U www-data www /bin/sh -c <script>");

    spore_router_free(r);
    th_end(&b);
}

/* command_prefix (a list option, given as a string) goes between the
 * launcher's words and /bin/sh, and really runs in the "container". */
static void test_command_prefix(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("exec", "--interactive", "web1", "<CMD>", "nice", "-n", "5", "<BOOT>");
    spore_context *c = connect_standin(
        r, "docker", OPTS("container", "web1", "command_prefix", "nice -n 5", "docker_path", tool("docker")), NULL);
    assert_log("docker exec --interactive web1 nice -n 5 /bin/sh -c <script>\n");
    errno = 0;
    int ours = getpriority(PRIO_PROCESS, 0);
    assert_int_equal(errno, 0);
    char *out = run_stdout(c, "[\"nice\"]");
    char want[32];
    snprintf(want, sizeof want, "%d\n", ours + 5 > 19 ? 19 : ours + 5);
    assert_string_equal(out, want);
    free(out);
    shut(c);

    /* a quoted word */
    EXPECT("exec", "--interactive", "web1", "<CMD>", "env", "SPORE_PREFIX_TEST=two words", "<BOOT>");
    c = connect_standin(r, "docker",
                        OPTS("container", "web1", "command_prefix", "env 'SPORE_PREFIX_TEST=two words'",
                             "docker_path", tool("docker")),
                        NULL);
    assert_log("docker exec --interactive web1 env SPORE_PREFIX_TEST=two\\ words /bin/sh -c <script>\n");
    char *json = th_call(c, "sys.getenv", "{\"name\":\"SPORE_PREFIX_TEST\"}");
    assert_string_equal(json, "\"two words\"");
    free(json);
    shut(c);

    /* with a shell operator the whole command becomes one sh -c script */
    EXPECT("exec", "--interactive", "web1", "<BOOT>");
    c = connect_standin_sh(
        r, "docker", OPTS("container", "web1", "command_prefix", "cd /tmp &&", "docker_path", tool("docker")), NULL,
        1);
    assert_log("docker exec --interactive web1 /bin/sh -c <script>\n");
    char *cwd = info_str(c, "cwd");
    assert_string_equal(cwd, "/tmp");
    free(cwd);
    shut(c);

    /* on another method: kubectl puts it after its own -- */
    EXPECT("exec", "-i", "api-7f9c", "--", "<CMD>", "nice", "-n", "5", "<BOOT>");
    c = connect_standin(
        r, "kubectl", OPTS("pod", "api-7f9c", "command_prefix", "nice -n 5", "kubectl_path", tool("kubectl")),
        NULL);
    assert_log("kubectl exec -i api-7f9c -- nice -n 5 /bin/sh -c <script>\n");
    shut(c);

    spore_router_free(r);
    th_end(&b);
}

/* local -> docker: the local context's agent runs the stand-in. */
static void test_docker_via_local(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *l = th_connect(r, "local", NULL);

    EXPECT("exec", "--interactive", "--user=app", "web1", "<BOOT>");
    spore_context *c = connect_standin(
        r, "docker", OPTS("container", "web1", "username", "app", "docker_path", tool("docker")), l);
    assert_log("docker exec --interactive --user=app web1 /bin/sh -c <script>\n");
    char want[128];
    snprintf(want, sizeof want, "%s/docker.%u", spore_context_name(l), spore_context_id(c));
    assert_string_equal(spore_context_name(c), want);
    /* a real round trip through the hop */
    char *json = th_call(c, "sys.echo", "{\"value\":[\"through\",\"local\"]}");
    assert_string_equal(json, "[\"through\",\"local\"]");
    free(json);
    pid_t pid = th_agent_pid(c);
    shut(c);
    assert_true(th_wait_exited(pid, 3.0 * th_time_factor()));

    /* a mismatch seen by the agent's connect reaches us the same way */
    EXPECT("exec", "--interactive", "web2", "<BOOT>");
    spore_context *bad = (spore_context *)(uintptr_t)1;
    spore_options *o = OPTS("container", "web1", "docker_path", tool("docker"));
    TH_ERR(spore_connect(&bad, r, "docker", o, l), SPORE_ECONNECT);
    spore_options_free(o);
    assert_null(bad);
    TH_CONTAINS(spore_last_error()->message,
                "standin docker: expected exec --interactive web2 /bin/sh -c <script> got exec --interactive web1 "
                "/bin/sh -c <script> (first difference at argument 3)");

    /* the local context is unharmed */
    json = th_call(l, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    spore_context_free(l);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------------- errors */

static void expect_einval(spore_router *r, const char *method, spore_options *o, const char *needle) {
    spore_context *c = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(&c, r, method, o, NULL), SPORE_EINVAL);
    spore_options_free(o);
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, needle);
}

static void test_invalid_options(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    EXPECT("never", "<BOOT>");

    /* the required option is named */
    expect_einval(r, "docker", OPTS("docker_path", tool("docker")), "'container' and 'image'");
    expect_einval(r, "podman", OPTS("podman_path", tool("podman")), "'container' and 'image'");
    expect_einval(r, "lxc", OPTS("lxc_attach_path", tool("lxc-attach")), "method lxc needs option 'container'");
    expect_einval(r, "lxd", OPTS("lxc_path", tool("lxc")), "method lxd needs option 'container'");
    expect_einval(r, "jail", OPTS("username", "www", "jexec_path", tool("jexec")),
                  "method jail needs option 'container'");
    expect_einval(r, "kubectl", OPTS("container", "app", "kubectl_path", tool("kubectl")),
                  "method kubectl needs option 'pod'");
    expect_einval(r, "lxc", OPTS("container", "", "lxc_attach_path", tool("lxc-attach")), "'container'");
    expect_einval(r, "machinectl", OPTS("machinectl_path", tool("machinectl")), "'container'");

    /* exactly one of container and image */
    expect_einval(r, "docker", OPTS("container", "web1", "image", "alpine", "docker_path", tool("docker")),
                  "method docker needs exactly one of the options 'container' and 'image'");
    expect_einval(r, "podman", OPTS("container", "web1", "image", "alpine", "podman_path", tool("podman")),
                  "method podman needs exactly one of the options 'container' and 'image'");

    /* options of another method, wrong types, bad list strings */
    expect_einval(r, "lxc", OPTS("container", "web1", "image", "alpine"), "unknown option 'image' for method lxc");
    expect_einval(r, "docker", OPTS("pod", "p"), "unknown option 'pod' for method docker");
    expect_einval(r, "kubectl", OPTS("pod", "p", "kubectl_args", "--context=$CTX"), "kubectl_args");
    expect_einval(r, "kubectl", OPTS("pod", "p", "kubectl_args", "--as 'dev ops"), "unterminated single quote");
    expect_einval(r, "docker", OPTS("container", "web1", "command_prefix", "nice -n 5 > /dev/null"),
                  "command_prefix");
    spore_options *o = OPTS("pod", "p");
    TH_OK(spore_options_set_int(o, "kubectl_args", 3));
    expect_einval(r, "kubectl", o, "option 'kubectl_args' must be a list of strings or a string");
    o = OPTS("docker_path", tool("docker"));
    TH_OK(spore_options_set_int(o, "container", 7));
    expect_einval(r, "docker", o, "option 'container' must be a string");

    /* none of this ran a stand-in or left a process */
    assert_log("");
    assert_int_equal(th_count_descendants(), 0);
    spore_router_free(r);
    th_end(&b);
}

/* A stand-in that gets another argv fails the connect, and its stderr line
 * is in the error. */
static void test_argv_mismatch(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);

    EXPECT("exec", "--interactive", "web2", "<BOOT>");
    spore_context *c = (spore_context *)(uintptr_t)1;
    spore_options *o = OPTS("name", "mismatch", "container", "web1", "docker_path", tool("docker"));
    double t0 = th_now();
    TH_ERR(spore_connect(&c, r, "docker", o, NULL), SPORE_ECONNECT);
    assert_true(th_now() - t0 < 3.0 * th_time_factor());
    spore_options_free(o);
    assert_null(c);
    const spore_error *e = spore_last_error();
    TH_CONTAINS(e->message, "standin docker: expected exec --interactive web2 /bin/sh -c <script> got exec "
                            "--interactive web1 /bin/sh -c <script> (first difference at argument 3)");
    TH_CONTAINS(e->message, "mismatch");
    assert_string_equal(e->context, "mismatch");
    assert_log("docker exec --interactive web1 /bin/sh -c <script>\n");

    /* a word more, a word less */
    EXPECT("exec", "--interactive", "--user=app", "web1", "<BOOT>");
    o = OPTS("container", "web1", "docker_path", tool("docker"));
    TH_ERR(spore_connect(&c, r, "docker", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message,
                "standin docker: expected exec --interactive --user=app web1 /bin/sh -c <script> got exec "
                "--interactive web1 /bin/sh -c <script> (first difference at argument 3)");
    EXPECT("exec", "-i", "api-7f9c", "--", "<BOOT>");
    o = OPTS("pod", "api-7f9c", "kubectl_args", "--v=2", "kubectl_path", tool("kubectl"));
    TH_ERR(spore_connect(&c, r, "kubectl", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message,
                "standin kubectl: expected exec -i api-7f9c -- /bin/sh -c <script> got --v=2 exec -i api-7f9c -- "
                "/bin/sh -c <script> (first difference at argument 1)");
    /* the boot command is exactly three words: a prefix is seen */
    EXPECT("exec", "--interactive", "web1", "<BOOT>");
    o = OPTS("container", "web1", "command_prefix", "nice", "docker_path", tool("docker"));
    TH_ERR(spore_connect(&c, r, "docker", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message,
                "standin docker: expected exec --interactive web1 /bin/sh -c <script> got exec --interactive web1 "
                "nice /bin/sh -c <script> (first difference at argument 4)");

    assert_int_equal(th_wait_no_descendants(2.0 * th_time_factor()), 0);
    spore_router_free(r);
    th_end(&b);
}

/* setns option checks and failed leader lookups (no root needed: they fail
 * before any namespace is entered). */
static void test_setns_errors(void **state) {
    (void)state;
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    EXPECT("never");

    expect_einval(r, "setns", OPTS("container", "web1"), "method setns needs option 'kind'");
    expect_einval(r, "setns", NULL, "method setns needs option 'kind'");
    expect_einval(r, "setns", OPTS("kind", "vmware", "container", "web1"), "option 'kind'");
    expect_einval(r, "setns", OPTS("kind", "pid"), "method setns with kind pid needs option 'pid'");
    spore_options *o = OPTS("kind", "pid");
    TH_OK(spore_options_set_int(o, "pid", -4));
    expect_einval(r, "setns", o, "needs option 'pid'");
    expect_einval(r, "setns", OPTS("kind", "docker"), "method setns needs option 'container'");
    expect_einval(r, "setns", OPTS("kind", "machinectl", "container", ""), "'container'");
    o = OPTS("kind", "pid");
    TH_OK(spore_options_set_str(o, "pid", "1"));
    expect_einval(r, "setns", o, "option 'pid' must be an integer");
    assert_log("");

    /* The lookup tool's argv is asserted too: a mismatch fails the connect
     * with the stand-in's line and the helper's own. */
    EXPECT("inspect", "--format={{.State.Pid}}", "web2");
    spore_context *c = (spore_context *)(uintptr_t)1;
    o = OPTS("kind", "docker", "container", "web1", "docker_path", tool("docker"));
    TH_ERR(spore_connect(&c, r, "setns", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, "standin docker: expected inspect --format={{.State.Pid}} web2 got "
                                             "inspect --format={{.State.Pid}} web1 (first difference at argument 3)");
    TH_CONTAINS(spore_last_error()->message, "failed to name the container's process");
    assert_log("docker inspect --format={{.State.Pid}} web1\n");

    /* a lookup tool that does not exist */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/bin/no-such-machinectl", g.dir);
    o = OPTS("container", "m1", "machinectl_path", missing);
    TH_ERR(spore_connect(&c, r, "machinectl", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message, missing);

    assert_int_equal(th_wait_no_descendants(2.0 * th_time_factor()), 0);
    spore_router_free(r);
    th_end(&b);
}

/* ------------------------------------------------------ setns for real */

/* A process in new pid, uts, net and mount namespaces:
 *   unshare --pid --fork --kill-child --mount-proc --uts --net --mount \
 *     sh -c 'hostname spore-test-ns && exec sleep 600'
 * `leader` is the sleep (pid 1 of its namespace), the child of unshare. */
static struct {
    th_baseline b;
    pid_t unshare;
    pid_t leader;
    char why[256]; /* why the tests are skipped, when they are */
    char shared[3][64];
    int existed[3]; /* the first stage's fallback dirs of user nobody */
} ns;

static pid_t find_child(pid_t parent, const char *comm) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = -1;
    if (!d) return -1;
    while (found < 0 && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1) continue;
        if (parent_of((pid_t)pid) == parent && comm_is((pid_t)pid, comm)) found = (pid_t)pid;
    }
    closedir(d);
    return found;
}

/* Kills and reaps the namespace's processes (idempotent). SIGKILL to
 * unshare takes its child, the namespace's pid 1, along (--kill-child), and
 * with it every process in the namespace. */
static void ns_stop(void) {
    if (ns.unshare > 0) {
        kill(ns.unshare, SIGKILL);
        while (waitpid(ns.unshare, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (ns.leader > 0 && comm_is(ns.leader, "sleep")) kill(ns.leader, SIGKILL);
    if (ns.leader > 0) th_wait_exited(ns.leader, 5.0);
    ns.unshare = ns.leader = 0;
    unsetenv("SPORE_STANDIN_PID");
    for (int i = 0; i < 3; i++)
        if (ns.shared[i][0] && !ns.existed[i]) rmdir(ns.shared[i]); /* empty: agent_cache was off */
}

static int ns_setup(void **state) {
    (void)state;
    memset(&ns, 0, sizeof ns);
    ns.b = th_begin();
    if (geteuid() != 0) {
        snprintf(ns.why, sizeof ns.why, "setns needs root (euid %d)", (int)geteuid());
        return 0;
    }
    snprintf(ns.shared[0], sizeof ns.shared[0], "/dev/shm/spore-65534");
    snprintf(ns.shared[1], sizeof ns.shared[1], "/tmp/spore-65534");
    snprintf(ns.shared[2], sizeof ns.shared[2], "/var/tmp/spore-65534");
    for (int i = 0; i < 3; i++) ns.existed[i] = th_file_exists(ns.shared[i]);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execlp("unshare", "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "--net", "--mount",
               "sh", "-c", "hostname spore-test-ns && exec sleep 600", (char *)NULL);
        _exit(127);
    }
    ns.unshare = pid;
    double end = th_now() + 5.0 * th_time_factor();
    while ((ns.leader = find_child(ns.unshare, "sleep")) <= 0) {
        int st;
        if (waitpid(ns.unshare, &st, WNOHANG) == ns.unshare) {
            ns.unshare = 0;
            snprintf(ns.why, sizeof ns.why, "unshare failed (status 0x%x): no namespaces to enter", st);
            return 0;
        }
        if (th_now() > end) {
            ns_stop();
            snprintf(ns.why, sizeof ns.why, "unshare started no sleep within 5 s");
            return 0;
        }
        th_sleep_ms(2);
    }
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", (int)ns.leader);
    setenv("SPORE_STANDIN_PID", pidstr, 1); /* no router exists yet */
    return 0;
}

static int ns_teardown(void **state) {
    (void)state;
    ns_stop();
    return 0;
}

#define NS_REQUIRED()                                      \
    do {                                                   \
        if (ns.leader <= 0) {                              \
            print_message("skipped: %s\n", ns.why);        \
            skip();                                        \
        }                                                  \
    } while (0)

/* At the end of a test: nothing left but the namespace, which goes now. */
static void ns_end(void) {
    ns_stop();
    th_end(&ns.b);
}

/* The context is in the namespaces of the leader: its hostname, only a
 * loopback interface, the namespace's pid 1 is the sleep, and its parent
 * (the setns helper) is outside its pid namespace. */
static void assert_in_ns(spore_context *c) {
    char *json = th_call(c, "sys.ping", NULL);
    assert_string_equal(json, "true");
    free(json);
    char *host = info_str(c, "hostname");
    assert_string_equal(host, "spore-test-ns");
    free(host);
    assert_int_equal(info_int(c, "ppid"), 0);

    spore_result *res = NULL;
    TH_OK(spore_call(&res, c, "fs.read", "{\"path\":\"/proc/net/dev\"}", NULL, 0, 10000));
    size_t len = 0;
    const char *dev = spore_result_bytes(res, &len);
    char text[4096];
    snprintf(text, sizeof text, "%.*s", (int)len, dev ? dev : "");
    spore_result_free(res);
    /* two header lines, then one line per interface */
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    if (lines != 3 || !strstr(text, " lo:")) fail_msg("/proc/net/dev in the namespace:\n%s", text);

    char *links = run_stdout(c, "[\"ip\",\"-o\",\"link\"]");
    if (strncmp(links, "1: lo:", 6) != 0 || strchr(links, '\n') != links + strlen(links) - 1)
        fail_msg("ip -o link in the namespace:\n%s", links);
    free(links);

    TH_OK(spore_call(&res, c, "fs.read", "{\"path\":\"/proc/1/cmdline\"}", NULL, 0, 10000));
    const char *cmd = spore_result_bytes(res, &len);
    assert_int_equal(len, sizeof "sleep\0" "600");
    assert_memory_equal(cmd, "sleep\0" "600", len);
    spore_result_free(res);
}

static spore_context *connect_ns(spore_router *r, const char *method, spore_options *o, spore_context *via) {
    spore_context *c = NULL;
    int rc = spore_connect(&c, r, method, o, via);
    spore_options_free(o);
    if (rc != SPORE_OK) {
        char *log = read_log();
        fprintf(stderr, "stand-in log:\n%s", log);
        free(log);
        fail_msg("connect %s returned %d (%s): %s", method, rc, spore_strerror(rc), spore_last_error()->message);
    }
    return c;
}

static void test_setns_pid(void **state) {
    (void)state;
    NS_REQUIRED();
    spore_router *r = th_router(NULL);
    spore_options *o = OPTS("kind", "pid");
    TH_OK(spore_options_set_int(o, "pid", ns.leader));
    spore_context *c = connect_ns(r, "setns", o, NULL);
    assert_in_ns(c);
    assert_int_equal(info_int(c, "uid"), 0);
    char want[64];
    snprintf(want, sizeof want, "setns.%u", spore_context_id(c));
    assert_string_equal(spore_context_name(c), want);
    /* the namespace is the leader's, not ours */
    char *host = info_str(c, "hostname");
    char ours[256] = "";
    gethostname(ours, sizeof ours);
    assert_string_not_equal(host, ours);
    free(host);
    TH_OK(spore_context_shutdown(c, 5000));
    spore_context_free(c);

    /* kind defaults to pid when a pid is given */
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_int(o, "pid", ns.leader));
    c = connect_ns(r, "setns", o, NULL);
    assert_in_ns(c);
    TH_OK(spore_context_shutdown(c, 5000));
    spore_context_free(c);

    /* through a local context: its agent runs the helper (its own exe) */
    spore_context *l = th_connect(r, "local", NULL);
    o = OPTS("kind", "pid");
    TH_OK(spore_options_set_int(o, "pid", ns.leader));
    c = connect_ns(r, "setns", o, l);
    assert_in_ns(c);
    spore_context_free(c);
    spore_context_free(l);

    spore_router_free(r);
    ns_end();
}

static void test_setns_username(void **state) {
    (void)state;
    NS_REQUIRED();
    spore_router *r = th_router(NULL);
    spore_options *o = OPTS("kind", "pid", "username", "nobody");
    TH_OK(spore_options_set_int(o, "pid", ns.leader));
    /* nobody cannot use our cache dir: the first stage falls back to shared
     * dirs (/dev/shm/spore-65534, ...); keep no agent there */
    TH_OK(spore_options_set_bool(o, "agent_cache", 0));
    spore_context *c = connect_ns(r, "setns", o, NULL);
    assert_in_ns(c);
    assert_int_equal(info_int(c, "uid"), 65534);
    assert_int_equal(info_int(c, "euid"), 65534);
    char *user = info_str(c, "user");
    assert_string_equal(user, "nobody");
    free(user);
    /* no group of root's is kept */
    char *ids = run_stdout(c, "[\"id\",\"-G\"]");
    assert_string_equal(ids, "65534\n");
    free(ids);
    TH_OK(spore_context_shutdown(c, 5000));
    spore_context_free(c);

    /* a user the target does not have */
    o = OPTS("kind", "pid", "username", "no-such-user-spore");
    TH_OK(spore_options_set_int(o, "pid", ns.leader));
    c = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(&c, r, "setns", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message, "no user 'no-such-user-spore'");

    spore_router_free(r);
    ns_end();
}

/* The kinds that ask a tool for the leader, through the stand-ins (which
 * answer with SPORE_STANDIN_PID in each tool's own format). */
static void setns_kind(spore_router *r, const char *method, const char *kind, const char *container,
                       const char *path_key, const char *tool_name, const char *log_line) {
    spore_options *o = OPTS("container", container, path_key, tool(tool_name));
    if (kind) TH_OK(spore_options_set_str(o, "kind", kind));
    spore_context *c = connect_ns(r, method, o, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s\n", log_line);
    assert_log(want);
    assert_in_ns(c);
    TH_OK(spore_context_shutdown(c, 5000));
    spore_context_free(c);
}

static void test_setns_kinds(void **state) {
    (void)state;
    NS_REQUIRED();
    spore_router *r = th_router(NULL);

    EXPECT("inspect", "--format={{.State.Pid}}", "web1");
    setns_kind(r, "setns", "docker", "web1", "docker_path", "docker", "docker inspect --format={{.State.Pid}} web1");
    EXPECT("inspect", "--format={{.State.Pid}}", "web1");
    setns_kind(r, "setns", "podman", "web1", "podman_path", "podman", "podman inspect --format={{.State.Pid}} web1");
    EXPECT("--name", "web1", "--pid");
    setns_kind(r, "setns", "lxc", "web1", "lxc_info_path", "lxc-info", "lxc-info --name web1 --pid");
    EXPECT("info", "web1");
    setns_kind(r, "setns", "lxd", "web1", "lxc_path", "lxc", "lxc info web1");
    /* `lxc info` prints the name before the pid: a name containing "pid"
     * must not be taken for it */
    EXPECT("info", "rapid7");
    setns_kind(r, "setns", "lxd", "rapid7", "lxc_path", "lxc", "lxc info rapid7");
    EXPECT("show", "--property=Leader", "m1");
    setns_kind(r, "setns", "machinectl", "m1", "machinectl_path", "machinectl",
               "machinectl show --property=Leader m1");
    /* the machinectl method is setns with kind machinectl */
    EXPECT("show", "--property=Leader", "m1");
    setns_kind(r, "machinectl", NULL, "m1", "machinectl_path", "machinectl", "machinectl show --property=Leader m1");

    /* ... with a user */
    EXPECT("show", "--property=Leader", "m1");
    spore_options *o = OPTS("container", "m1", "username", "nobody", "machinectl_path", tool("machinectl"));
    TH_OK(spore_options_set_bool(o, "agent_cache", 0));
    spore_context *c = connect_ns(r, "machinectl", o, NULL);
    assert_log("machinectl show --property=Leader m1\n");
    assert_in_ns(c);
    assert_int_equal(info_int(c, "uid"), 65534);
    char want[64];
    snprintf(want, sizeof want, "machinectl.%u", spore_context_id(c));
    assert_string_equal(spore_context_name(c), want);
    spore_context_free(c);

    spore_router_free(r);
    ns_end();
}

/* A pid that does not exist, and a leader lookup that answers one. */
static void test_setns_no_such_process(void **state) {
    (void)state;
    NS_REQUIRED();
    pid_t gone = ns.leader; /* known to have existed, gone after this */
    ns_stop();
    assert_true(th_wait_pid_gone(gone, 5.0));
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", (int)gone);
    setenv("SPORE_STANDIN_PID", pidstr, 1); /* no router exists yet */

    spore_router *r = th_router(NULL);
    char needle[64];
    snprintf(needle, sizeof needle, "/proc/%d", (int)gone);
    spore_options *o = OPTS("kind", "pid", "name", "ghost");
    TH_OK(spore_options_set_int(o, "pid", gone));
    spore_context *c = (spore_context *)(uintptr_t)1;
    TH_ERR(spore_connect(&c, r, "setns", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, needle);
    TH_CONTAINS(spore_last_error()->message, "ghost");

    /* a leader lookup that names a process that is gone */
    EXPECT("inspect", "--format={{.State.Pid}}", "web1");
    o = OPTS("kind", "docker", "container", "web1", "docker_path", tool("docker"));
    TH_ERR(spore_connect(&c, r, "setns", o, NULL), SPORE_ECONNECT);
    spore_options_free(o);
    TH_CONTAINS(spore_last_error()->message, needle);
    assert_log("docker inspect --format={{.State.Pid}} web1\n");

    spore_router_free(r);
    unsetenv("SPORE_STANDIN_PID");
    ns_end();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docker),
        cmocka_unit_test(test_podman),
        cmocka_unit_test(test_lxc_and_lxd),
        cmocka_unit_test(test_kubectl),
        cmocka_unit_test(test_jail),
        cmocka_unit_test(test_command_prefix),
        cmocka_unit_test(test_docker_via_local),
        cmocka_unit_test(test_invalid_options),
        cmocka_unit_test(test_argv_mismatch),
        cmocka_unit_test(test_setns_errors),
        cmocka_unit_test_setup_teardown(test_setns_pid, ns_setup, ns_teardown),
        cmocka_unit_test_setup_teardown(test_setns_username, ns_setup, ns_teardown),
        cmocka_unit_test_setup_teardown(test_setns_kinds, ns_setup, ns_teardown),
        cmocka_unit_test_setup_teardown(test_setns_no_such_process, ns_setup, ns_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
