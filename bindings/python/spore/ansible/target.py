"""What runs in the target's warm Python worker for spore's Ansible plugin.

The daemon serves this file under the top-level name `spore_ansible_target`
(it must not import the `spore` package, which needs the C library). It
depends on the standard library only and runs on Python 3.6 and newer.

A new-style module arrives as Ansible built it: the AnsiballZ payload (a
zip of the module and the module_utils it needs) and its JSON parameters.
The payload travels once per worker (`need_payload` asks for it) and its
sources stay in memory behind an import hook, so `ansible.module_utils`
is imported once per worker instead of once per task. The module then runs
in the worker the way the AnsiballZ wrapper would run it, with what it can
change in the process (argv, stdio, environment, working directory, umask,
atexit handlers, sys.path, Ansible's warning lists) put back afterwards.
A module that needs a process of its own runs in a fork.
"""
import atexit
import importlib.abc
import importlib.util
import io
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

#: payload digest -> {module name: (is_package, source bytes)}
_PAYLOADS = {}
#: payload digest -> the zip itself (written out while a module runs)
_ZIPS = {}
#: module name -> digest of the payload whose source is loaded for it
_OWNER = {}
#: top-level packages the payloads provide (ansible, ansible_collections)
_ROOTS = set()
#: (payload digest, module name) -> compiled code
_CODE = {}
_LOCK = threading.Lock()
#: held while a module runs in this process: process-wide state is swapped
_IN_PROCESS = threading.Lock()


class _PayloadFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds modules in the payloads this worker holds, ahead of the
    target's own installation, as AnsiballZ puts its zip first on sys.path."""

    def __init__(self):
        self.paths = {}  # digest -> path of the payload's zip while a module runs

    def _entry(self, name):
        with _LOCK:
            digest = _OWNER.get(name)
            if digest is None:
                return None, None
            return digest, _PAYLOADS[digest][name]

    def find_spec(self, fullname, path=None, target=None):
        digest, entry = self._entry(fullname)
        if entry is None:
            return self._elsewhere(fullname, path, target)
        is_pkg = entry[0]
        where = self.paths.get(digest) or "<spore payload %s>" % digest[:12]
        rel = fullname.replace(".", "/") + ("/__init__.py" if is_pkg else ".py")
        spec = importlib.util.spec_from_loader(fullname, self, origin=os.path.join(where, rel), is_package=is_pkg)
        spec.has_location = True
        if is_pkg:
            spec.submodule_search_locations = [os.path.join(where, fullname.replace(".", "/"))]
        return spec

    def _elsewhere(self, fullname, path, target):
        """A module under a payload's packages that the payload lacks:
        the target's finders may have it (six.moves is made by six's
        finder), the controller never does, so it is not asked."""
        with _LOCK:
            roots = set(_ROOTS)
        if fullname.split(".", 1)[0] not in roots:
            return None
        for finder in list(sys.meta_path):
            if finder is self or type(finder).__name__ == "_Importer" and \
                    getattr(type(finder), "__module__", None) == "__spore_worker__":
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                return spec
        raise ModuleNotFoundError("No module named %r" % fullname, name=fullname)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        code = self.get_code(module.__name__)
        module.__file__ = module.__spec__.origin
        exec(code, module.__dict__)

    def is_package(self, fullname):
        entry = self._entry(fullname)[1]
        if entry is None:
            raise ImportError(fullname)
        return entry[0]

    def get_source(self, fullname):
        entry = self._entry(fullname)[1]
        if entry is None:
            raise ImportError(fullname)
        return entry[1].decode("utf-8")

    def get_code(self, fullname):
        digest, entry = self._entry(fullname)
        if entry is None:
            raise ImportError(fullname)
        # A module runs again at every task (runpy executes it afresh):
        # its code is compiled once per worker (copy.py takes 8 ms).
        key = (digest, fullname)
        code = _CODE.get(key)
        if code is None:
            where = self.paths.get(digest) or "<spore payload>"
            rel = fullname.replace(".", "/") + ("/__init__.py" if entry[0] else ".py")
            code = _CODE[key] = compile(entry[1], os.path.join(where, rel), "exec", dont_inherit=True)
        return code


