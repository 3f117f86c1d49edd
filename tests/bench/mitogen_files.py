#!/usr/bin/python3
"""Mitogen baseline of the spore "files" benchmarks (scripts/bench files).

Measures, with Python Mitogen (Debian's python3-mitogen), under the metric
names of tests/bench/files_bench.c:

  put_local_1gib             1 GiB (/dev/shm to /dev/shm) into a router.local()
                             child with mitogen.service.FileService: the master
                             serves the file, the child pulls it with
                             FileService.get() into a temporary file it then
                             renames, as ansible_mitogen's transfer_file() does
                             (no fsync); the child checks the size (MB/s)
  put_ssh_1gib               the same into a router.ssh() child over the
                             throw-away sshd on loopback, compression=False
                             (scp and spore do not compress either) (MB/s)
  put_ssh_compressed_1gib    the same with router.ssh()'s default
                             compression=True, of the first 256 MiB of the
                             file only (Mitogen only) (MB/s)
  files_1000x1k              1,000 files of 1 KiB from a directory under /tmp,
                             one context.call() per file, each a FileService
                             transfer (Mitogen has no tree put), then one
                             syncfs in the child, as spore_put_tree ends (s)
  files_1000x1k_each         the same 1 KiB from memory, one blocking
                             context.call() per file of a function writing its
                             Blob argument with an fsync, as ansible_mitogen's
                             write_path(sync=True) (s); files_1000x1k_each_nosync
                             without the fsync
  files_1000x1k_each_pipelined  as _nosync, but call_no_reply() for each file
                             and one blocking call at the end, which is how
                             ansible_mitogen's put_data() sends small files
                             (Mitogen only) (s)

Not measurable with Mitogen, reported as "info <metric> skipped <why>":
get_local_1gib (ansible_mitogen's fetch_file() reads the whole file into one
message, and a router refuses messages over 128 MiB by default).

Environment: BENCH_QUICK=1 makes the big file 64 MiB (as files_bench) and
every run count 3; BENCH_RUNS overrides the run counts; BENCH_SSH_PORT,
BENCH_SSH_USER, BENCH_SSH_KEY and BENCH_KNOWN_HOSTS for the ssh figures.
Output: "sample <metric> <unit> <v>..." and "info <metric> <key> <value>".
Python 3 standard library and mitogen only.
"""
import ctypes
import hashlib
import os
import shutil
import sys
import tempfile
import time

import mitogen.core
import mitogen.master
import mitogen.service

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SIZE = (64 << 20) if QUICK else (1 << 30)
MIB = 1 << 20
# ansible_mitogen's connection multiplexer runs its service pool with 32
# threads unless MITOGEN_POOL_SIZE says otherwise.
POOL_SIZE = 32
SRC = "/dev/shm/spore-bench-mitogen-src"
SRC_SMALL = "/dev/shm/spore-bench-mitogen-src-256m"
DST_LOCAL = "/dev/shm/spore-bench-mitogen-dst"
DST_SSH = "/dev/shm/spore-bench-mitogen-ssh-dst"


def runs(n):
    v = os.environ.get("BENCH_RUNS", "")
    if v:
        n = int(v)
    if QUICK:
        n = 3
    return max(1, min(n, 64))


def emit(metric, unit, values):
    print("sample %s %s %s" % (metric, unit, " ".join("%.6g" % v for v in values)))
    sys.stdout.flush()


def info(metric, key, value):
    print("info %s %s %s" % (metric, key, " ".join(str(value).split())))
    sys.stdout.flush()


def mbps(nbytes, seconds):
    return nbytes / 1e6 / seconds


# ---------------------------------------------------------------- in the child

