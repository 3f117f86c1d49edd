#!/usr/bin/env python3
"""Turns the raw output of a benchmark suite into its report (scripts/bench).

usage: report.py SUITE JSON_OUT OURS_RAW [BASELINE_RAW]

OURS_RAW and BASELINE_RAW hold lines "sample <metric> <unit> <v>..." and
"info <metric> <key> <value>" (see tests/bench/core_bench.c and
tests/bench/mitogen_baseline.py). Prints one line per metric,
    <name> <median> <unit>[ baseline=<median> ratio=<ours/baseline>][ key=value...]
then, for the suites in BASELINE_ONLY, Mitogen-only rows
    mitogen_<metric> <median> <unit>[ vs=<ours> ratio=<ours/baseline>]
then "#" comment lines (goals, notes, baseline metrics Mitogen could not
measure: "info <metric> skipped <why>"), and writes JSON_OUT: an object
metric -> {median, unit, baseline?, ratio?, samples, goal, ...}.
Python 3 standard library only.
"""
import json
import os
import statistics
import sys

# metric -> (goal text, comparison, goal value, baseline metric, note)
# comparison: "<=" lower is better, ">=" higher is better, None: no goal.
SUITES = {
    "core": [
        ("connect_first_call", "<=", 5.0, "connect_first_call",
         "local connect (cached agent) + first sys.ping"),
        ("connect_first_contact", None, None, None,
         "local connect + first sys.ping with an empty agent cache (image sent with the strongest compression "
         "the target has, compressed during this connect); info: image_bytes, compress_ms, agent_to_child_bytes "
         "(what an agent ships its own child, gzip)"),
        ("connect_first_contact_later", None, None, None,
         "as connect_first_contact, into a second empty cache, from a router that already compressed the image"),
    ] + [
        ("connect_first_contact_" + form, None, None, None,
         "as connect_first_contact_later with agent_compress \"%s\", the form already made; info: image_bytes, "
         "compress_ms (making the form, once per process)" % option)
        for form, option in (("xz", "xz"), ("zstd", "zstd"), ("gzip", "gzip"), ("raw", "none"))
    ] + [
        ("floor_sh_spawn", None, None, None,
         "floor: posix_spawn of `/bin/sh -c true` + waitpid"),
        ("call_rtt", "<=", 30.0, "call_rtt",
         "blocking sys.ping round trip"),
        ("call_rtt_1cpu", None, None, None,
         "as call_rtt with the caller, the I/O thread and the agent pinned to CPU 0"),
        ("floor_pipe_rtt", None, None, None,
         "floor: 1-byte ping-pong over two pipes between two processes"),
        ("floor_pipe_rtt_1cpu", None, None, None,
         "floor: as floor_pipe_rtt, both processes pinned to CPU 0"),
        ("floor_pipe_rtt_2cpu", None, None, None,
         "floor: as floor_pipe_rtt, the processes pinned to CPUs 0 and 1"),
        ("pipelined_async", ">=", 300000.0, "pipelined_async",
         "N spore_call_async(sys.ping), then spore_call_wait of all"),
        ("pipelined_chain", ">=", 300000.0, "pipelined_async",
         "chain of N-1 no-reply sys.ping + one blocking step"),
        ("echo_1mib", ">=", 600.0, "echo_1mib",
         "sys.echo of 1 MiB binary; MB/s = 1 MiB / (round trip / 2), MB = 10^6 B"),
        ("floor_pipe_echo_1mib", None, None, None,
         "floor: 1 MiB through a pipe to a child echoing it back, same MB/s formula"),
        ("contexts_concurrent", "<=", 300.0, "contexts_concurrent",
         "100 local contexts opened at once from 100 threads"),
        ("agent_rss", "<=", 4.0, "agent_rss",
         "VmRSS of an idle agent after a few calls"),
        ("master_kib_per_child", "<=", 64.0, "master_kib_per_child",
         "controller VmRSS growth per idle direct local child, 1,000 held at once; "
         "baseline: Mitogen's master with 100 router.local() children"),
        ("master_kib_per_child_tree", None, None, None,
         "the same 1,000 contexts as 20 local children with 49 forks each"),
    ],
    "bindings": [
        ("call_rtt", None, None, None,
         "C: blocking spore_call(sys.ping) round trip (core_bench call_rtt, same run)"),
        ("py_call_rtt", "<=", lambda med: 2 * med["call_rtt"], "call_rtt",
         "Python: ctx.call('sys.ping'); goal: 2x the C figure of the same run; baseline: Mitogen context.call(noop)"),
        ("pipelined_async", None, None, None,
         "C: spore_call_async then spore_call_wait of each (core_bench, same run)"),
        ("py_pipelined_async", None, None, "pipelined_async",
         "Python: ctx.call_async('sys.ping') x N, then result() of each; baseline: Mitogen call_async"),
        ("rb_call_rtt", None, None, "call_rtt",
         "Ruby: ctx.call('sys.ping'); baseline: Mitogen context.call(noop) from Python"),
        ("rb_pipelined_async", None, None, "pipelined_async",
         "Ruby: ctx.call_async('sys.ping') x N, then value of each; baseline: Mitogen call_async"),
        ("go_call_rtt", "<=", lambda med: 2 * med["call_rtt"], "call_rtt",
         "Go: c.Call(ctx, 'sys.ping', nil); goal (ours): 2x the C figure; baseline: Mitogen context.call(noop)"),
        ("go_pipelined_async", None, None, "pipelined_async",
         "Go: c.CallAsync('sys.ping') x N, then Wait of each; baseline: Mitogen call_async"),
    ],
    "python": [
        ("py_connect_first_call", "<=", 40.0, "py_connect_first_call",
         "r.local() (agent cached) + the first call of a shipped function (worker started, module shipped); "
         "baseline: Mitogen router.local() + context.call of the same function"),
        ("py_call_rtt", "<=", 35.0, "py_call_rtt",
         "ctx.call(noop) of a shipped function, warm worker; baseline: Mitogen context.call(noop)"),
        ("py_pipelined", None, None, "py_pipelined",
         "10,000 ctx.call_async(noop), then result() of each; baseline: Mitogen call_async + get().unpickle()"),
        ("py_batch", ">=", 150000.0, "py_pipelined",
         "ctx.map(noop, range(10,000)): the batch submission path, one message and one reply for all; "
         "baseline: Mitogen call_async + get() (it has no batch path)"),
        ("py_echo_16mib", ">=", 500.0, "py_echo_16mib",
         "a function returning its 16 MiB bytes argument, 2 x 16 MiB per round trip; baseline: Mitogen with a Blob"),
        ("py_module_bytes_hop", "<=", 0.0, None,
         "module bytes the router sends for a second context behind the same parent calling a function that "
         "imports 10 of the caller's modules (cached at the hop)"),
    ],
    "files": [
        ("put_local_1gib", ">=", 800.0, "put_local_1gib",
         "spore_put_file of 1 GiB (/dev/shm to /dev/shm) to a local context, sync off; "
         "baseline: Mitogen FileService.get() into a router.local() child"),
        ("get_local_1gib", None, None, None,
         "spore_get_file of the same back"),
        ("floor_pipe_1gib", None, None, None,
         "floor: the same bytes through one pipe to a child that writes them"),
        ("files_1000x1k", "<=", 0.5, "files_1000x1k",
         "a tree of 1,000 files of 1 KiB to /tmp with spore_put_tree (one syncfs at the end); "
         "baseline: Mitogen, one call and FileService transfer per file, then one syncfs"),
        ("files_1000x1k_each", None, None, "files_1000x1k_each",
         "the same files, one spore_put_bytes each (an fsync each); "
         "baseline: Mitogen, one blocking call per file writing its Blob argument with an fsync"),
        ("files_1000x1k_each_nosync", None, None, "files_1000x1k_each_nosync",
         "as files_1000x1k_each with sync=false; baseline: the same Mitogen calls without the fsync"),
        ("ping_during_transfer_p50", None, None, None,
         "sys.ping every 2 ms during a 2 GiB put through two hops: median"),
        ("ping_during_transfer_p99", "<=", 5.0, None,
         "the same: 99th percentile"),
        ("peak_mem_per_hop", "<=", 16.0, None,
         "largest RSS growth of the master or an agent during a 2 GiB put through three hops"),
        ("put_ssh_1gib", ">=", lambda med: 1.3 * med["floor_scp_1gib"], "put_ssh_1gib",
         "spore_put_file of 1 GiB over ssh (libssh2) on loopback; goal: 1.3x scp of the same run; "
         "baseline: Mitogen FileService.get() into a router.ssh(compression=False) child"),
        ("put_ssh_openssh_1gib", ">=", lambda med: 1.3 * med["floor_scp_1gib"], "put_ssh_1gib",
         "as put_ssh_1gib with backend=openssh (the ssh client carries the stream, as Mitogen's does; "
         "AES-GCM first on a CPU with AES instructions); goal: 1.3x scp of the same run"),
        ("floor_scp_1gib", None, None, None,
         "floor: scp of the same file"),
        ("floor_ssh_cat_1gib", None, None, None,
         "floor: ssh host 'cat > file' < file"),
    ],
    "transports": [
        ("ssh_connect_first_call", "<=", 60.0, "ssh_connect_first_call",
         "ssh connect (libssh2, agent cached on the target) + first sys.ping"),
        ("ssh_connect_first_contact", "<=", 150.0, None,
         "ssh connect + first sys.ping with agent_cache off: the image is sent every time"),
        ("ssh_connect_first_call_openssh", None, None, "ssh_connect_first_call",
         "as ssh_connect_first_call with backend=openssh"),
        ("floor_openssh_exec", None, None, None,
         "floor: `ssh host true` with the OpenSSH client"),
        ("ssh_call_rtt", "<=", 80.0, "ssh_call_rtt",
         "blocking sys.ping round trip over ssh (libssh2)"),
        ("ssh_call_rtt_openssh", None, None, "ssh_call_rtt",
         "as ssh_call_rtt with backend=openssh"),
        ("floor_ssh_cat_rtt", None, None, None,
         "floor: 1-byte ping-pong through `ssh host cat` (OpenSSH)"),
        ("sudo_via_ssh_connect", "<=", 25.0, "sudo_via_ssh_connect",
         "sudo connect through an ssh context (agent cached) + first sys.ping: what sudo adds"),
        ("ssh_sudo_call_rtt", "<=", 120.0, "ssh_sudo_call_rtt",
         "sys.ping round trip over ssh -> sudo"),
        ("ssh_contexts_concurrent", "<=", 2000.0, None,
         "50 ssh contexts opened at once from 50 threads"),
        ("ssh_master_kib_per_session", "<=", 64.0, None,
         "controller VmRSS growth per idle ssh context (libssh2), 200 held at once; "
         "info: address space and threads per session"),
        ("wire_call_bytes", None, None, None,
         "TCP payload bytes (both ways) per sys.ping over ssh; info: bytes of a first contact and of a cached connect"),
    ],
    # tests/bench/ansible_bench.py: per playbook its floor (the same shape
    # with debug tasks), vanilla, pipelining and spore; Mitogen is the
    # baseline of spore's rows. _cpu: controller CPU of the same runs.
    "ansible": [
        row
        for playbook, what in (
            ("mixed", "mixed.yml: 4 hosts x 10 tasks (file, command, copy, template, stat, lineinfile, copy, shell, "
                      "replace, find)"),
            ("loop100", "loop100.yml: 1 host, a command task looping over 100 items"),
            ("copy100", "copy100.yml: 100 files of 1-2 KiB to each of 4 hosts, one copy each"),
        )
        for row in [
            ("floor_%s_wall" % playbook, None, None, None,
             "floor: %s with debug tasks only (no connection): Ansible's own cost" % what),
            ("floor_%s_cpu" % playbook, None, None, None, "controller CPU (user+sys) of the same runs"),
            ("vanilla_%s_wall" % playbook, None, None, None,
             "%s, ssh plugin defaults (ControlPersist), no pipelining" % what),
            ("vanilla_%s_cpu" % playbook, None, None, None,
             "controller CPU of the same runs: ansible-playbook, its forks, ssh and its ControlPersist masters"),
            ("pipelining_%s_wall" % playbook, None, None, None, "as vanilla, ANSIBLE_PIPELINING=True"),
            ("pipelining_%s_cpu" % playbook, None, None, None, "controller CPU of the same runs"),
            ("%s_wall" % playbook, "<=" if playbook == "loop100" else None, 1.5 if playbook == "loop100" else None,
             "%s_wall" % playbook, "%s, strategy spore_linear; baseline: mitogen_linear" % what),
            ("%s_cpu" % playbook, None, None, "%s_cpu" % playbook,
             "controller CPU of the same runs, spore's router included; baseline: Mitogen's, its processes included"),
        ] + ([
            ("vanilla_mixed_overhead", None, None, None, "vanilla_mixed_wall - floor_mixed_wall, run by run"),
            ("pipelining_mixed_overhead", None, None, None, "pipelining_mixed_wall - floor_mixed_wall, run by run"),
            ("mixed_overhead", None, None, "mixed_overhead",
             "mixed_wall - floor_mixed_wall, run by run: what running the tasks adds to Ansible's own cost; "
             "baseline: Mitogen's"),
            ("mixed_overhead_vs_mitogen", "<=", 0.4, None,
             "median mixed_overhead of spore / of Mitogen in the same run"),
        ] if playbook == "mixed" else [
            ("copy100_vs_mitogen", "<=", 0.5, None, "median copy100_wall of spore / of Mitogen in the same run"),
        ] if playbook == "copy100" else [])
    ],
}

