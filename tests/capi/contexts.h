/* Helpers of the tests that open many contexts with options (become, ssh):
 * options from key/value pairs, contexts tracked and freed together, and
 * the account a context runs as. Include after cmocka.h and helpers.h. */
#ifndef SPORE_TEST_CONTEXTS_H
#define SPORE_TEST_CONTEXTS_H

#include <stdarg.h>

/* Every context a test opened, freed by th_done(). */
static spore_context *th_opened[64];
static int th_n_opened;

static inline void th_track(spore_context *c) {
    if (c && th_n_opened < 64) th_opened[th_n_opened++] = c;
}

/* Frees the test's contexts, then the router. */
static inline void th_done(spore_router *r) {
    for (int i = 0; i < th_n_opened; i++) spore_context_free(th_opened[i]);
    th_n_opened = 0;
    spore_router_free(r);
}

/* Sets NULL-terminated key/value pairs: "true"/"false" are booleans,
 * "#123" integers, anything else a string. */
static inline void th_set_pairs(spore_options *o, va_list ap) {
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) TH_OK(spore_options_set_bool(o, k, v[0] == 't'));
        else if (v[0] == '#') TH_OK(spore_options_set_int(o, k, atoll(v + 1)));
        else TH_OK(spore_options_set_str(o, k, v));
    }
}

/* spore_connect with the options o (consumed); a context that came up is tracked. */
static inline int th_connect_opts(spore_context **out, spore_router *r, const char *method, spore_options *o,
                                  spore_context *via) {
    *out = NULL;
    int rc = spore_connect(out, r, method, o, via);
    spore_options_free(o);
    if (rc == SPORE_OK) th_track(*out);
    return rc;
}

/* Asserts the account a context runs as (sys.info's "user"). */
static inline void th_assert_user(spore_context *c, const char *want) {
    char *json = th_call(c, "sys.info", NULL);
    char *user = th_json_str(json, "user", NULL);
    free(json);
    assert_non_null(user);
    assert_string_equal(user, want);
    free(user);
}

#endif
