#!/bin/bash
# scripts/bench --quick must run every quick scenario, verify every copy,
# count requests on its servers, leave no nbdkit behind (also when it is
# interrupted), catch a wrong copy, and keep its hands off docs/.
# Asserts nothing about speed.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# QCE_BUILD: the base's build directory that scripts/check --base names
build=${QCE_BUILD:-${BUILD_DIR:-$top/build}}
export BUILD_DIR=$build
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# check DESCRIPTION COMMAND...: ok if the command succeeds
check() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }

for b in "$build/unpatched/qemu-img" "$build/patched/qemu-img"; do
    [ -x "$b" ] || { fail "$b is missing; run scripts/build first"; finish; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# no_leftover DIR: no process (nbdkit, qemu-img, nbdcopy) names DIR any more
# shellcheck disable=SC2317  # (called through check)
no_leftover() { ! pgrep -a -f -- "$1" >&2; }
docsum() { cat "$top"/docs/benchmarks.md "$top"/docs/bench-*.png 2>/dev/null | sha256sum; }
before=$(docsum)

# 1. The quick run itself.
rc=0
"$top/scripts/bench" --quick --scratch "$tmp/s1" --results "$tmp/quick.json" \
    >"$tmp/out" 2>&1 || rc=$?
if [ $rc = 0 ] && grep -q '^bench: all copies verified' "$tmp/out"; then
    ok "bench --quick exits 0 with every copy verified"
else
    fail "bench --quick exited $rc:"; sed 's/^/    /' "$tmp/out"
fi
check "no WRONG COPY or TOOL FAILED line" \
    eval "! grep -E 'WRONG COPY|TOOL FAILED' '$tmp/out'"
check "the seed is printed" grep -q '^bench: seed [0-9]' "$tmp/out"
check "no nbdkit or tool process outlives the run" no_leftover "$tmp/s1"
check "the idle check is recorded (CPU busy before and after the run)" \
    /usr/bin/python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["machine"]
sys.exit(not (0 <= m["idle_start"]["cpu_busy"] <= 1 and "idle_end" in m
              and isinstance(m["not_idle"], bool)))' "$tmp/quick.json"

# --help of the harness and of its layout companion (argparse expands
# '%' in help texts: a stray one breaks --help only)
check "scripts/bench --help exits 0 and names --busy-ok" \
    eval "'$top/scripts/bench' --help | grep -q -- --busy-ok"
check "scripts/layout --help exits 0 and names --tgtd-iothreads" \
    eval "'$top/scripts/layout' --help | grep -q -- --tgtd-iothreads"

# A full (not --quick) run refuses a busy machine before it starts
# anything: busy loops take every CPU.
spin=()
for _ in $(seq "$(nproc)"); do
    ( exec timeout 30 sh -c 'while :; do :; done' ) & spin+=($!)
done
rc=0
"$top/scripts/bench" --no-docs --reps 1 --scratch "$tmp/busy" \
    --results "$tmp/busy.json" s3-raw >"$tmp/busy.out" 2>&1 || rc=$?
kill "${spin[@]}" 2>/dev/null || true
wait "${spin[@]}" 2>/dev/null || true
if [ $rc = 2 ] && grep -q 'the machine is busy' "$tmp/busy.out" && [ ! -e "$tmp/busy.json" ]; then
    ok "a full run on a busy machine is refused (exit 2, says why, no results)"
else
    fail "a full run on a busy machine: exit $rc:"; sed 's/^/    /' "$tmp/busy.out"
fi
check "the scratch directory is removed" eval "[ -z \"\$(ls -A '$tmp/s1' 2>/dev/null)\" ]"
check "docs/benchmarks.md and docs/bench-*.png are untouched" \
    eval "[ \"\$(docsum)\" = '$before' ]"
check "the quick document is written to build/bench/quick/" \
    grep -q '^### s1-2ms' "$build/bench/quick/benchmarks-quick.md"

# Every run verified; NBD runs counted reads on the source and writes on
# the target; the quick scenarios all ran; nbdcopy skipped where it must be.
if [ -f "$tmp/quick.json" ]; then
    helper "$tmp/json.out" 9 "the results JSON checks" -- \
        /usr/bin/python3 - "$tmp/quick.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
sc = {s["id"]: s for s in res["scenarios"]}
def say(ok, what):
    print(("ok - " if ok else "FAIL - ") + what)
say(sorted(sc) == ["s1-2ms", "s2-frag", "s2-frag-qemu-nbd", "s3-qcow2", "s3-zlib",
                   "s5-http-2ms"],
    f"the quick scenarios ran: {', '.join(sorted(sc))}")
runs = [r for s in sc.values() for r in s["runs"]]
# 6 tools on the 3 NBD scenarios and on HTTP, the 4 qemu-img ones on the 2 local ones
say(len(runs) == 32 and all(r["rc"] == 0 and r.get("verified") for r in runs),
    f"{len(runs)} runs (want 32), all exit 0 and verified by qemu-img compare")
say(all(((r.get("netstats") or {}).get("bytes") or {}).get("to-client", 0)
        >= res["sizes"]["dense"] for r in sc["s5-http-2ms"]["runs"]),
    "s5-http-2ms: every tool read the image through the delaying proxy "
    "(qemu-img's curl driver, nbdcopy through nbdkit's curl plugin)")
nbd = [r for s in sc.values() if s["kind"] == "nbd" for r in s["runs"]]
def ops(r, side, typ):
    return ((r.get("stats", {}).get(side) or {}).get(typ) or {}).get("ops", 0)
say(nbd and all(ops(r, "source", "read") > 0 for r in nbd),
    "the source server counted reads in every NBD run")
say(nbd and all(ops(r, "target", "write") > 0 for r in nbd),
    "the target server counted writes in every NBD run")
say(all(ops(r, "source", "extents") > 0 for r in sc["s2-frag"]["runs"]),
    "the source server counted block status requests in s2-frag")
say(all(ops(r, "source", "extents") > 0 for r in sc["s2-frag-qemu-nbd"]["runs"])
    and all(any("qemu-nbd" in c for c in r.get("servers", []))
            for r in sc["s2-frag-qemu-nbd"]["runs"]),
    "s2-frag-qemu-nbd: the source is a qemu-nbd behind nbdkit's nbd plugin, "
    "and its block status requests are counted")
say(all(r["wall"] > 0 and r["cpu"] >= 0 and r["maxrss_kib"] > 0
        and r.get("minflt", 0) > 0 for r in runs),
    "wall time, CPU time, peak RSS and page faults are recorded for every run")
say(all(t in sc[k]["skipped"] for k in ("s3-qcow2", "s3-zlib") for t in ("nbdcopy", "nbdcopy-1.22"))
    and all(any(r["tool"] == t for r in sc["s1-2ms"]["runs"]) for t in ("nbdcopy", "nbdcopy-1.22"))
    and res["machine"].get("nbdcopy_1_22", "") == "nbdcopy 1.22.2",
    "both nbdcopys (Debian 12's 1.14, libnbd 1.22.2's built here) run on NBD and are skipped (with a reason) for qcow2 output")
PY
else
    fail "no results JSON at $tmp/quick.json"
fi

# 2. A wrong copy is caught: the target is altered after the copy.
rc=0
"$top/scripts/bench" --quick --test-corrupt --tools patched --no-docs s1-2ms \
    --scratch "$tmp/s2" --results "$tmp/corrupt.json" >"$tmp/out2" 2>&1 || rc=$?
if [ $rc = 1 ] && grep -q '^WRONG COPY: s1-2ms' "$tmp/out2"; then
    ok "a corrupted target is reported as WRONG COPY with exit 1"
else
    fail "a corrupted target was not caught (exit $rc):"; sed 's/^/    /' "$tmp/out2"
fi
check "no process outlives the wrong-copy run" no_leftover "$tmp/s2"

# 3. Interrupted in the middle: servers and tools are stopped.
for sig in TERM INT; do
    "$top/scripts/bench" --quick --reps 50 --tools unpatched --no-docs s1-2ms \
        --scratch "$tmp/s3$sig" --results "$tmp/int.json" >"$tmp/out3" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        pgrep -f -- "^nbdkit .*$tmp/s3$sig" >/dev/null && break
        sleep 0.1
    done
    sleep 0.5
    kill -"$sig" "$pid"
    rc=0
    wait "$pid" || rc=$?
    if [ $rc = 130 ] && grep -q 'interrupted' "$tmp/out3"; then
        ok "SIG$sig stops bench with exit 130"
    else
        fail "SIG$sig: bench exited $rc:"; sed 's/^/    /' "$tmp/out3"
    fi
    check "no nbdkit or tool process outlives SIG$sig" no_leftover "$tmp/s3$sig"
done

# 4. A tool with an environment (malloc kept) runs the same binary under
#    `env GLIBC_TUNABLES=...`, and its copy is verified.
rc=0
"$top/scripts/bench" --quick --tools patched-malloc --no-docs s3-qcow2 \
    --scratch "$tmp/s5" --results "$tmp/env.json" >"$tmp/out5" 2>&1 || rc=$?
if [ $rc = 0 ] && /usr/bin/python3 -c '
import json, os, sys
r = json.load(open(sys.argv[1]))["scenarios"][0]["runs"][0]
img = os.path.relpath(sys.argv[2], sys.argv[3]) + "/patched/qemu-img convert "
print(r["cmd"])
sys.exit(not (r["verified"] and r["cmd"].startswith(
    "env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=") and img in r["cmd"]))
' "$tmp/env.json" "$build" "$top" >"$tmp/env.out" 2>&1; then
    ok "patched-malloc: the patched qemu-img under env GLIBC_TUNABLES=..., copy verified"
else
    fail "patched-malloc (exit $rc); recorded command, then bench's output:"
    sed 's/^/    /' "$tmp/env.out" "$tmp/out5"
fi

# 4b. --only: a build run in one of two scenarios, recorded in the JSON,
#     and listed in the document's step-builds table, not in the scenario
#     tables.
rc=0
"$top/scripts/bench" --quick --build step="$build/unpatched" \
    --tools unpatched,step --only step:s2-frag --docs-dir "$tmp/only-docs" \
    --scratch "$tmp/s6" --results "$tmp/only.json" s1-2ms s2-frag \
    >"$tmp/out6" 2>&1 || rc=$?
if [ $rc = 0 ] && /usr/bin/python3 -c '
import json, sys
res = json.load(open(sys.argv[1]))
ran = {s["id"]: sorted({r["tool"] for r in s["runs"] if r.get("verified")})
       for s in res["scenarios"]}
print(ran, res.get("only"))
doc = open(sys.argv[2]).read()
step_rows = [l for l in doc.splitlines() if l.startswith("| step (default) |")]
print(step_rows)
sys.exit(not (ran == {"s1-2ms": ["unpatched"], "s2-frag": ["step", "unpatched"]}
              and res.get("only") == {"step": ["s2-frag"]}
              and "### Step builds" in doc and len(step_rows) == 1))
' "$tmp/only.json" "$tmp/only-docs/benchmarks-quick.md" >"$tmp/only.out" 2>&1; then
    ok "--only runs a build in the named scenarios only, and the document tables it apart"
else
    fail "--only (exit $rc); the check, then bench's output:"
    sed 's/^/    /' "$tmp/only.out" "$tmp/out6"
fi

# 5. The document is made from the newest run that wrote it: a newer
#    --no-docs run (two tools, one scenario) must not replace its tables.
mkdir -p "$tmp/res"
printf '{"command": "scripts/bench", "kind": "main", "id": "full"}' \
    >"$tmp/res/results-main-20260101-000000.json"
printf '{"command": "scripts/bench --tools patched --no-docs s1-0ms", "kind": "main", "id": "partial"}' \
    >"$tmp/res/results-main-20260102-000000.json"
got=$(/usr/bin/python3 - "$top/scripts" "$tmp/res" <<'PY' 2>&1
import sys
sys.path.insert(0, sys.argv[1])
from benchlib import report
report.BENCH = sys.argv[2]
print((report.latest("main") or {}).get("id"))
PY
)
if [ "$got" = full ]; then
    ok "--doc-only and a sweep take the newest run that wrote the docs, not a --no-docs one"
else
    fail "the document would be made from: $got"
fi

# 6. A Ctrl-C that comes while bench starts a child (between Popen's fork
#    and its return) or the timeout timer of a timed tool: the child is
#    registered (stop_all stops it), and no timer keeps bench alive.
helper "$tmp/cut.out" 3 "the Ctrl-C checks" -- \
    /usr/bin/python3 - "$top/scripts" "$tmp" <<'PY'
import os, signal, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[1])
from benchlib import common, runner
def say(ok, what):
    print(("ok - " if ok else "FAIL - ") + what, flush=True)
