/*
 * spore/errors.h - error codes of the spore C API.
 *
 * Every fallible spore function returns an int: 0 (SPORE_OK) on success or one
 * of the negative codes below. Codes have fixed numbers that are never reused.
 * spore_strerror() gives a static description of a code; spore_last_error()
 * gives the detail of the last failure on the calling thread.
 */
#ifndef SPORE_ERRORS_H
#define SPORE_ERRORS_H

/* X(name, number, short description). The single source of truth for codes,
 * their strings and the bindings' exception classes. */
#define SPORE_ERROR_MAP(X)                                                     \
    X(EINVAL,        -1, "invalid argument")                                   \
    X(ENOMEM,        -2, "out of memory")                                      \
    X(ECONNECT,      -3, "connect failed")                                     \
    X(ETIMEDOUT,     -4, "timed out")                                          \
    X(EDISCONNECTED, -5, "context disconnected")                               \
    X(ENOFUNC,       -6, "unknown function")                                   \
    X(EBADARGS,      -7, "bad arguments")                                      \
    X(EREMOTE,       -8, "remote failure")                                     \
    X(EREFUSED,      -9, "refused by policy")                                  \
    X(ETOOBIG,      -10, "message too large")                                  \
    X(EPROTO,       -11, "protocol error")                                     \
    X(ENOROUTE,     -12, "no route to context")                                \
    X(ESHUTDOWN,    -13, "router is shutting down")                            \
    X(EINTERNAL,    -14, "internal error")                                     \
    X(EUNKNOWN,     -15, "unknown error")                                    \
    X(EAUTH,        -16, "authentication failed")                            \
    X(EPASSREQ,     -17, "password required")                                \
    X(EHOSTKEY,     -18, "host key verification failed")                     \
    X(EDENIED,      -19, "not allowed to become that user")                  \
    X(ENOENT,       -20, "no such file or directory")                        \
    X(EACCES,       -21, "permission denied")                                \
    X(ENOSPC,       -22, "no space left on device")                          \
    X(ECHANGED,     -23, "file changed during transfer")                     \
    X(EUNRESPONSIVE, -24, "context stopped responding")                       \
    X(ENOPYTHON,    -25, "no usable Python interpreter")                      \
    X(EWORKER,      -26, "the Python worker died")

typedef enum spore_error_code {
    SPORE_OK = 0,
#define SPORE__ERROR_ENUM(name, num, text) SPORE_##name = (num),
    SPORE_ERROR_MAP(SPORE__ERROR_ENUM)
#undef SPORE__ERROR_ENUM
    SPORE__ERROR_LAST = -26
} spore_error_code;

#endif /* SPORE_ERRORS_H */
