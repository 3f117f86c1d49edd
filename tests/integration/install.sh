# Installs the build into a temporary prefix and checks what a user of the
# installed spore gets: the shared library and its ABI surface, the headers,
# pkg-config and CMake packages, the static agent, and a program built and
# run against all of it.
set -euo pipefail

: "${SPORE_BUILD_DIR:?}" "${SPORE_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
work=$tmp/work
mkdir -p "$work"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }
check() {  # check WHAT COMMAND...: passes when the command succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

cmake --install "$SPORE_BUILD_DIR" --prefix "$prefix" >"$work/install.log" ||
    { cat "$work/install.log" >&2; echo "FAIL: cmake --install" >&2; exit 1; }
pass "cmake --install --prefix $prefix"

# ------------------------------------------------------------ the library
# The library directory is lib/, or lib/<multiarch>/ for a tree configured
# for /usr on Debian (GNUInstallDirs): found where the library went.
libdir=$(dirname "$(find "$prefix" -name 'libspore.so.0' -print -quit)")
lib=$libdir/libspore.so.0
check "lib/libspore.so.0 exists" test -f "$lib" -o -L "$lib"
check "lib/libspore.so (development link) exists" test -e "$libdir/libspore.so"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = "libspore.so.0" ] && pass "SONAME is libspore.so.0" || fail "SONAME is '$soname'"

# Only spore_* is exported (nm shows "name@@SPORE_0"; SPORE_0 itself is the version node).
exported=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')
stray=$(printf '%s\n' "$exported" | grep -v -e '^spore_' -e '^SPORE_0$' || true)
if [ -n "$stray" ]; then
    fail "symbols exported outside spore_*: $(echo $stray)"
else
    pass "only spore_* symbols are exported ($(printf '%s\n' "$exported" | grep -c '^spore_'))"
fi

# ------------------------------------------------------------ the headers
for h in spore.h errors.h version.h; do
    check "include/spore/$h installed" test -f "$prefix/include/spore/$h"
done
for h in spore.h errors.h version.h; do
    printf '#include <spore/%s>\nint spore_test_unit(void);\nint spore_test_unit(void) { return 0; }\n' "$h" >"$work/tu_$h.c"
    check "spore/$h compiles as C99" \
        cc -std=c99 -Wall -Wextra -pedantic -Werror -I"$prefix/include" -c "$work/tu_$h.c" -o "$work/tu_c.o"
    cp "$work/tu_$h.c" "$work/tu_$h.cpp"
    check "spore/$h compiles as C++17" \
        g++ -std=c++17 -Wall -Wextra -pedantic -Werror -I"$prefix/include" -c "$work/tu_$h.cpp" -o "$work/tu_cxx.o"
done

# ------------------------------------------------------------- the agent
agent=$prefix/libexec/spore/spore-agent
check "libexec/spore/spore-agent exists" test -x "$agent"
if file "$agent" | grep -q 'statically linked'; then pass "file: agent statically linked"; else fail "file: $(file "$agent")"; fi
if (ldd "$agent" 2>&1 || true) | grep -q 'not a dynamic executable'; then
    pass "ldd: agent is not a dynamic executable"
else
    fail "ldd: $(ldd "$agent" 2>&1 || true)"
fi

# -------------------------------------------------------------- pkg-config
pc=$libdir/pkgconfig/spore.pc
check "lib/pkgconfig/spore.pc exists" test -f "$pc"
export PKG_CONFIG_PATH=$libdir/pkgconfig
pc_libdir=$(pkg-config --variable=libdir spore)
# spore.pc finds everything relative to itself, so an install under another
# prefix than the configured one must still point at itself.
if [ "$(cd "$pc_libdir" 2>/dev/null && pwd -P)" = "$(cd "$libdir" && pwd -P)" ]; then
    pass "spore.pc is relocatable (libdir=$pc_libdir)"
else
    fail "spore.pc libdir $pc_libdir is not the installed $libdir"
