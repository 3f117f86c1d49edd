"""The caller's own Python functions run in contexts (docs/python.md, "Your
own functions"): modules shipped on demand through hops, values, errors,
isolation, concurrency, output and logs."""
import concurrent.futures
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

import spore

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE = os.path.join(HERE, "remote")
sys.path.insert(0, REMOTE)

import sporepy_funcs as funcs  # noqa: E402 (served from REMOTE)
from test_spore import wait_no_descendants  # noqa: E402

HARNESS = os.environ.get("SPORE_TEST_HARNESS", "")


@pytest.fixture
def router():
    with spore.Router() as r:
        yield r
    assert wait_no_descendants() == []


@pytest.fixture
def ctx(router):
    return router.local()


def test_call_shipped_function_and_state(ctx, router):
    assert ctx.call(funcs.add, 2, b=3) == 5
    where = ctx.call(funcs.where)
    assert where["pid"] != os.getpid()
    assert where["file"] == funcs.__file__
    assert where["tools"] == "tools"
    assert where["deep"] == "tools in sporepy_pkg.sub"
    # The warm worker keeps module state between calls.
    assert [ctx.call(funcs.counter) for _ in range(3)] == [1, 2, 3]
    # One round trip brought the module and everything it imports.
    assert router.module_stats()["requests"] == 1


def test_second_call_and_second_context_send_nothing(ctx, router):
    ctx.call(funcs.add, 1)
    stats = router.module_stats()
    assert stats["bytes_sent"] > 0 and stats["workers"] == 1
    ctx.call(funcs.add, 2)
    assert router.module_stats() == stats
    # Through the same parent: its cache answers.
    child = router.fork(via=ctx)
    assert child.call(funcs.where)["deep"] == "tools in sporepy_pkg.sub"
    assert router.module_stats()["bytes_sent"] == stats["bytes_sent"]
    assert router.module_stats()["workers"] == 1


def test_stdlib_never_shipped(ctx, router):
    assert ctx.call(funcs.stdlib_user) == '{"a": 1}'
    names_before = router.module_stats()["modules_sent"]
    assert ctx.call("os.path.join", "a", "b") == "a/b"
    assert ctx.call("py:json:dumps", [1, 2]) == "[1, 2]"
    assert router.module_stats()["modules_sent"] == names_before
    assert router.module_stats()["modules_sent"] == 6  # funcs, the package, tools, sub, deep, lazy


def test_imports_inside_functions_come_along(ctx, router):
    # The scan of the module's source sees imports in function bodies too.
    assert ctx.call(funcs.lazy_import) == "lazy+tools"
    assert router.module_stats()["requests"] == 1


@pytest.mark.skipif(not os.path.isdir(HARNESS), reason="no test accounts (tests/harness needs root)")
def test_three_hops_to_another_account(router):
    local = router.local()
    fork = router.fork(via=local)
    target = router.sudo("spore-test-target", via=fork)
    info = target.call("sys.info")
    assert info["user"] == "spore-test-target"
    where = target.call(funcs.where)
    assert where["uid"] == info["uid"]
    assert where["deep"] == "tools in sporepy_pkg.sub"
    assert target.call(funcs.Tools.double, 21) == 42


def test_values_round_trip(ctx):
    values = [
        None, True, False, 0, -1, 2 ** 100, -(2 ** 70), 1.0, -0.5, 1e300, float("inf"), float("-inf"),
        "", "text ü €", b"", b"\x00\xff" * 100, bytearray(b"ba"), (1, (2, (3,))), [], {}, {"$b": [0, 1]},
        {"$t": 1, "x": 2}, {"nested": [{"a": (b"x", [b"y"])}]}, [b"a", b"b", b"c"],
    ]
    for v in values:
        got = ctx.call(funcs.identity, v)
        want = bytes(v) if isinstance(v, bytearray) else v
        assert got == want and type(got) is type(want), (v, got)
    nan = ctx.call(funcs.identity, float("nan"))
    assert nan != nan
    assert ctx.call(funcs.echo, 1, (2, 3), k=b"v") == [[1, (2, 3)], {"k": b"v"}]


def test_refused_values(ctx):
    with pytest.raises(TypeError, match=r"cannot send a set at args\[0\]\['tags'\]"):
        ctx.call(funcs.identity, {"tags": {1, 2}})
    with pytest.raises(TypeError, match=r"object"):
        ctx.call(funcs.identity, [object()])
    with pytest.raises(TypeError, match=r"int"):
        ctx.call(funcs.identity, {1: "x"})
    with pytest.raises(TypeError, match=r"datetime"):
        import datetime
        ctx.call(funcs.echo, when=datetime.datetime.now())
    # A result that cannot travel is refused in the worker, naming where.
    with pytest.raises(spore.CallError) as e:
        ctx.call(funcs.give_set)
    assert e.value.remote_type == "TypeError"
    assert "set" in str(e.value) and "['ok'][1]['bad']" in str(e.value)


