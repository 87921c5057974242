# bench, runner: One timed, verified run of one tool on one scenario; a scenario's
# interleaved repetitions; the -m sweep.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from benchlib.common import (
    netstorage,
    BENCH,
    MiB,
    PROCS,
    Procs,
    TOP,
    die,
    first_line,
    log_tail,
    note,
    qemu_bin,
    run,
    spawn,
)
from benchlib.catalog import (
    NBDCOPY_BIN,
    SC_BY_ID,
    Scenario,
    Tool,
)
from benchlib.inputs import (
    reference_raw,
    warm,
)
from benchlib.servers import (
    HttpSource,
    Server,
)

def check_binaries(tools):
    need = {("unpatched", "qemu-img"), ("unpatched", "qemu-io"), ("unpatched", "qemu-nbd")}
    for t in tools:
        if t.is_qemu():
            need.add((t.build, "qemu-img"))
    for build, name in sorted(need):
        if not os.access(qemu_bin(build, name), os.X_OK):
            die(f"{qemu_bin(build, name)} is missing; run scripts/build first")
    for prog, pkg in (("nbdkit", "nbdkit"), ("nbdcopy", "libnbd-bin"), (TIME, "time")):
        if not shutil.which(prog):
            die(f"{prog} not found; run scripts/install-deps (as root) to install {pkg}")
    if any(t.build == "nbdcopy-1.22" for t in tools):
        r = subprocess.run([os.path.join(TOP, "scripts", "build-nbdcopy")],
                           stdout=subprocess.PIPE, text=True)
        if r.returncode != 0 or not r.stdout.strip():
            die("scripts/build-nbdcopy failed (above); leave nbdcopy-1.22 out with "
                "--tools, or fix what it says")
        NBDCOPY_BIN["nbdcopy-1.22"] = r.stdout.strip().splitlines()[-1]


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "mem_total_mib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MiB,
        # unix socket send buffers: the default, and the cap of SO_SNDBUF
        # (QEMU >= 10.1 asks for 2 MiB on NBD sockets; nbdkit and libnbd
        # keep the default), bytes
        "wmem_default": _sysctl_int("net/core/wmem_default"),
        "wmem_max": _sysctl_int("net/core/wmem_max"),
        "loadavg_start": os.getloadavg(),
        "qemu_img_unpatched": first_line([qemu_bin("unpatched"), "--version"]),
        "qemu_img_patched": first_line([qemu_bin("patched"), "--version"]),
        "nbdkit": first_line(["nbdkit", "--version"]),
        "nbdcopy": first_line(["nbdcopy", "--version"]),
        "nbdcopy_1_22": (first_line([NBDCOPY_BIN["nbdcopy-1.22"], "--version"])
                         if "nbdcopy-1.22" in NBDCOPY_BIN else "not used"),
        "python": platform.python_version(),
        "netstorage": " ".join(f"{p} {_deb_version(p)}" for p in
                               ("tgt", "nfs-ganesha", "rpcbind", "libnfs13",
                                "libiscsi7")),
    }


def _sysctl_int(name):
    """/proc/sys/NAME as an int, or None where it cannot be read."""
    try:
        with open(f"/proc/sys/{name}") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _deb_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "(not installed)"


# ---------------------------------------------------------------------------
# One timed run

TIME = "/usr/bin/time"


def timed(cmd, log, timeout):
    """Run cmd; return (exit status, wall s, user s, sys s, peak RSS KiB,
    minor page faults).

    Wall, user and sys come from our own clock and wait4().  The peak RSS
    comes from GNU time, which forks the tool from its own small process:
    a child forked (or vforked) from this Python process inherits Python's
    RSS high-water mark into its ru_maxrss, so wait4() alone would report
    at least the harness's size for every tool."""
    rssfile = log + ".rusage"
    with open(log, "w") as logf:
        t0 = time.perf_counter()
        p = spawn([TIME, "-f", "%M", "-o", rssfile, "--"] + cmd, group=True,
                  stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                  start_new_session=True)
        # On timeout, kill the tool's group; the wait4() below reaps it.
        # A daemon, cancelled whatever cuts the wait (a Ctrl-C during
        # start() too): a timer left running kept bench from exiting.
        timer = threading.Timer(timeout, Procs._signal, (p, signal.SIGKILL))
        timer.daemon = True
        try:
            timer.start()
            _, status, ru = os.wait4(p.pid, 0)
            t1 = time.perf_counter()
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        PROCS.live.pop(p.pid, None)
    try:
        with open(rssfile) as f:
            rss = int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        rss = 0
    return p.returncode, t1 - t0, ru.ru_utime, ru.ru_stime, rss, ru.ru_minflt




