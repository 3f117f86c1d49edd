"""The part every spore strategy adds to Ansible's: the run's router and
the loader hooks, started before the first task of the first play."""
import atexit
import gc
import os
import threading
from typing import Optional

from ansible.utils.display import Display

from . import loaders
from .daemon import Daemon

display = Display()

_lock = threading.Lock()
_daemon: Optional[Daemon] = None
_owner = 0  # the pid that started it (forked workers inherit the handle)
_inherited: Optional[Daemon] = None  # in a worker: its parent's handle, kept (see release_inherited)


def _stop() -> None:
    global _daemon
    if os.getpid() != _owner:
        return
    with _lock:
        running, _daemon = _daemon, None
    if running is not None:
        running.stop()


def ensure_daemon() -> Daemon:
    """The run's router, started once per ansible-playbook process and
    stopped when it exits."""
    global _daemon, _owner
    with _lock:
        if _daemon is None:
            _owner = os.getpid()
            from ansible import constants as C
            _daemon = Daemon(verbosity=display.verbosity, log_path=C.DEFAULT_LOG_PATH or None)
            atexit.register(_stop)
            display.vvv("spore: the run's router is pid %d at %s" % (_daemon.pid, _daemon.socket_path))
        return _daemon


def release_inherited() -> None:
    """Called in Ansible's forked worker processes: the daemon's lifeline
    belongs to ansible-playbook alone (see Daemon.release_lifeline)."""
    global _daemon, _inherited
    running = _daemon
    if running is not None and os.getpid() != _owner:
        _daemon = None
        # Kept, not dropped: the Popen inside would poll, on its way out, a
        # process that is not this worker's child.
        _inherited = running
        running.release_lifeline()


def warm_up() -> None:
    """Does here, once per play, what each of Ansible's forked task workers
    would otherwise do for itself: load zipfile's codec for names, work out
    where the standard library lies (sysconfig reads a large module to
    say), and keep the garbage collector off the parent's objects."""
    import encodings.cp437  # noqa: F401
    from spore import _remote
    _remote._stdlib_dirs()
    _remote._site_dirs()
    # What the play has loaded so far (inventory, variables, tasks, plugins)
    # out of the garbage collector's sight: a worker's collections would
    # otherwise write to every page of it, copying the page from the
    # parent each time, for objects that outlive the worker anyway. Later
    # objects are collected as usual.
    gc.collect()
    gc.freeze()


class StrategyMixin:
    """Put in front of one of Ansible's strategy classes."""

    def run(self, iterator, play_context, *args, **kwargs):
        ensure_daemon()
        loaders.install()
        warm_up()
        return super().run(iterator, play_context, *args, **kwargs)
