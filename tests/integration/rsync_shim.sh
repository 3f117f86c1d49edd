#!/bin/bash
# Real rsync through `spore ssh-shim`: a tree (files, a large one, a
# symlink, modes) copied with rsync -a into a context reached through a
# chain, then changed and copied again; with the harness also through ssh and
# sudo. Nothing may be left running.
set -euo pipefail
command -v rsync >/dev/null || { echo "rsync is not installed (scripts/setup installs it)"; exit 77; }
cli=${SPORE_CLI:?}
work=$(mktemp -d /tmp/spore-rsync-test.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/a/b" "$src/empty"
head -c 3000000 /dev/urandom >"$src/a/big"
for i in $(seq 1 50); do echo "file $i" >"$src/a/b/f$i"; done
ln -s a/b/f1 "$src/link"
chmod 0640 "$src/a/b/f2"

check() { # label dest
    diff -r --no-dereference "$src" "$2" || { echo "FAIL: $1: trees differ"; exit 1; }
    [ "$(stat -c %a "$2/a/b/f2")" = 640 ] || { echo "FAIL: $1: mode not kept"; exit 1; }
    echo "ok: $1"
}

rsync -a -e "$cli ssh-shim --target local/fork" "$src/" "x:$work/dst1/"
check "rsync through local/fork" "$work/dst1"
echo changed >>"$src/a/b/f3"
rm "$src/a/b/f4"
rsync -a --delete -e "$cli ssh-shim --target local/fork" "$src/" "x:$work/dst1/"
check "second rsync (changes, --delete)" "$work/dst1"
# The reverse direction: from the context to here (rsync's own end of the
# pipe is non-blocking, which the shim must cope with), several times.
for i in 1 2 3 4 5; do
    rm -rf "$work/back"
    rsync -a -e "$cli ssh-shim --target local" "x:$src/" "$work/back/"
done
check "rsync from a context (5 times)" "$work/back"
# a failing remote command gives its status
set +e
"$cli" ssh-shim --target local x 'exit 7'
rc=$?
set -e
[ $rc -eq 7 ] || { echo "FAIL: ssh-shim exit status $rc, not 7"; exit 1; }
echo "ok: exit status passed through"

if [ -n "${SPORE_TEST_HARNESS:-}" ] && [ -f "$SPORE_TEST_HARNESS/sshd/env" ]; then
    # shellcheck disable=SC1091
    . "$SPORE_TEST_HARNESS/sshd/env"
    chmod 0755 "$work"
    # '/' separates hops: paths in options are %-escaped.
    key=$SPORE_TEST_HARNESS/id_ed25519
    key=${key//\//%2F}
    kh=${SPORE_TEST_KNOWN_HOSTS//\//%2F}
    target="ssh://spore-test-sudo-nopw@127.0.0.1:$SPORE_TEST_SSHD_PORT?identity_file=$key&known_hosts_file=$kh/sudo:root"
    rsync -a -e "$cli ssh-shim --target $target" "$src/" "x:$work/dst-ssh/"
    check "rsync through ssh and sudo" "$work/dst-ssh"
    [ "$(stat -c %U "$work/dst-ssh/a/big")" = root ] || { echo "FAIL: not written as root"; exit 1; }
else
    echo "note: no harness: the ssh and sudo leg is skipped"
fi
