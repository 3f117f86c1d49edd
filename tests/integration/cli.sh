# The spore command-line tool: call, run, targets, errors and exit codes.
# Run by ctest with SPORE_CLI, SPORE_AGENT_PATH and XDG_RUNTIME_DIR set.
set -euo pipefail

: "${SPORE_CLI:?SPORE_CLI must point at the spore executable}"
cli=$SPORE_CLI
tmp=$(mktemp -d)
# Every agent and command started here inherits this variable, which tells
# our processes apart from those of anything else running on the machine.
export SPORE_CLI_TEST_TAG="cli-$$-$RANDOM"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# tagged PID: true when the process has our tag in its environment.
tagged() {
    { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | grep -qx "SPORE_CLI_TEST_TAG=$SPORE_CLI_TEST_TAG"
}

# Agent processes ("spore:<name>" in their command line) that carry our tag.
our_agents() {
    local n=0 pid
    for pid in $(pgrep -f 'spore:' || true); do
        if tagged "$pid"; then
            n=$((n + 1))
        fi
    done
    echo "$n"
}
agents_before=$(our_agents)

# run_cli NAME ARGS...: runs the tool, leaving $out, $err and $rc.
run_cli() {
    set +e
    "$cli" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    out=$(tr -d '\0' <"$tmp/out")
    err=$(cat "$tmp/err")
}

# expect_rc WHAT WANT: checks $rc.
expect_rc() {
    if [ "$rc" -eq "$2" ]; then pass "$1 (exit $rc)"; else fail "$1: exit $rc, wanted $2; stdout: $out; stderr: $err"; fi
}

# expect_one_error_line WHAT PATTERN: stderr is exactly one "spore: ..." line matching PATTERN.
expect_one_error_line() {
    local lines
    lines=$(printf '%s\n' "$err" | grep -c . || true)
    if [ "$lines" -ne 1 ] || ! printf '%s' "$err" | grep -q '^spore: '; then
        fail "$1: stderr is not one 'spore: ' line: $err"
    elif ! printf '%s' "$err" | grep -qE "$2"; then
        fail "$1: stderr does not match /$2/: $err"
    else
        pass "$1 error line"
    fi
}

# ------------------------------------------------------------------ call
run_cli call local sys.ping
expect_rc "call local sys.ping" 0
[ "$out" = "true" ] || fail "sys.ping printed '$out'"

run_cli call local/fork sys.ping
expect_rc "call local/fork sys.ping" 0
[ "$out" = "true" ] || fail "sys.ping through a fork printed '$out'"

run_cli call --compact local/fork sys.info
expect_rc "call --compact sys.info" 0
printf '%s' "$out" | grep -q '"context":"local.1/fork.2"' || fail "sys.info of local/fork: $out"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "--compact printed several lines: $out"

run_cli call local sys.echo '{"value": {"list": [1, 2.5, "a\"b"], "empty": {}, "none": null}}'
expect_rc "call with JSON args" 0
expected='{
  "list": [
    1,
    2.5,
    "a\"b"
  ],
  "empty": {},
  "none": null
}'
[ "$out" = "$expected" ] || fail "sys.echo pretty output differs: $out"

run_cli call local sys.echo '{"value": "x"}' --compact
expect_rc "options after the arguments" 0
[ "$out" = '"x"' ] || fail "sys.echo compact printed '$out'"

run_cli call local sys.echo '{"value": 1,}'
[ "$rc" -eq 2 ] || [ "$rc" -eq 1 ] || fail "bad JSON: exit $rc, wanted 2 (or 1)"
pass "bad JSON refused (exit $rc)"
expect_one_error_line "bad JSON" 'JSON'

run_cli call local sys.echo '[1, 2]'
expect_rc "JSON args that are not an object" 2
expect_one_error_line "JSON array args" 'object'

run_cli call local no.such.function
[ "$rc" -ne 0 ] || fail "unknown function succeeded"
expect_one_error_line "unknown function" 'no\.such\.function'

run_cli call local fs.read '{"path": "/nonexistent/spore-cli-test"}'
expect_rc "remote failure" 5
expect_one_error_line "remote failure" 'FileNotFoundError|No such file'

printf 'binary\0part' >"$tmp/data"
run_cli call --raw-data --data "$tmp/data" local sys.echo
expect_rc "call --data --raw-data" 0
cmp -s "$tmp/out" "$tmp/data" || fail "--raw-data did not write the binary part to stdout"
run_cli call --data "$tmp/data" local sys.echo
expect_rc "call with a binary part, no --raw-data" 0
[ "$out" = "null" ] || fail "sys.echo without value printed '$out'"
printf '%s' "$err" | grep -q '11 bytes' || fail "binary part size not noted on stderr: $err"

run_cli --timeout 300 call local proc.run '{"argv": ["sleep", "5"]}'
expect_rc "call --timeout" 4
expect_one_error_line "call --timeout" 'timed out'

# ------------------------------------------------------------------- run
run_cli run local -- sh -c 'echo out; echo err >&2; exit 7'
expect_rc "run exit status" 7
[ "$out" = "out" ] || fail "run stdout: '$out'"
[ "$err" = "err" ] || fail "run stderr: '$err'"

run_cli run local -- sh -c 'kill -TERM $$'
expect_rc "run killed by SIGTERM" $((128 + 15))
run_cli run local/fork -- sh -c 'kill -KILL $$'
expect_rc "run killed by SIGKILL" $((128 + 9))

