/* demo.c - a tour of spore: two contexts (an agent and a fork of it), calls
 * and their cost, a command whose output arrives live, a remote error, a
 * pipelined chain of file operations, a chain through ssh and sudo (with
 * the throw-away sshd of scripts/demo), and a clean shutdown.
 *
 * Everything is single-threaded: the live output is read by polling the
 * router's log fd and the call's fd together.
 *
 *   cc -std=c99 demo.c $(pkg-config --cflags --libs spore) -o demo && ./demo
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spore/spore.h>

static double t0; /* start of the demo */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void section(const char *title)
{
    printf("\n== %s\n", title);
}

static void die(const char *what)
{
    const spore_error *e = spore_last_error();
    fprintf(stderr, "demo: %s failed: %s (%s)\n", what, e->message, spore_strerror(e->code));
    exit(1);
}

/* Prints every log record that has arrived, with the context it came from. */
static void show_logs(spore_router *router)
{
    spore_log_record *rec;
    while (spore_router_next_log(router, &rec, 0) == SPORE_OK) {
        printf("  [+%5.2fs] %-16s %-6s| %s\n", now() - t0, spore_log_record_context(rec),
               spore_log_record_logger(rec), spore_log_record_message(rec));
        spore_log_record_free(rec);
    }
    fflush(stdout);
}

/* Copies the value of "key" in a flat JSON object (as the library prints it)
 * into buf, without quotes. Enough for this demo; use a JSON library for real. */
