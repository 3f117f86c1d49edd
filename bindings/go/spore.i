/* The Go package spore.dev/spore/internal/capi: the spore C API as SWIG
 * generates it for Go (swig -go -cgo). The package spore on top of it is the
 * one programs import; nothing outside this module may use capi directly.
 *
 * Shapes given to the C API for Go:
 *  - out-parameters of handles (spore_router **out, ...) take a one-element
 *    []uintptr, which receives the handle (the Go layer turns it into the
 *    handle's Swigcptr type);
 *  - (const void *data, size_t len) takes a []byte, borrowed for the call;
 *  - the binary part of a result is copied into a []byte the caller sized
 *    with spore_go_result_len;
 *  - the error detail of the calling thread is copied out in the same
 *    crossing as the failed call would need two (the Go layer locks the OS
 *    thread between them, because spore_last_error is per thread). */
%module capi

/* cgo finds the library with pkg-config (spore.pc, or in the build tree
 * spore-uninstalled.pc). */
%insert(cgo_comment_typedefs) %{
#cgo pkg-config: spore
%}

%include <typemaps.i>

%define SPORE_OUT_HANDLE(TYPE)
%typemap(gotype) TYPE **out "[]uintptr"
%typemap(in) TYPE **out (TYPE *tmp = NULL) {
  if ($input.len < 1) {
    _swig_gopanic("spore: out-parameter slice must have one element");
  }
  $1 = &tmp;
}
%typemap(argout) TYPE **out {
  ((TYPE **)$input.array)[0] = tmp$argnum;
}
%enddef
#define SPORE_OUT_HANDLE_DEFINED

/* Binary data in: a Go []byte, read by C during the call only. */
%typemap(gotype) (const void *data, size_t len) "[]byte"
%typemap(in) (const void *data, size_t len) {
  $1 = ($1_ltype)$input.array;
  $2 = (size_t)$input.len;
}

/* Binary data out: C copies into a []byte made by Go. */
%typemap(gotype) (void *dst, size_t cap) "[]byte"
%typemap(in) (void *dst, size_t cap) {
  $1 = (void *)$input.array;
  $2 = (size_t)$input.len;
}

/* spore_process_read fills a []byte. */
%apply (void *dst, size_t cap) { (void *buf, size_t cap) };

/* SWIG's int *OUTPUT for Go stores a C int into the first 4 bytes of a Go
 * int (8 bytes), so -1 (the exit code of a killed process) came out as
 * 4294967295: Go waits for a process through spore_go_process_wait, whose
 * outputs are 64-bit. */
%ignore spore_process_wait;

/* The helpers for the other languages' byte strings are not used by Go. */
%ignore spore_result_data;
%ignore spore_wait_result;

%include "../swig/spore.i"

%apply long long *OUTPUT { long long *exit_code64, long long *signal64 };

%inline %{
/* Length of a result's binary part (0 when there is none). */
static size_t spore_go_result_len(const spore_result *res) {
    size_t n = 0;
    (void)spore_result_bytes(res, &n);
    return n;
}
/* spore_process_wait with 64-bit outputs (see above). */
static int spore_go_process_wait(spore_process *p, long long *exit_code64, long long *signal64, int timeout_ms) {
    int code = 0, sig = 0;
    int rc = spore_process_wait(p, &code, &sig, timeout_ms);
    *exit_code64 = code;
    *signal64 = sig;
    return rc;
}
/* Copies up to cap bytes of the result's binary part into dst. */
static size_t spore_go_result_copy(const spore_result *res, void *dst, size_t cap) {
    size_t n = 0;
    const void *p = spore_result_bytes(res, &n);
    if (!p || !dst) return 0;
    if (n > cap) n = cap;
    memcpy(dst, p, n);
    return n;
}
%}
