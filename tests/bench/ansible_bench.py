#!/usr/bin/python3
"""The playbooks of `scripts/bench ansible`, run the same way in every mode.

usage: ansible_bench.py OURS_RAW BASELINE_RAW

Runs the playbooks of tests/bench/ansible/ with Debian's ansible-playbook
against the harness's sshd on 127.0.0.1 in these modes:

  floor       the floor_*.yml playbooks: each playbook's shape with debug
              tasks, which never connect (Ansible's own cost), as vanilla
  vanilla     the ssh plugin's defaults (ControlPersist, no pipelining)
  pipelining  the same with ANSIBLE_PIPELINING=True
  mitogen     ansible_mitogen's mitogen_linear strategy (the baseline)
  spore       spore's spore_linear strategy

Each run's wall time is measured around the ansible-playbook process, its
controller CPU (user + sys) from RUSAGE_CHILDREN: ansible-playbook and
everything below it, including what outlives it (this process is a child
subreaper, so ssh's ControlPersist masters and Mitogen's processes come
back to it and are reaped here). Appends "sample <metric> s <v>..." lines
to OURS_RAW (spore's, vanilla's, the floor's and the derived figures) and
BASELINE_RAW (Mitogen's), for tests/bench/report.py; "#" notes go to
stdout. The runs of one repetition are interleaved (every playbook in
every mode), so drift in the machine's load reaches all modes alike.

Environment: SPORE_TEST_KEY, SPORE_TEST_SSHD_PORT, SPORE_TEST_KNOWN_HOSTS
(tests/harness's env files); BENCH_ANSIBLE_BUILD, a build tree with
python/spore and spore-agent (default: build); BENCH_ANSIBLE_USER
(default: spore-test-sudo-nopw); BENCH_QUICK=1 (1 run each, no warm-up);
BENCH_RUNS=N; BENCH_ANSIBLE_MODES (e.g. "mitogen spore": only these
modes, and the floors); BENCH_NO_MITOGEN=1; BENCH_VERBOSE=1 (progress
on stderr).
Python 3 standard library only; run with /usr/bin/python3 (root, so it
can make the remote directories for the ssh account).
"""
import ctypes
import os
import pwd
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PLAYBOOKS = os.path.join(HERE, "ansible")
ANSIBLE_PLAYBOOK = "/usr/bin/ansible-playbook"
MITOGEN_STRATEGY = "/usr/lib/python3/dist-packages/ansible_mitogen/plugins/strategy"
HOSTS = ("h1", "h2", "h3", "h4")
MODES = ("vanilla", "pipelining", "mitogen", "spore")

# name, playbook, hosts it runs on, files each host must have afterwards
# (relative to its directory) as the check that the run did its work.
# Playbooks named floor_* run in the floor mode only, the others in every
# mode but that one.
PLAYBOOK_SPECS = [
    ("floor_mixed", "floor_mixed.yml", HOSTS, []),
    ("mixed", "mixed.yml", HOSTS, ["conf/a.txt", "conf/bench.conf", "conf/motd.txt"]),
    ("floor_loop100", "floor_loop100.yml", ("h1",), []),
    ("loop100", "loop100.yml", ("h1",), []),
    ("floor_copy100", "floor_copy100.yml", HOSTS, []),
    ("copy100", "copy100.yml", HOSTS, ["file%03d.txt" % i for i in range(100)]),
]

VERBOSE = bool(os.environ.get("BENCH_VERBOSE"))


def note(text):
    print("# " + text, flush=True)


def progress(text):
    if VERBOSE:
        print("ansible_bench: " + text, file=sys.stderr, flush=True)


def become_subreaper():
    """Orphans of ansible-playbook's tree (ssh ControlPersist masters,
    processes that exit after it) are reparented here, so their CPU time
    is counted when they are reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children():
    """pid -> command line of this process's live children."""
    me, found = os.getpid(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            if int(stat[stat.rindex(")") + 2:].split()[1]) != me:
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError, IndexError):
            continue
    return found


