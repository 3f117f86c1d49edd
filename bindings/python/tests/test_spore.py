"""pytest suite of the Python binding (run by ctest as python.pytest).

Needs SPORE_AGENT_PATH (ctest sets it) and the build's python/ directory on
sys.path (PYTHONPATH, also set by ctest)."""
import concurrent.futures
import gc
import logging
import os
import signal
import threading
import time

import pytest

import spore


def descendants():
    """Live processes (zombies included) below this one."""
    me = os.getpid()
    parents = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out = []
    for pid in parents:
        p, depth = pid, 0
        while p in parents and depth < 64:
            p = parents[p]
            depth += 1
            if p == me:
                out.append(pid)
                break
    return out


def wait_no_descendants(timeout=5.0):
    end = time.monotonic() + timeout
    while descendants() and time.monotonic() < end:
        time.sleep(0.02)
    return descendants()


@pytest.fixture
def router():
    with spore.Router() as r:
        yield r
    assert wait_no_descendants() == []


def test_version():
    assert spore.version().count(".") == 2


def test_local_context_and_result_types(router):
    ctx = router.local(name="py")
    assert ctx.name == "py"
    assert ctx.id > 0
    assert ctx.alive
    assert ctx.call("sys.ping") is True
    info = ctx.call("sys.info")
    assert isinstance(info, dict)
    assert info["pid"] != os.getpid()
    assert info["context"] == "py"
    assert ctx.call("sys.echo", value=[1, "two", {"three": 3.5}, None]) == [1, "two", {"three": 3.5}, None]
    assert ctx.call("sys.echo", value="naïve ☃") == "naïve ☃"
    assert isinstance(ctx.call("fs.list", path="/"), list)
    st = ctx.call("fs.stat", path="/etc")
    assert st["type"] == "dir"


def test_binary_data_round_trip(router):
    ctx = router.local()
    blob = bytes(range(256)) * 4096 + b"\0tail"
    reply = ctx.call("sys.echo", value=1, data=blob)
    assert isinstance(reply, spore.Reply)
    assert reply.value == 1
    assert reply.data == blob
    path = ctx.call("fs.mktemp")
    try:
        ctx.call("fs.write", path=path, data=b"\x00\x01\xffbinary")
        got = ctx.call("fs.read", path=path)
        assert got.data == b"\x00\x01\xffbinary"
    finally:
        ctx.call("fs.remove", path=path)


def test_fork_through_a_context(router):
    ctx = router.local()
    child = router.fork(ctx)
    assert child.name.startswith(ctx.name + "/")
    assert child.call("sys.info")["ppid"] == ctx.call("sys.info")["pid"]


def test_error_classes(router):
    ctx = router.local()
    with pytest.raises(spore.UnknownFunction) as e:
        ctx.call("no.such.function")
    assert e.value.code == spore.UnknownFunction.code
    assert e.value.code_name == "ENOFUNC"
    assert e.value.context == ctx.name
    # A name that is not a built-in names a Python function.
    assert e.value.function == "py:no.such.function"
    assert isinstance(e.value, spore.Error)
    with pytest.raises(spore.UnknownFunction) as e:
        ctx.call("sys.no_such_builtin", timeout=5)
    assert e.value.function == "py:sys.no_such_builtin"

    with pytest.raises(spore.RemoteError) as e:
        ctx.call("fs.read", path="/nonexistent/spore")
    assert e.value.remote_type == "FileNotFoundError"
    assert "nonexistent" in e.value.message

    with pytest.raises(spore.BadArguments):
        ctx.call("fs.stat")
    with pytest.raises(spore.InvalidArgument):
        router.connect("no-such-method")
    with pytest.raises(spore.InvalidArgument):
        router.local(no_such_option=1)
    with pytest.raises(spore.InvalidArgument):
        router.connect("fork")
    with pytest.raises(spore.Timeout):
        ctx.call("proc.run", argv=["sleep", "5"], timeout=0.2)
    with pytest.raises(spore.ConnectError):
        router.local(command_prefix=["/nonexistent/launcher"])
    # Every code has its class, and every class is a spore.Error.
    for name in ("ConnectError", "Timeout", "Disconnected", "UnknownFunction", "BadArguments", "RemoteError",
                 "Refused", "MessageTooLarge", "ProtocolError", "NoRoute", "ShutDown", "AuthenticationFailed",
                 "PasswordRequired", "HostKeyError", "Denied", "NotFound", "PermissionDenied", "NoSpace",
                 "FileChanged", "Unresponsive", "PythonNotFound", "WorkerDied", "CallError"):
        cls = getattr(spore, name)
        assert issubclass(cls, spore.Error)
        assert isinstance(cls.code, int) and cls.code < 0


