"""Ansible's `ssh` and `local` connections through the run's spore router.

The strategy gives each `ssh` or `local` connection object Ansible makes
the class SporeConnection mixed in front of its own (see loaders.py): the
object keeps its name, its options and their resolution (the vanilla
plugin's documented options, templated by Ansible), and only what it does
changes. Commands run through the agent's process execution (no Python
needed on the target), files through spore's transfers, and new-style
modules in the context's warm Python worker (action.py).
"""
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.utils.display import Display

import spore

from . import daemon, stack

display = Display()

_ROUTER_LOCK = threading.Lock()
_ROUTER: Dict[int, Any] = {}  # pid -> the attached router of this worker process

#: Python function names in the target (served by the daemon).
_TARGET = "py:%s:" % daemon.TARGET_MODULE


def attached_router():
    """This process's router attached to the run's router; one per process
    (Ansible forks a worker per task)."""
    path = os.environ.get(daemon.SOCKET_ENV)
    if not path:
        raise AnsibleConnectionFailure("spore: the run's router is not running (is the strategy spore_linear, "
                                       "spore_free or spore_host_pinned?)")
    pid = os.getpid()
    with _ROUTER_LOCK:
        router = _ROUTER.get(pid)
        if router is None or router.closed:
            _ROUTER.clear()  # a parent's, inherited through fork
            from . import strategy
            strategy.release_inherited()
            try:
                router = spore.Router.attach(path, forward_logs=False)
            except spore.Error as e:
                raise AnsibleConnectionFailure("spore: cannot reach the run's router at %s: %s" % (path, e))
            _ROUTER[pid] = router
        return router


def run_dir() -> Optional[str]:
    """The run's private (0700) directory, where the daemon's socket is."""
    path = os.environ.get(daemon.SOCKET_ENV)
    return os.path.dirname(path) if path else None


def drop_attached_router() -> None:
    """Closes this process's attached router (the contexts stay up)."""
    with _ROUTER_LOCK:
        router = _ROUTER.pop(os.getpid(), None)
    if router is not None:
        router.close()


def _describe(method: str, options: Dict[str, Any]) -> str:
    if method == "ssh":
        where = options["hostname"]
        if options.get("username"):
            where = "%s@%s" % (options["username"], where)
        if options.get("port"):
            where = "%s:%s" % (where, options["port"])
        return "ssh " + where
    if method in ("sudo", "su", "doas"):
        return "%s %s" % (method, options.get("username", "root"))
    return method


