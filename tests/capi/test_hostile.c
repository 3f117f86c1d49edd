/* A context can never make its parent, a sibling or the master run
 * anything. A hostile child (tests/capi/data/hostile_child.py, started as
 * the command prefix of a connect through an agent) answers the bootstrap
 * itself and then injects forged frames on its parent stream: calls with
 * honest and forged source and authority ids, and route messages for ids
 * it does not own. Nothing may run, honest refusals get EREFUSED replies,
 * forged ids get nothing, and the parent and the sibling keep working. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "helpers.h"

static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_forged_frames_run_nothing(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        print_message("SKIPPED: /usr/bin/python3 is needed for the hostile child\n");
        skip();
    }
    th_baseline b = th_begin();
    char *dir = th_mkdtemp("hostile");
    char markers[512], report[512], script[1024];
    snprintf(markers, sizeof markers, "%s/markers", dir);
    assert_int_equal(mkdir(markers, 0700), 0);
    snprintf(report, sizeof report, "%s/report.json", dir);
    snprintf(script, sizeof script, "%s/tests/capi/data/hostile_child.py", getenv("SPORE_SOURCE_DIR"));

    spore_router *r = th_router(NULL);
    spore_context *parent = th_connect(r, "local", NULL);
    spore_context *sibling = th_connect(r, "fork", parent);

    spore_options *o = NULL;
    TH_OK(spore_options_new(&o));
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "/usr/bin/python3 '%s' '%s' %u '%s' ;", script, report,
             spore_context_id(sibling), markers);
    TH_OK(spore_options_set_str(o, "command_prefix", prefix));
    spore_context *hostile = NULL;
    TH_OK(spore_connect(&hostile, r, "local", o, parent));
    spore_options_free(o);

    double end = th_now() + 20;
    while (!th_file_exists(report) && th_now() < end) th_sleep_ms(20);
    const char *rep = read_all(report);
    assert_non_null(rep);
    print_message("hostile child's report: %s\n", rep);

    /* Nothing ran: no marker file anywhere. */
    DIR *d = opendir(markers);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') fail_msg("a forged call ran: %s/%s exists", markers, e->d_name);
    closedir(d);

    /* Honest ids, refused by policy: the parent (no authority over it),
     * the sibling (routing mode) and the master (accepts no calls). */
    TH_CONTAINS(rep, "\"5001\": {\"flags\": 1");
    TH_CONTAINS(rep, "\"5005\": {\"flags\": 1");
    TH_CONTAINS(rep, "\"5008\": {\"flags\": 1");
    TH_CONTAINS(rep, "EREFUSED");
    /* Forged source or authority ids: dropped by the reverse-path filter,
     * so not even an error reply goes back. */
    const char *forged[] = {"\"5002\"", "\"5003\"", "\"5004\"", "\"5006\"", "\"5007\""};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        if (strstr(rep, forged[i])) fail_msg("a forged message got a reply: %s in %s", forged[i], rep);

    /* The parent and the sibling are intact and still reachable. */
    char *json = th_call(parent, "sys.ping", NULL);
    free(json);
    json = th_call(sibling, "sys.ping", NULL);
    free(json);
    json = th_call(sibling, "sys.info", NULL);
    TH_CONTAINS(json, "\"version\"");
    free(json);

    spore_context_free(hostile);
    spore_context_free(sibling);
    spore_context_free(parent);
    spore_router_free(r);
    th_rm_rf(dir);
    free(dir);
    th_end(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forged_frames_run_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
