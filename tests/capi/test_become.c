/* sudo, su and doas for real, with the test accounts of tests/harness:
 * without and with passwords (correct, wrong, missing), accounts that may
 * not change user, option handling, and passwords that never show up in
 * argv, logs or files. The tests run as root, so every chain first becomes
 * an unprivileged test account (root needs no password) and changes user
 * from there. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness_env.h"
#include "helpers.h"
#include "contexts.h"

/* Opens method with key/value options (NULL-terminated pairs, see th_set_pairs). */
static int connect_with(spore_context **out, spore_router *r, const char *method, spore_context *via, ...) {
    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    va_list ap;
    va_start(ap, via);
    th_set_pairs(o, ap);
    va_end(ap);
    return th_connect_opts(out, r, method, o, via);
}

/* root -> sudo -u <account> (no password needed as root). */
static spore_context *as_account(spore_router *r, const char *account) {
    spore_context *c = NULL;
    TH_OK(connect_with(&c, r, "sudo", NULL, "username", account, NULL));
    return c;
}

/* ------------------------------------------------------------------ sudo */

static void test_sudo_without_password(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-sudo-nopw");
    th_assert_user(u, "spore-test-sudo-nopw");
    spore_context *root = NULL, *target = NULL;
    TH_OK(connect_with(&root, r, "sudo", u, NULL));
    th_assert_user(root, "root");
    TH_OK(connect_with(&target, r, "sudo", u, "username", "spore-test-target", NULL));
    th_assert_user(target, "spore-test-target");
    th_done(r);
    th_end(&b);
}

static void test_sudo_with_password(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-sudo-pw");
    const char *pw = th_hvar("SPORE_TEST_PW_SUDO_PW");
    spore_context *c = NULL;

    TH_OK(connect_with(&c, r, "sudo", u, "password", pw, NULL));
    th_assert_user(c, "root");

    TH_ERR(connect_with(&c, r, "sudo", u, "password", "not-the-password", NULL), SPORE_EAUTH);
    assert_null(c);
    TH_CONTAINS(spore_last_error()->message, "incorrect password");
    TH_CONTAINS(spore_last_error()->message, "sudo");

    TH_ERR(connect_with(&c, r, "sudo", u, NULL), SPORE_EPASSREQ);
    TH_CONTAINS(spore_last_error()->message, "password required");

    /* The same on a terminal (use_tty, for sudoers with requiretty). */
    TH_OK(connect_with(&c, r, "sudo", u, "use_tty", "true", "password", pw, NULL));
    th_assert_user(c, "root");
    TH_ERR(connect_with(&c, r, "sudo", u, "use_tty", "true", "password", "not-the-password", NULL), SPORE_EAUTH);
    TH_ERR(connect_with(&c, r, "sudo", u, "use_tty", "true", NULL), SPORE_EPASSREQ);
    /* The context that was refused is named in the error. */
    assert_non_null(spore_last_error()->context);
    TH_CONTAINS(spore_last_error()->context, "/sudo.");

    th_done(r);
    th_end(&b);
}

static void test_sudo_user_not_allowed(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-nosudo");
    spore_context *c = NULL;
    TH_ERR(connect_with(&c, r, "sudo", u, "password", th_hvar("SPORE_TEST_PW_NOSUDO"), NULL), SPORE_EDENIED);
    TH_CONTAINS(spore_last_error()->message, "sudoers");
    /* Allowed to sudo, but not to that account. */
    spore_context *u2 = as_account(r, "spore-test-sudo-nopw");
    TH_ERR(connect_with(&c, r, "sudo", u2, "username", "spore-test-key", NULL), SPORE_EPASSREQ);
    th_done(r);
    th_end(&b);
}

static void test_sudo_options(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-sudo-nopw");
    spore_context *c = NULL;

    /* -E: the environment of the one who runs sudo (here this test,
     * through root's sudo) reaches the agent; without it sudo resets it. */
    spore_context *e = NULL;
    TH_OK(connect_with(&e, r, "sudo", NULL, "username", "spore-test-target", "preserve_env", "true", NULL));
    char *env = th_call(e, "sys.getenv", "{\"name\": \"SPORE_TEST_HARNESS\"}");
    assert_string_not_equal(env, "null");
    free(env);
    TH_OK(connect_with(&e, r, "sudo", NULL, "username", "spore-test-target", NULL));
    env = th_call(e, "sys.getenv", "{\"name\": \"SPORE_TEST_HARNESS\"}");
    assert_string_equal(env, "null");
    free(env);

    /* -H: HOME is the target's. */
    TH_OK(connect_with(&c, r, "sudo", u, "username", "spore-test-target", "set_home", "true", NULL));
    char *json = th_call(c, "sys.getenv", "{\"name\": \"HOME\"}");
    TH_CONTAINS(json, "/home/spore-test-target");
    free(json);

    /* -i: a login shell in the target's home (the command passes through it intact). */
    TH_OK(connect_with(&c, r, "sudo", u, "username", "spore-test-target", "login", "true", NULL));
    json = th_call(c, "sys.info", NULL);
    TH_CONTAINS(json, "\"cwd\":\"/home/spore-test-target\"");
    free(json);

    /* The same through sudo_args, re-parsed. */
    TH_OK(connect_with(&c, r, "sudo", u, "sudo_args", "-u spore-test-target -H", NULL));
    th_assert_user(c, "spore-test-target");

    /* Flags spore does not understand are refused before anything runs. */
    TH_ERR(connect_with(&c, r, "sudo", u, "sudo_args", "-s", NULL), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "sudo_args");
    TH_ERR(connect_with(&c, r, "sudo", u, "sudo_args", "-u root --chdir=/tmp", NULL), SPORE_EINVAL);
    TH_CONTAINS(spore_last_error()->message, "--chdir");

    /* An unknown account. */
    TH_ERR(connect_with(&c, r, "sudo", u, "username", "spore-test-nobody-here", NULL), SPORE_EDENIED);

    th_done(r);
    th_end(&b);
}

