"""The run's router: one process per `ansible-playbook`, started by the
strategy, that holds every connection and warm worker of the run.

Ansible forks a worker process per task; each attaches to this router
over a Unix socket in a private 0700 directory and reuses its contexts,
one per (host, account, method, options). The daemon lives in its own
session, so a Ctrl-C at the terminal reaches Ansible and not the
connections, and it ends when its stdin reaches end of file: when
`ansible-playbook` exits, however it exits (even SIGKILL), the pipe closes
and the daemon shuts every context down.

Run as `python3 -m spore.ansible.daemon SOCKET_PATH VERBOSITY [LOG_PATH]`;
it prints one line, "ready", once it listens. Its records go to stderr and,
with LOG_PATH (Ansible's log_path), to that file too, at the same level.
"""
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

#: The top-level name the target-side code is served under.
TARGET_MODULE = "spore_ansible_target"
#: How Ansible's worker processes find the run's router.
SOCKET_ENV = "SPORE_ANSIBLE_ROUTER"


def _target_source() -> bytes:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "target.py"), "rb") as f:
        return f.read()


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "[spore %s] %s" % (getattr(record, "spore_context", record.name), record.getMessage())


class _FileFormatter(_StderrFormatter):
    """Lines shaped like those Ansible writes to its log_path."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return "%s,%03d p=%d u=spore | %s" % (stamp, int(record.msecs), os.getpid(), super().format(record))


def serve(socket_path: str, verbosity: int, log_path: Optional[str] = None) -> int:
    """Listens at socket_path until stdin closes or SIGTERM comes."""
    import spore

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    # At -vvv the connection steps of spore are shown (and ssh's own
    # debug lines with spore_ssh_debug_level), as Ansible's ssh plugin
    # shows its own; below that only warnings and errors.
    level = logging.DEBUG if verbosity >= 3 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    logger = logging.getLogger("spore")
    logger.addHandler(handler)
    if log_path:
        # As Ansible's own log: what this verbosity shows, nothing more.
        try:
            file_handler = logging.FileHandler(log_path)
        except OSError as e:
            sys.stderr.write("[spore] cannot write log_path %s: %s\n" % (log_path, e))
        else:
            file_handler.setFormatter(_FileFormatter())
            logger.addHandler(file_handler)
    logger.setLevel(level)
    logger.propagate = False
    router = spore.Router(log_level=level)
    try:
        source = _target_source()
        router.add_module(TARGET_MODULE, source)
        router.listen(socket_path)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while not stop:
            try:
                ready, _, _ = select.select([sys.stdin.fileno()], [], [], 0.5)
            except InterruptedError:
                continue
            if ready and not os.read(sys.stdin.fileno(), 4096):
                break
    finally:
        # The run is over and Ansible has printed its recap: the contexts'
        # goodbyes are not news, only a failure to end would be.
        logger.setLevel(logging.ERROR)
        try:
            router.set_log_level(logging.ERROR)
        except spore.Error:
            pass
        router.close()
        handler.flush()
        # Also when ansible-playbook was killed and could not clean up.
        directory = os.path.dirname(os.path.abspath(socket_path))
        if os.path.basename(directory).startswith("spore-ansible-"):
            shutil.rmtree(directory, ignore_errors=True)
    return 0


class Daemon:
    """The strategy's handle on the run's router process."""

    def __init__(self, verbosity: int = 0, log_path: Optional[str] = None) -> None:
        base = os.environ.get("XDG_RUNTIME_DIR")
        if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
            base = None
        self.directory = tempfile.mkdtemp(prefix="spore-ansible-", dir=base)  # 0700
        self.socket_path = os.path.join(self.directory, "router.sock")
        env = dict(os.environ)
        env.pop(SOCKET_ENV, None)
        self._released = False
        self._process = subprocess.Popen(
            [sys.executable, "-m", "spore.ansible.daemon", self.socket_path, str(verbosity)] +
            ([log_path] if log_path else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True, cwd="/")
        line = self._process.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError("spore: the run's router did not start (see the messages above)")
        os.environ[SOCKET_ENV] = self.socket_path

    def release_lifeline(self) -> None:
        """In a process forked from the one that started the daemon (a
        task's worker): lets go of the daemon's stdin, so that the daemon
        sees end of file as soon as ansible-playbook itself is gone. The
        Popen object stays: dropping it here would have it poll for a
        process that is not this one's child."""
        process = self._process
        if process is not None and not self._released:
            self._released = True
            for stream in (process.stdin, process.stdout):
                try:
                    os.close(stream.fileno())
                except (OSError, ValueError):
                    pass

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """Ends the daemon (which shuts every context down) and waits for it."""
        process: Optional[subprocess.Popen] = self._process
        if process is not None:
            self._process = None
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.poll() is None:
                process.kill()
                process.wait()
        if os.environ.get(SOCKET_ENV) == self.socket_path:
            del os.environ[SOCKET_ENV]
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv) -> int:
    if len(argv) not in (3, 4):
        sys.stderr.write("usage: python3 -m spore.ansible.daemon SOCKET_PATH VERBOSITY [LOG_PATH]\n")
        return 2
    return serve(argv[1], int(argv[2]), argv[3] if len(argv) == 4 else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
