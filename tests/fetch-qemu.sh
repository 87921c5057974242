#!/bin/bash
# scripts/fetch-qemu must verify what it is given, fail loudly on a
# mismatch, work offline from its cache, and say what to do otherwise.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/upstream/qemu.conf"
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
check() {  # check DESCRIPTION EXPECTED-RC EXPECTED-TEXT -- command...
    local desc=$1 want_rc=$2 want_text=$3 rc=0
    shift 4
    "$@" >"$tmp/out" 2>&1 || rc=$?
    if [ "$rc" = "$want_rc" ] && grep -qF -- "$want_text" "$tmp/out"; then
        ok "$desc"
    else
        fail "$desc (exit $rc, wanted $want_rc and '$want_text'):"
        sed 's/^/    /' "$tmp/out"
    fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
real=$(QEMU_CACHE_DIR=${QEMU_CACHE_DIR:-} "$top/scripts/fetch-qemu" --offline 2>/dev/null) || {
    echo "FAIL - no verified QEMU tarball in the cache; run scripts/build first"
    echo "fetch-qemu.sh: 0 passed, 1 failed"; exit 1; }

# A tampered tarball: same name, one byte changed.
cp "$real" "$tmp/$(basename "$real")"
printf 'X' | dd of="$tmp/$(basename "$real")" bs=1 seek=1000 conv=notrunc status=none
check "a tampered --source tarball is refused with both sums" 1 "SHA-256 mismatch for $tmp/$(basename "$real") (expected $QEMU_TARBALL_SHA256" -- \
    env QEMU_CACHE_DIR="$tmp/cache" "$top/scripts/fetch-qemu" --source "$tmp/$(basename "$real")"
if [ ! -e "$tmp/cache/$(basename "$real")" ]; then
    ok "the tampered tarball did not enter the cache"
else
    fail "the tampered tarball entered the cache"
fi

# A tampered cache entry is refused too (checked at every use).
mkdir -p "$tmp/cache2"
cp "$tmp/$(basename "$real")" "$tmp/cache2/"
check "a tampered cache entry is refused" 1 "SHA-256 mismatch for $(basename "$real")" -- \
    env QEMU_CACHE_DIR="$tmp/cache2" "$top/scripts/fetch-qemu" --offline

# Offline with an empty cache: a clear error naming the way out.
check "offline with an empty cache says to pass --source" 1 "pass --source PATH" -- \
    env QEMU_CACHE_DIR="$tmp/empty" "$top/scripts/fetch-qemu" --offline

# A verified local tarball fills an empty cache; then offline works.
check "a good --source tarball is verified and cached" 0 "$tmp/fresh/$(basename "$real")" -- \
    env QEMU_CACHE_DIR="$tmp/fresh" "$top/scripts/fetch-qemu" --source "$real"
check "offline from the filled cache" 0 "$tmp/fresh/$(basename "$real")" -- \
    env QEMU_CACHE_DIR="$tmp/fresh" "$top/scripts/fetch-qemu" --offline

# A directory of another version is refused.
mkdir -p "$tmp/srcdir"
echo 9.9.9 > "$tmp/srcdir/VERSION"
check "a source directory of another version is refused" 1 "is QEMU 9.9.9, but the pin is $QEMU_VERSION" -- \
    "$top/scripts/fetch-qemu" --source "$tmp/srcdir"

finish
