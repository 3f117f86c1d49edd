"""The spore Python worker: runs `py:` calls for the agent of one context.

The agent starts `python -c <bootstrap>`; the bootstrap reads this source
from fd 3 and runs it with __name__ == "__spore_worker__", which calls
main(3). From then on the worker speaks frames on fd 3 (the "Worker link"
of docs/python_protocol.md): a main reader thread takes frames in, calls run
on a bounded pool of threads, and replies, log records and module requests
go out whole under one write lock.

Startup is most of a fresh context's first call, so:
- only modules that are built in or already loaded by the interpreter are
  imported here; traceback, logging's handler and importlib pieces are
  loaded on first need;
- compiling this source is the worker's largest startup cost, mostly in
  faulting in fresh memory for the parser (on some VMs every page fault
  costs over 10 us). So the code no first call needs (fork isolation, the
  logging handler, exception replies, the codec's rare types and refusals)
  is kept as text in _COLD_SOURCE at the end, compiled into this module on
  first use through the stubs of _cold_stub(); and the bootstrap compiles
  the rest one section at a time, cutting before each line that starts
  with "# ---" (the section headers, which are therefore only put at the
  top level, and never start a line inside a string), so the parser's
  memory is reused: about half the time of one whole compile.

encode() and decode() are the value codec of the protocol; the Python
binding imports them from a copy of this file, so importing it has no side
effects and nothing in the codec depends on the worker's state.
"""
import io
import os
import sys
import time
import _thread

__all__ = ["encode", "decode", "encode_call", "main"]

# ------------------------------------------------------------------ JSON
#
# The C accelerator of the json package, used directly: `import json` costs
# more than the rest of the worker's imports together.


def _bad_constant(name):
    """NaN and Infinity are not JSON; the protocol writes them as $f tags."""
    raise ValueError("not a JSON value: %s" % name)


def _not_json(obj):
    """Reached only for a value the codec did not prepare (a bug)."""
    raise TypeError("not JSON serializable: %s" % type(obj).__name__)


try:
    import _json

    class _ScanContext(object):
        """The attributes _json.make_scanner reads from a JSONDecoder."""
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(_bad_constant)
        memo = {}

    _scan = _json.make_scanner(_ScanContext)
    _c_encode = _json.make_encoder(
        None, _not_json, _json.encode_basestring_ascii, None,
        ":", ",", False, False, False)

    def _dumps(obj):
        """Compact ASCII JSON; NaN and infinities refused (allow_nan off)."""
        return "".join(_c_encode(obj, 0))
except (ImportError, AttributeError):  # an interpreter built without _json
    import json as _jsonmod

    _scan = _jsonmod.scanner.py_make_scanner(_jsonmod.JSONDecoder(
        parse_constant=_bad_constant))
    _dumps = _jsonmod.JSONEncoder(
        separators=(",", ":"), allow_nan=False, default=_not_json).encode

_WS = " \t\n\r"


def _loads(text):
    """One JSON value from text; an empty text is None (an empty JSON part
    means null on the wire)."""
    start = 0
    if text[:1] in _WS:
        start = len(text) - len(text.lstrip(_WS))
        if start == len(text):
            return None
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError("expecting a JSON value at character %d" % start)
    except SystemError:
        # Before 3.12 the C scanner takes its JSONDecodeError from an
        # already loaded json.decoder, and fails this way without it.
        if "json.decoder" in sys.modules:
            raise
        __import__("json.decoder")
        return _loads(text)
    if end != len(text) and text[end:].strip(_WS):
        raise ValueError("extra data after the JSON value at character %d"
                         % end)
    return value


# ---------------------------------------------------------------- values
#
# Values are JSON with four tagged forms ($b bytes, $t tuple, $f special
# float, $d a dict that would read as a tag). Encoding first turns the value
# into a plain JSON tree (checking every type on the way) and collects the
# bytes; the C encoder then writes the tree.

_NoneType = type(None)
_PLAIN = frozenset((str, int, bool, _NoneType))
_TAGS = frozenset(("$b", "$t", "$f", "$d"))


class _Refused(Exception):
    """A value that cannot be sent; path collects the location (innermost
    first) while the exception unwinds, so the normal path pays nothing."""

    def __init__(self, what):
        Exception.__init__(self, what)
        self.what = what
        self.path = []


def _prep(v, st):
    """The JSON tree of v; bytes-like parts are appended to st (st[0] is
    the running length of the binary part)."""
    t = type(v)
    if t in _PLAIN:
        return v
    if t is float:
        if v - v == 0.0:  # finite: inf - inf and nan - nan are nan
            return v
        return {"$f": "nan" if v != v else ("inf" if v > 0 else "-inf")}
    if t is list:
        try:
            return [x if type(x) in _PLAIN else _prep(x, st) for x in v]
        except _Refused:
            _locate(v)
            raise
    if t is dict:
        return _prep_dict(v, st)
    if t is tuple:
        try:
            return {"$t": [x if type(x) in _PLAIN else _prep(x, st)
                           for x in v]}
        except _Refused:
            _locate(v)
            raise
    if t is bytes:
        n = len(v)
        off = st[0]
        if n:
            st[0] = off + n
            st.append(v)
        return {"$b": [off, n]}
    return _prep_other(v, st)


def _prep_dict(v, st):
    out = {}
    k = None
    try:
        for k, x in v.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    break
                k = str.__str__(k)
            out[k] = x if type(x) in _PLAIN else _prep(x, st)
        else:
            if len(out) == 1 and k in _TAGS:
                return {"$d": out}
            return out
    except _Refused as e:
        e.path.append("[%r]" % (k,))
        raise
    raise _Refused("a dict key of type %s" % _type_label(type(k)))


def _type_label(t):
    """'set', 'datetime.datetime': how a type is named in messages and
    error replies."""
    mod = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", t.__name__)
    if mod in (None, "builtins"):
        return name
    if mod == "__spore_main__":
        mod = "__main__"
    return mod + "." + name


