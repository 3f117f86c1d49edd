#!/usr/bin/python3
"""Python binding benchmarks (scripts/bench bindings): the no-op round trip
and pipelined calls from Python, under the same metric names as the C
figures of core_bench so that report.py can pair them.

  py_call_rtt         ctx.call("sys.ping"), blocking (us)
  py_pipelined_async  N ctx.call_async("sys.ping"), then result() of all (calls/s)

Environment: PYTHONPATH (the build's python/), SPORE_AGENT_PATH,
BENCH_QUICK=1 for small counts. Output: "sample <metric> <unit> <v>...".
"""
import os
import sys
import time

import spore

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def runs(n):
    return 3 if QUICK else n


def iters(n):
    return max(1, n // 10) if QUICK else n


def emit(metric, unit, values):
    print("sample %s %s %s" % (metric, unit, " ".join("%.6g" % v for v in values)))
    sys.stdout.flush()


def main():
    with spore.Router(forward_logs=False, log_level=spore.WARNING) as r:
        values = []
        for _ in range(runs(9)):
            ctx = r.local()
            for _ in range(100):
                ctx.call("sys.ping")
            n = iters(3000)
            t0 = time.monotonic()
            for _ in range(n):
                ctx.call("sys.ping")
            values.append((time.monotonic() - t0) / n * 1e6)
            ctx.shutdown()
        emit("py_call_rtt", "us", values)

        ctx = r.local()
        values = []
        for _ in range(runs(7)):
            n = iters(20000)
            t0 = time.monotonic()
            futures = [ctx.call_async("sys.ping") for _ in range(n)]
            for f in futures:
                f.result()
            values.append(n / (time.monotonic() - t0))
        emit("py_pipelined_async", "calls/s", values)


if __name__ == "__main__":
    main()
