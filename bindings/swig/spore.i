/* spore.i - the one SWIG interface of the spore C API (C mode), shared by
 * every language. A language's own .i sets %module and includes this file.
 *
 * Shapes given to the C API:
 *  - out-parameters of handles (spore_router **out, ...) become extra
 *    return values, after the int status;
 *  - (const void *data, size_t len) takes a byte string (typemap in the
 *    language's .i, from its own buffer type);
 *  - spore_result_bytes returns the result's binary part as a byte string;
 *  - everything else is wrapped as declared in spore/spore.h.
 * Status codes are returned, not raised: the per-language layer turns a
 * negative code into an exception, with spore_last_error() read on the
 * same thread. */

%{
#include "spore/spore.h"
#include <stdlib.h>
#include <string.h>
%}

%include <stdint.i>

/* A handle returned through an out-parameter. Go has no multiple results
 * in SWIG; its .i defines SPORE_OUT_HANDLE itself before including this. */
#ifndef SPORE_OUT_HANDLE_DEFINED
%define SPORE_OUT_HANDLE(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **out { %append_output(SWIG_NewPointerObj(SWIG_as_voidptr(tmp$argnum), $descriptor(TYPE *), 0)); }
%enddef
#endif
SPORE_OUT_HANDLE(spore_router)
SPORE_OUT_HANDLE(spore_options)
SPORE_OUT_HANDLE(spore_context)
SPORE_OUT_HANDLE(spore_pending)
SPORE_OUT_HANDLE(spore_result)
SPORE_OUT_HANDLE(spore_chain)
SPORE_OUT_HANDLE(spore_log_record)

/* Binary data in, (const void *data, size_t len): each language's .i maps
 * its byte strings onto it before including this file. */

/* spore_version's three out-ints, and a process's exit. */
%apply int *OUTPUT { int *major, int *minor, int *patch };
%apply int *OUTPUT { int *exit_code, int *signal };

/* The binary part of a result, copied out by spore_result_data (the
 * language's .i turns (char **bytes, size_t *nbytes) into its byte string
 * and frees the copy). */
%ignore spore_result_bytes;
%inline %{
static void spore_result_data(const spore_result *res, char **bytes, size_t *nbytes) {
    size_t n = 0;
    const void *p = spore_result_bytes(res, &n);
    *bytes = NULL;
    *nbytes = 0;
    if (!p || n == 0) return;
    *bytes = (char *)malloc(n);
    if (!*bytes) return;
    memcpy(*bytes, p, n);
    *nbytes = n;
}
%}

/* Waits for a call and, once it is answered, hands back its JSON text and
 * binary part as copies and frees the result: one crossing into C per
 * wait instead of four (wait, json, data, free). */
#ifndef SWIGGO
%apply (char **bytes, size_t *nbytes) { (char **json, size_t *njson) };
#endif
%inline %{
static int spore_wait_result(spore_pending *call, int timeout_ms, char **json, size_t *njson, char **bytes,
                             size_t *nbytes) {
    spore_result *res = NULL;
    int rc = spore_call_wait(call, &res, timeout_ms);
    *json = NULL;
    *njson = 0;
    *bytes = NULL;
    *nbytes = 0;
    if (rc != 0 || !res) return rc;
    const char *text = spore_result_json(res);
    size_t tl = text ? strlen(text) : 0;
    if (tl && (*json = (char *)malloc(tl)) != NULL) {
        memcpy(*json, text, tl);
        *njson = tl;
    }
    spore_result_data(res, bytes, nbytes);
    spore_result_free(res);
    return rc;
}
%}

/* Process streams: spore_process_read into a fresh buffer, handed back as
 * the language's byte string (Python and Ruby; Go reads into a []byte). */
SPORE_OUT_HANDLE(spore_process)
#ifndef SWIGGO
%ignore spore_process_read;
%apply (char **bytes, size_t *nbytes) { (char **data, size_t *ndata) };
%inline %{
static int spore_process_read_data(spore_process *p, int fd, size_t cap, int timeout_ms, char **data,
                                   size_t *ndata) {
    *data = NULL;
    *ndata = 0;
    if (cap == 0) cap = 1;
    char *buf = (char *)malloc(cap);
    if (!buf) return SPORE_ENOMEM;
    int n = spore_process_read(p, fd, buf, cap, timeout_ms);
    if (n > 0) {
        *data = buf;
        *ndata = (size_t)n;
    } else {
        free(buf);
    }
    return n;
}
%}
#endif

/* spore_free takes memory spore returned as char *; nothing in this
 * interface hands such memory out, so it is not wrapped. */
%ignore spore_free;
/* The option tables are for C programs and the CLI (spore help options);
 * the bindings pass options through as they are given. */
%ignore spore_option_table;
%ignore spore_option_info;

#define SPORE_EXTERN(type) type
#define SPORE_NOEXCEPT
%include "spore/errors.h"
%include "spore/version.h"
%include "spore/spore.h"