def _encode_parts(value, where):
    """(JSON bytes, list of binary buffers, binary length): the form the
    frame writer sends without joining the buffers."""
    if type(value) in _PLAIN:
        return _dumps(value).encode(), (), 0
    st = [0]
    try:
        tree = _prep(value, st)
    except _Refused as e:
        raise _refusal(e, where)
    return _dumps(tree).encode(), st[1:], st[0]


# ------------------------------------------------- values: the public API

def encode(value, where="value"):
    """The wire form of value: (JSON text, binary part as bytes).

    where names the root in a refusal message: encode({1}, "args") raises
    TypeError("cannot send a set at args")."""
    st = [0]
    try:
        tree = _prep(value, st)
    except _Refused as e:
        raise _refusal(e, where)
    return _dumps(tree), b"".join(st[1:])


def encode_call(args=(), kwargs=None, isolation=None):
    """The `args` object of a py: call: (JSON text, binary part).

    args and kwargs share one binary part, so they are encoded together;
    refusals name them "args[i]..." and "kwargs['name']..."."""
    st = [0]
    obj = {}
    where = "args"
    try:
        if args:
            obj["args"] = _prep(list(args), st)
        where = "kwargs"
        if kwargs:
            obj["kwargs"] = _prep_dict(kwargs, st)
    except _Refused as e:
        raise _refusal(e, where)
    if isolation is not None:
        obj["isolation"] = isolation
    return _dumps(obj), b"".join(st[1:])


def encode_batch(items):
    """The `args` object of a batch call: (JSON text, binary part). items
    is a sequence of (args, kwargs) pairs, all sharing one binary part;
    refusals name them "batch[i][0][j]..." / "batch[i][1]['name']..."."""
    st = [0]
    batch = []
    try:
        for a, kw in items:
            batch.append([_prep(list(a), st),
                          _prep_dict(kw, st) if kw else None])
    except _Refused as e:
        raise _refusal(e, "batch[%d]" % len(batch))
    return _dumps({"batch": batch}), b"".join(st[1:])


def decode(text, data=b""):
    """The Python value of a JSON part (str or bytes) and its binary part.

    Raises ValueError on malformed JSON, a malformed tag or a $b slice
    outside data."""
    if type(text) is not str:
        text = bytes(text).decode("utf-8")
    value = _loads(text)
    if '"$' in text:  # no tag can be there otherwise
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        value = _untag(value, data)
    return value


# ------------------------------------------------------- values: decoding

def _untag(v, data):
    t = type(v)
    if t is list:
        for i, x in enumerate(v):
            tx = type(x)
            if tx is list or tx is dict:
                v[i] = _untag(x, data)
        return v
    if t is dict:
        if len(v) == 1:
            for k, x in v.items():
                if k in _TAGS:
                    return _TAG_DECODERS[k](x, data)
        for k, x in v.items():
            tx = type(x)
            if tx is list or tx is dict:
                v[k] = _untag(x, data)
    return v


def _untag_bytes(x, data):
    if (type(x) is not list or len(x) != 2 or type(x[0]) is not int
            or type(x[1]) is not int or x[0] < 0 or x[1] < 0):
        raise ValueError("malformed $b tag: %s" % _dumps(x)[:100])
    off, n = x
    if off + n > len(data):
        raise ValueError("$b slice [%d, %d] is out of range of the %d-byte "
                         "binary part" % (off, n, len(data)))
    if type(data) is bytes:
        if off == 0 and n == len(data):
            return data
        return data[off:off + n]
    return bytes(data[off:off + n])


def _untag_tuple(x, data):
    if type(x) is not list:
        raise ValueError("malformed $t tag: not an array")
    return tuple(_untag(x, data))


_SPECIAL_FLOATS = {"nan": float("nan"), "inf": float("inf"),
                   "-inf": float("-inf")}


def _untag_float(x, data):
    if type(x) is not str or x not in _SPECIAL_FLOATS:
        raise ValueError("malformed $f tag: %s" % _dumps(x)[:100])
    return _SPECIAL_FLOATS[x]


def _untag_dict(x, data):
    if type(x) is not dict:
        raise ValueError("malformed $d tag: not an object")
    for k, y in x.items():
        ty = type(y)
        if ty is list or ty is dict:
            x[k] = _untag(y, data)
    return x


_TAG_DECODERS = {"$b": _untag_bytes, "$t": _untag_tuple,
                 "$f": _untag_float, "$d": _untag_dict}

# ---------------------------------------------------------------- frames

H_CALL, H_MODULES, H_LOG_LEVEL = 1, 2, 3
H_HELLO, H_REPLY, H_LOG, H_NEED = 10, 11, 12, 13
_MAGIC = b"SP\x01"
_HEAD = (b"SP\x01\x00" + bytes(12), b"SP\x01\x01" + bytes(12))
_M32 = 0xFFFFFFFF
_CHUNK = 65536       # read size for small frames (below malloc's mmap limit)
_LINK_FD = 3

try:
    _writev = os.writev
except AttributeError:  # not on this platform: join, then write
    def _writev(fd, bufs):
        return os.write(fd, b"".join(bufs))


class _LinkError(Exception):
    """The byte stream is not frames: framing is lost for good."""