def test_disconnected(router):
    ctx = router.local()
    pid = ctx.call("sys.info")["pid"]
    future = ctx.call_async("proc.run", argv=["sleep", "30"])
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(spore.Disconnected):
        future.result(timeout=5)
    assert not ctx.alive
    with pytest.raises(spore.Disconnected):
        ctx.call("sys.ping")


def test_async_calls_and_futures_wait(router):
    ctx = router.local()
    futures = [ctx.call_async("sys.echo", value=i) for i in range(200)]
    done, not_done = concurrent.futures.wait(futures, timeout=20)
    assert not not_done
    assert [f.result() for f in futures] == list(range(200))
    slow = ctx.call_async("proc.run", argv=["sleep", "0.3"])
    assert not slow.done()
    assert slow.result(timeout=10)["rc"] == 0
    assert slow.done()
    failing = ctx.call_async("no.such.function")
    with pytest.raises(spore.UnknownFunction):
        failing.result(timeout=10)


def test_chain(router):
    ctx = router.local()
    path = ctx.call("fs.mktemp", directory=True)
    with ctx.chain() as chain:
        chain.step("fs.mkdir", path=path + "/a")
        chain.step("fs.write", path=path + "/a/f", text="hello")
        assert chain.call("fs.read", path=path + "/a/f").data == b"hello"
    ctx.call("fs.remove", path=path, recursive=True)


def test_logs_arrive_in_logging(caplog):
    caplog.set_level(logging.DEBUG, logger="spore")
    with spore.Router() as r:
        ctx = r.local(name="logger-test")
        ctx.call("proc.run", argv=["sh", "-c", "echo to-stdout; echo to-stderr >&2"], stream=True)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            names = {(rec.name, rec.getMessage()) for rec in caplog.records}
            if ("spore.logger-test", "to-stdout") in names and ("spore.logger-test", "to-stderr") in names:
                break
            time.sleep(0.05)
    recs = [rec for rec in caplog.records if rec.name == "spore.logger-test"]
    msgs = [rec.getMessage() for rec in recs]
    assert "to-stdout" in msgs and "to-stderr" in msgs
    assert all(hasattr(rec, "spore_logger") for rec in recs)
    assert any(rec.levelno == logging.DEBUG for rec in recs)  # the agent's own debug records


def test_threads_overlap_while_calls_wait(router):
    """Two threads in blocking calls at once: the GIL is released."""
    ctx = router.local()
    t0 = time.monotonic()
    results = []
    threads = [threading.Thread(target=lambda: results.append(ctx.call("proc.run", argv=["sleep", "0.5"])))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    assert len(results) == 4 and all(r["rc"] == 0 for r in results)
    assert took < 1.5, "calls did not overlap: %.2f s" % took


def test_many_threads_many_calls(router):
    ctx = router.local()
    errors = []

    def worker(n):
        try:
            for i in range(300):
                assert ctx.call("sys.echo", value=[n, i]) == [n, i]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_objects_freed_in_any_order():
    r = spore.Router()
    a = r.local()
    b = r.fork(a)
    c = b.chain()
    r.close()
    # Handles outliving their router fail cleanly, and free cleanly.
    with pytest.raises(spore.Error):
        b.call("sys.ping")
    del a
    gc.collect()
    del c, b
    gc.collect()
    r.close()  # idempotent
    assert wait_no_descendants() == []

    r = spore.Router()
    ctx = r.local()
    del r  # the context keeps the router alive
    gc.collect()
    assert ctx.call("sys.ping") is True
    del ctx
    gc.collect()
    assert wait_no_descendants() == []


def test_router_closed_while_calls_wait():
    r = spore.Router()
    ctx = r.local()
    future = ctx.call_async("proc.run", argv=["sleep", "30"])
    box = {}

    def blocked():
        try:
            ctx.call("proc.run", argv=["sleep", "30"])
        except spore.Error as e:
            box["error"] = e

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.3)
    r.close()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(box.get("error"), (spore.ShutDown, spore.Disconnected))
    with pytest.raises((spore.ShutDown, spore.Disconnected)):
        future.result(timeout=10)
    with pytest.raises(spore.ShutDown):
        r.local()
    assert wait_no_descendants() == []


