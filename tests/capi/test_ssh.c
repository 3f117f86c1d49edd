/* ssh for real, with both backends (libssh2 in this process, and the
 * OpenSSH client), against the throw-away sshd of tests/harness on 127.0.0.1: keys (with and without passphrase),
 * passwords, host key checking, a banner that says "password", a remote
 * shell that says "Permission denied", debug lines, failures, and chains
 * through ssh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "harness_env.h"
#include "helpers.h"
#include "contexts.h"

/* The backend under test; hops opened through another context always use
 * the OpenSSH client (the agent has no libssh2). */
static const char *g_backend = "openssh";

static int is_openssh(void) { return strcmp(g_backend, "openssh") == 0; }

/* Options for the harness's sshd as `user`, then key/value pairs (values
 * "true"/"false" are booleans, "#123" integers, else strings). */
static int ssh_connect(spore_context **out, spore_router *r, const char *method, spore_context *via, ...) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    if (strcmp(method, "ssh") == 0) {
        TH_OK(spore_options_set_str(o, "hostname", th_hvar("SPORE_TEST_SSHD_HOST")));
        TH_OK(spore_options_set_int(o, "port", atoi(th_hvar("SPORE_TEST_SSHD_PORT"))));
        TH_OK(spore_options_set_str(o, "known_hosts_file", th_hvar("SPORE_TEST_KNOWN_HOSTS")));
        const char *backend = via ? "openssh" : g_backend;
        TH_OK(spore_options_set_str(o, "backend", backend));
        /* The user's ~/.ssh/config and agent are not part of the test. */
        if (strcmp(backend, "openssh") == 0) TH_OK(spore_options_set_str(o, "ssh_args", "-F /dev/null"));
        TH_OK(spore_options_set_bool(o, "use_agent", 0));
    }
    va_list ap;
    va_start(ap, via);
    th_set_pairs(o, ap);
    va_end(ap);
    return th_connect_opts(out, r, method, o, via);
}

/* sys.echo of n bytes made by fill; asserts they come back unchanged. */
static void echo_roundtrip(spore_context *c, size_t n, unsigned char (*fill)(size_t)) {
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++) data[i] = fill(i);
    spore_result *res = NULL;
    TH_OK(spore_call(&res, c, "sys.echo", "{\"value\": 1}", data, n, 30000));
    size_t got = 0;
    const void *back = spore_result_bytes(res, &got);
    assert_int_equal(got, n);
    assert_memory_equal(back, data, n);
    spore_result_free(res);
    free(data);
}

static unsigned char noisy(size_t i) { return (unsigned char)(i ^ (i >> 9)); }
static unsigned char compressible(size_t i) { return (unsigned char)((i % 7 == 0) ? i * 13 : 'a'); }

static void test_key_login(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"), NULL));
    th_assert_user(c, "spore-test-key");
    /* Calls and bulk data over the ssh stream. */
    echo_roundtrip(c, 2 << 20, noisy);
    th_done(r);
    th_end(&b);
}

/* Keys from a running ssh-agent (SSH_AUTH_SOCK), with no identity_file. */
static void test_ssh_agent(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    char *dir = th_mkdtemp("sshagent");
    char sock[512], cmd[2048];
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    pid_t agent = fork();
    if (agent == 0) {
        execlp("ssh-agent", "ssh-agent", "-D", "-a", sock, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !th_file_exists(sock); i++) th_sleep_ms(10);
    snprintf(cmd, sizeof cmd, "SSH_AUTH_SOCK='%s' ssh-add -q '%s' 2>/dev/null", sock, th_hvar("SPORE_TEST_KEY"));
    assert_int_equal(system(cmd), 0);
    char *old = getenv("SSH_AUTH_SOCK") ? strdup(getenv("SSH_AUTH_SOCK")) : NULL;
    setenv("SSH_AUTH_SOCK", sock, 1);

    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "use_agent", "true", NULL));
    th_assert_user(c, "spore-test-key");
    /* Without the agent the same connect has no key to offer. */
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", NULL), SPORE_EAUTH);
    th_done(r);

    if (old) setenv("SSH_AUTH_SOCK", old, 1);
    else unsetenv("SSH_AUTH_SOCK");
    free(old);
    kill(agent, SIGTERM);
    waitpid(agent, NULL, 0);
    th_rm_rf(dir);
    free(dir);
    th_end(&b);
}

