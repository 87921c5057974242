#!/usr/bin/python3
"""Fault injection and signals for qemu-img convert.

Groups (--group, comma-separated; default: all but signals):

  blkdebug  read, write, write-zeroes, flush and block-status errors
            injected with blkdebug at chosen offsets (first sector, last
            sector, both sides of a 2 MiB chunk boundary) and at random
            offsets, in every mode
  qcow2     write errors below a qcow2 target's format layer (data or
            metadata), with and without -c; the image must pass qemu-img
            check (leaks allowed)
  nbdkit    nbdkit's error filter at a random rate on reads and extents
            of an NBD source and on writes and zero requests of an NBD
            target
  kill      the NBD server of the source, or of the target, killed
            (SIGKILL) while the copy is in flight
  salvage   --salvage over random persistent read errors: zeroes exactly
            at the injected sectors, the source everywhere else
  signals   SIGINT and SIGTERM while the copy is in flight

Modes: -m 1, -m 8 and -m MAX (512), each with and without -W (signals:
-m 1, -m 8, -W, -c).  Every run: a hard timeout (no hang), no death by a
signal and no core file (no crash), exit code 1 where an error is
expected, the message qemu-img prints for the operation and the offset
it names, no process left behind, and the source files unchanged
(SHA-256 before and after).
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import run, nbd_uri  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
CHUNK = 2 * MiB
SIZE = 9 * MiB + 3584     # a multiple of neither 64k nor 2 MiB
TIMEOUT = 60

# Behaviour of qemu-img that these tests pin down but that is not what a
# user would want; each is reported in docs/testing.md.  The tests assert
# the behaviour as it is, so that a change to it is noticed.  (The failed
# flush of the target that 10.2.2 ignores is fixed by the series' patch
# "qemu-img: convert: fail when the target cannot be flushed".)
KNOWN_GAPS = {}


class Suite:
    def __init__(self, args, tools, root, seed):
        self.args = args
        self.T = tools
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.groups = {}          # group -> [passed, failed, runs]
        self.faults = 0
        self.n = 0
        self.sources = {}

    # ------------------------------------------------------------ helpers
    def workdir(self, name):
        self.n += 1
        d = os.path.join(self.root, f"{self.n:03d}-{name}")
        os.mkdir(d)
        return d

    def record(self, group, title, problems, log, detail=""):
        g = self.groups.setdefault(group, {"ok": 0, "fail": 0, "titles": []})
        if problems:
            g["fail"] += 1
            print(f"FAIL - {group}: {title}: " + "; ".join(problems))
            print("    replay (seed %d):" % self.seed)
            for line in log.lines:
                print("      " + line)
        else:
            g["ok"] += 1
            print(f"   ok  {group}: {title}{detail}")
        sys.stdout.flush()

    def make_source(self, d, sparse=False):
        """A raw source of SIZE bytes: random data, or (sparse) data with
        zero and unallocated regions.  Made once, shared by the runs
        (each checks it is unchanged)."""
        key = "sparse" if sparse else "full"
        if key in self.sources:
            return self.sources[key]
        log = common.Log()
        p = os.path.join(self.root, f"src-{key}.raw")
        self.sources[key] = p
        data = random.Random(self.seed).randbytes(SIZE)
        with open(p, "wb") as f:
            f.write(data)
        if sparse:
            # holes (read as zeroes) at 1M..3M+4k and 6M..7M
            run(log, [self.T.io, "-f", "raw", "-c", f"write -q -z -u {1 * MiB} {2 * MiB + 4096}",
                      "-c", f"write -q -z -u {6 * MiB} {1 * MiB}", p])
        return p

    @staticmethod
    def leftovers(d, allowed=()):
        out = subprocess.run(["pgrep", "-f", "--", d], capture_output=True, text=True).stdout
        return [int(x) for x in out.split() if int(x) not in allowed]

    def check_run(self, r, d, sources_before, expect_rc, expect_re, offset_ok,
                  servers=(), allowed_signal=None):
        """The common assertions of every run; returns a list of problems."""
        problems = []
        if r.timed_out:
            problems.append(f"hung: killed after {TIMEOUT} s")
        elif r.rc < 0 and -r.rc != allowed_signal:
            problems.append(f"crashed: killed by signal {-r.rc}")
        elif expect_rc is not None and r.rc != expect_rc:
            problems.append(f"exit {r.rc}, expected {expect_rc}")
        cores = [f for f in os.listdir(d) if f.startswith("core")]
        if cores:
            problems.append("core file(s): " + ", ".join(cores))
        if expect_re is not None:
            m = re.search(expect_re, r.err)
            if not m:
                problems.append(f"no message matching /{expect_re}/ in: {r.err.strip()[-300:]!r}")
            elif offset_ok is not None and "off" in m.groupdict():
                off = int(m.group("off"))
                why = offset_ok(off)
                if why:
                    problems.append(f"message names byte {off}: {why}")
        left = self.leftovers(d, allowed=[s.pid for s in servers])
        if left:
            problems.append(f"processes left behind: {left}")
        for s in servers:
            common.stop_process(s)
        left = self.leftovers(d)
        if left:
            problems.append(f"processes left after stopping the servers: {left}")
        for p, h in sources_before.items():
            if common.file_sha256(p) != h:
                problems.append(f"source {p} changed")
        return problems

    def modes(self):
        mx = self.args.max_m
        return [["-m", "1"], ["-m", "8"], ["-m", str(mx)],
                ["-m", "1", "-W"], ["-m", "8", "-W"], ["-m", str(mx), "-W"]]

    # ------------------------------------------------------------ blkdebug
    def blkdebug_opts(self, fmt, path, rules):
        s = f"driver=blkdebug,image.driver={fmt},image.file.driver=file,image.file.filename={path}"
        for i, (iotype, off) in enumerate(rules):
            s += f",inject-error.{i}.event=none,inject-error.{i}.iotype={iotype},inject-error.{i}.errno=5"
            if off is not None:
                s += f",inject-error.{i}.sector={off // 512}"
        return s

    def group_blkdebug(self):
        last = (SIZE - 1) // 512 * 512
        chosen = [0, CHUNK - 512, CHUNK, 4 * CHUNK + 4096, last]
        plan = []   # (operation, offset, mode)
        # every mode gets one chosen offset (in turn) and one random one
        for op in ("read", "write", "block-status"):
            for i, mode in enumerate(self.modes()):
                plan.append((op, chosen[(i + len(plan)) % len(chosen)], mode))
                plan.append((op, self.rng.randrange(SIZE // 512) * 512, mode))
        # write-zeroes: the zero regions of the sparse source, -n onto a
        # target that is not known to be zero
        for i, mode in enumerate(self.modes()):
            plan.append(("write-zeroes", (1 * MiB, 6 * MiB + 512 * self.rng.randrange(2048))[i % 2], mode))
        for mode in (self.modes()[0], self.modes()[-1]):
            plan.append(("flush", None, mode))

        for op, off, mode in plan:
            d = self.workdir(f"blkdebug-{op}")
            log = common.Log()
            src = self.make_source(d, sparse=(op == "write-zeroes"))
            before = {src: common.file_sha256(src)}
            tgt = os.path.join(d, "tgt.raw")
            if op in ("read", "block-status"):
                argv = [self.T.img, "convert", "--image-opts", *mode, "-O", "raw",
                        self.blkdebug_opts("raw", src, [(op, off)]), tgt]
            else:
                run(log, [self.T.img, "create", "-q", "-f", "raw", tgt, str(SIZE)])
                # convert's target cache mode is unsafe by default: no
                # flush at all; writeback makes the flush happen
                cache = ["-t", "writeback"] if op == "flush" else []
                argv = [self.T.img, "convert", "-f", "raw", *mode, *cache, "-n",
                        "--target-image-opts",
                        src, self.blkdebug_opts("raw", tgt, [(op, off)])]
            r = run(log, argv, timeout=TIMEOUT, cwd=d)
            self.faults += 1
            if op == "read":
                # convert names the start of the 2 MiB chunk it was reading
                want = off // CHUNK * CHUNK
                exp = r"error while reading at byte (?P<off>\d+): Input/output error"
                ok = (lambda o, w=want: None if o == w else
                      f"expected {w}, the start of the chunk holding the failed sector")
                rc = 1
            elif op in ("write", "write-zeroes"):
                exp = r"error while writing at byte (?P<off>\d+): Input/output error"
                if op == "write":
                    want = off // CHUNK * CHUNK
                    ok = (lambda o, w=want: None if o == w else
                          f"expected {w}, the start of the chunk holding the failed sector")
                else:
                    ok = (lambda o, f=off: None if o <= f < o + CHUNK else
                          f"expected the start of the zero region holding {f}")
                rc = 1
            elif op == "block-status":
                # names the start of the range it asked about, which is
                # where the current extent begins (0 for a file that is
                # data throughout), not the failed sector
                exp = r"error while reading block status at offset (?P<off>\d+): Input/output error"
                ok = (lambda o, f=off: None if o <= f else f"after the failed sector {f}")
                rc = 1
            else:  # flush, with -t writeback
                exp = r"error while flushing the target: Input/output error(?P<off>)"
                ok, rc = None, 1
            problems = self.check_run(r, d, before, rc, exp, ok)
            title = f"{op} error at {'-' if off is None else off}, {' '.join(mode)}"
            if op == "flush":
                title += " (-t writeback)"
            self.record("blkdebug", title, problems, log,
                        detail="" if r.rc == 0 else f" -> {r.err.strip().splitlines()[-1]}")
            shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ qcow2
    def group_qcow2(self):
        """Write errors below a qcow2 target's format layer: the failed
        write may be data or metadata (L2 tables, refcounts) of clusters
        that many requests allocate at once.  With and without -c."""
        for i, mode in enumerate(self.modes()):
            comp = ["-c"] if i % 2 else []
            d = self.workdir("qcow2")
            log = common.Log()
            src = self.make_source(d)
            before = {src: common.file_sha256(src)}
            tgt = os.path.join(d, "tgt.qcow2")
            run(log, [self.T.img, "create", "-q", "-f", "qcow2", tgt, str(SIZE)])
            opts = (f"driver=qcow2,file.driver=blkdebug,file.image.driver=file,"
                    f"file.image.filename={tgt},file.inject-error.0.event=none,"
                    f"file.inject-error.0.iotype=write,file.inject-error.0.errno=5")
            if self.rng.random() < 0.5:
                where = "the first write to the file"
                opts += ",file.inject-error.0.once=on"
            else:
                sector = self.rng.randrange(256, (SIZE + 1 * MiB) // 512)
                where = f"host byte {sector * 512}"
                opts += f",file.inject-error.0.sector={sector}"
            r = run(log, [self.T.img, "convert", "-f", "raw", *mode, *comp, "-n",
                          "--target-image-opts", src, opts], timeout=TIMEOUT, cwd=d)
            self.faults += 0 if r.rc == 0 else 1
            if r.rc == 0 and not r.timed_out:
                # the sector was never written: then the copy must be right
                problems = self.check_run(r, d, before, 0, None, None)
                c = run(log, [self.T.img, "compare", "-f", "raw", "-F", "qcow2", src, tgt])
                if c.rc != 0:
                    problems.append("no error reached qemu-img, but the copy differs: " + c.describe())
                what = "never written: copy verified"
            else:
                problems = self.check_run(
                    r, d, before, 1, r"error while writing at byte (?P<off>\d+): Input/output error",
                    lambda o: None if o % 512 == 0 and o < SIZE else "not in the image")
                what = r.err.strip().splitlines()[-1] if r.err.strip() else ""
            # whatever failed, the image must not be corrupt (leaks are
            # allowed after a failed allocation: exit 3)
            c = run(log, [self.T.img, "check", "-f", "qcow2", tgt])
            if c.rc not in (0, 3):
                problems.append("qemu-img check after the error: " + c.describe())
            self.record("qcow2", f"write error at {where} of a qcow2 target, "
                        f"{' '.join(mode + comp)}", problems, log, detail=f" -> {what}")
            shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ nbdkit
    def group_nbdkit(self):
        kinds = [("pread", "source"), ("extents", "source"),
                 ("pwrite", "target"), ("zero", "target")]
        for kind, side in kinds:
            for mode in self.modes():
                # few extents and zero requests per copy: higher rates
                rate = self.rng.choice([10, 20, 40, 60] if kind in ("pread", "pwrite")
                                       else [30, 50, 100])
                d = self.workdir(f"nbdkit-{kind}")
                log = common.Log()
                src = self.make_source(d, sparse=(kind in ("zero", "extents")))
                before = {src: common.file_sha256(src)}
                tgt = os.path.join(d, "tgt.raw")
                sock = os.path.join(d, "nbd.sock")
                errlog = os.path.join(d, "nbdkit.err")
                args = [f"error-{kind}-rate={rate}%", "error=EIO"]
                if side == "source":
                    srv = common.start_nbdkit(log, sock, ["file", f"file={src}", *args],
                                              filters=["error"], extra=["--readonly"],
                                              stderr_file=errlog)
                    argv = [self.T.img, "convert", "-f", "raw", *mode, "-O", "raw",
                            nbd_uri(sock), tgt]
                else:
                    with open(tgt, "wb") as f:
                        f.truncate(-(-SIZE // 512) * 512)
                    srv = common.start_nbdkit(log, sock, ["file", f"file={tgt}", *args],
                                              filters=["error"], stderr_file=errlog)
                    argv = [self.T.img, "convert", "-f", "raw", *mode, "-n", "-O", "raw",
                            src, nbd_uri(sock)]
                r = run(log, argv, timeout=TIMEOUT, cwd=d)
                common.stop_process(srv)
                with open(errlog, errors="replace") as f:
                    injected = len(re.findall(r"injecting \w+ error", f.read()))
                self.faults += injected
                if injected:
                    exp = {"pread": r"error while reading at byte (?P<off>\d+)",
                           "extents": r"error while reading block status at offset (?P<off>\d+)",
                           "pwrite": r"error while writing at byte (?P<off>\d+)",
                           "zero": r"error while writing at byte (?P<off>\d+)"}[kind]
                    ok = (lambda o: None if o % 512 == 0 and o < SIZE else "not a sector in the image")
                    problems = self.check_run(r, d, before, 1, exp, ok)
                else:
                    # no error drawn: then the copy must be complete
                    problems = self.check_run(r, d, before, 0, None, None)
                    if not problems:
                        c = run(log, [self.T.img, "compare", "-f", "raw", "-F", "raw", src, tgt])
                        if c.rc != 0:
                            problems.append("no error injected, but the copy differs: " + c.describe())
                what = f"{injected} injected" if injected else "none drawn, copy verified"
                self.record("nbdkit", f"{kind} errors on the {side} at {rate}% ({what}), "
                            f"{' '.join(mode)}", problems, log,
                            detail=f" -> {r.err.strip().splitlines()[-1]}" if r.err.strip() else "")
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ kill
    def wait_log(self, path, word, proc, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, errors="replace") as f:
                    if word in f.read():
                        return True
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def slow_server(self, log, d, side, src, tgt):
        """nbdkit over a unix socket, logging each request, 300 ms per
        read/write: a copy through it is in flight long enough."""
        sock = os.path.join(d, f"{side}.sock")
        nlog = os.path.join(d, f"{side}.log")
        if side == "source":
            srv = common.start_nbdkit(log, sock, ["file", f"file={src}", f"logfile={nlog}",
                                                  "delay-read=300ms", "delay-extents=50ms"],
                                      filters=["log", "delay"], extra=["--readonly"])
        else:
            with open(tgt, "wb") as f:
                f.truncate(-(-SIZE // 512) * 512)
            srv = common.start_nbdkit(log, sock, ["file", f"file={tgt}", f"logfile={nlog}",
                                                  "delay-write=300ms", "delay-zero=300ms"],
                                      filters=["log", "delay"])
        return srv, sock, nlog

    def group_kill(self):
        for side in ("source", "target"):
            for mode in self.modes():
                d = self.workdir(f"kill-{side}")
                log = common.Log()
                src = self.make_source(d)
                before = {src: common.file_sha256(src)}
                tgt = os.path.join(d, "tgt.raw")
                srv, sock, nlog = self.slow_server(log, d, side, src, tgt)
                if side == "source":
                    argv = [self.T.img, "convert", "-f", "raw", *mode, "-O", "raw", nbd_uri(sock), tgt]
                    word = " Read id="
                else:
                    argv = [self.T.img, "convert", "-f", "raw", *mode, "-n", "-O", "raw", src, nbd_uri(sock)]
                    word = " Write id="
                log.cmd(argv, background=True)
                log.note(f"when {nlog} shows the first {word}: kill -KILL <nbdkit pid>")
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, cwd=d, start_new_session=True)
                common._children[proc.pid] = proc
                problems = []
                if not self.wait_log(nlog, word, srv):
                    problems.append(f"no {word} request reached the server")
                srv.send_signal(signal.SIGKILL)
                srv.wait()
                self.faults += 1
                r = common.finish(proc, argv, TIMEOUT)
                exp = (r"error while reading at byte (?P<off>\d+)" if side == "source"
                       else r"error while writing at byte (?P<off>\d+)")
                problems += self.check_run(r, d, before, 1, exp,
                                           lambda o: None if o % 512 == 0 and o < SIZE else "not in the image",
                                           servers=[srv])
                self.record("kill", f"{side} server killed mid-copy, {' '.join(mode)}", problems, log,
                            detail=f" -> {r.err.strip().splitlines()[-1]}" if r.err.strip() else "")
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ salvage
    def group_salvage(self):
        for mode in self.modes():
            d = self.workdir("salvage")
            log = common.Log()
            src = self.make_source(d)
            before = {src: common.file_sha256(src)}
            sectors = sorted(set(self.rng.randrange(SIZE // 512) for _ in range(self.rng.randint(1, 6))))
            # sometimes a run of neighbouring bad sectors
            if self.rng.random() < 0.5:
                s0 = self.rng.randrange(SIZE // 512 - 8)
                sectors = sorted(set(sectors) | set(range(s0, s0 + self.rng.randint(2, 8))))
            tgt = os.path.join(d, "tgt.raw")
            opts = self.blkdebug_opts("raw", src, [("read", s * 512) for s in sectors])
            r = run(log, [self.T.img, "convert", "--salvage", "--image-opts", *mode, "-O", "raw",
                          opts, tgt], timeout=TIMEOUT, cwd=d)
            self.faults += len(sectors)
            problems = self.check_run(r, d, before, 0, None, None)
            warned = sorted(int(x) // 512 for x in
                            re.findall(r"warning: error while reading offset (\d+): Input/output error", r.err))
            if not problems:
                if warned != sectors:
                    problems.append(f"warnings name sectors {warned}, injected {sectors}")
                # expected: the source with exactly those sectors zeroed
                exp = os.path.join(d, "expected.raw")
                shutil.copyfile(src, exp)
                with open(exp, "r+b") as f:
                    for s in sectors:
                        f.seek(s * 512)
                        f.write(bytes(512))
                log.note("expected.raw = src.raw with the injected sectors zeroed")
                c = run(log, [self.T.img, "compare", "-f", "raw", "-F", "raw", exp, tgt])
                if c.rc != 0:
                    problems.append("target is not the source with zeroes at the injected sectors: "
                                    + c.describe())
                cmds = []
                for s in sectors:
                    cmds += ["-c", f"read -q -P 0 {s * 512} 512"]
                q = run(log, [self.T.io, "-f", "raw", "-r", *cmds, tgt])
                if q.rc != 0 or "Pattern verification failed" in q.out + q.err:
                    problems.append("qemu-io read -P 0 fails on an injected sector: " + q.describe())
            self.record("salvage", f"{len(sectors)} bad sectors {sectors}, {' '.join(mode)}",
                        problems, log)
            shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ signals
    def group_signals(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            for mode in (["-m", "1"], ["-m", "8"], ["-m", "8", "-W"], ["-m", "8", "-c"]):
                d = self.workdir(f"signal-{sig.name}")
                log = common.Log()
                src = self.make_source(d)
                before = {src: common.file_sha256(src)}
                srv, sock, nlog = self.slow_server(log, d, "source", src, None)
                fmt = "qcow2" if "-c" in mode else "raw"
                tgt = os.path.join(d, "tgt." + fmt)
                argv = [self.T.img, "convert", "-f", "raw", *mode, "-O", fmt, nbd_uri(sock), tgt]
                log.cmd(argv, background=True)
                log.note(f"when {nlog} shows the first Read: kill -{sig.name[3:]} <qemu-img pid>")
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, cwd=d, start_new_session=True)
                common._children[proc.pid] = proc
                problems = []
                if not self.wait_log(nlog, " Read id=", srv):
                    problems.append("no Read request reached the server")
                t0 = time.monotonic()
                proc.send_signal(sig)
                r = common.finish(proc, argv, 10)
                secs = time.monotonic() - t0
                if r.rc == 0:
                    problems.append("exit 0 after the signal")
                if secs > 5 and not r.timed_out:
                    problems.append(f"took {secs:.1f} s to end")
                problems += self.check_run(r, d, before, None, None, None, servers=[srv],
                                           allowed_signal=sig)
                how = f"killed by {signal.Signals(-r.rc).name}" if r.rc < 0 else f"exit {r.rc}"
                self.record("signals", f"SIG{sig.name[3:]} mid-copy, {' '.join(mode)}: {how} "
                            f"in {secs:.2f} s", problems, log)
                shutil.rmtree(d, ignore_errors=True)


GROUPS = ["blkdebug", "qcow2", "nbdkit", "kill", "salvage", "signals"]
SUMMARY = {
    "blkdebug": "blkdebug read/write/write-zeroes/block-status errors at chosen and random "
                "offsets exit 1 naming the operation and chunk; flush as documented",
    "qcow2": "write errors under a qcow2 target (data or metadata), with and without -c: "
             "exit 1 naming the write, no corruption (qemu-img check)",
    "nbdkit": "nbdkit error filter on reads, extents, writes, zeroes: exit 1 with the "
              "operation named, or a verified copy when no error was drawn",
    "kill": "a source or target server killed mid-copy: exit 1, operation named",
    "salvage": "--salvage: zeroes exactly at the injected sectors, source elsewhere",
    "signals": "SIGINT/SIGTERM mid-copy end qemu-img within 5 s, non-zero",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="seed for offsets and rates (default: random)")
    ap.add_argument("--group", default="blkdebug,qcow2,nbdkit,kill,salvage",
                    help="comma-separated groups: " + ",".join(GROUPS))
    ap.add_argument("--max-m", type=int, default=int(os.environ.get("QCE_PATCHED_MAX_M", "512")))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    groups = [g for g in args.group.split(",") if g]
    for g in groups:
        if g not in GROUPS:
            ap.error(f"unknown group {g}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    pdir, _ = common.build_dirs()
    tools = common.Tools("patched", pdir, args.max_m)
    print(f"faults: seed {seed}, groups {','.join(groups)}, qemu-img {tools.img}", flush=True)
    if tools.missing():
        print(f"FAIL - faults: missing {', '.join(tools.missing())}; run scripts/build first")
        return 1
    if not shutil.which("nbdkit"):
        print("FAIL - faults: nbdkit is not installed (scripts/install-deps)")
        return 1
    common.install_cleanup()
    root = tempfile.mkdtemp(prefix="qce-faults.")
    if not args.keep:
        common.register_tmp(root)
    t0 = time.monotonic()
    s = Suite(args, tools, root, seed)
    try:
        for g in groups:
            getattr(s, "group_" + g)()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    failed = 0
    for g in groups:
        st = s.groups.get(g, {"ok": 0, "fail": 0})
        runs = st["ok"] + st["fail"]
        if st["fail"] == 0 and runs:
            print(f"ok - {g} ({runs} runs, seed {seed}): {SUMMARY[g]}")
        elif not runs:
            print(f"FAIL - {g}: no runs")
            failed += 1
        failed += st["fail"]
    print(f"faults: {sum(v['ok'] + v['fail'] for v in s.groups.values())} runs, "
          f"{s.faults} faults injected, {failed} failed, {time.monotonic() - t0:.0f} s; "
          f"replay with --seed {seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
