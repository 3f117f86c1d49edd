"""spore for Python: open contexts, run calls in them, receive their logs.

    import spore
    with spore.Router() as r:
        ctx = r.local()
        print(ctx.call("sys.info")["hostname"])
        fork = r.connect("fork", via=ctx)
        print(fork.call("fs.stat", path="/etc"))
        print(fork.call(os.getcwd))     # your own functions too


A thin layer over the C API (the SWIG module spore.spore_c):
- handles become objects that may be dropped in any order;
- a negative status becomes an exception under spore.Error, one class per
  error code;
- calls wait in short slices, so Ctrl-C interrupts them promptly (the GIL
  is released while the C library waits);
- the agents' log records go into `logging`, under "spore.<context name>",
  from a background thread.
"""
import concurrent.futures
import io
import json
import logging
import os
import selectors
import threading
from collections import namedtuple

from . import spore_c as _c
from . import _remote

__all__ = [
    "Router", "Context", "Chain", "PythonCalls", "Reply", "Error", "CallError", "version",
    "DEBUG", "INFO", "WARNING", "ERROR",
]

DEBUG, INFO, WARNING, ERROR = _c.SPORE_LOG_DEBUG, _c.SPORE_LOG_INFO, _c.SPORE_LOG_WARNING, _c.SPORE_LOG_ERROR

#: A result that came with a binary part: the JSON value and the bytes.
Reply = namedtuple("Reply", "value data")

_WAIT_SLICE_MS = 50  # how long a blocking call waits before Python looks at signals


def version():
    """The version string of the loaded C library."""
    return _c.spore_version_string()


# ------------------------------------------------------------------ errors