# Baseline metrics with no spore metric of the same kind, printed after the
# table as "mitogen_<metric> <median> <unit> vs=<ours> ratio=<ours/baseline>":
# suite -> [(baseline metric, our metric to compare with or None, note)].
BASELINE_ONLY = {
    "files": [
        ("put_ssh_compressed_1gib", "put_ssh_openssh_1gib",
         "Mitogen FileService.get() over ssh with router.ssh()'s default compression=True "
         "(the source is incompressible)"),
        ("files_1000x1k_each_pipelined", "files_1000x1k_each_nosync",
         "Mitogen: 1,000 call_no_reply() writing a Blob each, then one blocking call, "
         "as ansible_mitogen's put_data() sends small files"),
    ],
}


def parse(path):
    samples, units, infos = {}, {}, {}
    if not path or not os.path.exists(path):
        return samples, units, infos
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[0] == "sample":
                metric, unit = parts[1], parts[2]
                samples.setdefault(metric, []).extend(float(v) for v in parts[3:])
                units[metric] = unit
            elif len(parts) >= 4 and parts[0] == "info":
                infos.setdefault(parts[1], {})[parts[2]] = " ".join(parts[3:])
    return samples, units, infos


def fmt(v):
    if v >= 1000:
        return "%.0f" % v
    if v >= 100:
        return "%.1f" % v
    if v >= 10:
        return "%.2f" % v
    return "%.3g" % v