def reap_all(grace=3.0):
    """Reaps every child left after a run: those that end by themselves
    within `grace` seconds (Mitogen's, spore's router), then ssh's
    ControlPersist masters, ended with SIGTERM. Returns the number ended."""
    deadline = time.monotonic() + grace
    ended = 0
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return ended
        left = children()
        if left and (time.monotonic() > deadline or
                     all(cmd.startswith("ssh: ") and cmd.endswith("[mux]") for cmd in left.values())):
            break
        if not left and time.monotonic() > deadline + 5.0:
            break
        time.sleep(0.02)
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
            ended += 1
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            if not os.waitpid(-1, os.WNOHANG)[0]:
                time.sleep(0.02)
        except ChildProcessError:
            return ended
    for pid in children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass
    return ended


def cpu_of_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Bench:
    def __init__(self, work, tree, user):
        self.work = work
        self.user = pwd.getpwnam(user)
        self.quick = bool(os.environ.get("BENCH_QUICK"))
        self.runs = int(os.environ.get("BENCH_RUNS") or (1 if self.quick else 5))
        wanted = (os.environ.get("BENCH_ANSIBLE_MODES") or " ".join(MODES)).replace(",", " ").split()
        unknown = set(wanted) - set(MODES)
        if unknown:
            raise SystemExit("ansible_bench: unknown mode(s) in BENCH_ANSIBLE_MODES: %s" % " ".join(sorted(unknown)))
        self.modes = [m for m in MODES if m in wanted and not (m == "mitogen" and os.environ.get("BENCH_NO_MITOGEN"))]
        self.wall = {}    # (playbook, mode) -> [s]
        self.cpu = {}
        self.failed = {}  # (playbook, mode) -> why
        self.controller = os.path.join(work, "controller")  # root only
        os.mkdir(self.controller, 0o700)
        os.chmod(work, 0o755)  # the ssh account reaches its directories below
        self.home = os.path.join(self.controller, "home")
        self.control_dir = os.path.join(work, "cp")  # short: ControlPath is a Unix socket
        self.runtime = os.path.join(self.controller, "rt")
        self.src = os.path.join(self.controller, "src")
        for d in (self.home, self.runtime, self.src):
            os.mkdir(d, 0o700)
        os.mkdir(self.control_dir, 0o700)
        self.inventory = self.make_inventory(user)
        open(os.path.join(self.controller, "ansible.cfg"), "w").close()
        self.make_sources()
        self.spore = self.snapshot_spore(tree)
        self.env = {mode: self.make_env(mode) for mode in ("floor",) + MODES}

    def make_inventory(self, user):
        with open(os.path.join(PLAYBOOKS, "inventory.ini.in")) as f:
            text = f.read()
        for name, value in (("PORT", os.environ["SPORE_TEST_SSHD_PORT"]), ("USER", user),
                            ("KEY", os.environ["SPORE_TEST_KEY"]),
                            ("KNOWN_HOSTS", os.environ["SPORE_TEST_KNOWN_HOSTS"])):
            text = text.replace("@%s@" % name, value)
        path = os.path.join(self.controller, "inventory.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def make_sources(self):
        """100 files of 1-2 KiB, each different, for copy100.yml."""
        for i in range(100):
            line = ("file %03d of spore's Ansible benchmark " % i).encode() + b"x" * 60 + b"\n"
            with open(os.path.join(self.src, "file%03d.txt" % i), "wb") as f:
                f.write(line * (10 + i % 10))

    def snapshot_spore(self, tree):
        """A copy of the build's Python package, library and agent: the
        build tree may be rebuilt while the suite runs."""
        dst = os.path.join(self.controller, "spore")
        os.makedirs(os.path.join(dst, "lib"))
        shutil.copytree(os.path.join(tree, "python", "spore"), os.path.join(dst, "python", "spore"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        lib = os.path.join(tree, "libspore.so.0")
        if os.path.exists(lib):
            shutil.copy2(os.path.realpath(lib), os.path.join(dst, "lib", "libspore.so.0"))
        shutil.copy2(os.path.join(tree, "spore-agent"), os.path.join(dst, "spore-agent"))
        return dst

    def make_env(self, mode):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANSIBLE_", "SPORE_", "PYTHON", "MITOGEN_")) and k != "LD_LIBRARY_PATH"}
        env.update(
            HOME=self.home,
            ANSIBLE_CONFIG=os.path.join(self.controller, "ansible.cfg"),  # empty: every default
            ANSIBLE_LOCAL_TEMP=os.path.join(self.home, ".ansible", "tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=self.control_dir,
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_PIPELINING="True" if mode == "pipelining" else "False",
        )
        if mode == "mitogen":
            env.update(ANSIBLE_STRATEGY_PLUGINS=MITOGEN_STRATEGY, ANSIBLE_STRATEGY="mitogen_linear")
        elif mode == "spore":
            env.update(PYTHONPATH=os.path.join(self.spore, "python"),
                       LD_LIBRARY_PATH=os.path.join(self.spore, "lib"),
                       SPORE_AGENT_PATH=os.path.join(self.spore, "spore-agent"),
                       XDG_RUNTIME_DIR=self.runtime)
            plugins = subprocess.run(["/usr/bin/python3", "-m", "spore.ansible"], env=env, check=True,
                                     stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
            env.update(ANSIBLE_STRATEGY_PLUGINS=plugins, ANSIBLE_STRATEGY="spore_linear")
        return env

    def run(self, spec, mode, label):
        """One ansible-playbook run: (wall s, controller CPU s), or None
        and self.failed set."""
        name, playbook, hosts, expect = spec
        dest = os.path.join(self.work, mode, "%s-%s" % (name, label))
        for host in hosts:
            os.makedirs(os.path.join(dest, host))
        for d in [os.path.join(self.work, mode), dest] + [os.path.join(dest, h) for h in hosts]:
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        log = os.path.join(self.controller, "%s-%s-%s.log" % (name, mode, label))
        argv = [ANSIBLE_PLAYBOOK, "-i", self.inventory, playbook,
                "-e", "bench_dest=%s" % dest, "-e", "bench_src=%s" % self.src]
        cpu0 = cpu_of_children()
        with open(log, "wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, cwd=PLAYBOOKS, env=self.env[mode], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
            rc = proc.wait()
            wall = time.monotonic() - t0
        reap_all()
        cpu = cpu_of_children() - cpu0
        why = None
        if rc != 0:
            why = "ansible-playbook exited with %d" % rc
        else:
            missing = [os.path.join(h, p) for h in hosts for p in expect
                       if not os.path.isfile(os.path.join(dest, h, p))]
            if missing:
                why = "%d files it should have written are missing (%s ...)" % (len(missing), missing[0])
        shutil.rmtree(dest, ignore_errors=True)
        if why:
            self.report_failure(name, mode, why, log)
            return None
        progress("%s %s %s: %.3f s, cpu %.3f s" % (name, mode, label, wall, cpu))
        return wall, cpu

    def report_failure(self, name, mode, why, log):
        saved = os.path.join(ROOT, "bench-results", "ansible-%s-%s.log" % (name, mode))
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        shutil.copyfile(log, saved)
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
        first = next((ln for ln in lines if ln.startswith(("fatal:", "failed:", "ERROR!"))), None)
        self.failed[(name, mode)] = why
        note("%s in mode %s FAILED: %s; %s (log: %s)" % (name, mode, why, (first or "")[:400], saved))

    def plan(self, specs=PLAYBOOK_SPECS):
        """(spec, mode) pairs of one repetition."""
        pairs = []
        for spec in specs:
            for mode in (("floor",) if spec[0].startswith("floor_") else self.modes):
                pairs.append((spec, mode))
        return pairs

    def measure(self):
        if not self.quick:
            # Untimed: page cache, the spore agent cached on the target, etc.
            for spec, mode in self.plan(PLAYBOOK_SPECS[:2]):
                self.run(spec, mode, "warmup")
        pairs = self.plan()
        for rep in range(self.runs):
            # Each repetition starts at another mode, so none is always first.
            for spec, mode in pairs[rep % len(pairs):] + pairs[:rep % len(pairs)]:
                if (spec[0], mode) in self.failed:
                    continue
                got = self.run(spec, mode, str(rep))
                if got:
                    self.wall.setdefault((spec[0], mode), []).append(got[0])
                    self.cpu.setdefault((spec[0], mode), []).append(got[1])

    def write(self, ours_path, base_path):
        ours, base = [], []

        def metric(playbook, mode):
            if mode in ("floor", "spore", "mitogen"):
                return playbook
            return "%s_%s" % (mode, playbook)

        for (playbook, mode), walls in sorted(self.wall.items()):
            out = base if mode == "mitogen" else ours
            prefix = metric(playbook, mode)
            out.append("sample %s_wall s %s" % (prefix, " ".join("%.4f" % v for v in walls)))
            out.append("sample %s_cpu s %s" % (prefix, " ".join("%.4f" % v for v in self.cpu[(playbook, mode)])))
        # Overhead over the floor, run by run (the runs of a repetition
        # are close in time): what a mode adds to Ansible's own cost.
        floor = self.wall.get(("floor_mixed", "floor"), [])
        overhead = {}
        for mode in self.modes:
            walls = self.wall.get(("mixed", mode), [])
            if walls and len(walls) == len(floor):
                overhead[mode] = [w - f for w, f in zip(walls, floor)]
                out = base if mode == "mitogen" else ours
                out.append("sample %s_overhead s %s" % (metric("mixed", mode),
                                                        " ".join("%.4f" % v for v in overhead[mode])))
        if "spore" in overhead and "mitogen" in overhead:
            s, m = statistics.median(overhead["spore"]), statistics.median(overhead["mitogen"])
            if m > 0:
                ours.append("sample mixed_overhead_vs_mitogen x %.4f" % (s / m))
                ours.append("info mixed_overhead_vs_mitogen spore_s %.3f" % s)
                ours.append("info mixed_overhead_vs_mitogen mitogen_s %.3f" % m)
        if ("copy100", "spore") in self.wall and ("copy100", "mitogen") in self.wall:
            s = statistics.median(self.wall[("copy100", "spore")])
            m = statistics.median(self.wall[("copy100", "mitogen")])
            ours.append("sample copy100_vs_mitogen x %.4f" % (s / m))
            ours.append("info copy100_vs_mitogen spore_s %.3f" % s)
            ours.append("info copy100_vs_mitogen mitogen_s %.3f" % m)
        try:
            import mitogen
            base.append("info mitogen version %s" % ".".join(str(v) for v in mitogen.__version__))
        except ImportError:
            pass
        with open(ours_path, "a") as f:
            f.writelines(line + "\n" for line in ours)
        with open(base_path, "a") as f:
            f.writelines(line + "\n" for line in base)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    for var in ("SPORE_TEST_KEY", "SPORE_TEST_SSHD_PORT", "SPORE_TEST_KNOWN_HOSTS"):
        if not os.environ.get(var):
            sys.stderr.write("ansible_bench: %s is not set (source tests/harness's env files)\n" % var)
            return 2
    tree = os.path.abspath(os.environ.get("BENCH_ANSIBLE_BUILD") or os.path.join(ROOT, "build"))
    if not os.path.isdir(os.path.join(tree, "python", "spore", "ansible")):
        sys.stderr.write("ansible_bench: no spore.ansible in %s/python (build it first)\n" % tree)
        return 2
    if not os.path.isdir(MITOGEN_STRATEGY) and not os.environ.get("BENCH_NO_MITOGEN"):
        note("ansible-mitogen is not installed (%s): the Mitogen baseline is skipped" % MITOGEN_STRATEGY)
        os.environ["BENCH_NO_MITOGEN"] = "1"
    become_subreaper()
    work = tempfile.mkdtemp(prefix="spore-bench-ansible-", dir="/tmp")
    try:
        bench = Bench(work, tree, os.environ.get("BENCH_ANSIBLE_USER") or "spore-test-sudo-nopw")
        version = subprocess.run([ANSIBLE_PLAYBOOK, "--version"], stdout=subprocess.PIPE,
                                 universal_newlines=True).stdout.splitlines()[0]
        note("%s (Debian), spore from %s (copied to %s for the run); modes: floor %s; %d run%s each%s"
             % (version, tree, bench.spore, " ".join(bench.modes), bench.runs, "" if bench.runs == 1 else "s",
                ", no warm-up" if bench.quick else ", after one untimed warm-up of floor_mixed.yml and mixed.yml"))
        bench.measure()
        bench.write(argv[1], argv[2])
    finally:
        reap_all(grace=1.0)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