static void test_key_with_passphrase(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY_PP"),
                      "identity_passphrase", th_hvar("SPORE_TEST_PASSPHRASE"), NULL));
    th_assert_user(c, "spore-test-key");
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY_PP"),
                       "identity_passphrase", "wrong passphrase", NULL),
           SPORE_EAUTH);
    TH_CONTAINS(spore_last_error()->message, "passphrase");
    th_done(r);
    th_end(&b);
}

static void test_password_login(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    const char *pw = th_hvar("SPORE_TEST_PW_PW");
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-pw", "password", pw, NULL));
    th_assert_user(c, "spore-test-pw");
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-pw", "password", "wrong", NULL), SPORE_EAUTH);
    TH_CONTAINS(spore_last_error()->message, "incorrect password");
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-pw", NULL), SPORE_EPASSREQ);
    /* A key the server does not take, and no password: authentication fails. */
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-pw", "identity_file", th_hvar("SPORE_TEST_KEY"), NULL),
           SPORE_EPASSREQ);
    th_done(r);
    th_end(&b);
}

/* An account whose password sshd takes only through keyboard-interactive. */
static void test_keyboard_interactive(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-doas-pw", "password",
                      th_hvar("SPORE_TEST_PW_DOAS_PW"), NULL));
    th_assert_user(c, "spore-test-doas-pw");
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-doas-pw", "password", "wrong", NULL), SPORE_EAUTH);
    th_done(r);
    th_end(&b);
}

/* compression=true: the stream is zlib-compressed and still carries
 * binary data unchanged. */
static void test_compression(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"),
                      "compression", "true", NULL));
    echo_roundtrip(c, 512 * 1024, compressible);
    th_done(r);
    th_end(&b);
}

/* A key login offering only the ciphers of list. */
static int connect_with_ciphers(spore_context **c, spore_router *r, const char *list) {
    return ssh_connect(c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"),
                       "ciphers", list, NULL);
}

/* ciphers: a list the server has works; one it lacks fails to connect;
 * names the client does not know at all are EINVAL, on both backends. */
static void test_ciphers(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(connect_with_ciphers(&c, r, "aes256-ctr"));
    echo_roundtrip(c, 256 * 1024, compressible);
    /* The harness sshd keeps OpenSSH's defaults, which no longer offer CBC. */
    TH_ERR(connect_with_ciphers(&c, r, "3des-cbc"), SPORE_ECONNECT);
    TH_ERR(connect_with_ciphers(&c, r, "no-such-cipher"), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "no-such-cipher");
    th_done(r);
    th_end(&b);
}

/* The OpenSSH client's own configuration: a Host alias with HostName,
 * Port, User and IdentityFile, reached through a ProxyJump. */
static void test_openssh_config_and_proxyjump(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    if (!is_openssh()) skip();
    th_baseline b = th_begin();
    char *dir = th_mkdtemp("sshcfg");
    char cfg[512], text[4096];
    snprintf(cfg, sizeof cfg, "%s/config", dir);
    snprintf(text, sizeof text,
             "Host spore-jump\n  HostName %s\n  Port %s\n  User spore-test-key\n"
             "Host spore-behind\n  HostName %s\n  Port %s\n  User spore-test-target\n  ProxyJump spore-jump\n"
             "Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  BatchMode yes\n",
             th_hvar("SPORE_TEST_SSHD_HOST"), th_hvar("SPORE_TEST_SSHD_PORT"), th_hvar("SPORE_TEST_SSHD_HOST"),
             th_hvar("SPORE_TEST_SSHD_PORT"), th_hvar("SPORE_TEST_KEY"), th_hvar("SPORE_TEST_KNOWN_HOSTS"));
    assert_int_equal(th_write_file(cfg, text, strlen(text), 0600), 0);
    spore_router *r = th_router(NULL);
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "hostname", "spore-behind"));
    TH_OK(spore_options_set_str(o, "backend", "openssh"));
    TH_OK(spore_options_add_str(o, "ssh_args", "-F"));
    TH_OK(spore_options_add_str(o, "ssh_args", cfg));
    spore_context *c = NULL;
    TH_OK(spore_connect(&c, r, "ssh", o, NULL));
    spore_options_free(o);
    th_track(c);
    th_assert_user(c, "spore-test-target");
    th_done(r);
    th_rm_rf(dir);
    free(dir);
    th_end(&b);
}

