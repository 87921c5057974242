# shellcheck shell=bash
# Sourced by the tests/*.sh that count their own checks (not executable:
# scripts/check runs only executable tests).  Each check prints one
# "ok - WHAT" or "FAIL - WHAT" line; finish prints the summary line that
# scripts/check reads and exits 1 if anything failed.
failed=0
passed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
# helper OUT N WHAT -- COMMAND...: run a helper (a Python snippet,
# typically fed on stdin by a heredoc) with its output in OUT, and count
# the "ok - " / "FAIL - " lines it printed as checks of this test.  It must
# exit 0 and print exactly N such lines in all (a FAIL line counts as a
# failed check, not as a missing one); otherwise one more check fails with
# its exit status and whole output (traceback included) indented, so a
# helper that crashes half-way cannot drop its remaining checks silently.
helper() {
    local out=$1 n=$2 what=$3 rc=0 oks fails
    [ "${4:-}" = -- ] || { fail "helper $what: usage: helper OUT N WHAT -- COMMAND..."; return 0; }
    shift 4
    "$@" >"$out" 2>&1 || rc=$?
    oks=$(grep -c '^ok - ' "$out" || true)
    fails=$(grep -c '^FAIL - ' "$out" || true)
    passed=$((passed + oks))
    failed=$((failed + fails))
    if [ "$rc" = 0 ] && [ $((oks + fails)) = "$n" ]; then
        cat "$out"
    else
        grep -E '^(ok|FAIL) - ' "$out" || true
        fail "$what did not run through (exit $rc, $((oks + fails)) of $n result lines):"
        sed 's/^/    /' "$out"
    fi
}
# finish [EXTRA]: "NAME: N passed, N failed[, EXTRA]", then exit
# shellcheck disable=SC2120
finish() {
    echo "$(basename "$0"): $passed passed, $failed failed${1:+, $1}"
    [ $failed = 0 ] && exit 0
    exit 1
}