def test_callables_refused_locally(ctx):
    with pytest.raises(TypeError, match="lambda"):
        ctx.call(lambda: 1)

    def nested():
        return 1
    with pytest.raises(TypeError, match="inside another function"):
        ctx.call(nested)
    with pytest.raises(TypeError, match="bound to an instance"):
        ctx.call(funcs.Tools().bound)
    assert ctx.call(funcs.Tools.double, 4) == 8
    assert ctx.call(funcs.Tools.name) == "Tools"


def test_errors_and_tracebacks(ctx):
    with pytest.raises(spore.CallError) as e:
        ctx.call(funcs.boom, "not today")
    err = e.value
    assert isinstance(err, spore.Error) and isinstance(err, spore.RemoteError)
    assert err.remote_type == "sporepy_pkg.tools.Refused"
    assert "not today" in err.message
    assert "sporepy_funcs.py" in err.remote_traceback and "raise tools.Refused" in err.remote_traceback
    assert err.context == ctx.name
    assert err.function == "py:sporepy_funcs:boom"
    assert "raise tools.Refused" in str(err)
    with pytest.raises(spore.CallError) as e:
        ctx.call(funcs.missing)
    assert e.value.remote_type == "ModuleNotFoundError"
    assert "sporepy_never_anywhere" in e.value.message
    with pytest.raises(spore.UnknownFunction):
        ctx.call("sporepy_funcs.no_such_thing")
    with pytest.raises(spore.UnknownFunction) as e:
        ctx.call("sporepy_nowhere_module.f")
    assert "sporepy_nowhere_module" in e.value.message
    # SystemExit in the shared worker is an error; the worker lives on.
    pid = ctx.call(os.getpid)
    with pytest.raises(spore.CallError) as e:
        ctx.call(funcs.leave, 3)
    assert e.value.remote_type == "SystemExit"
    assert ctx.call(os.getpid) == pid


def test_deny_list(router):
    router.deny_module("sporepy_pkg.sub")
    ctx = router.local()
    with pytest.raises(spore.CallError) as e:
        ctx.call(funcs.where)
    assert e.value.remote_type == "ModuleNotFoundError"
    assert "refused" in e.value.message
    assert router.module_stats()["refused"] >= 1


def test_added_module_and_later_finders(router):
    # A module given as source, ahead of any directory; a finder appended
    # after the worker's own import hook still gets asked.
    router.add_module("spore_added_mod", "import sys\n"
                      "class F:\n"
                      "    def find_spec(self, name, path=None, target=None):\n"
                      "        if name != 'spore_virtual_mod':\n"
                      "            return None\n"
                      "        import importlib.util\n"
                      "        return importlib.util.spec_from_loader(name, self)\n"
                      "    def create_module(self, spec):\n"
                      "        return None\n"
                      "    def exec_module(self, module):\n"
                      "        module.made = True\n"
                      "def answer():\n"
                      "    sys.meta_path.append(F())\n"
                      "    import spore_virtual_mod\n"
                      "    return 41 + 1, spore_virtual_mod.__name__\n")
    ctx = router.local()
    assert ctx.call("spore_added_mod.answer") == (42, "spore_virtual_mod")
    with pytest.raises(spore.InvalidArgument):
        router.add_module("not a module name", "x = 1")


def test_fork_isolation(ctx):
    isolated = ctx.with_options(isolation="fork")
    before = ctx.call(funcs.state)
    with pytest.raises(spore.CallError) as e:
        isolated.call(funcs.leave, 7)
    assert e.value.remote_type == "SystemExit"
    fd, link = isolated.call(funcs.change_state, "forked")
    assert fd > 2 and link.startswith("pipe:")
    after = ctx.call(funcs.state)
    assert after == before
    assert ctx.call(funcs.fd_link, fd) != link  # the pipe stayed in the fork
    pid = ctx.call(os.getpid)
    assert isolated.call(os.getpid) != pid
    with pytest.raises(spore.WorkerDied, match="signal 11"):
        isolated.call(funcs.crash)
    assert ctx.call(os.getpid) == pid  # the shared worker never noticed


def test_crash_fails_the_call_and_restarts(ctx):
    pid = ctx.call(os.getpid)
    slow = ctx.call_async(funcs.sleep, 30)
    time.sleep(0.2)
    with pytest.raises(spore.WorkerDied, match="signal 11"):
        ctx.call(funcs.crash)
    with pytest.raises(spore.WorkerDied):
        slow.result(timeout=10)
    assert ctx.call(os.getpid) != pid
    with pytest.raises(spore.WorkerDied, match="status 4"):
        ctx.call(funcs.hard_exit, 4)
    assert ctx.call(funcs.add, 1, 1) == 2