def test_ctrl_c_interrupts_a_blocking_call(router):
    ctx = router.local()
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ctx.call("proc.run", argv=["sleep", "30"])
    assert time.monotonic() - t0 < 2.0
    timer.join()
    assert ctx.call("sys.ping") is True


def test_futures_completed_by_any_means(router):
    """result() waits on the caller's thread; wait(), as_completed() and
    callbacks are served by the completer thread; both at once on the same
    futures still complete each exactly once."""
    ctx = router.local()
    seen = []
    f = ctx.call_async("sys.echo", value="cb")
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    assert f.result(timeout=10) == "cb"
    end = time.monotonic() + 5
    while not seen and time.monotonic() < end:
        time.sleep(0.01)
    assert seen == ["cb"]

    futures = [ctx.call_async("sys.echo", value=i) for i in range(100)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=20)) == list(range(100))

    # A thread whose result(timeout) runs out while another is in wait():
    # the waiting thread is still woken when the reply comes.
    slow = ctx.call_async("proc.run", argv=["sleep", "0.5"])
    box = {}
    waiter = threading.Thread(target=lambda: box.update(done=concurrent.futures.wait([slow], timeout=10)))
    with pytest.raises(concurrent.futures.TimeoutError):
        # holds the future while the waiter installs itself
        threading.Timer(0.05, waiter.start).start()
        slow.result(timeout=0.2)
    waiter_started = time.monotonic()
    while not waiter.is_alive() and time.monotonic() - waiter_started < 2:
        time.sleep(0.01)
    waiter.join(10)
    done, not_done = box["done"]
    assert slow in done and not not_done
    assert slow.result()["rc"] == 0


def harness_env():
    """Variables of the test harness (real accounts and an sshd, made by the
    ctest fixture as root), or a skip when there is none."""
    d = os.environ.get("SPORE_TEST_HARNESS", "")
    env = {}
    for path in (d + "/env", d + "/sshd/env"):
        if not d or not os.path.exists(path):
            pytest.skip("no test harness (%s): run as root under ctest" % path)
        with open(path) as f:
            for line in f:
                if line.startswith("export ") and "=" in line:
                    k, v = line[7:].rstrip("\n").split("=", 1)
                    env[k] = v.strip("'")
    return env


def test_transports_and_their_errors(router):
    env = harness_env()

    def ssh(user, **opts):
        o = dict(username=user, port=int(env["SPORE_TEST_SSHD_PORT"]),
                 known_hosts_file=env["SPORE_TEST_KNOWN_HOSTS"], connect_timeout=20000)
        o.update(opts)
        return router.ssh(env["SPORE_TEST_SSHD_HOST"], **o)

    c = ssh("spore-test-sudo-nopw", identity_file=env["SPORE_TEST_KEY"])
    assert c.call("sys.info")["user"] == "spore-test-sudo-nopw"
    s = router.sudo("spore-test-target", via=c)
    assert s.call("sys.info")["user"] == "spore-test-target"

    with pytest.raises(spore.HostKeyError):
        ssh("spore-test-key", identity_file=env["SPORE_TEST_KEY"], known_hosts_file="/dev/null")
    with pytest.raises(spore.AuthenticationFailed):
        ssh("spore-test-pw", password="not-the-password")
    pw = ssh("spore-test-sudo-pw", identity_file=env["SPORE_TEST_KEY"])
    with pytest.raises(spore.PasswordRequired):
        router.sudo(via=pw)
    with pytest.raises(spore.AuthenticationFailed):
        router.sudo(via=pw, password="not-the-password")
    nosudo = ssh("spore-test-nosudo", identity_file=env["SPORE_TEST_KEY"])
    with pytest.raises(spore.Denied) as e:
        router.sudo(via=nosudo, password=env["SPORE_TEST_PW_NOSUDO"])
    assert "sudo" in e.value.context
    assert env["SPORE_TEST_PW_NOSUDO"] not in str(e.value)


