"""Functions the Python suite runs in contexts (served from this directory,
which the targets' workers do not have on their sys.path)."""
import logging
import os
import sys
import threading
import time

from sporepy_pkg import tools
from sporepy_pkg.sub import deep

log = logging.getLogger("sporepy")


def add(a, b=0):
    return a + b


def echo(*args, **kwargs):
    return [list(args), kwargs]


def identity(value):
    return value


def where():
    return {"pid": os.getpid(), "cwd": os.getcwd(), "uid": os.getuid(), "file": __file__,
            "tools": tools.NAME, "deep": deep.describe()}


def stdlib_user():
    import json
    import collections
    return json.dumps(collections.OrderedDict(a=1))


def lazy_import():
    from sporepy_pkg import lazy
    return lazy.VALUE


def missing():
    import sporepy_never_anywhere  # noqa: F401
    return True


def boom(message):
    raise tools.Refused(message)


def chatty(n):
    for i in range(n):
        print("out %d" % i)
        log.warning("warn %d", i)
        log.debug("debug %d", i)
    sys.stderr.write("to stderr\n")
    return n


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def counter():
    """State kept by the warm worker between calls."""
    counter.n = getattr(counter, "n", 0) + 1
    return counter.n


def tick(x):
    """Counts in counter's state, then fails for 0."""
    counter.n = getattr(counter, "n", 0) + 1
    return 1 // x


_records = []


def record(tag):
    _records.append(tag)


def recorded():
    return list(_records)


def leave(code):
    sys.exit(code)


def change_state(tag):
    os.chdir("/tmp")
    os.environ["SPOREPY_TAG"] = tag
    r, _ = os.pipe()
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    return r, os.readlink("/proc/self/fd/%d" % r)


def fd_link(fd):
    """What fd is in this process, or None when it is not open."""
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return None


def state():
    return {"cwd": os.getcwd(), "tag": os.environ.get("SPOREPY_TAG"), "threads": threading.active_count()}


def crash():
    import ctypes
    ctypes.string_at(0)


def hard_exit(code):
    os._exit(code)


def give_set():
    return {"ok": [1, {"bad": {1, 2}}]}


def blob(n):
    return b"\x01" * n


def length(data):
    return len(data)


class Tools:
    @staticmethod
    def double(x):
        return 2 * x

    @classmethod
    def name(cls):
        return cls.__name__

    def bound(self):
        return self