static const char *field(const char *json, const char *key, char *buf, size_t n)
{
    char pat[64];
    const char *p;
    size_t len = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(json, pat);
    if (!p || n == 0)
        return "?";
    p += strlen(pat);
    if (*p == '"')
        p++;
    while (p[len] && p[len] != '"' && p[len] != ',' && p[len] != '}' && len + 1 < n)
        len++;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

static spore_result *call(spore_context *ctx, const char *fn, const char *args)
{
    spore_result *res = NULL;
    if (spore_call(&res, ctx, fn, args, NULL, 0, 30000) != SPORE_OK)
        die(fn);
    return res;
}

static void describe(spore_context *ctx)
{
    char a[64], b[64], c[64], d[64];
    spore_result *res = call(ctx, "sys.info", NULL);
    const char *j = spore_result_json(res);
    printf("  %-16s pid %-7s ppid %-7s user %s on %s\n", spore_context_name(ctx),
           field(j, "pid", a, sizeof a), field(j, "ppid", b, sizeof b), field(j, "user", c, sizeof c),
           field(j, "hostname", d, sizeof d));
    spore_result_free(res);
}

static void ping_timing(spore_context *ctx)
{
    const int n = 1000;
    spore_pending **calls = malloc(sizeof *calls * (size_t)n);
    double start;
    int i;

    start = now();
    for (i = 0; i < n; i++)
        spore_result_free(call(ctx, "sys.ping", NULL));
    printf("  %-16s %d sys.ping one after the other: %6.1f us per call\n", spore_context_name(ctx), n,
           (now() - start) * 1e6 / n);

    if (!calls)
        return;
    start = now();
    for (i = 0; i < n; i++)
        if (spore_call_async(&calls[i], ctx, "sys.ping", NULL, NULL, 0) != SPORE_OK)
            die("spore_call_async");
    for (i = 0; i < n; i++) {
        if (spore_call_wait(calls[i], NULL, 30000) != SPORE_OK)
            die("spore_call_wait");
        spore_call_free(calls[i]);
    }
    printf("  %-16s %d sys.ping in flight together:  %6.1f us per call\n", spore_context_name(ctx), n,
           (now() - start) * 1e6 / n);
    free(calls);
}

/* Starts a command and prints its output lines while it runs. */
static void live_output(spore_router *router, spore_context *ctx)
{
    static const char args[] =
        "{\"shell\": \"for i in 1 2 3 4; do echo \\\"tick $i\\\"; sleep 0.4; done; "
        "echo 'and a line on stderr' >&2; exit 3\", \"stream\": true, \"capture\": false}";
    spore_pending *pc = NULL;
    spore_result *res = NULL;
    char rc[16];
    double start = now();

    printf("  %s runs: for i in 1 2 3 4; do echo \"tick $i\"; sleep 0.4; done ...\n", spore_context_name(ctx));
    if (spore_call_async(&pc, ctx, "proc.run", args, NULL, 0) != SPORE_OK)
        die("proc.run");
    while (!spore_call_done(pc)) {
        struct pollfd fds[2];
        fds[0].fd = spore_router_log_fd(router);
        fds[0].events = POLLIN;
        fds[1].fd = spore_call_fd(pc);
        fds[1].events = POLLIN;
        poll(fds, 2, -1);
        show_logs(router);
    }
    if (spore_call_wait(pc, &res, 0) != SPORE_OK)
        die("proc.run");
    show_logs(router); /* lines that came just before the result */
    printf("  the command exited with rc %s after %.2f s\n", field(spore_result_json(res), "rc", rc, sizeof rc),
           now() - start);
    spore_result_free(res);
    spore_call_free(pc);
}

static void remote_error(spore_context *ctx)
{
    spore_result *res = NULL;
    const spore_error *e;
    int rc = spore_call(&res, ctx, "fs.read", "{\"path\": \"/nonexistent/file\"}", NULL, 0, 30000);

    if (rc == SPORE_OK) {
        spore_result_free(res);
        printf("  unexpected: the read succeeded\n");
        return;
    }
    e = spore_last_error();
    printf("  fs.read of /nonexistent/file failed, as it should:\n");
    printf("    code      %d (%s)\n", e->code, spore_strerror(e->code));
    printf("    type      %s\n", e->remote_type);
    printf("    context   %s\n", e->context);
    printf("    function  %s\n", e->function);
    printf("    message   %s\n", e->message);
}

static void chain_step(spore_chain *chain, const char *fn, const char *args)
{
    if (spore_chain_call_no_reply(chain, fn, args, NULL, 0) != SPORE_OK)
        die(fn);
    printf("  %-10s %s   (no reply: pipelined)\n", fn, args);
}

static void file_chain(spore_context *ctx)
{
    char dir[256], args[1024];
    const char *j;
    size_t len = 0;
    const void *bytes;
    spore_chain *chain = NULL;
    spore_result *res = call(ctx, "fs.mktemp", "{\"dir\": \"/tmp\", \"prefix\": \"spore-demo-\", \"directory\": true}");

    /* The result is a JSON string; /tmp/spore-demo-XXXXXX needs no escaping. */
    j = spore_result_json(res);
    snprintf(dir, sizeof dir, "%.*s", (int)strlen(j) - 2, j + 1);
    spore_result_free(res);
    printf("  fs.mktemp  -> %s\n", dir);

    if (spore_chain_new(&chain, ctx) != SPORE_OK)
        die("spore_chain_new");
    snprintf(args, sizeof args, "{\"path\": \"%s/notes\"}", dir);
    chain_step(chain, "fs.mkdir", args);
    snprintf(args, sizeof args, "{\"path\": \"%s/notes/a.txt\", \"text\": \"written by spore\\n\"}", dir);
    chain_step(chain, "fs.write", args);
    snprintf(args, sizeof args, "{\"src\": \"%s/notes/a.txt\", \"dst\": \"%s/notes/b.txt\"}", dir, dir);
    chain_step(chain, "fs.rename", args);

    snprintf(args, sizeof args, "{\"path\": \"%s/notes\"}", dir);
    if (spore_chain_call(&res, chain, "fs.list", args, NULL, 0, 30000) != SPORE_OK)
        die("fs.list");
    printf("  fs.list    -> %s\n", spore_result_json(res));
    spore_result_free(res);

    snprintf(args, sizeof args, "{\"path\": \"%s/notes/b.txt\"}", dir);
    if (spore_chain_call(&res, chain, "fs.read", args, NULL, 0, 30000) != SPORE_OK)
        die("fs.read");
    bytes = spore_result_bytes(res, &len);
    printf("  fs.read    -> %s + %zu bytes: %.*s", spore_result_json(res), len, (int)len, (const char *)bytes);
    spore_result_free(res);

    /* A failing step: every later step of the chain fails with its error. */
    snprintf(args, sizeof args, "{\"path\": \"%s/notes/a.txt\"}", dir);
    chain_step(chain, "fs.read", args);
    snprintf(args, sizeof args, "{\"path\": \"%s/notes/b.txt\"}", dir);
    if (spore_chain_call(&res, chain, "fs.stat", args, NULL, 0, 30000) == SPORE_OK)
        die("fs.stat after a failed step (it should not run)");
    printf("  fs.stat    -> not run, the chain failed earlier: %s\n", spore_last_error()->message);
    spore_chain_free(chain);

    snprintf(args, sizeof args, "{\"path\": \"%s\", \"recursive\": true}", dir);
    spore_result_free(call(ctx, "fs.remove", args));
    printf("  fs.remove  -> %s removed (a plain call, outside the chain)\n", dir);
}

/* A chain through ssh to this machine and sudo to root there, when
 * scripts/demo has started its throw-away sshd (it passes the port, a key
 * and a known_hosts file in the environment). */
static void ssh_chain(spore_router *router)
{
    const char *port = getenv("SPORE_DEMO_SSH_PORT"), *key = getenv("SPORE_DEMO_SSH_KEY");
    const char *known = getenv("SPORE_DEMO_KNOWN_HOSTS"), *user = getenv("SPORE_DEMO_SSH_USER");
    spore_options *opts = NULL;
    spore_context *ssh = NULL, *root = NULL;
    char buf[256];
    double start;
    spore_result *res;

    if (!port || !key || !known || !user) {
        printf("  (skipped: run through scripts/demo, which starts a throw-away sshd)\n");
        return;
    }
    if (spore_options_new(&opts) != SPORE_OK ||
        spore_options_set_str(opts, "hostname", "127.0.0.1") != SPORE_OK ||
        spore_options_set_int(opts, "port", atoi(port)) != SPORE_OK ||
        spore_options_set_str(opts, "username", user) != SPORE_OK ||
        spore_options_set_str(opts, "identity_file", key) != SPORE_OK ||
        spore_options_set_str(opts, "known_hosts_file", known) != SPORE_OK ||
        spore_options_set_bool(opts, "use_agent", 0) != SPORE_OK)
        die("ssh options");
    start = now();
    if (spore_connect(&ssh, router, "ssh", opts, NULL) != SPORE_OK)
        die("connect ssh");
    spore_options_free(opts);
    printf("  %s connected in %.1f ms (libssh2, the agent image sent over the ssh channel)\n",
           spore_context_name(ssh), (now() - start) * 1e3);
    describe(ssh);
    ping_timing(ssh);
    if (strcmp(user, "root") != 0) {
        printf("  (sudo skipped: the demo's ssh account is %s, and sudo would ask for its password)\n", user);
    } else {
        start = now();
        if (spore_connect(&root, router, "sudo", NULL, ssh) != SPORE_OK)
            die("connect sudo through ssh");
        printf("  %s connected in %.1f ms (sudo, run by the agent behind ssh)\n", spore_context_name(root),
               (now() - start) * 1e3);
        res = call(root, "proc.run", "{\"argv\": [\"id\", \"-un\"]}");
        printf("  id -un there: %s\n", field(spore_result_json(res), "stdout", buf, sizeof buf));
        spore_result_free(res);
        ping_timing(root);
        if (spore_context_shutdown(root, 5000) != SPORE_OK)
            die("shutdown sudo");
        spore_context_free(root);
    }
    if (spore_context_shutdown(ssh, 5000) != SPORE_OK)
        die("shutdown ssh");
    spore_context_free(ssh);
    show_logs(router);
}

int main(void)
{
    spore_router *router = NULL;
    spore_context *local = NULL, *forked = NULL;
    spore_options *opts = NULL;
    double start;

    t0 = now(); /* log records are shown with the time since this */
    printf("spore demo, library %s\n", spore_version_string());
    if (spore_router_new(&router, NULL) != SPORE_OK)
        die("spore_router_new");

    section("two contexts: an agent on this machine, and a fork of it");
    start = now();
    if (spore_options_new(&opts) != SPORE_OK || spore_connect(&local, router, "local", opts, NULL) != SPORE_OK)
        die("connect local");
    printf("  %s connected in %.1f ms\n", spore_context_name(local), (now() - start) * 1e3);
    start = now();
    if (spore_connect(&forked, router, "fork", opts, local) != SPORE_OK)
        die("connect fork");
    printf("  %s connected in %.1f ms (through %s)\n", spore_context_name(forked), (now() - start) * 1e3,
           spore_context_name(local));
    spore_options_free(opts);
    describe(local);
    describe(forked);

    section("the cost of a call");
    ping_timing(local);
    ping_timing(forked);

    section("live output: proc.run streams lines as log records");
    live_output(router, forked);

    section("a remote error carries its code, type, context and function");
    remote_error(forked);

    section("a chain of fs.* steps: run in order, stop at the first failure");
    file_chain(local);

    section("a chain through ssh to this machine, then sudo");
    ssh_chain(router);

    section("shutting down");
    show_logs(router);
    if (spore_context_shutdown(forked, 5000) != SPORE_OK || spore_context_shutdown(local, 5000) != SPORE_OK)
        die("shutdown");
    printf("  %s alive: %d, %s alive: %d\n", spore_context_name(forked), spore_context_alive(forked),
           spore_context_name(local), spore_context_alive(local));
    spore_context_free(forked);
    spore_context_free(local);
    spore_router_free(router);
    printf("  done\n");
    return 0;
}
