#!/bin/bash
# The differential suite's map oracles accept the documented differences
# and nothing else (tests/reliability/test_oracles.py).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
tests=$top/tests/reliability/test_oracles.py
out=$(mktemp)
mut=$(mktemp)
trap 'rm -f "$out" "$mut"' EXIT
# NAME RESULT per test of a unittest -v run
results() { sed -n 's/^\(test_[a-z0-9_]*\) (.*) \.\.\. \(.*\)$/\1 \2/p' "$1"; }
rc=0
/usr/bin/python3 -B "$tests" >"$out" 2>&1 || rc=$?
while read -r name result; do
    if [ "$result" = ok ]; then ok "$name"; else fail "$name ($result)"; fi
done < <(results "$out")
if [ $rc != 0 ]; then
    sed 's/^/    /' "$out"
    [ $failed -gt 0 ] || fail "test_oracles.py exited $rc"
fi
# The same tests against an oracle that accepts everything: the rejection
# cases are what makes the tolerance a check at all.  The file names each
# case by what it asserts (test_case_names_say_what_they_assert checks
# that), so exactly its test_rejects_* cases must fail there, each with an
# assertion failure, and every other case must pass.
want=$(grep -o '^    def test_rejects_[a-z0-9_]*' "$tests" | sed 's/.*def //' | sort)
all=$(grep -c '^    def test_' "$tests" || true)
QCE_ORACLE_ACCEPT_ALL=1 /usr/bin/python3 -B "$tests" >"$mut" 2>&1 || true
got=$(results "$mut" | awk '$2 == "FAIL" { print $1 }' | sort)
ran=$(results "$mut" | wc -l)
nwant=$(echo "$want" | grep -c . || true)
if [ "$ran" != "$all" ]; then
    fail "the accept-all run reported $ran of the $all cases of test_oracles.py"
    sed 's/^/    /' "$mut"
elif [ "$nwant" = 0 ]; then
    fail "test_oracles.py has no test_rejects_* case: the tests cannot fail"
elif [ "$got" = "$want" ]; then
    ok "an accept-all oracle fails exactly the $nwant rejection cases, and none of the other $((all - nwant))"
else
    for name in $(comm -23 <(echo "$want") <(echo "$got")); do
        fail "rejection case $name does not fail against an accept-all oracle ($(results "$mut" | awk -v n="$name" '$1 == n { print $2 }'))"
    done
    for name in $(comm -13 <(echo "$want") <(echo "$got")); do
        fail "$name fails against an accept-all oracle, but is no rejection case (test_rejects_*)"
    done
fi
finish
