# shellcheck shell=bash
# Sourced by the tests/*.sh that count their own checks (not executable:
# scripts/check runs only executable tests).  Each check prints one
# "ok - WHAT" or "FAIL - WHAT" line; finish prints the summary line that
# scripts/check reads and exits 1 if anything failed.
failed=0
passed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
# tally FILE N WHAT: show FILE, the ok/FAIL lines a helper (a Python
# snippet) printed, count them, and fail unless it printed N ok lines
tally() {
    cat "$1"
    passed=$((passed + $(grep -c '^ok - ' "$1" || true)))
    failed=$((failed + $(grep -c '^FAIL - ' "$1" || true)))
    [ "$(grep -c '^ok - ' "$1")" = "$2" ] ||
        { fail "$3 did not run through:"; sed 's/^/    /' "$1"; }
}
# finish [EXTRA]: "NAME: N passed, N failed[, EXTRA]", then exit
# shellcheck disable=SC2120
finish() {
    echo "$(basename "$0"): $passed passed, $failed failed${1:+, $1}"
    [ $failed = 0 ] && exit 0
    exit 1
}
