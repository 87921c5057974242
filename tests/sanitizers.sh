#!/bin/bash
# The patched tools built with AddressSanitizer and UndefinedBehaviorSanitizer
# (scripts/build --sanitize, into build/asan/) run the series' engine-contract
# iotests (convert-coroutines, convert-write-order), a subset of the
# differential cases and the fault injection runs; any sanitizer report is a
# failure.  Without an ASan build it prints a skip line and exits 0 (CI does
# not build one: docs/testing.md says why, and what the last run gave).
#
#   QCE_ASAN          the ASan build directory (default: build/asan)
#   QCE_SAN_CASES     differential cases (default 40)
#   QCE_SEED          seed for the differential and fault runs
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${QCE_BUILD:-${BUILD_DIR:-$top/build}}
asan=${QCE_ASAN:-$build/asan}
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

if [ ! -x "$asan/qemu-img" ]; then
    echo "skip - sanitizers: no ASan build in $asan (run scripts/build --sanitize)"
    echo "sanitizers.sh: skipped"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
reports=$tmp/reports
mkdir -p "$reports"
# Reports go to files (one per process), so that iotests' output stays as
# it is and nothing can hide a report; a process that finds an error still
# exits non-zero, which the tests see as well.
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:exitcode=86"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=0"
seed=${QCE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "sanitizers: ASan+UBSan build $asan, seed $seed"
start=$(date +%s)

# count_reports STEP: ok/FAIL on the reports that appeared.  Every ASan
# process also logs a warning that makecontext/swapcontext (QEMU's
# coroutines) are not fully supported; that alone is not a report.
count_reports() {
    local n w
    n=$(grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' \
        -r "$reports" | wc -l)
    w=$(find "$reports" -type f | wc -l)
    if [ "$n" = 0 ]; then
        ok "$1: no ASan/LSan/UBSan report ($w log files, each only the coroutine warning)"
    else
        fail "$1: $n sanitizer report(s):"
        grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' -r "$reports" |
            head -n 3 | while read -r f; do
                echo "    == $f"; grep -v -e 'makecontext' -e '__asan_handle_no_return' \
                    -e 'False positive' -e 'google/sanitizers/issues/189' "$f" |
                    head -n 30 | sed 's/^/    /'
            done
        mkdir -p "$build/sanitizer-reports"
        cp "$reports"/* "$build/sanitizer-reports/" 2>/dev/null || true
        echo "    (all reports copied to $build/sanitizer-reports/)"
    fi
    rm -f "$reports"/*
}

# 1. The series' engine-contract iotests, under the ASan build
iodir=$asan/tests/qemu-iotests
for fmt_tests in "raw:convert-coroutines" "qcow2:convert-coroutines convert-write-order"; do
    fmt=${fmt_tests%%:*}
    tests=${fmt_tests#*:}
    log=$tmp/iotests-$fmt.log
    # shellcheck disable=SC2086
    (cd "$iodir" && QEMU_PROG=$top/tests/bin/qemu-system-stub \
        timeout 1800 ./check -"$fmt" $tests) >"$log" 2>&1 || true
    for t in $tests; do
        if sed 's/\r/\n/g' "$log" | grep -qE "^$t +pass"; then
            ok "iotest $t -$fmt under ASan+UBSan"
        else
            fail "iotest $t -$fmt under ASan+UBSan:"; tail -n 30 "$log" | sed 's/^/    /'
        fi
    done
done
# iotests' runner sets its own ASAN_OPTIONS (detect_leaks=0, a log_path in
# its TEST_DIR that it deletes when the test passes): there an ASan error
# shows as a failed test (ASan aborts the process), leaks are not checked,
# and UBSan reports (UBSAN_OPTIONS is left alone) land here.
count_reports "iotests (UBSan; ASan errors fail the test)"

# 2. Differential cases: the ASan build is the build under test (and its
# own -m 1 reference); the unpatched build stays the other reference
out=$tmp/diff.log
rc=0
QCE_PATCHED=$asan /usr/bin/python3 -B "$top/tests/reliability/differential.py" \
    --seed "$seed" --cases "${QCE_SAN_CASES:-40}" >"$out" 2>&1 || rc=$?
grep -E '^(ok|FAIL) - ' "$out" | sed 's/^\(ok\|FAIL\) - /&[asan] /' || true
passed=$((passed + $(grep -c '^ok - ' "$out" || true)))
failed=$((failed + $(grep -c '^FAIL - ' "$out" || true)))
[ $rc = 0 ] || grep -q '^FAIL - ' "$out" || { fail "differential under ASan exited $rc"; tail -n 20 "$out" | sed 's/^/    /'; }
tail -n 1 "$out"
count_reports "differential (${QCE_SAN_CASES:-40} cases)"

# 3. Fault injection: the error paths are where use-after-free hides
out=$tmp/faults.log
rc=0
QCE_PATCHED=$asan /usr/bin/python3 -B "$top/tests/reliability/faults.py" \
    --seed "$seed" --group blkdebug,qcow2,nbdkit,kill,salvage >"$out" 2>&1 || rc=$?
grep -E '^(ok|FAIL) - ' "$out" | sed 's/^\(ok\|FAIL\) - /&[asan] /' || true
passed=$((passed + $(grep -c '^ok - ' "$out" || true)))
failed=$((failed + $(grep -c '^FAIL - ' "$out" || true)))
[ $rc = 0 ] || grep -q '^FAIL - ' "$out" || { fail "faults under ASan exited $rc"; tail -n 20 "$out" | sed 's/^/    /'; }
tail -n 1 "$out"
count_reports "fault injection"

finish "$(( $(date +%s) - start )) s"
