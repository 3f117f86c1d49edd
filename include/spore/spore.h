/*
 * spore/spore.h - the spore C API.
 *
 * spore opens *contexts* (processes on this machine, and through later
 * transports on other machines and accounts), runs *calls* in them and
 * receives their *logs*, over one persistent multiplexed stream per hop.
 *
 * Conventions (see docs/c-api.md):
 *  - Every fallible function returns int: SPORE_OK (0) or a negative
 *    SPORE_E* code from spore/errors.h. On failure the calling thread's
 *    spore_last_error() holds the detail.
 *  - Out-parameters come first. Objects are opaque and created only by the
 *    library; each has a *_free function that accepts NULL.
 *  - Input strings are copied; the caller keeps ownership of what it passes.
 *  - Returned `const char *` are borrowed from the object they came from and
 *    live as long as it; returned `char *` are freed with spore_free().
 *  - Handles may be freed in any order: contexts, calls, chains and results
 *    keep what they need of the router alive internally.
 *  - Thread-safety: every function is safe to call from any thread unless
 *    its documentation says otherwise. One object may be used by several
 *    threads at once except where noted (a spore_pending is waited on by one
 *    thread at a time).
 *  - No function ever throws a C++ exception or calls back into user code
 *    on the library's I/O thread.
 */
#ifndef SPORE_SPORE_H
#define SPORE_SPORE_H

#include <stddef.h>
#include <stdint.h>

#include "spore/errors.h"
#include "spore/version.h"

#if defined(SPORE_STATIC)
#define SPORE_EXTERN(type) type
#elif defined(__GNUC__)
#define SPORE_EXTERN(type) __attribute__((visibility("default"))) type
#else
#define SPORE_EXTERN(type) type
#endif

