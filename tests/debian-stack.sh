#!/bin/bash
# scripts/debian-stack --dep3 must turn a git format-patch file into a
# DEP-3 quilt patch (Description with the whole commit message, Author,
# Origin, Forwarded, Last-Update; no sign-off lines) that quilt applies
# with --fuzz=0, as dpkg-source does.  And a pin whose upstream tarball
# has no known SHA-256 must never have that tarball used.
# shellcheck disable=SC2015 # 'test && ok || fail': ok never fails
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
expect_line() {  # expect_line DESCRIPTION FILE LINE (a whole line)
    if grep -qxF -- "$3" "$2"; then ok "$1"; else fail "$1 (no line '$3' in:)"; sed 's/^/    /' "$2"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A patch made by git, as the series stores them.
g=$tmp/src
mkdir -p "$g"
(
    cd "$g"
    git init -q
    printf 'a\nb\nc\n' > f.c
    git add f.c
    export GIT_AUTHOR_NAME="Ann Author" GIT_AUTHOR_EMAIL=ann@example.org \
           GIT_COMMITTER_NAME=x GIT_COMMITTER_EMAIL=x@example.org \
           GIT_AUTHOR_DATE="2026-03-04T05:06:07Z" GIT_COMMITTER_DATE="2026-03-04T05:06:07Z"
    git commit -q -m base
    sed -i 's/^b$/B/' f.c
    git commit -q -a -F - <<'EOF'
qemu-img: change b to B in a subject long enough to make git fold it in the header

First paragraph of the why.

Second paragraph,
two lines.

Signed-off-by: Ann Author <ann@example.org>
EOF
    git format-patch -q --zero-commit --no-signature -N --no-renames --stat=72 --abbrev=12 -o "$tmp" -1
)
patch=$(ls "$tmp"/0001-*.patch)
"$top/scripts/debian-stack" --dep3 "$patch" > "$tmp/dep3.patch"
d=$tmp/dep3.patch
expect_line "Description: is the whole subject (unfolded)" "$d" \
    "Description: qemu-img: change b to B in a subject long enough to make git fold it in the header"
expect_line "the body follows, indented by one space" "$d" " First paragraph of the why."
expect_line "blank lines become ' .'" "$d" " ."
expect_line "Author:" "$d" "Author: Ann Author <ann@example.org>"
expect_line "Origin:" "$d" "Origin: other, qemu-convert-engine series, $(basename "$patch")"
expect_line "Forwarded: no (not posted yet)" "$d" "Forwarded: no"
expect_line "Last-Update: from the patch's own date (byte-stable)" "$d" "Last-Update: 2026-03-04"
grep -q 'Signed-off-by' "$d" && fail "the sign-off line is still in the DEP-3 header" || ok "no sign-off line (Author says who)"
[ "$(sed -n '/^Last-Update:/{n;p}' "$d")" = "---" ] && ok "the header ends with ---, the diff follows" || fail "no --- after the header"
n_dots=$(grep -c '^ \.$' "$d")
[ "$n_dots" = 1 ] && ok "one ' .' between the two paragraphs, none for the trailers" || fail "$n_dots ' .' lines, want 1"

# quilt applies it, without fuzz, and the result is the change.
if command -v quilt >/dev/null; then
    q=$tmp/tree
    mkdir -p "$q/debian/patches"
    printf 'a\nb\nc\n' > "$q/f.c"
    cp "$d" "$q/debian/patches/x.patch"
    echo x.patch > "$q/debian/patches/series"
    if (cd "$q" && QUILT_PATCHES=debian/patches quilt --quiltrc - push -a --fuzz=0) >"$tmp/quilt.log" 2>&1 &&
       [ "$(cat "$q/f.c")" = "$(printf 'a\nB\nc')" ]; then
        ok "quilt push -a --fuzz=0 applies the DEP-3 patch"
    else
        fail "quilt did not apply the DEP-3 patch:"; sed 's/^/    /' "$tmp/quilt.log"
    fi
else
    fail "quilt is not installed (scripts/install-deps installs it)"
fi

# An upstream tarball the pin has no SHA-256 for is never used.
c=$tmp/cache
mkdir -p "$c"
echo "not verifiable" > "$c/qemu-9.9.9.tar.xz"
cat > "$tmp/pin.conf" <<'EOF'
QEMU_VERSION=9.9.9
QEMU_TARBALL=qemu-9.9.9.tar.xz
QEMU_TARBALL_URL=https://invalid/qemu-9.9.9.tar.xz
QEMU_TARBALL_SHA256=
DEBIAN_PACKAGE=qemu
DEBIAN_VERSION=1:9.9.9-1
DEBIAN_SUITE=none
DEBIAN_ORIG=qemu_9.9.9.orig.tar.xz
DEBIAN_ORIG_SHA256=0000
EOF
rc=0
QEMU_CACHE_DIR=$c "$top/scripts/fetch-qemu" --base "$tmp/pin.conf" --offline >"$tmp/path" 2>"$tmp/out" || rc=$?
[ $rc = 1 ] && [ ! -s "$tmp/path" ] &&
    ok "fetch-qemu does not use an upstream tarball with no pinned SHA-256" ||
    { fail "fetch-qemu used an unverifiable tarball (exit $rc):"; sed 's/^/    /' "$tmp/out"; }
rc=0
QEMU_CACHE_DIR=$c "$top/scripts/fetch-qemu" --base "$tmp/pin.conf" --source "$c/qemu-9.9.9.tar.xz" >"$tmp/out" 2>&1 || rc=$?
[ $rc = 1 ] && grep -qF "SHA-256 mismatch" "$tmp/out" &&
    ok "nor one given with --source" || { fail "--source with no pinned sum: exit $rc"; sed 's/^/    /' "$tmp/out"; }

finish
