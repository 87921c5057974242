#!/bin/bash
# scripts/post-series must write mails that git am applies, in order, onto
# the pinned base and that give the tree of the series; fill in the cover
# letter; carry the changelog of a later version; and refuse a posting
# that is not ready (a patch without Signed-off-by, a changed patch with
# no changelog entry).  The build and the tests are skipped (--skip-build
# --skip-tests): scripts/check runs those itself.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/upstream/qemu.conf"
repo=${BUILD_DIR:-$top/build}/src/qemu-$QEMU_VERSION
base_tag=base-$QEMU_VERSION
export GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@invalid
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# holds DESCRIPTION COMMAND...: ok if the command succeeds
holds() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }
# expect FILE TEXT DESCRIPTION
expect() {
    if grep -qF -- "$2" "$1"; then ok "$3"; else fail "$3 (no '$2' in $(basename "$1"))"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The patches of the posting: those patches/series does not mark
# "# downstream: ..." (they are for the distribution builds)
mapfile -t names < <(awk '/^# downstream: / { d = 1; next } /^#/ || !NF { next } { if (!d) print; d = 0 }' "$top/patches/series")
mapfile -t down < <(awk '/^# downstream: / { d = 1; next } /^#/ || !NF { next } { if (d) print; d = 0 }' "$top/patches/series")
down_subjects=()
for p in "${down[@]}"; do
    down_subjects+=("$(git mailinfo /dev/null /dev/null < "$top/patches/$p" | sed -n 's/^Subject: //p')")
done
# Who posts, in this test (the stored series carries a placeholder)
poster="Ada Poster <ada.poster@mail.qemu-convert-engine.test>"
n=${#names[@]}
subjects=()
for p in "${names[@]}"; do
    subjects+=("$(git mailinfo /dev/null /dev/null < "$top/patches/$p" | sed -n 's/^Subject: //p')")
done

# 0. -v is required
rc=0
"$top/scripts/post-series" --dry-run >"$tmp/run0" 2>&1 || rc=$?
if [ $rc = 1 ] && grep -qF 'pass -v N' "$tmp/run0"; then ok "no -v: refused, says to pass -v N"; else fail "no -v: exit $rc: $(cat "$tmp/run0")"; fi

# 0b. no identity (no --from, no git user.name/user.email): refused; the
# placeholder identity: refused
mkdir -p "$tmp/nohome"
rc=0
env -u GIT_AUTHOR_NAME -u GIT_AUTHOR_EMAIL HOME="$tmp/nohome" XDG_CONFIG_HOME="$tmp/nohome" \
    GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
    "$top/scripts/post-series" -v 1 --dry-run --skip-build --skip-tests \
    --out "$tmp/out0" >"$tmp/run0b" 2>&1 || rc=$?
if [ $rc = 1 ] && grep -qF 'who posts?' "$tmp/run0b" && [ ! -e "$tmp/out0/v1" ]; then
    ok "no identity: refused, says how to give one, writes no mail"
else
    fail "no identity: exit $rc, $(ls "$tmp/out0" 2>/dev/null): $(cat "$tmp/run0b")"
fi
rc=0
"$top/scripts/post-series" -v 1 --dry-run --skip-build --skip-tests \
    --from "Convert Engine Maintainers <qemu-convert-engine@example.org>" \
    --out "$tmp/out0" >"$tmp/run0c" 2>&1 || rc=$?
if [ $rc = 1 ] && grep -qF 'placeholder identity' "$tmp/run0c"; then
    ok "the placeholder identity: refused"
else
    fail "the placeholder identity: exit $rc: $(cat "$tmp/run0c")"
fi

# 1. v1 of the real series
patches_before=$(cat "$top/patches/series" "$top/patches/"*.patch | sha256sum)
rc=0
"$top/scripts/post-series" -v 1 --dry-run --skip-build --skip-tests \
    --from "$poster" --out "$tmp/out" >"$tmp/run1" 2>&1 || rc=$?
if [ $rc = 0 ]; then
    ok "post-series -v 1 (build and tests skipped) passes its check"
else
    fail "post-series -v 1 exited $rc:"; sed 's/^/    /' "$tmp/run1"
fi
v1=$tmp/out/v1
cover=$v1/v1-0000-cover-letter.patch
mails=()
for m in "$v1"/v1-[0-9][0-9][0-9][0-9]-*.patch; do
    [ "$m" = "$cover" ] || mails+=("$m")
done
if [ -f "$cover" ] && [ ${#mails[@]} = "$n" ]; then
    ok "build/posting/v1: a cover letter and $n mails for $n patches"
else
    fail "wanted a cover letter and $n mails in $v1, got: $(cd "$v1" 2>&1 && echo *)"
fi
i=0
problem=""
for m in "${mails[@]}"; do
    i=$((i + 1))
    # git pads i to the width of n: [PATCH v1 01/10]
    grep -q "^Subject: \[PATCH v1 $(printf '%0*d' "${#n}" "$i")/$n\] " "$m" || problem="$problem $(basename "$m"):subject"
    grep -q '^Signed-off-by: ' "$m" || problem="$problem $(basename "$m"):sign-off"
    grep -qx 'To: qemu-devel@nongnu.org' "$m" || problem="$problem $(basename "$m"):To"
    grep -qx 'Cc: qemu-block@nongnu.org' "$m" || problem="$problem $(basename "$m"):Cc"
done
if [ -z "$problem" ]; then ok "every mail: [PATCH v1 i/$n], Signed-off-by, To: qemu-devel, Cc: qemu-block"; else fail "mails:$problem"; fi
problem=""
for m in "${mails[@]}"; do
    grep -qxF "From: $poster" "$m" || problem="$problem $(basename "$m"):From"
    grep -qxF "Signed-off-by: $poster" "$m" || problem="$problem $(basename "$m"):Signed-off-by"
    ! grep -qF 'qemu-convert-engine@example.org' "$m" || problem="$problem $(basename "$m"):placeholder"
done
if [ -z "$problem" ]; then ok "every mail is From: and Signed-off-by: the poster; no placeholder identity left"; else fail "identity:$problem"; fi
problem=""
for s in "${down_subjects[@]}"; do
    grep -lqF "$s" "${mails[@]}" "$cover" 2>/dev/null && problem="$problem; '$s'"
done
if [ ${#down[@]} -gt 0 ] && [ -z "$problem" ]; then
    ok "the ${#down[@]} patches marked downstream are not posted (not in any mail, not in the cover letter)"
else
    fail "downstream patches: ${#down[@]} marked; posted anyway:${problem#;}"
fi
holds "patches/ is unchanged by posting" \
    [ "$(cat "$top/patches/series" "$top/patches/"*.patch | sha256sum)" = "$patches_before" ]

# the cover letter
if grep -q -e '\*\*\* SUBJECT HERE \*\*\*' -e '\*\*\* BLURB HERE \*\*\*' -e '{{' -e '<!--' "$cover"; then
    fail "the cover letter has a leftover placeholder or comment"
else
    ok "no placeholder or comment is left in the cover letter"
fi
want=$(sed -n 's/^Subject: //p' "$top/docs/cover-letter.md" | head -n 1)
got=$(git mailinfo -k /dev/null /dev/null < "$cover" | sed -n 's/^Subject: //p')
holds "cover letter subject: [PATCH v1 0/$n] and the one of docs/cover-letter.md" \
    [ "$got" = "[PATCH v1 $(printf '%0*d' "${#n}" 0)/$n] $want" ]
holds "cover letter has the diffstat" grep -qE "^ [0-9]+ files? changed, [0-9]+ insertion" "$cover"
expect "$cover" "To: qemu-devel@nongnu.org" "cover letter is To: qemu-devel"
expect "$cover" "Cc: qemu-block@nongnu.org" "cover letter Cc: qemu-block"
if grep -qE '^Cc: [^@]+ <[^>]+@[^>]+>$' "$cover"; then
    ok "cover letter Cc: the maintainers get_maintainer.pl names ($(grep -cE '^Cc: [^@]+ <' "$cover"))"
else
    fail "cover letter has no maintainer Cc:"
fi
expect "$cover" "base-commit: $(git -C "$repo" rev-parse "$base_tag")" "cover letter names the base commit"
expect "$cover" "From: $poster" "cover letter is From: the poster"
problem=""
i=0
for s in "${subjects[@]}"; do
    i=$((i + 1))
    grep -qxF "$i/$n $s" "$cover" || problem="$problem; '$i/$n $s'"
done
if [ -z "$problem" ]; then ok "cover letter lists every patch of patches/series"; else fail "cover letter lacks${problem#;}"; fi

# the round trip: git am onto a fresh checkout of the pinned tag gives
# the tree of patches/ applied to it.  The checkout is kept in build/src
# (a worktree of the pinned tree's git; creating one costs ~20 s) and
# reset to the tag, untracked files removed, before every use.
am=${BUILD_DIR:-$top/build}/src/post-series-test
if [ ! -e "$am/.git" ]; then
    rm -rf "$am"
    git -C "$repo" worktree prune
    git -C "$repo" worktree add -q --detach "$am" "$base_tag"
fi
git -C "$am" am --abort >/dev/null 2>&1 || true
git -C "$am" checkout -q -f --detach "$base_tag"
git -C "$am" clean -q -fdx
if git -C "$am" am -q "${mails[@]}" >"$tmp/am.log" 2>&1; then
    ok "git am applies the $n mails in order onto $base_tag"
    # patches/ applied to the tag in a scratch index, without a checkout
    want=$(
        export GIT_INDEX_FILE=$tmp/index
        git -C "$repo" read-tree "$base_tag"
        for p in "${names[@]}"; do
            git -C "$repo" apply --cached "$top/patches/$p" || exit 1
        done
        git -C "$repo" write-tree
    ) || want="(patches/ do not apply with git apply)"
    got=$(git -C "$am" rev-parse 'HEAD^{tree}')
    if [ "$got" = "$want" ]; then
        ok "the tree after git am is the tree of the series ($got)"
    else
        fail "the tree after git am ($got) is not the series' tree ($want)"
    fi
    holds "git am made $n commits" [ "$(git -C "$am" rev-list --count "$base_tag..HEAD")" = "$n" ]
else
    fail "git am of the mails onto $base_tag failed:"; sed 's/^/    /' "$tmp/am.log"
fi

# 2. a v2 that is not ready: the first patch lost its Signed-off-by, and
# against a v1 record in which the first patch differs (changed, with no
# changelog entry), the last patch is missing (new in v2) and one more
# patch existed (dropped)
mkdir -p "$tmp/bad" "$tmp/rec"
cp "$top/patches/"*.patch "$top/patches/series" "$tmp/bad/"
sed -i '/^Signed-off-by: /d' "$tmp/bad/${names[0]}"
awk -v s="${subjects[0]}" '$1 == "patch:" {
        rest = $0; sub(/^patch: [0-9a-f]* /, "", rest)
        if (rest == s) $0 = "patch: 0000000000000000000000000000000000000000 " rest
    } { print }' "$tmp/out/v1.posted" | sed '$d' > "$tmp/rec/v1.posted"
echo "patch: 1111111111111111111111111111111111111111 qemu-img: a patch applied upstream" >> "$tmp/rec/v1.posted"
grep -q '^patch: 0000000000000000000000000000000000000000 ' "$tmp/rec/v1.posted" ||
    fail "test setup: could not fake the first patch's patch-id in the v1 record"
cat > "$tmp/rec/changes-v2.md" <<EOF
## Series

- Test note for the whole series.

## ${subjects[1]}

- Test note for patch 2.

## qemu-img: a patch applied upstream

- Applied upstream as 0123abcd.
EOF
echo "applied: 0123abcd qemu-img: a patch applied upstream" > "$tmp/rec/applied"
rc=0
"$top/scripts/post-series" -v 2 --dry-run --skip-build --skip-tests --series "$tmp/bad" \
    --from "$poster" --records "$tmp/rec" --out "$tmp/out" >"$tmp/run2" 2>&1 || rc=$?
holds "post-series -v 2 of a broken series exits 1 (exit $rc)" [ $rc = 1 ]
expect "$tmp/run2" "FAIL - lint: v2-0001-" "the mail without Signed-off-by fails the check"
expect "$tmp/run2" "no Signed-off-by:" "... and the failure says why"
expect "$tmp/run2" "FAIL - changelog: 1/$n '${subjects[0]}' changed since v1" \
    "a changed patch with no changelog entry fails the check"
expect "$tmp/run2" "ok - git am of the $n mails" "the v2 mails (changelog below ---) still git am"
v2=$tmp/out/v2
c2=$v2/v2-0000-cover-letter.patch
expect "$c2" "Changes since v1:" "v2 cover letter: 'Changes since v1'"
expect "$c2" "- Test note for the whole series." "v2 cover letter: the series note"
expect "$c2" "- $n/$n is new: ${subjects[$((n - 1))]}" "v2 cover letter: the new patch"
expect "$c2" "- dropped: qemu-img: a patch applied upstream (applied upstream: 0123abcd)" \
    "v2 cover letter: the dropped patch, applied upstream as docs/posting/applied says"
expect "$c2" "  - Applied upstream as 0123abcd." "v2 cover letter: the dropped patch's note"
m2=$(ls "$v2"/v2-0002-*.patch)
if awk '/^---$/ { sep = 1; next } sep && /^v2:$/ { v = 1; next } v && /^- Test note for patch 2\.$/ { found = 1 } END { exit !found }' "$m2"; then
    ok "patch 2's changelog is below its ---"
else
    fail "patch 2's changelog is not below its ---"
fi
mn=$(ls "$v2"/v2-"$(printf '%04d' "$n")"-*.patch)
expect "$mn" "- New in v2." "the new patch says so below its ---"
holds "--dry-run recorded nothing" [ ! -e "$tmp/rec/v2.posted" ]

finish