_FINDER = _PayloadFinder()


def _install_finder():
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def _read_payload(data):
    """{module name: (is_package, source)} of an AnsiballZ zip."""
    sources = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if not name.endswith(".py") or name.startswith("/") or ".." in name.split("/"):
                continue
            parts = name[:-3].split("/")
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            if not parts or parts == ["sitecustomize"]:
                continue
            sources[".".join(parts)] = (is_pkg, zf.read(name))
    return sources


def has_payload(digest):
    """True when this worker holds the payload with that digest."""
    with _LOCK:
        return digest in _PAYLOADS


def _adopt(digest, data):
    """Keeps a payload's sources; returns the names that differ from
    sources already loaded from another payload (custom module_utils
    shadowing others), which only a fork may load."""
    sources = _read_payload(data)
    conflicts = []
    with _LOCK:
        _PAYLOADS[digest] = sources
        _ZIPS[digest] = bytes(data)
        for name, entry in sources.items():
            _ROOTS.add(name.split(".", 1)[0])
            owner = _OWNER.get(name)
            if owner is None:
                _OWNER[name] = digest
            elif owner != digest and _PAYLOADS[owner][name] != entry:
                conflicts.append(name)
    return conflicts


def _conflicts(digest):
    with _LOCK:
        sources = _PAYLOADS[digest]
        return [n for n, e in sources.items() if _OWNER.get(n) not in (None, digest) and _PAYLOADS[_OWNER[n]][n] != e]


class _Saved:
    """What a module may change in this process, to be put back."""

    def __init__(self):
        self.argv = list(sys.argv)
        self.path = list(sys.path)
        self.stdin, self.stdout, self.stderr = sys.stdin, sys.stdout, sys.stderr
        self.environ = dict(os.environ)
        try:
            self.cwd = os.getcwd()
        except OSError:
            self.cwd = None
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.register, self.unregister = atexit.register, atexit.unregister

    def restore(self):
        sys.argv[:] = self.argv
        sys.path[:] = self.path
        sys.stdin, sys.stdout, sys.stderr = self.stdin, self.stdout, self.stderr
        for key in [k for k in os.environ if k not in self.environ]:
            del os.environ[key]
        for key, value in self.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        if self.cwd is not None:
            try:
                os.chdir(self.cwd)
            except OSError:
                pass
        os.umask(self.umask)
        atexit.register, atexit.unregister = self.register, self.unregister


def _enter_cwd(cwd):
    """The directory vanilla's module would start in: the one asked for,
    else the current one; where that cannot be entered, the home directory,
    else / (as the AnsiballZ wrapper falls back)."""
    if cwd is None:
        try:
            os.getcwd()
            return
        except OSError:
            pass
    for candidate in (cwd, os.path.expanduser("~"), "/"):
        if not candidate:
            continue
        try:
            os.chdir(candidate)
            return
        except OSError:
            continue


def _apply_env(env, replace):
    if replace:
        os.environ.clear()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)


_RUN_COMMAND_PREEXEC = "AnsibleModule.run_command.<locals>.preexec"


