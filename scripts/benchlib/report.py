# bench, report: Summaries of the results, their tables and plots, and
# docs/benchmarks.md.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import shlex
import shutil
import statistics
import subprocess

from benchlib.common import (
    BENCH,
    IDLE_SAMPLE_S,
    KiB,
    MiB,
    TOP,
    fmt_size,
    note,
)
from benchlib.catalog import (
    DEFAULT_SIZES,
    INPUT_DESC,
    NBDCOPY,
    QCOW2_OF,
    QUICK_SIZES,
    REF_TOOL,
    TOOL_BY_ID,
)
from benchlib.servers import (
    STAT_TYPES,
)

# ---------------------------------------------------------------------------
# Summaries, tables, plots, the document

def summarize(sres):
    """Per tool: medians and ranges over the verified runs."""
    out = {}
    for t in sres["tools"]:
        runs = [r for r in sres["runs"] if r["tool"] == t["id"] and r["rc"] == 0
                and r.get("verified")]
        bad = [r for r in sres["runs"] if r["tool"] == t["id"] and
               (r["rc"] != 0 or not r.get("verified"))]
        if not runs:
            out[t["id"]] = {"label": t["label"], "n": 0, "bad": len(bad)}
            continue
        walls = [r["wall"] for r in runs]
        size = runs[0]["size"]
        s = {"label": t["label"], "n": len(runs), "bad": len(bad),
             "wall": statistics.median(walls), "wall_min": min(walls),
             "wall_max": max(walls),
             "mibs": size / MiB / statistics.median(walls),
             "mibs_min": size / MiB / max(walls), "mibs_max": size / MiB / min(walls),
             "cpu": statistics.median(r["cpu"] for r in runs),
             "rss_mib": max(r["maxrss_kib"] for r in runs) / 1024,
             "minflt": (statistics.median(r["minflt"] for r in runs)
                        if all("minflt" in r for r in runs) else None),
             "alloc_mib": statistics.median(r.get("target_alloc", 0) for r in runs) / MiB,
             "qemu_nbd_cpu": (statistics.median(r["src_qemu_nbd_cpu"] for r in runs)
                              if all("src_qemu_nbd_cpu" in r for r in runs) else None),
             "inflight": t.get("inflight")}
        if runs[0].get("stats"):
            req = {}
            for side in ("source", "target"):
                req[side] = {}
                for typ in STAT_TYPES:
                    vals = [((r["stats"].get(side) or {}).get(typ) or {}).get("ops", 0)
                            for r in runs]
                    byts = [((r["stats"].get(side) or {}).get(typ) or {}).get("bytes", 0)
                            for r in runs]
                    if any(vals):
                        req[side][typ] = {"ops": statistics.median(vals),
                                          "min": min(vals), "max": max(vals),
                                          "bytes": statistics.median(byts)}
            s["req"] = req
            d = sres["delays_ms"].get("write", 0)
            tw = req["target"]
            ops = sum(tw.get(k, {}).get("ops", 0) for k in ("write", "zero"))
            byts = sum(tw.get(k, {}).get("bytes", 0) for k in ("write", "zero"))
            if sres["id"].startswith(("s1-", "sweep")) and d and ops and t.get("inflight"):
                s["req_size"] = byts / ops
                s["limit_mibs"] = t["inflight"] * byts / ops / MiB / (d / 1000)
        if runs[0].get("netstats"):
            s["net"] = {}
            for key, path in NET_COUNTS:
                vals = [_dig(r["netstats"], path) for r in runs]
                if any(v is not None for v in vals):
                    vals = [v or 0 for v in vals]
                    s["net"][key] = (statistics.median(vals), min(vals), max(vals))
        out[t["id"]] = s
    return out


# What the S4 proxy counts, as shown (key, path in netstorage.summarize_proxy).
NET_COUNTS = [
    ("nfs READ", ("nfs", "nfs READ")),
    ("scsi WRITE", ("iscsi", "scsi write")),
    ("scsi SYNC", ("iscsi", "scsi sync")),
    ("R2T", ("iscsi", "iscsi r2t")),
    ("Data-Out", ("iscsi", "iscsi data-out")),
    ("overshoot to server", ("overshoot_ms", "to-server")),
    ("overshoot to client", ("overshoot_ms", "to-client")),
]


