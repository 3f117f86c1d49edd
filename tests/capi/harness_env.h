/* Access to the real test accounts and sshd that tests/harness/ sets up
 * (the ctest fixture harness.setup runs it as root). A test that needs them
 * calls th_harness() first: it loads the harness's env files into the
 * environment, or returns 0 when there is no harness (not root), and the
 * test then skips with a visible reason. */
#ifndef SPORE_TEST_HARNESS_ENV_H
#define SPORE_TEST_HARNESS_ENV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Secrets (passwords, passphrases) are kept here, not in the environment:
 * everything the test starts inherits its environment, and the tests check
 * that no process shows a password. */
static char th__secret_names[32][64], th__secret_values[32][128];
static int th__secrets;

static inline int th__is_secret(const char *name) {
    return strncmp(name, "SPORE_TEST_PW_", 14) == 0 || strcmp(name, "SPORE_TEST_PASSPHRASE") == 0;
}

/* Loads lines "export NAME='value'" of one file into the environment. */
static inline int th__load_env_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "export ", 7) != 0) continue;
        char *name = line + 7, *eq = strchr(name, '=');
        if (!eq) continue;
        *eq = '\0';
        char *v = eq + 1;
        size_t n = strlen(v);
        while (n && (v[n - 1] == '\n' || v[n - 1] == '\r')) v[--n] = '\0';
        if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
            v[n - 1] = '\0';
            v++;
        }
        if (th__is_secret(name)) {
            if (th__secrets < 32) {
                snprintf(th__secret_names[th__secrets], 64, "%.63s", name);
                snprintf(th__secret_values[th__secrets], 128, "%.127s", v);
                th__secrets++;
            }
            continue;
        }
        setenv(name, v, 1);
    }
    fclose(f);
    return 1;
}

/* 1 when the harness is there (its variables are then in the environment). */
static inline int th_harness(void) {
    static int loaded = -1;
    if (loaded >= 0) return loaded;
    const char *dir = getenv("SPORE_TEST_HARNESS");
    char path[1024];
    loaded = 0;
    if (!dir || !*dir) return loaded;
    snprintf(path, sizeof path, "%s/env", dir);
    if (!th__load_env_file(path)) return loaded;
    snprintf(path, sizeof path, "%s/sshd/env", dir);
    th__load_env_file(path);
    loaded = 1;
    return loaded;
}

/* The value of a harness variable; fails the test when it is missing. */
static inline const char *th_hvar(const char *name) {
    for (int i = 0; i < th__secrets; i++)
        if (strcmp(th__secret_names[i], name) == 0) return th__secret_values[i];
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "harness variable %s is not set\n", name);
        abort();
    }
    return v;
}

#define TH_NEED_HARNESS()                                                                   \
    do {                                                                                    \
        if (!th_harness()) {                                                                \
            print_message("SKIPPED: no test accounts (tests/harness needs root; not root)\n"); \
            skip();                                                                         \
        }                                                                                   \
    } while (0)

#endif