def _spawn_arguments(kwargs):
    """run_command's Popen arguments, with its preexec_fn left out where
    Python does the same in C: a preexec_fn makes Popen fork this whole
    worker (page tables, copy-on-write faults on both sides) instead of
    vfork()ing, a third of a `command` task's time. On Python 3 the hook
    only sets the umask (Popen's umask argument) and calls
    _restore_signal_handlers, which does nothing there (Popen's
    restore_signals does its job). A module class that overrides that
    method keeps its hook."""
    hook = kwargs.get("preexec_fn")
    if hook is None or getattr(hook, "__qualname__", None) != _RUN_COMMAND_PREEXEC or sys.version_info < (3, 10):
        return kwargs
    cells = dict(zip(hook.__code__.co_freevars, (c.cell_contents for c in hook.__closure__ or ())))
    basic = sys.modules.get("ansible.module_utils.basic")
    module = cells.get("self")
    if basic is None or set(cells) != {"self", "umask"} or getattr(basic, "PY2", True) or \
            getattr(type(module), "_restore_signal_handlers", None) is not basic.AnsibleModule._restore_signal_handlers:
        return kwargs
    kwargs = dict(kwargs, preexec_fn=None)
    if cells["umask"]:
        kwargs["umask"] = cells["umask"]
    return kwargs


class _RunCommandProcess(subprocess.Popen):
    """The Popen that run_command gets in the warm worker.

    Besides _spawn_arguments, its poll() gives one answer to two questions
    asked together: run_command (ansible-core 2.14) calls poll() twice in
    a row once both pipes are at their end, and when the command exits
    between the two it falls through to a select() on no pipes, a second
    lost each time (about one `command` task in 300). A None stays the
    answer for 50 ms, and run_command then waits for the exit instead."""

    _none_until = 0.0

    def __init__(self, args, **kwargs):
        super().__init__(args, **_spawn_arguments(kwargs))

    def poll(self):
        if self.returncode is None and time.monotonic() < self._none_until:
            return None
        status = super().poll()
        if status is None:
            self._none_until = time.monotonic() + 0.05
        return status


class _SubprocessForModules:
    """What `subprocess` is in the payload's ansible.module_utils.basic
    while it is loaded in the warm worker: the real module but for Popen."""

    Popen = _RunCommandProcess

    def __getattr__(self, name):
        return getattr(subprocess, name)


_SUBPROCESS_FOR_MODULES = _SubprocessForModules()


def _reset_ansible_state():
    """Ansible's module-level state that would otherwise leak from one
    module into the next (warnings, deprecations, parameters)."""
    warnings = sys.modules.get("ansible.module_utils.common.warnings")
    if warnings is not None:
        for name in ("_global_warnings", "_global_deprecations"):
            value = getattr(warnings, name, None)
            if isinstance(value, list):
                del value[:]
    basic = sys.modules.get("ansible.module_utils.basic")
    if basic is not None:
        basic._ANSIBLE_ARGS = None


def _run_module_here(fqn, params, zip_path, argv0):
    """Runs the module in this process as AnsiballZ's invoke_module does;
    returns its exit status, stdout and stderr."""
    out, err = io.BytesIO(), io.BytesIO()
    handlers = []
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    sys.argv = [argv0]
    sys.path.insert(0, zip_path)

    def register(fn, *a, **kw):
        handlers.append((fn, a, kw))
        return fn

    def unregister(fn):
        handlers[:] = [h for h in handlers if h[0] is not fn]

    atexit.register, atexit.unregister = register, unregister
    rc = 1
    try:
        _reset_ansible_state()
        from ansible.module_utils import basic  # noqa: the payload's own
        basic.subprocess = _SUBPROCESS_FOR_MODULES
        basic._ANSIBLE_ARGS = params
        runpy.run_module(mod_name=fqn, init_globals=dict(_module_fqn=fqn, _modlib_path=zip_path),
                         run_name="__main__", alter_sys=True)
        sys.stdout.write('{"msg": "New-style module did not handle its own exit", "failed": true}\n')
        rc = 1
    except SystemExit as e:
        rc = _exit_status(e.code)
    except BaseException:
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        for fn, a, kw in reversed(handlers):
            try:
                fn(*a, **kw)
            except BaseException:
                import traceback
                traceback.print_exc()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        _reset_ansible_state()
    return rc, out.getvalue(), err.getvalue()


def _exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except (OSError, ValueError):
        pass
    return 1