def _frames(fd, before_read=None):
    """Yields (flags, src_id, handle, reply_to, json bytes, binary part) for
    each frame read from fd, until EOF. Small frames come out of one shared
    read buffer; a large body is read on its own (see _read_into), so a
    16 MiB message costs no buffer growth. before_read() is called before
    each read that may block."""
    read = os.read
    buf = b""
    pos = 0
    while True:
        avail = len(buf) - pos
        if avail >= 32:
            if buf[pos:pos + 3] != _MAGIC:
                raise _LinkError("bad frame header %r"
                                 % bytes(buf[pos:pos + 32]))
            v = int.from_bytes(buf[pos + 16:pos + 32], "big")
            jl = (v >> 32) & _M32
            bl = v & _M32
            size = 32 + jl + bl
            if size <= avail:
                start = pos + 32
                pos += size
                yield (buf[start - 29], int.from_bytes(
                    buf[start - 24:start - 20], "big"), v >> 96,
                    (v >> 64) & _M32, buf[start:start + jl],
                    buf[start + jl:pos] if bl else b"")
                continue
            if size > _CHUNK:
                head = buf[pos:pos + 32]
                j = buf[pos + 32:pos + 32 + jl]
                d = buf[pos + 32 + jl:]
                buf = b""
                pos = 0
                if before_read is not None:
                    before_read()
                try:
                    if len(j) < jl:
                        j += _read_exact(fd, jl - len(j))
                    d = _read_into(fd, bl, d)
                except EOFError:
                    return
                yield (head[3], int.from_bytes(head[8:12], "big"), v >> 96,
                       (v >> 64) & _M32, j, d)
                continue
        if before_read is not None:
            before_read()
        chunk = read(fd, _CHUNK)
        if not chunk:
            return
        buf = buf[pos:] + chunk if avail else chunk
        pos = 0


# ----------------------------------------------- frames: reading, writing

def _read_exact(fd, n):
    parts = []
    while n > 0:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


# One large receive buffer is kept for the next large frame: faulting in
# fresh memory costs more than copying it (over 10 us a page on some VMs),
# and a $b tag decodes to a copy of its slice anyway.
_spare = []
_SPARE_MAX = 32 << 20


def _read_into(fd, n, first):
    """A memoryview of n bytes: first, then the rest read from fd straight
    into the spare buffer if it is large enough, else a new one. Its
    reader hands it back with _recycle once done with it."""
    try:
        buf = _spare.pop()
        if len(buf) < n:
            buf = bytearray(n)
    except IndexError:
        buf = bytearray(n)
    mv = memoryview(buf)[:n]
    have = len(first)
    mv[:have] = first
    while have < n:
        k = os.readv(fd, [mv[have:]])
        if not k:
            raise EOFError
        have += k
    return mv


def _recycle(data):
    """Takes back the buffer of a large frame's binary part (a memoryview
    from _read_into) once nothing reads it any more."""
    if type(data) is memoryview:
        buf = data.obj
        try:
            data.release()
        except BufferError:  # a view of it is still in use: not reused
            return
        if not _spare and len(buf) <= _SPARE_MAX:
            _spare.append(buf)