class SporeConnection:
    """Mixed in front of Ansible's ssh or local connection class (its
    methods are copied into a subclass: see loaders.py)."""

    #: Every new-style module is run by spore, whatever `pipelining` says.
    has_pipelining = True
    spore = True

    def spore_init(self) -> None:
        self._spore_contexts: Dict[bool, Any] = {}
        self._spore_task_vars: Dict[str, Any] = {}
        self._spore_templar = None
        self._spore_basedir: Optional[str] = None

    # ------------------------------------------------------------ stack

    def spore_prepare(self, task_vars: Dict[str, Any], templar, loader) -> None:
        """What the action knows and the connection needs: the task's
        variables (interpreter, spore_via, debug level) and the playbook's
        directory (local commands run there, as vanilla's do)."""
        if not hasattr(self, "_spore_contexts"):
            self.spore_init()
        self._spore_task_vars = task_vars or {}
        self._spore_templar = templar
        try:
            self._spore_basedir = loader.get_basedir()
        except AttributeError:
            self._spore_basedir = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        # meta: reset_connection gives every variable of the host here and
        # prepares nothing else: its stack must come out as the tasks' did.
        self._spore_option_vars = var_options or {}
        return self._spore_base.set_options(self, task_keys=task_keys, var_options=var_options, direct=direct)

    def _spore_var(self, name: str, default: Any = None) -> Any:
        source = self._spore_task_vars or getattr(self, "_spore_option_vars", None) or {}
        value = source.get(name, default)
        if self._spore_templar is not None and isinstance(value, str):
            value = self._spore_templar.template(value)
        return value

    def _spore_interpreter(self) -> Optional[str]:
        delegated = self._spore_task_vars.get("ansible_delegated_vars", {})
        host_vars = delegated.get(self._spore_delegate_name(), {}) if delegated else {}
        value = host_vars.get("ansible_python_interpreter", self._spore_var("ansible_python_interpreter"))
        if self._spore_templar is None and isinstance(value, str) and "{{" in value:
            from ansible.template import Templar
            from ansible.parsing.dataloader import DataLoader
            value = Templar(loader=DataLoader(), variables=self._spore_option_vars).template(value)
        if self._spore_templar is not None and isinstance(value, str):
            value = self._spore_templar.template(value)
        return stack.python_path(value)

    def _spore_delegate_name(self) -> Optional[str]:
        return self._spore_task_vars.get("ansible_delegated_host") or None

    def _spore_transport_hop(self) -> stack.Hop:
        if self.transport == "local":
            return "local", {}
        level = self._spore_var("spore_ssh_debug_level", 0) or 0
        return stack.ssh_hop(self.get_option, self._play_context, int(level))

    def spore_stack(self, become: bool) -> List[stack.Hop]:
        """The hops of this task's context, first to last."""
        hops: List[stack.Hop] = []
        via = self._spore_var("spore_via")
        if via and self.transport != "local":
            hops.extend(self._spore_via_hops(str(via), [self._spore_task_vars.get("inventory_hostname")]))
        hops.append(self._spore_transport_hop())
        if become:
            hops.append(stack.become_hop(self.become, self._play_context))
        interpreter = self._spore_interpreter()
        if interpreter:
            # On the login hop too: its key must be the same whether or not
            # the task becomes, or a host would get a second connection.
            first = len(hops) - (2 if become else 1)
            hops[first:] = [(m, dict(o, python_path=interpreter)) for m, o in hops[first:]]
        return hops

    def _spore_via_hops(self, spec: str, seen: List[Any]) -> List[stack.Hop]:
        """The hops of `[become_method:][become_user@]inventory_host`,
        that host's own spore_via first; a cycle is an error."""
        method, user, host = stack.parse_via(spec)
        if host in seen:
            raise stack.StackError("spore_via makes a cycle: %s" % " -> ".join(str(h) for h in seen + [host]))
        hostvars = self._spore_task_vars.get("hostvars", {})
        if host not in hostvars:
            raise stack.StackError("spore_via names %r, which is not in the inventory" % host)
        host_vars = hostvars[host]
        variables = {k: host_vars[k] for k in host_vars}
        hops: List[stack.Hop] = []
        if variables.get("spore_via"):
            hops.extend(self._spore_via_hops(str(variables["spore_via"]), seen + [host]))
        if variables.get("ansible_connection", "ssh") == "local":
            hops.append(("local", {}))
        else:
            options = C.config.get_plugin_options("connection", "ssh", variables=variables)
            options.setdefault("host", variables.get("ansible_host") or host)

            class _PC:
                remote_addr = host

            hops.append(stack.ssh_hop(options.get, _PC, int(variables.get("spore_ssh_debug_level", 0) or 0)))
        if method is not None:
            hops.append((method, {"username": user}))
        return hops

    def spore_context(self, become: bool):
        """The task's context (opened, or found live in the run's router)."""
        if not hasattr(self, "_spore_contexts"):
            self.spore_init()
        ctx = self._spore_contexts.get(become)
        if ctx is not None:
            return ctx
        try:
            hops = self.spore_stack(become)
        except stack.StackError as e:
            raise AnsibleError("spore: %s" % e)
        router = attached_router()
        ctx = None
        for method, options in hops:
            display.vvvv("spore: hop %s %s" % (method, sorted(k for k in options if k not in ("password",))),
                         host=self._play_context.remote_addr)
            display.vvv("spore: %s%s" % (_describe(method, options), " (via %s)" % ctx.name if ctx else ""),
                        host=self._play_context.remote_addr)
            try:
                ctx = router.connect(method, via=ctx, **options)
            except spore.Error as e:
                message = "spore: %s: %s" % (_describe(method, options), e.message)
                if method in ("sudo", "su", "doas"):
                    # As vanilla: a become that fails fails the task; the
                    # host was reached.
                    raise AnsibleError(message)
                raise AnsibleConnectionFailure(message)
        self._spore_contexts[become] = ctx
        self._connected = True
        return ctx

    # -------------------------------------------- ConnectionBase methods

    def _connect(self):
        self.spore_context(False)
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """A shell command in the login context (become is a context of its
        own: the action layer picks it; this is for callers outside it)."""
        rc, out, err = self.spore_exec(["/bin/sh", "-c", to_text(cmd)], in_data, False)
        return rc, out, err

    def spore_exec(self, argv: List[str], in_data: Optional[bytes], become: bool,
                   cwd: Optional[str] = None, env: Optional[Dict[str, Any]] = None) -> Tuple[int, bytes, bytes]:
        """Runs argv in the task's context through the agent (no Python
        needed on the target); returns (rc, stdout, stderr) as bytes."""
        ctx = self.spore_context(become)
        args: Dict[str, Any] = {"argv": [to_text(a) for a in argv], "stdout_binary": True}
        local_env = self._spore_local_env()
        if local_env is not None:
            args["env"] = dict(local_env, **(env or {}))
            args["env_clear"] = True
        elif env:
            args["env"] = env
        if cwd is None and self.transport == "local":
            cwd = self._spore_basedir
        if cwd:
            args["cwd"] = cwd
        data = to_bytes(in_data) if in_data is not None else None
        try:
            reply = ctx.call("proc.run", data=data, **args)
        except spore.Error as e:
            raise AnsibleConnectionFailure("spore: %s: %s" % (ctx.name, e.message))
        value, stdout = (reply.value, reply.data) if isinstance(reply, spore.Reply) else (reply, b"")
        rc = value.get("rc")
        if rc is None:
            rc = 128 + int(value.get("signal") or 0)
        return rc, bytes(stdout or b""), to_bytes(value.get("stderr") or "", errors="surrogate_or_strict")

    def _spore_local_env(self) -> Optional[Dict[str, str]]:
        """For `local`: the environment of this worker process, as vanilla's
        local commands inherit it (not the daemon's)."""
        if self.transport != "local":
            return None
        env = dict(os.environ)
        env.pop(daemon.SOCKET_ENV, None)
        return env

    @staticmethod
    def spore_run_dir() -> Optional[str]:
        return run_dir()

    def spore_call(self, become: bool, function: str, *args, **kwargs):
        """A function of the target-side module in the task's context."""
        ctx = self.spore_context(become)
        return ctx.call(_TARGET + function, *args, **kwargs)

    # Files go without fsync, as vanilla's sftp and scp send them: what a
    # task puts is a temporary file its module then moves into place.

    def put_file(self, in_path, out_path):
        self.spore_put(in_path, out_path, False)

    def spore_put(self, in_path, out_path, become: bool, mode: int = 0o600):
        ctx = self.spore_context(become)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_text(in_path))
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._play_context.remote_addr)
        try:
            ctx.put_file(in_path, out_path, mode=mode, sync=False)
        except spore.Error as e:
            raise AnsibleError("spore: failed to transfer file to %s: %s" % (out_path, e.message))

    def spore_put_bytes(self, data: bytes, out_path: str, mode: int = 0o600) -> None:
        """Writes data as the file out_path in the login context (what
        Ansible's _transfer_data writes through a local temporary file)."""
        ctx = self.spore_context(False)
        display.vvv("PUT %d bytes TO %s" % (len(data), out_path), host=self._play_context.remote_addr)
        try:
            ctx.put_bytes(data, out_path, mode=mode, sync=False)
        except spore.Error as e:
            raise AnsibleError("spore: failed to transfer data to %s: %s" % (out_path, e.message))

    def fetch_file(self, in_path, out_path):
        self.spore_fetch(in_path, out_path, False)

    def spore_fetch(self, in_path, out_path, become: bool):
        ctx = self.spore_context(become)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._play_context.remote_addr)
        try:
            ctx.get_file(in_path, out_path, sync=False)
        except spore.Error as e:
            raise AnsibleError("spore: failed to transfer file from %s: %s" % (in_path, e.message))
        if self.transport == "local":
            # As vanilla's local fetch (a plain copy): a new file's mode
            # comes from the umask, not from the source.
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(out_path, 0o666 & ~mask)

    def reset(self):
        """meta: reset_connection: the task's login context ends, and with
        it every context behind it (the next task opens new ones). Ansible
        runs this in ansible-playbook itself, whose attached router is
        closed again here: its threads would keep the process from exiting."""
        try:
            self.spore_context(False).shutdown()
        except (spore.Error, AnsibleError):
            pass
        finally:
            self._spore_contexts = {}
            drop_attached_router()

    def close(self):
        """End of a task: the contexts stay up in the run's router."""
        self._spore_contexts = {}
        self._connected = False