#: The AnsiballZ wrapper's invoke_module, for a module that runs in an
#: interpreter of its own: argv is the payload zip and the module's name,
#: stdin the parameters.
_RUNNER = """
import runpy, sys
limit = int(sys.argv[3])
if limit:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, limit), hard))
    except ValueError:
        pass
sys.path.insert(0, sys.argv[1])
from ansible.module_utils import basic
basic._ANSIBLE_ARGS = sys.stdin.buffer.read()
fqn = sys.argv[2]
sys.argv = [sys.argv[1]]
runpy.run_module(mod_name=fqn, init_globals=dict(_module_fqn=fqn, _modlib_path=sys.argv[0]),
                 run_name="__main__", alter_sys=True)
print('{"msg": "New-style module did not handle its own exit", "failed": true}')
sys.exit(1)
"""


def _run_isolated(fqn, params, zip_path, env, cwd, replace_env, rlimit_nofile):
    """Runs the module in a new interpreter, as vanilla's pipelining does:
    for modules that need isolation, or while another module holds this
    process. (A fork of this multi-threaded process could inherit an
    import lock held by another thread and hang.)"""
    child_env = {} if replace_env else dict(os.environ)
    for key, value in env.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = str(value)
    start_dir = "/"
    try:
        here = os.getcwd()
    except OSError:
        here = None
    for candidate in (cwd or here, os.path.expanduser("~")):
        if candidate and os.access(candidate, os.X_OK):
            start_dir = candidate
            break
    done = subprocess.run([sys.executable, "-c", _RUNNER, zip_path, fqn, str(int(rlimit_nofile or 0))],
                          input=params, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env,
                          cwd=start_dir, close_fds=True)
    rc = done.returncode if done.returncode >= 0 else 128 - done.returncode
    return rc, done.stdout, done.stderr


def run_module(digest, payload, fqn, name, params, env, cwd, replace_env=False, isolation="auto",
               rlimit_nofile=0):
    """Runs one new-style module.

    digest: sha256 of the payload; payload: the zip's bytes, or None when
    the worker may already hold it (the reply is then {"need_payload":
    true} if it does not). params: the JSON text of the module's
    parameters. env: variables to set (None removes one), on top of the
    worker's environment or, with replace_env, instead of it. cwd: where
    the module starts. isolation: "auto" (this process, or a fork while
    another module runs here or when the payload conflicts with loaded
    sources), "fork" or "none".

    Returns {"rc", "stdout" (bytes), "stderr" (bytes), "forked"}.
    """
    if payload is None and not has_payload(digest):
        return {"need_payload": True}
    conflicts = _adopt(digest, payload) if payload is not None else _conflicts(digest)
    _install_finder()
    fork = isolation == "fork" or bool(conflicts) or bool(rlimit_nofile)
    acquired = False
    if not fork:
        acquired = _IN_PROCESS.acquire(blocking=False)
        fork = not acquired
    try:
        return _run(digest, payload, fqn, name, params, env, cwd, replace_env, fork, rlimit_nofile)
    finally:
        if acquired:
            _IN_PROCESS.release()


#: payload digest -> memfd holding its zip (Linux), kept for the worker's life
_MEMFDS = {}


def _memfd_path(digest, name):
    """A path to the payload's zip that needs no disk: a memfd of this
    worker, opened as /proc/<pid>/fd/<n> (by this process and by the
    interpreter respawn_module() starts). None where there is no memfd."""
    fd = _MEMFDS.get(digest)
    if fd is None:
        if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
            return None
        try:
            fd = os.memfd_create("ansible_%s_payload.zip" % name)
        except OSError:
            return None
        with _LOCK:
            data = _ZIPS[digest]
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        _MEMFDS[digest] = fd
    return "/proc/%d/fd/%d" % (os.getpid(), fd)


