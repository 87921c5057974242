#!/bin/bash
# scripts/rebase-series must stop at the first conflict with a clear
# message, continue after a resolution made in git, replay that resolution
# by itself next time (byte-identical export), drop a patch that the new
# base already contains, and record all of it in the changelog.
# Runs on a copy of the tooling with two tiny fake "QEMU" releases, so it
# takes seconds and needs no QEMU tree.
# shellcheck disable=SC2015 # 'test && ok || fail': ok never fails
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
expect() {  # expect DESCRIPTION FILE TEXT
    if grep -qF -- "$3" "$2"; then ok "$1"; else fail "$1 (no '$3' in:)"; sed 's/^/    /' "$2"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
p=$tmp/project
mkdir -p "$p/upstream" "$p/patches" "$p/docs" "$tmp/cache"
cp -R "$top/scripts" "$p/"
export QEMU_CACHE_DIR=$tmp/cache BUILD_DIR=$p/build
unset SERIES_DIR QEMU_SOURCE

# Two fake releases: 1.1.0 changes the line patch 1 touches (a conflict)
# and already contains the change of patch 2 (applied upstream).
mkrel() {  # mkrel VERSION: a tarball with qemu-img.c, block.c, checkpatch
    local v=$1 d=$tmp/rel/qemu-$1
    mkdir -p "$d/scripts"
    echo "$v" > "$d/VERSION"
    printf 'int main(void)\n{\n    int m = 16; /* MAX_COROUTINES */\n    return m;\n}\n' > "$d/qemu-img.c"
    printf 'static int a;\nstatic int b;\n' > "$d/block.c"
    if [ "$v" = 1.1.0 ]; then
        sed -i 's|int m = 16;|long m = 16;|' "$d/qemu-img.c"
        printf 'static int a;\nstatic int b = 2;\n' > "$d/block.c"
    fi
    printf '#!/usr/bin/perl\nprint "total: 0 errors, 0 warnings, 1 lines checked\\n";\n' > "$d/scripts/checkpatch.pl"
    tar -C "$tmp/rel" -cJf "$tmp/cache/qemu-$v.tar.xz" "qemu-$v"
    cat > "$p/upstream/qemu-$v.conf" <<EOF
QEMU_VERSION=$v
QEMU_TARBALL=qemu-$v.tar.xz
QEMU_TARBALL_URL=https://invalid/qemu-$v.tar.xz
QEMU_TARBALL_SHA256=$(sha256sum "$tmp/cache/qemu-$v.tar.xz" | cut -d' ' -f1)
DEBIAN_PACKAGE=qemu
DEBIAN_VERSION=1:$v-1
DEBIAN_SUITE=none
DEBIAN_ORIG=qemu_$v.orig.tar.xz
DEBIAN_ORIG_SHA256=0
EOF
}
mkrel 1.0.0
mkrel 1.1.0
mv "$p/upstream/qemu-1.0.0.conf" "$p/upstream/qemu.conf"

# git_base DIR (in a subshell): make DIR a git repository of its files,
# one commit "base", as the tester (whose identity the caller's later
# commits keep)
git_base() {
    cd "$1"
    git init -q
    git add -A
    export GIT_AUTHOR_NAME=Tester GIT_AUTHOR_EMAIL=t@example.org \
           GIT_COMMITTER_NAME=Tester GIT_COMMITTER_EMAIL=t@example.org \
           GIT_AUTHOR_DATE=2026-01-02T03:04:05Z GIT_COMMITTER_DATE=2026-01-02T03:04:05Z
    git commit -q -m base
}

# The series on 1.0.0, made with git (never by hand).
g=$tmp/series-src
cp -R "$tmp/rel/qemu-1.0.0" "$g"
(
    git_base "$g"
    sed -i 's|int m = 16;|int m = 512;|' qemu-img.c
    git commit -q -a -F - <<'EOF'
qemu-img: allow more coroutines

Sixteen was picked in 2017; the test needs a body of two lines to pass
the lint of the tooling.

Signed-off-by: Tester <t@example.org>
EOF
    sed -i 's|static int b;|static int b = 2;|' block.c
    git commit -q -a -F - <<'EOF'
block: initialise b

Upstream does this too (in the fake 1.1.0), so a rebase onto 1.1.0 must
drop this patch and say so.

Signed-off-by: Tester <t@example.org>
EOF
    git format-patch -q --zero-commit --no-signature -N --no-renames --stat=72 --abbrev=12 -o "$p/patches" HEAD~2..
)
(cd "$p/patches" && printf '%s\n' *.patch > series)

# 1. The first replay stops at the conflict, clearly.
rc=0
"$p/scripts/rebase-series" --backport --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 1 ] && ok "rebase-series stops (exit 1) at the conflict" || fail "rebase-series exited $rc at the conflict"
expect "it names the patch" "$tmp/out" "patch 1/2 does not apply on QEMU 1.1.0:"
expect "it names the subject" "$tmp/out" "  qemu-img: allow more coroutines"
expect "it names the file" "$tmp/out" "conflicts in: qemu-img.c"
expect "it says where to resolve" "$tmp/out" "Resolve it with git in $p/build/work/qemu-1.1.0"
expect "it says how to go on" "$tmp/out" "then run: scripts/rebase-series --continue --backport 1.1.0"
[ ! -e "$p/patches/backports/1.1.0/series" ] && ok "nothing is exported before the conflict is resolved" ||
    fail "a series was exported although the replay stopped"

