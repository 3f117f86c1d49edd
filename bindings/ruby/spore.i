/* The Ruby extension of the spore C API (require "spore" loads it through
 * lib/spore.rb). The calls that can wait (connect, waiting for a reply or a
 * log record, shutdown, freeing a router, file transfers, process streams)
 * run without the GVL, through the spore_rb_* wrappers below; the Ruby
 * layer waits in short slices, so interrupts are seen between them. */
%module spore_c

/* Binary data: a Ruby String (binary-safe), held for the call. */
%typemap(in) (const void *data, size_t len) {
  if (NIL_P($input)) {
    $1 = NULL;
    $2 = 0;
  } else {
    Check_Type($input, T_STRING);
    $1 = (const void *)RSTRING_PTR($input);
    $2 = (size_t)RSTRING_LEN($input);
  }
}

/* A result's binary part comes back as a binary String. */
%typemap(in, numinputs=0) (char **bytes, size_t *nbytes) (char *b = NULL, size_t n = 0) {
  $1 = &b;
  $2 = &n;
}
%typemap(argout) (char **bytes, size_t *nbytes) {
  %append_output(rb_str_new(b$argnum ? b$argnum : "", (long)n$argnum));
  free(b$argnum);
}

%include "../swig/spore.i"

%{
#include <ruby/thread.h>

struct spore_rb_wait {
    spore_pending *call;
    int timeout_ms;
    char **json, **bytes;
    size_t *njson, *nbytes;
    int rc;
};
static void *spore_rb_wait_nogvl(void *p) {
    struct spore_rb_wait *a = (struct spore_rb_wait *)p;
    a->rc = spore_wait_result(a->call, a->timeout_ms, a->json, a->njson, a->bytes, a->nbytes);
    return NULL;
}

struct spore_rb_connect {
    spore_context **out;
    spore_router *router;
    const char *method;
    const spore_options *opts;
    spore_context *via;
    int rc;
};
static void *spore_rb_connect_nogvl(void *p) {
    struct spore_rb_connect *a = (struct spore_rb_connect *)p;
    a->rc = spore_connect(a->out, a->router, a->method, a->opts, a->via);
    return NULL;
}

/* Attaching waits for the listener; finding asks it. */
struct spore_rb_attach {
    spore_router **router_out;
    spore_context **ctx_out;
    spore_router *router;
    const char *text;
    const spore_options *opts;
    int rc;
};
static void *spore_rb_attach_nogvl(void *p) {
    struct spore_rb_attach *a = (struct spore_rb_attach *)p;
    if (a->router_out) a->rc = spore_router_attach(a->router_out, a->text, a->opts);
    else a->rc = spore_context_find(a->ctx_out, a->router, a->text);
    return NULL;
}

struct spore_rb_log {
    spore_router *router;
    spore_log_record **out;
    int timeout_ms;
    int rc;
};
static void *spore_rb_log_nogvl(void *p) {
    struct spore_rb_log *a = (struct spore_rb_log *)p;
    a->rc = spore_router_next_log(a->router, a->out, a->timeout_ms);
    return NULL;
}

/* File transfers: one argument block for all four. */
struct spore_rb_xfer {
    int kind; /* 0 put_file, 1 put_bytes, 2 get_file, 3 get_bytes, 4 put_tree, 5 get_tree */
    spore_context *ctx;
    const char *a, *b;
    const void *data;
    size_t len;
    const spore_options *opts;
    spore_result **out;
    int rc;
};
static void *spore_rb_xfer_nogvl(void *p) {
    struct spore_rb_xfer *x = (struct spore_rb_xfer *)p;
    switch (x->kind) {
    case 0: x->rc = spore_put_file(x->ctx, x->a, x->b, x->opts); break;
    case 1: x->rc = spore_put_bytes(x->ctx, x->data, x->len, x->a, x->opts); break;
    case 2: x->rc = spore_get_file(x->ctx, x->a, x->b, x->opts); break;
    case 4: x->rc = spore_put_tree(x->ctx, x->a, x->b, x->opts); break;
    case 5: x->rc = spore_get_tree(x->ctx, x->a, x->b, x->opts); break;
    default: x->rc = spore_get_bytes(x->out, x->ctx, x->a, x->opts); break;
    }
    return NULL;
}

static void *spore_rb_free_nogvl(void *p) {
    spore_router_free((spore_router *)p);
    return NULL;
}

struct spore_rb_shutdown {
    spore_context *ctx;
    int timeout_ms;
    int rc;
};
static void *spore_rb_shutdown_nogvl(void *p) {
    struct spore_rb_shutdown *a = (struct spore_rb_shutdown *)p;
    a->rc = spore_context_shutdown(a->ctx, a->timeout_ms);
    return NULL;
}
%}