class Ctx:
    def __init__(self, args, scratch, inputs):
        self.args, self.scratch, self.inputs = args, scratch, inputs
        self.serial = 0
        self.wrong, self.failed = [], []
        self.disk_scratch = None    # made by the first on_disk scenario

    def disk_dir(self):
        """A directory on the disk that holds build/bench (removed with
        the scratch directory)."""
        if not self.disk_scratch:
            os.makedirs(BENCH, exist_ok=True)
            self.disk_scratch = tempfile.mkdtemp(prefix="disk.", dir=BENCH)
        return self.disk_scratch


def shown(cmd, ctx):
    """A command with the machine's paths replaced by readable ones."""
    s = shlex.join(cmd)
    s = s.replace(ctx.scratch, "$SCRATCH").replace(TOP + "/", "")
    return re.sub(r"'([^'$]*\$SCRATCH[^']*)'", r'"\1"', s)


def tool_cmd(sc, tool, src, dst, src_fmt):
    env = ["env"] + [f"{k}={v}" for k, v in tool.env.items()] if tool.env else []
    return env + _tool_cmd(sc, tool, src, dst, src_fmt)


def _tool_cmd(sc, tool, src, dst, src_fmt):
    if tool.is_nbdcopy():
        if sc.kind == "http":  # nbdcopy reads HTTP through nbdkit's curl plugin
            return [NBDCOPY_BIN[tool.build]] + tool.args + [
                "--", "[", "nbdkit", "--exit-with-parent", "-r", "curl", f"url={src}",
                "]", dst]
        return [NBDCOPY_BIN[tool.build]] + tool.args + [src, dst]
    img = qemu_bin(tool.build)
    if sc.kind == "net":  # an iSCSI LUN exists already: -n
        return [img, "convert"] + (["-n"] if sc.net[1] == "iscsi" else []) + \
            ["-f", "raw", "-O", "raw"] + tool.args + [src, dst]
    if sc.kind == "nbd":
        return [img, "convert", "-n", "-f", "raw", "-O", "raw"] + tool.args + [src, dst]
    if sc.kind == "http":
        return [img, "convert", "-f", "raw", "-O", "raw"] + tool.args + [src, dst]
    return [img, "convert", "-f", src_fmt, "-O", sc.out_fmt] + sc.out_opts + \
        tool.args + [src, dst]


def skip_reason(sc, tool):
    if sc.kind == "http":
        if not shutil.which("lighttpd"):
            return "lighttpd is not installed (scripts/install-deps)"
        if tool.is_qemu() and not _has_http(qemu_bin(tool.build)):
            return "this qemu-img has no http driver (built without libcurl)"
        return None
    if sc.kind == "net":
        if tool.is_nbdcopy():
            return "nbdcopy speaks NBD and local files, not nfs:// or iscsi://"
        return netstorage.unavailable()
    if tool.is_nbdcopy() and sc.kind == "local":
        if sc.on_disk:
            return "nbdcopy has no O_DIRECT option"
        if sc.out_fmt != "raw":
            return "nbdcopy cannot write qcow2"
        if sc.input == "qcow2":
            return "nbdcopy cannot read qcow2"
    return None


def _has_http(img):
    """qemu-img `img` lists the curl driver's http protocol."""
    r = subprocess.run([img, "--help"], stdout=subprocess.PIPE, text=True)
    return " http " in f" {r.stdout} ".replace("\n", " ")