def _run(digest, payload, fqn, name, params, env, cwd, replace_env, fork, rlimit_nofile):
    # As the AnsiballZ wrapper: the payload as a zip file while the module
    # runs (respawn_module() puts it on the new interpreter's path): a memfd
    # made once per payload, else a file in a temporary directory, removed
    # afterwards.
    temp_dir = None
    zip_path = _memfd_path(digest, name)
    try:
        if zip_path is None:
            temp_dir = tempfile.mkdtemp(prefix="ansible_%s_payload_" % name)
            zip_path = os.path.join(temp_dir, "ansible_%s_payload.zip" % name)
            with open(zip_path, "wb") as f:
                with _LOCK:
                    f.write(_ZIPS[digest])
        params_bytes = params.encode("utf-8")
        _FINDER.paths.setdefault(digest, zip_path)
        if fork:
            # The child gets its own environment and directory: this
            # process's may be another module's while it runs here.
            rc, out, err = _run_isolated(fqn, params_bytes, zip_path, env, cwd, replace_env, rlimit_nofile)
        else:
            saved = _Saved()
            try:
                _apply_env(env, replace_env)
                _enter_cwd(cwd)
                rc, out, err = _run_module_here(fqn, params_bytes, zip_path, zip_path)
            finally:
                saved.restore()
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return {"rc": rc, "stdout": out, "stderr": err, "forked": fork}


# ------------------------------------------------- temporary directories
# What Ansible's actions do with a shell on the target (echo ~, mkdir,
# chmod u+x, rm -rf), done in the worker: one message instead of a shell
# each. The controller falls back to Ansible's own commands for anything
# these do not cover.

def expand_user(path):
    """`echo ~user` as a shell would print it: the home directory, or the
    word unchanged for an unknown user."""
    return os.path.expanduser(path)


def make_tmp(base, name, system_dirs=None):
    """Ansible's mkdtemp: `base` expanded as the shell would (~ and $VARS),
    or the first of system_dirs when base is not under one of them, made
    with umask 077, then the new directory `name` in it. Returns its path."""
    base = os.path.expandvars(os.path.expanduser(base))
    if system_dirs is not None and not base.startswith(tuple(system_dirs)):
        base = system_dirs[0]
    path = os.path.join(base, name)
    old = os.umask(0o077)
    try:
        os.makedirs(base, exist_ok=True)
        os.mkdir(path)
    finally:
        os.umask(old)
    return path


_PERMS = {"r": 0o444, "w": 0o222, "x": 0o111}
_WHO = {"u": 0o700, "g": 0o070, "o": 0o007, "a": 0o777}


def chmod(paths, mode):
    """chmod MODE PATHS for the modes Ansible uses: octal, or WHO(+|-|=)PERMS
    with WHO in ugoa and PERMS in rwx (comma-separated clauses). Returns
    {"rc", "stdout", "stderr"} as the command would."""
    errors = []
    for path in paths:
        try:
            current = os.stat(path).st_mode & 0o7777
            os.chmod(path, _apply_mode(current, mode))
        except OSError as e:
            errors.append("chmod: cannot change permissions of '%s': %s" % (path, e.strerror))
        except ValueError as e:
            return {"rc": 1, "stdout": "", "stderr": "chmod: %s\n" % e}
    return {"rc": 1 if errors else 0, "stdout": "", "stderr": "".join(e + "\n" for e in errors)}


def _apply_mode(current, mode):
    if all(c in "01234567" for c in mode):
        return int(mode, 8)
    for clause in mode.split(","):
        op_at = next((i for i, c in enumerate(clause) if c in "+-="), -1)
        who, op, perms = clause[:op_at], clause[op_at:op_at + 1], clause[op_at + 1:]
        if op_at <= 0 or any(c not in _WHO for c in who) or any(c not in _PERMS for c in perms):
            raise ValueError("invalid mode: %r" % mode)
        mask = 0
        for w in who:
            mask |= _WHO[w]
        bits = 0
        for p in perms:
            bits |= _PERMS[p]
        bits &= mask
        if op == "+":
            current |= bits
        elif op == "-":
            current &= ~bits
        else:
            current = (current & ~mask) | bits
    return current