/* A server that stops answering is found out by the keepalives. */
static void test_keepalive_detects_a_dead_server(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"),
                      "keepalive_interval", "#1", "keepalive_count", "#2", NULL));
    /* The agent's parent is sshd's session process: stopping it freezes
     * the connection without closing it. */
    char *json = th_call(c, "sys.info", NULL);
    pid_t session = (pid_t)th_json_int(json, "ppid", -1);
    free(json);
    assert_true(session > 1);
    assert_int_equal(kill(session, SIGSTOP), 0);
    double t0 = th_now();
    spore_result *res = NULL;
    int rc = spore_call(&res, c, "proc.run", "{\"argv\": [\"sleep\", \"59\"]}", NULL, 0, 20000);
    double took = th_now() - t0;
    kill(session, SIGCONT);
    TH_ERR(rc, SPORE_EDISCONNECTED);
    print_message("a frozen server was given up after %.1f s\n", took);
    assert_true(took >= 1.5 && took < 10 * th_time_factor());
    th_done(r);
    th_end(&b);
}

static void test_banner_with_password_is_not_a_prompt(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    /* At debug level 1 ssh shows the banner (which says "password" and
     * "Password:"); the password must only be sent to the real prompt,
     * or the second prompt would make this an "incorrect password". */
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-pw", "password", th_hvar("SPORE_TEST_PW_PW"),
                      "ssh_debug_level", "#1", NULL));
    th_assert_user(c, "spore-test-pw");
    th_done(r);
    th_end(&b);
}

static void test_remote_permission_denied_is_not_auth_failure(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    /* The remote shell prints "Permission denied" lines before the agent starts. */
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"),
                      "command_prefix",
                      "sh -c 'echo Permission denied >&2; echo \"spore-test-key@host: Permission denied\" >&2' ';'",
                      NULL));
    th_assert_user(c, "spore-test-key");
    th_done(r);
    th_end(&b);
}

static void test_host_keys(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    char *dir = th_mkdtemp("hostkeys");
    char empty[512], wrong[512], accepted[512];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(wrong, sizeof wrong, "%s/wrong", dir);
    snprintf(accepted, sizeof accepted, "%s/accepted", dir);
    assert_int_equal(th_write_file(empty, "", 0, 0600), 0);
    /* A known_hosts naming another key for this host and port. */
    char line[1024];
    snprintf(line, sizeof line,
             "[%s]:%s ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBC1lR9ZX0gE4zZAZ2oXcHk4XbLLv7OQ2jmI3qkFhBzX\n",
             th_hvar("SPORE_TEST_SSHD_HOST"), th_hvar("SPORE_TEST_SSHD_PORT"));
    assert_int_equal(th_write_file(wrong, line, strlen(line), 0600), 0);
    const char *key = th_hvar("SPORE_TEST_KEY");

    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file", empty,
                       NULL),
           SPORE_EHOSTKEY);
    TH_CONTAINS(spore_last_error()->message, "not known");

    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file", wrong,
                       NULL),
           SPORE_EHOSTKEY);
    TH_CONTAINS(spore_last_error()->message, "changed");
    /* The fingerprint of the key the server sent is named. */
    TH_CONTAINS(spore_last_error()->message, th_hvar("SPORE_TEST_HOST_FP_ED25519"));

    /* accept: the unknown key is added, and used the next time. */
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file",
                      accepted, "check_host_keys", "accept", NULL));
    th_assert_user(c, "spore-test-key");
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file",
                      accepted, NULL));
    /* accept does not take a changed key. */
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file", wrong,
                       "check_host_keys", "accept", NULL),
           SPORE_EHOSTKEY);
    /* ignore: no checking at all. */
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", key, "known_hosts_file", wrong,
                      "check_host_keys", "ignore", NULL));
    th_done(r);
    th_rm_rf(dir);
    free(dir);
    th_end(&b);
}

