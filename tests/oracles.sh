#!/bin/bash
# The differential suite's map oracles accept the documented differences
# and nothing else (tests/reliability/test_oracles.py).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
/usr/bin/python3 -B "$top/tests/reliability/test_oracles.py" >"$out" 2>&1 || rc=$?
passed=$(grep -c ' \.\.\. ok$' "$out" || true)
failed=$(grep -c ' \.\.\. \(FAIL\|ERROR\)$' "$out" || true)
sed -n 's/^\(test_[a-z_]*\) (.*) \.\.\. ok$/ok - \1/p' "$out"
if [ $rc != 0 ]; then
    sed 's/^/    /' "$out"
    [ "$failed" -gt 0 ] || failed=1
fi
echo "oracles.sh: $passed passed, $failed failed"
[ $rc = 0 ]
