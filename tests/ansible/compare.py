#!/usr/bin/python3
"""Runs a playbook under vanilla Ansible and under spore's strategy, at
the same time, against the test harness's sshd and real accounts, and
checks that both give the same per-host ok/changed/failed/skipped/
unreachable counts and leave the same files (paths, types, modes, owners,
contents) in their output directories.

Usage: compare.py PLAYBOOK [--spore-only] [--no-recap] [--verbose N] [--expect-output RE]
                  [--forbid-output RE] [--strategy NAME] [--vanilla-no-pipelining]
Environment: SPORE_TEST_HARNESS (the harness state dir, made by
tests/harness), PYTHONPATH with the built `spore` package,
SPORE_AGENT_PATH. Exits 77 (skipped) without a harness.

The playbook gets the variable `out` (a directory of its own per mode,
mode 1777, which every account may write) and `mode` ("vanilla" or
"spore"); everything it leaves in `out` is compared. Paths outside `out`
must include {{ mode }} so the two runs do not meet.
"""
import argparse
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYBOOKS = os.path.join(HERE, "playbooks")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                   r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


def harness_env():
    state = os.environ.get("SPORE_TEST_HARNESS")
    if not state or not os.path.isfile(os.path.join(state, "env")):
        print("SKIP: no test harness (SPORE_TEST_HARNESS)")
        sys.exit(77)
    values = {}
    for name in ("env", "sshd/env"):
        with open(os.path.join(state, name)) as f:
            for line in f:
                m = re.match(r"export (\w+)='(.*)'$", line.strip())
                if m:
                    values[m.group(1)] = m.group(2)
    return values


def write_inventory(path, h):
    """Hosts on the harness's sshd, one per kind of account and become
    method, plus this machine through `local` and through paramiko (a
    connection type spore leaves to vanilla)."""
    common = ("ansible_host=127.0.0.1 ansible_port={port} ansible_ssh_private_key_file={key} "
              "ansible_python_interpreter=/usr/bin/python3 "
              "ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o LogLevel=ERROR'").format(
        port=h["SPORE_TEST_SSHD_PORT"], key=h["SPORE_TEST_KEY"], kh=h["SPORE_TEST_KNOWN_HOSTS"])
    lines = [
        "[ssh]",
        "sudo1 ansible_user=spore-test-sudo-nopw " + common,
        "sudo2 ansible_user=spore-test-sudo-pw ansible_become_password=%s %s" % (h["SPORE_TEST_PW_SUDO_PW"], common),
        "doas1 ansible_user=spore-test-doas-nopw ansible_become_method=doas " + common,
        "su1 ansible_user=spore-test-key ansible_become_method=su ansible_become_user=spore-test-target "
        "ansible_become_password=%s %s" % (h["SPORE_TEST_PW_TARGET"], common),
        "",
        "[password]",
        "pw1 ansible_user=spore-test-pw ansible_password=%s ansible_ssh_executable=/usr/bin/ssh "
        "ansible_host=127.0.0.1 ansible_port=%s ansible_python_interpreter=/usr/bin/python3 "
        "ansible_ssh_common_args='-o UserKnownHostsFile=%s -o LogLevel=ERROR'"
        % (h["SPORE_TEST_PW_PW"], h["SPORE_TEST_SSHD_PORT"], h["SPORE_TEST_KNOWN_HOSTS"]),
        "",
        "[ctl]",
        "ctl ansible_connection=local ansible_python_interpreter=/usr/bin/python3",
        "",
        "[paramiko]",
        "pk1 ansible_connection=paramiko_ssh ansible_user=spore-test-sudo-nopw "
        "ansible_paramiko_host_key_checking=false ansible_paramiko_look_for_keys=false " + common,
        "",
        "[nopython]",
        "nopy ansible_user=spore-test-sudo-nopw %s ansible_python_interpreter=/nonexistent/python3"
        % common.replace("ansible_python_interpreter=/usr/bin/python3 ", ""),
        "",
        "[broken]",
        "unreach ansible_host=127.0.0.1 ansible_port=1 ansible_user=spore-test-sudo-nopw "
        "ansible_ssh_private_key_file=%s" % h["SPORE_TEST_KEY"],
        "badkey ansible_user=spore-test-sudo-nopw ansible_host=127.0.0.1 ansible_port={port} "
        "ansible_ssh_private_key_file={key} ansible_ssh_common_args='-o UserKnownHostsFile={bad}'".format(
            port=h["SPORE_TEST_SSHD_PORT"], key=h["SPORE_TEST_KEY"], bad=os.path.join(os.path.dirname(path),
                                                                                      "bad_known_hosts")),
        "badpw ansible_user=spore-test-sudo-pw ansible_become_password=wrong-password " + common,
        "",
        "[via]",
        "viahost ansible_user=spore-test-key spore_via=sudo:root@sudo1 " + common,
        "",
        "[cyclic]",
        "cyc1 ansible_user=spore-test-key spore_via=cyc2 " + common,
        "cyc2 ansible_user=spore-test-key spore_via=cyc1 " + common,
        "",
    ]
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write("\n".join(lines))
    # A known_hosts that names the sshd with another key: a host key mismatch.
    with open(h["SPORE_TEST_KNOWN_HOSTS"]) as f:
        first = f.readline().split()
    with open(os.path.join(os.path.dirname(path), "bad_known_hosts"), "w") as f:
        f.write("%s ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPN8vGIY1Q3ez6VzJfQ3lmNXDw6bQbF6lU9MhXqL8cWk\n" % first[0])


