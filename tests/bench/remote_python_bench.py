#!/usr/bin/python3
"""Remote Python benchmarks (scripts/bench python): the caller's own
functions run in contexts, with its modules shipped on demand. The same
metric names are measured with Mitogen by mitogen_remote.py, in the same
run, so report.py pairs them:

  py_connect_first_call  r.local() (agent cached) + the first call of a
                         function whose module is shipped (ms)
  py_call_rtt            ctx.call(noop) round trip, warm worker (us)
  py_pipelined           10,000 call_async(noop), then result() of all
                         (calls/s)
  py_batch               ctx.map(noop, range(10,000)): the batch path, one
                         message for all (calls/s)
  py_echo_16mib          a function returning its 16 MiB bytes argument;
                         MB/s = 2 x 16 MiB / round trip, MB = 10^6 B
  py_module_bytes_hop    module source bytes the router sends when a second
                         context behind the same parent calls a function
                         that imports 10 of the caller's modules (bytes)

Environment: PYTHONPATH (the build's python/), SPORE_AGENT_PATH,
BENCH_PYTHON (the target interpreter, default /usr/bin/python3),
BENCH_QUICK=1 for small counts. Output: "sample <metric> <unit> <v>...".
"""
import os
import sys
import tempfile
import time

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
PYTHON = os.environ.get("BENCH_PYTHON", "/usr/bin/python3")


def runs(n):
    return 3 if QUICK else n


def iters(n):
    return max(1, n // 20) if QUICK else n


def emit(metric, unit, values):
    print("sample %s %s %s" % (metric, unit, " ".join("%.6g" % v for v in values)))
    sys.stdout.flush()


def make_modules(root):
    """benchmods.entry imports benchmods.m0 ... m9 (the caller's modules)."""
    pkg = os.path.join(root, "benchmods")
    os.mkdir(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("")
    for i in range(10):
        with open(os.path.join(pkg, "m%d.py" % i), "w") as f:
            f.write("VALUE = %d\n\ndef helper(x):\n    return x + VALUE\n" % i + "# padding\n" * 40)
    with open(os.path.join(pkg, "entry.py"), "w") as f:
        f.write("".join("from benchmods import m%d\n" % i for i in range(10)))
        f.write("\n\ndef noop(*args):\n    return None\n\n\ndef echo(data):\n    return data\n\n\n"
                "def total():\n    return sum(m.helper(0) for m in (%s))\n" % ", ".join("m%d" % i for i in range(10)))


def main():
    import spore  # here: mitogen_remote.py imports this file without spore

    with tempfile.TemporaryDirectory(prefix="spore-bench-py.") as root:
        make_modules(root)
        sys.path.insert(0, root)
        from benchmods import entry
        with spore.Router(forward_logs=False, log_level=spore.WARNING) as r:
            warm = r.local(python_path=PYTHON)  # the agent image is cached from here on
            warm.call("sys.ping")
            values = []
            for _ in range(runs(9)):
                t0 = time.perf_counter()
                ctx = r.local(python_path=PYTHON)
                ctx.call(entry.noop)
                values.append((time.perf_counter() - t0) * 1e3)
                ctx.shutdown()
            emit("py_connect_first_call", "ms", values)

            ctx = r.local(python_path=PYTHON)
            ctx.call(entry.noop)
            values = []
            n = iters(2000)
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
                futures = [ctx.call_async(entry.noop) for _ in range(n)]
                for f in futures:
                    f.result()
                values.append(n / (time.perf_counter() - t0))
            emit("py_pipelined", "calls/s", values)

            values = []
            n = iters(10000)
            for _ in range(runs(5)):
                t0 = time.perf_counter()
                results = ctx.map(entry.noop, range(n))
                values.append(n / (time.perf_counter() - t0))
                assert len(results) == n
            emit("py_batch", "calls/s", values)

            data = os.urandom(16 << 20)
            values = []
            for _ in range(runs(5)):
                t0 = time.perf_counter()
                back = ctx.call(entry.echo, data)
                dt = time.perf_counter() - t0
                assert back == data
                values.append(2 * len(data) / dt / 1e6)
            emit("py_echo_16mib", "MB/s", values)

            parent = r.local(python_path=PYTHON)
            first = r.fork(via=parent, python_path=PYTHON)
            assert first.call(entry.total) == 45
            before = r.module_stats()["bytes_sent"]
            second = r.fork(via=parent, python_path=PYTHON)
            assert second.call(entry.total) == 45
            emit("py_module_bytes_hop", "bytes", [r.module_stats()["bytes_sent"] - before])
            print("info py_module_bytes_hop first_context_bytes %d" % before)


if __name__ == "__main__":
    main()
