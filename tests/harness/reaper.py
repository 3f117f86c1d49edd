#!/usr/bin/env python3
"""Run a command as a child subreaper and clean up its whole process tree.

    reaper.py PIDFILE -- COMMAND [ARG...]

Writes its own pid to PIDFILE, marks itself PR_SET_CHILD_SUBREAPER (so
processes orphaned below it are re-parented to it, not to pid 1: they get
reaped at once and can still be found and killed), runs COMMAND and reaps
every descendant.  When COMMAND exits, or on SIGTERM/SIGINT/SIGHUP (which are
passed on to COMMAND), every remaining descendant gets SIGTERM and, one
second later, SIGKILL; reaper.py exits once it has no children left, with
COMMAND's exit status (128+N if killed by signal N).

sshd.sh runs "sshd -D" under it: sshd's per-connection processes call
setsid() and, when a connection ends, some of them exit before their own
children are reaped; without a subreaper those end up as zombies of pid 1.
"""
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ... ; comm may contain spaces and parens
        fields = stat[stat.rindex(b")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def descendants(root):
    kids = children_map()
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write("usage: reaper.py PIDFILE -- COMMAND [ARG...]\n")
        return 2
    pidfile, cmd = sys.argv[1], sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write("reaper.py: prctl(PR_SET_CHILD_SUBREAPER) failed\n")
    with open(pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(pidfile + ".tmp", pidfile)

    state = {"stop": False}
    main_pid = os.fork()
    if main_pid == 0:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            sys.stderr.write("reaper.py: %s: %s\n" % (cmd[0], e))
        os._exit(127)

    def on_signal(signum, _frame):
        state["stop"] = True
        try:
            os.kill(main_pid, signal.SIGTERM)
        except OSError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    status = None
    # Phase 1: reap until the main command exits (or we are told to stop).
    while status is None:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        if pid == main_pid:
            status = st

    # Phase 2: kill what is left below us and reap it.
    term_sent_at = None
    killed = False
    while True:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
                break
            if pid == 0:
                break
            if pid == main_pid:
                status = st
        if pid == -1:
            break
        rest = descendants(os.getpid())
        now = time.monotonic()
        if term_sent_at is None:
            sig, term_sent_at = signal.SIGTERM, now
        elif now - term_sent_at > 1.0:
            sig, killed = signal.SIGKILL, True
        else:
            sig = None
        if sig is not None:
            for p in rest:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
        time.sleep(0.05 if not killed else 0.02)

    try:
        if open(pidfile).read().strip() == str(os.getpid()):
            os.unlink(pidfile)
    except OSError:
        pass
    if status is None:
        return 0
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