fi
pkgconf=(pkg-config)
flags=$("${pkgconf[@]}" --cflags --libs spore)
pass "pkg-config --cflags --libs spore: $flags"
[ "$("${pkgconf[@]}" --modversion spore)" = "$(sed -n 's/^#define SPORE_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/spore/version.h")" ] ||
    fail "pkg-config --modversion differs from SPORE_VERSION_STRING"
pc_agent=$("${pkgconf[@]}" --variable=agent spore)
[ "$pc_agent" -ef "$agent" ] && pass "pkg-config agent variable names the installed agent" ||
    fail "pkg-config agent variable: $pc_agent"

# hello.c, built as a user would, run against the installed library and agent.
# shellcheck disable=SC2086  # $flags is a list of words
check "examples/hello.c builds with pkg-config (C99, -pedantic -Werror)" \
    cc -std=c99 -Wall -Wextra -pedantic -Werror "$SPORE_SOURCE_DIR/examples/hello.c" $flags -o "$work/hello"
if [ -x "$work/hello" ]; then
    if ! hello_out=$(LD_LIBRARY_PATH=$libdir SPORE_AGENT_PATH=$agent "$work/hello" 2>&1); then
        fail "hello failed: $hello_out"
    elif printf '%s' "$hello_out" | grep -q 'hello from'; then
        pass "hello runs against the installed library and agent"
    else
        fail "hello printed no 'hello from': $hello_out"
    fi
    # (ldd's output is taken whole first: with pipefail, grep -q quitting
    # early would fail the pipeline through SIGPIPE.)
    deps=$(ldd "$work/hello"; LD_LIBRARY_PATH=$libdir ldd "$work/hello")
    if printf '%s\n' "$deps" | grep -q "$libdir/libspore.so.0"; then
        pass "hello loads the installed libspore.so.0"
    else
        fail "hello does not load $libdir/libspore.so.0: $(LD_LIBRARY_PATH=$libdir ldd "$work/hello")"
    fi
fi

# ------------------------------------------------------------------ CMake
check "lib/cmake/spore/sporeConfig.cmake exists" test -f "$libdir/cmake/spore/sporeConfig.cmake"
mkdir -p "$work/cmake-user"
cat >"$work/cmake-user/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(spore_user C)
find_package(spore 0.1 REQUIRED)
add_executable(x main.c)
target_link_libraries(x spore::spore)
EOF
cat >"$work/cmake-user/main.c" <<'EOF'
#include <stdio.h>
#include <spore/spore.h>
int main(void)
{
    int major = -1;
    spore_version(&major, NULL, NULL);
    printf("%s %d\n", spore_version_string(), major == SPORE_VERSION_MAJOR);
    return major == SPORE_VERSION_MAJOR ? 0 : 1;
}
EOF
if cmake -S "$work/cmake-user" -B "$work/cmake-user/build" -DCMAKE_PREFIX_PATH="$prefix" \
        >"$work/cmake.log" 2>&1 && cmake --build "$work/cmake-user/build" >>"$work/cmake.log" 2>&1; then
    pass "find_package(spore) + spore::spore configures and builds"
    if LD_LIBRARY_PATH=$libdir "$work/cmake-user/build/x" >/dev/null; then
        pass "the CMake-built program runs"
    else
        fail "the CMake-built program failed"
    fi
else
    cat "$work/cmake.log" >&2
    fail "find_package(spore) project"
fi

# --------------------------------------------------------- installed CLI
if [ -x "$prefix/bin/spore" ]; then
    cli_out=$(LD_LIBRARY_PATH=$libdir SPORE_AGENT_PATH=$agent "$prefix/bin/spore" call local sys.ping 2>&1) &&
        [ "$cli_out" = "true" ] && pass "installed bin/spore works" || fail "installed bin/spore: $cli_out"
else
    fail "bin/spore not installed"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all install checks passed"
