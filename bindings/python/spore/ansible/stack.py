"""The chain of spore contexts a task runs in, worked out from Ansible's
own view of the connection: the options Ansible resolved for its `ssh` or
`local` plugin, the become plugin's options, `ansible_python_interpreter`
and the `spore_via` variable.

A hop is (method, options); the run's router opens each hop through the
previous one and reuses a live context for the same (method, options, via),
so every task of a (host, account) lands in the same warm context.
"""
import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

Hop = Tuple[str, Dict[str, Any]]

#: ssh options that make OpenSSH keep a master process after the run:
#: spore holds the connection itself, and nothing may outlive the run.
_CONTROL_OPTIONS = ("controlmaster", "controlpersist", "controlpath")

#: Interpreter settings that mean "find one" (Ansible's discovery modes).
_DISCOVERY = ("auto", "auto_legacy", "auto_silent", "auto_legacy_silent")


class StackError(Exception):
    """A setting spore cannot honour: the task fails with this message."""


def _split(value: Any) -> List[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return shlex.split(str(value))


def ssh_arguments(*values: Any) -> List[str]:
    """ssh_args, ssh_common_args and ssh_extra_args as one argv list,
    without the ControlMaster/ControlPersist/ControlPath options."""
    words: List[str] = []
    for value in values:
        words.extend(_split(value))
    out: List[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-o" and i + 1 < len(words):
            if words[i + 1].split("=", 1)[0].split()[0].lower() in _CONTROL_OPTIONS:
                i += 2
                continue
            out.extend(words[i:i + 2])
            i += 2
            continue
        if word.startswith("-o") and len(word) > 2:
            if word[2:].split("=", 1)[0].split()[0].lower() in _CONTROL_OPTIONS:
                i += 1
                continue
        out.append(word)
        i += 1
    return out


def python_path(interpreter: Optional[str]) -> Optional[str]:
    """The python_path option for `ansible_python_interpreter`: the value
    itself (spore splits it with its restrictive shell-like syntax, so
    `/usr/bin/env python3` works and `$(...)` is refused), or None for the
    discovery modes, which spore's default search list stands in for."""
    if interpreter is None:
        return None
    text = str(interpreter).strip()
    if not text or text in _DISCOVERY:
        return None
    return text


def ssh_hop(get_option, play_context, debug_level: int = 0) -> Hop:
    """The ssh hop from the options Ansible resolved for its ssh plugin."""
    host = get_option("host") or play_context.remote_addr
    if not host:
        raise StackError("no host to connect to (ansible_host is empty)")
    options: Dict[str, Any] = {"hostname": str(host), "backend": "openssh"}
    port = get_option("port")
    if port:
        options["port"] = int(port)
    user = get_option("remote_user")
    if user:
        options["username"] = str(user)
    password = get_option("password")
    if password:
        options["password"] = str(password)
    key = get_option("private_key_file")
    if key:
        options["identity_file"] = os.path.expanduser(str(key))
        # As Ansible's ssh plugin: the key given is offered, others still may be.
        options["identities_only"] = False
    args = ssh_arguments(get_option("ssh_args"), get_option("ssh_common_args"), get_option("ssh_extra_args"))
    if args:
        options["ssh_args"] = args
    exe = get_option("ssh_executable")
    if exe and exe != "ssh":
        options["ssh_path"] = str(exe)
    timeout = get_option("timeout")
    if timeout:
        # Ansible's timeout is the TCP connect; spore's covers the whole
        # login and agent start, which takes longer on a cold target.
        options["connect_timeout"] = max(int(timeout), 10) * 1000 + 20000
    if not get_option("host_key_checking"):
        options["check_host_keys"] = "ignore"
    if debug_level:
        options["ssh_debug_level"] = max(0, min(3, int(debug_level)))
    return "ssh", options


#: sudo flags spore's sudo method has an option for; the rest are refused.
_SUDO_FLAGS = {
    "-H": ("set_home", True), "--set-home": ("set_home", True),
    "-E": ("preserve_env", True), "--preserve-env": ("preserve_env", True),
    "-i": ("login", True), "--login": ("login", True),
}
#: Flags Ansible adds for its own prompt handling, which spore does itself.
_SUDO_IGNORED = ("-S", "--stdin", "-n", "--non-interactive", "-k", "--reset-timestamp")


def become_flags(method: str, flags: Optional[str]) -> Dict[str, Any]:
    """The method options for become_flags, or StackError naming a flag
    spore cannot honour."""
    words = _split(flags)
    options: Dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if method == "sudo":
            if word in _SUDO_IGNORED:
                pass
            elif word in _SUDO_FLAGS:
                key, value = _SUDO_FLAGS[word]
                options[key] = value
            elif word in ("-r", "--role", "-t", "--type") and i + 1 < len(words):
                options["selinux_role" if word in ("-r", "--role") else "selinux_type"] = words[i + 1]
                i += 1
            elif word.startswith("--role=") or word.startswith("--type="):
                key, value = word[2:].split("=", 1)
                options["selinux_" + key] = value
            else:
                raise StackError("become_flags: spore's sudo cannot honour %r (it knows -H, -E, -i, -r, -t, "
                                 "and ignores -S, -n, -k)" % word)
        elif method == "su":
            if word not in ("-m", "-p", "--preserve-environment"):
                raise StackError("become_flags: spore's su cannot honour %r (it knows none; -m and -p are "
                                 "accepted as su keeps the environment anyway)" % word)
        elif method == "doas":
            if word not in ("-n",):
                raise StackError("become_flags: spore's doas cannot honour %r (it ignores -n)" % word)
        i += 1
    return options


def become_hop(become, play_context) -> Hop:
    """The sudo/su/doas hop for Ansible's become plugin and its options
    (templated by Ansible: become_user may come from a variable)."""
    method = become.name.split(".")[-1]
    if method not in ("sudo", "su", "doas"):
        raise StackError("become method %r is not supported by spore (sudo, su and doas are); run this "
                         "task with another strategy" % become.name)

    def option(name):
        try:
            return become.get_option(name, playcontext=play_context)
        except KeyError:
            return None

    options: Dict[str, Any] = {"username": str(option("become_user") or "root")}
    password = option("become_pass")
    if password:
        options["password"] = str(password)
    exe = option("become_exe")
    if exe and exe != method:
        options["%s_path" % method] = str(exe)
    options.update(become_flags(method, option("become_flags")))
    return method, options


def parse_via(spec: str) -> Tuple[Optional[str], Optional[str], str]:
    """`[become_method:][become_user@]inventory_host` as its three parts."""
    text = str(spec).strip()
    method = user = None
    if ":" in text:
        method, text = text.split(":", 1)
        method = method.strip() or None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        user = user.strip() or None
    host = text.strip()
    if not host:
        raise StackError("spore_via %r names no inventory host" % spec)
    if method is not None and method not in ("sudo", "su", "doas"):
        raise StackError("spore_via %r: become method %r is not supported (sudo, su, doas)" % (spec, method))
    if method is not None and user is None:
        user = "root"
    return method, user, host
