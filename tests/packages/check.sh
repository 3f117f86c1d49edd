#!/usr/bin/env bash
# Checks the Debian packages made by scripts/package: they unpack into a
# clean root (dpkg-deb -x, no installation on this machine), and from there,
# with no build-tree paths, the C example builds with pkg-config and runs,
# the CLI runs, the Python and Ruby bindings load and call, the Go
# example builds from the packaged module sources and runs, and the
# packaged Ansible plugin runs a playbook.
# Usage: tests/packages/check.sh DIR_WITH_DEBS (run by scripts/test)
set -euo pipefail
debs=${1:?usage: check.sh DIR_WITH_DEBS}
here=$(cd "$(dirname "$0")/../.." && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

for p in libspore0 libspore-dev spore python3-spore ruby-spore golang-spore-dev; do
    deb=$(ls "$debs"/${p}_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then fail "no package $p in $debs"; continue; fi
    dpkg-deb -x "$deb" "$root"
    pass "$p: $(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')"
    deps=$(dpkg-deb -f "$deb" Depends)
    [ -n "$deps" ] && echo "    Depends: $deps"
done

multi=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
libdir=$root/usr/lib/$multi
[ -e "$libdir/libspore.so.0" ] && pass "libspore.so.0 in /usr/lib/$multi" || fail "no libspore.so.0 in /usr/lib/$multi"
[ -x "$root/usr/libexec/spore/spore-agent" ] && pass "agent in /usr/libexec/spore" || fail "no /usr/libexec/spore/spore-agent"
[ -f "$root/usr/include/spore/spore.h" ] && pass "headers in /usr/include/spore" || fail "no headers"
[ -f "$root/usr/lib/python3/dist-packages/spore/__init__.py" ] && pass "Python package in dist-packages" || fail "no Python package"

# No file may name the tree the packages were built in.
if grep -rlsF "$here" "$root" >/dev/null; then
    fail "installed files name the build tree: $(grep -rlsF "$here" "$root" | head -3)"
else
    pass "no installed file names the build tree"
fi

export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir
# The library looks for /usr/libexec/spore/spore-agent, which is in the
# unpacked root, not on this machine: point it there.
export SPORE_AGENT_PATH=$root/usr/libexec/spore/spore-agent
export XDG_RUNTIME_DIR=$root/runtime
mkdir -m 700 "$XDG_RUNTIME_DIR"
if cc -std=c99 -Wall -Wextra -pedantic -Werror "$here/examples/hello.c" $(pkg-config --cflags --libs spore) -o "$root/hello" 2>"$root/cc.err"; then
    pass "examples/hello.c builds with the packaged pkg-config"
    if out=$("$root/hello" 2>&1) && printf '%s' "$out" | grep -q 'hello from'; then
        pass "hello runs against the packaged library and agent"
    else
        fail "hello: $out"
    fi
else
    fail "hello does not build: $(cat "$root/cc.err")"
fi
if out=$("$root/usr/bin/spore" call --compact local sys.ping 2>&1) && [ "$out" = true ]; then
    pass "packaged spore CLI works"
else
    fail "spore call local sys.ping: $out"
fi
if out=$(PYTHONPATH=$root/usr/lib/python3/dist-packages /usr/bin/python3 -c '
import spore
with spore.Router() as r:
    c = r.local()
    print(spore.__file__, c.call("sys.echo", value=42))' 2>&1) && printf '%s' "$out" | grep -q "$root/usr/lib/python3/dist-packages/spore/__init__.py 42"; then
    pass "packaged Python binding imports and calls"
else
    fail "python: $out"
fi
rubylib=$root/usr/lib/ruby/vendor_ruby:$(ls -d "$root"/usr/lib/*/ruby/vendor_ruby/* 2>/dev/null | head -n 1)
if out=$(RUBYLIB=$rubylib ruby -e '
require "spore"
Spore::Router.open { |r| print $LOADED_FEATURES.grep(/spore/).join(" "), " ", r.local.call("sys.echo", value: 42) }' 2>&1) &&
    printf '%s' "$out" | grep -q "$root/usr/lib/ruby/vendor_ruby/spore.rb" && printf '%s' "$out" | grep -q ' 42$'; then
    pass "packaged Ruby binding loads and calls"
else
    fail "ruby: $out"
fi
# Go: a program outside any build tree, using the packaged module through a
# replace directive and cgo flags from the packaged spore.pc.
gosrc=$root/usr/share/gocode/src/spore.dev/spore
go=$(command -v go || ls -d /usr/lib/go-1.*/bin/go 2>/dev/null | sort -V | tail -n 1 || true)
if [ ! -f "$gosrc/go.mod" ] || [ ! -f "$gosrc/internal/capi/capi.go" ]; then
    fail "no Go module in /usr/share/gocode/src/spore.dev/spore"
elif [ -z "$go" ]; then
    fail "no go command to build the Go example with (scripts/setup installs it)"
else
    mkdir -p "$root/gohello"
    cp "$gosrc/examples/hello/main.go" "$root/gohello/"
    printf 'module gohello\n\ngo 1.21\n\nrequire spore.dev/spore v0.0.0\n\nreplace spore.dev/spore => %s\n' "$gosrc" \
        >"$root/gohello/go.mod"
    if (cd "$root/gohello" && GOCACHE=$root/go-cache GOPATH=$root/go-path GOPROXY=off GOTOOLCHAIN=local \
            GOTELEMETRY=off GOFLAGS=-mod=mod "$go" build -o "$root/gohello/hello" .) 2>"$root/go.err"; then
        pass "the Go example builds from the packaged module with the packaged pkg-config"
        if out=$("$root/gohello/hello" 2>&1) && printf '%s' "$out" | grep -q 'hello from'; then
            pass "the Go example runs against the packaged library and agent"
        else
            fail "go hello: $out"
        fi
    else
        fail "the Go example does not build: $(cat "$root/go.err")"
    fi
fi
# The Ansible plugin as packaged: its strategy directory, from the package's
# own `python3 -m spore.ansible`, runs a playbook on this machine.
if [ -x /usr/bin/ansible-playbook ]; then
    pyroot=$root/usr/lib/python3/dist-packages
    plugins=$(PYTHONPATH=$pyroot /usr/bin/python3 -m spore.ansible 2>&1) || plugins=
    if [ "$plugins" = "$pyroot/spore/ansible/plugins/strategy" ]; then
        pass "python3 -m spore.ansible names the packaged strategy directory"
        mkdir -p "$root/play" && chmod 700 "$root/play"
        printf '%s\n' '- hosts: localhost' '  gather_facts: false' '  tasks:' '    - ping:' \
            '    - command: echo packaged' '      register: r' \
            '    - copy: content="{{ r.stdout }}" dest={{ playbook_dir }}/out.txt' >"$root/play/site.yml"
        if out=$(cd "$root/play" && PYTHONPATH=$pyroot ANSIBLE_STRATEGY_PLUGINS=$plugins ANSIBLE_STRATEGY=spore_linear \
                ANSIBLE_LOCAL_TEMP=$root/play/tmp /usr/bin/ansible-playbook -i localhost, -c local site.yml 2>&1) &&
                [ "$(cat "$root/play/out.txt" 2>/dev/null)" = packaged ]; then
            pass "the packaged Ansible plugin runs a playbook (strategy spore_linear)"
        else
            fail "ansible-playbook with the packaged plugin: $out"
        fi
    else
        fail "python3 -m spore.ansible: $plugins"
    fi
fi
[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all package checks passed"