def run_one(sc, tool, rep, ctx):
    """One copy: start servers, time the tool, stop servers, verify."""
    ctx.serial += 1
    serial = ctx.serial
    src_path, src_fmt = ctx.inputs[sc.input]
    ref = reference_raw(ctx.inputs, sc.input)
    size = os.path.getsize(ref)
    dst_fmt = "raw" if sc.kind in ("nbd", "net") else sc.out_fmt
    dst_path = os.path.join(ctx.disk_dir() if sc.on_disk else ctx.scratch,
                            f"target.{dst_fmt}")
    if os.path.exists(dst_path):
        os.unlink(dst_path)
    rec = {"tool": tool.id, "rep": rep, "serial": serial}
    servers = []
    stats = {}
    stack = None
    http = None
    try:
        if sc.kind == "http":
            http = HttpSource(ctx.scratch, src_path, sc.proxy_ms, serial)
            src, dst = http.url, dst_path
        elif sc.kind == "net":
            stack, src, dst = net_stack(sc, ctx, src_path, dst_path, size, serial)
        elif sc.kind == "nbd":
            with open(dst_path, "wb") as f:
                f.truncate(size)  # the target pre-created, right size, sparse
            s_src = Server("src", ctx.scratch, src_path, sc.delays, True, serial,
                           qemu_nbd_fmt=src_fmt if sc.src_server == "qemu-nbd" else None,
                           threads=sc.threads)
            servers.append(s_src)
            s_dst = Server("dst", ctx.scratch, dst_path, sc.delays, False, serial,
                           threads=sc.threads)
            servers.append(s_dst)
            src, dst = s_src.uri, s_dst.uri
        else:
            src, dst = src_path, dst_path
        cmd = tool_cmd(sc, tool, src, dst, src_fmt)
        if stack:
            cmd = stack.client_cmd(cmd)
        log = os.path.join(ctx.scratch, f"{serial}-{tool.id}.log")
        rc, wall, user, sys_, rss, minflt = timed(cmd, log, ctx.args.timeout)
    finally:
        for name, s in zip(("source", "target"), servers):
            stats[name] = s.stop()
        if stack:
            for e in stack.close():
                note(f"{sc.id}: {e}")
        http_stats = http.stop() if http else None
    rec.update(rc=rc, wall=wall, user=user, sys=sys_, cpu=user + sys_,
               maxrss_kib=rss, minflt=minflt, size=size, cmd=shown(cmd, ctx))
    if sc.kind == "nbd":
        rec["stats"] = stats
        if servers and servers[0].qemu_nbd_cpu is not None:
            rec["src_qemu_nbd_cpu"] = servers[0].qemu_nbd_cpu
        rec["servers"] = [shown(s.cmd, ctx) for s in servers] + \
            [shown(s.qemu_nbd_cmd, ctx) for s in servers if s.qemu_nbd]
    if http:
        rec["netstats"] = netstorage.summarize_proxy(http_stats)
        rec["servers"] = [shown(c, ctx) for c in http.cmds]
    if stack:
        rec["netstats"] = netstorage.summarize_proxy(stack.proxy_stats)
        rec["servers"] = [re.sub(r"nsenter -t \d+", "nsenter -t $HOLDER",
                                 shown(shlex.split(c), ctx)).replace(
                                     f"-{os.getpid()}-", "-$PID-")
                          for c in stack.commands]
        rec["netns"] = [stack.ns_s, stack.ns_c]
    if rc != 0:
        rec["error"] = log_tail(log)
        how = (f"killed after the --timeout of {ctx.args.timeout:g} s"
               if rc < 0 and wall >= ctx.args.timeout else
               f"killed by signal {-rc}" if rc < 0 else f"exit {rc}")
        ctx.failed.append(f"{sc.id} {tool.id} rep {rep}: {how}")
        print(f"TOOL FAILED: {sc.id} {tool.label} rep {rep}: {how}\n"
              + "\n".join("    " + x for x in rec["error"].splitlines()), flush=True)
        return rec
    if ctx.args.test_corrupt:
        run([qemu_bin("unpatched", "qemu-io"), "-f", dst_fmt, "-c",
             f"write -P 0x5a {size // 2} 512", dst_path], "corrupting the target (--test-corrupt)")
    rec["target_alloc"] = os.stat(dst_path).st_blocks * 512
    # spawn(): a Ctrl-C must not leave a compare of a large image running
    cmp = spawn([qemu_bin("unpatched"), "compare", "-f", "raw", "-F", dst_fmt,
                 ref, dst_path], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = cmp.communicate()[0]
    PROCS.live.pop(cmp.pid, None)
    rec["verified"] = cmp.returncode == 0
    if cmp.returncode != 0:
        what = "content differs" if cmp.returncode == 1 else "compare failed"
        rec["verify_error"] = out.strip()
        ctx.wrong.append(f"{sc.id} {tool.id} rep {rep}")
        print(f"WRONG COPY: {sc.id} {tool.label} rep {rep}: {what}: "
              f"{out.strip()} (command: {rec['cmd']}); timing discarded",
              flush=True)
    os.unlink(dst_path)
    return rec


def net_stack(sc, ctx, src_path, dst_path, size, serial):
    """Start the S4 servers for one run; returns (stack, source, target).

    The NFS export is a directory in the scratch directory holding only the
    source image (a hard link, or a copy if the scratch directory is on
    another file system); the iSCSI LUN is a sparse file of the right size
    in the scratch directory, like the NBD target."""
    src_kind, dst_kind, delay = sc.net
    export = None
    if src_kind == "nfs":
        export = os.path.join(ctx.scratch, "export")
        img = os.path.join(export, "src.raw")
        if getattr(ctx, "exported", None) != src_path:
            shutil.rmtree(export, ignore_errors=True)
            os.makedirs(export)
            try:
                os.link(src_path, img)
            except OSError:
                shutil.copyfile(src_path, img)
            ctx.exported = src_path
    lun = None
    if dst_kind == "iscsi":
        lun = dst_path
        with open(lun, "wb") as f:
            f.truncate(size)
    # Registered with PROCS when made: a signal before __enter__ returns
    # still gets it closed (stop_all)
    try:
        stack = netstorage.Stack(os.path.join(ctx.scratch, f"{serial}-s4"),
                                 export, lun, delay_ms=delay, procs=PROCS)
    except netstorage.NetStorageError as e:
        die(f"{sc.id}: {e}")
    try:
        stack.__enter__()
    except BaseException as e:
        # a failed or interrupted start closed the stack: say what that
        # teardown found (a process it had to kill), as after a run
        for err in stack.errors:
            note(f"{sc.id}: {err}")
        if isinstance(e, netstorage.NetStorageError):
            die(f"{sc.id}: {e}")
        raise
    src = stack.nfs_url("src.raw") if src_kind == "nfs" else src_path
    dst = stack.iscsi_url() if dst_kind == "iscsi" else dst_path
    return stack, src, dst


def fmt_req(st, types):
    if not st:
        return "-"
    return " ".join(f"{t[0].upper()}{st.get(t, {}).get('ops', 0)}" for t in types)


def fmt_net(ns):
    n, i = ns.get("nfs", {}), ns.get("iscsi", {})
    return (f"nfs READ {n.get('nfs READ', 0)}, scsi W{i.get('scsi write', 0)} "
            f"R2T {i.get('iscsi r2t', 0)}")


def run_scenario(sc, tools, ctx, header=True):
    if header:
        print(f"== {sc.id}: {sc.title}", flush=True)
    warm(ctx.inputs[sc.input][0])
    res = {"id": sc.id, "group": sc.group, "title": sc.title, "kind": sc.kind,
           "input": sc.input, "delays_ms": sc.delays,
           "out": f"{sc.out_fmt} {shlex.join(sc.out_opts)}".strip(),
           "tools": [], "skipped": {}, "runs": []}
    here = []
    for t in tools:
        only = getattr(ctx.args, "only", {}).get(t.id)
        if only is not None and sc.id not in only:
            continue  # --only: this tool is not asked in this scenario
        why = skip_reason(sc, t)
        if why:
            res["skipped"][t.id] = why
            print(f"   {t.label}: skipped ({why})")
        else:
            here.append(t)
            res["tools"].append({"id": t.id, "label": t.label,
                                 "inflight": t.inflight()})
    for rep in range(1, ctx.args.reps + 1):
        for t in here:  # interleaved: A B C A B C ...
            r = run_one(sc, t, rep, ctx)
            res["runs"].append(r)
            if r["rc"] == 0:
                st = r.get("stats") or {}
                print(f"   {t.label:22} rep {rep}: {r['wall']:7.2f} s wall, "
                      f"{r['cpu']:6.2f} s cpu, {r['maxrss_kib'] // 1024:4} MiB rss, "
                      f"{r['minflt']:6} faults"
                      + (f", src {fmt_req(st.get('source'), ('read', 'extents'))}"
                         f", dst {fmt_req(st.get('target'), ('write', 'zero', 'trim', 'flush'))}"
                         if st else "")
                      + (f", {fmt_net(r['netstats'])}" if r.get("netstats") else "")
                      + (f", qemu-nbd {r['src_qemu_nbd_cpu']:.2f} s cpu"
                         if "src_qemu_nbd_cpu" in r else "")
                      + ("" if r.get("verified") else "  WRONG"), flush=True)
    return res


# ---------------------------------------------------------------------------
# The -m sweep: S1 10 ms, both builds, in-order and -W

def max_coroutines_ok(build, m):
    """Whether this build accepts -m m (the unpatched one stops at 16)."""
    r = subprocess.run([qemu_bin(build), "convert", "-m", str(m), "-f", "raw",
                        "-O", "raw", "/nonexistent-bench-probe", "/dev/null"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return "number of coroutines" not in r.stdout


def run_sweep(ms, ctx):
    base = SC_BY_ID["s1-10ms"]
    sc = Scenario("sweep-m", "sweep", f"-m sweep: {base.title}", "nbd", "dense",
                  base.delays)
    variants, skipped = [], {}
    for build in ("unpatched", "patched"):
        for m in ms:
            ok = max_coroutines_ok(build, m)
            for w in (False, True):
                t = Tool(f"{build}-m{m}{'-W' if w else ''}", build,
                         f"-m {m}" + (" -W" if w else ""))
                t.sweep = {"build": build, "m": m, "W": w}
                if ok:
                    variants.append(t)
                else:
                    skipped[t.id] = f"{build} qemu-img refuses -m {m}"
    print(f"== sweep -m {','.join(map(str, ms))} on {base.id}", flush=True)
    for k, v in skipped.items():
        print(f"   {k}: skipped ({v})")
    res = run_scenario(sc, variants, ctx, header=False)
    res["skipped"].update(skipped)
    res["sweep"] = {t.id: t.sweep for t in variants}
    res["sweep"].update({k: {"build": k.split("-")[0], "m": int(re.search(r"-m(\d+)", k).group(1)),
                             "W": k.endswith("-W")} for k in skipped})
    return res


