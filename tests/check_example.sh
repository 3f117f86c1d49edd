#!/bin/bash
# Runs one language's hello example (examples/<lang>/hello*) and checks that
# it did the whole task: both contexts' sys.info, the command's output as
# forwarded log records, its exit status and the expected error.
#   check_example.sh <command...>
set -uo pipefail
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
[ $rc -eq 0 ] || { echo "check_example: exited with $rc" >&2; exit 1; }
for want in '^hello +pid [0-9]+' '^hello/fork\.[0-9]+ +pid [0-9]+' 'hello from ' 'to stderr' \
            'command exit status: 0' 'expected failure: .*no\.such\.function in hello/fork'; do
  grep -Eq "$want" <<<"$out" || { echo "check_example: no line matches /$want/" >&2; exit 1; }
done
