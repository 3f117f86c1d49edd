#!/usr/bin/python3
"""Mitogen baseline of the spore "transports" benchmarks (scripts/bench transports).

Measures, with Python Mitogen (Debian's python3-mitogen) against the same
throw-away sshd and account as tests/bench/transports_bench.c, under the
same metric names:

  ssh_connect_first_call  router.ssh() + a call of a no-op function (ms)
  ssh_call_rtt            context.call() of a no-op over ssh (us)
  sudo_via_ssh_connect    router.sudo(via=ssh context) + a call (ms)
  ssh_sudo_call_rtt       context.call() of a no-op over ssh -> sudo (us)

Environment: BENCH_SSH_PORT, BENCH_SSH_USER, BENCH_SSH_KEY,
BENCH_KNOWN_HOSTS; BENCH_QUICK=1 makes every count small.
Output: "sample <metric> <unit> <v>..." and "info <metric> <key> <value>".
"""
import os
import sys
import time

import mitogen.master
import mitogen.utils

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def noop():
    return None


def runs(n):
    return 3 if QUICK else n


def iters(n):
    return max(1, n // 10) if QUICK else n


def emit(metric, unit, values):
    print("sample %s %s %s" % (metric, unit, " ".join("%.6g" % v for v in values)))
    sys.stdout.flush()


def main():
    port = int(os.environ["BENCH_SSH_PORT"])
    user = os.environ["BENCH_SSH_USER"]
    key = os.environ["BENCH_SSH_KEY"]
    known = os.environ["BENCH_KNOWN_HOSTS"]
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        def ssh():
            return router.ssh(hostname="127.0.0.1", port=port, username=user, identity_file=key,
                              check_host_keys="enforce", python_path="/usr/bin/python3",
                              ssh_args=["-F", "/dev/null", "-o", "UserKnownHostsFile=" + known])
        warm = ssh()
        warm.call(noop)
        warm.shutdown(wait=True)

        values = []
        for _ in range(runs(5)):
            t0 = time.monotonic()
            ctx = ssh()
            ctx.call(noop)
            values.append((time.monotonic() - t0) * 1e3)
            ctx.shutdown(wait=True)
        emit("ssh_connect_first_call", "ms", values)

        ctx = ssh()
        ctx.call(noop)
        values = []
        for _ in range(runs(5)):
            n = iters(500)
            t0 = time.monotonic()
            for _ in range(n):
                ctx.call(noop)
            values.append((time.monotonic() - t0) / n * 1e6)
        emit("ssh_call_rtt", "us", values)

        sudo_values = []
        for i in range(runs(5) + 1):
            t0 = time.monotonic()
            s = router.sudo(via=ctx, python_path="/usr/bin/python3")
            s.call(noop)
            if i:
                sudo_values.append((time.monotonic() - t0) * 1e3)
            s.shutdown(wait=True)
        emit("sudo_via_ssh_connect", "ms", sudo_values)

        s = router.sudo(via=ctx, python_path="/usr/bin/python3")
        s.call(noop)
        values = []
        for _ in range(runs(5)):
            n = iters(500)
            t0 = time.monotonic()
            for _ in range(n):
                s.call(noop)
            values.append((time.monotonic() - t0) / n * 1e6)
        emit("ssh_sudo_call_rtt", "us", values)
        print("info mitogen version %s" % ".".join(str(x) for x in mitogen.__version__))
    finally:
        broker.shutdown()
        broker.join()


if __name__ == "__main__":
    main()
