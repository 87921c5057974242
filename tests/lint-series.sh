#!/bin/bash
# The series checker must reject a broken series, each fault by name, and
# accept the real one.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
fx=$top/tests/fixtures/bad-series
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
expect() {
    if grep -qF -- "$1" "$out"; then
        ok "lint reports: $1"
    else
        fail "lint does not report: $1"
    fi
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
if "$top/scripts/lint-series" --series "$fx" >"$out" 2>&1; then
    fail "lint-series accepted the broken fixture series"
else
    ok "lint-series exits non-zero on the broken series"
fi
expect "series names 0002-missing.patch, which does not exist"
expect "0009-unlisted.patch is not listed in series"
expect "subject is not '[PATCH] subsystem: summary'"
expect "no Signed-off-by:"
expect "commit message line(s) longer than 76 columns"
expect "0001-make-convert-faster.patch: checkpatch total: 4 errors"
expect "ERROR: trailing whitespace"
expect "0001-make-convert-faster.patch differs from its re-export"

# An upstream change that a variant carries (the same patch in
# upstream/) keeps upstream's code: its checkpatch warnings are not
# counted; the same patch as one of the series' own is rejected.
up=$top/tests/fixtures/upstream-series
if "$top/scripts/lint-series" --series "$up" --no-apply >"$out" 2>&1 &&
   grep -qF "(upstream code, not counted) WARNING: Block comments" "$out"; then
    ok "lint-series prints, and does not count, an upstream change's warnings"
else
    fail "lint-series on a variant's upstream change:"; sed 's/^/    /' "$out"
fi
own=$(mktemp -d)
cp "$up"/series "$up"/*.patch "$own/"
if "$top/scripts/lint-series" --series "$own" --no-apply >"$out" 2>&1; then
    fail "lint-series accepted the same warning in a patch of the series"
else
    expect "0001-nbd-document-nbd_drop.patch: checkpatch total: 0 errors, 1 warnings"
fi
rm -rf "$own"

if "$top/scripts/lint-series" >"$out" 2>&1; then
    ok "lint-series accepts patches/"
else
    fail "lint-series rejects patches/:"; sed 's/^/    /' "$out"
fi
finish