static void test_sudo_custom_prompt_table(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-sudo-pw");
    spore_context *c = NULL;
    /* A launcher whose prompt is not sudo's: a shell script that asks in
     * French and checks the answer; the user's pattern answers it. */
    char *dir = th_mkdtemp("prompt");
    char path[512], script[1024];
    snprintf(path, sizeof path, "%s/asker", dir);
    snprintf(script, sizeof script,
             "#!/bin/sh\n"
             "printf 'Mot de passe secret ? ' >/dev/tty\n"
             "read pw </dev/tty\n"
             "[ \"$pw\" = open-sesame ] || { echo 'asker: mauvais mot' >&2; exit 1; }\n"
             "while [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\"\n");
    assert_int_equal(th_write_file(path, script, strlen(script), 0755), 0);
    TH_OK(connect_with(&c, r, "sudo", NULL, "sudo_path", path, "use_tty", "true", "password", "open-sesame", "password_prompts",
                       "'secret \\?[[:space:]]*$'", NULL));
    th_assert_user(c, "root");
    TH_ERR(connect_with(&c, r, "sudo", NULL, "sudo_path", path, "use_tty", "true", "password", "wrong", "password_prompts",
                        "'secret \\?[[:space:]]*$'", "incorrect_prompts", "'mauvais mot'", NULL),
           SPORE_EAUTH);
    th_done(r);
    th_rm_rf(dir);
    free(dir);
    (void)u;
    th_end(&b);
}

/* -------------------------------------------------------------------- su */

static void test_su(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *u = as_account(r, "spore-test-key");
    const char *pw = th_hvar("SPORE_TEST_PW_TARGET");
    spore_context *c = NULL;
    TH_OK(connect_with(&c, r, "su", u, "username", "spore-test-target", "password", pw, NULL));
    th_assert_user(c, "spore-test-target");
    /* The stream runs over a terminal: a large message must pass unchanged. */
    size_t n = 300 * 1024;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++) data[i] = (unsigned char)(i * 7 + (i >> 8));
    spore_result *res = NULL;
    TH_OK(spore_call(&res, c, "sys.echo", "{\"value\": 1}", data, n, 30000));
    size_t got = 0;
    const void *back = spore_result_bytes(res, &got);
    assert_int_equal(got, n);
    assert_memory_equal(back, data, n);
    spore_result_free(res);
    free(data);

    TH_ERR(connect_with(&c, r, "su", u, "username", "spore-test-target", "password", "wrong", NULL), SPORE_EAUTH);
    TH_ERR(connect_with(&c, r, "su", u, "username", "spore-test-target", NULL), SPORE_EPASSREQ);
    th_done(r);
    th_end(&b);
}

/* ------------------------------------------------------------------ doas */

static void test_doas(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_router *r = th_router(NULL);
    spore_context *c = NULL;
    spore_context *nopw = as_account(r, "spore-test-doas-nopw");
    TH_OK(connect_with(&c, r, "doas", nopw, NULL));
    th_assert_user(c, "root");
    TH_OK(connect_with(&c, r, "doas", nopw, "username", "spore-test-target", NULL));
    th_assert_user(c, "spore-test-target");

    spore_context *pw = as_account(r, "spore-test-doas-pw");
    TH_OK(connect_with(&c, r, "doas", pw, "password", th_hvar("SPORE_TEST_PW_DOAS_PW"), NULL));
    th_assert_user(c, "root");
    TH_ERR(connect_with(&c, r, "doas", pw, "password", "wrong", NULL), SPORE_EAUTH);
    TH_ERR(connect_with(&c, r, "doas", pw, NULL), SPORE_EPASSREQ);

    spore_context *no = as_account(r, "spore-test-nosudo");
    TH_ERR(connect_with(&c, r, "doas", no, "password", th_hvar("SPORE_TEST_PW_NOSUDO"), NULL), SPORE_EDENIED);
    th_done(r);
    th_end(&b);
}

/* ------------------------------------------------------------- secrets */

