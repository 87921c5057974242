#!/bin/bash
# The differential suite's map oracles accept the documented differences
# and nothing else (tests/reliability/test_oracles.py).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
/usr/bin/python3 -B "$top/tests/reliability/test_oracles.py" >"$out" 2>&1 || rc=$?
while read -r name result; do
    if [ "$result" = ok ]; then ok "$name"; else fail "$name ($result)"; fi
done < <(sed -n 's/^\(test_[a-z_]*\) (.*) \.\.\. \(.*\)$/\1 \2/p' "$out")
if [ $rc != 0 ]; then
    sed 's/^/    /' "$out"
    [ $failed -gt 0 ] || fail "test_oracles.py exited $rc"
fi
# The same tests against an oracle that accepts everything must fail:
# the rejection cases are what makes the tolerance a check at all.
n=$(QCE_ORACLE_ACCEPT_ALL=1 /usr/bin/python3 -B "$top/tests/reliability/test_oracles.py" 2>&1 |
    grep -c ' \.\.\. FAIL$' || true)
if [ "$n" -gt 0 ]; then
    ok "an accept-all oracle fails $n of the cases"
else
    fail "an accept-all oracle passes every case: the tests cannot fail"
fi
finish
