"""What every action does differently on a spore connection.

Mixed in front of each action plugin's class while its connection is a
spore one (loaders.py). Two of ActionBase's methods are replaced, and
everything else (module building, interpreter discovery, temporary
directories, file transfers, permissions, async, result parsing) is
Ansible's own code running over spore's primitives:

- `_is_pipelining_enabled`: every new-style module that is not async is
  "pipelined", which here means run in the warm worker; su included;
- `_low_level_execute_command`: the command runs through the agent in the
  login context or, when Ansible would have become, in the become context
  (no become wrapper, no prompts on a shell); a pipelined AnsiballZ module
  runs in the context's Python worker instead of a new interpreter.
"""
from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import AnsibleUnsafe

import spore

from . import ansiballz

display = Display()


def _plain(value):
    """Unsafe-marked strings as plain ones: what crosses to the target is
    JSON text anyway, and Ansible's markers have no meaning there."""
    if isinstance(value, AnsibleUnsafe):
        if isinstance(value, bytes):
            return bytes(value)
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class SporeActionMixin:
    """Mixed in front of an action plugin class (its methods are copied
    into a subclass: see loaders.py; _spore_base is the original class)."""

    _spore_base: type = object

    def run(self, tmp=None, task_vars=None):
        self._connection.spore_prepare(task_vars, self._templar, self._loader)
        return self._spore_base.run(self, tmp=tmp, task_vars=task_vars)

    def _is_pipelining_enabled(self, module_style, wrap_async=False):
        return module_style == "new" and not wrap_async and not C.DEFAULT_KEEP_REMOTE_FILES

    def _spore_become(self, sudoable):
        """Whether Ansible would become for this command (the same test
        as its _low_level_execute_command)."""
        if not (sudoable and self._connection.become):
            return False
        ruser = self._get_remote_user()
        buser = self.get_become_option("become_user")
        return bool(C.BECOME_ALLOW_SAME_USER or (buser != ruser or not any((ruser, buser))))

    def _spore_isolation(self, payload):
        """"fork" when the task asks (spore_task_isolation: fork) or the
        module brings module_utils of its own; else "auto" (the warm
        worker, or a fork while another module runs there)."""
        value = self._connection._spore_var("spore_task_isolation")
        if value in (None, "", "auto", "shared"):
            value = "auto"
        elif value != "fork":
            raise AnsibleError("spore_task_isolation must be 'fork' or 'shared', not %r" % (value,))
        if value == "auto" and ansiballz.custom_module_utils(payload):
            value = "fork"
        return value

    def _low_level_execute_command(self, cmd, sudoable=True, in_data=None, executable=None,
                                   encoding_errors="surrogate_then_replace", chdir=None):
        become = self._spore_become(sudoable)
        payload = ansiballz.parse(in_data) if in_data else None
        if payload is not None and not payload.coverage:
            rc, stdout, stderr = self._spore_run_module(payload, become)
        else:
            if chdir:
                cmd = self._connection._shell.append_command("cd %s" % chdir, cmd)
            if executable is None:
                executable = self._play_context.executable
            if executable:
                argv = [executable, "-c", cmd]
            else:
                argv = ["/bin/sh", "-c", cmd]
            display.debug("_low_level_execute_command(): spore runs %s" % (argv,))
            rc, stdout, stderr = self._connection.spore_exec(argv, in_data, become)
        out = to_text(stdout, errors=encoding_errors)
        err = to_text(stderr, errors=encoding_errors)
        return dict(rc=rc, stdout=out, stdout_lines=out.splitlines(), stderr=err, stderr_lines=err.splitlines())

    def _spore_run_module(self, payload, become):
        """The module in the context's warm Python worker: the payload
        is sent only to a worker that does not hold it yet."""
        env = {}
        self._compute_environment_string(env)
        env = {str(k): (None if v is None else str(v)) for k, v in _plain(env).items()}
        cwd = None
        replace_env = False
        if self._connection.transport == "local":
            # As vanilla's local connection: the playbook's directory, and
            # the environment of this worker process.
            cwd = self._loader.get_basedir()
            local_env = self._connection._spore_local_env()
            env = dict(local_env, **env)
            replace_env = True
        isolation = self._spore_isolation(payload)
        display.vvv("spore: %s runs in the %s worker" % (payload.fqn, "forked" if isolation == "fork" else "warm"),
                    host=self._play_context.remote_addr)
        args = dict(digest=payload.digest, fqn=payload.fqn, name=payload.name, params=payload.params, env=env,
                    cwd=cwd, replace_env=replace_env, isolation=isolation, rlimit_nofile=payload.rlimit_nofile)
        try:
            result = self._connection.spore_call(become, "run_module", payload=None, **args)
            if result.get("need_payload"):
                result = self._connection.spore_call(become, "run_module", payload=payload.zip_data, **args)
        except spore.Error as e:
            return 1, b"", ("spore: the module %s failed in %s: %s" % (payload.fqn, getattr(e, "context", None)
                                                                       or "the target", e)).encode()
        return result["rc"], bytes(result["stdout"]), bytes(result["stderr"])
