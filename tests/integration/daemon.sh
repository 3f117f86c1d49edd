#!/bin/bash
# `spore daemon` and `--daemon`: separate CLI processes share the daemon's
# connections (the same agent answers every command), rsync goes through the
# shim over the daemon, with the harness also through ssh and sudo (one ssh
# connection for many commands); a command that is interrupted or killed
# stops what it started while the daemon and its contexts stay; errors of
# the daemon command; --stop shuts everything down.
set -euo pipefail
cli=${SPORE_CLI:?}
work=$(mktemp -d /tmp/spore-daemon-test.XXXXXX)
sock=$work/run/d.sock
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -9 "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$work/log" ] && sed 's/^/  daemon log: /' "$work/log"; exit 1; }
json_num() { sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" | head -1; }
# Waits up to 10 s for a process whose command line is exactly $1 to
# appear (want=1) or be gone (want=0). (Exactly: the spore command that runs
# it has the same words in its own command line.)
wait_proc() {
    local marker=$1 want=$2 i
    for i in $(seq 1 200); do
        if pgrep -f -- "^$marker\$" >/dev/null; then [ "$want" = 1 ] && return 0; else [ "$want" = 0 ] && return 0; fi
        sleep 0.05
    done
    return 1
}

out=$("$cli" daemon --socket "$sock" --log-file "$work/log" -v)
[ "$out" = "$sock" ] || fail "daemon printed '$out', not its socket"
daemon_pid=$(cat "$sock.pid")
[ "$(stat -c %a "$sock")" = 600 ] || fail "socket mode $(stat -c %a "$sock")"
[ "$(stat -c %a "$work/run")" = 700 ] || fail "socket directory mode $(stat -c %a "$work/run")"
"$cli" daemon --status --socket "$sock" >/dev/null || fail "--status does not see the daemon"
echo "ok: daemon started (pid $daemon_pid), socket 0600 in a 0700 directory"

# Separate processes, one agent.
p1=$("$cli" --daemon "$sock" call local sys.info | json_num pid)
p2=$(SPORE_DAEMON=$sock "$cli" call local sys.info | json_num pid)
[ -n "$p1" ] && [ "$p1" = "$p2" ] || fail "two commands got agents $p1 and $p2, not the same one"
f1=$("$cli" --daemon "$sock" call local/fork sys.info | json_num pid)
f2=$("$cli" --daemon "$sock" call local/fork sys.info | json_num pid)
[ "$f1" = "$f2" ] && [ "$f1" != "$p1" ] || fail "local/fork: agents $f1 and $f2"
[ "$("$cli" --daemon "$sock" run local/fork -- echo hello)" = hello ] || fail "run through the daemon"
set +e
"$cli" --daemon "$sock" run local -- sh -c 'exit 9'
rc=$?
set -e
[ $rc = 9 ] || fail "exit status $rc through the daemon, not 9"
echo "ok: commands share the daemon's agents (pid $p1, fork $f1)"

# rsync over the shim, through the daemon.
mkdir -p "$work/src/a"
head -c 1000000 /dev/urandom >"$work/src/a/big"
for i in $(seq 1 30); do echo "file $i" >"$work/src/a/f$i"; done
if command -v rsync >/dev/null; then
    rsync -a -e "$cli --daemon $sock ssh-shim --target local/fork" "$work/src/" "x:$work/dst/"
    diff -r "$work/src" "$work/dst" || fail "rsync through the daemon: trees differ"
    echo "ok: rsync through ssh-shim and the daemon"
fi

# An interrupted command stops its process; the daemon carries on.
"$cli" --daemon "$sock" run local -- sleep 4243.25 &
client=$!
wait_proc "sleep 4243.25" 1 || fail "the command did not start"
kill -INT "$client"
wait "$client" || true
wait_proc "sleep 4243.25" 0 || fail "sleep still runs after its command was interrupted"
# A killed one too (SIGKILL: no chance to clean up; the daemon does it).
"$cli" --daemon "$sock" run local -- sleep 4243.5 &
client=$!
wait_proc "sleep 4243.5" 1 || fail "the command did not start"
kill -KILL "$client"
wait "$client" 2>/dev/null || true
wait_proc "sleep 4243.5" 0 || fail "sleep still runs after its command was killed"
p3=$("$cli" --daemon "$sock" call local sys.info | json_num pid)
[ "$p3" = "$p1" ] || fail "the daemon's agent changed ($p1 -> $p3) after a client died"
echo "ok: interrupted and killed commands stop their processes, the daemon keeps its contexts"

if [ -n "${SPORE_TEST_HARNESS:-}" ] && [ -f "$SPORE_TEST_HARNESS/sshd/env" ]; then
    # shellcheck disable=SC1091
    . "$SPORE_TEST_HARNESS/sshd/env"
    key=$SPORE_TEST_HARNESS/id_ed25519
    key=${key//\//%2F}
    kh=${SPORE_TEST_KNOWN_HOSTS//\//%2F}
    target="ssh://spore-test-sudo-nopw@127.0.0.1:$SPORE_TEST_SSHD_PORT?identity_file=$key&known_hosts_file=$kh/sudo:root"
    s1=$("$cli" --daemon "$sock" call "$target" sys.info | json_num pid)
    start=$(date +%s%N)
    for i in 1 2 3 4 5; do
        s2=$("$cli" --daemon "$sock" call "$target" sys.info | json_num pid)
        [ "$s2" = "$s1" ] || fail "ssh/sudo: agent $s2, not $s1"
    done
    ms=$((($(date +%s%N) - start) / 5000000))
    [ "$("$cli" --daemon "$sock" run "$target" -- id -un)" = root ] || fail "not root through ssh and sudo"
    chmod 0755 "$work"
    rsync -a -e "$cli --daemon $sock ssh-shim --target $target" "$work/src/" "x:$work/dst-ssh/"
    diff -r "$work/src" "$work/dst-ssh" || fail "rsync through ssh, sudo and the daemon: trees differ"
    echo "ok: ssh and sudo through the daemon: one connection for every command (${ms} ms per later command)"
else
    echo "note: no harness: the ssh and sudo leg is skipped"
fi

# Errors.
set +e
msg=$("$cli" daemon --socket "$sock" 2>&1)
rc=$?
set -e
[ $rc = 1 ] && [[ $msg == *"already listens"* ]] || fail "second daemon on the same socket: rc $rc, '$msg'"
mkdir -m 0755 "$work/open"
set +e
msg=$("$cli" daemon --socket "$work/open/d.sock" 2>&1)
rc=$?
set -e
[ $rc = 1 ] && [[ $msg == *"open to other users"* ]] || fail "socket in a 0755 directory: rc $rc, '$msg'"
set +e
msg=$("$cli" --daemon "$work/none.sock" call local sys.ping 2>&1)
rc=$?
set -e
[ $rc = 3 ] && [[ $msg == *"no router listens at $work/none.sock"* ]] || fail "missing daemon: rc $rc, '$msg'"
set +e
msg=$("$cli" --daemon "$sock" --agent /bin/true call local sys.ping 2>&1)
rc=$?
set -e
[ $rc = 2 ] || fail "--agent with --daemon: rc $rc, '$msg'"
echo "ok: errors (busy socket, unsafe directory, no daemon, --agent)"

# Stop: the daemon shuts its contexts down and removes its files.
"$cli" daemon --stop --socket "$sock" 2>/dev/null
[ ! -e "$sock" ] && [ ! -e "$sock.pid" ] || fail "socket or pid file left after --stop"
for i in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$daemon_pid" 2>/dev/null || fail "daemon still running after --stop"
for pid in $p1 $f1; do ! kill -0 "$pid" 2>/dev/null || fail "agent $pid still running after --stop"; done
set +e
"$cli" daemon --status --socket "$sock" >/dev/null
rc=$?
set -e
[ $rc = 1 ] || fail "--status after --stop: rc $rc"
grep -q "attached" "$work/log" || fail "the daemon log does not show attached routers"
echo "ok: --stop shut the daemon and its agents down"