def _dig(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _net_cell(s, keys, fmt="{:g}"):
    net = s.get("net")
    if not net:
        return "-"
    out = []
    for k in keys:
        if k not in net:
            out.append("0")
            continue
        med, lo, hi = net[k]
        v = fmt.format(med)
        out.append(v if lo == hi or fmt != "{:g}" else f"{v} ({lo}-{hi})")
    return ", ".join(out)


def _ops(req, side, typ):
    v = req.get(side, {}).get(typ)
    if not v:
        return "0"
    o = f"{v['ops']:g}"
    return o if v["min"] == v["max"] else f"{o} ({v['min']}-{v['max']})"


def scenario_table(sres, hide=()):
    summ = {k: v for k, v in summarize(sres).items() if k not in hide}
    ref = summ.get(REF_TOOL, {}).get("wall")
    nbc = summ.get(NBDCOPY, {}).get("wall")
    nbd = sres["kind"] == "nbd"
    net = sres["kind"] == "net"
    lim = sres["id"].startswith(("s1-", "sweep")) and sres["delays_ms"].get("write", 0)
    hdr = ["tool", "MiB/s", "wall s: median (min-max)", "CPU s", "peak RSS MiB"]
    # page faults: S4 only (libnfs allocates per reply); older results lack them
    faults = net and any("minflt" in r for r in sres["runs"])
    if faults:
        hdr.append("minor page faults")
    if ref:
        hdr.append("time / unpatched")
    if nbc:
        hdr.append("time / nbdcopy")
    if lim:
        hdr.append("latency limit MiB/s")
    if nbd:
        hdr += ["source requests: read, extents", "target requests: write, zero, trim, flush"]
    qnbd = nbd and any("src_qemu_nbd_cpu" in r for r in sres["runs"])
    if qnbd:
        hdr.append("source qemu-nbd CPU s")
    if net:
        hdr += ["proxy saw: NFS READ", "SCSI WRITE, SYNC; R2T, Data-Out",
                "proxy timer overshoot ms: to server, to client"]
    hdr.append("target allocated MiB")
    rows = ["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr)]
    for tid, s in summ.items():
        if not s["n"]:
            rows.append(f"| {s['label']} | no verified run ({s['bad']} failed) |"
                        + " |" * (len(hdr) - 2))
            continue
        row = [s["label"] + (f" ({s['bad']} failed runs discarded)" if s["bad"] else ""),
               f"{s['mibs']:.1f}",
               f"{s['wall']:.2f} ({s['wall_min']:.2f}-{s['wall_max']:.2f})",
               f"{s['cpu']:.2f}", f"{s['rss_mib']:.0f}"]
        if faults:
            row.append(f"{s['minflt']:.0f}" if s.get("minflt") is not None else "-")
        if ref:
            row.append(f"{s['wall'] / ref:.2f}")
        if nbc:
            row.append(f"{s['wall'] / nbc:.2f}")
        if lim:
            row.append(f"{s['limit_mibs']:.0f} ({s['inflight']} x {s['req_size'] / KiB:.0f} KiB"
                       f" / {sres['delays_ms']['write']} ms)" if "limit_mibs" in s else "-")
        if nbd:
            rq = s.get("req", {})
            row.append(", ".join(_ops(rq, "source", k) for k in ("read", "extents")))
            row.append(", ".join(_ops(rq, "target", k) for k in ("write", "zero", "trim", "flush")))
        if qnbd:
            row.append(f"{s['qemu_nbd_cpu']:.2f}" if s.get("qemu_nbd_cpu") is not None else "-")
        if net:
            row.append(_net_cell(s, ["nfs READ"]))
            row.append(_net_cell(s, ["scsi WRITE", "scsi SYNC"]) + "; "
                       + _net_cell(s, ["R2T", "Data-Out"]) if s.get("net") else "-")
            row.append(_net_cell(s, ["overshoot to server", "overshoot to client"],
                                 "{:.2f}"))
        row.append(f"{s['alloc_mib']:.1f}")
        rows.append("| " + " | ".join(row) + " |")
    for tid, why in sres["skipped"].items():
        label = TOOL_BY_ID[tid].label if tid in TOOL_BY_ID else tid
        rows.append(f"| {label} | skipped: {why} |" + " |" * (len(hdr) - 2))
    return "\n".join(rows)


def gnuplot(script, what):
    if not shutil.which("gnuplot"):
        note(f"gnuplot not found; {what} not drawn (scripts/install-deps installs gnuplot-nox)")
        return False
    r = subprocess.run(["gnuplot"], input=script, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        note(f"gnuplot failed drawing {what}:\n{r.stdout}")
        return False
    return True


def _q(s):
    return '"' + s.replace('"', "'") + '"'


def plot_throughput(main, png, workdir):
    scen = [s for s in main["scenarios"]]
    tools = []
    only = main.get("only") or {}  # step builds: in their own table, not here
    for s in scen:
        for t in s["tools"]:
            if t["label"] not in tools and t["id"] not in only:
                tools.append(t["label"])
    dat = os.path.join(workdir, "throughput.dat")
    with open(dat, "w") as f:
        f.write("scenario " + " ".join(_q(t) + " lo hi" for t in tools) + "\n")
        for s in scen:
            summ = {v["label"]: v for v in summarize(s).values()}
            cells = []
            for t in tools:
                v = summ.get(t)
                cells += ([f"{v['mibs']:.3f}", f"{v['mibs_min']:.3f}", f"{v['mibs_max']:.3f}"]
                          if v and v["n"] else ["?", "?", "?"])
            name = s["id"] + (" (no nbdcopy)" if NBDCOPY in s["skipped"] else "")
            f.write(_q(name) + " " + " ".join(cells) + "\n")
    plots = ", ".join(f"'{dat}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}"
                      f"{':xtic(1)' if i == 0 else ''} title {_q(t)}"
                      for i, t in enumerate(tools))
    return gnuplot(f"""
set terminal pngcairo size 1280,640 font "sans,10"
set output '{png}'
set datafile missing "?"
set key autotitle columnhead
set title "Throughput by scenario and tool (virtual size / wall time; median, bars min-max)"
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set logscale y
set ylabel "MiB/s (log scale)"
set grid ytics
set xtics rotate by 30 right
set bmargin 7
set key outside right top vertical
plot {plots}
""", "the throughput plot")


def plot_sweep(sweep, png, workdir):
    s = sweep["scenarios"][0]
    summ = summarize(s)
    series = [(b, w) for b in ("unpatched", "patched") for w in (False, True)]
    ms = sorted({v["m"] for k, v in s["sweep"].items() if summ.get(k, {}).get("n")})
    if not ms:
        return False
    dat = os.path.join(workdir, "sweep.dat")
    with open(dat, "w") as f:
        for m in ms:
            cells = []
            for b, w in series:
                v = summ.get(f"{b}-m{m}{'-W' if w else ''}")
                cells.append(f"{v['mibs']:.3f}" if v and v.get("n") else "?")
            f.write(f"{m} " + " ".join(cells) + "\n")
    plots = ", ".join(f"'{dat}' using 1:{i + 2} with linespoints lw 2 title "
                      f"{_q(b + (' -W (out of order)' if w else ' in-order'))}"
                      for i, (b, w) in enumerate(series))
    return gnuplot(f"""
set terminal pngcairo size 960,600 font "sans,10"
set output '{png}'
set datafile missing "?"
set title "Throughput vs -m, {s['title'].replace('"', "'")} (median)"
set logscale x 2
set xrange [{ms[0] / 1.4}:{ms[-1] * 1.4}]
set xtics ({", ".join(str(m) for m in ms)})
set xlabel "-m (coroutines)"
set ylabel "MiB/s"
set yrange [0:*]
set grid
set key left top
plot {plots}
""", "the -m sweep plot")


def sweep_table(sweep):
    s = sweep["scenarios"][0]
    summ = summarize(s)
    ms = sorted({v["m"] for v in s["sweep"].values()})
    series = [(b, w) for b in ("unpatched", "patched") for w in (False, True)]
    hdr = ["-m"] + [f"{b} {'-W' if w else 'in-order'} MiB/s (min-max)" for b, w in series]
    rows = ["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr)]
    for m in ms:
        cells = [str(m)]
        for b, w in series:
            tid = f"{b}-m{m}{'-W' if w else ''}"
            v = summ.get(tid)
            if v and v.get("n"):
                cells.append(f"{v['mibs']:.1f} ({v['mibs_min']:.1f}-{v['mibs_max']:.1f})")
            else:
                cells.append(s["skipped"].get(tid, "no verified run"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def only_table(main):
    """The tools run with --only (step builds on a few scenarios), as one
    table: a row per tool, a column per scenario, median wall seconds
    (min-max); an empty cell where the tool did not run."""
    only = main.get("only") or {}
    scen = [s for s in main["scenarios"]
            if any(t["id"] in only for t in s["tools"])]
    hdr = ["tool"] + [s["id"] for s in scen]
    rows = ["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr)]
    summ = [summarize(s) for s in scen]
    labels = {t["id"]: t["label"] for s in scen for t in s["tools"]}
    for tid in only:
        cells = [labels.get(tid, tid)]
        for sm in summ:
            v = sm.get(tid)
            cells.append(f"{v['wall']:.2f} ({v['wall_min']:.2f}-{v['wall_max']:.2f})"
                         if v and v.get("n") else "")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _busy(m, key):
    v = m.get(key)
    return f"{v['cpu_busy']:.0%}" if v else "not measured"


def machine_block(m):
    return "\n".join([
        f"- date: {m['date']}",
        f"- CPU: {m['cpu']}, nproc {m['nproc']}, memory {m['mem_total_mib']} MiB",
        f"- kernel: {m['kernel']}"
        + (f"; unix socket send buffer: default {m['wmem_default']} bytes, "
           f"SO_SNDBUF capped at {m['wmem_max']} (net.core.wmem_default, "
           "wmem_max)" if m.get("wmem_max") else ""),
        f"- load average (1, 5, 15 min) at start: "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_start'])}; at end: "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', []))}",
        f"- idle check (share of CPU time busy over {IDLE_SAMPLE_S:g} s, the bench "
        f"running nothing): {_busy(m, 'idle_start')} before, {_busy(m, 'idle_end')} after"
        + ("; **NOT IDLE: these timings are not comparable**" if m.get("not_idle") else ""),
        f"- unpatched: {m['qemu_img_unpatched']}",
        f"- patched: {m['qemu_img_patched']}",
        f"- {m['nbdkit']}; {m['nbdcopy']} (Debian 12's)"
        + (f"; {m['nbdcopy_1_22']} (built from Debian 13's libnbd 1.22.2 source by "
           "scripts/build-nbdcopy)" if m.get("nbdcopy_1_22", "not used") != "not used" else ""),
        f"- targets written to: {m.get('scratch_fs', '?')}",
    ] + ([f"- S4 servers and clients (Debian packages): {m['netstorage']}"]
         if m.get("netstorage") else []))


METHOD = """\
## Method

`scripts/bench` starts its own servers, on unix sockets only: for every
run a fresh `nbdkit` with the `file` plugin for the source image
(read-only) and another for the target (a sparse file of the right size
created just before the run, by default on tmpfs `/dev/shm` so that no
disk is measured), each behind `nbdkit-stats-filter` (requests by type, a
fresh `statsfile=` per server and run) and `nbdkit-delay-filter`
(latency: `delay-read`, `delay-write`, `delay-zero`, `delay-trim`,
`delay-extents`, set per scenario).  Servers are stopped by PID after
every run (SIGTERM, then SIGKILL), also on Ctrl-C and errors, and run
with `--exit-with-parent`.

Inputs are created deterministically from a seed (`--seed`, printed) and
cached in `build/bench/inputs/`:

{inputs}

Per scenario the tools run interleaved, A B C A B C ..., `--reps` times.
Every copy is verified with `qemu-img compare` (unpatched build) against
the raw source image after the servers have stopped; a wrong copy prints a
`WRONG COPY` line, makes the run exit 1, and its timing is discarded.

Per run: wall time (spawn to exit), CPU time (user + sys of the tool, from
`wait4`), peak RSS (`ru_maxrss` of the tool as GNU `time -f %M` reports it:
`wait4` in the harness would include the RSS of the Python process the tool
was forked from), minor page faults (`ru_minflt` from `wait4`, shown for
S4, where libnfs allocates a buffer per READ reply, in the runs that
recorded them: not the full run below, which predates it), requests by
type on each server (from the stats filter; operation counts are exact,
the filter prints bytes rounded).  Tools
with an environment (`--help`: "malloc kept") run the same binary under
`env`.
Tables show medians over the verified runs, with min-max; throughput is
the *virtual* image size divided by wall time; `time / unpatched` and
`time / nbdcopy` are ratios of median wall times measured side by side in
the same run.  The latency limit (S1) is a model, not a measurement:
writes the tool keeps in flight x the mean write request size seen by the
target server / the write delay.  In-flight counts come from the tool table
in `scripts/bench` (unpatched model: in-order 1, `-W` the `-m` value,
nbdcopy connections x requests).

S4 (`scripts/netstorage.py`).  For every run, two network namespaces
joined by a veth pair: the server side (10.213.0.2) runs rpcbind,
`ganesha.nfsd` (NFSv3 only, one read-only VFS export holding the source
image; MOUNT on port 20048) and `tgtd` (one target, LUN 1 backed by a
sparse file of the image's size in the scratch directory, created with
`tgtadm`), all in a mount namespace with a private `/run` so that
rpcbind's and tgtd's sockets cannot meet the host's; qemu-img runs in the
client namespace (10.213.0.1) through `ip netns exec`, which does not fork
(wall, CPU and RSS are qemu-img's own).  Without latency qemu-img talks to
10.213.0.2 directly.  With latency it talks to 127.0.0.1, where a proxy
listens on the same ports (111, 2049, 20048, 3260, so that the ports the
portmapper hands out stay right) and forwards to 10.213.0.2, writing every
chunk it reads half the round trip later in each direction (1 ms by
default) without stopping to read: the stream keeps its pipelining, so a
request costs one round trip however many are in flight, as on a real
link (netem would be the usual tool, but this kernel has none: `tc qdisc
add dev lo root netem delay 1ms` says "Specified qdisc kind is unknown").  The proxy runs on the same CPUs
as qemu-img and the servers; its CPU time is not in the CPU column.
The proxy reads the protocols' framing and counts what nbdkit's stats
filter counts for NBD: ONC RPC calls (NFS READ ...) and iSCSI PDUs (SCSI
commands by CDB opcode, R2T, Data-Out); the servers themselves count
nothing, so runs without the proxy have no counts.  Its timer is Python's
`time.sleep`: the mean overshoot over the nominal delay is in the table.
Stopping: the proxy (SIGTERM; it writes its counts), tgtd (`tgtadm --op
delete` of the target, then of the system: tgtd ignores SIGTERM while a
target exists), ganesha.nfsd (SIGTERM), rpcbind, then the namespaces,
also on Ctrl-C, and only once every process that ran in them has exited
(a SIGKILL takes effect later: rpcbind's PID namespace dies after the
`unshare` that holds it); every server also gets PDEATHSIG=SIGKILL
(`setpriv`; for
rpcbind, which drops root and with it PDEATHSIG, its PID namespace's init
gets it), so even a killed bench leaves no server, and the next run (or
`scripts/netstorage.py cleanup`) removes its namespaces.  The copy is
verified after the servers stopped, against the LUN's backing file or the
local target.
"""

SCEN_TEXT = """\
## Scenarios

- **S1** dense image, NBD -> NBD, with 0, 2 and 10 ms on reads and writes
  (write delay also on zeroes and trims; block status free).  qemu-img:
  `convert -n -f raw -O raw nbd+unix:///?socket=SRC nbd+unix:///?socket=DST`;
  nbdcopy: the same two URIs.
- **S2** fragmented images, NBD -> NBD, 1 ms on every request including
  block status (`delay-extents`), and the same with block status free;
  the fragmented image also as a qcow2 served by qemu-nbd (the unpatched
  build's, behind nbdkit's nbd plugin for the same delay and counts), and
  a real file system: an ext4 image that `mke2fs -d` makes from this
  machine's /usr/share/doc, raw and as qcow2 behind qemu-nbd.
- **S3** local files (targets in the scratch directory, by default on
  tmpfs): raw -> qcow2, raw -> raw,
  raw -> compressed qcow2 (zlib, and zstd via `-o compression_type=zstd`),
  qcow2 -> raw, and raw -> raw with O_DIRECT (`-t none -T none`) on the
  machine's disk (build/bench).  nbdcopy cannot write or read qcow2 and
  has no O_DIRECT option; it runs only in raw -> raw.
- **S4** the seed's own table (2017: nfs -> iscsi 22.8 s -> 11.0 s with
  8 coroutines and `-W`):
  nfs -> iscsi, nfs -> local, local -> iscsi through QEMU's real `nfs://`
  (libnfs, NFSv3) and `iscsi://` (libiscsi) drivers, against nfs-ganesha
  (VFS backend, with rpcbind) and tgtd run here (`scripts/netstorage.py`),
  without added latency and with a 2 ms round trip (1 ms each way;
  `--s4-rtt MS` for another) from a delaying TCP proxy.  qemu-img:
  `convert [-n] -f raw -O raw SRC DST` (`-n` when the target is the iSCSI
  LUN).  nbdcopy speaks NBD and local
  files only: not run.  Skipped, with the reason, where the packages
  (tgt, nfs-ganesha, nfs-ganesha-vfs, rpcbind) or network namespaces are
  missing.
- **S5** http -> local file: the dense image served by lighttpd on a
  loopback address, through the same delaying proxy (1 ms each way).
  qemu-img: `convert -f raw -O raw http://127.0.0.1:PORT/IMAGE DST` (QEMU's
  curl driver; a qemu-img built without libcurl is skipped); nbdcopy:
  `nbdcopy -- [ nbdkit -r curl url=... ] DST` (nbdkit's curl plugin).
"""


def write_doc(main, sweep, docs_dir, workdir, quick=False):
    os.makedirs(docs_dir, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    doc = os.path.join(docs_dir, "benchmarks-quick.md" if quick else "benchmarks.md")
    pngs = {}
    if main and main["scenarios"]:
        png = os.path.join(docs_dir, "bench-throughput.png")
        if plot_throughput(main, png, workdir):
            pngs["main"] = os.path.basename(png)
    if sweep and sweep["scenarios"]:
        png = os.path.join(docs_dir, "bench-sweep-m.png")
        if plot_sweep(sweep, png, workdir):
            pngs["sweep"] = os.path.basename(png)
    ref = main or sweep
    inputs = "\n".join(f"- {k}: {v}" for k, v in INPUT_DESC.items()) + \
        "\n\nDefault sizes (virtual): " + ", ".join(
            f"{k} {fmt_size(v)}" for k, v in DEFAULT_SIZES.items()) + \
        " (`--size`, `--frag-size`, `--heavy-size`); `--quick`: " + ", ".join(
            f"{k} {fmt_size(v)}" for k, v in QUICK_SIZES.items()) + "."
    out = ["# Benchmarks", "",
           "Generated by `scripts/bench`; do not edit by hand (rerun it).  "
           "Numbers are valid only for the machine and load described below; "
           "compare tools within one run, not across runs.", ""]
    if quick:
        out += ["**Quick mode** (`--quick`): tiny sizes, one repetition, a subset "
                "of scenarios; checks the harness and the copies only.  These "
                "timings mean nothing.", ""]
    out += ["Run it:", "",
            "    scripts/bench                 # all scenarios, writes this file and the plots",
            "    scripts/bench --sweep-m 1,2,4,8,16   # throughput vs -m on S1 10 ms",
            "    scripts/bench --quick         # harness self-check (build/bench/)",
            "    scripts/bench --help", ""]
    out += [SCEN_TEXT, METHOD.format(inputs=inputs)]
    if not ref:
        out += ["## Results", "", "No results yet: run `scripts/bench` on an otherwise "
                "idle machine to fill this in (the default sizes are meant to fit in "
                "about 10 minutes on 2 cores; not yet timed).", ""]
    for res, what in ((main, "Results"), (sweep, "Throughput vs -m")):
        if not res:
            continue
        out += [f"## {what}", "", "Command:", "",
                f"    {res['command']}", "",
                f"Seed {res['seed']}; sizes: "
                + ", ".join(f"{k} {fmt_size(v)}" for k, v in res["sizes"].items())
                + f"; {res['reps']} repetitions; results: "
                f"`{os.path.relpath(res['json'], TOP)}`.", "",
                "Machine:", "", machine_block(res["machine"]), ""]
        if res is main:
            if "main" in pngs:
                out += [f"![throughput by scenario and tool]({pngs['main']})", ""]
            if res.get("wrong") or res.get("failed"):
                out += ["**This run had failures** (their timings are not in the tables): "
                        + "; ".join(res.get("wrong", []) + res.get("failed", [])), ""]
            hide = set(res.get("only") or {})  # step builds: their own table
            for s in res["scenarios"]:
                sz = res["sizes"].get(QCOW2_OF.get(s["input"], s["input"]))
                out += [f"### {s['id']}: {s['title']}", "",
                        f"Input: {s['input']}, {fmt_size(sz)} virtual "
                        f"({INPUT_DESC[s['input']]}); output {s['out']}.", ""]
                out += ["Commands (the first rep):", ""]
                seen = set()
                first = [r for r in s["runs"] if r["rep"] == 1]
                if first and first[0].get("servers"):
                    out += ["    " + c for c in first[0]["servers"]]
                for r in first:
                    if r["tool"] not in seen and r["tool"] not in hide:
                        seen.add(r["tool"])
                        out.append("    " + r["cmd"])
                out += ["", scenario_table(s, hide), ""]
            if res.get("only"):
                out += ["### Step builds", "",
                        "Builds of the series up to a patch (`--build`, "
                        "`scripts/bisect-build --keep`), run only in the "
                        "scenarios `--only` names, interleaved with the tools "
                        "above; wall seconds, median (min-max), every copy "
                        "verified.  Request counts and the commands are in the "
                        "results file.", "", only_table(res), ""]
        else:
            if "sweep" in pngs:
                out += [f"![throughput vs -m]({pngs['sweep']})", ""]
            s = res["scenarios"][0]
            out += [f"{s['title']}; every variant `qemu-img convert -n -f raw -O raw "
                    "-m M [-W]`.", "", sweep_table(res), "",
                    "Details per variant:", "", scenario_table(s), ""]
    with open(doc + ".tmp", "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    os.rename(doc + ".tmp", doc)
    return [doc] + [os.path.join(docs_dir, p) for p in pngs.values()]


def latest(kind):
    """The newest results of that kind from a run that wrote the docs
    (a --no-docs run, e.g. two tools on one scenario, must not become the
    document's tables)."""
    try:
        names = sorted(n for n in os.listdir(BENCH)
                       if n.startswith(f"results-{kind}-") and n.endswith(".json"))
    except FileNotFoundError:
        return None
    for name in reversed(names):
        with open(os.path.join(BENCH, name)) as f:
            res = json.load(f)
        if res.get("docs", not any(len(t) > 4 and "--no-docs".startswith(t)
                                   for t in shlex.split(res.get("command", "")))):
            return res
    return None


