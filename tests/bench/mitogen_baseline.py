#!/usr/bin/python3
"""Mitogen baseline of the spore "core" benchmarks (run by scripts/bench core).

Measures, with Python Mitogen on this machine, the same things as
tests/bench/core_bench.c measures with spore, under the same metric names:

  connect_first_call   router.local() + a call of a no-op function (ms)
  call_rtt             context.call() of a no-op function (us)
  pipelined_async      many context.call_async(), then get() of all (calls/s)
  echo_1mib            a call whose function returns its 1 MiB bytes
                       argument; MB/s = 1 MiB / (round trip / 2), MB = 10^6 B
  contexts_concurrent  NOT measured with 100 contexts: 10 router.local() in
                       sequence, the total multiplied by 10 (extrapolated)
  agent_rss            VmRSS of an idle Mitogen child after a few calls (MiB)
  master_kib_per_child VmRSS growth of the master per idle router.local()
                       child, with 100 children at once (KiB; spore's figure
                       holds 1,000, which Mitogen's ~20 MiB children would
                       make ~20 GiB)

Output is one line each, for scripts/bench to parse:
  sample <metric> <unit> <v1> <v2> ...
  info <metric> <key> <value>
Needs python3 stdlib and mitogen only (Debian: python3-mitogen).
Environment: BENCH_QUICK=1 makes every count small.
"""
import os
import sys
import time

import mitogen.core
import mitogen.master
import mitogen.utils

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
MIB = 1024 * 1024


def noop():
    return None


def echo(data):
    return data


def getpid():
    return os.getpid()


def runs(n):
    return 3 if QUICK else n


def iters(n):
    return max(1, n // 10) if QUICK else n


def emit(metric, unit, values):
    print("sample %s %s %s" % (metric, unit, " ".join("%.6g" % v for v in values)))
    sys.stdout.flush()


def info(metric, key, value):
    print("info %s %s %s" % (metric, key, value))
    sys.stdout.flush()


def vmrss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def bench_connect(router):
    values = []
    for _ in range(runs(7)):
        t0 = time.monotonic()
        ctx = router.local()
        ctx.call(noop)
        values.append((time.monotonic() - t0) * 1e3)
        ctx.shutdown(wait=True)
    emit("connect_first_call", "ms", values)


def bench_call_rtt(ctx):
    k = iters(500)
    for _ in range(50):
        ctx.call(noop)
    values = []
    for _ in range(runs(7)):
        t0 = time.monotonic()
        for _ in range(k):
            ctx.call(noop)
        values.append((time.monotonic() - t0) / k * 1e6)
    emit("call_rtt", "us", values)


def bench_pipelined(ctx):
    k = iters(3000)
    values = []
    for _ in range(runs(5)):
        t0 = time.monotonic()
        recvs = [ctx.call_async(noop) for _ in range(k)]
        for r in recvs:
            r.get().unpickle()
        values.append(k / (time.monotonic() - t0))
    emit("pipelined_async", "calls/s", values)


def bench_echo(ctx):
    data = bytes(range(256)) * (MIB // 256)
    got = ctx.call(echo, data)
    if got != data:
        raise SystemExit("mitogen_baseline: echo returned different bytes")
    k = iters(10)
    values = []
    for _ in range(runs(5)):
        t0 = time.monotonic()
        for _ in range(k):
            ctx.call(echo, data)
        rtt = (time.monotonic() - t0) / k
        values.append(MIB / (rtt / 2) / 1e6)
    emit("echo_1mib", "MB/s", values)


def bench_contexts(router):
    n = 10
    values = []
    for _ in range(runs(3)):
        t0 = time.monotonic()
        ctxs = [router.local() for _ in range(n)]
        values.append((time.monotonic() - t0) * 1e3 * (100 / n))
        for c in ctxs:
            c.shutdown(wait=True)
    info("contexts_concurrent", "extrapolated", "%d sequential router.local() x %d" % (n, 100 // n))
    emit("contexts_concurrent", "ms", values)


def bench_rss(router):
    values = []
    for _ in range(runs(3)):
        ctx = router.local()
        for _ in range(10):
            ctx.call(noop)
        ctx.call(echo, b"abc")
        pid = ctx.call(getpid)
        time.sleep(0.02)
        values.append(vmrss_kib(pid) / 1024.0)
        ctx.shutdown(wait=True)
    emit("agent_rss", "MiB", values)


def bench_children(router):
    n = 20 if QUICK else 100
    values = []
    for _ in range(1 if QUICK else 2):
        before = vmrss_kib(os.getpid())
        ctxs = []
        for _ in range(n):
            ctx = router.local()
            ctx.call(noop)
            ctxs.append(ctx)
        values.append((vmrss_kib(os.getpid()) - before) / float(n))
        for c in ctxs:
            c.shutdown(wait=True)
    info("master_kib_per_child", "children", n)
    emit("master_kib_per_child", "KiB", values)


def main(router):
    print("info mitogen version %s" % ".".join(str(x) for x in mitogen.__version__))
    print("info mitogen python %s" % sys.version.split()[0])
    # Warm up: the first context pays for importing and serving modules.
    warm = router.local()
    warm.call(noop)
    warm.shutdown(wait=True)

    bench_connect(router)
    ctx = router.local()
    bench_call_rtt(ctx)
    bench_pipelined(ctx)
    bench_echo(ctx)
    ctx.shutdown(wait=True)
    bench_contexts(router)
    bench_rss(router)
    bench_children(router)


if __name__ == "__main__":
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        main(router)
    finally:
        broker.shutdown()
        broker.join()