%apply (char **bytes, size_t *nbytes) { (char **json, size_t *njson) };
%inline %{
static int spore_rb_wait_result(spore_pending *call, int timeout_ms, char **json, size_t *njson, char **bytes,
                                size_t *nbytes) {
    struct spore_rb_wait a = {call, timeout_ms, json, bytes, njson, nbytes, 0};
    rb_thread_call_without_gvl(spore_rb_wait_nogvl, &a, NULL, NULL);
    return a.rc;
}
static int spore_rb_connect(spore_context **out, spore_router *router, const char *method,
                            const spore_options *opts, spore_context *via) {
    struct spore_rb_connect a = {out, router, method, opts, via, 0};
    rb_thread_call_without_gvl(spore_rb_connect_nogvl, &a, NULL, NULL);
    return a.rc;
}
static int spore_rb_router_attach(spore_router **out, const char *path, const spore_options *opts) {
    struct spore_rb_attach a = {out, NULL, NULL, path, opts, 0};
    rb_thread_call_without_gvl(spore_rb_attach_nogvl, &a, NULL, NULL);
    return a.rc;
}
static int spore_rb_context_find(spore_context **out, spore_router *router, const char *name) {
    struct spore_rb_attach a = {NULL, out, router, name, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_attach_nogvl, &a, NULL, NULL);
    return a.rc;
}
static int spore_rb_next_log(spore_router *router, spore_log_record **out, int timeout_ms) {
    struct spore_rb_log a = {router, out, timeout_ms, 0};
    rb_thread_call_without_gvl(spore_rb_log_nogvl, &a, NULL, NULL);
    return a.rc;
}
static int spore_rb_put_file(spore_context *ctx, const char *local_path, const char *remote_path,
                             const spore_options *opts) {
    struct spore_rb_xfer x = {0, ctx, local_path, remote_path, NULL, 0, opts, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
/* data must not change while the GVL is released: the Ruby layer passes a
 * frozen copy. */
static int spore_rb_put_bytes(spore_context *ctx, const void *data, size_t len, const char *remote_path,
                              const spore_options *opts) {
    struct spore_rb_xfer x = {1, ctx, remote_path, NULL, data, len, opts, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
static int spore_rb_get_file(spore_context *ctx, const char *remote_path, const char *local_path,
                             const spore_options *opts) {
    struct spore_rb_xfer x = {2, ctx, remote_path, local_path, NULL, 0, opts, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
static int spore_rb_put_tree(spore_context *ctx, const char *local_dir, const char *remote_dir,
                             const spore_options *opts) {
    struct spore_rb_xfer x = {4, ctx, local_dir, remote_dir, NULL, 0, opts, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
static int spore_rb_get_tree(spore_context *ctx, const char *remote_dir, const char *local_dir,
                             const spore_options *opts) {
    struct spore_rb_xfer x = {5, ctx, remote_dir, local_dir, NULL, 0, opts, NULL, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
static int spore_rb_get_bytes(spore_result **out, spore_context *ctx, const char *remote_path,
                              const spore_options *opts) {
    struct spore_rb_xfer x = {3, ctx, remote_path, NULL, NULL, 0, opts, out, 0};
    rb_thread_call_without_gvl(spore_rb_xfer_nogvl, &x, NULL, NULL);
    return x.rc;
}
static void *spore_rb_close_nogvl(void *p) {
    spore_router_close((spore_router *)p);
    return NULL;
}
static void spore_rb_router_close(spore_router *router) {
    rb_thread_call_without_gvl(spore_rb_close_nogvl, router, NULL, NULL);
}
static void spore_rb_router_free(spore_router *router) {
    rb_thread_call_without_gvl(spore_rb_free_nogvl, router, NULL, NULL);
}
static int spore_rb_context_shutdown(spore_context *ctx, int timeout_ms) {
    struct spore_rb_shutdown a = {ctx, timeout_ms, 0};
    rb_thread_call_without_gvl(spore_rb_shutdown_nogvl, &a, NULL, NULL);
    return a.rc;
}
%}

/* Process streams: every call that can wait (a start until the process
 * runs, a write until it reads, a read, a wait, a signal or resize, which
 * are round trips to the agent, and a free, which kills) runs without the
 * GVL. The Ruby layer reads and waits in short slices. */
%{
struct spore_rb_proc {
    int kind; /* 0 start, 1 write, 2 close_stdin, 3 read, 4 signal, 5 resize, 6 wait, 7 free */
    spore_process *p;
    spore_process **out;
    spore_context *ctx;
    const char *args_json;
    const spore_options *opts;
    const void *data;
    size_t len;
    int fd, timeout_ms, a, b;
    int *exit_code, *signal;
    char **buf;
    size_t *nbuf;
    int rc;
};
static void *spore_rb_proc_nogvl(void *arg) {
    struct spore_rb_proc *x = (struct spore_rb_proc *)arg;
    switch (x->kind) {
    case 0: x->rc = spore_proc_start(x->out, x->ctx, x->args_json, x->opts); break;
    case 1: x->rc = spore_process_write(x->p, x->data, x->len, x->timeout_ms); break;
    case 2: x->rc = spore_process_close_stdin(x->p); break;
    case 3: x->rc = spore_process_read_data(x->p, x->fd, x->len, x->timeout_ms, x->buf, x->nbuf); break;
    case 4: x->rc = spore_process_signal(x->p, x->a); break;
    case 5: x->rc = spore_process_resize(x->p, x->a, x->b); break;
    case 6: x->rc = spore_process_wait(x->p, x->exit_code, x->signal, x->timeout_ms); break;
    default: spore_process_free(x->p); x->rc = 0; break;
    }
    return NULL;
}
static int spore_rb_proc_run(struct spore_rb_proc *x) {
    rb_thread_call_without_gvl(spore_rb_proc_nogvl, x, NULL, NULL);
    return x->rc;
}
%}

%inline %{
static int spore_rb_proc_start(spore_process **out, spore_context *ctx, const char *args_json,
                               const spore_options *opts) {
    struct spore_rb_proc x = {0};
    x.kind = 0, x.out = out, x.ctx = ctx, x.args_json = args_json, x.opts = opts;
    return spore_rb_proc_run(&x);
}
/* data must not change while the GVL is released: the Ruby layer passes a
 * frozen copy. */
static int spore_rb_process_write(spore_process *p, const void *data, size_t len, int timeout_ms) {
    struct spore_rb_proc x = {0};
    x.kind = 1, x.p = p, x.data = data, x.len = len, x.timeout_ms = timeout_ms;
    return spore_rb_proc_run(&x);
}
static int spore_rb_process_close_stdin(spore_process *p) {
    struct spore_rb_proc x = {0};
    x.kind = 2, x.p = p;
    return spore_rb_proc_run(&x);
}
static int spore_rb_process_read(spore_process *p, int fd, size_t cap, int timeout_ms, char **data, size_t *ndata) {
    struct spore_rb_proc x = {0};
    x.kind = 3, x.p = p, x.fd = fd, x.len = cap, x.timeout_ms = timeout_ms, x.buf = data, x.nbuf = ndata;
    return spore_rb_proc_run(&x);
}
static int spore_rb_process_signal(spore_process *p, int signum) {
    struct spore_rb_proc x = {0};
    x.kind = 4, x.p = p, x.a = signum;
    return spore_rb_proc_run(&x);
}
static int spore_rb_process_resize(spore_process *p, int rows, int cols) {
    struct spore_rb_proc x = {0};
    x.kind = 5, x.p = p, x.a = rows, x.b = cols;
    return spore_rb_proc_run(&x);
}
static int spore_rb_process_wait(spore_process *p, int *exit_code, int *signal, int timeout_ms) {
    struct spore_rb_proc x = {0};
    x.kind = 6, x.p = p, x.exit_code = exit_code, x.signal = signal, x.timeout_ms = timeout_ms;
    return spore_rb_proc_run(&x);
}
static void spore_rb_process_free(spore_process *p) {
    struct spore_rb_proc x = {0};
    x.kind = 7, x.p = p;
    spore_rb_proc_run(&x);
}
%}
