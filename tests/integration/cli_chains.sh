# The spore command-line tool through real transports: ssh:// and sudo:
# hops (the harness's sshd and test accounts), SPORE_PASSWORD, and the
# errors of a wrong password, an unknown host key and a refused user.
# Skipped (exit 77) without the harness, i.e. when the tests do not run as root.
set -euo pipefail

: "${SPORE_CLI:?SPORE_CLI must point at the spore executable}"
cli=$SPORE_CLI
state=${SPORE_TEST_HARNESS:-}
if [ -z "$state" ] || [ ! -f "$state/env" ] || [ ! -f "$state/sshd/env" ]; then
    echo "SKIPPED: no test accounts and sshd (tests/harness needs root)"
    exit 77
fi
# shellcheck disable=SC1091
. "$state/sshd/env"
pw_sudo=$(awk '$1 == "spore-test-sudo-pw" {print $2}' "$state/passwords")
pw_pw=$(awk '$1 == "spore-test-pw" {print $2}' "$state/passwords")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

run_cli() {
    set +e
    "$cli" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
expect() { # WHAT RC PATTERN(stdout or stderr)
    if [ "$rc" -eq "$2" ] && { printf '%s\n%s' "$out" "$err" | grep -qE -- "$3"; }; then
        pass "$1"
    else
        fail "$1: exit $rc (wanted $2), stdout: $out, stderr: $err (wanted /$3/)"
    fi
}

esc() { printf '%s' "$1" | sed 's|%|%25|g; s|/|%2F|g; s|&|%26|g; s|=|%3D|g; s|?|%3F|g'; }
key=$(esc "$state/id_ed25519")
kh=$(esc "$SPORE_TEST_KNOWN_HOSTS")
hop() { echo "ssh://$1@127.0.0.1:$SPORE_TEST_SSHD_PORT?identity_file=$key&known_hosts_file=$kh&use_agent=false"; }

run_cli call --compact "$(hop spore-test-key)" sys.getenv '{"name": "USER"}'
expect "ssh:// hop (libssh2)" 0 '^"spore-test-key"$'

run_cli call --compact "$(hop spore-test-key)&backend=openssh&ssh_args=-F%20%2Fdev%2Fnull" sys.getenv '{"name": "USER"}'
expect "ssh:// hop (OpenSSH)" 0 '^"spore-test-key"$'

run_cli call --compact "$(hop spore-test-sudo-nopw)/sudo:root" sys.getenv '{"name": "USER"}'
expect "ssh:// then sudo:root" 0 '^"root"$'

run_cli run "$(hop spore-test-sudo-nopw)/sudo:spore-test-target/fork" -- id -un
expect "ssh -> sudo -> fork, spore run" 0 '^spore-test-target$'

# SPORE_PASSWORD answers the sudo prompt, and is never seen by the agents.
SPORE_PASSWORD=$pw_sudo run_cli call --compact "$(hop spore-test-sudo-pw)/sudo:root" sys.getenv '{"name": "SPORE_PASSWORD"}'
expect "SPORE_PASSWORD for sudo, not in the agent's environment" 0 '^null$'

SPORE_PASSWORD=wrong-password run_cli call "$(hop spore-test-sudo-pw)/sudo:root" sys.ping
expect "wrong sudo password: one line, exit 3" 3 '^spore: .*incorrect password'
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "the error is not one line: $err"

run_cli call "$(hop spore-test-sudo-pw)/sudo:root" sys.ping
expect "missing sudo password" 3 'password required'

SPORE_PASSWORD=$pw_pw run_cli call --compact "ssh://spore-test-pw@127.0.0.1:$SPORE_TEST_SSHD_PORT?known_hosts_file=$kh&use_agent=false" sys.getenv '{"name": "USER"}'
expect "ssh password from SPORE_PASSWORD" 0 '^"spore-test-pw"$'

: >"$tmp/empty_known_hosts"
run_cli call "ssh://spore-test-key@127.0.0.1:$SPORE_TEST_SSHD_PORT?identity_file=$key&known_hosts_file=$(esc "$tmp/empty_known_hosts")&use_agent=false" sys.ping
expect "unknown host key" 3 'host key .* is not known.*SHA256:'

run_cli call "$(hop spore-test-nosudo)/sudo:root?password=$(esc "$(awk '$1 == "spore-test-nosudo" {print $2}' "$state/passwords")")" sys.ping
expect "user not allowed" 3 'sudoers'

run_cli call "ssh://spore-test-key@127.0.0.1:1?use_agent=false" sys.ping
expect "unreachable port" 3 'refused'

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all CLI chain checks passed"