#if defined(__cplusplus)
#define SPORE_NOEXCEPT noexcept
extern "C" {
#else
#define SPORE_NOEXCEPT
#endif

/** A router: one per program (or more); owns the I/O thread and every context. */
typedef struct spore_router spore_router;
/** A typed key/value bag of options for routers and connections. */
typedef struct spore_options spore_options;
/** A context: one process spore talks to. */
typedef struct spore_context spore_context;
/** A call in flight, started by spore_call_async() (the type is named spore_pending because spore_call is the blocking function). */
typedef struct spore_pending spore_pending;
/** The successful result of a call: a JSON document plus optional bytes. */
typedef struct spore_result spore_result;
/** A call chain: pipelined calls that stop at the first failure. */
typedef struct spore_chain spore_chain;
/** One log record forwarded by a context. */
typedef struct spore_log_record spore_log_record;

/** Log levels; the numbers match Python's logging levels. */
typedef enum spore_log_level {
    SPORE_LOG_DEBUG = 10,
    SPORE_LOG_INFO = 20,
    SPORE_LOG_WARNING = 30,
    SPORE_LOG_ERROR = 40
} spore_log_level;

/** Detail of a failure. All strings are never NULL (empty when unknown). */
typedef struct spore_error {
    int code;                /**< the SPORE_E* code */
    const char *message;     /**< human readable message, names the context */
    const char *remote_type; /**< for SPORE_EREMOTE: the remote error type, e.g. "OSError" */
    const char *context;     /**< name of the context involved, if any */
    const char *function;    /**< name of the function called, if any */
    const char *traceback;   /**< a Python function's remote traceback ("" if none) */
} spore_error;

/* ---------------------------------------------------------------- library */

/** Version of the library actually loaded (compare with SPORE_VERSION_*).
 *  Any pointer may be NULL. Thread-safe. */
SPORE_EXTERN(void) spore_version(int *major, int *minor, int *patch) SPORE_NOEXCEPT;

/** Version of the loaded library as a static string, e.g. "0.1.0". */
SPORE_EXTERN(const char *) spore_version_string(void) SPORE_NOEXCEPT;

/** Static description of an error code ("unknown error" for unknown codes). */
SPORE_EXTERN(const char *) spore_strerror(int code) SPORE_NOEXCEPT;

/** Detail of the last failure of a spore function on the calling thread.
 *  Never NULL; code is SPORE_OK if nothing failed yet. The pointer and its
 *  strings stay valid until the next failing spore call on this thread. */
SPORE_EXTERN(const spore_error *) spore_last_error(void) SPORE_NOEXCEPT;

/** Frees memory returned by spore as `char *` (NULL is a no-op). */
SPORE_EXTERN(void) spore_free(void *ptr) SPORE_NOEXCEPT;

/* ---------------------------------------------------------------- options */

/** Creates an empty options object. *out is freed with spore_options_free.
 *  @return SPORE_OK, SPORE_EINVAL (out NULL), SPORE_ENOMEM. */
SPORE_EXTERN(int) spore_options_new(spore_options **out) SPORE_NOEXCEPT;

/** Sets a string option (copied). A later set of the same key replaces it.
 *  @return SPORE_OK, SPORE_EINVAL (NULL argument or empty key). */
SPORE_EXTERN(int) spore_options_set_str(spore_options *opts, const char *key,
                                        const char *value) SPORE_NOEXCEPT;

/** Appends a string (copied) to a list option, such as command_prefix,
 *  ssh_args, sudo_args, kubectl_args, password_prompts or incorrect_prompts.
 *  The first call starts the list and replaces a value set otherwise.
 *  A list option may instead be set as one string with
 *  spore_options_set_str: it is then split into words by a small shell-like
 *  syntax (quotes and backslashes; nothing is expanded).
 *  @return SPORE_OK, SPORE_EINVAL (NULL argument or empty key). */
SPORE_EXTERN(int) spore_options_add_str(spore_options *opts, const char *key,
                                        const char *value) SPORE_NOEXCEPT;

/** Sets an integer option. @return SPORE_OK, SPORE_EINVAL. */
SPORE_EXTERN(int) spore_options_set_int(spore_options *opts, const char *key,
                                        int64_t value) SPORE_NOEXCEPT;

/** Sets a boolean option (any non-zero value is true). @return SPORE_OK, SPORE_EINVAL. */
SPORE_EXTERN(int) spore_options_set_bool(spore_options *opts, const char *key,
                                         int value) SPORE_NOEXCEPT;

/** Frees an options object (NULL is a no-op). Objects that were given the
 *  options keep their own copy, so this may be called at any time after. */
SPORE_EXTERN(void) spore_options_free(spore_options *opts) SPORE_NOEXCEPT;

/** One option the library takes, as its option table describes it. */
typedef struct spore_option_info {
    const char *key;
    const char *type_name; /**< "string", "integer", "boolean", "list" or "boolean or string" */
    int64_t min, max;     /**< integers: the accepted range (both 0: any integer) */
    const char *fallback; /**< the default as the docs print it; "" when there is none */
    const char *doc;      /**< one line */
} spore_option_info;

/** The options of one kind: "router" (spore_router_new), "attach"
 *  (spore_router_attach), "connect" (spore_connect, every method; each
 *  method's own options are in docs/methods.md), "transfer" (the file
 *  functions) or "process" (spore_proc_start). *out gets a static array,
 *  valid for the life of the process; NULL and 0 for an unknown kind.
 *  @return the number of entries. Thread-safe. */
SPORE_EXTERN(size_t) spore_option_table(const char *kind, const spore_option_info **out) SPORE_NOEXCEPT;

/* ----------------------------------------------------------------- router */

/** Creates a router and starts its I/O thread.
 *  @param opts NULL for defaults; keys understood:
 *    "agent_path" (str, the spore-agent to ship; default: $SPORE_AGENT_PATH,
 *    then the installed one), "max_message_size" (int bytes, default 128 MiB,
 *    inherited by every context), "log_level" (int, default SPORE_LOG_INFO),
 *    "log_queue_size" (int records kept for spore_router_next_log, default
 *    10000) and "log_queue_bytes" (int, default 4 MiB, at least 1024): when
 *    either bound is reached the oldest records are dropped and counted
 *    (spore_router_dropped_logs); a record's message over 64 KiB is cut
 *    and ends with "[... truncated by spore: N more bytes]"),
 *    "liveness_interval" (int ms, default 10000, 0: off) and
 *    "liveness_count" (int, default 3): a child that sends nothing for
 *    that many intervals is declared dead with everything behind it
 *    (SPORE_EUNRESPONSIVE); the same keys on spore_connect set them for
 *    one context.
 *  Unknown keys and values of the wrong type give SPORE_EINVAL.
 *  @return SPORE_OK, SPORE_EINVAL, SPORE_ENOMEM, SPORE_EINTERNAL. */
SPORE_EXTERN(int) spore_router_new(spore_router **out, const spore_options *opts) SPORE_NOEXCEPT;

/** Shuts down every context (SHUTDOWN message, then SIGTERM, then SIGKILL),
 *  fails every pending call with SPORE_ESHUTDOWN, joins the I/O thread and
 *  drops the caller's reference. Objects still held (contexts, calls, results)
 *  stay valid to free afterwards. Threads blocked in spore_router_next_log on
 *  this router are woken (SPORE_ESHUTDOWN) and have left it when this returns,
 *  so a log thread may be stopped this way; no other function may be called
 *  with the router once spore_router_free has started. NULL is a no-op. Must
 *  not be called from two threads for the same router. */
SPORE_EXTERN(void) spore_router_free(spore_router *router) SPORE_NOEXCEPT;

/** Shuts the router down as spore_router_free does (contexts shut down,
 *  pending calls and connects in progress fail with SPORE_ESHUTDOWN, the I/O
 *  thread is joined) but keeps the handle valid: afterwards spore_connect
 *  fails with SPORE_ESHUTDOWN, calls on its contexts fail, and
 *  spore_router_next_log returns the records already queued, then
 *  SPORE_ESHUTDOWN. The handle must still be freed
 *  with spore_router_free. Lets a program stop threads that are inside
 *  spore_connect or spore_router_next_log and wait for them before the
 *  handle goes away. Safe to call from any thread, while other threads use
 *  the router, and more than once; returns when the shutdown is complete.
 *  NULL is a no-op. */
SPORE_EXTERN(void) spore_router_close(spore_router *router) SPORE_NOEXCEPT;

/** Makes the router accept attached routers (spore_router_attach) on a Unix
 *  socket at path, so other processes of the same user can use its contexts
 *  with its authority: call them, move files, open new contexts through it.
 *  The socket gets mode 0600; its directory must belong to this user and
 *  have mode 0700, and is created so if it does not exist. A socket file
 *  left by a dead listener is replaced. Connections from other users are
 *  refused (SO_PEERCRED). The file is removed when the router is freed.
 *  An attached router that goes away leaves this router and its contexts
 *  as they were; what it started in them (processes, transfers) is stopped.
 *  @param path the socket's path (copied), at most 107 bytes.
 *  @return SPORE_OK, SPORE_EINVAL (bad or unsafe path, a live listener is
 *  there already, this router listens already or is attached itself),
 *  SPORE_ESHUTDOWN. */
SPORE_EXTERN(int) spore_router_listen(spore_router *router, const char *path) SPORE_NOEXCEPT;

/** Creates a router attached to the router listening at path (see
 *  spore_router_listen). Its contexts are the listener's: spore_connect asks
 *  the listener to open the context (and by default returns the listener's
 *  live context opened with the same method, options and via: see "reuse"),
 *  spore_context_find finds the listener's contexts by name, and calls,
 *  files and process streams go straight to them. Contexts stay up when
 *  this router is freed: they belong to the listener. Records that reach
 *  the listener are forwarded to it at its own log level or above, and
 *  output records of its own calls (proc.run "stream") come only to it.
 *  The listener must run as the same user.
 *  @param opts NULL or: "connect_timeout" (int ms to wait for the
 *    listener's answer, default 10000), "log_level", "log_queue_size" (as
 *    for spore_router_new). "agent_path" and "max_message_size" are the
 *    listener's and give SPORE_EINVAL.
 *  @return SPORE_OK, SPORE_EINVAL, SPORE_ECONNECT (nothing listens at
 *  path), SPORE_EACCES (the socket or the listener belongs to another
 *  user), SPORE_ETIMEDOUT, SPORE_EPROTO (the listener speaks another
 *  protocol version), SPORE_ENOMEM. Later, when the listener goes away,
 *  every call and context of this router fails with SPORE_EDISCONNECTED. */
SPORE_EXTERN(int) spore_router_attach(spore_router **out, const char *path,
                                      const spore_options *opts) SPORE_NOEXCEPT;

/** Sets the minimum level of records forwarded to this router and pushes it
 *  to every context, so filtered records are never sent.
 *  @return SPORE_OK, SPORE_EINVAL. */
SPORE_EXTERN(int) spore_router_set_log_level(spore_router *router, int level) SPORE_NOEXCEPT;

/** Takes the next forwarded log record, waiting up to timeout_ms (0: do not
 *  wait, -1: wait forever). Records of output lines (loggers "stdout" and
 *  "stderr" of proc.run with "stream") are only produced while the level is
 *  SPORE_LOG_INFO or lower: filtered records are never sent. *out is freed with spore_log_record_free.
 *  @return SPORE_OK, SPORE_ETIMEDOUT (none arrived), SPORE_ESHUTDOWN (router
 *  freed and queue empty), SPORE_EINVAL. */
SPORE_EXTERN(int) spore_router_next_log(spore_router *router, spore_log_record **out,
                                        int timeout_ms) SPORE_NOEXCEPT;

/** An fd that is readable while log records wait in the queue. Owned by the
 *  router: do not read from or close it. @return the fd, or SPORE_EINVAL. */
SPORE_EXTERN(int) spore_router_log_fd(spore_router *router) SPORE_NOEXCEPT;

/** Number of log records dropped because the queue was full (in records or
 *  in bytes). */
SPORE_EXTERN(uint64_t) spore_router_dropped_logs(const spore_router *router) SPORE_NOEXCEPT;

/* ----------------------------------------------------------- Python modules */

/* A call of "py:module:function" (or "py:dotted.name") runs a Python function
 * in the context's Python worker (docs/python.md, "Your own functions";
 * docs/protocol.md, "Python functions"). Modules the worker cannot import
 * on its target are asked of this router, which serves the ones registered
 * here, then those found in its "module_path" directories. */

/** Registers the source of a module to serve under `name` (a dotted module
 *  name, or "__main__"); it wins over the module_path directories, and a
 *  second registration of the name replaces the first.
 *  @param filename shown in the remote module's __file__ and tracebacks.
 *  @param data,len the source, UTF-8 text.
 *  @param is_package nonzero for a package (its submodules are asked for
 *  by name too).
 *  @return SPORE_OK, SPORE_EINVAL (not a module name, not UTF-8). Thread-safe. */
SPORE_EXTERN(int) spore_router_add_module(spore_router *router, const char *name, const char *filename,
                                          const void *data, size_t len, int is_package) SPORE_NOEXCEPT;

/** Flags of spore_router_add_module_path. */
enum {
    /** Serve its modules only when asked for by name, never along with a
     *  module that imports them: for installed packages, which the target
     *  may have itself (the Python binding adds site-packages this way). */
    SPORE_MODULE_PATH_ON_DEMAND = 1
};

/** Adds a directory to serve modules from (as the router option
 *  "module_path" does, with flags 0): name a.b is a/b.py, a/b/__init__.py,
 *  or a directory a/b (a namespace package). A module found there is sent
 *  with the modules its source imports from directories without
 *  SPORE_MODULE_PATH_ON_DEMAND, so a function usually costs one round trip.
 *  @return SPORE_OK, SPORE_EINVAL. Thread-safe. */
SPORE_EXTERN(int) spore_router_add_module_path(spore_router *router, const char *dir, int flags) SPORE_NOEXCEPT;

/** Never serves `name` or anything under it (as the router option
 *  "module_deny" does): a worker asking for it gets ModuleNotFoundError
 *  saying it was refused. @return SPORE_OK, SPORE_EINVAL. Thread-safe. */
SPORE_EXTERN(int) spore_router_deny_module(spore_router *router, const char *name) SPORE_NOEXCEPT;

/** Counters of the module server, for spore_router_module_stat. */
typedef enum spore_module_stat {
    SPORE_MODULE_REQUESTS = 0,   /**< module names asked for by contexts */
    SPORE_MODULE_SENT = 1,       /**< modules sent (found ones, extras included) */
    SPORE_MODULE_BYTES_SENT = 2, /**< bytes of module source sent */
    SPORE_MODULE_REFUSED = 3,    /**< names refused by the deny list */
    SPORE_MODULE_WORKERS = 4     /**< times the worker's own code was sent */
} spore_module_stat;

/** One counter of the module server since the router was made; 0 for an
 *  unknown counter or a NULL router. Thread-safe. */
SPORE_EXTERN(uint64_t) spore_router_module_stat(const spore_router *router, int which) SPORE_NOEXCEPT;

/* -------------------------------------------------------------- log records */

/** Name of the context the record came from (borrowed). */
SPORE_EXTERN(const char *) spore_log_record_context(const spore_log_record *rec) SPORE_NOEXCEPT;
/** Id of the context the record came from. */
SPORE_EXTERN(uint32_t) spore_log_record_context_id(const spore_log_record *rec) SPORE_NOEXCEPT;
/** Logger name, e.g. "spore.agent", "stdout", "stderr" (borrowed). */
SPORE_EXTERN(const char *) spore_log_record_logger(const spore_log_record *rec) SPORE_NOEXCEPT;
/** The message text (borrowed, UTF-8). */
SPORE_EXTERN(const char *) spore_log_record_message(const spore_log_record *rec) SPORE_NOEXCEPT;
/** The level (a spore_log_level value). */
SPORE_EXTERN(int) spore_log_record_level(const spore_log_record *rec) SPORE_NOEXCEPT;
/** Time the record was made in its context, in seconds since the epoch. */
SPORE_EXTERN(double) spore_log_record_time(const spore_log_record *rec) SPORE_NOEXCEPT;
/** Frees a record (NULL is a no-op). */
SPORE_EXTERN(void) spore_log_record_free(spore_log_record *rec) SPORE_NOEXCEPT;

/* ---------------------------------------------------------------- contexts */

/** Opens a context with a connection method and waits until its agent
 *  answers (or connect_timeout passes).
 *  @param method "local" (a new agent process on this machine) or "fork"
 *         (the via agent forks itself; requires via).
 *  @param opts NULL or: "name" (str), "connect_timeout" (int ms, default
 *         30000), "remote_name" (str shown in ps), "agent_cache" (bool,
 *         default true: keep the agent in a private cache directory),
 *         "agent_compress" (true or "auto", the default: send the image
 *         in the strongest form the target can unpack, xz, zstd or gzip,
 *         else raw; "xz", "zstd" or "gzip": that form only, the connect
 *         fails if the target lacks it; false or "none": raw), "reuse" (bool, default false, true for an
 *         attached router: return the live context opened before with the
 *         same method, options and via instead of opening another; callers
 *         asking at once share one connect; connect_timeout does not count
 *         as a difference). The bytes of agent image sent on first contact
 *         are reported in a SPORE_LOG_DEBUG record (logger "spore.connect").
 *  @param via NULL to open the context from this program, or a context
 *         through which to open it (that context's agent starts the child
 *         and routes for it).
 *  @return SPORE_OK, SPORE_EINVAL (unknown method or option, fork without
 *  via), SPORE_ECONNECT (the message quotes the child's last output lines),
 *  SPORE_ETIMEDOUT, SPORE_EDISCONNECTED (via went away), SPORE_ESHUTDOWN. */
SPORE_EXTERN(int) spore_connect(spore_context **out, spore_router *router, const char *method,
                                const spore_options *opts, spore_context *via) SPORE_NOEXCEPT;

/** Finds a live context by its name ("local.1/fork.2"): one this router
 *  opened or, for an attached router, one its listener has (opened by
 *  anyone). Where several have the name, the oldest. *out is freed with
 *  spore_context_free.
 *  @return SPORE_OK, SPORE_ENOENT (no live context has that name),
 *  SPORE_EINVAL, SPORE_EDISCONNECTED (attached: the listener went away),
 *  SPORE_ESHUTDOWN. */
SPORE_EXTERN(int) spore_context_find(spore_context **out, spore_router *router,
                                     const char *name) SPORE_NOEXCEPT;

/** The context's id (unique within its router; the program itself is 0). */
SPORE_EXTERN(uint32_t) spore_context_id(const spore_context *ctx) SPORE_NOEXCEPT;

/** The context's name, e.g. "local.1" or "local.1/fork.2" (borrowed). */
SPORE_EXTERN(const char *) spore_context_name(const spore_context *ctx) SPORE_NOEXCEPT;

/** Whether the context is still connected (1) or not (0). */
SPORE_EXTERN(int) spore_context_alive(const spore_context *ctx) SPORE_NOEXCEPT;

/** Asks the context to shut down (its own children first) and waits up to
 *  timeout_ms (-1: forever) for it to disconnect. Pending calls to it fail
 *  with SPORE_EDISCONNECTED.
 *  @return SPORE_OK, SPORE_ETIMEDOUT, SPORE_EINVAL. */
SPORE_EXTERN(int) spore_context_shutdown(spore_context *ctx, int timeout_ms) SPORE_NOEXCEPT;

/** Drops the caller's handle. The context itself stays up until shut down
 *  or until its router is freed. NULL is a no-op. */
SPORE_EXTERN(void) spore_context_free(spore_context *ctx) SPORE_NOEXCEPT;

/* ------------------------------------------------------------------- calls */

/** Runs `function` in the context and waits for its result.
 *  @param args_json a JSON object with the arguments, or NULL for {}.
 *  @param data,len optional binary part sent with the call (NULL, 0 for none).
 *  @param timeout_ms -1 waits forever.
 *  @return SPORE_OK with *out set (free with spore_result_free), or
 *  SPORE_EINVAL (args_json not a JSON object), SPORE_ETIMEDOUT,
 *  SPORE_EDISCONNECTED, SPORE_ENOFUNC, SPORE_EBADARGS, SPORE_EREMOTE,
 *  SPORE_EREFUSED, SPORE_ETOOBIG, SPORE_ENOROUTE, SPORE_EPROTO, SPORE_ESHUTDOWN. */
SPORE_EXTERN(int) spore_call(spore_result **out, spore_context *ctx, const char *function,
                             const char *args_json, const void *data, size_t len,
                             int timeout_ms) SPORE_NOEXCEPT;

/** Starts a call and returns at once. *out is freed with spore_call_free.
 *  @return SPORE_OK, or the codes of spore_call that are known before
 *  sending (SPORE_EINVAL, SPORE_ETOOBIG, SPORE_EDISCONNECTED, SPORE_ESHUTDOWN). */
SPORE_EXTERN(int) spore_call_async(spore_pending **out, spore_context *ctx, const char *function,
                                   const char *args_json, const void *data,
                                   size_t len) SPORE_NOEXCEPT;

/** Sends a call whose result nobody waits for; failures are logged by the
 *  target context. @return as spore_call_async. */
SPORE_EXTERN(int) spore_call_no_reply(spore_context *ctx, const char *function,
                                      const char *args_json, const void *data,
                                      size_t len) SPORE_NOEXCEPT;

/** Waits up to timeout_ms (0: poll, -1: forever) for an async call.
 *  On SPORE_OK *out receives the result (free with spore_result_free); out
 *  may be NULL to discard it. The result can be taken once; later waits
 *  return SPORE_EINVAL. On SPORE_ETIMEDOUT the call stays pending.
 *  @return SPORE_OK, SPORE_ETIMEDOUT, or the call's own error code. */
SPORE_EXTERN(int) spore_call_wait(spore_pending *call, spore_result **out,
                                  int timeout_ms) SPORE_NOEXCEPT;

/** 1 if the call has finished (successfully or not), 0 if still pending. */
SPORE_EXTERN(int) spore_call_done(const spore_pending *call) SPORE_NOEXCEPT;

/** An fd that becomes readable when the call finishes, for select/poll/epoll
 *  over many calls. Owned by the call: do not read or close it.
 *  @return the fd, or SPORE_EINVAL, SPORE_EINTERNAL. */
SPORE_EXTERN(int) spore_call_fd(spore_pending *call) SPORE_NOEXCEPT;

/** Failure detail of a finished call (code SPORE_OK if it succeeded or is
 *  still pending). Borrowed; lives as long as the call. */
SPORE_EXTERN(const spore_error *) spore_call_error(const spore_pending *call) SPORE_NOEXCEPT;

/** Frees a call. A pending call is abandoned: its reply is discarded. NULL is a no-op. */
SPORE_EXTERN(void) spore_call_free(spore_pending *call) SPORE_NOEXCEPT;

/* ------------------------------------------------------------------ chains */

/** Creates a call chain on a context: calls sent through it run in order in
 *  the context, and after the first failure every later call of the chain
 *  fails with that same error without running. Free with spore_chain_free.
 *  @return SPORE_OK, SPORE_EINVAL, SPORE_ENOMEM. */
SPORE_EXTERN(int) spore_chain_new(spore_chain **out, spore_context *ctx) SPORE_NOEXCEPT;

/** Appends a no-reply step (pipelined, costs no round trip). @return as spore_call_async. */
SPORE_EXTERN(int) spore_chain_call_no_reply(spore_chain *chain, const char *function,
                                            const char *args_json, const void *data,
                                            size_t len) SPORE_NOEXCEPT;

/** Appends a step and waits for its result; fails with the error of the
 *  first failed earlier step if there was one. @return as spore_call. */
SPORE_EXTERN(int) spore_chain_call(spore_result **out, spore_chain *chain, const char *function,
                                   const char *args_json, const void *data, size_t len,
                                   int timeout_ms) SPORE_NOEXCEPT;

/** Frees the chain and tells the context to forget its state. NULL is a no-op. */
SPORE_EXTERN(void) spore_chain_free(spore_chain *chain) SPORE_NOEXCEPT;

/* ------------------------------------------------------------------- files */

/* File transfers to and from a context, through any number of hops.
 * Files up to 128 KiB travel in one message; larger ones stream in chunks
 * over a channel whose window (the "window" option, default 4 MiB) bounds
 * the bytes in flight, and so the memory used at every hop. The destination
 * is written to a temporary file beside it (".<name>.spore-XXXXXX"), synced
 * and renamed over the destination: a reader sees the old file or the whole
 * new one, and a failure leaves nothing behind. A source that grows or
 * shrinks while it is read fails the transfer with SPORE_ECHANGED.
 *
 * Options (opts may be NULL): "mode" (int, permission bits of the
 * destination; default: the source's, or for put_bytes the replaced file's
 * or 0644 less the umask), "preserve_owner" (bool, default false: give the
 * destination the source's uid and gid where the writer may, i.e. as root;
 * elsewhere it is skipped), "preserve_mtime" (bool, default true),
 * "sync" (bool, default true: fsync before the rename), "window" (int bytes,
 * 65536 to 67108864), "timeout" (int ms for the whole transfer, default -1:
 * none), "max_size" (int bytes, spore_get_bytes only, default 128 MiB).
 *
 * All of them block the calling thread, which reads or writes the local
 * file itself; several may run at once on one context and share its stream
 * fairly with calls. Errors: SPORE_ENOENT (the source, or the destination's
 * directory, does not exist), SPORE_EACCES (not permitted), SPORE_ENOSPC
 * (the destination's filesystem is full), SPORE_ECHANGED, SPORE_EINVAL (bad
 * option; the source is not a regular file; the destination is a
 * directory), SPORE_EREMOTE (other I/O errors, remote_type names the kind),
 * SPORE_ETIMEDOUT, SPORE_EDISCONNECTED, SPORE_ESHUTDOWN, and for
 * spore_get_bytes SPORE_ETOOBIG. Failures on this side name the local path;
 * every message names the context. */

/** Copies the local file local_path to remote_path in the context.
 *  @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_put_file(spore_context *ctx, const char *local_path, const char *remote_path,
                                 const spore_options *opts) SPORE_NOEXCEPT;

/** Writes len bytes of data (copied before the function returns; NULL
 *  with len 0 for an empty file) as the file remote_path in the context.
 *  @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_put_bytes(spore_context *ctx, const void *data, size_t len, const char *remote_path,
                                  const spore_options *opts) SPORE_NOEXCEPT;

/** Copies the file remote_path of the context to local_path here.
 *  @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_get_file(spore_context *ctx, const char *remote_path, const char *local_path,
                                 const spore_options *opts) SPORE_NOEXCEPT;

/** Copies the directory tree local_dir into remote_dir of the context:
 *  remote_dir is created if missing (its parent must exist) and receives
 *  every directory, regular file and symlink of local_dir (other file types
 *  are skipped); what it held that local_dir lacks is kept. Small files go
 *  many to a message; each file lands atomically as with spore_put_file;
 *  with "sync", the destination filesystem is synced once at the end
 *  rather than file by file. Directory modes are set last, so read-only
 *  directories still receive their contents. The options are those above
 *  except "mode" (each entry keeps its own; giving it is SPORE_EINVAL).
 *  File names must be valid UTF-8. @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_put_tree(spore_context *ctx, const char *local_dir, const char *remote_dir,
                                 const spore_options *opts) SPORE_NOEXCEPT;

/** Copies the directory tree remote_dir of the context into local_dir, as
 *  spore_put_tree in the other direction. Every path the context names is
 *  checked to stay inside local_dir, and nothing is ever written through a
 *  symlink (SPORE_EPROTO, SPORE_EINVAL otherwise).
 *  @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_get_tree(spore_context *ctx, const char *remote_dir, const char *local_dir,
                                 const spore_options *opts) SPORE_NOEXCEPT;

/** Reads the file remote_path of the context into memory. *out (free with
 *  spore_result_free) has the content as its binary part and the file's
 *  metadata as its JSON: {"size", "mode", "mtime_sec", "mtime_nsec", "uid",
 *  "gid", ...}. @return SPORE_OK or an error code above. */
SPORE_EXTERN(int) spore_get_bytes(spore_result **out, spore_context *ctx, const char *remote_path,
                                  const spore_options *opts) SPORE_NOEXCEPT;

/* ------------------------------------------------------- process streams */

/** A process running in a context, with its stdin, stdout and stderr as
 *  flow-controlled streams (so neither side ever buffers more than a window
 *  of its output or input). Free with spore_process_free. */
typedef struct spore_process spore_process;

/** Starts a process in the context and returns once it runs.
 *  @param args_json a JSON object: "argv" (array of strings) or "shell"
 *         (string for /bin/sh -c), "env" (object; null values unset),
 *         "env_clear" (bool), "cwd", "pty" (bool: run it on a new pty, its
 *         controlling terminal; stdout then carries all output and stderr
 *         is empty), "rows", "cols" (the pty's size, default 24 x 80).
 *  @param opts NULL or "window" (int bytes in flight each way, default 4 MiB),
 *         "timeout_ms" (how long to wait for the process to run, default
 *         60000; -1 waits without limit). A start that times out is
 *         cancelled in the context: the process does not run, or is killed
 *         as soon as it does.
 *  @return SPORE_OK, SPORE_EINVAL, SPORE_EBADARGS, SPORE_EREMOTE (it could
 *  not be started: remote_type FileNotFoundError, PermissionError, ...),
 *  SPORE_EDISCONNECTED, SPORE_ESHUTDOWN (the context is exiting),
 *  SPORE_ETIMEDOUT (not running within timeout_ms). */
SPORE_EXTERN(int) spore_proc_start(spore_process **out, spore_context *ctx, const char *args_json,
                                   const spore_options *opts) SPORE_NOEXCEPT;

/** Writes len bytes to the process's stdin, waiting (up to timeout_ms, -1
 *  forever) while a window of earlier bytes is unread by it. The bytes are
 *  copied. @return SPORE_OK, SPORE_ETIMEDOUT (part may have been sent),
 *  SPORE_EINVAL (stdin closed), SPORE_EDISCONNECTED (the process exited or
 *  its context went away). Bytes written after the process closed its
 *  stdin are dropped. Thread-safe; writes from several threads do not mix
 *  within one call. */
SPORE_EXTERN(int) spore_process_write(spore_process *p, const void *data, size_t len,
                                      int timeout_ms) SPORE_NOEXCEPT;

/** Closes the process's stdin after what was written (a pty gets ^D).
 *  Idempotent. @return SPORE_OK or SPORE_EDISCONNECTED. */
SPORE_EXTERN(int) spore_process_close_stdin(spore_process *p) SPORE_NOEXCEPT;

/** Reads up to cap bytes the process wrote on fd 1 (stdout) or 2 (stderr),
 *  waiting up to timeout_ms (-1 forever) for at least one.
 *  @return the number of bytes (> 0), 0 once that output has ended, or a
 *  negative code: SPORE_ETIMEDOUT (nothing yet), SPORE_EINVAL,
 *  SPORE_EDISCONNECTED, SPORE_ESHUTDOWN. cap above INT_MAX is read as
 *  INT_MAX. One thread per fd at a time. */
SPORE_EXTERN(int) spore_process_read(spore_process *p, int fd, void *buf, size_t cap,
                                     int timeout_ms) SPORE_NOEXCEPT;

/** Sends a signal to the process's process group. @return SPORE_OK,
 *  SPORE_EINVAL (no such signal, or the process has ended). */
SPORE_EXTERN(int) spore_process_signal(spore_process *p, int signum) SPORE_NOEXCEPT;

/** Sets the window size of the process's pty. @return SPORE_OK, SPORE_EINVAL
 *  (no pty, bad size, or ended). */
SPORE_EXTERN(int) spore_process_resize(spore_process *p, int rows, int cols) SPORE_NOEXCEPT;

/** Waits up to timeout_ms (-1 forever) for the process to exit and its
 *  output to be sent. exit_code receives its exit status (-1 when killed
 *  by a signal), signal the signal that killed it (0 if none); either may
 *  be NULL. Output not yet read stays readable. @return SPORE_OK,
 *  SPORE_ETIMEDOUT, SPORE_EDISCONNECTED, SPORE_ESHUTDOWN. */
SPORE_EXTERN(int) spore_process_wait(spore_process *p, int *exit_code, int *signal,
                                     int timeout_ms) SPORE_NOEXCEPT;

/** The process's pid in its context. */
SPORE_EXTERN(long) spore_process_pid(const spore_process *p) SPORE_NOEXCEPT;

/** Frees the handle; a process still running is killed (SIGKILL to its
 *  group). NULL is a no-op. */
SPORE_EXTERN(void) spore_process_free(spore_process *p) SPORE_NOEXCEPT;

/* ----------------------------------------------------------------- results */

/** The result as JSON text (borrowed, NUL-terminated, never NULL). */
SPORE_EXTERN(const char *) spore_result_json(const spore_result *res) SPORE_NOEXCEPT;

/** The binary part of the result (borrowed; NULL with *len 0 when there is
 *  none). len may be NULL. */
SPORE_EXTERN(const void *) spore_result_bytes(const spore_result *res, size_t *len) SPORE_NOEXCEPT;

/** Frees a result (NULL is a no-op). */
SPORE_EXTERN(void) spore_result_free(spore_result *res) SPORE_NOEXCEPT;

#if defined(__cplusplus)
}
#endif

#endif /* SPORE_SPORE_H */
