"""Unit tests of spore's Ansible plugin pieces that need no playbook run:
the stack (ssh arguments, become flags, spore_via), the AnsiballZ reader
on wrappers Ansible itself builds, and the target-side module runner in
this process. Run by ctest as ansible.units (python3 -m pytest)."""
import json
import os
import sys
import tempfile

import pytest
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from spore.ansible import ansiballz, stack
from spore.ansible import target

MODULES = os.path.join(os.path.dirname(module_common.__file__), "..", "modules")
LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playbooks", "library")


def wrapper(name, path, args, **task_vars):
    task_vars.setdefault("ansible_python_interpreter", sys.executable)
    data, style, _ = module_common.modify_module(name, path, args, Templar(loader=DataLoader()),
                                                 task_vars=task_vars)
    assert style == "new"
    return data


# ------------------------------------------------------------------ stack

@pytest.mark.parametrize("given, kept", [
    ("-C -o ControlMaster=auto -o ControlPersist=60s", ["-C"]),
    ("-oControlPath=/x -o 'ControlPersist 30' -o Compression=yes", ["-o", "Compression=yes"]),
    (["-o", "controlmaster=no", "-v"], ["-v"]),
    ("", []),
])
def test_ssh_arguments_drop_control_master(given, kept):
    assert stack.ssh_arguments(given) == kept


def test_ssh_arguments_join_the_three_settings():
    assert stack.ssh_arguments("-C", "-o User=x", None) == ["-C", "-o", "User=x"]


def test_sudo_flags():
    assert stack.become_flags("sudo", "-H -S -n") == {"set_home": True}
    assert stack.become_flags("sudo", "-E --login -r admin_r --type=admin_t") == {
        "preserve_env": True, "login": True, "selinux_role": "admin_r", "selinux_type": "admin_t"}


@pytest.mark.parametrize("method, flags", [("sudo", "-H -D /tmp"), ("su", "-l"), ("doas", "-s")])
def test_unknown_become_flags_are_refused_by_name(method, flags):
    with pytest.raises(stack.StackError) as e:
        stack.become_flags(method, flags)
    assert repr(flags.split()[-1] if method != "sudo" else "-D") in str(e.value)


def test_via_specs():
    assert stack.parse_via("sudo:root@bastion") == ("sudo", "root", "bastion")
    assert stack.parse_via("doas:bastion") == ("doas", "root", "bastion")
    assert stack.parse_via("deploy@bastion") == (None, "deploy", "bastion")
    assert stack.parse_via(" bastion ") == (None, None, "bastion")
    with pytest.raises(stack.StackError):
        stack.parse_via("runas:x@bastion")
    with pytest.raises(stack.StackError):
        stack.parse_via("sudo:root@")


def test_interpreter_setting():
    assert stack.python_path("auto") is None
    assert stack.python_path("auto_silent") is None
    assert stack.python_path(None) is None
    assert stack.python_path("/usr/bin/env python3") == "/usr/bin/env python3"


# -------------------------------------------------------------- AnsiballZ

def test_parse_reads_what_ansible_built():
    data = wrapper("ping", os.path.join(MODULES, "ping.py"), {"data": "pong \u00e9"})
    payload = ansiballz.parse(data)
    assert payload is not None
    assert payload.fqn == "ansible.modules.ping"
    assert payload.name == "ping"
    assert payload.interpreter == sys.executable
    assert json.loads(payload.params)["ANSIBLE_MODULE_ARGS"] == {"data": "pong \u00e9"}
    assert payload.rlimit_nofile == 0
    # The same module gives the same payload whatever its arguments.
    other = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {"data": "x"}))
    assert other.digest == payload.digest


def test_parse_reads_the_rlimit(monkeypatch):
    monkeypatch.setenv("ANSIBLE_PYTHON_MODULE_RLIMIT_NOFILE", "4096")
    from ansible import constants as C
    monkeypatch.setattr(C.config, "get_config_value",
                        lambda name, *a, **k: 4096 if name == "PYTHON_MODULE_RLIMIT_NOFILE" else
                        C.config.__class__.get_config_value(C.config, name, *a, **k))
    payload = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {}))
    assert payload.rlimit_nofile == 4096


