"""The only places spore changes Ansible at run time (docs/ansible.md,
"What spore changes in Ansible").

Two methods of two of Ansible's plugin loader objects are wrapped while a
spore strategy runs:

- `connection_loader.get_with_context`: a connection Ansible makes for
  `ssh` or `local` gets SporeConnection mixed in front of its class. The
  object stays Ansible's (same name, same documented options, resolved by
  Ansible), so nothing else sees a difference. Every other connection type
  (paramiko, network_cli, winrm, ...) is left as it is;
- `action_loader.get_with_context` (which `get` calls): an action whose
  connection is a spore one gets SporeActionMixin mixed in front of its
  class.

It also adds spore's become plugin directory (a doas plugin, which
ansible-core lacks) to the become plugin loader.
"""
import os
import threading
from typing import Any, Dict, Tuple

from ansible.plugins import loader as plugin_loader

from .action import SporeActionMixin
from .connection import SporeConnection

#: Connection plugin names spore runs (short and fully qualified).
HANDLED = frozenset(["ssh", "local", "ansible.builtin.ssh", "ansible.builtin.local",
                     "ansible.legacy.ssh", "ansible.legacy.local"])

_lock = threading.Lock()
_classes: Dict[Tuple[type, type], type] = {}
_installed = False


def _mixed(mixin: type, cls: type) -> type:
    """A subclass of cls with the mixin's attributes, made once per class.

    The mixin's attributes are copied into the subclass rather than the
    mixin being a base: CPython 3.11 refuses to change an object's class
    to one with an extra base ("object layout differs"). A mixin method
    reaches the original class as self._spore_base."""
    key = (mixin, cls)
    with _lock:
        made = _classes.get(key)
        if made is None:
            namespace = {k: v for k, v in vars(mixin).items()
                         if k not in ("__dict__", "__weakref__", "__module__", "__qualname__")}
            namespace.update(_spore_base=cls, _spore_mixin=mixin, __module__=cls.__module__,
                             __doc__=cls.__doc__)
            made = type(cls.__name__, (cls,), namespace)
            _classes[key] = made
        return made


def is_mixed(obj: Any, mixin: type) -> bool:
    return getattr(type(obj), "_spore_mixin", None) is mixin


def _connection_get_with_context(original):
    def get_with_context(name, *args, **kwargs):
        result = original(name, *args, **kwargs)
        obj = result.object
        if obj is not None and name in HANDLED and not is_mixed(obj, SporeConnection):
            obj.__class__ = _mixed(SporeConnection, type(obj))
            obj.spore_init()
        return result
    return get_with_context


def _action_get_with_context(original):
    def get_with_context(name, *args, **kwargs):
        result = original(name, *args, **kwargs)
        obj = result.object
        if obj is not None and is_mixed(getattr(obj, "_connection", None), SporeConnection) \
                and not is_mixed(obj, SporeActionMixin):
            obj.__class__ = _mixed(SporeActionMixin, type(obj))
        return result
    return get_with_context


def install() -> None:
    """Wraps the two loader methods, once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    # ansible-core has no doas become plugin: spore brings one (a plugin
    # directory added, nothing replaced; a collection's doas still wins
    # when named by its full name).
    plugin_loader.become_loader.add_directory(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "become"))
    conn: Any = plugin_loader.connection_loader
    action: Any = plugin_loader.action_loader
    conn.get_with_context = _connection_get_with_context(conn.get_with_context)
    action.get_with_context = _action_get_with_context(action.get_with_context)