# 2. Resolve in git, continue.
w=$p/build/work/qemu-1.1.0
sed -i -e '/^<<<<<<<\|^=======\|^>>>>>>>/d' -e '/int m = 16;/d' -e '/int m = 512;/d' "$w/qemu-img.c"
sed -i 's|^\(.*\)/\* MAX_COROUTINES \*/|    long m = 512; /* MAX_COROUTINES */|' "$w/qemu-img.c"
git -C "$w" add qemu-img.c
rc=0
"$p/scripts/rebase-series" --continue --backport --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 0 ] && ok "--continue finishes after the resolution" || { fail "--continue exited $rc:"; sed 's/^/    /' "$tmp/out"; }
b=$p/patches/backports/1.1.0
[ "$(cat "$b/series" 2>/dev/null)" = "0001-qemu-img-allow-more-coroutines.patch" ] &&
    ok "the backport has patch 1 only (patch 2 dropped)" || fail "backport series: $(cat "$b/series" 2>/dev/null)"
expect "the backport carries the resolution" "$b/0001-qemu-img-allow-more-coroutines.patch" "+    long m = 512; /* MAX_COROUTINES */"
expect "its message notes the conflict" "$b/0001-qemu-img-allow-more-coroutines.patch" "Conflicts resolved in git: qemu-img.c."
[ -n "$(find "$b/rerere" -name postimage 2>/dev/null)" ] && ok "the resolution is stored (rerere)" || fail "no stored resolution in $b/rerere"
expect "the changelog records the dropped patch" "$p/docs/changelog.md" "patch 2, block: initialise b: DROPPED, its change is already in QEMU 1.1.0"
expect "the changelog records the conflict" "$p/docs/changelog.md" "patch 1, qemu-img: allow more coroutines: conflicts resolved in git: qemu-img.c"

# 3. A fresh replay reuses the resolution: no stop, same bytes.
cp -R "$b" "$tmp/first"
rc=0
"$p/scripts/rebase-series" --backport --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 0 ] && ok "a fresh replay needs no one (recorded resolution)" || { fail "the fresh replay exited $rc:"; sed 's/^/    /' "$tmp/out"; }
diff -r "$tmp/first" "$b" >"$tmp/diff" 2>&1 && ok "the regenerated backport is byte-identical" ||
    { fail "the regenerated backport differs:"; sed 's/^/    /' "$tmp/diff"; }
[ "$(grep -c '^## ' "$p/docs/changelog.md")" = 1 ] && ok "one changelog entry per replay of the day, not one per run" ||
    fail "changelog has $(grep -c '^## ' "$p/docs/changelog.md") entries"