def fetch_to(master, src, dst):
    """Pulls src from the master's FileService into dst, the way
    ansible_mitogen.target.transfer_file() does: a temporary file in dst's
    directory, written through a CHUNK_SIZE buffer, renamed at the end.
    Returns the size of dst."""
    fd, tmp = tempfile.mkstemp(prefix=".mitogen-bench-", dir=os.path.dirname(dst))
    try:
        with os.fdopen(fd, "wb", mitogen.core.CHUNK_SIZE) as fp:
            ok, meta = mitogen.service.FileService.get(master, src, fp)
        if not ok:
            raise IOError("transfer of %r was interrupted" % (src,))
        os.rename(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    size = os.stat(dst).st_size
    if size != meta["size"]:
        raise IOError("%s: %d bytes, expected %d" % (dst, size, meta["size"]))
    return size


def write_bytes(path, data, sync):
    """Writes data to path as ansible_mitogen.target.write_path() does."""
    fd, tmp = tempfile.mkstemp(prefix=".mitogen-bench-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb", mitogen.core.CHUNK_SIZE) as fp:
            fp.write(data)
            if sync:
                fp.flush()
                os.fsync(fp.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def syncfs(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def make_dir(path):
    os.makedirs(path, exist_ok=True)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def remove(path):
    if os.path.exists(path):
        os.unlink(path)


# --------------------------------------------------------------- in the master

def make_source(path, size):
    """Incompressible bytes, like files_bench's source."""
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as f:
        for i in range(size // MIB):
            block[0] = i & 0xFF
            f.write(block)


def bench_put(router, ctx, metric, dst, n, src=SRC, size=SIZE):
    master = router.myself()
    values = []
    for i in range(n):
        ctx.call(remove, dst)
        t0 = time.monotonic()
        got = ctx.call(fetch_to, master, src, dst)
        values.append(mbps(size, time.monotonic() - t0))
        if got != size:
            raise RuntimeError("%s: the child wrote %d bytes, expected %d" % (metric, got, size))
        if i == 0 and ctx.call(sha256_of, dst) != sha256_of(src):
            raise RuntimeError("%s: the copy differs from the source" % metric)
        ctx.call(remove, dst)
    emit(metric, "MB/s", values)


def bench_small_files(router, fs, ctx):
    top = tempfile.mkdtemp(prefix="spore-bench-mitogen-files-", dir="/tmp")
    try:
        src, dst = os.path.join(top, "src"), os.path.join(top, "dst")
        os.mkdir(src)
        data = b"x" * 1024
        names = ["f%04d" % f for f in range(1000)]
        for name in names:
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        fs.register_prefix(src)
        ctx.call(make_dir, dst)
        master = router.myself()
        n = runs(5)

        values = []
        for _ in range(n):
            t0 = time.monotonic()
            for name in names:
                ctx.call(fetch_to, master, os.path.join(src, name), os.path.join(dst, name))
            ctx.call(syncfs, dst)
            values.append(time.monotonic() - t0)
        emit("files_1000x1k", "s", values)

        blob = mitogen.core.Blob(data)
        for metric, sync in (("files_1000x1k_each", True), ("files_1000x1k_each_nosync", False)):
            values = []
            for _ in range(n):
                t0 = time.monotonic()
                for name in names:
                    ctx.call(write_bytes, os.path.join(dst, name), blob, sync)
                values.append(time.monotonic() - t0)
            emit(metric, "s", values)

        values = []
        for _ in range(n):
            t0 = time.monotonic()
            for name in names:
                ctx.call_no_reply(write_bytes, os.path.join(dst, name), blob, False)
            ctx.call(make_dir, dst)  # a blocking call: every write before it is done
            values.append(time.monotonic() - t0)
        emit("files_1000x1k_each_pipelined", "s", values)
        got = [f for f in os.listdir(dst) if not f.startswith(".")]
        if len(got) != len(names):
            raise RuntimeError("files_1000x1k: %d files at the destination, expected %d" % (len(got), len(names)))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def ssh_context(router, compression):
    return router.ssh(hostname="127.0.0.1", port=int(os.environ["BENCH_SSH_PORT"]),
                      username=os.environ["BENCH_SSH_USER"], identity_file=os.environ["BENCH_SSH_KEY"],
                      check_host_keys="enforce", python_path="/usr/bin/python3", compression=compression,
                      ssh_args=["-F", "/dev/null", "-o", "UserKnownHostsFile=" + os.environ["BENCH_KNOWN_HOSTS"]])


def attempt(metrics, fn, *args):
    """Runs one measurement; if it fails, says why under each metric."""
    try:
        fn(*args)
    except Exception as e:  # a failed measurement is reported, not fatal
        for m in metrics:
            info(m, "skipped", "%s: %s" % (type(e).__name__, e))


def main():
    print("info mitogen version %s" % ".".join(str(x) for x in mitogen.__version__))
    print("info mitogen python %s" % sys.version.split()[0])
    info("put_local_1gib", "bytes", SIZE)
    info("get_local_1gib", "skipped",
         "Mitogen has no streaming get: ansible_mitogen's fetch_file() reads the whole file into one "
         "message and routers refuse messages over %d MiB" % (mitogen.core.Router.max_message_size // MIB))
    sys.stdout.flush()
    make_source(SRC, SIZE)
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    pool = None
    try:
        fs = mitogen.service.FileService(router)
        pool = mitogen.service.Pool(router, services=[fs], size=POOL_SIZE)
        fs.register(SRC)

        ctx = router.local(python_path="/usr/bin/python3")
        attempt(["put_local_1gib"], bench_put, router, ctx, "put_local_1gib", DST_LOCAL, runs(5))
        attempt(["files_1000x1k", "files_1000x1k_each", "files_1000x1k_each_nosync",
                 "files_1000x1k_each_pipelined"], bench_small_files, router, fs, ctx)
        ctx.shutdown(wait=True)

        ssh_env = ("BENCH_SSH_PORT", "BENCH_SSH_USER", "BENCH_SSH_KEY", "BENCH_KNOWN_HOSTS")
        if all(os.environ.get(k) for k in ssh_env):
            # With compression Mitogen moves ~10-20 MB/s here: a quarter of
            # the file (the first 256 MiB of the same bytes) keeps that short.
            small = min(SIZE, 256 * MIB)
            with open(SRC, "rb") as f, open(SRC_SMALL, "wb") as g:
                g.write(f.read(small))
            fs.register(SRC_SMALL)
            info("put_ssh_compressed_1gib", "bytes", small)
            for metric, compression, n, src, size in (("put_ssh_1gib", False, runs(5), SRC, SIZE),
                                                      ("put_ssh_compressed_1gib", True, runs(3), SRC_SMALL, small)):
                def one(metric=metric, compression=compression, n=n, src=src, size=size):
                    c = ssh_context(router, compression)
                    try:
                        bench_put(router, c, metric, DST_SSH, n, src, size)
                    finally:
                        c.shutdown(wait=True)
                attempt([metric], one)
        else:
            for m in ("put_ssh_1gib", "put_ssh_compressed_1gib"):
                info(m, "skipped", "no_BENCH_SSH_env (scripts/bench files sets it up when run as root)")
    finally:
        if pool is not None:
            pool.stop(join=True)  # its threads are not daemons
        broker.shutdown()
        broker.join()
        remove(SRC)
        remove(SRC_SMALL)


if __name__ == "__main__":
    main()
