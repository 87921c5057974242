#!/bin/bash
# The numbers check of the posting: a number that is not in the named
# run, or a text that names no run, must fail; the real posting (every
# commit message and the cover letter) must pass against the committed
# summaries in docs/results/.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/build/bench" "$tmp/res"

# A run of two tools on one scenario: medians 0.21 s / 1.12 s, 512 / 16
# block status requests (scripts/bench's JSON, the fields the check reads)
python3 - "$tmp/build/bench/fake-run.json" <<'PY'
import json, sys
def run(tool, wall, ext):
    return {"tool": tool, "rc": 0, "verified": True, "wall": wall,
            "cpu": 0.05, "size": 268435456, "maxrss_kib": 12000,
            "stats": {"source": {"read": {"ops": 256},
                                 "extents": {"ops": ext}},
                      "target": {"write": {"ops": 256}}}}
json.dump({"machine": {"date": "2026-12-01T08:31:01+00:00"},
           "scenarios": [{"id": "s2-frag", "delays_ms": {"write": 1},
                          "tools": [{"id": "a", "label": "a"},
                                    {"id": "b", "label": "b"}],
                          "runs": [run("a", w, 512) for w in (0.20, 0.21, 0.25)]
                                + [run("b", w, 16) for w in (1.10, 1.12, 1.30)]}]},
          open(sys.argv[1], "w"))
PY
if "$top/scripts/check-numbers" --save "$tmp/build/bench/fake-run.json" \
        --results "$tmp/res" >/dev/null && [ -f "$tmp/res/fake-run.summary.json" ]; then
    ok "--save writes the run's summary"
else
    fail "--save did not write $tmp/res/fake-run.summary.json"
fi

msg() {  # msg FILE TIME COUNT: a commit message quoting one table
    cat > "$1" <<EOM
Subject: [PATCH] qemu-img: convert: something

Measured with scripts/bench (build/bench/fake-run.json):

                            before     after
  s2-frag                    $2 s     0.21 s
    block status requests      $3        512

(the maximum: 1.30 s.)
---
EOM
}
msg "$tmp/good.patch" 1.12 16
msg "$tmp/bad-time.patch" 1.13 16
msg "$tmp/bad-count.patch" 1.12 17
sed 's|build/bench/fake-run.json|an earlier run|' "$tmp/good.patch" > "$tmp/noname.patch"

if "$top/scripts/check-numbers" --results "$tmp/res" "$tmp/good.patch" > "$tmp/out" 2>&1; then
    ok "a message whose numbers are all in the named run passes"
else
    fail "a good message fails:"; sed 's/^/    /' "$tmp/out"
fi
# each bad message must fail, and say why
for c in "bad-time:1.13 (time)" "bad-count:17 (count)" "noname:names no run"; do
    f=${c%%:*}
    if "$top/scripts/check-numbers" --results "$tmp/res" "$tmp/$f.patch" > "$tmp/out" 2>&1; then
        fail "$f: passes"
    elif grep -qF "${c#*:}" "$tmp/out"; then
        ok "$f: fails with '${c#*:}'"
    else
        fail "$f: fails without '${c#*:}':"; sed 's/^/    /' "$tmp/out"
    fi
done

# --one-run: two good messages that quote two different runs fail it
cp "$tmp/build/bench/fake-run.json" "$tmp/build/bench/fake-run2.json"
"$top/scripts/check-numbers" --save "$tmp/build/bench/fake-run2.json" \
    --results "$tmp/res" >/dev/null
sed 's|build/bench/fake-run.json|build/bench/fake-run2.json|' "$tmp/good.patch" > "$tmp/good2.patch"
if "$top/scripts/check-numbers" --one-run --results "$tmp/res" "$tmp/good.patch" \
        "$tmp/good.patch" > "$tmp/out" 2>&1 &&
   ! "$top/scripts/check-numbers" --one-run --results "$tmp/res" "$tmp/good.patch" \
        "$tmp/good2.patch" > "$tmp/out2" 2>&1 && grep -q 'runs, not one' "$tmp/out2"; then
    ok "--one-run passes texts that quote one run and fails texts that quote two"
else
    fail "--one-run:"; sed 's/^/    /' "$tmp/out" "$tmp/out2"
fi

# The posting itself: every commit message of patches/ and the cover
# letter, all from one run
if "$top/scripts/check-numbers" --one-run > "$tmp/out" 2>&1; then
    ok "every number in patches/ and docs/cover-letter.md is in one named run ($(grep -c 'number(s), all in' "$tmp/out") texts with numbers; $(grep -o '(v[^)]*)\|([a-z0-9-]*)$' "$tmp/out" | tail -1))"
else
    fail "the posting quotes numbers that are not in its named runs:"
    grep -E '^(FAIL|    )' "$tmp/out" | sed 's/^/    /'
fi
finish
