#!/bin/bash
# S4's real stack, small: the patched qemu-img converts nfs -> iscsi,
# nfs -> local and local -> iscsi through nfs-ganesha, tgtd and the
# delaying proxy (scripts/bench --quick S4), every copy is verified with
# qemu-img compare, the proxy counts the NFS and iSCSI requests, and no
# server, proxy or network namespace outlives a run, an interruption or a
# SIGKILL of the harness.  Skips (not passes) when the packages or network
# namespaces are missing.  Asserts nothing about speed.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
# QCE_BUILD: the base's build directory that scripts/check --base names
build=${QCE_BUILD:-${BUILD_DIR:-$top/build}}
export BUILD_DIR=$build
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
check() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }

for b in "$build/unpatched/qemu-img" "$build/patched/qemu-img"; do
    [ -x "$b" ] || { fail "$b is missing; run scripts/build first"; finish; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 0. A stop signal that comes while a server is being started, between
#    Popen's fork and its return, does not lose the server: it is recorded
#    (close() stops what is recorded), then the signal is handled.  The
#    server does not inherit a blocked SIGTERM.  Needs no server package.
helper "$tmp/spawn.out" 3 "the spawn check" -- \
    /usr/bin/python3 - "$top/scripts" "$tmp" <<'PY'
import os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import netstorage
class Cut(subprocess.Popen):
    def _execute_child(self, *args, **kw):
        super()._execute_child(*args, **kw)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)   # a handler not held off runs here, inside Popen()
def say(ok, what):
    print(("ok - " if ok else "FAIL - ") + what)
# Python's own handler, also when this test was started with SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
st = netstorage.Stack(sys.argv[2])
netstorage.subprocess.Popen = Cut
raised = False
try:
    st._spawn("sleeper", ["sleep", "60"], os.path.join(sys.argv[2], "sleeper.log"))
except KeyboardInterrupt:
    raised = True
say(raised, "SIGINT while a server starts: still raised (KeyboardInterrupt)")
say([n for n, _ in st.started] == ["sleeper"],
    f"... after the server was recorded (recorded: {[n for n, _ in st.started]})")
for _, p in st.started:
    with open(f"/proc/{p.pid}/status") as f:
        blk = int(next(ln for ln in f if ln.startswith("SigBlk:")).split()[1], 16)
    say(not blk & (1 << (signal.SIGTERM - 1)), "... and SIGTERM is not blocked in it")
    p.kill()
    p.wait()
PY

if ! why=$("$top/scripts/netstorage.py" check 2>&1); then
    echo "skip - tests/netstorage.sh: ${why#netstorage: }"
    finish
