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
import os
import re

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.parsing.utils.jsonify import jsonify
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


#: remote_tmp values whose shell expansion expand_user/make_tmp reproduce
#: (~, ~user, $VAR, ${VAR}); anything else goes through the shell.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./~${}+@%:-]+$")
#: chmod modes the worker applies itself (target.chmod).
_PLAIN_MODE = re.compile(r"^([0-7]{3,4}|[ugoa]+[-+=][rwx]*(,[ugoa]+[-+=][rwx]*)*)$")


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
        if value == "auto" and ansiballz.custom_module_utils(payload, self._connection.spore_run_dir()):
            value = "fork"
        return value

    # ---------------------------------------- temporary files, in the worker
    # Ansible runs a shell for each of these; spore asks the login
    # context's worker (one message). Anything unusual, or a target
    # without Python, takes Ansible's own path.

    def _spore_login_call(self, function, *args):
        try:
            return True, self._connection.spore_call(False, function, *args)
        except spore.Error as e:
            display.vvvv("spore: %s in the worker failed (%s); using the shell" % (function, e),
                         host=self._play_context.remote_addr)
            return False, None

    def _remote_expand_user(self, path, sudoable=True, pathsep=None):
        if not path.startswith("~") or getattr(self._connection, "_remote_is_local", False) \
                or not _PLAIN_PATH.match(path):
            return self._spore_base._remote_expand_user(self, path, sudoable=sudoable, pathsep=pathsep)
        head, sep, rest = path.partition(os.path.sep)
        if head == "~":
            become_user = self.get_become_option("become_user")
            if sudoable and self._connection.become and become_user:
                head = "~%s" % become_user
            else:
                head = "~%s" % (self._get_remote_user() or "")
        ok, home = self._spore_login_call("expand_user", head)
        if not ok or not home:
            return self._spore_base._remote_expand_user(self, path, sudoable=sudoable, pathsep=pathsep)
        expanded = self._connection._shell.join_path(home, rest) if sep else home
        if ".." in os.path.dirname(expanded).split("/"):
            raise AnsibleError("'%s' returned an invalid relative home directory path containing '..'"
                               % self._play_context.remote_addr)
        return expanded

    def _make_tmp_path(self, remote_user=None):
        shell = self._connection._shell
        remote_tmp = self.get_shell_option("remote_tmp", default="~/.ansible/tmp")
        if getattr(self._connection, "_remote_is_local", False) or not _PLAIN_PATH.match(remote_tmp or ""):
            return self._spore_base._make_tmp_path(self, remote_user)
        system_dirs = None
        if self._is_become_unprivileged():
            system_dirs = list(shell.get_option("system_tmpdirs"))
        basefile = shell._generate_temp_dir_name()
        ok, path = self._spore_login_call("make_tmp", remote_tmp, basefile, system_dirs)
        if not ok:
            return self._spore_base._make_tmp_path(self, remote_user)
        if not path or path.rstrip("/") == "":
            raise AnsibleError("failed to resolve remote temporary directory from %s" % basefile)
        self._cleanup_remote_tmp = True
        shell.tmpdir = path
        self._spore_owner_exec().add(path)  # made 0700
        return path

    def _remove_tmp_path(self, tmp_path, force=False):
        if tmp_path is None and self._connection._shell.tmpdir:
            tmp_path = self._connection._shell.tmpdir
        if not (force or self._should_remove_tmp_path(tmp_path)):
            return
        # Nothing waits for the removal (a failure is logged by the
        # context): the task's result does not depend on it.
        try:
            self._connection.spore_context(False).call_no_reply("fs.remove", path=tmp_path, recursive=True,
                                                                missing_ok=True)
        except spore.Error as e:
            display.warning("Error deleting remote temporary files (%s)" % e)
            return
        self._connection._shell.tmpdir = None

    def _spore_owner_exec(self):
        """Paths this action made with the owner's execute bit already
        (its temporary directory, files sent into it): `chmod u+x` on them
        changes nothing and is not sent."""
        made = self.__dict__.get("_spore_exec_paths")
        if made is None:
            made = self.__dict__["_spore_exec_paths"] = set()
        return made

    def _spore_in_tmpdir(self, remote_path):
        tmpdir = self._connection._shell.tmpdir
        return bool(tmpdir) and os.path.dirname(remote_path.rstrip("/")) == tmpdir.rstrip("/")

    def _transfer_file(self, local_path, remote_path):
        if not self._spore_in_tmpdir(remote_path):
            return self._spore_base._transfer_file(self, local_path, remote_path)
        self._connection.spore_put(local_path, remote_path, False, mode=0o700)
        self._spore_owner_exec().add(remote_path)
        return remote_path

    def _remote_chmod(self, paths, mode, sudoable=False):
        if str(mode) == "u+x" and not sudoable and paths and all(p in self._spore_owner_exec() for p in paths):
            return {"rc": 0, "stdout": "", "stdout_lines": [], "stderr": "", "stderr_lines": []}
        if not _PLAIN_MODE.match(str(mode)):
            return self._spore_base._remote_chmod(self, paths, mode, sudoable=sudoable)
        try:
            return self._connection.spore_call(self._spore_become(sudoable), "chmod", list(paths), str(mode))
        except spore.Error:
            return self._spore_base._remote_chmod(self, paths, mode, sudoable=sudoable)

    def _transfer_data(self, remote_path, data):
        if isinstance(data, dict):
            data = jsonify(data)
        in_tmpdir = self._spore_in_tmpdir(remote_path)
        self._connection.spore_put_bytes(to_bytes(data, errors="surrogate_or_strict"), remote_path,
                                         mode=0o700 if in_tmpdir else 0o600)
        if in_tmpdir:
            self._spore_owner_exec().add(remote_path)
        return remote_path

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