def cut():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)   # a handler not held off runs here
made = []          # every child, so that none outlives this test
class CutPopen(subprocess.Popen):
    def _execute_child(self, *args, **kw):
        super()._execute_child(*args, **kw)
        made.append(self.pid)
        cut()
class CutTimer(threading.Timer):
    def start(self):
        super().start()
        cut()
signal.signal(signal.SIGINT, common._on_signal)
real_popen, subprocess.Popen = subprocess.Popen, CutPopen
try:
    common.spawn(["sleep", "60"])
    say(False, "SIGINT while bench starts a child: not raised")
except common.Interrupted:
    kids = [p.args for p in common.PROCS.live.values()]
    say(kids == [["sleep", "60"]],
        f"SIGINT while bench starts a child: raised once it is registered ({kids})")
common.PROCS.stop_all()
subprocess.Popen = real_popen
threading.Timer = CutTimer
try:
    runner.timed(["sleep", "60"], os.path.join(sys.argv[2], "cut.log"), 900)
    say(False, "SIGINT while the tool's timer starts: not raised")
except common.Interrupted:
    left = [t for t in threading.enumerate() if t is not threading.main_thread()
            and not t.daemon and t.is_alive()]
    say(not left, f"SIGINT while the tool's timer starts: no thread keeps bench alive ({left})")
tool = [p for p in common.PROCS.live.values() if p.args[-2:] == ["sleep", "60"]]
common.PROCS.stop_all()
say(len(tool) == 1 and tool[0].returncode is not None and not common.PROCS.live,
    "... the timed tool was registered, and stop_all() stopped it")
for pid in made:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
sys.stdout.flush()
os._exit(0)   # a leftover timer must not hold this test for 900 s
PY

finish