run_cli run local --cwd /tmp --env SPORE_X=hello -- sh -c 'echo "$(pwd) $SPORE_X"'
expect_rc "run --cwd --env" 0
[ "$out" = "/tmp hello" ] || fail "run --cwd --env printed '$out'"

set +e
out=$(printf 'one\ntwo\n' | "$cli" run local --input - -- wc -l 2>"$tmp/err")
rc=$?
set -e
err=$(cat "$tmp/err")
expect_rc "run --input -" 0
[ "$(echo $out)" = "2" ] || fail "run --input - printed '$out'"

run_cli run local --timeout 300 -- sleep 5
expect_rc "run --timeout" 124

run_cli run local -- seq 1 20000
expect_rc "run with many lines" 0
[ "$(printf '%s\n' "$out" | wc -l)" -eq 20000 ] && [ "$(printf '%s\n' "$out" | tail -1)" = 20000 ] ||
    fail "run seq 1 20000 lost lines: $(printf '%s\n' "$out" | wc -l) lines"

run_cli run local -- /nonexistent/program
expect_rc "run of a missing program" 5
expect_one_error_line "run of a missing program" 'nonexistent/program'

# -------------------------------------------------------------- targets
run_cli call --compact local/local/fork/local sys.info
expect_rc "4-hop target" 0
printf '%s' "$out" | grep -q '"context":"local.1/local.2/fork.3/local.4"' || fail "4-hop context name: $out"

run_cli call --compact 'local?name=web&connect_timeout=10000/fork?name=%22007%22' sys.info
expect_rc "target with options" 0
printf '%s' "$out" | grep -q '"context":"web/007"' || fail "named hops: $out"

run_cli call nosuchmethod sys.ping
[ "$rc" -ne 0 ] || fail "unknown method succeeded"
expect_one_error_line "unknown method" "nosuchmethod"

run_cli call local/nosuchmethod sys.ping
[ "$rc" -ne 0 ] || fail "unknown method in a later hop succeeded"
expect_one_error_line "unknown method in a later hop" "nosuchmethod"

run_cli call fork sys.ping
[ "$rc" -ne 0 ] || fail "fork without via succeeded"
expect_one_error_line "fork as the first hop" 'fork'

run_cli call 'local?bogus=1' sys.ping
expect_rc "unknown connect option" 2
expect_one_error_line "unknown connect option" 'bogus'

for bad in 'local//fork' 'local/' '/local' 'local?=1' 'local:x' 'lo cal'; do
    run_cli call "$bad" sys.ping
    expect_rc "bad target '$bad'" 2
    expect_one_error_line "bad target '$bad'" '.'
done

run_cli call ssh://user@example.invalid:22 sys.ping
[ "$rc" -ne 0 ] || fail "ssh hop succeeded before ssh exists"
expect_one_error_line "ssh hop (not yet a method)" 'ssh'

# ------------------------------------------------------- help and usage
run_cli --help
expect_rc "--help" 0
printf '%s' "$out" | grep -q 'call' && printf '%s' "$out" | grep -q 'run' || fail "--help does not mention call and run"
run_cli help options
expect_rc "help options" 0
for key in liveness_interval log_queue_bytes agent_compress window max_size timeout_ms; do
  printf '%s' "$out" | grep -q "^  $key " || fail "help options does not list $key"
done
run_cli call --help
expect_rc "call --help" 0
run_cli run --help
expect_rc "run --help" 0
run_cli --version
expect_rc "--version" 0
printf '%s' "$out" | grep -qE '^spore [0-9]+\.[0-9]+\.[0-9]+' || fail "--version printed '$out'"
run_cli
expect_rc "no command" 2
run_cli frobnicate
expect_rc "unknown command" 2
expect_one_error_line "unknown command" 'frobnicate'
run_cli --bogus call local sys.ping
expect_rc "unknown option" 2
expect_one_error_line "unknown option" 'bogus'
run_cli call local
expect_rc "call without a function" 2
run_cli run local
expect_rc "run without a program" 2
run_cli --timeout abc call local sys.ping
expect_rc "bad --timeout" 2

run_cli -v call local/fork sys.ping
expect_rc "call --verbose" 0
printf '%s' "$err" | grep -q '^\[local.1/fork.2\] DEBUG ' || fail "--verbose shows no agent records: $err"

# ------------------------------------------------------------ interrupt
"$cli" run local/fork -- sleep 60 >"$tmp/out" 2>"$tmp/err" &
pid=$!
# Our own sleep (other tests may run one too): it carries our tag.
for _ in $(seq 200); do
    started=0
    for p in $(pgrep -f "^sleep 60" 2>/dev/null || true); do tagged "$p" && started=1; done
    [ "$started" -eq 1 ] && break
    sleep 0.05
done
kill -INT "$pid" 2>/dev/null || fail "spore run exited before SIGINT"
set +e
wait "$pid"
rc=$?
set -e
out=""
err=$(cat "$tmp/err")
expect_rc "run interrupted by SIGINT" 130

# ------------------------------------------------ no leftover processes
left=$(our_agents)
for _ in $(seq 50); do
    [ "$left" -eq "$agents_before" ] && break
    sleep 0.1
    left=$(our_agents)
done
if [ "$left" -ne "$agents_before" ]; then
    fail "$left agent processes left (had $agents_before): $(pgrep -af 'spore:' || true)"
else
    pass "no agent processes left"
fi
for pid in $(pgrep -x sleep || true); do
    if tagged "$pid"; then
        fail "a command started by the tests is still running: pid $pid"
    fi
done

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all cli checks passed"
