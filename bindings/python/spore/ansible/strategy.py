"""The part every spore strategy adds to Ansible's: the run's router and
the loader hooks, started before the first task of the first play."""
import atexit
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
    global _daemon
    running = _daemon
    if running is not None and os.getpid() != _owner:
        _daemon = None
        running.release_lifeline()


class StrategyMixin:
    """Put in front of one of Ansible's strategy classes."""

    def run(self, iterator, play_context, *args, **kwargs):
        ensure_daemon()
        loaders.install()
        return super().run(iterator, play_context, *args, **kwargs)
