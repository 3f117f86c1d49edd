#!/bin/bash
# A throw-away OpenSSH server on 127.0.0.1 for spore's tests.
#
#   sshd.sh start  STATE_DIR   start it (no-op if already running)
#   sshd.sh stop   STATE_DIR   stop it and every process of its sessions
#   sshd.sh status STATE_DIR   exit 0 if running
#
# Everything lives in STATE_DIR/sshd/; /etc/ssh is not touched.  The client
# key (STATE_DIR/id_ed25519) and the accounts come from accounts.sh.
# Needs root; exits 77 otherwise.  See README.md.
set -eu
umask 077
export LC_ALL=C

SSHD=${SPORE_TEST_SSHD_BIN:-/usr/sbin/sshd}
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi

die() { echo "sshd.sh: $*" >&2; exit 1; }

usage() { echo "usage: sshd.sh start|stop|status STATE_DIR" >&2; exit 2; }

shquote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "sshd.sh: must be run as root (uid is $(id -u)); skipping" >&2
        exit 77
    fi
}

[ $# -eq 2 ] || usage
CMD=$1
STATE=$2
case $STATE in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
STATE=${STATE%/}
DIR=$STATE/sshd
CFG=$DIR/sshd_config
PIDFILE=$DIR/sshd.pid
LOG=$DIR/sshd.log
PORTFILE=$DIR/port
REAPERPID=$DIR/reaper.pid
HERE=$(cd "$(dirname "$0")" && pwd)

# pid of the listening sshd (sshd -D, child of reaper.py), if it is running
# with our config.
listener_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CFG" || return 1
    echo "$pid"
}

# pid of our reaper.py, if it is running.
reaper_pid() {
    local pid
    [ -f "$REAPERPID" ] || return 1
    pid=$(cat "$REAPERPID" 2>/dev/null) || return 1
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CFG" || return 1
    echo "$pid"
}

# pids of every process below $1 (children, grandchildren, ...).
descendants() {
    ps -e -o pid= -o ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            n = split(kids[root], q, " ")
            while (n > 0) {
                p = q[n--]; print p
                m = split(kids[p], k, " ")
                for (i = 1; i <= m; i++) q[++n] = k[i]
            }
        }'
}

# pids whose command line mentions our config file: the listener, a
# reaper.py, and per-connection sshd processes that have not renamed
# themselves yet.
config_pids() {
    ps -ww -e -o pid= -o args= | awk -v cfg="$CFG" 'index($0, cfg) { print $1 }' |
    while read -r p; do
        # skip the awk/ps of this pipeline and other scripts naming $CFG
        case $(cat "/proc/$p/comm" 2>/dev/null) in
            sshd) echo "$p" ;;
            python*) tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'reaper\.py' && echo "$p" ;;
        esac
    done
}

