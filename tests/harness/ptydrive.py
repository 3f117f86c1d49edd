#!/usr/bin/env python3
"""Run a command on a fresh pseudo-terminal and answer its prompts.

    ptydrive.py [--timeout S] [--delay S] [--user NAME]
                [--expect REGEX --send TEXT]... -- COMMAND [ARG...]

The command runs in a new session with the pty as its controlling terminal
(what sudo's/doas's/su's password readers need: they open /dev/tty).
Everything it writes is copied to our stdout.  The --expect/--send pairs are
handled in order: once REGEX (Python syntax, searched in the output since the
previous match) is seen, wait until the terminal's ECHO flag is off (at most
--delay seconds; password readers turn echo off and flush pending input with
TCSAFLUSH, so typing too early loses the input), then type TEXT followed by
Enter.  --send-raw TEXT types TEXT as is (Python escapes like \\r are decoded).

--user NAME runs the command as that user (root only): setgid/initgroups/
setuid plus HOME/USER/LOGNAME/SHELL, cwd = home; the caller's other
environment variables are kept.

Exit status: the command's (128+N if killed by signal N); 124 on timeout
(the command is killed); 2 on usage errors.
"""
import argparse
import codecs
import errno
import os
import pty
import re
import select
import signal
import sys
import termios
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--user")
    p.add_argument("--expect", action="append", default=[], dest="steps",
                   type=lambda s: ("expect", s))
    p.add_argument("--send", action="append", dest="steps",
                   type=lambda s: ("send", s + "\n"))
    p.add_argument("--send-raw", action="append", dest="steps",
                   type=lambda s: ("send", codecs.decode(s, "unicode_escape")))
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.command and a.command[0] == "--":
        a.command = a.command[1:]
    if not a.command:
        p.error("no command")
    pairs = []
    pending = None
    for kind, val in a.steps:
        if kind == "expect":
            if pending is not None:
                pairs.append((pending, None))
            pending = val
        else:
            pairs.append((pending, val))
            pending = None
    if pending is not None:
        pairs.append((pending, None))
    a.pairs = pairs
    return a


def drop_to(user):
    import pwd
    pw = pwd.getpwnam(user)
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name,
                      SHELL=pw.pw_shell)
    try:
        os.chdir(pw.pw_dir)
    except OSError:
        os.chdir("/")


def echo_off(fd):
    try:
        return not (termios.tcgetattr(fd)[3] & termios.ECHO)
    except termios.error:
        return True


def main():
    a = parse()
    pid, fd = pty.fork()
    if pid == 0:
        try:
            if a.user:
                drop_to(a.user)
            os.execvp(a.command[0], a.command)
        except Exception as e:  # noqa: BLE001
            os.write(2, ("ptydrive: %s: %s\n" % (a.command[0], e)).encode())
        os._exit(127)

    deadline = time.monotonic() + a.timeout
    out = sys.stdout.buffer
    buf = b""
    steps = list(a.pairs)
    send_at = None  # (text, time when --delay runs out)
    timed_out = False

    while True:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if send_at is None and steps and steps[0][0] is not None:
            m = re.search(steps[0][0].encode(), buf)
            if m:
                buf = buf[m.end():]
                if steps[0][1] is None:
                    steps.pop(0)
                    continue
                send_at = (steps[0][1], now + a.delay)
                steps.pop(0)
        elif send_at is None and steps and steps[0][0] is None:
            send_at = (steps[0][1], now)
            steps.pop(0)
        if send_at is not None and (echo_off(fd) or now >= send_at[1]):
            time.sleep(0.05)
            os.write(fd, send_at[0].encode())
            send_at = None
            continue
        wait = min(deadline - now, 0.05 if send_at is not None else 1.0)
        r, _, _ = select.select([fd], [], [], max(wait, 0))
        if not r:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:  # slave closed: command (and its kids) done
                break
            raise
        if not data:
            break
        out.write(data)
        out.flush()
        buf += data

    if timed_out:
        sys.stderr.write("\nptydrive: timeout after %gs; still waiting for %r\n"
                         % (a.timeout, steps[0][0] if steps else "exit"))
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
        return 124
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    if steps and any(s[0] is not None for s in steps):
        sys.stderr.write("\nptydrive: command ended before %r was seen\n" % steps[0][0])
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