def _write_all(fd, bufs):
    """Writes the buffers whole (looping on a short write)."""
    if len(bufs) > 512:  # stay well under IOV_MAX (many lines of output)
        bufs = [b"".join(bufs)]
    n = _writev(fd, bufs)
    total = 0
    for b in bufs:
        total += len(b) if type(b) is bytes else memoryview(b).nbytes
    if n < total:
        rest = memoryview(b"".join(bufs))[n:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _frame(handle, reply_to, flags, j, parts=(), plen=0):
    """The buffers of one frame (header, JSON, binary parts)."""
    head = _HEAD[flags] + ((handle << 96) | (reply_to << 64)
                           | (len(j) << 32) | plen).to_bytes(16, "big")
    if not plen:
        return [head + j]
    bufs = [head, j]
    bufs.extend(parts)
    return bufs


# The link the frames go out on: fd 3, or the pipe to the parent in a forked
# call. Whole frames, one writer at a time.
_wfd = _LINK_FD
_wlock = _thread.allocate_lock()


def _send(handle, reply_to, flags, j, parts=(), plen=0):
    _send_bufs(_frame(handle, reply_to, flags, j, parts, plen))


def _send_bufs(bufs):
    try:
        with _wlock:
            if len(bufs) == 1:
                data = bufs[0]
                n = os.write(_wfd, data)
                if n < len(data):
                    _write_all(_wfd, [memoryview(data)[n:]])
            else:
                _write_all(_wfd, bufs)
    except (BrokenPipeError, ConnectionResetError):
        # The agent (or the parent of a forked call) is gone: nobody is
        # left to answer to.
        os._exit(0 if _wfd == _LINK_FD else 1)


def _send_error(job, code, message, etype=None, tb=None):
    err = {"code": code, "message": message}
    if etype:
        err["type"] = etype
    if tb is not None:
        err["traceback"] = tb
    _send(H_REPLY, job, 1, _dumps(err).encode())


def _send_log(job, logger, level, when, msg):
    _send(H_LOG, job, 0, _dumps({"logger": logger, "level": level,
                                 "time": when, "msg": msg}).encode())


# ---------------------------------------------------------- output, logs

# Job id of the call running on each thread (thread ident -> job id).
_jobs = {}
_get_ident = _thread.get_ident
_reader_ident = None
_log_level = 20        # from the last log-level frame
_applied_level = 20    # the level the handler and root logger have
_log_handler = None


class _Output(io.TextIOBase):
    """sys.stdout / sys.stderr: complete lines become `log` frames (logger
    "stdout" or "stderr", level INFO) tagged with the job of the writing
    thread; a partial line waits, per thread, for its end, a flush() or the
    end of the call."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, name, fd):
        io.TextIOBase.__init__(self)
        self._logger = name
        self._fd = fd
        self._partial = {}

    @property
    def name(self):
        return "<%s>" % self._logger

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        """The original descriptor: its bytes still reach the agent, which
        logs them line by line (without a job id)."""
        return self._fd

    @property
    def buffer(self):
        return _binary_output(self)

    def write(self, s):
        if type(s) is not str:
            if not isinstance(s, str):
                raise TypeError("write() argument must be str, not %s"
                                % type(s).__name__)
            s = str.__str__(s)
        ident = _get_ident()
        text = self._partial.pop(ident, "") + s if self._partial else s
        if "\n" not in text:
            if text:
                self._partial[ident] = text
            return len(s)
        lines = text.split("\n")
        rest = lines.pop()
        if rest:
            self._partial[ident] = rest
        self._send_lines(_jobs.get(ident, 0), lines)
        return len(s)

    def _send_lines(self, job, lines):
        now = time.time()
        bufs = []
        for line in lines:
            bufs.extend(_frame(H_LOG, job, 0, _dumps({
                "logger": self._logger, "level": 20, "time": now,
                "msg": line}).encode()))
        _send_bufs(bufs)

    def flush(self):
        self.flush_thread(_get_ident())

    def flush_thread(self, ident):
        """Sends the partial line of one thread, if any."""
        if self._partial:
            rest = self._partial.pop(ident, None)
            if rest:
                self._send_lines(_jobs.get(ident, 0), [rest])


# ----------------------------------------- output: streams, logging watch

_stdout = _Output("stdout", 1)
_stderr = _Output("stderr", 2)


def _flush_output(ident):
    """The partial lines of a call, before its reply."""
    if _stdout._partial:
        _stdout.flush_thread(ident)
    if _stderr._partial:
        _stderr.flush_thread(ident)


class _LoggingWatch(object):
    """First on sys.meta_path until logging is imported, so the worker's
    handler is on the root logger before the importing call logs anything
    (_watch_logging wraps logging's loader)."""

    done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "logging" or self.done:
            return None
        self.done = True
        return _watch_logging(self, fullname, path, target)

    def invalidate_caches(self):
        pass


# --------------------------------------------------------------- modules

# name -> (found, package, file, source bytes, reason), kept for the
# process's lifetime; _mod_order is the order entries arrived in (a forked
# call is sent those that arrived after its fork).
_mod_cache = {}
_mod_order = []
_mod_lock = _thread.allocate_lock()
_mod_waiters = {}     # name -> locks of threads waiting for its entry
_IDCHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789_")


def _valid_module_name(name):
    """The agent kills a worker that asks for anything else."""
    if name == "__main__":
        return True
    if not name or len(name) > 200:
        return False
    for part in name.split("."):
        if not part or part[0] in "0123456789" or not _IDCHARS.issuperset(
                part):
            return False
    return True


def _store_answer(j, data):
    """Caches every entry of a modules answer (first answer wins)."""
    answer = _loads(bytes(j).decode("utf-8"))
    entries = answer.get("modules") if type(answer) is dict else None
    if type(entries) is not list:
        raise ValueError("a modules answer without a modules array")
    for e in entries:
        name = e.get("name") if type(e) is dict else None
        if type(name) is not str or name in _mod_cache:
            continue
        if e.get("found"):
            off = e.get("offset", 0)
            n = e.get("length", 0)
            if (type(off) is not int or type(n) is not int or off < 0
                    or n < 0 or off + n > len(data)):
                entry = (False, False, None, b"", "the answer's source "
                         "slice is out of range")
            else:
                entry = (True, bool(e.get("package")), e.get("file") or None,
                         bytes(data[off:off + n]), None)
        else:
            entry = (False, False, None, b"",
                     str(e.get("reason") or "not found in the controller"))
        _mod_cache[name] = entry
        _mod_order.append(name)


def _on_modules(j, data):
    """Reader thread: a modules frame. Stores it and wakes the waiters of
    every name it covers."""
    with _mod_lock:
        _store_answer(j, data)
        done = [n for n in _mod_waiters if n in _mod_cache]
        for name in done:
            for lock in _mod_waiters.pop(name):
                lock.release()


# -------------------------------------------- modules: requests, importer

def _ensure(name):
    """Makes sure _mod_cache has an entry for name, asking the agent and
    blocking until the answer when it has none."""
    if name in _mod_cache:
        return
    if not _valid_module_name(name):
        # Never asked: the agent kills a worker that asks for one.
        with _mod_lock:
            if name not in _mod_cache:
                _mod_cache[name] = (False, False, None, b"",
                                    "not a valid module name")
                _mod_order.append(name)
        return
    lock = _thread.allocate_lock()
    lock.acquire()
    with _mod_lock:
        if name in _mod_cache:
            return
        waiters = _mod_waiters.get(name)
        first = waiters is None
        if first:
            _mod_waiters[name] = [lock]
        else:
            waiters.append(lock)
    if first:
        _send(H_NEED, 0, 0, _dumps({"names": [name]}).encode())
    lock.acquire()


def _remote_name(fullname):
    return "__main__" if fullname == "__spore_main__" else fullname


def _later_spec(finder, fullname, path, target):
    """The spec of the first finder after `finder` in sys.meta_path that
    knows fullname, or None."""
    seen = False
    for other in list(sys.meta_path):
        if other is finder:
            seen = True
            continue
        if not seen:
            continue
        find = getattr(other, "find_spec", None)
        if find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _Importer(object):
    """Finder and loader of the modules the controller serves. Appended to
    sys.meta_path, so the target's own modules always win and are never
    asked for. "__spore_main__" is the controller's "__main__"."""

    _spec_class = None

    def find_spec(self, fullname, path=None, target=None):
        if _get_ident() == _reader_ident:
            return None  # it would wait for an answer only it can read
        remote = _remote_name(fullname)
        entry = _mod_cache.get(remote)
        if entry is None:
            _ensure(remote)
            entry = _mod_cache[remote]
        if not entry[0]:
            # Finders appended after this one (six's, for six.moves) get
            # their turn before the answer is final.
            spec = _later_spec(self, fullname, path, target)
            if spec is not None:
                return spec
            raise ModuleNotFoundError("No module named %r (%s)"
                                      % (fullname, entry[4]), name=fullname)
        cls = self._spec_class
        if cls is None:
            # importlib's own, loaded at startup: no importlib import.
            frozen = sys.modules.get("_frozen_importlib")
            if frozen is None:
                import importlib.machinery as frozen
            cls = _Importer._spec_class = frozen.ModuleSpec
        origin = entry[2]
        spec = cls(fullname, self, origin=origin, is_package=entry[1])
        spec.has_location = bool(origin and origin.endswith(".py"))
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__spec__.name
        entry = _mod_cache[_remote_name(name)]
        code = compile(entry[3], entry[2] or "<spore:%s>" % name, "exec",
                       dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname):
        """For linecache: tracebacks show the controller's source lines."""
        entry = _mod_cache.get(_remote_name(fullname))
        if entry is None or not entry[0]:
            return None
        return entry[3].decode("utf-8", "replace")

    def is_package(self, fullname):
        entry = _mod_cache.get(_remote_name(fullname))
        return bool(entry and entry[1])

    def invalidate_caches(self):
        pass


_importer = _Importer()

# ------------------------------------------------------------- functions


class _CallError(Exception):
    """An error reply with a code other than EREMOTE."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


_fns = {}          # "py:..." -> the resolved callable
_MISSING = object()
_ModuleType = type(sys)


def _import(name):
    if name == "__main__" or name.startswith("__main__."):
        name = "__spore_main__" + name[8:]
    __import__(name)
    return sys.modules[name]


def _import_named(name, fn):
    """The module a call names. Neither the target nor the controller
    having it (or a package above it) means no such function, ENOFUNC;
    a module the named one imports being missing stays the function's
    own ModuleNotFoundError."""
    try:
        return _import(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing.startswith("__spore_main__"):
            missing = "__main__" + missing[14:]
        if missing == name or name.startswith(missing + "."):
            raise _CallError("ENOFUNC", "no Python function %s: %s"
                             % (fn[3:], e))
        raise


def _resolve(fn):
    """The callable named by fn ("py:mod:qual" or "py:dotted.name")."""
    target = _fns.get(fn)
    if target is not None:
        return target
    rest = fn[3:] if fn.startswith("py:") else ""
    if rest.count(":") == 1:
        modname, qual = rest.split(":")
        attrs = qual.split(".")
        if not _valid_module_name(modname) or "" in attrs:
            raise _CallError("ENOFUNC", "malformed function name %r" % fn)
        obj = _import_named(modname, fn)
    else:
        if ":" in rest or not _valid_module_name(rest):
            raise _CallError("ENOFUNC", "malformed function name %r" % fn)
        parts = rest.split(".")
        obj = _import_named(parts[0], fn)
        modname = parts[0]
        i = 1
        # The longest importable prefix. A further import is tried only
        # where Python could find a submodule (a package) and no attribute
        # other than a module is there already, which saves asking the
        # controller for "pkg.func".
        while i < len(parts):
            attr = getattr(obj, parts[i], _MISSING)
            if not hasattr(obj, "__path__") or not (
                    attr is _MISSING or type(attr) is _ModuleType):
                break
            name = modname + "." + parts[i]
            try:
                obj = _import(name)
            except ModuleNotFoundError as e:
                if e.name != name and e.name != "__spore_main__" + name[8:]:
                    raise
                break
            modname = name
            i += 1
        attrs = parts[i:]
        if not attrs:
            raise _CallError("ENOFUNC", "%s is a module, not a function"
                             % modname)
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError as e:
            raise _CallError("ENOFUNC", "%s: %s" % (fn, e))
    if not callable(obj):
        raise _CallError("ENOFUNC", "%s is not callable (it is %s)"
                         % (fn, _a(_type_label(type(obj)))))
    _fns[fn] = obj
    return obj


# ----------------------------------------------- functions: call messages

def _a(label):
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def _parse_call(j, data):
    """(callable, positional args, kwargs or None, fork?, batch or None) of
    a call frame; _CallError for EBADARGS and ENOFUNC, any other exception
    is the import's (EREMOTE)."""
    try:
        text = j.decode("utf-8") if type(j) is bytes else bytes(j).decode(
            "utf-8")
        msg = _loads(text)
    except ValueError as e:
        raise _CallError("EBADARGS", "the call is not valid JSON: %s" % e)
    if type(msg) is not dict or type(msg.get("fn")) is not str:
        raise _CallError("EBADARGS", "the call has no function name")
    a = msg.get("args")
    args = ()
    kwargs = None
    fork = False
    batch = None
    if a:
        if type(a) is not dict:
            raise _CallError("EBADARGS", "args must be an object")
        for key in a:
            if key not in ("args", "kwargs", "isolation", "batch"):
                raise _CallError("EBADARGS", "unknown key %r in args" % key)
        if '"$' in text:
            if type(data) is not bytes:
                data = memoryview(data).cast("B")
            try:
                a = {k: _untag(v, data) for k, v in a.items()}
            except ValueError as e:
                raise _CallError("EBADARGS", str(e))
        args = a.get("args", ())
        if type(args) is not list and type(args) is not tuple:
            raise _CallError("EBADARGS", "args.args must be an array")
        kwargs = a.get("kwargs")
        if kwargs is not None and type(kwargs) is not dict:
            raise _CallError("EBADARGS", "args.kwargs must be an object")
        isolation = a.get("isolation", "shared")
        if isolation == "fork":
            fork = True
        elif isolation != "shared":
            raise _CallError("EBADARGS", "args.isolation must be \"shared\" "
                             "or \"fork\", not %s" % _dumps(isolation)[:50])
        if "batch" in a:
            batch = _batch_items(a)
            if fork:
                raise _CallError("EBADARGS",
                                 "a batch runs in the shared worker")
    elif a is not None and type(a) is not dict:
        raise _CallError("EBADARGS", "args must be an object")
    return _resolve(msg["fn"]), args, kwargs, fork, batch


def _batch_items(a):
    """The (args, kwargs) pairs of a batch call (args.batch: an array of
    [array, object or null]); it replaces args and kwargs."""
    batch = a["batch"]
    if "args" in a or "kwargs" in a:
        raise _CallError("EBADARGS",
                         "args.batch replaces args.args and args.kwargs")
    if type(batch) is not list:
        raise _CallError("EBADARGS", "args.batch must be an array")
    for item in batch:
        if (type(item) is not list or len(item) != 2
                or type(item[0]) not in (list, tuple)
                or (item[1] is not None and type(item[1]) is not dict)):
            raise _CallError("EBADARGS", "each item of args.batch must be "
                             "[args array, kwargs object or null]")
    return batch


# ----------------------------------------------------------------- calls


def _reply_result(job, result):
    _flush_output(_get_ident())
    if result is None:
        _send(H_REPLY, job, 0, b"null")
        return
    try:
        j, parts, plen = _encode_parts(result, "result")
    except BaseException as e:  # a refused value, a huge int, deep nesting
        _reply_exception(job, e)
        return
    _send(H_REPLY, job, 0, j, parts, plen)


def _call_batch(job, target, batch):
    """A batch call: the function once per item, in order, one reply with
    the list of results; the first exception ends it, naming its item."""
    results = []
    for i, (args, kwargs) in enumerate(batch):
        try:
            results.append(target(*args, **kwargs) if kwargs
                           else target(*args))
        except BaseException as e:
            _reply_exception(job, e, "item %d: " % i)
            return
    _reply_result(job, results)


def _call(job, target, args, kwargs):
    try:
        result = target(*args, **kwargs) if kwargs else target(*args)
    except BaseException as e:  # SystemExit too: the worker keeps running
        _reply_exception(job, e)
        return
    _reply_result(job, result)


def _run_job(job, j, data):
    """One call, on a pool thread. Never raises."""
    ident = _get_ident()
    _jobs[ident] = job
    try:
        if _applied_level != _log_level or (
                _log_handler is None and "logging" in sys.modules):
            _check_logging()
        try:
            target, args, kwargs, fork, batch = _parse_call(j, data)
            _recycle(data)
        except _CallError as e:
            _flush_output(ident)
            _send_error(job, e.code, e.message)
            return
        except BaseException as e:  # the module's import failed
            _reply_exception(job, e)
            return
        if batch is not None:
            _call_batch(job, target, batch)
        elif fork:
            _run_forked(job, target, args, kwargs)
        else:
            _call(job, target, args, kwargs)
    except BaseException as e:
        _report("call %d failed inside the worker" % job)
        try:
            _send_error(job, "EREMOTE", "spore worker error: %s: %s"
                        % (type(e).__name__, e), _type_label(type(e)))
        except BaseException:
            pass
    finally:
        _jobs[ident] = 0


# ------------------------------------------------------------------ pool

_MAX_THREADS = 16
_pool_lock = _thread.allocate_lock()
_idle = []        # slots [wake lock, job] of idle threads, last idle first
_queue = []       # jobs waiting for a thread
_nthreads = 0
_to_wake = []     # wake locks of idle threads given a call (see _wake)


def _submit(job):
    """Reader thread: hands a call (job id, JSON, binary part) to an idle
    thread, a new one (up to 16), or the queue."""
    global _nthreads
    with _pool_lock:
        if _idle:
            slot = _idle.pop()
            slot[1] = job
            _to_wake.append(slot[0])
            return
        if _nthreads >= _MAX_THREADS:
            _queue.append(job)
            return
        _nthreads += 1
    slot = [_thread.allocate_lock(), job]
    slot[0].acquire()
    try:
        _thread.start_new_thread(_pool_thread, (slot,))
    except BaseException as e:  # out of threads: a running one takes it
        with _pool_lock:
            _nthreads -= 1
            if _nthreads:
                _queue.append(job)
                return
        _send_error(job[0], "EREMOTE", "%s: %s" % (type(e).__name__, e),
                    type(e).__name__)


def _wake():
    """Reader thread, right before it blocks in a read: wakes the threads
    given calls since. Woken any earlier, a thread would find the GIL still
    held by the reader and sleep again (a second wake-up, 5-10 us)."""
    while _to_wake:
        _to_wake.pop().release()


def _pool_thread(slot):
    wake = slot[0]
    job = slot[1]
    while True:
        _run_job(*job)
        job = None
        with _pool_lock:
            if _queue:
                job = _queue.pop(0)
            else:
                _idle.append(slot)
        if job is None:
            wake.acquire()
            job = slot[1]
            slot[1] = None


# ------------------------------------------------------------------ main


def main(fd=_LINK_FD):
    """Runs the worker on the link fd until the agent closes it."""
    global _wfd, _LINK_FD, _reader_ident
    _LINK_FD = _wfd = fd
    _reader_ident = _get_ident()
    # The agent started this process with glibc's malloc on huge pages for
    # large blocks; what the called functions start gets the context's own
    # GLIBC_TUNABLES back ("-": it had none).
    saved = os.environ.pop("SPORE_WORKER_TUNABLES", None)
    if saved == "-":
        os.environ.pop("GLIBC_TUNABLES", None)
    elif saved is not None:
        os.environ["GLIBC_TUNABLES"] = saved[1:]
    # `python -c` puts the current directory first on sys.path: files
    # lying there would shadow the target's modules and the controller's.
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    sys.stdout = _stdout
    sys.stderr = _stderr
    sys.meta_path.append(_importer)
    if "logging" in sys.modules:
        _install_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingWatch())
    v = sys.version_info
    _send(H_HELLO, 0, 0, _dumps({"version": "%d.%d.%d" % (v[0], v[1], v[2]),
                                 "pid": os.getpid()}).encode())
    status = 0
    try:
        for flags, src, handle, reply_to, j, d in _frames(fd, _wake):
            try:
                if handle == H_CALL:
                    _submit((reply_to, j, d))
                elif handle == H_MODULES:
                    _on_modules(j, d)
                    _recycle(d)
                elif handle == H_LOG_LEVEL:
                    _on_log_level(j)
                else:
                    os.write(2, b"spore worker: a frame for unknown handle "
                             b"%d ignored\n" % handle)
            except Exception:
                _report("handling a frame for handle %d" % handle)
    except _LinkError as e:
        os.write(2, ("spore worker: %s\n" % e).encode())
        status = 2
    except BaseException:
        _report("the reader failed")
        status = 2
    # EOF (or a broken link): nobody is left to answer to; calls still
    # running die with the process.
    for f in (sys.__stdout__, sys.__stderr__):
        try:
            f.flush()
        except BaseException:
            pass
    os._exit(status)


def _on_log_level(j):
    """Reader thread: the level is taken by the handler at once, by the
    root logger before the next call (its setLevel takes logging's lock,
    which the reader never waits for)."""
    global _log_level
    level = _loads(bytes(j).decode("utf-8")).get("level")
    if type(level) is int:
        _log_level = level
        if _log_handler is not None:
            _log_handler.level = level


# ------------------------------------------------------------------ cold

_cold_lock = _thread.allocate_lock()
_cold_loaded = False
_SELF_FILE = _on_log_level.__code__.co_filename


def _load_cold():
    """Compiles _COLD_SOURCE into this module's globals (once), replacing
    the stubs; its line numbers are those of this file."""
    global _cold_loaded
    with _cold_lock:
        if not _cold_loaded:
            code = compile("\n" * _COLD_LINE + _COLD_SOURCE, _SELF_FILE,
                           "exec", dont_inherit=True)
            exec(code, globals())
            _cold_loaded = True


def _cold_stub(name):
    """A stand-in for a function of _COLD_SOURCE: loads it, then calls it
    (by then the global name is the real function)."""
    def stub(*args, **kwargs):
        _load_cold()
        return globals()[name](*args, **kwargs)
    stub.__name__ = name
    return stub


_prep_other = _cold_stub("_prep_other")
_locate = _cold_stub("_locate")
_refusal = _cold_stub("_refusal")
_binary_output = _cold_stub("_binary_output")
_install_logging = _cold_stub("_install_logging")
_check_logging = _cold_stub("_check_logging")
_watch_logging = _cold_stub("_watch_logging")
_reply_exception = _cold_stub("_reply_exception")
_report = _cold_stub("_report")
_run_forked = _cold_stub("_run_forked")

_getframe = getattr(sys, "_getframe", None)
_COLD_LINE = _getframe().f_lineno if _getframe else 0  # this line's number
_COLD_SOURCE = r'''
# ===================================================== cold: rare values


def _prep_other(v, st):
    """Subclasses of the plain types, bytearray and memoryview; anything
    else is refused."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        m = memoryview(v)
        if not m.c_contiguous:
            m = memoryview(m.tobytes())
        elif m.format != "B" or m.ndim != 1:
            m = m.cast("B")
        n = m.nbytes
        off = st[0]
        if n:
            st[0] = off + n
            st.append(m)
        return {"$b": [off, n]}
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return _prep(float(v), st)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, dict):
        return _prep_dict(v, st)
    if isinstance(v, list):
        return _prep(list(v), st)
    if isinstance(v, tuple):
        return _prep(tuple(v), st)
    raise _Refused(_a(_type_label(type(v))))


def _locate(seq):
    """Raises the refusal of a list or tuple again with the index of the
    first refused item in its path."""
    for i, x in enumerate(seq):
        try:
            _prep(x, [0])
        except _Refused as e:
            e.path.append("[%d]" % i)
            raise e


def _refusal(e, where):
    return TypeError("cannot send %s at %s%s"
                     % (e.what, where, "".join(reversed(e.path))))


# ================================================== cold: output, logging


class _BinaryOutput(object):
    """sys.stdout.buffer: bytes are decoded (UTF-8, invalid bytes replaced)
    and written as text."""

    def __init__(self, text):
        self._text = text

    def write(self, b):
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)

    def flush(self):
        self._text.flush()


def _binary_output(text):
    return _BinaryOutput(text)


def _emit(handler, record):
    """logging.Handler.emit of the worker's handler: one `log` frame."""
    try:
        msg = handler.format(record)
        _send_log(_jobs.get(_get_ident(), 0), record.name, record.levelno,
                  record.created, msg)
    except Exception:
        handler.handleError(record)


_log_lock = _thread.allocate_lock()


def _install_logging(logging):
    """Puts the worker's handler on the root logger, at the level of the
    last log-level frame (INFO by default)."""
    global _log_handler, _applied_level
    with _log_lock:
        if _log_handler is not None:
            return
        cls = type("SporeHandler", (logging.Handler,), {
            "emit": _emit,
            "__doc__": "Sends each record to the agent as a log frame."})
        level = _log_level
        handler = cls(level)
        logging.root.addHandler(handler)
        logging.root.setLevel(level)
        _applied_level = level
        _log_handler = handler


def _check_logging():
    """Before a call: a handler for a logging module that the watch missed,
    and the level of the last log-level frame."""
    global _applied_level
    logging = sys.modules.get("logging")
    if _log_handler is None:
        if logging is not None and hasattr(logging, "root"):
            _install_logging(logging)
        else:
            _applied_level = _log_level
        return
    level = _log_level
    if _applied_level != level:
        _applied_level = level
        _log_handler.setLevel(level)
        logging.root.setLevel(level)


def _watch_logging(watch, fullname, path, target):
    """logging's spec, found by the other finders, its loader's
    exec_module wrapped to install the handler right after logging runs."""
    spec = None
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if finder is watch or find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            break
    loader = spec.loader if spec is not None else None
    if loader is None or isinstance(loader, type):
        return spec  # a class as loader: left alone (checked per call)
    run = loader.exec_module

    def exec_module(module):
        run(module)
        try:
            sys.meta_path.remove(watch)
        except ValueError:
            pass
        del loader.exec_module
        _install_logging(module)
    loader.exec_module = exec_module
    return spec


def _report(what):
    """A failure of the worker's own machinery: on fd 2, which the agent
    turns into "stderr" log records; never raises. The reader thread
    formats no traceback unless the module is there (it must not import)."""
    try:
        exc = sys.exc_info()[1]
        if _get_ident() != _reader_ident or "traceback" in sys.modules:
            import traceback
            detail = traceback.format_exc()
        else:
            detail = "%s: %s\n" % (type(exc).__name__, exc)
        text = "spore worker: %s\n%s" % (what, detail)
        os.write(2, text.encode("utf-8", "replace"))
    except BaseException:
        pass


# ===================================================== cold: exceptions


def _skip_own_frames(tb):
    while tb is not None and tb.tb_frame.f_code.co_filename == _SELF_FILE:
        tb = tb.tb_next
    return tb


def _reply_exception(job, exc, prefix=""):
    """The EREMOTE error reply of an exception, with its traceback minus
    the worker's own frames. A refused result is a TypeError whose
    traceback is its message alone."""
    import traceback
    cls = type(exc)
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable %s>" % cls.__name__
    message = prefix + ("%s: %s" % (cls.__qualname__, text) if text else
                        cls.__qualname__)
    tb = _skip_own_frames(exc.__traceback__)
    try:
        if tb is None:
            tb = message + "\n"
        else:
            tb = "".join(traceback.format_exception(cls, exc, tb))
    except BaseException:
        tb = message + "\n"
    _flush_output(_get_ident())
    _send_error(job, "EREMOTE", message, _type_label(cls), tb)


# =========================================================== cold: fork

_fork_lock = _thread.allocate_lock()
_child_frames = None


def _run_forked(job, target, args, kwargs):
    """Runs one call in a fork of the worker: whatever it does to the
    process (exit, chdir, environment, descriptors) dies with the fork.
    This thread relays the fork's frames to the agent and its module
    requests to the agent's answers."""
    with _fork_lock:  # no other fork inherits this pair's parent ends
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        mark = len(_mod_order)
        pid = os.fork()
        if pid == 0:
            _child(job, target, args, kwargs, up_r, up_w, down_r, down_w)
        os.close(up_w)
        os.close(down_r)
    reply = None
    try:
        for flags, src, handle, reply_to, j, d in _frames(up_r):
            if handle == H_REPLY:
                reply = (flags & 1, j, d)
                break
            if handle == H_LOG:
                _send(H_LOG, job, 0, j)
            elif handle == H_NEED:
                mark = _relay_need(j, down_w, mark)
    except BaseException:
        _report("relaying forked call %d" % job)
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    finally:
        # Before the reply goes out: the caller's next call finds the
        # fork reaped and these descriptors closed.
        os.close(up_r)
        os.close(down_w)
        status = os.waitpid(pid, 0)[1]
    if reply is not None:
        flags, j, d = reply
        _send(H_REPLY, job, flags, j, [d], len(d))
        _recycle(d)
    else:
        if os.WIFSIGNALED(status):
            why = "died of signal %d" % os.WTERMSIG(status)
        else:
            why = "exited with status %d without a result" % (
                os.WEXITSTATUS(status))
        _flush_output(_get_ident())
        _send_error(job, "EWORKER", "the forked call " + why)


def _relay_need(j, down_w, mark):
    """A forked call's module request: fetched through the worker's own
    cache, answered on its pipe with those entries and every entry that
    arrived since the fork (the proactive ones included)."""
    names = _loads(bytes(j).decode("utf-8")).get("names") or []
    for name in names:
        _ensure(name)
    with _mod_lock:
        order = _mod_order[mark:]
        mark = len(_mod_order)
    send = list(names) + [n for n in order if n not in names]
    entries = []
    parts = []
    off = 0
    for name in send:
        e = _mod_cache[name]
        if e[0]:
            entries.append({"name": name, "found": True, "package": e[1],
                            "file": e[2], "offset": off,
                            "length": len(e[3])})
            parts.append(e[3])
            off += len(e[3])
        else:
            entries.append({"name": name, "found": False, "reason": e[4]})
    _write_all(down_w, _frame(H_MODULES, 0, 0, _dumps(
        {"modules": entries}).encode(), parts, off))
    return mark


def _child(job, target, args, kwargs, up_r, up_w, down_r, down_w):
    """The forked process: only fresh locks (another thread may have held
    any of the old ones at fork time), frames to the pipe, then exit."""
    global _wfd, _wlock, _mod_lock, _pool_lock, _fork_lock, _cold_lock
    global _log_lock, _jobs, _child_frames, _ensure, _reader_ident
    try:
        _wlock = _thread.allocate_lock()
        _mod_lock = _thread.allocate_lock()
        _pool_lock = _thread.allocate_lock()
        _fork_lock = _thread.allocate_lock()
        _cold_lock = _thread.allocate_lock()
        _log_lock = _thread.allocate_lock()
        os.close(up_r)
        os.close(down_w)
        os.close(_LINK_FD)
        _wfd = up_w
        _reader_ident = None
        _jobs = {_get_ident(): job}
        _stdout._partial = {}
        _stderr._partial = {}
        if _log_handler is not None:
            _log_handler.createLock()
        _child_frames = _frames(down_r)
        _ensure = _child_ensure
        _call(job, target, args, kwargs)
    except BaseException:
        _report("forked call %d" % job)
    finally:
        os._exit(0)


def _child_ensure(name):
    """_ensure in a forked call: ask the parent on the pipe, read its
    answer on the other pipe (one request at a time)."""
    with _mod_lock:
        if name in _mod_cache:
            return
        reason = "not a valid module name"
        if _valid_module_name(name):
            reason = "the worker did not answer the forked call's request"
            _send(H_NEED, 0, 0, _dumps({"names": [name]}).encode())
            for flags, src, handle, reply_to, j, d in _child_frames:
                _store_answer(j, d)
                break
        if name not in _mod_cache:
            _mod_cache[name] = (False, False, None, b"", reason)
'''

if __name__ == "__spore_worker__":
    main(3)
