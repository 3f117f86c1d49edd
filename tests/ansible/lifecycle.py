#!/usr/bin/python3
"""Nothing of a spore run outlives ansible-playbook: not when it ends, not
when it is interrupted with Ctrl-C (SIGINT to its process group, as a
terminal sends it), not when it is killed with SIGKILL.

Each case starts a playbook whose task sleeps, waits until the run's
router holds an ssh connection and the task runs, ends ansible-playbook
that way, and then requires, within 15 s: no daemon, no ssh client of the
run, no agent of the run on the target, and no socket directory left.
Run by ctest as ansible.lifecycle. Exits 77 without the test harness.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (the harness and inventory helpers)

PLAYBOOK = """
- hosts: sudo1
  gather_facts: false
  tasks:
    - command: sleep {seconds}
"""


def processes():
    """{pid: (ppid, command line)} of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = (ppid, cmd)
    return found


def of_run(marker):
    """The processes whose command line names this run's marker: the
    daemon (its socket path), ssh clients (their known_hosts copy) and the
    agents and workers they started on the target (label ansible-<marker>)."""
    return {pid: cmd for pid, (_, cmd) in processes().items() if marker in cmd and pid != os.getpid()}


def run_case(how, h, workdir):
    marker = os.path.basename(workdir)
    runtime = os.path.join(workdir, "runtime")
    os.mkdir(runtime, 0o700)
    inventory = os.path.join(workdir, "inventory.ini")
    # A known_hosts copy whose path carries the marker, so the run's ssh
    # clients can be told from every other test's.
    known = os.path.join(workdir, "known_hosts")
    with open(h["SPORE_TEST_KNOWN_HOSTS"]) as src, open(known, "w") as dst:
        dst.write(src.read())
    hv = dict(h, SPORE_TEST_KNOWN_HOSTS=known)
    compare.write_inventory(inventory, hv)
    playbook = os.path.join(workdir, "sleep.yml")
    with open(playbook, "w") as f:
        f.write(PLAYBOOK.format(seconds=60 if how != "end" else 1))
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "local-tmp"),
               ANSIBLE_STRATEGY="spore_linear", ANSIBLE_NOCOLOR="1",
               ANSIBLE_STRATEGY_PLUGINS=subprocess.check_output(["/usr/bin/python3", "-m", "spore.ansible"],
                                                                text=True).strip())
    log = open(os.path.join(workdir, how + ".log"), "w+")
    proc = subprocess.Popen(["/usr/bin/ansible-playbook", "-i", inventory, playbook], env=env, cwd=workdir,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    failures = []
    deadline = time.monotonic() + 60
    # Running: the daemon, an ssh client and the sleeping command.
    while time.monotonic() < deadline and proc.poll() is None:
        if how == "end":
            break
        sleeping = any(cmd.startswith("sleep 60") for cmd in processes_cmds())
        ssh_client = any(cmd.startswith("ssh ") for cmd in of_run(marker).values())
        if sleeping and ssh_client:
            break
        time.sleep(0.1)
    else:
        if how != "end":
            failures.append("%s: the run did not get to its task" % how)
    if how == "sigint":
        os.killpg(proc.pid, signal.SIGINT)
    elif how == "sigkill":
        proc.kill()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        failures.append("%s: ansible-playbook did not end" % how)
    if how == "sigkill":
        # Its forked workers are in its process group and die with it in
        # a terminal's Ctrl-\ or a supervisor's kill of the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    left = of_run(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = of_run(marker)
    if left:
        failures.append("%s: still running after ansible-playbook: %s" % (how, left))
    leftovers = [n for n in os.listdir(runtime) if n.startswith("spore-ansible-")]
    deadline = time.monotonic() + 5
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)
        leftovers = [n for n in os.listdir(runtime) if n.startswith("spore-ansible-")]
    if leftovers:
        failures.append("%s: socket directory left: %s" % (how, leftovers))
    log.seek(0)
    print("---- %s ----\n%s" % (how, log.read()))
    log.close()
    return failures


def processes_cmds():
    return [cmd for _, cmd in processes().values()]


def main():
    h = compare.harness_env()
    failures = []
    for how in ("end", "sigint", "sigkill"):
        workdir = tempfile.mkdtemp(prefix="spore-ansible-life-")
        try:
            failures += run_case(how, h, workdir)
        finally:
            subprocess.run(["rm", "-rf", workdir])
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("nothing outlived ansible-playbook")
    return 0


if __name__ == "__main__":
    sys.exit(main())