@pytest.fixture
def tmp_path():
    """A temporary directory removed afterwards (pytest's own tmp_path keeps
    its directories, and the suite leaves nothing behind)."""
    import pathlib
    import tempfile
    with tempfile.TemporaryDirectory(prefix="spore-pytest-") as d:
        yield pathlib.Path(d)


def test_files(router, tmp_path):
    ctx = router.local()
    child = router.fork(ctx)
    blob = os.urandom(3 * 1024 * 1024 + 5)
    src = tmp_path / "src"
    src.write_bytes(blob)
    os.chmod(src, 0o640)
    for c in (ctx, child):
        c.put_file(src, tmp_path / "dst")
        assert (tmp_path / "dst").read_bytes() == blob
        assert os.stat(tmp_path / "dst").st_mode & 0o7777 == 0o640
        c.get_file(tmp_path / "dst", tmp_path / "back", mode=0o600)
        assert (tmp_path / "back").read_bytes() == blob
        assert os.stat(tmp_path / "back").st_mode & 0o7777 == 0o600
        c.put_bytes(memoryview(b"small"), str(tmp_path / "small"), sync=False)
        assert c.get_bytes(str(tmp_path / "small")) == b"small"
    with pytest.raises(spore.NotFound) as e:
        ctx.get_bytes("/nonexistent/spore")
    assert "/nonexistent/spore" in e.value.message
    with pytest.raises(spore.NotFound):
        ctx.put_file(src, "/nonexistent/dir/x")
    with pytest.raises(spore.MessageTooLarge):
        ctx.get_bytes(str(src), max_size=1024)
    with pytest.raises(spore.InvalidArgument):
        ctx.put_file(src, tmp_path / "x", no_such_option=1)
    # transfers in threads overlap with calls
    threads = [threading.Thread(target=ctx.put_file, args=(src, tmp_path / ("t%d" % i))) for i in range(4)]
    for t in threads:
        t.start()
    assert ctx.call("sys.ping") is True
    for t in threads:
        t.join()
    assert all((tmp_path / ("t%d" % i)).read_bytes() == blob for i in range(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "dst", "small", "src", "t0", "t1", "t2", "t3"]
    # trees
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"deep")
    (tree / "big").write_bytes(blob)
    os.symlink("a/b/f", tree / "link")
    child.put_tree(tree, tmp_path / "tree-copy")
    child.get_tree(tmp_path / "tree-copy", tmp_path / "tree-back")
    for d in ("tree-copy", "tree-back"):
        assert (tmp_path / d / "a" / "b" / "f").read_bytes() == b"deep"
        assert (tmp_path / d / "big").read_bytes() == blob
        assert os.readlink(tmp_path / d / "link") == "a/b/f"
    with pytest.raises(spore.NotFound):
        ctx.put_tree(tmp_path / "no-such-tree", tmp_path / "x")


