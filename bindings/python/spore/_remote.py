"""Calls of the caller's own Python functions (docs/python.md, "Your own
functions"): the name a function travels under, what the router serves to
import it remotely, and the values of its arguments and result.

Nothing here is pickled: a function travels as its module and qualified
name, and the target's worker imports that module, from its own
installation when it has it, or from this process through the router.
"""
import functools
import os
import site
import sys
import sysconfig
import threading
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _worker
from . import spore_c as _c

#: spore's built-in functions: a string naming one of these runs it; any
#: other string names a Python function.
BUILTINS = frozenset([
    "sys.ping", "sys.echo", "sys.getenv", "sys.info", "proc.run", "proc.start", "proc.signal", "proc.resize",
    "fs.stat", "fs.read", "fs.write", "fs.put", "fs.get", "fs.put_batch", "fs.get_batch", "fs.walk", "fs.list",
    "fs.mkdir", "fs.remove", "fs.rename", "fs.chmod", "fs.chown", "fs.readlink", "fs.symlink", "fs.mktemp",
])

PREFIX = "py:"


def is_builtin(name: str) -> bool:
    """True when a string names a built-in rather than a Python function."""
    return name in BUILTINS or name.startswith("spore.")


def _main_module_name() -> str:
    """The real name of __main__ when the script ran as `python -m pkg.mod`
    (its module is importable by that name), else "__main__"."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    return name if name and name != "__main__" else "__main__"


def function_name(fn: Callable) -> Tuple[str, str]:
    """(module, qualname) of a function that can run in another process, or
    TypeError saying why this one cannot: only what the target can find by
    importing its module qualifies."""
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if isinstance(fn, types.MethodType):
        owner = fn.__self__
        if not isinstance(owner, type):
            raise TypeError("cannot call %r remotely: it is a method bound to an instance of %s; call a "
                            "module-level function, a staticmethod or a classmethod instead"
                            % (fn, type(owner).__name__))
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname:
        raise TypeError("cannot call %r remotely: only module-level functions, staticmethods and classmethods "
                        "can be called" % (fn,))
    if qualname == "<lambda>" or "<lambda>" in qualname:
        raise TypeError("cannot call %s.%s remotely: a lambda has no name its module can be asked for; "
                        "define a module-level function" % (module, qualname))
    if "<locals>" in qualname:
        raise TypeError("cannot call %s.%s remotely: it is defined inside another function (a closure or "
                        "nested function); define it at module level" % (module, qualname))
    if getattr(fn, "__closure__", None):
        raise TypeError("cannot call %s.%s remotely: it is a closure" % (module, qualname))
    if module == "__main__":
        module = _main_module_name()
    return module, qualname


@functools.lru_cache(maxsize=None)
def _stdlib_dirs() -> Tuple[str, ...]:
    """Where the standard library is (fixed for the process's life: worked
    out once, since sysconfig loads a large module to answer)."""
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if paths.get(k)}
    dirs.add(os.path.realpath(os.path.join(paths.get("platstdlib", ""), "lib-dynload")))
    return tuple(sorted(d for d in dirs if d))


@functools.lru_cache(maxsize=None)
def _site_dirs() -> Tuple[str, ...]:
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # virtualenv's old site module
        pass
    user = getattr(site, "getusersitepackages", None)
    if user:
        dirs.append(user())
    return tuple(os.path.realpath(d) for d in dirs)


def _is_site(path: str, sites: Iterable[str]) -> bool:
    base = os.path.basename(path)
    return path in sites or base in ("site-packages", "dist-packages")


def _inside(path: str, dirs: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d + os.sep) for d in dirs)


class ModuleServing:
    """What one router serves to the workers of its contexts: this
    process's sys.path directories outside the standard library (installed
    packages only on demand, never sent ahead), plus the exact source of
    each module a call names, as this process imported it."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self._registered = set()  # type: set
        self._paths = set()  # type: set
        self._stdlib = _stdlib_dirs()
        self._sites = _site_dirs()
        self.sync_paths()

    def sync_paths(self) -> None:
        """Serves every directory of sys.path not served yet (a program may
        extend sys.path after making its router)."""
        with self._lock:
            for entry in list(sys.path):
                path = os.path.realpath(entry or os.getcwd())
                if path in self._paths or not os.path.isdir(path):
                    continue
                self._paths.add(path)
                if _inside(path, self._stdlib) and not _is_site(path, self._sites):
                    continue
                flags = _c.SPORE_MODULE_PATH_ON_DEMAND if _is_site(path, self._sites) else 0
                _c.spore_router_add_module_path(self._handle, path, flags)

    def prepare(self, module: str) -> None:
        """Registers the source of `module` as this process has it, once,
        so the target runs exactly the caller's code."""
        if module in self._registered:
            return
        self.sync_paths()
        if module == "__main__":
            mod = sys.modules.get("__main__")
        else:
            mod = sys.modules.get(module)
        path = getattr(mod, "__file__", None) if mod is not None else None
        if not path or not path.endswith(".py"):
            with self._lock:
                self._registered.add(module)
            return  # a builtin, an extension, or not imported here: found by name
        real = os.path.realpath(path)
        if module != "__main__" and _inside(real, self._stdlib) and not _inside(real, self._sites):
            with self._lock:
                self._registered.add(module)
            return  # the standard library is the target's own
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            return
        package = os.path.basename(path) == "__init__.py"
        rc = _c.spore_router_add_module(self._handle, module, path, source, 1 if package else 0)
        if rc == 0:
            with self._lock:
                self._registered.add(module)


def call_name(fn: Any, serving: Optional[ModuleServing]) -> str:
    """The wire name of a Python function given as a callable or a dotted
    string ("pkg.mod.func", "pkg.mod:Class.method", or with "py:")."""
    if isinstance(fn, str):
        name = fn[len(PREFIX):] if fn.startswith(PREFIX) else fn
        if not name:
            raise ValueError("no Python function named")
        return PREFIX + name
    module, qualname = function_name(fn)
    if serving is not None:
        serving.prepare(module)
    return "%s%s:%s" % (PREFIX, module, qualname)


def encode_call(args: tuple, kwargs: Dict[str, Any], isolation: Optional[str]) -> Tuple[str, bytes]:
    """The args object of a py: call and its binary part; TypeError naming
    any value that cannot travel and where it was."""
    if isolation not in (None, "shared", "fork"):
        raise ValueError("isolation must be 'shared' or 'fork', not %r" % (isolation,))
    return _worker.encode_call(args, kwargs, isolation)


def encode_batch(items: Iterable[Tuple[tuple, Optional[Dict[str, Any]]]]) -> Tuple[str, bytes]:
    """The args object of a batch call (one message, one reply, the
    function run once per (args, kwargs) item)."""
    return _worker.encode_batch(items)


def decode_result(text: Any, data: bytes) -> Any:
    """A Python function's result from its reply."""
    return _worker.decode(text, data)