/* 1 if any process's command line or environment contains needle. */
static int secret_in_proc(const char *needle) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const char *files[] = {"cmdline", "environ"};
        for (int k = 0; k < 2 && !found; k++) {
            char path[300], buf[65536];
            snprintf(path, sizeof path, "/proc/%s/%s", e->d_name, files[k]);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            for (size_t i = 0; i < n; i++)
                if (buf[i] == '\0') buf[i] = ' ';
            buf[n] = '\0';
            if (strstr(buf, needle)) {
                found = 1;
                print_message("secret found in /proc/%s/%s: %.300s\n", e->d_name, files[k], buf);
            }
        }
    }
    closedir(d);
    return found;
}

/* Whether a regular file contains needle (read in chunks that overlap by
 * the needle's length, so a match across two reads is found too). */
static int file_contains(const char *path, const char *needle) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t n = strlen(needle), keep = 0;
    static char buf[(1 << 16) + 256];
    int found = 0;
    ssize_t got;
    while (!found && (got = read(fd, buf + keep, sizeof buf - 256 - keep)) > 0) {
        size_t len = keep + (size_t)got;
        found = memmem(buf, len, needle, n) != NULL;
        keep = len < n ? len : n - 1;
        memmove(buf, buf + len - keep, keep);
    }
    close(fd);
    return found;
}

static const char *g_needle, *g_skip;
static int g_found;

static int visit_for_secret(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag == FTW_D && g_skip[0] && strcmp(path, g_skip) == 0) return FTW_SKIP_SUBTREE;
    if (flag == FTW_F && S_ISREG(st->st_mode) && file_contains(path, g_needle)) {
        print_message("secret found in %s\n", path);
        g_found = 1;
        return FTW_STOP;
    }
    return FTW_CONTINUE;
}

/* 1 if any regular file under dir contains needle, leaving out only the
 * harness's own state directory (it holds the test accounts' passwords, and
 * sits under /tmp whenever the build tree does). */
static int secret_in_files(const char *dir, const char *needle) {
    static char harness[PATH_MAX];
    const char *h = getenv("SPORE_TEST_HARNESS");
    if (!h || !realpath(h, harness)) harness[0] = '\0';
    g_needle = needle;
    g_skip = harness;
    g_found = 0;
    nftw(dir, visit_for_secret, 64, FTW_PHYS | FTW_ACTIONRETVAL);
    return g_found;
}

static void test_passwords_stay_secret(void **state) {
    (void)state;
    TH_NEED_HARNESS();
    th_baseline b = th_begin();
    spore_options *ro = NULL;
    TH_OK(spore_options_new(&ro));
    TH_OK(spore_options_set_int(ro, "log_level", SPORE_LOG_DEBUG));
    spore_router *r = th_router(ro);
    spore_options_free(ro);
    const char *pw = th_hvar("SPORE_TEST_PW_SUDO_PW");
    spore_context *u = as_account(r, "spore-test-sudo-pw");
    spore_context *c = NULL;
    TH_OK(connect_with(&c, r, "sudo", u, "password", pw, NULL));
    th_assert_user(c, "root");
    /* A wrong password goes through the error path: it must not be echoed there either. */
    TH_ERR(connect_with(&c, r, "sudo", u, "password", "Wr0ngButSecret", NULL), SPORE_EAUTH);
    assert_null(strstr(spore_last_error()->message, "Wr0ngButSecret"));

    assert_int_equal(secret_in_proc(pw), 0);
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime) assert_int_equal(secret_in_files(runtime, pw), 0);
    assert_int_equal(secret_in_files("/home/spore-test-sudo-pw", pw), 0);
    assert_int_equal(secret_in_files("/tmp", pw), 0);
    /* The search itself still finds a secret anywhere else under /tmp. */
    char *decoy_dir = th_mkdtemp("secret-decoy");
    if (!decoy_dir) {
        fail_msg("cannot make a directory under /tmp");
        return;
    }
    char decoy[PATH_MAX];
    snprintf(decoy, sizeof decoy, "%s/leak", decoy_dir);
    assert_int_equal(th_write_file(decoy, pw, strlen(pw), 0600), 0);
    int found = secret_in_files("/tmp", pw);
    th_rm_rf(decoy_dir);
    free(decoy_dir);
    assert_int_equal(found, 1);

    /* Every log record up to now, at DEBUG. */
    spore_log_record *rec = NULL;
    int records = 0;
    while (spore_router_next_log(r, &rec, 0) == SPORE_OK && rec) {
        records++;
        assert_null(strstr(spore_log_record_message(rec), pw));
        assert_null(strstr(spore_log_record_message(rec), "Wr0ngButSecret"));
        spore_log_record_free(rec);
        rec = NULL;
    }
    assert_true(records > 0);
    th_done(r);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sudo_without_password),
        cmocka_unit_test(test_sudo_with_password),
        cmocka_unit_test(test_sudo_user_not_allowed),
        cmocka_unit_test(test_sudo_options),
        cmocka_unit_test(test_sudo_custom_prompt_table),
        cmocka_unit_test(test_su),
        cmocka_unit_test(test_doas),
        cmocka_unit_test(test_passwords_stay_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