free_port() {
    "$PYTHON" -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_config() {
    local port=$1
    cat >"$DIR/banner" <<'EOF'
*****************************************************************
Authorized use only. Never share your password with anyone.
Password: is not what we want here -- this banner is not a prompt.
[sudo] password for nobody: (this line is not a prompt either)
仅限授权使用。请勿与任何人分享您的密码。
الاستخدام مصرح به فقط. لا تشارك كلمة المرور الخاصة بك.
*****************************************************************
EOF
    cat >"$CFG" <<EOF
# spore-test throw-away sshd (tests/harness/sshd.sh).  Generated; do not edit.
ListenAddress 127.0.0.1
Port $port
HostKey $DIR/ssh_host_ed25519_key
HostKey $DIR/ssh_host_rsa_key
PidFile $PIDFILE
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
MaxStartups 200:30:400
MaxSessions 200
MaxAuthTries 10
LoginGraceTime 60
Banner $DIR/banner
Subsystem sftp internal-sftp
# No AcceptEnv line: the client's environment is not accepted (the default;
# sshd has no "AcceptEnv none" keyword, it would accept a variable named "none").
PrintMotd no
LogLevel VERBOSE

Match User spore-test-key
    PasswordAuthentication no
    KbdInteractiveAuthentication no
Match User spore-test-pw
    PubkeyAuthentication no
# Passwords only through keyboard-interactive (PAM), for that code path.
Match User spore-test-doas-pw
    PasswordAuthentication no
    KbdInteractiveAuthentication yes
EOF
    chmod 0600 "$CFG"
    chmod 0644 "$DIR/banner"
}

write_client_files() {
    local port=$1 t
    : >"$DIR/known_hosts.tmp"
    for t in ed25519 rsa; do
        echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$DIR/ssh_host_${t}_key.pub")" >>"$DIR/known_hosts.tmp"
    done
    mv -f "$DIR/known_hosts.tmp" "$DIR/known_hosts"
    cat >"$DIR/ssh_config" <<EOF
# spore-test client config for the throw-away sshd (tests/harness/sshd.sh).
# Use as: ssh -F $DIR/ssh_config -l USER spore-test-sshd
Host spore-test-sshd 127.0.0.1
    HostName 127.0.0.1
    Port $port
    UserKnownHostsFile $DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    IdentityAgent none
    BatchMode yes
    ControlMaster no
    ControlPath none
    ConnectTimeout 10
EOF
    {
        echo "# spore-test throw-away sshd (tests/harness/sshd.sh); source me"
        echo "export SPORE_TEST_SSHD_HOST='127.0.0.1'"
        echo "export SPORE_TEST_SSHD_PORT='$port'"
        echo "export SPORE_TEST_KNOWN_HOSTS=$(shquote "$DIR/known_hosts")"
        echo "export SPORE_TEST_SSH_CONFIG=$(shquote "$DIR/ssh_config")"
        echo "export SPORE_TEST_SSH_HOST_ALIAS='spore-test-sshd'"
        echo "export SPORE_TEST_HOST_FP_ED25519='$(ssh-keygen -lf "$DIR/ssh_host_ed25519_key.pub" | cut -d' ' -f2)'"
        echo "export SPORE_TEST_HOST_FP_RSA='$(ssh-keygen -lf "$DIR/ssh_host_rsa_key.pub" | cut -d' ' -f2)'"
        echo "export SPORE_TEST_SSHD_LOG=$(shquote "$LOG")"
        echo "export SPORE_TEST_SSHD_BANNER=$(shquote "$DIR/banner")"
    } >"$DIR/env.tmp"
    mv -f "$DIR/env.tmp" "$DIR/env"
    chmod 0644 "$DIR/ssh_config" "$DIR/known_hosts" "$DIR/env"
}

cmd_start() {
    local port pid i t
    require_root
    [ -f "$STATE/id_ed25519" ] || echo "sshd.sh: warning: $STATE/id_ed25519 missing (run accounts.sh create first)" >&2
    mkdir -p "$DIR"
    chmod 0700 "$STATE" "$DIR"
    # privilege separation directory (normally made by the init script)
    mkdir -p /run/sshd
    chmod 0755 /run/sshd

    if pid=$(listener_pid) && port=$(cat "$PORTFILE" 2>/dev/null) && port_open "$port"; then
        write_client_files "$port"
        return 0
    fi
    cmd_stop_quiet

    for t in ed25519 rsa; do
        if [ ! -f "$DIR/ssh_host_${t}_key" ] || [ ! -f "$DIR/ssh_host_${t}_key.pub" ]; then
            rm -f "$DIR/ssh_host_${t}_key" "$DIR/ssh_host_${t}_key.pub"
            if [ "$t" = rsa ]; then
                ssh-keygen -q -t rsa -b 3072 -N '' -C spore-test-sshd -f "$DIR/ssh_host_${t}_key"
            else
                ssh-keygen -q -t ed25519 -N '' -C spore-test-sshd -f "$DIR/ssh_host_${t}_key"
            fi
        fi
    done

    # A port can be taken between free_port and sshd's bind(): retry.
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        write_config "$port"
        "$SSHD" -t -f "$CFG" || die "sshd -t rejected $CFG"
        : >>"$LOG"
        # sshd -D (no daemonizing) under reaper.py, a child subreaper: the
        # processes sshd leaves orphaned at the end of a connection are reaped
        # by it (not left as zombies of pid 1), and everything the sessions
        # start stays in one tree that "stop" kills.
        rm -f "$PIDFILE" "$REAPERPID"
        setsid -f "$PYTHON" "$HERE/reaper.py" "$REAPERPID" -- \
            "$SSHD" -D -f "$CFG" -E "$LOG" </dev/null >>"$LOG" 2>&1
        for i in $(seq 1 50); do
            if port_open "$port" && pid=$(listener_pid); then
                echo "$port" >"$PORTFILE"
                chmod 0644 "$PORTFILE"
                write_client_files "$port"
                return 0
            fi
            # sshd (and so reaper.py) exits at once when bind() fails
            if [ "$i" -gt 10 ] && ! reaper_pid >/dev/null; then break; fi
            sleep 0.1
        done
        cmd_stop_quiet
    done
    echo "sshd.sh: sshd did not come up; last log lines:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
}

# Kill the listener, everything below it and any sshd still naming our
# config; wait until all are gone.
cmd_stop_quiet() {
    local pid rpid all="" alive p i
    pid=$(listener_pid || true)
    rpid=$(reaper_pid || true)
    # reaper.py stops sshd and kills and reaps everything below it.
    if [ -n "$rpid" ]; then
        all="$rpid $(descendants "$rpid" | tr '\n' ' ')"
        kill -TERM "$rpid" 2>/dev/null || true
        for i in $(seq 1 50); do
            [ -d "/proc/$rpid" ] || break
            sleep 0.1
        done
    fi
    # Whatever is left (no reaper, or it failed): do it here.
    for i in $(seq 1 60); do
        # Remember every pid seen: children of a killed parent get reparented
        # and would no longer be found below the listener.
        for p in $rpid $pid $all; do
            [ -d "/proc/$p" ] && all="$all $p $(descendants "$p" | tr '\n' ' ')"
        done
        all="$all $(config_pids | tr '\n' ' ')"
        all=$(printf '%s\n' $all | sort -un | tr '\n' ' ')
        alive=""
        for p in $all; do
            # zombies count as gone (their parent reaps them or is gone too)
            if [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
                alive="$alive $p"
            fi
        done
        [ -n "$alive" ] || break
        # SIGTERM first (lets sshd log and clean up), then SIGKILL
        if [ "$i" -le 10 ]; then
            kill -TERM $alive 2>/dev/null || true
        else
            kill -KILL $alive 2>/dev/null || true
        fi
        sleep 0.1
    done
    if [ -n "$alive" ]; then
        echo "sshd.sh: warning: could not stop:$alive" >&2
        return 1
    fi
    rm -f "$PIDFILE" "$REAPERPID"
}

cmd_stop() {
    require_root
    [ -d "$DIR" ] || return 0
    cmd_stop_quiet
}

cmd_status() {
    listener_pid >/dev/null && port_open "$(cat "$PORTFILE" 2>/dev/null)"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
