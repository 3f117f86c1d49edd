#!/usr/bin/env bash
# Suite-wide leak check, run by ctest as a fixture around every test:
#   leak_check.sh start <state-dir>   records what exists before the suite
#   leak_check.sh end <state-dir> [build-dir]
#                                     fails if the suite left spore agents,
#                                     orphans, zombies or temp entries behind
set -euo pipefail
mode=$1
state=$2
build=${3:-}
mkdir -p "$state"

agents() { # pid of every process whose command line carries a spore label
  for d in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null || true)
    case "$cmd" in *spore:*|*spore-agent*) echo "${d#/proc/}";; esac
  done | sort
}
# Zombies whose parent is init are being collected by init (on some VMs only
# after a few seconds) and were not left by a live process of the suite.
zombies() { ps -eo pid=,ppid=,stat= | awk '$3 ~ /^Z/ && $2 != 1 {print $1}' | sort; }
# Processes reparented to init that a test of this build started and lost,
# such as a program an agent started as it exited (its command line no
# longer names spore, so agents() would not see it). They are told from the
# machine's other processes by SPORE_BUILD_DIR, which every test's
# environment has and local agents pass on; what went through sudo or ssh
# lost it, and is not seen here.
orphans() {
  local tag="SPORE_BUILD_DIR=${build:-}"
  [ -n "${build:-}" ] || return 0
  for p in $(ps -eo pid=,ppid= | awk '$2 == 1 {print $1}'); do
    env=$( { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null) || continue
    if grep -qxF -- "$tag" <<<"$env"; then echo "$p"; fi
  done | sort
}
temps() { ls -d /tmp/spore* /dev/shm/spore* /var/tmp/spore* 2>/dev/null | sort || true; }

if [ "$mode" = start ]; then
  agents >"$state/agents"
  zombies >"$state/zombies"
  temps >"$state/temps"
  exit 0
fi

fail=0
# Give agents that are on their way out a moment.
for _ in $(seq 1 50); do
  new=$(comm -13 "$state/agents" <(agents) || true)
  [ -z "$new" ] && break
  sleep 0.1
done
if [ -n "$new" ]; then
  echo "leak check: spore processes left behind:"
  for p in $new; do echo "  $p $( { tr '\0' ' ' </proc/$p/cmdline; } 2>/dev/null)"; done
  fail=1
fi
for _ in $(seq 1 30); do
  newo=$(orphans)
  [ -z "$newo" ] && break
  sleep 0.1
done
if [ -n "$newo" ]; then
  echo "leak check: processes left behind, reparented to init:"
  ps -o pid,ppid,stat,etime,cmd -p "$(echo $newo | tr ' ' ,)" || true
  fail=1
fi
# A zombie counts only if it stays one: a process that exited a moment ago
# is reaped by its parent shortly.
for _ in $(seq 1 30); do
  newz=$(comm -13 "$state/zombies" <(zombies) || true)
  [ -z "$newz" ] && break
  sleep 0.1
done
if [ -n "$newz" ]; then
  echo "leak check: zombies left behind: $newz"
  ps -o pid,ppid,stat,cmd -p "$(echo $newz | tr ' ' ,)" || true
  fail=1
fi
newt=$(comm -13 "$state/temps" <(temps) || true)
if [ -n "$newt" ]; then
  echo "leak check: temporary files or directories left behind:"
  echo "$newt" | sed 's/^/  /'
  fail=1
fi
[ $fail -eq 0 ] && echo "leak check: no processes, orphans, zombies or temp entries left behind"
exit $fail