class Error(Exception):
    """A spore failure: code (the C SPORE_E* value), message, and where it
    applies remote_type, context and function."""

    code = None

    def __init__(self, message, code=None, remote_type=None, context=None, function=None, remote_traceback=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.remote_type = remote_type or None
        self.context = context or None
        self.function = function or None
        self.remote_traceback = remote_traceback or None

    @property
    def code_name(self):
        return _CODE_NAMES.get(self.code, "EUNKNOWN")


# One class per error code of spore/errors.h; the names read as Python's.
_CLASS_NAMES = {
    "EINVAL": "InvalidArgument", "ENOMEM": "OutOfMemory", "ECONNECT": "ConnectError",
    "ETIMEDOUT": "Timeout", "EDISCONNECTED": "Disconnected", "ENOFUNC": "UnknownFunction",
    "EBADARGS": "BadArguments", "EREMOTE": "RemoteError", "EREFUSED": "Refused",
    "ETOOBIG": "MessageTooLarge", "EPROTO": "ProtocolError", "ENOROUTE": "NoRoute",
    "ESHUTDOWN": "ShutDown", "EINTERNAL": "InternalError", "EUNKNOWN": "UnknownError",
    "EAUTH": "AuthenticationFailed", "EPASSREQ": "PasswordRequired", "EHOSTKEY": "HostKeyError",
    "EDENIED": "Denied", "ENOENT": "NotFound", "EACCES": "PermissionDenied", "ENOSPC": "NoSpace",
    "ECHANGED": "FileChanged", "EUNRESPONSIVE": "Unresponsive", "ENOPYTHON": "PythonNotFound",
    "EWORKER": "WorkerDied",
}
_CODE_NAMES = {}
_BY_CODE = {}
for _name, _cls_name in _CLASS_NAMES.items():
    _code = getattr(_c, "SPORE_" + _name)
    _cls = type(_cls_name, (Error,), {"code": _code, "__doc__": _c.spore_strerror(_code) + " (SPORE_%s)" % _name})
    _CODE_NAMES[_code] = _name
    _BY_CODE[_code] = _cls
    globals()[_cls_name] = _cls
    __all__.append(_cls_name)


class CallError(RemoteError):  # noqa: F821 (made above)
    """A failure inside the called function (SPORE_EREMOTE): for a Python
    function, remote_type is its exception's class ("ValueError",
    "mypkg.errors.Refused") and remote_traceback the formatted remote
    traceback, which str() shows too."""

    def __str__(self):
        if self.remote_traceback:
            return "%s\n%s" % (self.message, self.remote_traceback.rstrip("\n"))
        return self.message


_BY_CODE[_c.SPORE_EREMOTE] = CallError


def _error_from(e):
    cls = _BY_CODE.get(e.code, _BY_CODE[_c.SPORE_EUNKNOWN])
    return cls(e.message or _c.spore_strerror(e.code), e.code, e.remote_type, e.context, e.function,
               getattr(e, "traceback", None))


def _check(rc):
    """Raises the error of a negative status (read on this thread)."""
    if rc < 0:
        raise _error_from(_c.spore_last_error())
    return rc


# ----------------------------------------------------------------- options

def _options(opts):
    """A C options object from keyword arguments (None: no object)."""
    if not opts:
        return None
    rc, o = _c.spore_options_new()
    _check(rc)
    try:
        for key, value in opts.items():
            if value is None:
                continue
            if isinstance(value, bool):
                rc = _c.spore_options_set_bool(o, key, 1 if value else 0)
            elif isinstance(value, int):
                rc = _c.spore_options_set_int(o, key, value)
            elif isinstance(value, (list, tuple)):
                rc = 0
                for word in value:
                    rc = _c.spore_options_add_str(o, key, str(word))
                    if rc < 0:
                        break
            else:
                rc = _c.spore_options_set_str(o, key, str(value))
            _check(rc)
    except BaseException:
        _c.spore_options_free(o)
        raise
    return o


def _free_options(o):
    if o is not None:
        _c.spore_options_free(o)


def _decode(res):
    """The Python value of a C result (then freed): the JSON value, or a
    Reply(value, data) when the result has a binary part."""
    try:
        text = _c.spore_result_json(res)
        value = _parse(text)
        data = _c.spore_result_data(res)
    finally:
        _c.spore_result_free(res)
    if data:
        return Reply(value, data)
    return value


# Results that need no parser: a no-op call's reply costs less than
# json.loads itself would.
_CONSTANTS = {b"true": True, b"false": False, b"null": None, b"": None}


def _parse(text):
    try:
        return _CONSTANTS[text]
    except (KeyError, TypeError):
        return json.loads(text)


def _args_json(kwargs):
    return json.dumps(kwargs) if kwargs else None


def _data(data):
    """Binary data for the C API: bytes-like, or None for none."""
    if data is None:
        return b""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes, not %s" % type(data).__name__)
    return data


# ---------------------------------------------------------- async results

class _Future(concurrent.futures.Future):
    """The Future of an async call, completed by whoever needs it first.

    result() and exception() wait in C on the caller's own thread (GIL
    released), so the usual `[f.result() for f in futures]` costs no thread
    hand-off. concurrent.futures.wait, as_completed and add_done_callback
    hand the call to the router's completer thread instead, which waits on
    the call fds. Only the holder of _claim touches the C call: a thread
    that cannot take it waits on the Future's condition for the holder to
    finish."""

    def __init__(self, pending, completer, decode=None):
        super().__init__()
        self.set_running_or_notify_cancel()
        self._decode = decode
        self._pending = pending
        self._completer = completer
        self._claim = threading.Lock()
        self._handed = False

    # concurrent.futures.wait and as_completed install their waiters here:
    # from then on the completer thread must finish the call, as the
    # waiting thread will not.
    @property
    def _waiters(self):
        if not self._handed and self._state == "RUNNING":
            self._handed = True
            self._completer.add(self)
        return self.__dict__["_spore_waiters"]

    @_waiters.setter
    def _waiters(self, value):
        self.__dict__["_spore_waiters"] = value

    def add_done_callback(self, fn):
        if not self._handed and not self.done():
            self._handed = True
            self._completer.add(self)
        super().add_done_callback(fn)

    def done(self):
        if super().done():
            return True
        if self._claim.acquire(False):
            try:
                if not super().done() and self._pending is not None and _c.spore_call_done(self._pending):
                    self._finish(0)
            finally:
                self._release()
        return super().done()

    def _release(self):
        self._claim.release()
        # The completer skips a future while another thread holds the claim;
        # if it was handed over meanwhile, hand it again.
        if self._handed and not super().done():
            self._completer.add(self)

    def result(self, timeout=None):
        self._wait_here(timeout)
        return super().result(timeout)

    def exception(self, timeout=None):
        self._wait_here(timeout)
        return super().exception(timeout)

    def _wait_here(self, timeout):
        """Waits in C, in slices so that Ctrl-C gets through, if nobody else
        is; raises TimeoutError when timeout (seconds) passes first."""
        if super().done() or not self._claim.acquire(False):
            return  # done, or another thread is finishing it
        try:
            remaining = None if timeout is None else int(timeout * 1000)
            while not super().done() and self._pending is not None:
                slice_ms = _WAIT_SLICE_MS if remaining is None else max(0, min(_WAIT_SLICE_MS, remaining))
                if self._finish(slice_ms):
                    return
                if remaining is not None:
                    remaining -= slice_ms
                    if remaining <= 0:
                        raise concurrent.futures.TimeoutError()
        finally:
            self._release()

    def _finish(self, timeout_ms):
        """With _claim held: waits up to timeout_ms for the reply; on an
        outcome sets it, frees the C call and returns True."""
        pending = self._pending
        rc, text, data = _c.spore_wait_result(pending, timeout_ms)
        if rc == _c.SPORE_ETIMEDOUT and _c.spore_call_error(pending).code == _c.SPORE_OK:
            return False
        try:
            if rc < 0:
                self.set_exception(_error_from(_c.spore_call_error(pending)))
            elif self._decode is not None:
                try:
                    value = self._decode(text, data)
                except ValueError as e:
                    self.set_exception(ProtocolError("malformed result: %s" % e, _c.SPORE_EPROTO))  # noqa: F821
                else:
                    self.set_result(value)
            else:
                value = _parse(text)
                self.set_result(Reply(value, data) if data else value)
        except concurrent.futures.InvalidStateError:
            pass
        finally:
            self._pending = None
            _c.spore_call_free(pending)
        return True

    def __del__(self):
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            _c.spore_call_free(pending)


class _Completer(threading.Thread):
    """One thread per router that completes the futures handed to it (see
    _Future): it waits on their call fds (spore_call_fd)."""

    def __init__(self):
        super().__init__(name="spore-completer", daemon=True)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming = []
        self._pending = {}
        self._stopping = False

    def add(self, future):
        # One wake-up per burst: the thread takes everything queued at once.
        with self._lock:
            self._incoming.append(future)
            wake = len(self._incoming) == 1
        if wake:
            os.write(self._wake_w, b"x")

    def stop(self):
        self._stopping = True
        os.write(self._wake_w, b"x")
        self.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._sel.close()

    def _take(self, future):
        # A thread already waiting in C on it finishes it itself.
        if future.done() or not future._claim.acquire(False):
            return
        if future._pending is None or future.done():
            future._claim.release()
            return
        # Most calls of a burst have their reply by now: no fd for those.
        if _c.spore_call_done(future._pending):
            self._finish(future)
            return
        fd = _c.spore_call_fd(future._pending)
        if fd < 0:
            self._finish(future)
            return
        self._pending[fd] = future  # keeps _claim until finished
        self._sel.register(fd, selectors.EVENT_READ, fd)

    @staticmethod
    def _finish(future):
        try:
            future._finish(0)
        finally:
            future._claim.release()

    def run(self):
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        incoming, self._incoming = self._incoming, []
                    for future in incoming:
                        self._take(future)
                    continue
                future = self._pending.pop(key.data)
                self._sel.unregister(key.data)
                self._finish(future)
            if self._stopping:
                # The router is going: every call still out fails as ShutDown.
                for future in list(self._pending.values()):
                    self._finish(future)
                self._pending.clear()
                return


# --------------------------------------------------------------- the logs

_LEVELS = {DEBUG: logging.DEBUG, INFO: logging.INFO, WARNING: logging.WARNING, ERROR: logging.ERROR}


def _pump_logs(handle):
    """Moves the agents' log records into `logging` until the router is
    closed and its queue is empty (ESHUTDOWN). It holds the C handle, not
    the Router, so an unreferenced Router is still collected (and closed)."""
    while True:
        rc, rec = _c.spore_router_next_log(handle, 100)
        if rc == _c.SPORE_ETIMEDOUT:
            continue
        if rc < 0:
            return
        try:
            name = _c.spore_log_record_context(rec) or "master"
            logger = logging.getLogger("spore." + name)
            number = _c.spore_log_record_level(rec)
            level = _LEVELS.get(number, number if number > 0 else logging.INFO)
            if logger.isEnabledFor(level):
                record = logger.makeRecord(logger.name, level, "(spore)", 0, _c.spore_log_record_message(rec),
                                           None, None, extra={
                                               "spore_context": name,
                                               "spore_logger": _c.spore_log_record_logger(rec),
                                           })
                record.created = _c.spore_log_record_time(rec)
                logger.handle(record)
        finally:
            _c.spore_log_record_free(rec)


# ------------------------------------------------------------------ router

def _default_log_level(options):
    if "log_level" not in options:
        level = logging.getLogger("spore").getEffectiveLevel()
        options["log_level"] = max(DEBUG, min(ERROR, level))


class _Closing:
    """close() on leaving a with block and when collected."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Router(_Closing):
    """One spore router: owns the I/O thread and every context opened from
    it. Use it as a context manager, or call close(). Keyword options are
    router options (agent_path, max_message_size, log_level,
    log_queue_size, log_queue_bytes); log_level defaults to the effective level of the
    "spore" logger, and forward_logs=False keeps records out of `logging`."""

    def __init__(self, forward_logs=True, **options):
        _default_log_level(options)
        o = _options(options)
        try:
            rc, handle = _c.spore_router_new(o)
            _check(rc)
        finally:
            _free_options(o)
        self._setup(handle, forward_logs)

    @classmethod
    def attach(cls, path, forward_logs=True, **options):
        """A router attached to the router listening at `path` (see listen()):
        its contexts are the listener's. connect() asks the listener and by
        default returns the listener's live context opened with the same
        method, options and via (reuse=False for a new one); find() finds
        the listener's contexts by name. Options: connect_timeout (ms),
        log_level, log_queue_size. Closing it leaves the contexts up."""
        _default_log_level(options)
        o = _options(options)
        try:
            rc, handle = _c.spore_router_attach(os.fspath(path), o)
            _check(rc)
        finally:
            _free_options(o)
        router = cls.__new__(cls)
        router._setup(handle, forward_logs)
        return router

    def _setup(self, handle, forward_logs):
        self._handle = handle
        self._lock = threading.Lock()
        self._serving = None
        self._completer_thread = None
        self._log_thread = None
        if forward_logs:
            self._log_thread = threading.Thread(target=_pump_logs, args=(handle,),
                                                name="spore-logs", daemon=True)
            self._log_thread.start()

    def listen(self, path):
        """Accepts attached routers (Router.attach) on a Unix socket at
        `path`: other processes of this user then use this router's contexts
        with its authority. The socket gets mode 0600; its directory must be
        this user's with mode 0700 (created so if missing)."""
        _check(_c.spore_router_listen(self._h(), os.fspath(path)))

    def find(self, name):
        """The live context named `name` (for an attached router: one its
        listener has). Raises NotFound when there is none."""
        rc, handle = _c.spore_context_find(self._h(), name)
        _check(rc)
        return Context(self, handle, None)


    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Shuts every context down and frees the router. Idempotent.
        Calls still waiting fail with ShutDown."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is None:
            return
        # The shutdown first: the log thread then takes the records still
        # queued and leaves, so none is lost, before the handle goes.
        _c.spore_router_close(handle)
        if self._log_thread is not None and self._log_thread is not threading.current_thread():
            self._log_thread.join()
        _c.spore_router_free(handle)
        with self._lock:
            completer, self._completer_thread = self._completer_thread, None
        if completer is not None:
            completer.stop()

    @property
    def _completer(self):
        """The thread that completes this router's futures, started with
        the first one: a program that only waits for its calls never
        needs it."""
        completer = self._completer_thread
        if completer is None:
            with self._lock:
                if self._completer_thread is None:
                    self._h()
                    thread = _Completer()
                    thread.start()
                    self._completer_thread = thread
                completer = self._completer_thread
        return completer

    def _h(self):
        h = self._handle
        if h is None:
            raise ShutDown("the router is closed", _c.SPORE_ESHUTDOWN)  # noqa: F821 (made above)
        return h

    def set_log_level(self, level):
        _check(_c.spore_router_set_log_level(self._h(), level))

    # ---------------------------------------------------- Python modules

    @property
    def _modules(self):
        """What this router serves to its contexts' Python workers, set up
        on the first call of a Python function."""
        serving = self._serving
        if serving is None:
            with self._lock:
                if self._serving is None:
                    self._serving = _remote.ModuleServing(self._h())
                serving = self._serving
        return serving

    def add_module_path(self, path, on_demand=False):
        """Serves Python modules from the directory `path` too (sys.path is
        served already). on_demand=True: only when asked for by name, never
        sent along with a module that imports them."""
        flags = _c.SPORE_MODULE_PATH_ON_DEMAND if on_demand else 0
        _check(_c.spore_router_add_module_path(self._h(), os.fspath(path), flags))

    def add_module(self, name, source, path=None, package=False):
        """Serves `source` (bytes or str) as the Python module `name`,
        ahead of any directory: a worker importing `name` gets exactly this
        code. `path` is the file name its tracebacks show."""
        if isinstance(source, str):
            source = source.encode("utf-8")
        _check(_c.spore_router_add_module(self._h(), name, path or "<%s>" % name, bytes(source),
                                          1 if package else 0))

    def deny_module(self, name):
        """Never serves the module `name` or anything under it: a worker
        importing it gets ModuleNotFoundError saying it was refused."""
        _check(_c.spore_router_deny_module(self._h(), name))

    def module_stats(self):
        """Counters of the module server: requests (names asked for),
        modules_sent, bytes_sent (module source), refused, workers (times
        the worker's own code was sent)."""
        h = self._h()
        return {
            "requests": _c.spore_router_module_stat(h, _c.SPORE_MODULE_REQUESTS),
            "modules_sent": _c.spore_router_module_stat(h, _c.SPORE_MODULE_SENT),
            "bytes_sent": _c.spore_router_module_stat(h, _c.SPORE_MODULE_BYTES_SENT),
            "refused": _c.spore_router_module_stat(h, _c.SPORE_MODULE_REFUSED),
            "workers": _c.spore_router_module_stat(h, _c.SPORE_MODULE_WORKERS),
        }

    def connect(self, method, via=None, **options):
        """Opens a context with a connection method ("local", "fork", "ssh",
        "sudo", "docker", ...; see docs/methods.md), through `via` if given.
        Options are the method's connect options; lists are list options."""
        o = _options(options)
        try:
            rc, handle = _c.spore_connect(self._h(), method, o, via._h() if via is not None else None)
            _check(rc)
        finally:
            _free_options(o)
        return Context(self, handle, via)

    def local(self, **options):
        return self.connect("local", **options)

    def fork(self, via, **options):
        return self.connect("fork", via=via, **options)

    def ssh(self, hostname, via=None, **options):
        return self.connect("ssh", via=via, hostname=hostname, **options)

    def sudo(self, username="root", via=None, **options):
        return self.connect("sudo", via=via, username=username, **options)

    def su(self, username="root", via=None, **options):
        return self.connect("su", via=via, username=username, **options)

    def doas(self, username="root", via=None, **options):
        return self.connect("doas", via=via, username=username, **options)


# ----------------------------------------------------------------- context

class Context:
    """A context: one agent process, reached through its router."""

    def __init__(self, router, handle, via=None):
        self._router = router  # keeps the router's Python side alive
        self._handle = handle
        self._via = via
        self.id = _c.spore_context_id(handle)
        self.name = _c.spore_context_name(handle)

    def __repr__(self):
        return "<spore.Context %s (id %d)>" % (self.name, self.id)

    def __del__(self):
        h, self._handle = getattr(self, "_handle", None), None
        if h is not None:
            _c.spore_context_free(h)

    def _h(self):
        if self._handle is None:
            raise InvalidArgument("the context was freed", _c.SPORE_EINVAL)  # noqa: F821
        return self._handle

    @property
    def alive(self):
        return self._handle is not None and _c.spore_context_alive(self._handle) == 1

    def call(self, function, *args, **kwargs):
        """Runs a function in this context and returns its result.

        A Python function (a module-level function, staticmethod or
        classmethod, or its dotted name as a string) gets *args and
        **kwargs and returns any value spore can carry; its module is
        imported in the context, and shipped from here if the context lacks
        it. Exceptions arrive as CallError. For a timeout or fork isolation
        use with_options(). See docs/python.md, "Your own functions".

        A built-in ("sys.info", "fs.stat", ...) takes keyword arguments
        only, plus data (binary part) and timeout (seconds); its result is
        the JSON value, or Reply(value, data) when it has a binary part.
        Ctrl-C interrupts the wait either way."""
        if isinstance(function, str) and _remote.is_builtin(function):
            return self._call_builtin(function, *args, **kwargs)
        return self.with_options().call(function, *args, **kwargs)

    def call_async(self, function, *args, **kwargs):
        """Starts a call (as call()) and returns a concurrent.futures.Future
        of its result."""
        if isinstance(function, str) and _remote.is_builtin(function):
            args_json, data = _builtin_args(function, args, kwargs)
            rc, pending = _c.spore_call_async(self._h(), function, args_json, data)
            _check(rc)
            return _Future(pending, self._router._completer)
        return self.with_options().call_async(function, *args, **kwargs)

    def call_no_reply(self, function, *args, **kwargs):
        """Sends a call (as call()) nobody waits for; its failure is logged
        by the context."""
        if isinstance(function, str) and _remote.is_builtin(function):
            _check(_c.spore_call_no_reply(self._h(), function, *_builtin_args(function, args, kwargs)))
            return
        self.with_options().call_no_reply(function, *args, **kwargs)

    def map(self, function, *iterables):
        """Runs a Python function once per set of items, as the builtin map
        does, in one message and one round trip (see PythonCalls.map)."""
        return self.with_options().map(function, *iterables)

    def with_options(self, timeout=None, isolation=None):
        """Calls of Python functions with options: timeout (seconds, None:
        none) and isolation ("shared", the default: the context's warm
        worker; "fork": a fresh fork of it for each call, so sys.exit,
        chdir, environment changes, leaked fds or a crash stay there)."""
        return PythonCalls(self, timeout, isolation)

    def _call_builtin(self, function, *args, timeout=None, **kwargs):
        rc, pending = _c.spore_call_async(self._h(), function, *_builtin_args(function, args, kwargs))
        _check(rc)
        try:
            return _wait(pending, timeout)
        finally:
            _c.spore_call_free(pending)

    def _with_options(self, options, fn, *args):
        """Calls fn(handle, *args, options) with a C options object made from
        the keyword arguments, and checks its status."""
        o = _options(options)
        try:
            _check(fn(self._h(), *args, o))
        finally:
            _free_options(o)

    # ------------------------------------------------------------ files
    # Options: mode, preserve_owner, preserve_mtime, sync, window, timeout
    # (ms), max_size (get_bytes); see docs/c-api.md, "Files". The GIL is
    # released while the transfer runs.

    def put_file(self, local_path, remote_path, **options):
        """Copies a local file to remote_path in this context (atomically:
        a reader sees the old file or the whole new one)."""
        self._with_options(options, _c.spore_put_file, os.fspath(local_path), os.fspath(remote_path))

    def put_bytes(self, data, remote_path, **options):
        """Writes bytes (or any bytes-like object) as the file remote_path."""
        self._with_options(options, _c.spore_put_bytes, _data(data), os.fspath(remote_path))

    def get_file(self, remote_path, local_path, **options):
        """Copies remote_path of this context to a local file."""
        self._with_options(options, _c.spore_get_file, os.fspath(remote_path), os.fspath(local_path))

    def put_tree(self, local_dir, remote_dir, **options):
        """Copies a local directory tree into remote_dir (created if
        missing; what it held is kept unless the tree replaces it)."""
        self._with_options(options, _c.spore_put_tree, os.fspath(local_dir), os.fspath(remote_dir))

    def get_tree(self, remote_dir, local_dir, **options):
        """Copies the directory tree remote_dir of this context into local_dir."""
        self._with_options(options, _c.spore_get_tree, os.fspath(remote_dir), os.fspath(local_dir))

    def get_bytes(self, remote_path, **options):
        """The content of remote_path as bytes (at most max_size, default
        128 MiB)."""
        o = _options(options)
        try:
            rc, res = _c.spore_get_bytes(self._h(), os.fspath(remote_path), o)
            _check(rc)
        finally:
            _free_options(o)
        try:
            return _c.spore_result_data(res)
        finally:
            _c.spore_result_free(res)

    # -------------------------------------------------- process streams

    def start(self, argv=None, *, shell=None, env=None, env_clear=False, cwd=None, pty=False, rows=24, cols=80,
              window=None, timeout=60.0):
        """Starts a process whose stdin, stdout and stderr are streams
        (docs/c-api.md, "Process streams"); returns a Process once it runs.
        timeout: seconds to wait for that (None: no limit); a start that
        times out raises spore.Timeout and is cancelled in the context,
        so the process does not run, or is killed as soon as it does."""
        args = {"pty": bool(pty), "rows": rows, "cols": cols, "env_clear": bool(env_clear)}
        if argv is not None:
            args["argv"] = [str(a) for a in argv]
        if shell is not None:
            args["shell"] = shell
        if env is not None:
            args["env"] = env
        if cwd is not None:
            args["cwd"] = os.fspath(cwd)
        o = _options({"window": window or None, "timeout_ms": -1 if timeout is None else max(0, int(timeout * 1000))})
        try:
            rc, handle = _c.spore_proc_start(self._h(), json.dumps(args), o)
            _check(rc)
        finally:
            _free_options(o)
        return Process(self, handle)

    def chain(self):
        """A call chain: pipelined no-reply steps, then one call that waits."""
        rc, handle = _c.spore_chain_new(self._h())
        _check(rc)
        return Chain(self, handle)

    def shutdown(self, timeout=5.0):
        """Asks the context to shut down and waits until it has gone."""
        ms = -1 if timeout is None else int(timeout * 1000)
        _check(_c.spore_context_shutdown(self._h(), ms))


def _builtin_args(function, args, kwargs):
    """(args JSON, binary part) of a built-in's call: keyword arguments,
    and data= for the binary part (popped from kwargs)."""
    if args:
        raise TypeError("built-in %s takes keyword arguments only" % function)
    data = kwargs.pop("data", None)
    return _args_json(kwargs), _data(data)


class PythonCalls:
    """Calls of Python functions in one context with the same options (see
    Context.with_options)."""

    def __init__(self, context, timeout=None, isolation=None):
        if isolation not in (None, "shared", "fork"):
            raise ValueError("isolation must be 'shared' or 'fork', not %r" % (isolation,))
        self._context = context
        self._timeout = timeout
        self._isolation = isolation

    def _request(self, function, args, kwargs):
        name = _remote.call_name(function, self._context._router._modules)
        text, data = _remote.encode_call(args, kwargs, self._isolation)
        return name, text, data

    def _run(self, name, text, data):
        """Sends a py: call and waits for its decoded result."""
        rc, pending = _c.spore_call_async(self._context._h(), name, text, data)
        _check(rc)
        try:
            return _wait(pending, self._timeout, _remote.decode_result)
        finally:
            _c.spore_call_free(pending)

    def call(self, function, *args, **kwargs):
        """Runs the function with these arguments and returns its result."""
        return self._run(*self._request(function, args, kwargs))

    def call_async(self, function, *args, **kwargs):
        """Starts the call; a concurrent.futures.Future of its result."""
        name, text, data = self._request(function, args, kwargs)
        rc, pending = _c.spore_call_async(self._context._h(), name, text, data)
        _check(rc)
        return _Future(pending, self._context._router._completer, _remote.decode_result)

    def call_no_reply(self, function, *args, **kwargs):
        """Sends the call; nobody waits for it (failures are logged)."""
        name, text, data = self._request(function, args, kwargs)
        _check(_c.spore_call_no_reply(self._context._h(), name, text, data))

    def map(self, function, *iterables):
        """[function(*items) for items in zip(*iterables)], run in the
        context as one batch: one message and one round trip for all, in
        order, in the shared worker. The first exception raises CallError
        with "item <i>: " before its message; the rest are not run."""
        if self._isolation == "fork":
            raise ValueError("map runs in the shared worker; isolation='fork' is per call")
        name = _remote.call_name(function, self._context._router._modules)
        return self._run(name, *_remote.encode_batch([(items, None) for items in zip(*iterables)]))


def _wait(pending, timeout, decode=None):
    """Waits for a call in slices, so that signals (Ctrl-C) get through."""
    remaining = None if timeout is None else int(timeout * 1000)
    while True:
        slice_ms = _WAIT_SLICE_MS if remaining is None else max(0, min(_WAIT_SLICE_MS, remaining))
        rc, text, data = _c.spore_wait_result(pending, slice_ms)
        # ETIMEDOUT is this slice running out (no error recorded on the
        # call yet) or the call's own failure.
        if rc == _c.SPORE_ETIMEDOUT and _c.spore_call_error(pending).code == _c.SPORE_OK:
            if remaining is not None:
                remaining -= slice_ms
                if remaining <= 0:
                    raise _error_from(_c.spore_last_error())
            continue
        if rc < 0:
            raise _error_from(_c.spore_call_error(pending))
        if decode is not None:
            try:
                return decode(text, data)
            except ValueError as e:
                raise ProtocolError("malformed result: %s" % e, _c.SPORE_EPROTO)  # noqa: F821
        value = _parse(text)
        return Reply(value, data) if data else value


class _ProcessOutput(io.RawIOBase):
    """A process's stdout or stderr as a readable binary file."""

    def __init__(self, process, fd):
        super().__init__()
        self._process = process
        self._fd = fd

    def readable(self):
        return True

    def readinto(self, b):
        data = self._process.read(len(b), fd=self._fd)
        b[:len(data)] = data
        return len(data)


class _ProcessInput(io.RawIOBase):
    """A process's stdin as a writable binary file; close() ends it."""

    def __init__(self, process):
        super().__init__()
        self._process = process

    def writable(self):
        return True

    def write(self, b):
        self._process.write(bytes(b))
        return len(b)

    def close(self):
        if not self.closed:
            self._process.close_stdin()
        super().close()


class Process(_Closing):
    """A process started by Context.start(). stdin, stdout and stderr are
    file objects (stdout.read(), for line in process.stdout, ...); read()
    and write() work on the streams directly. Flow controlled both ways:
    write() waits while the process does not read. Closing (or the garbage
    collector) kills a process that still runs."""

    def __init__(self, context, handle):
        self._context = context
        self._handle = handle
        self.stdin = io.BufferedWriter(_ProcessInput(self))
        self.stdout = io.BufferedReader(_ProcessOutput(self, 1))
        self.stderr = io.BufferedReader(_ProcessOutput(self, 2))


    @property
    def pid(self):
        return _c.spore_process_pid(self._h())

    def _h(self):
        if self._handle is None:
            raise InvalidArgument("the process handle is closed", _c.SPORE_EINVAL)  # noqa: F821
        return self._handle

    def write(self, data, timeout=None):
        """Writes bytes to the process's stdin, waiting while it does not read."""
        ms = -1 if timeout is None else int(timeout * 1000)
        _check(_c.spore_process_write(self._h(), _data(data), ms))

    def close_stdin(self):
        _check(_c.spore_process_close_stdin(self._h()))

    def read(self, size=65536, fd=1, timeout=None):
        """Up to size bytes from stdout (fd 1) or stderr (fd 2) as they
        come; b"" at the end. Waits in slices, so Ctrl-C gets through."""
        remaining = None if timeout is None else int(timeout * 1000)
        while True:
            slice_ms = _WAIT_SLICE_MS if remaining is None else max(0, min(_WAIT_SLICE_MS, remaining))
            rc, data = _c.spore_process_read_data(self._h(), fd, size, slice_ms)
            if rc >= 0:
                return data if rc > 0 else b""
            if rc == _c.SPORE_ETIMEDOUT:
                if remaining is not None:
                    remaining -= slice_ms
                    if remaining <= 0:
                        raise Timeout("nothing to read within the timeout", rc)  # noqa: F821
                continue
            _check(rc)

    def signal(self, signum):
        _check(_c.spore_process_signal(self._h(), int(signum)))

    def resize(self, rows, cols):
        _check(_c.spore_process_resize(self._h(), rows, cols))

    def wait(self, timeout=None):
        """Waits for the exit; returns (exit_code, signal): exit_code is
        -1 when a signal killed it, signal 0 when none did."""
        remaining = None if timeout is None else int(timeout * 1000)
        while True:
            slice_ms = _WAIT_SLICE_MS if remaining is None else max(0, min(_WAIT_SLICE_MS, remaining))
            rc, code, sig = _c.spore_process_wait(self._h(), slice_ms)
            if rc == 0:
                return code, sig
            if rc == _c.SPORE_ETIMEDOUT and (remaining is None or remaining > slice_ms):
                if remaining is not None:
                    remaining -= slice_ms
                continue
            _check(rc)

    def close(self):
        """Frees the handle, killing the process if it still runs."""
        h, self._handle = getattr(self, "_handle", None), None
        if h is not None:
            _c.spore_process_free(h)


class Chain(_Closing):
    """Pipelined calls: step() sends without waiting; call() sends the last
    step and waits. After the first failure every later step fails with it."""

    def __init__(self, context, handle):
        self._context = context
        self._handle = handle


    def close(self):
        h, self._handle = getattr(self, "_handle", None), None
        if h is not None:
            _c.spore_chain_free(h)

    def _python(self, function, args, kwargs):
        name = _remote.call_name(function, self._context._router._modules)
        text, data = _remote.encode_call(args, kwargs, None)
        return name, text, data

    def step(self, function, *args, **kwargs):
        """Sends a step without waiting: a built-in with keyword arguments
        (and data), or a Python function with any arguments."""
        if isinstance(function, str) and _remote.is_builtin(function):
            _check(_c.spore_chain_call_no_reply(self._handle, function, *_builtin_args(function, args, kwargs)))
            return
        name, text, data = self._python(function, args, kwargs)
        _check(_c.spore_chain_call_no_reply(self._handle, name, text, data))

    def call(self, function, *args, **kwargs):
        """Sends a step and waits for its result (after the earlier steps).
        A built-in takes timeout (seconds) among its keyword arguments."""
        if isinstance(function, str) and _remote.is_builtin(function):
            timeout = kwargs.pop("timeout", None)
            ms = -1 if timeout is None else int(timeout * 1000)
            rc, res = _c.spore_chain_call(self._handle, function, *_builtin_args(function, args, kwargs), ms)
            _check(rc)
            return _decode(res)
        name, text, data = self._python(function, args, kwargs)
        rc, res = _c.spore_chain_call(self._handle, name, text, data, -1)
        _check(rc)
        try:
            text = _c.spore_result_json(res)
            data = _c.spore_result_data(res)
        finally:
            _c.spore_result_free(res)
        return _remote.decode_result(text, data)