def test_parse_leaves_other_scripts_alone():
    assert ansiballz.parse(b"#!/bin/sh\necho hi\n") is None
    assert ansiballz.parse(None) is None
    broken = wrapper("ping", os.path.join(MODULES, "ping.py"), {}).replace(b"ZIPDATA = ", b"ZIPDATA_ = ")
    assert ansiballz.parse(broken) is None


def test_custom_module_utils_are_found():
    from ansible.plugins.loader import module_utils_loader
    module_utils_loader.add_directory(os.path.join(os.path.dirname(LIBRARY), "module_utils"))
    data = wrapper("spore_custom_utils", os.path.join(LIBRARY, "spore_custom_utils.py"), {})
    assert ansiballz.custom_module_utils(ansiballz.parse(data)) == ["ansible/module_utils/spore_custom.py"]
    ping = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {}))
    assert ansiballz.custom_module_utils(ping) == []


def test_custom_module_utils_are_kept_for_the_run(tmp_path, monkeypatch):
    ping = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {}))
    monkeypatch.setattr(ansiballz, "_CUSTOM", {})
    assert ansiballz.custom_module_utils(ping, str(tmp_path)) == []
    cached = tmp_path / ("module_utils-%s.json" % ping.digest)
    assert json.loads(cached.read_text()) == []
    assert cached.stat().st_mode & 0o777 == 0o600
    # Another worker process (nothing remembered in memory) reads the file.
    monkeypatch.setattr(ansiballz, "_CUSTOM", {})
    cached.write_text('["ansible/module_utils/from_the_cache.py"]')
    assert ansiballz.custom_module_utils(ping, str(tmp_path)) == ["ansible/module_utils/from_the_cache.py"]
    # What is not a list of names is worked out again.
    monkeypatch.setattr(ansiballz, "_CUSTOM", {})
    cached.write_text('{"broken": 1')
    assert ansiballz.custom_module_utils(ping, str(tmp_path)) == []
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]


# --------------------------------------------------------- target (here)

def run(payload, digest=None, **kw):
    kw.setdefault("env", {})
    kw.setdefault("cwd", None)
    return target.run_module(digest or payload.digest, payload.zip_data, payload.fqn, payload.name, payload.params,
                             **kw)


def test_run_module_in_process_and_state_put_back(tmp_path):
    payload = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {"data": "hello"}))
    before_env, before_cwd, before_argv = dict(os.environ), os.getcwd(), list(sys.argv)
    result = run(payload, env={"SPORE_UNIT_VAR": "1"}, cwd=str(tmp_path))
    assert result["rc"] == 0, result
    assert json.loads(result["stdout"])["ping"] == "hello"
    assert result["forked"] is False
    assert dict(os.environ) == before_env and os.getcwd() == before_cwd and sys.argv == before_argv
    # Held now: the next call needs no payload.
    assert target.run_module(payload.digest, None, payload.fqn, payload.name, payload.params, {}, None)["rc"] == 0
    assert target.run_module("0" * 64, None, payload.fqn, payload.name, payload.params, {}, None) == {
        "need_payload": True}


def test_failing_module_gives_its_exit_status():
    payload = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {"data": "crash"}))
    result = run(payload)
    # ping raises: a traceback on stderr and status 1, as from a process.
    assert result["rc"] == 1
    assert result["stdout"] == b""
    assert b"Exception: boom" in result["stderr"]


def test_isolated_run_in_a_new_interpreter():
    payload = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {"data": "apart"}))
    result = run(payload, isolation="fork")
    assert result["forked"] is True and result["rc"] == 0, result
    assert json.loads(result["stdout"])["ping"] == "apart"


def test_payload_temp_dir_is_removed():
    payload = ansiballz.parse(wrapper("ping", os.path.join(MODULES, "ping.py"), {}))
    before = set(os.listdir(tempfile.gettempdir()))
    run(payload)
    assert {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("ansible_ping_payload_")} == set()