static void test_debug_lines_become_logs(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_options *ro = NULL;
    TH_OK(spore_options_new(&ro));
    TH_OK(spore_options_set_int(ro, "log_level", SPORE_LOG_DEBUG));
    spore_router *r = th_router(ro);
    spore_options_free(ro);
    spore_context *c = NULL;
    TH_OK(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"),
                      "ssh_debug_level", "#2", NULL));
    /* OpenSSH's own debug lines; libssh2's session notes (what the server
     * offers, how it authenticated). */
    const char *want1 = is_openssh() ? "debug1:" : "server offers";
    const char *want2 = is_openssh() ? "debug2:" : "authenticated with";
    int debug1 = 0, debug2 = 0;
    spore_log_record *rec = NULL;
    while (spore_router_next_log(r, &rec, 0) == SPORE_OK && rec) {
        const char *m = spore_log_record_message(rec);
        if (spore_log_record_level(rec) == SPORE_LOG_DEBUG && strstr(m, want1)) debug1++;
        if (spore_log_record_level(rec) == SPORE_LOG_DEBUG && strstr(m, want2)) debug2++;
        spore_log_record_free(rec);
        rec = NULL;
    }
    assert_true(debug1 > 0);
    assert_true(debug2 > 0);
    th_done(r);
    th_end(&b);
}

static void test_unreachable_and_unknown_host(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    /* A port nobody listens on. */
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "port", "#1", NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "refused");
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    TH_OK(spore_options_set_str(o, "hostname", "no-such-host.invalid"));
    TH_OK(spore_options_set_str(o, "backend", g_backend));
    if (is_openssh()) TH_OK(spore_options_set_str(o, "ssh_args", "-F /dev/null"));
    TH_ERR(spore_connect(&c, r, "ssh", o, NULL), SPORE_ECONNECT);
    TH_CONTAINS(spore_last_error()->message, "no-such-host.invalid");
    spore_options_free(o);
    th_done(r);
    th_end(&b);
}

/* A server that accepts the TCP connection and then says nothing: the
 * connect gives up after connect_timeout. */
static void test_connect_timeout(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    int lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lsock, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(lsock, 8), 0);
    socklen_t len = sizeof addr;
    getsockname(lsock, (struct sockaddr *)&addr, &len);
    char port[16];
    snprintf(port, sizeof port, "#%d", ntohs(addr.sin_port));
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    double t0 = th_now();
    TH_ERR(ssh_connect(&c, r, "ssh", NULL, "username", "spore-test-key", "port", port, "connect_timeout", "#700", NULL),
           SPORE_ETIMEDOUT);
    double took = th_now() - t0;
    assert_true(took >= 0.6 && took < 5 * th_time_factor());
    th_done(r);
    close(lsock);
    th_end(&b);
}

static void test_chains_through_ssh(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *s = NULL, *root = NULL, *f = NULL, *s2 = NULL, *l = NULL;
    TH_OK(ssh_connect(&s, r, "ssh", NULL, "username", "spore-test-sudo-nopw", "identity_file", th_hvar("SPORE_TEST_KEY"),
                      NULL));
    th_assert_user(s, "spore-test-sudo-nopw");
    /* ssh -> sudo root -> fork */
    TH_OK(ssh_connect(&root, r, "sudo", s, NULL));
    th_assert_user(root, "root");
    TH_OK(ssh_connect(&f, r, "fork", root, NULL));
    th_assert_user(f, "root");
    /* local -> ssh: the agent opens the ssh hop with the OpenSSH client. */
    l = th_connect(r, "local", NULL);
    th_track(l);
    TH_OK(ssh_connect(&s2, r, "ssh", l, "username", "spore-test-key", "identity_file", th_hvar("SPORE_TEST_KEY"), NULL));
    th_assert_user(s2, "spore-test-key");
    char *name = strdup(spore_context_name(s2));
    TH_CONTAINS(name, "local.");
    free(name);
    th_done(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_login),
        cmocka_unit_test(test_ssh_agent),
        cmocka_unit_test(test_key_with_passphrase),
        cmocka_unit_test(test_password_login),
        cmocka_unit_test(test_keyboard_interactive),
        cmocka_unit_test(test_compression),
        cmocka_unit_test(test_ciphers),
        cmocka_unit_test(test_openssh_config_and_proxyjump),
        cmocka_unit_test(test_keepalive_detects_a_dead_server),
        cmocka_unit_test(test_banner_with_password_is_not_a_prompt),
        cmocka_unit_test(test_remote_permission_denied_is_not_auth_failure),
        cmocka_unit_test(test_host_keys),
        cmocka_unit_test(test_debug_lines_become_logs),
        cmocka_unit_test(test_unreachable_and_unknown_host),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_chains_through_ssh),
    };
    g_backend = "libssh2";
    int failed = cmocka_run_group_tests_name("ssh with libssh2", tests, NULL, NULL);
    g_backend = "openssh";
    failed += cmocka_run_group_tests_name("ssh with the OpenSSH client", tests, NULL, NULL);
    return failed;
}