def run_playbook(mode, playbook, workdir, out, args):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCAL_TEMP": os.path.join(workdir, mode, "local-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(workdir, mode, "cp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LIBRARY": os.path.join(PLAYBOOKS, "library"),
        "ANSIBLE_MODULE_UTILS": os.path.join(PLAYBOOKS, "module_utils"),
        "ANSIBLE_FORKS": "8",
        "ANSIBLE_LOG_PATH": os.path.join(workdir, mode, "ansible.log"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(PLAYBOOKS, "collections"),
        # Local tasks see Ansible's own environment (compat.yml).
        "SPORE_CONTROLLER_VAR": "from-the-controller",
    })
    if mode == "spore":
        plugins = subprocess.check_output(["/usr/bin/python3", "-m", "spore.ansible"], env=env, text=True).strip()
        env["ANSIBLE_STRATEGY_PLUGINS"] = plugins
        env["ANSIBLE_STRATEGY"] = args.strategy
    else:
        env["ANSIBLE_STRATEGY"] = args.strategy.replace("spore_", "")
        # Pipelining makes vanilla several times faster here; su and async
        # still go through remote files, as they always do.
        env["ANSIBLE_PIPELINING"] = "False" if args.vanilla_no_pipelining else "True"
        # Vanilla's ssh keeps ControlPersist masters (in this run's own
        # directory; stop_control_masters() ends them after the run).
        env["ANSIBLE_SSH_ARGS"] = "-C -o ControlMaster=auto -o ControlPersist=120s"
        # ansible-core has no doas become plugin; spore's serves both.
        env["ANSIBLE_BECOME_PLUGINS"] = os.path.join(
            subprocess.check_output(["/usr/bin/python3", "-c", "import spore.ansible, os; "
                                     "print(os.path.dirname(spore.ansible.__file__))"], env=env, text=True).strip(),
            "plugins", "become")
    argv = ["/usr/bin/ansible-playbook", "-i", os.path.join(workdir, "inventory.ini"), playbook,
            "-e", "out=%s mode=%s" % (out, mode)]
    if args.verbose:
        argv.append("-" + "v" * args.verbose)
    log = open(os.path.join(workdir, mode + ".log"), "w+")
    proc = subprocess.Popen(argv, cwd=os.path.dirname(playbook), env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def stop_control_masters(directory):
    """Ends the ssh ControlPersist masters vanilla left in its directory."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        subprocess.run(["ssh", "-o", "ControlPath=" + os.path.join(directory, name), "-O", "exit", "spore-test"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def recap(text):
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                         "failed": int(m.group(5)), "skipped": int(m.group(6)), "rescued": int(m.group(7)),
                         "ignored": int(m.group(8))} for m in RECAP.finditer(text)}


def snapshot(root):
    """{relative path: (type, mode, owner uid, size, sha256 or link)}"""
    files = {}
    for base, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = ("link", 0, st.st_uid, 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                files[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, 0, "")
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                files[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_size, digest)
    return files


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("playbook")
    parser.add_argument("--spore-only", action="store_true")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--expect-output", action="append", default=[])
    parser.add_argument("--forbid-output", action="append", default=[])
    parser.add_argument("--at-most", nargs=2, action="append", default=[], metavar=("RE", "N"),
                        help="spore's output matches RE at most N times")
    parser.add_argument("--strategy", default="spore_linear")
    parser.add_argument("--no-recap", action="store_true", help="the playbook fails before any task runs")
    parser.add_argument("--log-expect", action="append", default=[], help="a pattern spore's log_path file must have")
    parser.add_argument("--log-forbid", action="append", default=[], help="a pattern it must not have")
    parser.add_argument("--vanilla-no-pipelining", action="store_true",
                        help="vanilla without pipelining (slower; modules go through remote files)")
    args = parser.parse_args()
    h = harness_env()
    playbook = os.path.join(PLAYBOOKS, args.playbook)
    workdir = tempfile.mkdtemp(prefix="spore-ansible-test-")
    os.chmod(workdir, 0o711)  # the accounts reach out/ (1777) through it
    failures = []
    try:
        write_inventory(os.path.join(workdir, "inventory.ini"), h)
        modes = ["spore"] if args.spore_only else ["vanilla", "spore"]
        running = {}
        started = time.monotonic()
        for mode in modes:
            os.makedirs(os.path.join(workdir, mode, "local-tmp"))
            os.makedirs(os.path.join(workdir, mode, "cp"), mode=0o700)
            os.chmod(os.path.join(workdir, mode), 0o711)
            out = os.path.join(workdir, mode, "out")
            os.mkdir(out)
            os.chmod(out, 0o1777)
            running[mode] = run_playbook(mode, playbook, workdir, out, args)
        results = {}
        elapsed = {}
        while len(elapsed) < len(running):
            for mode, (proc, _) in running.items():
                if mode not in elapsed and proc.poll() is not None:
                    elapsed[mode] = time.monotonic() - started
            if time.monotonic() - started > 600:
                for proc, _ in running.values():
                    proc.kill()
            time.sleep(0.05)
        for mode, (proc, log) in running.items():
            rc = proc.wait()
            log.seek(0)
            text = log.read()
            log.close()
            results[mode] = (rc, text, recap(text))
            print("---- %s (rc %d, %.1f s) ----" % (mode, rc, elapsed[mode]))
            print(text)
        spore_rc, spore_text, spore_recap = results["spore"]
        if not spore_recap and not args.no_recap:
            failures.append("spore: no PLAY RECAP")
        for pattern in args.expect_output:
            if not re.search(pattern, spore_text, re.M):
                failures.append("spore: output lacks %r" % pattern)
        log_path = os.path.join(workdir, "spore", "ansible.log")
        log_text = open(log_path, errors="replace").read() if os.path.exists(log_path) else ""
        for pattern in args.log_expect:
            if not re.search(pattern, log_text, re.M):
                failures.append("spore: log_path lacks %r" % pattern)
        for pattern in args.log_forbid:
            if re.search(pattern, log_text, re.M):
                failures.append("spore: log_path has %r" % pattern)
        for pattern, most in args.at_most:
            count = len(re.findall(pattern, spore_text, re.M))
            if count > int(most):
                failures.append("spore: output matches %r %d times (at most %s)" % (pattern, count, most))
        for pattern in args.forbid_output:
            if re.search(pattern, spore_text, re.M):
                failures.append("spore: output has %r" % pattern)
        if spore_recap and not spore_text.rstrip().splitlines()[-1].split()[0] in spore_recap:
            failures.append("spore: something was printed after the PLAY RECAP")
        if "vanilla" in results:
            vanilla_rc, _, vanilla_recap = results["vanilla"]
            if vanilla_rc != spore_rc:
                failures.append("exit status: vanilla %d, spore %d" % (vanilla_rc, spore_rc))
            for host in sorted(set(vanilla_recap) | set(spore_recap)):
                if vanilla_recap.get(host) != spore_recap.get(host):
                    failures.append("%s: vanilla %s, spore %s" % (host, vanilla_recap.get(host), spore_recap.get(host)))
            ours = snapshot(os.path.join(workdir, "spore", "out"))
            theirs = snapshot(os.path.join(workdir, "vanilla", "out"))
            for rel in sorted(set(ours) | set(theirs)):
                if ours.get(rel) != theirs.get(rel):
                    failures.append("out/%s: vanilla %s, spore %s" % (rel, theirs.get(rel), ours.get(rel)))
                    for mode in ("vanilla", "spore"):
                        path = os.path.join(workdir, mode, "out", rel)
                        if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < 2048:
                            with open(path, "rb") as f:
                                failures.append("  %s: %r" % (mode, f.read()))
    finally:
        stop_control_masters(os.path.join(workdir, "vanilla", "cp"))
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("same results as vanilla" if not args.spore_only else "passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
