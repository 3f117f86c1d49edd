#!/usr/bin/python3
"""Mitogen baseline of the remote Python benchmarks (scripts/bench python):
the metrics of tests/bench/remote_python_bench.py, measured with Debian's
python3-mitogen on this machine, in the same run, with the same function
module (benchmods.entry, importing 10 modules of the caller's, shipped by
Mitogen's importer as spore ships them).

Output: "sample <metric> <unit> <v>..." and "info <metric> <key> <value>".
Environment: BENCH_PYTHON (the target interpreter), BENCH_QUICK=1.
"""
import os
import sys
import tempfile
import time

import mitogen.core
import mitogen.master
import mitogen.utils

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
PYTHON = os.environ.get("BENCH_PYTHON", "/usr/bin/python3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remote_python_bench import emit, iters, make_modules, runs  # noqa: E402


def main(router):
    from benchmods import entry
    values = []
    for _ in range(runs(9)):
        t0 = time.perf_counter()
        ctx = router.local(python_path=PYTHON)
        ctx.call(entry.noop)
        values.append((time.perf_counter() - t0) * 1e3)
        ctx.shutdown(wait=True)
    emit("py_connect_first_call", "ms", values)

    ctx = router.local(python_path=PYTHON)
    ctx.call(entry.noop)
    values = []
    n = iters(1000)
    for _ in range(runs(7)):
        t0 = time.perf_counter()
        for _ in range(n):
            ctx.call(entry.noop)
        values.append((time.perf_counter() - t0) / n * 1e6)
    emit("py_call_rtt", "us", values)

    values = []
    n = iters(10000)
    for _ in range(runs(5)):
        t0 = time.perf_counter()
        recvs = [ctx.call_async(entry.noop) for _ in range(n)]
        for recv in recvs:
            recv.get().unpickle()
        values.append(n / (time.perf_counter() - t0))
    emit("py_pipelined", "calls/s", values)

    data = mitogen.core.Blob(os.urandom(16 << 20))
    values = []
    for _ in range(runs(5)):
        t0 = time.perf_counter()
        back = ctx.call(entry.echo, data)
        dt = time.perf_counter() - t0
        assert back == data
        values.append(2 * len(data) / dt / 1e6)
    emit("py_echo_16mib", "MB/s", values)
    print("info py_module_bytes_hop skipped Mitogen has no counter of module bytes sent")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="mitogen-bench-py.") as root:
        make_modules(root)
        sys.path.insert(0, root)
        mitogen.utils.run_with_router(main)