# 3b. An upstream change that the backport carries before the series
# (patches/backports/1.1.0/upstream/) becomes its first patch; a pin
# move (section 5) does not take it.
u=$tmp/upstream-src
cp -R "$tmp/rel/qemu-1.1.0" "$u"
(
    git_base "$u"
    printf 'static int c;\n' > io.c
    git add io.c
    git commit -q -F - <<'EOF2'
io: add c

What a later release has and the series relies on: the backport carries
it before the series.

Signed-off-by: Tester <t@example.org>
EOF2
    git format-patch -q --zero-commit --no-signature -N --no-renames --stat=72 --abbrev=12 -o "$b/upstream" HEAD~1..
)
rc=0
"$p/scripts/rebase-series" --backport --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 0 ] && ok "a replay with an upstream change succeeds" || { fail "the replay with an upstream change exited $rc:"; sed 's/^/    /' "$tmp/out"; }
[ "$(tr '\n' ' ' < "$b/series")" = "0001-io-add-c.patch 0002-qemu-img-allow-more-coroutines.patch " ] &&
    ok "the upstream change is the backport's first patch" || fail "backport series: $(tr '\n' ' ' < "$b/series")"
expect "the changelog names it" "$p/docs/changelog.md" "patch 1, io: add c: upstream change carried before the series (patches/backports/1.1.0/upstream/)"
expect "the series' patch is numbered after it" "$p/docs/changelog.md" "patch 2, qemu-img: allow more coroutines: conflicts resolved in git: qemu-img.c"
# One that does not apply stops the replay, and says what to do.
cat > "$b/upstream/0002-block-rename-zz.patch" <<'EOF2'
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Tester <t@example.org>
Date: Fri, 2 Jan 2026 03:04:05 +0000
Subject: [PATCH] block: rename zz

Signed-off-by: Tester <t@example.org>
---
 block.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/block.c b/block.c
--- a/block.c
+++ b/block.c
@@ -1,2 +1,2 @@
-static int zz;
+static int yy;
 static int b = 2;
EOF2
rc=0
"$p/scripts/rebase-series" --backport --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 1 ] && ok "an upstream change that does not apply stops the replay" || fail "it exited $rc"
expect "and says what to do" "$tmp/out" "the upstream change 0002-block-rename-zz.patch does not apply on QEMU 1.1.0; if QEMU 1.1.0 has it, remove it from patches/backports/1.1.0/upstream/ and start over"
rm "$b/upstream/0002-block-rename-zz.patch"

# 4. Hand-editing the backport is refused.
rc=0
"$p/scripts/export-series" --base 1.1.0 --from "$w" >"$tmp/out" 2>&1 || rc=$?
[ $rc = 1 ] && grep -qF "is a variant generated by scripts/rebase-series" "$tmp/out" &&
    ok "export-series refuses to write a backport directly" || { fail "export-series into the backport: exit $rc"; sed 's/^/    /' "$tmp/out"; }

# 5. Moving the pin: patches/ becomes the replayed series, qemu.conf the
# new pin, the old pin is kept.
rc=0
"$p/scripts/rebase-series" --no-check 1.1.0 >"$tmp/out" 2>&1 || rc=$?
[ $rc = 0 ] && ok "moving the pin to 1.1.0 succeeds (recorded resolution)" || { fail "moving the pin exited $rc:"; sed 's/^/    /' "$tmp/out"; }
grep -qx 'QEMU_VERSION=1.1.0' "$p/upstream/qemu.conf" && grep -qx 'QEMU_VERSION=1.0.0' "$p/upstream/qemu-1.0.0.conf" &&
    ok "upstream/qemu.conf is 1.1.0, upstream/qemu-1.0.0.conf the old pin" || fail "pins after the move: $(ls "$p/upstream")"
expect "patches/ holds the replayed patch" "$p/patches/0001-qemu-img-allow-more-coroutines.patch" "+    long m = 512; /* MAX_COROUTINES */"
[ ! -e "$p/patches/0002-block-initialise-b.patch" ] && ok "the dropped patch left patches/" || fail "0002 is still in patches/"
expect "the changelog says the series moved" "$p/docs/changelog.md" "rebased onto QEMU 1.1.0 (from 1.0.0)"

finish