def test_process_streams(router):
    ctx = router.local()
    child = router.fork(ctx)
    p = child.start(["cat"])
    blob = os.urandom(2 * 1024 * 1024)
    writer = threading.Thread(target=lambda: (p.stdin.write(blob), p.stdin.close()))
    writer.start()
    got = p.stdout.read()
    writer.join()
    assert got == blob
    assert p.wait(timeout=10) == (0, 0)
    p.close()

    with ctx.start(shell="echo out; echo err >&2; exit 4") as p:
        assert p.stdout.readline() == b"out\n"
        assert p.stderr.read() == b"err\n"
        assert p.wait() == (4, 0)
    with ctx.start(["sleep", "100"]) as p:
        with pytest.raises(spore.Timeout):
            p.wait(timeout=0.2)
        p.signal(signal.SIGTERM)
        assert p.wait(timeout=10) == (-1, signal.SIGTERM)
    with ctx.start(["sh"], pty=True, rows=33, cols=77) as p:
        p.write(b"stty size; exit\n")
        out = b""
        while True:
            d = p.read(4096)
            if not d:
                break
            out += d
        assert b"33 77" in out
        assert p.wait() == (0, 0)
    with pytest.raises(spore.RemoteError) as e:
        ctx.start(["/nonexistent/spore-prog"])
    assert e.value.remote_type == "FileNotFoundError"
    # a process left running is killed when its handle goes
    p = ctx.start(["sleep", "100"])
    pid = p.pid
    del p
    gc.collect()
    assert ctx.call("proc.run", argv=["sh", "-c", "sleep 0.3; kill -0 %d 2>/dev/null; echo $?" % pid])["stdout"] == "1\n"


def _count_with_arg(arg):
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if arg.encode() in f.read().split(b"\0"):
                        n += 1
            except OSError:
                pass
    return n


def test_process_start_timeout_is_cancelled(router):
    # The agent is stopped, so the start waits unanswered: it gives up after
    # its timeout, and once the agent runs again the process never starts.
    ctx = router.local()
    agent = ctx.call("sys.info")["pid"]
    os.kill(agent, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(spore.Timeout) as e:
            ctx.start(["sleep", "1003.25"], timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 5
        assert "did not start within 300 ms" in str(e.value)
    finally:
        os.kill(agent, signal.SIGCONT)
    assert ctx.call("sys.ping") is True
    for _ in range(20):
        assert _count_with_arg("1003.25") == 0
        time.sleep(0.025)
    with ctx.start(["true"], timeout=None) as p:
        assert p.wait(timeout=10) == (0, 0)


WORKER = r"""
import json, sys
import spore
with spore.Router.attach(sys.argv[1]) as r:
    web = r.find("web")
    assert web.call("sys.ping") is True
    web.put_bytes(b"from a worker\n", sys.argv[2])
    mine = r.local(name="worker-local")
    print(json.dumps({"web": web.id, "local": mine.id, "pid": web.call("sys.info")["pid"]}))
"""


def test_shared_router_with_worker_processes(tmp_path):
    import json
    import subprocess
    import sys
    sock = str(tmp_path / "run" / "router.sock")
    out_file = str(tmp_path / "out")
    with spore.Router() as listener:
        web = listener.local(name="web")
        listener.listen(sock)
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        seen = []
        for _ in range(2):
            p = subprocess.run([sys.executable, "-c", WORKER, sock, out_file], capture_output=True,
                               text=True, timeout=120, env=dict(os.environ))
            assert p.returncode == 0, p.stderr
            seen.append(json.loads(p.stdout))
        # Both workers used the listener's "web" and shared one "worker-local".
        assert seen[0]["web"] == seen[1]["web"] == web.id
        assert seen[0]["pid"] == web.call("sys.info")["pid"]
        assert seen[0]["local"] == seen[1]["local"]
        with open(out_file) as f:
            assert f.read() == "from a worker\n"
        assert listener.find("worker-local").id == seen[0]["local"]
        # In this process too, and the errors.
        with spore.Router.attach(sock) as a:
            assert a.find("web").call("sys.ping") is True
            with pytest.raises(spore.NotFound):
                a.find("nobody")
            fresh = a.local(name="worker-local", reuse=False)
            assert fresh.id != seen[0]["local"]
        assert web.call("sys.ping") is True
        with pytest.raises(spore.ConnectError):
            spore.Router.attach(str(tmp_path / "nothing.sock"))
        with pytest.raises(spore.InvalidArgument):
            listener.listen(sock)
    assert not os.path.exists(sock)