fi
mynet=$(readlink /proc/self/ns/net)
# leftovers BENCHPID [procs]: our namespaces of that bench (unless
# 'procs'), or a server or proxy process in a network namespace other than
# ours (a host's own rpcbind or tgtd is not one of ours)
leftovers() {
    local bad="" p
    [ "${2:-}" = procs ] || bad=$(ip netns list | grep -E "^qconv-$1-" || true)
    for p in $(pgrep -x tgtd; pgrep -x ganesha.nfsd; pgrep -x rpcbind;
               pgrep -f 'netstorage.py proxy'); do
        [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$mynet" ] && continue
        [ -e "/proc/$p" ] && bad="$bad $p:$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)($(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null))"
    done
    [ -z "$bad" ] || { echo "    left behind: $bad"; return 1; }
}

# 1. The three copies, without and with the proxy; patched build.
rc=0
"$top/scripts/bench" --quick --tools patched --no-docs S4 --scratch "$tmp/s1" \
    --results "$tmp/r.json" >"$tmp/out" 2>&1 &
pid=$!
wait $pid || rc=$?
if [ $rc = 0 ] && grep -q '^bench: all copies verified' "$tmp/out"; then
    ok "bench --quick S4 exits 0, every copy verified"
else
    fail "bench --quick S4 exited $rc:"; sed 's/^/    /' "$tmp/out"
fi
check "no server, proxy or namespace left after the run" leftovers $pid
if [ -f "$tmp/r.json" ]; then
    # 10 lines: 2, one per 0ms run (3), one per proxy count of the 2ms
    # runs (local-iscsi 1, nfs-iscsi 2, nfs-local 1), 1
    helper "$tmp/json.out" 10 "the results JSON checks" -- \
        /usr/bin/python3 - "$tmp/r.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
sc = {s["id"]: s for s in res["scenarios"]}
def say(ok, what):
    print(("ok - " if ok else "FAIL - ") + what)
want = [f"s4-{p}-{d}" for p in ("local-iscsi", "nfs-iscsi", "nfs-local")
        for d in ("0ms", "2ms")]
say(sorted(sc) == want, f"the S4 scenarios ran: {', '.join(sorted(sc))}")
runs = [r for s in sc.values() for r in s["runs"]]
say(len(runs) == 6 and all(r["rc"] == 0 and r.get("verified") for r in runs),
    f"{len(runs)} copies (want 6), all exit 0 and equal to the source (qemu-img compare)")
def n(r, *path):
    d = r.get("netstats") or {}
    for k in path:
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if isinstance(d, (int, float)) else 0
for s in sc.values():
    for r in s["runs"]:
        src, dst = s["id"].split("-")[1:3]
        if s["id"].endswith("-0ms"):
            say(r.get("netstats") is None, f"{s['id']}: no proxy in the path")
            continue
        if src == "nfs":
            say(n(r, "nfs", "nfs READ") >= 16 and n(r, "nfs", "mount MNT") >= 1,
                f"{s['id']}: the proxy counted NFS MNT and READ calls "
                f"({n(r, 'nfs', 'nfs READ')} READ for 16 MiB)")
        if dst == "iscsi":
            w = n(r, "iscsi", "scsi write bytes")
            say(n(r, "iscsi", "scsi write") > 0 and w == 16 << 20,
                f"{s['id']}: the proxy counted SCSI WRITEs of 16 MiB in all ({w})")
say(all("nbdcopy speaks NBD" in s["skipped"].get("nbdcopy", "nbdcopy speaks NBD")
        for s in sc.values()), "nbdcopy is not run on nfs/iscsi")
PY
else
    fail "no results JSON at $tmp/r.json"
fi

# 2. A wrong copy on the iSCSI LUN is caught.
rc=0
"$top/scripts/bench" --quick --test-corrupt --tools patched --no-docs s4-nfs-iscsi-2ms \
    --scratch "$tmp/s2" --results "$tmp/c.json" >"$tmp/out2" 2>&1 || rc=$?
if [ $rc = 1 ] && grep -q '^WRONG COPY: s4-nfs-iscsi-2ms' "$tmp/out2"; then
    ok "a corrupted LUN is reported as WRONG COPY with exit 1"
else
    fail "a corrupted LUN was not caught (exit $rc):"; sed 's/^/    /' "$tmp/out2"
fi

# 3. Interrupted (SIGINT, as Ctrl-C) at several points of a run (a server
#    starting, the copy, the teardown: every run starts its own servers),
#    and killed with SIGKILL: servers die with it (PDEATHSIG), `netstorage.py
#    cleanup` removes its namespaces.
for when in INT:0 INT:0.15 INT:0.4 INT:0.7 INT:1 KILL:1; do
    sig=${when%:*} after=${when#*:}
    "$top/scripts/bench" --quick --reps 50 --tools patched --no-docs s4-nfs-iscsi-2ms \
        --scratch "$tmp/s3$sig" --results "$tmp/i.json" >"$tmp/out3" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        pgrep -f -- "ganesha.nfsd .*$tmp/s3$sig" >/dev/null && break
        sleep 0.1
    done
    sleep "$after"
    kill -"$sig" "$pid"
    rc=0
    { wait "$pid"; } 2>/dev/null || rc=$?
    if [ "$sig" = INT ]; then
        at="SIGINT ${after} s after ganesha.nfsd started"
        if [ $rc = 130 ] && grep -q 'interrupted' "$tmp/out3"; then
            ok "$at: bench exits 130"
        else
            fail "$at: bench exited $rc:"; sed 's/^/    /' "$tmp/out3"
        fi
        # no process found still running in a namespace by the teardown
        # (it waits for what it stopped), and nothing left after it
        # (what was found goes on the FAIL line: CI logs may show only it)
        said=$(grep -E ' left in qconv-|still exits .* after SIGKILL' "$tmp/out3" | tr '\n' ' ' || true)
        if lo=$(leftovers $pid) && [ -z "$said" ]; then
            ok "$at: no server, proxy or namespace left"
        else
            lo=${lo#"${lo%%[! ]*}"}
            fail "$at: something was left:${lo:+ $lo}${said:+ bench said: $said}"
            sed 's/^/    /' "$tmp/out3"
        fi
        rm -rf "$tmp/s3$sig"
    else
        # the servers get SIGKILL from the kernel (PDEATHSIG); give them
        # time to exit, then look, before the cleanup (which kills too)
        for _ in $(seq 50); do leftovers $pid procs >/dev/null && break; sleep 0.1; done
        check "no server or proxy outlives a SIGKILLed bench (PDEATHSIG)" leftovers $pid procs
        ns_left=$(ip netns list | grep -c "^qconv-$pid-" || true)
        "$top/scripts/netstorage.py" cleanup >/dev/null
        check "netstorage.py cleanup removes the $ns_left namespace(s) it left" leftovers $pid
        rm -rf "$tmp/s3$sig"
    fi
done

# 4. Reads longer than the server's READ size (1 MiB with nfs-ganesha),
#    which the patched block/nfs.c splits into READs of that size itself
#    (patch 45): read through nfs:// with requests of 1.5 MiB (parts
#    that cross READ boundaries), 3 MiB and convert's 2 MiB, from a file
#    whose end is not a multiple of any of them; each copy equals it.
#    This checks the split's offsets and padding (a part read 4 KiB off
#    fails all three), not that the split is taken: libnfs splits these
#    reads correctly too; the page faults in scripts/bench's S4 show it.
helper "$tmp/split.out" 3 "the long-read checks" -- \
    /usr/bin/python3 - "$top/scripts" "$tmp/s4" "$build/patched/qemu-img" <<'PY'
import filecmp, os, random, subprocess, sys
sys.path.insert(0, sys.argv[1])
import netstorage
work, img = sys.argv[2], sys.argv[3]
export = os.path.join(work, "export")
os.makedirs(export)
src = os.path.join(export, "src.raw")
seed = int(os.environ.get("QCE_SEED", "4545"))
with open(src, "wb") as f:
    f.write(random.Random(seed).randbytes(5 * 1024 * 1024 + 4096))
def say(ok, what):
    print(("ok - " if ok else "FAIL - ") + what + f" (seed {seed})")
with netstorage.Stack(os.path.join(work, "stack"), export) as st:
    url = st.nfs_url("src.raw")
    for what, cmd in (
            ("qemu-img dd bs=1536K", ["dd", "-f", "raw", "-O", "raw", "bs=1536K"]),
            ("qemu-img dd bs=3M", ["dd", "-f", "raw", "-O", "raw", "bs=3M"]),
            ("qemu-img convert", ["convert", "-f", "raw", "-O", "raw"])):
        out = os.path.join(work, "out.raw")
        if os.path.exists(out):
            os.unlink(out)
        args = [f"if={url}", f"of={out}"] if cmd[0] == "dd" else [url, out]
        r = subprocess.run(st.client_cmd([img] + cmd + args),
                           capture_output=True, text=True, timeout=120)
        same = r.returncode == 0 and filecmp.cmp(src, out, shallow=False)
        say(same, f"nfs:// -> file with {what}: exit {r.returncode}, "
            f"{'equal to' if same else 'NOT equal to'} the source {r.stderr.strip()}")
PY

finish