def test_slow_call_does_not_block_others(ctx):
    slow = ctx.call_async(funcs.sleep, 1.5)
    t0 = time.monotonic()
    assert [ctx.call(funcs.add, i, 1) for i in range(20)] == list(range(1, 21))
    assert time.monotonic() - t0 < 1.0
    assert slow.result(timeout=10) == 1.5


def test_chains_run_in_order(ctx):
    with ctx.chain() as chain:
        for i in range(5):
            chain.step(funcs.counter)
        assert chain.call(funcs.counter) == 6
    with ctx.chain() as chain:
        chain.step(funcs.boom, "first")
        chain.step(funcs.counter)
        with pytest.raises(spore.CallError, match="first"):
            chain.call(funcs.counter)
    assert ctx.call(funcs.counter) == 7


def test_async_and_no_reply(ctx):
    futures = [ctx.call_async(funcs.add, i, i) for i in range(100)]
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(100)]
    done, _ = concurrent.futures.wait([ctx.call_async(funcs.add, 1, 2)], timeout=30)
    assert [f.result() for f in done] == [3]
    # Calls outside a chain are not ordered: wait for the no-reply one.
    ctx.call_no_reply(funcs.record, "sent without reply")
    deadline = time.monotonic() + 10
    while "sent without reply" not in ctx.call(funcs.recorded) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctx.call(funcs.recorded) == ["sent without reply"]


def test_map_is_one_round_trip(ctx):
    assert ctx.map(funcs.add, range(1000), range(1000)) == [2 * i for i in range(1000)]
    assert ctx.map(funcs.identity, [b"a", (1, b"b")]) == [b"a", (1, b"b")]
    assert ctx.map(funcs.add, []) == []
    before = ctx.call(funcs.counter)
    with pytest.raises(spore.CallError, match="item 2: ZeroDivisionError") as e:
        ctx.map(funcs.tick, [1, 1, 0, 1])
    assert e.value.remote_type == "ZeroDivisionError"
    with pytest.raises(TypeError, match=r"batch\[1\]"):
        ctx.map(funcs.identity, [1, {2}])
    # Items 0 to 2 ran, item 3 did not.
    assert ctx.call(funcs.counter) == before + 4


def test_threads_calling_concurrently(ctx):
    errors = []

    def worker(n):
        try:
            for i in range(500):
                if ctx.call(funcs.add, n, i) != n + i:
                    errors.append((n, i))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_16_mib_both_ways(ctx):
    data = os.urandom(16 << 20)
    assert ctx.call(funcs.identity, data) == data
    assert ctx.call(funcs.length, data) == len(data)
    assert ctx.call(funcs.blob, 16 << 20) == b"\x01" * (16 << 20)


def test_output_and_logs(router, caplog):
    ctx = router.local()
    with caplog.at_level(logging.DEBUG, logger="spore"):
        router.set_log_level(spore.INFO)
        assert ctx.call(funcs.chatty, 3) == 3
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ours = [r for r in caplog.records if getattr(r, "spore_logger", "") in ("stdout", "stderr", "sporepy")]
            if len(ours) >= 7:
                break
            time.sleep(0.05)
    ours = [(r.spore_logger, r.levelno, r.getMessage()) for r in caplog.records
            if getattr(r, "spore_logger", "") in ("stdout", "stderr", "sporepy")]
    assert ours[:7] == [
        ("stdout", logging.INFO, "out 0"), ("sporepy", logging.WARNING, "warn 0"),
        ("stdout", logging.INFO, "out 1"), ("sporepy", logging.WARNING, "warn 1"),
        ("stdout", logging.INFO, "out 2"), ("sporepy", logging.WARNING, "warn 2"),
        ("stderr", logging.INFO, "to stderr"),
    ]
    assert all(r.name == "spore." + ctx.name for r in caplog.records
               if getattr(r, "spore_logger", "") == "sporepy")


def test_python_path(router):
    ctx = router.local(python_path="/usr/bin/env python3")
    assert ctx.call(funcs.add, 1, 2) == 3
    ctx = router.local(python_path=["/nonexistent/python3", "-X", "utf8"])
    with pytest.raises(spore.PythonNotFound, match="/nonexistent/python3"):
        ctx.call(funcs.add, 1, 2)
    with pytest.raises(spore.InvalidArgument, match="python_path"):
        router.local(python_path="python3 `id`")


def test_main_function_from_a_script():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, os.path.join(REMOTE, "main_script.py"), "14"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "42"


def test_builtins_still_take_keywords(ctx):
    assert ctx.call("sys.echo", value=[1, 2]) == [1, 2]
    assert ctx.call("sys.echo", data=b"xy") == spore.Reply(None, b"xy")
    with pytest.raises(TypeError, match="keyword"):
        ctx.call("sys.echo", 1)
