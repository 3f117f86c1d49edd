#!/bin/bash
# Smoke test of the harness itself: make the accounts, start the sshd, check
# with the real OpenSSH client, sudo, doas and su that everything behaves as
# the spore tests expect, then tear it all down and check nothing is left.
#
#   smoke.sh            (as root; exits 77 otherwise)
#
# Prints PASS/FAIL per check; exit status 1 if anything failed.
set -eu
export LC_ALL=C.UTF-8

HERE=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "smoke.sh: must be run as root (uid is $(id -u)); skipping" >&2
    exit 77
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
export PYTHON

STATE=$(mktemp -d /tmp/spore-test-smoke.XXXXXX)
OUT=$STATE/out
FAILED=0
CLEANED=0

# State of /etc/doas.conf before we start, to check "remove" restores it.
if [ -f /etc/doas.conf ]; then DOAS_BEFORE=$(sha256sum </etc/doas.conf); else DOAS_BEFORE=absent; fi

cleanup() {
    [ "$CLEANED" = 1 ] && return 0
    CLEANED=1
    "$HERE/sshd.sh" stop "$STATE" || true
    "$HERE/accounts.sh" remove "$STATE" || true
    rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS: $1"; }
fail() {
    echo "FAIL: $1"
    FAILED=1
    if [ -f "$OUT" ]; then sed 's/^/    | /' "$OUT" | tr -d '\r' | head -n 40; fi
}

# expect_ok NAME PATTERN CMD...   : CMD exits 0 and its output (stdout +
#                                   stderr) matches the grep -E PATTERN
# expect_fail NAME PATTERN CMD... : CMD exits non-zero, output matches PATTERN
# (stderr and stdout are mixed: a password prompt, which has no newline,
# shares its line with the first line the command prints.)
matches() { [ -z "$1" ] || tr -d '\r' <"$OUT" | grep -Eq -- "$1"; }
expect_ok() {
    local name=$1 pat=$2 rc=0
    shift 2
    "$@" >"$OUT" 2>&1 </dev/null || rc=$?
    if [ "$rc" = 0 ] && matches "$pat"; then pass "$name"; else echo "    (exit $rc)"; fail "$name"; fi
}
expect_fail() {
    local name=$1 pat=$2 rc=0
    shift 2
    "$@" >"$OUT" 2>&1 </dev/null || rc=$?
    if [ "$rc" != 0 ] && matches "$pat"; then pass "$name"; else echo "    (exit $rc)"; fail "$name"; fi
}

# ---------------------------------------------------------------- setup
expect_ok "accounts.sh create" '' "$HERE/accounts.sh" create "$STATE"
expect_ok "accounts.sh create again (idempotent)" '' "$HERE/accounts.sh" create "$STATE"
expect_ok "accounts.sh check" '' "$HERE/accounts.sh" check "$STATE"
expect_ok "sshd.sh start" '' "$HERE/sshd.sh" start "$STATE"
expect_ok "sshd.sh start again (idempotent)" '' "$HERE/sshd.sh" start "$STATE"
expect_ok "sshd.sh status" '' "$HERE/sshd.sh" status "$STATE"

# shellcheck disable=SC1091
. "$STATE/env"
# shellcheck disable=SC1091
. "$STATE/sshd/env"

cat >"$STATE/askpass" <<'EOF'
#!/bin/sh
# SSH_ASKPASS helper for the smoke test: answers every prompt with $SMOKE_SECRET.
echo "askpass prompt: $1" >&2
printf '%s\n' "$SMOKE_SECRET"
EOF
chmod 0700 "$STATE/askpass"

SSH="ssh -F $SPORE_TEST_SSH_CONFIG"
# ssh answering password/passphrase prompts through SSH_ASKPASS.
ssh_askpass() {
    local secret=$1
    shift
    SMOKE_SECRET=$secret SSH_ASKPASS=$STATE/askpass SSH_ASKPASS_REQUIRE=force \
        $SSH -o BatchMode=no -o NumberOfPasswordPrompts=1 "$@"
}
# ssh -tt inside a local pty, typing SECRET after the prompt matching REGEX.
ssh_tty() {
    local regex=$1 secret=$2
    shift 2
    "$PYTHON" "$HERE/ptydrive.py" --timeout 30 --expect "$regex" --send "$secret" -- \
        $SSH -tt -o LogLevel=ERROR "$@"
}

# ---------------------------------------------------------------- ssh
expect_ok "ssh key login as spore-test-key" '^spore-test-key$' \
    $SSH -l spore-test-key spore-test-sshd id -un
expect_ok "ssh shows the banner (with non-ASCII line)" 'Never share your password' \
    $SSH -l spore-test-key spore-test-sshd true
expect_ok "known_hosts has the ed25519 host key" '^ok$' \
    $SSH -o HostKeyAlgorithms=ssh-ed25519 -l spore-test-key spore-test-sshd echo ok
expect_ok "known_hosts has the rsa host key" '^ok$' \
    $SSH -o HostKeyAlgorithms=rsa-sha2-512 -l spore-test-key spore-test-sshd echo ok
expect_ok "SPORE_TEST_HOST_FP_ED25519 is the server's key" \
    "Server host key: ssh-ed25519 $(printf '%s' "$SPORE_TEST_HOST_FP_ED25519" | sed 's/[][\\.*^$+?(){}|/]/\\&/g')\$" \
    $SSH -v -o HostKeyAlgorithms=ssh-ed25519 -l spore-test-key spore-test-sshd true
expect_ok "passphrase key (askpass gives the passphrase)" '^spore-test-key$' \
    ssh_askpass "$SPORE_TEST_PASSPHRASE" -F none -p "$SPORE_TEST_SSHD_PORT" \
        -o UserKnownHostsFile="$SPORE_TEST_KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
        -o IdentitiesOnly=yes -o IdentityAgent=none -i "$SPORE_TEST_KEY_PP" \
        -o PreferredAuthentications=publickey -l spore-test-key 127.0.0.1 id -un
expect_fail "passphrase key with wrong passphrase is refused" 'Permission denied' \
    ssh_askpass wrong-passphrase -F none -p "$SPORE_TEST_SSHD_PORT" \
        -o UserKnownHostsFile="$SPORE_TEST_KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
        -o IdentitiesOnly=yes -o IdentityAgent=none -i "$SPORE_TEST_KEY_PP" \
        -o PreferredAuthentications=publickey -l spore-test-key 127.0.0.1 id -un
expect_ok "password login as spore-test-pw (keyboard-interactive)" '^spore-test-pw$' \
    ssh_askpass "$SPORE_TEST_PW_PW" -o PreferredAuthentications=keyboard-interactive \
        -l spore-test-pw spore-test-sshd id -un
expect_ok "password login as spore-test-pw (password)" '^spore-test-pw$' \
    ssh_askpass "$SPORE_TEST_PW_PW" -o PreferredAuthentications=password \
        -l spore-test-pw spore-test-sshd id -un
expect_fail "wrong password for spore-test-pw is refused" 'Permission denied' \
    ssh_askpass wrong-password -l spore-test-pw spore-test-sshd id -un
expect_fail "key login as spore-test-pw is refused" 'Permission denied \(password,keyboard-interactive\)' \
    $SSH -l spore-test-pw spore-test-sshd id -un
expect_fail "password login as spore-test-key is refused" 'Permission denied \(publickey\)' \
    ssh_askpass "$SPORE_TEST_PW_KEY" -o PreferredAuthentications=password,keyboard-interactive \
        -l spore-test-key spore-test-sshd id -un
for u in $SPORE_TEST_USERS; do
    [ "$u" = spore-test-pw ] && continue
    expect_ok "ssh key login as $u" "^$u\$" $SSH -l "$u" spore-test-sshd id -un
done

# ---------------------------------------------------------------- sudo
expect_ok "sudo -n as spore-test-sudo-nopw -> root" '^root$' \
    $SSH -l spore-test-sudo-nopw spore-test-sshd sudo -n -u root id -un
expect_ok "sudo -n as spore-test-sudo-nopw -> spore-test-target" '^spore-test-target$' \
    $SSH -l spore-test-sudo-nopw spore-test-sshd sudo -n -u spore-test-target id -un
expect_fail "sudo -n as spore-test-sudo-nopw -> spore-test-key is not allowed" 'a password is required' \
    $SSH -l spore-test-sudo-nopw spore-test-sshd sudo -n -u spore-test-key id -un
expect_fail "sudo -n as spore-test-sudo-pw needs a password" 'a password is required' \
    $SSH -l spore-test-sudo-pw spore-test-sshd sudo -n -u root id -un
expect_fail "sudo as spore-test-sudo-pw without tty or -S fails" 'a terminal is required' \
    $SSH -l spore-test-sudo-pw spore-test-sshd sudo -u root id -un
sudo_S() { printf '%s\n' "$1" | $SSH -l spore-test-sudo-pw spore-test-sshd sudo -S -u "$2" id -un; }
expect_ok "sudo -S with password as spore-test-sudo-pw -> root" '(^|: )root$' \
    sudo_S "$SPORE_TEST_PW_SUDO_PW" root
expect_ok "sudo -S with password as spore-test-sudo-pw -> spore-test-target" '(^|: )spore-test-target$' \
    sudo_S "$SPORE_TEST_PW_SUDO_PW" spore-test-target
expect_fail "sudo -S with wrong password is refused" 'incorrect password attempt' \
    sudo_S wrong-password root
expect_ok "sudo on a tty (ssh -tt) as spore-test-sudo-pw, prompt after lecture" 'spore-test-target' \
    ssh_tty '\[sudo\] password for spore-test-sudo-pw: ' "$SPORE_TEST_PW_SUDO_PW" \
        -l spore-test-sudo-pw spore-test-sshd sudo -u spore-test-target id -un
expect_ok "sudo with use_pty runs the command on a new pty" '^pty-differs$' \
    ssh_tty '\[sudo\] password for' "$SPORE_TEST_PW_SUDO_PW" -l spore-test-sudo-pw spore-test-sshd \
        'outer=$(tty); inner=$(sudo -u root tty); [ "$outer" != "$inner" ] && echo pty-differs'
nosudo_S() { printf '%s\n' "$SPORE_TEST_PW_NOSUDO" | $SSH -l spore-test-nosudo spore-test-sshd sudo -S -u root id -un; }
expect_fail "sudo as spore-test-nosudo: not in the sudoers file" 'not in the sudoers file|not allowed' \
    nosudo_S

# ---------------------------------------------------------------- doas
expect_ok "doas -n as spore-test-doas-nopw -> root" '^root$' \
    $SSH -l spore-test-doas-nopw spore-test-sshd doas -n -u root id -un
expect_ok "doas -n as spore-test-doas-nopw -> spore-test-target" '^spore-test-target$' \
    $SSH -l spore-test-doas-nopw spore-test-sshd doas -n -u spore-test-target id -un
expect_fail "doas -n as spore-test-doas-nopw -> spore-test-key is not permitted" 'Operation not permitted' \
    $SSH -l spore-test-doas-nopw spore-test-sshd doas -n -u spore-test-key id -un
expect_fail "doas -n as spore-test-doas-pw needs a password" 'Authentication required' \
    $SSH -l spore-test-doas-pw spore-test-sshd doas -n -u root id -un
expect_fail "doas as spore-test-doas-pw without a tty fails" 'Authentication failed' \
    sh -c 'printf "%s\n" "$1" | '"$SSH"' -l spore-test-doas-pw spore-test-sshd doas -u root id -un' sh "$SPORE_TEST_PW_DOAS_PW"
expect_ok "doas on a tty with password as spore-test-doas-pw -> root" '^root' \
    ssh_tty 'doas \(spore-test-doas-pw@[^)]*\) password: ' "$SPORE_TEST_PW_DOAS_PW" \
        -l spore-test-doas-pw spore-test-sshd doas -u root id -un
expect_ok "doas on a tty with password as spore-test-doas-pw -> spore-test-target" 'spore-test-target' \
    ssh_tty 'password: ' "$SPORE_TEST_PW_DOAS_PW" \
        -l spore-test-doas-pw spore-test-sshd doas -u spore-test-target id -un
expect_fail "doas with wrong password is refused" 'Authentication failed' \
    ssh_tty 'password: ' wrong-password -l spore-test-doas-pw spore-test-sshd doas -u root id -un
expect_fail "doas as spore-test-nosudo is not permitted" 'Operation not permitted' \
    $SSH -l spore-test-nosudo spore-test-sshd doas -n -u root id -un

# ---------------------------------------------------------------- su
expect_ok "su on a tty from spore-test-key to spore-test-target" 'spore-test-target' \
    ssh_tty 'Password: ' "$SPORE_TEST_PW_TARGET" \
        -l spore-test-key spore-test-sshd "su spore-test-target -c 'id -un'"
expect_fail "su with wrong password is refused" 'Authentication failure' \
    ssh_tty 'Password: ' wrong-password -l spore-test-key spore-test-sshd "su spore-test-target -c 'id -un'"
su_pipe() { printf '%s\n' "$SPORE_TEST_PW_TARGET" | $SSH -l spore-test-key spore-test-sshd "su spore-test-target -c 'id -un'"; }
expect_ok "su without a tty reads the password from stdin" '^Password: spore-test-target$' su_pipe

# ---------------------------------------------------------------- teardown
CFG=$STATE/sshd/sshd_config
expect_ok "sshd.sh stop" '' "$HERE/sshd.sh" stop "$STATE"
expect_ok "sshd.sh stop again (idempotent)" '' "$HERE/sshd.sh" stop "$STATE"
expect_ok "no process left naming $CFG" '^none$' \
    sh -c 'ps -ww -eo args= | grep -F -- "$1" | grep -v -e grep -e "sh -c" || echo none' sh "$CFG"
expect_ok "no sshd or reaper.py of ours left" '^none$' \
    sh -c 'ps -ww -eo pid=,ppid=,stat=,args= | grep -E "sshd: spore-test|reaper\.py $1" | grep -v -e grep -e "sh -c" || echo none' sh "$STATE"
expect_ok "accounts.sh remove" '' "$HERE/accounts.sh" remove "$STATE"
expect_ok "accounts.sh remove again (idempotent)" '' "$HERE/accounts.sh" remove "$STATE"
expect_fail "accounts.sh check fails after remove" '' "$HERE/accounts.sh" check "$STATE"
expect_ok "no spore-test users or groups left" '^none$' \
    sh -c '{ getent passwd; getent group; } | grep "^spore-test" || echo none'
expect_ok "no spore-test processes left" '^none$' \
    sh -c 'ps -eo user:32=,args= | grep "^spore-test" || echo none'
expect_ok "no spore-test homes, sudoers file or sudo state left" '^none$' \
    sh -c 'ls -d /home/spore-test* /etc/sudoers.d/spore-test* /var/lib/sudo/lectured/spore-test* /run/sudo/ts/spore-test* /var/mail/spore-test* 2>/dev/null || echo none'
if [ -f /etc/doas.conf ]; then DOAS_AFTER=$(sha256sum </etc/doas.conf); else DOAS_AFTER=absent; fi
if [ "$DOAS_BEFORE" = "$DOAS_AFTER" ]; then pass "/etc/doas.conf restored"; else rm -f "$OUT"; fail "/etc/doas.conf restored"; fi

cleanup
if [ "$FAILED" = 0 ]; then echo "smoke.sh: all checks passed"; else echo "smoke.sh: FAILURES"; fi
exit "$FAILED"
