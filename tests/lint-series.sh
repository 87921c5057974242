#!/bin/bash
# The series checker must reject a broken series, each fault by name, and
# accept the real one.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
fx=$top/tests/fixtures/bad-series
failed=0
passed=0
expect() {
    if grep -qF -- "$1" "$out"; then
        echo "ok - lint reports: $1"; passed=$((passed + 1))
    else
        echo "FAIL - lint does not report: $1"; failed=$((failed + 1))
    fi
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
if "$top/scripts/lint-series" --series "$fx" >"$out" 2>&1; then
    echo "FAIL - lint-series accepted the broken fixture series"; failed=$((failed + 1))
else
    echo "ok - lint-series exits non-zero on the broken series"; passed=$((passed + 1))
fi
expect "series names 0002-missing.patch, which does not exist"
expect "0009-unlisted.patch is not listed in series"
expect "subject is not '[PATCH] subsystem: summary'"
expect "no Signed-off-by:"
expect "commit message line(s) longer than 76 columns"
expect "0001-make-convert-faster.patch: checkpatch total: 4 errors"
expect "ERROR: trailing whitespace"
expect "0001-make-convert-faster.patch differs from its re-export"

if "$top/scripts/lint-series" >"$out" 2>&1; then
    echo "ok - lint-series accepts patches/"; passed=$((passed + 1))
else
    echo "FAIL - lint-series rejects patches/:"; sed 's/^/    /' "$out"; failed=$((failed + 1))
fi
echo "lint-series.sh: $passed passed, $failed failed"
[ $failed = 0 ]
