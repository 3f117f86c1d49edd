/* The Python module of the spore C API. Built with -threads: every wrapped
 * call releases the GIL, so Python threads calling spore run in parallel. */
%module(package="spore") spore_c

/* Binary data: anything with the buffer protocol (bytes, bytearray,
 * memoryview), NULs included; held for the duration of the call. */
%typemap(in) (const void *data, size_t len) (Py_buffer view) {
  view.obj = NULL;
  if (PyObject_GetBuffer($input, &view, PyBUF_SIMPLE) != 0) SWIG_fail;
  $1 = view.buf;
  $2 = (size_t)view.len;
}
%typemap(freearg) (const void *data, size_t len) {
  if (view$argnum.obj) PyBuffer_Release(&view$argnum);
}

/* A result's binary part comes back as bytes. */
%typemap(in, numinputs=0) (char **bytes, size_t *nbytes) (char *b = NULL, size_t n = 0) {
  $1 = &b;
  $2 = &n;
}
%typemap(argout) (char **bytes, size_t *nbytes) {
  %append_output(PyBytes_FromStringAndSize(b$argnum ? b$argnum : "", (Py_ssize_t)n$argnum));
  free(b$argnum);
}

%include "../swig/spore.i"