def num(s):
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return s


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    suite, out_json, ours_raw = sys.argv[1:4]
    base_raw = sys.argv[4] if len(sys.argv) == 5 else None
    ours, units, infos = parse(ours_raw)
    base, base_units, base_infos = parse(base_raw)

    results, comments, missing = {}, [], []
    medians = {k: statistics.median(v) for k, v in ours.items() if v}
    for name, cmp, goal, base_name, note in SUITES[suite]:
        if callable(goal):
            try:
                goal = goal(medians)
            except KeyError:
                cmp, goal = None, None
        if name not in ours:
            missing.append(name)
            continue
        vals = ours[name]
        med = statistics.median(vals)
        unit = units[name]
        entry = {"median": med, "unit": unit, "samples": vals, "note": note,
                 "goal": ("%s %s %s" % (cmp, fmt(goal), unit)) if cmp else None}
        line = "%s %s %s" % (name, fmt(med), unit)
        if base_name and base_name in base:
            bmed = statistics.median(base[base_name])
            entry["baseline"] = bmed
            entry["baseline_samples"] = base[base_name]
            entry["baseline_source"] = "mitogen " + base_infos.get("mitogen", {}).get("version", "?")
            entry["ratio"] = med / bmed if bmed else None
            line += " baseline=%s ratio=%s" % (fmt(bmed), ("%.3g" % entry["ratio"]) if bmed else "inf")
            if base_infos.get(base_name, {}).get("extrapolated"):
                entry["baseline_note"] = "extrapolated: " + base_infos[base_name]["extrapolated"]
                comments.append("# %s baseline extrapolated: Mitogen %s" % (name, base_infos[base_name]["extrapolated"]))
        if name in infos:
            entry["info"] = {k: num(v) for k, v in infos[name].items()}
            for k, v in infos[name].items():
                line += " %s=%s" % (k, v)
        if cmp:
            met = med <= goal if cmp == "<=" else med >= goal
            entry["goal_met"] = met
            comments.append("# goal %s %s %s %s: %s" % (name, cmp, fmt(goal), unit, "met" if met else "MISSED"))
        lo, hi = min(vals), max(vals)
        if len(vals) > 2 and lo > 0 and hi / lo > 2.0:
            comments.append("# %s: runs spread from %s to %s %s (CPU placement or machine load; see docs/benchmarks.md)"
                            % (name, fmt(lo), fmt(hi), unit))
        results[name] = entry
        print(line)
    for bname, ours_name, note in BASELINE_ONLY.get(suite, []):
        if bname not in base:
            continue
        bmed = statistics.median(base[bname])
        name = "mitogen_" + bname
        entry = {"median": bmed, "unit": base_units[bname], "samples": base[bname], "note": note,
                 "goal": None,
                 "source": "mitogen " + base_infos.get("mitogen", {}).get("version", "?")}
        line = "%s %s %s" % (name, fmt(bmed), base_units[bname])
        if ours_name in medians and base_units[bname] == units[ours_name]:
            entry["compared_with"] = ours_name
            entry["ratio"] = medians[ours_name] / bmed if bmed else None
            line += " vs=%s ratio=%s" % (ours_name, ("%.3g" % entry["ratio"]) if bmed else "inf")
        extra = {k: v for k, v in base_infos.get(bname, {}).items() if k != "skipped"}
        if extra:
            entry["info"] = {k: num(v) for k, v in extra.items()}
            line += "".join(" %s=%s" % kv for kv in sorted(extra.items()))
        results[name] = entry
        print(line)
    sys.stdout.flush()
    for c in comments:
        print(c)
    for metric, kv in sorted(base_infos.items()):
        if "skipped" in kv:
            print("# Mitogen %s: not measured: %s" % (metric, kv["skipped"]))
    if not base:
        print("# no Mitogen baseline in this run (see the note above)")
    for m in missing:
        print("# metric %s: no measurement" % m)
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    print("# written %s" % out_json)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