def test_run_command_spawns_without_its_preexec_hook(monkeypatch):
    seen = []
    real = target._spawn_arguments

    def recording(kwargs):
        seen.append((kwargs, real(kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(target, "_spawn_arguments", recording)
    payload = ansiballz.parse(wrapper("command", os.path.join(MODULES, "command.py"), {"_raw_params": "echo spore"}))
    result = run(payload)
    assert result["rc"] == 0 and json.loads(result["stdout"])["stdout"] == "spore", result
    given, used = seen[0]
    # The hook is the one this Ansible's run_command makes, and Popen runs
    # without it (so it can vfork).
    assert given["preexec_fn"].__qualname__ == target._RUN_COMMAND_PREEXEC
    assert used["preexec_fn"] is None and "umask" not in used


def _module(monkeypatch, cls=None):
    from ansible.module_utils import basic
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": {}}).encode())
    monkeypatch.setattr(basic, "subprocess", target._SUBPROCESS_FOR_MODULES)
    return (cls or basic.AnsibleModule)(argument_spec={})


def test_run_command_umask_goes_to_popen(monkeypatch):
    module = _module(monkeypatch)
    rc, out, err = module.run_command(["sh", "-c", "umask"], umask=0o027)
    assert (rc, out.strip()) == (0, "0027")


def test_a_module_with_its_own_signal_hook_keeps_it(monkeypatch, tmp_path):
    from ansible.module_utils import basic
    marker = tmp_path / "hook-ran"

    class Mine(basic.AnsibleModule):
        def _restore_signal_handlers(self):
            marker.write_text("yes")

    module = _module(monkeypatch, Mine)
    rc, out, err = module.run_command(["sh", "-c", "umask"], umask=0o077)
    assert (rc, out.strip()) == (0, "0077")
    assert marker.read_text() == "yes"


def test_poll_answers_twice_alike(monkeypatch):
    """run_command's two poll()s in a row: an exit between them must not
    make the second one differ (else it waits a second on no pipes)."""
    import subprocess
    import time
    proc = target._RunCommandProcess(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert proc.poll() is None
        proc.stdin.close()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert proc.poll() is None
        time.sleep(0.06)
        assert proc.poll() == 0
    finally:
        proc.wait()


# ----------------------------------------- temporary files in the worker

@pytest.mark.parametrize("start, mode, end", [
    (0o600, "u+x", 0o700), (0o644, "a+x", 0o755), (0o777, "go-w", 0o755), (0o640, "u=rwx,g=rx", 0o750),
    (0o600, "0755", 0o755), (0o700, "o+r", 0o704),
])
def test_chmod_modes(tmp_path, start, mode, end):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, start)
    assert target.chmod([str(path)], mode) == {"rc": 0, "stdout": "", "stderr": ""}
    assert os.stat(path).st_mode & 0o7777 == end


def test_chmod_errors_as_the_command_reports_them(tmp_path):
    result = target.chmod([str(tmp_path / "missing")], "u+x")
    assert result["rc"] == 1 and "cannot change permissions" in result["stderr"]
    assert target.chmod([str(tmp_path)], "u+q")["rc"] == 1


def test_make_tmp_expands_like_the_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SPORE_UNIT_SUB", "sub")
    path = target.make_tmp("~/$SPORE_UNIT_SUB/tmp", "ansible-tmp-1")
    assert path == str(tmp_path / "sub" / "tmp" / "ansible-tmp-1")
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "sub" / "tmp").st_mode & 0o777 == 0o700
    # Unprivileged become: only a system directory will do.
    system = target.make_tmp(str(tmp_path / "private"), "ansible-tmp-2", [str(tmp_path / "sys")])
    assert system == str(tmp_path / "sys" / "ansible-tmp-2")
    assert target.expand_user("~") == str(tmp_path)
    assert target.expand_user("~spore-no-such-user") == "~spore-no-such-user"
