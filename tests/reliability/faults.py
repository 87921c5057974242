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
  earlystop an NBD source whose status replies are slow (5 ms) and short
            (64 KiB) and whose every read fails: the convert exits 1
            naming the read, and no more block status requests start
            after the failed read than were in flight (one per walker)
  signals   SIGINT and SIGTERM while the copy is in flight

Modes: -m 1, -m 8 and -m MAX (512), each with and without -W (signals:
-m 1, -m 8, -W, -c).  Every run: a hard timeout (no hang), no death by a
signal and no core file (no crash), exit code 1 where an error is
expected, the message qemu-img prints for the operation and the offset
it names, no process left behind, and the source files unchanged
(SHA-256 before and after).

The build under test runs only the convert under test.  Everything that
judges a result (qemu-img compare, check and map, qemu-io read-back) is
the unpatched build's (QCE_UNPATCHED, see common.build_dirs()), whose
qcow2 driver and copy engine the series does not touch, or Python; the
sources are made by Python, not by a QEMU tool.

The offset a message names is checked against the injected fault: it
must be the start of the request of the copy that covers the fault.  The
requests are derived from the source's layout as lseek(SEEK_DATA/
SEEK_HOLE) sees it (see copy_chunks()), from the requests an nbdkit log
filter saw fail, or, for a qcow2 target, from the unpatched map of what
was written; each check says how wide its window is and why.
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
CHUNK = 2 * MiB           # convert's copy buffer (IO_BUF_SIZE): a data chunk
# To or from an NBD export the patched engine shares its copy buffers
# between the coroutines instead (patches 49-51): see nbd_chunk()
NBD_MIN_PIPELINED = 512 * KiB   # the NBD client's min_pipelined_transfer
CLUSTER = 64 * KiB        # the qcow2 targets' cluster: the chunk with -c
SIZE = 9 * MiB + 3584     # a multiple of neither 64k nor 2 MiB
TIMEOUT = 60
# The patched walker asks for block status in 16 MiB segments, the
# unpatched engine in requests of up to BDRV_REQUEST_MAX_BYTES (~2 GiB):
# below both, each engine asks about a whole data or hole extent in one
# query, which copy_chunks() relies on.
STATUS_SEGMENT = 16 * MiB
STATUS_WALKERS = 8        # the patched engine's status walkers
assert SIZE < STATUS_SEGMENT
# holes of the sparse source, read as zeroes: 1M..3M+4k and 6M..7M
HOLES = [(1 * MiB, 3 * MiB + 4096), (6 * MiB, 7 * MiB)]

# Behaviour of qemu-img that these tests pin down but that is not what a
# user would want; each is reported in docs/testing.md.  The tests assert
# the behaviour as it is, so that a change to it is noticed.  (The failed
# flush of the target that 10.2.2 ignores is fixed by the series' patch
# "qemu-img: convert: fail when the target cannot be flushed".)
KNOWN_GAPS = {}


def layout(path):
    """[(start, end, is_data)] of a raw file, 512-byte rounded at the end,
    as lseek(SEEK_DATA/SEEK_HOLE) sees it: that is what a raw file's block
    status reports (file-posix asks lseek), whole extents at once."""
    data, size = common.raw_data_extents(path)
    end = -(-size // 512) * 512
    out, pos = [], 0
    for d, ln in data:
        e = min(d + ln, end)
        if d > pos:
            out.append((pos, d, False))
        out.append((d, e, True))
        pos = e
    if pos < end:
        out.append((pos, end, False))
    return out


def nbd_chunk(mode):
    """The data chunk size, in bytes, of a copy between a raw file and an
    NBD export with the convert options @mode (a list with "-m N"): the
    copy buffers (min(N, 16) chunks of CHUNK) shared between min(N, 64)
    chunks, rounded down to a power of two, at least the NBD client's
    NBD_MIN_PIPELINED, at most CHUNK (qemu-img.c, convert_pipeline_chunks()).
    CHUNK for N up to 16, so also what the unpatched engine (-m <= 16,
    CHUNK always) does there."""
    m = int(mode[mode.index("-m") + 1])
    share = min(m, 16) * CHUNK // min(m, 64)
    return max(NBD_MIN_PIPELINED, min(CHUNK, 1 << (share.bit_length() - 1)))


def copy_chunks(path, chunk=CHUNK):
    """[(start, end, is_data)]: the chunks qemu-img convert copies a raw
    source in (no -c, no -B, default -S), in both engines: each data or
    hole extent is known whole (one status query, see STATUS_SEGMENT); a
    data extent is read and written in chunks of @chunk bytes (CHUNK, the
    copy buffer; nbd_chunk() to or from an NBD export) from its start; a
    hole is one chunk (zeroes take no buffer), written with one
    write-zeroes request when the target is not known to be zero."""
    out = []
    for s, e, is_data in layout(path):
        if is_data:
            out += [(c, min(c + chunk, e), True) for c in range(s, e, chunk)]
        else:
            out.append((s, e, False))
    return out


def holding(extents, off):
    """The (start, end, ...) of @extents that holds byte @off, or None."""
    for x in extents:
        if x[0] <= off < x[1]:
            return x
    return None


def nbd_requests(path, kind):
    """[(offset, count, ret)] of the @kind requests ("Read", "Write",
    "Zero", "Extents") in an nbdkit log filter's file; ret is None for a
    request that got no reply (the server was killed)."""
    reqs = {}
    for ev, typ, key, off, count, ret in common.nbdkit_log(path):
        if typ != kind:
            continue
        if ev == "start":
            reqs[key] = [off, count, None]
        elif key in reqs:
            reqs[key][2] = ret
    return [tuple(v) for v in reqs.values()]


def expect_one_of(want, why):
    """An offset oracle: the offset named must be in @want (a list of
    (start, end) windows, each the request of the copy that covers a
    fault, of which the offset must be the start); @why says how the
    windows were derived, for the failure text."""
    starts = sorted({w[0] for w in want})

    def check(o):
        if not starts:
            return f"no window to accept it in ({why}): the harness derived none"
        if o in starts:
            return None
        inside = [w for w in want if w[0] <= o < w[1]]
        where = (f"inside [{inside[0][0]}, {inside[0][1]}) but not its start" if inside
                 else "in none of the windows")
        shown = ", ".join(f"[{a}, {b})" for a, b in sorted(set(want))[:8])
        more = f" (+{len(set(want)) - 8} more)" if len(set(want)) > 8 else ""
        return f"{where}; expected the start of {shown}{more}: {why}"
    return check


class Suite:
    def __init__(self, args, tools, verifier, root, seed):
        self.args = args
        # T, the build under test: only ever the convert under test (see
        # convert()).  V, the unpatched build: every compare, check, map
        # and qemu-io read-back, so that the build does not judge itself.
        self.T = tools
        self.V = verifier
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.groups = {}          # group -> {"ok", "fail", "faults"}
        self.faults = 0
        self.n = 0
        self.sources = {}

    # ------------------------------------------------------------ helpers
    def convert(self, *args):
        """argv of the convert under test: the one use of the build under
        test (every verification goes through self.V)."""
        return [self.T.img, "convert", *args]

    def fault(self, group, n=1):
        """Count @n faults that reached qemu-img in @group."""
        self.faults += n
        g = self.groups.setdefault(group, {"ok": 0, "fail": 0, "faults": 0})
        g["faults"] += n

    def verify_same(self, log, a, fmt_a, b, fmt_b):
        """qemu-img compare of the unpatched build: None, or what differs."""
        c = run(log, [self.V.img, "compare", "-f", fmt_a, "-F", fmt_b, a, b])
        return None if c.rc == 0 else c.describe()

    def workdir(self, name):
        self.n += 1
        d = os.path.join(self.root, f"{self.n:03d}-{name}")
        os.mkdir(d)
        return d

    def record(self, group, title, problems, log, detail=""):
        g = self.groups.setdefault(group, {"ok": 0, "fail": 0, "faults": 0})
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
        p = os.path.join(self.root, f"src-{key}.raw")
        data = random.Random(self.seed).randbytes(SIZE)
        # written by Python, not by a QEMU tool; sparse: the HOLES are
        # never written, so they are holes of the file (read as zeroes)
        with open(p, "wb") as f:
            f.truncate(SIZE)
            pos = 0
            for hs, he in (HOLES if sparse else []) + [(SIZE, SIZE)]:
                f.seek(pos)
                f.write(data[pos:hs])
                pos = he
        want = [(0, SIZE, True)] if not sparse else \
            [(0, 1 * MiB, True), (1 * MiB, 3 * MiB + 4096, False), (3 * MiB + 4096, 6 * MiB, True),
             (6 * MiB, 7 * MiB, False), (7 * MiB, SIZE, True)]
        if layout(p) != want:
            raise RuntimeError(f"{p}: lseek shows {layout(p)}, not {want}; the oracles "
                               "need a file system with holes (SEEK_HOLE) for the scratch directory")
        self.sources[key] = p
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
            elif "off" in m.groupdict():
                # every offset a message names is checked (several
                # requests may fail at once); no oracle for it is a
                # harness bug, not a pass
                for m in re.finditer(expect_re, r.err):
                    off = int(m.group("off"))
                    why = ("harness: no oracle for the offset" if offset_ok is None
                           else offset_ok(off))
                    if why:
                        problems.append(f"message names byte {off}: {why}")
                        break
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
                argv = self.convert("--image-opts", *mode, "-O", "raw",
                                    self.blkdebug_opts("raw", src, [(op, off)]), tgt)
            else:
                # the existing raw target of -n (what qemu-img create -f
                # raw makes: a file of SIZE bytes, all holes)
                log.note(f"truncate -s {SIZE} {tgt}")
                with open(tgt, "wb") as f:
                    f.truncate(SIZE)
                # convert's target cache mode is unsafe by default: no
                # flush at all; writeback makes the flush happen
                cache = ["-t", "writeback"] if op == "flush" else []
                argv = self.convert("-f", "raw", *mode, *cache, "-n", "--target-image-opts",
                                    src, self.blkdebug_opts("raw", tgt, [(op, off)]))
            r = run(log, argv, timeout=TIMEOUT, cwd=d)
            self.fault("blkdebug")
            # blkdebug fails every request whose range holds the sector
            # at @off; the message names the start of the request of the
            # copy that covers it.  Windows from the source's layout
            # (copy_chunks(), layout()), the same in every mode: -m and
            # -W change which chunk runs when, not where chunks start.
            rc = 1
            if op in ("read", "write"):
                # the data chunk holding @off: the source is data
                # throughout, so chunks of the 2 MiB buffer from byte 0;
                # the window is that chunk, 2 MiB wide (the last one
                # shorter), as one buffer is read and written at a time
                c = holding(copy_chunks(src), off)
                verb = "reading" if op == "read" else "writing"
                exp = rf"error while {verb} at byte (?P<off>\d+): Input/output error"
                ok = expect_one_of([c[:2]] if c and c[2] else [],
                                   f"the {c[1] - c[0] if c else 0}-byte data chunk (the 2 MiB copy "
                                   f"buffer) that holds the failed sector {off}")
            elif op == "write-zeroes":
                # the hole holding @off is one zero chunk, one
                # write-zeroes request of its whole length (zeroes take no
                # buffer): the window is the hole, 1 to 2 MiB + 4 KiB wide
                c = holding(copy_chunks(src), off)
                exp = r"error while writing at byte (?P<off>\d+): Input/output error"
                ok = expect_one_of([c[:2]] if c and not c[2] else [],
                                   f"the hole (one write-zeroes request) that holds the "
                                   f"failed sector {off}")
            elif op == "block-status":
                # the status query that covers @off: each engine asks
                # about a whole data or hole extent at once, from its
                # start to the end of the image (or of a 16 MiB status
                # segment, patched; of BDRV_REQUEST_MAX_BYTES,
                # unpatched), and blkdebug fails the query whose range
                # holds @off.  The source is data throughout: the window
                # is [0, SIZE), the one query both engines make, and the
                # message must name 0
                x = holding(layout(src), off)
                exp = r"error while reading block status at offset (?P<off>\d+): Input/output error"
                ok = expect_one_of([x[:2]] if x else [],
                                   f"the block status query that covers the failed sector {off}: "
                                   f"one query per data/hole extent of the source")
            else:  # flush, with -t writeback: no offset to name
                exp = r"error while flushing the target: Input/output error"
                ok = None
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
            # the existing target, made by the unpatched build
            run(log, [self.V.img, "create", "-q", "-f", "qcow2", "-o", f"cluster_size={CLUSTER}",
                      tgt, str(SIZE)])
            opts = (f"driver=qcow2,file.driver=blkdebug,file.image.driver=file,"
                    f"file.image.filename={tgt},file.inject-error.0.event=none,"
                    f"file.inject-error.0.iotype=write,file.inject-error.0.errno=5")
            once = self.rng.random() < 0.5
            if once:
                where = "the first write to the file"
                opts += ",file.inject-error.0.once=on"
            else:
                sector = self.rng.randrange(256, (SIZE + 1 * MiB) // 512)
                where = f"host byte {sector * 512}"
                opts += f",file.inject-error.0.sector={sector}"
            r = run(log, self.convert("-f", "raw", *mode, *comp, "-n",
                                      "--target-image-opts", src, opts), timeout=TIMEOUT, cwd=d)
            if r.rc != 0:
                self.fault("qcow2")
            if r.rc == 0 and not r.timed_out:
                # the sector was never written: then the copy must be right
                problems = self.check_run(r, d, before, 0, None, None)
                diff = self.verify_same(log, src, "raw", tgt, "qcow2")
                if diff:
                    problems.append("no error reached qemu-img, but the copy differs: " + diff)
                what = "never written: copy verified"
            else:
                problems = self.check_run(
                    r, d, before, 1, r"error while writing at byte (?P<off>\d+): Input/output error",
                    self.qcow2_window(log, tgt, mode, comp, once))
                what = r.err.strip().splitlines()[-1] if r.err.strip() else ""
            # whatever failed, the image must not be corrupt (leaks are
            # allowed after a failed allocation: exit 3)
            c = run(log, [self.V.img, "check", "-f", "qcow2", tgt])
            if c.rc not in (0, 3):
                problems.append("qemu-img check after the error: " + c.describe())
            self.record("qcow2", f"write error at {where} of a qcow2 target, "
                        f"{' '.join(mode + comp)}", problems, log, detail=f" -> {what}")
            shutil.rmtree(d, ignore_errors=True)

    def qcow2_window(self, log, tgt, mode, comp, once):
        """The offset oracle of a write error below a qcow2 target.

        The fault is a host sector (or the first host write), and which
        guest chunk's write covers it is qcow2's choice, made as requests
        allocate; what pins the chunk down is what was written, read with
        the unpatched map.  Chunks are 2 MiB (the copy buffer), with -c
        one 64 KiB cluster (-c copies a cluster at a time).  A chunk whose
        write failed is not written in full: a failed data write is not
        linked into the L2 table, a failed metadata write (L2 table, L1,
        refcount block) fails the allocation.  (The random source does not
        compress, so with -c too its clusters are written the normal way,
        data first, link after; but not the last, partial one, mostly zero
        padding, which qcow2 links before it writes it: a chunk the map
        shows compressed may have failed too.)  Several chunks may fail:
        a failed allocation is freed and the next one may get the same
        host sector.  Chunks are handed out in ascending order to M
        coroutines (-m M), which take no new one after the first error:
        the chunks handed out are the first K+M at most, K the chunks
        written.  So every chunk named is one of the first K+M not written
        in full: with -m 1 exactly the first one not written in full, one
        chunk wide; with more, up to M chunks.  (Writes in order, no -W,
        do not narrow it: one slow chunk holds one coroutine while the
        others go on, and with -c qcow2 allocates clusters as their
        compression ends, in any order.)  once=on fails one write, the
        first: one of the first M chunks'."""
        m = int(mode[mode.index("-m") + 1])
        w = CLUSTER if comp else CHUNK
        grid = [(c, min(c + w, SIZE)) for c in range(0, SIZE, w)]
        mp, r = common.filtered_map(log, self.V, tgt, "qcow2")
        if mp is None:
            return lambda o: "unpatched qemu-img map of the target failed: " + r.describe()

        def full(c, compressed):
            covered = sum(max(0, min(e["start"] + e["length"], c[1]) - max(e["start"], c[0]))
                          for e in mp if e.get("data") and (compressed or not e.get("compressed")))
            return covered >= c[1] - c[0]
        # not written in full, or compressed (linked before written)
        todo = [i for i, c in enumerate(grid) if not full(c, False)]
        if not todo:
            return lambda o: "the write failed, but the unpatched map shows every chunk written"
        k = sum(full(c, True) for c in grid)
        want = [grid[i] for i in todo if i < k + m and (not once or i < m)]
        why = (f"the {w // KiB} KiB chunks not written in full (unpatched map) among the first "
               f"{k} + {m} (written in full + -m {m})" + (f" and the first {m} (once=on)" if once else ""))
        return expect_one_of(want, why)

    # ------------------------------------------------------------ nbdkit
    def group_nbdkit(self):
        kinds = [("pread", "source"), ("extents", "source"),
                 ("pwrite", "target"), ("zero", "target")]
        for kind, side in kinds:
            kind_faults = 0
            for mode in self.modes():
                # few extents and zero requests per copy: higher rates
                rate = self.rng.choice([10, 20, 40, 60] if kind in ("pread", "pwrite")
                                       else [30, 50, 100])
                d = self.workdir(f"nbdkit-{kind}")
                log = common.Log()
                src = self.make_source(d, sparse=(kind in ("zero", "extents")))
                before = {src: common.file_sha256(src)}
                if mode == self.modes()[-1] and not kind_faults:
                    # no error drawn in the other modes: this one must
                    # inject, so that every kind is exercised
                    rate = 100
                tgt = os.path.join(d, "tgt.raw")
                sock = os.path.join(d, "nbd.sock")
                errlog = os.path.join(d, "nbdkit.err")
                nlog = os.path.join(d, "nbdkit.log")
                # the log filter, outside the error filter, records every
                # request and which ones failed: the oracle of the offset
                args = [f"logfile={nlog}", f"error-{kind}-rate={rate}%", "error=EIO"]
                if side == "source":
                    srv = common.start_nbdkit(log, sock, ["file", f"file={src}", *args],
                                              filters=["log", "error"], extra=["--readonly"],
                                              stderr_file=errlog)
                    argv = self.convert("-f", "raw", *mode, "-O", "raw", nbd_uri(sock), tgt)
                else:
                    with open(tgt, "wb") as f:
                        f.truncate(-(-SIZE // 512) * 512)
                    srv = common.start_nbdkit(log, sock, ["file", f"file={tgt}", *args],
                                              filters=["log", "error"], stderr_file=errlog)
                    argv = self.convert("-f", "raw", *mode, "-n", "-O", "raw", src, nbd_uri(sock))
                r = run(log, argv, timeout=TIMEOUT, cwd=d)
                common.stop_process(srv)
                with open(errlog, errors="replace") as f:
                    injected = len(re.findall(r"injecting \w+ error", f.read()))
                self.fault("nbdkit", injected)
                kind_faults += injected
                if injected:
                    exp = {"pread": r"error while reading at byte (?P<off>\d+)",
                           "extents": r"error while reading block status at offset (?P<off>\d+)",
                           "pwrite": r"error while writing at byte (?P<off>\d+)",
                           "zero": r"error while writing at byte (?P<off>\d+)"}[kind]
                    failed = [q for q in nbd_requests(nlog, NBD_KIND[kind]) if q[2] is not None and q[2] < 0]
                    if kind == "extents":
                        # the failed status request is the query convert
                        # made, from the offset it names: the window is
                        # that request, as wide as the range it asked about
                        want = [(q[0], q[0] + q[1]) for q in failed]
                        why = "the block status requests the server failed (nbdkit log)"
                    else:
                        # the chunk of the copy that the failed request is
                        # part of: data chunks of nbd_chunk() bytes (one
                        # read or write request each), a whole hole for
                        # zeroes
                        size = nbd_chunk(mode)
                        chunks = copy_chunks(src, size)
                        want = [c[:2] for c in chunks for q in failed if c[0] <= q[0] < c[1]]
                        why = (f"the chunks ({size // KiB} KiB data chunks, or whole holes for "
                               f"zeroes) of the {NBD_KIND[kind]} requests the server failed "
                               "(nbdkit log)")
                    problems = self.check_run(r, d, before, 1, exp, expect_one_of(want, why))
                    if len(failed) != injected:
                        problems.append(f"nbdkit log shows {len(failed)} failed {NBD_KIND[kind]} "
                                        f"requests, its error filter {injected} injected")
                else:
                    # no error drawn: then the copy must be complete
                    problems = self.check_run(r, d, before, 0, None, None)
                    if not problems:
                        diff = self.verify_same(log, src, "raw", tgt, "raw")
                        if diff:
                            problems.append("no error injected, but the copy differs: " + diff)
                what = f"{injected} injected" if injected else "none drawn, copy verified"
                self.record("nbdkit", f"{kind} errors on the {side} at {rate}% ({what}), "
                            f"{' '.join(mode)}", problems, log,
                            detail=f" -> {r.err.strip().splitlines()[-1]}" if r.err.strip() else "")
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------ earlystop
    def group_earlystop(self):
        """After the first error, nothing more is asked of the source: the
        block status walkers stop at their next query, not at the end of
        their segment.  The source: 256 MiB with 4 KiB of data in every
        MiB, served by nbdkit with every status reply cut to 64 KiB
        (blocksize filter, maxlen: 256 replies a 16 MiB status segment)
        and 5 ms late, and every read failing."""
        p = os.path.join(self.root, "src-earlystop.raw")
        if not os.path.exists(p):
            block = random.Random(self.seed).randbytes(4096)
            with open(p, "wb") as f:
                f.truncate(256 * MiB)
                for off in range(0, 256 * MiB, MiB):
                    f.seek(off)
                    f.write(block)
        for mode in self.modes():
            d = self.workdir("earlystop")
            log = common.Log()
            before = {p: common.file_sha256(p)}
            sock = os.path.join(d, "nbd.sock")
            nlog = os.path.join(d, "nbdkit.log")
            srv = common.start_nbdkit(log, sock, ["file", f"file={p}", f"logfile={nlog}",
                                                  "maxlen=64k", "delay-extents=5ms",
                                                  "error-pread-rate=100%", "error=EIO"],
                                      filters=["log", "error", "blocksize", "delay"],
                                      extra=["--readonly"])
            tgt = os.path.join(d, "tgt.raw")
            r = run(log, self.convert("-f", "raw", *mode, "-O", "raw", nbd_uri(sock), tgt),
                    timeout=TIMEOUT, cwd=d)
            common.stop_process(srv)
            events = common.nbdkit_log(nlog)
            first = next((i for i, ev in enumerate(events)
                          if ev[0] == "end" and ev[1] == "Read" and ev[5] is not None
                          and ev[5] < 0), None)
            problems = self.check_run(r, d, before, 1,
                                      r"error while reading at byte (?P<off>\d+)",
                                      lambda o: None if o % MiB == 0
                                      else "not the start of a data extent (every MiB)")
            extents = sum(1 for ev in events if ev[0] == "start" and ev[1] == "Extents")
            after = (sum(1 for ev in events[first:] if ev[0] == "start" and ev[1] == "Extents")
                     if first is not None else None)
            if first is None:
                problems.append("the nbdkit log shows no failed read")
            else:
                self.fault("earlystop")
                if after > STATUS_WALKERS:
                    problems.append(f"{after} block status requests started after the failed "
                                    f"read (at most {STATUS_WALKERS}, one per walker, may have "
                                    f"been in flight); {extents} in all")
            self.record("earlystop", f"every read failing, status in 64 KiB replies, "
                        f"{' '.join(mode)}", problems, log,
                        detail=f" -> {extents} status requests, {after} after the failed read")
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
                    argv = self.convert("-f", "raw", *mode, "-O", "raw", nbd_uri(sock), tgt)
                    word = " Read id="
                else:
                    argv = self.convert("-f", "raw", *mode, "-n", "-O", "raw", src, nbd_uri(sock))
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
                self.fault("kill")
                r = common.finish(proc, argv, TIMEOUT)
                exp = (r"error while reading at byte (?P<off>\d+)" if side == "source"
                       else r"error while writing at byte (?P<off>\d+)")
                # the chunk whose read (write) the kill failed: one that
                # convert had handed out and the server had not completed.
                # Chunks (nbd_chunk(), one request each; the source is data
                # throughout) are handed out in ascending order, at most
                # M at once (-m M), one more each time one completes; the
                # kill comes at the first request, 300 ms before any can
                # complete.  So the window is the first M+K chunks (K: the
                # requests the log shows completed) less the completed
                # ones: with -m 1 exactly chunk 0, one chunk wide.
                m = int(mode[mode.index("-m") + 1])
                chunks = [c[:2] for c in copy_chunks(src, nbd_chunk(mode))]
                reqs = nbd_requests(nlog, word.split()[0])
                done = {c for c in chunks for q in reqs if q[2] == 0 and c[0] <= q[0] < c[1]}
                want = [c for c in chunks[:m + len(done)] if c not in done]
                problems += self.check_run(
                    r, d, before, 1, exp,
                    expect_one_of(want, f"the first {m} + {len(done)} chunks of the copy (-m {m}, "
                                        f"{len(done)} completed before the kill) less those completed"),
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
            r = run(log, self.convert("--salvage", "--image-opts", *mode, "-O", "raw", opts, tgt),
                    timeout=TIMEOUT, cwd=d)
            self.fault("salvage", len(sectors))
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
                diff = self.verify_same(log, exp, "raw", tgt, "raw")
                if diff:
                    problems.append("target is not the source with zeroes at the injected sectors: "
                                    + diff)
                cmds = []
                for s in sectors:
                    cmds += ["-c", f"read -q -P 0 {s * 512} 512"]
                if not cmds:
                    problems.append("harness: no injected sector to read back")
                q = run(log, [self.V.io, "-f", "raw", "-r", *cmds, tgt])
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
                argv = self.convert("-f", "raw", *mode, "-O", fmt, nbd_uri(sock), tgt)
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
                self.fault("signals")
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


NBD_KIND = {"pread": "Read", "extents": "Extents", "pwrite": "Write", "zero": "Zero"}

GROUPS = ["blkdebug", "qcow2", "nbdkit", "kill", "salvage", "earlystop", "signals"]
SUMMARY = {
    "blkdebug": "blkdebug read/write/write-zeroes/block-status errors at chosen and random "
                "offsets exit 1 naming the operation and chunk; flush as documented",
    "qcow2": "write errors under a qcow2 target (data or metadata), with and without -c: "
             "exit 1 naming a chunk not written, no corruption (unpatched qemu-img check)",
    "nbdkit": "nbdkit error filter on reads, extents, writes, zeroes: exit 1 with the "
              "operation named, or a verified copy when no error was drawn",
    "kill": "a source or target server killed mid-copy: exit 1, operation named",
    "salvage": "--salvage: zeroes exactly at the injected sectors, source elsewhere",
    "earlystop": "an early read error on an NBD source with slow, short status replies: exit 1, no "
                 "block status request starts after it beyond those in flight",
    "signals": "SIGINT/SIGTERM mid-copy end qemu-img within 5 s, non-zero",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="seed for offsets and rates (default: random)")
    ap.add_argument("--group", default="blkdebug,qcow2,nbdkit,kill,salvage,earlystop",
                    help="comma-separated groups: " + ",".join(GROUPS))
    ap.add_argument("--max-m", type=int, default=int(os.environ.get("QCE_PATCHED_MAX_M", "512")))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    groups = [g for g in args.group.split(",") if g]
    for g in groups:
        if g not in GROUPS:
            ap.error(f"unknown group {g}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    pdir, udir = common.build_dirs()
    tools = common.Tools("patched", pdir, args.max_m)
    # the verifier: the unpatched build (QCE_UNPATCHED), never the build
    # under test
    verifier = common.Tools("unpatched", udir, int(os.environ.get("QCE_UNPATCHED_MAX_M", "16")))
    print(f"faults: seed {seed}, groups {','.join(groups)}, qemu-img {tools.img}, "
          f"verified with {verifier.dir}", flush=True)
    if tools.missing():
        print(f"FAIL - faults: missing {', '.join(tools.missing())}; run scripts/build first")
        return 1
    if verifier.missing():
        print(f"FAIL - faults: missing the unpatched verifier {', '.join(verifier.missing())} "
              f"(QCE_UNPATCHED); the results are checked with the unpatched build's tools, not "
              f"the build under test; run scripts/build first")
        return 1
    if os.path.realpath(verifier.dir) == os.path.realpath(tools.dir) or \
            os.path.realpath(verifier.img) == os.path.realpath(tools.img):
        print(f"FAIL - faults: the verifier {verifier.dir} is the build under test; "
              f"point QCE_UNPATCHED at another build")
        return 1
    if not shutil.which("nbdkit"):
        print("FAIL - faults: nbdkit is not installed (scripts/install-deps)")
        return 1
    common.install_cleanup()
    root = tempfile.mkdtemp(prefix="qce-faults.")
    if not args.keep:
        common.register_tmp(root)
    t0 = time.monotonic()
    s = Suite(args, tools, verifier, root, seed)
    try:
        for g in groups:
            getattr(s, "group_" + g)()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    failed = 0
    if not groups:
        print("FAIL - faults: no group to run")
        failed += 1
    for g in groups:
        st = s.groups.get(g, {"ok": 0, "fail": 0, "faults": 0})
        runs = st["ok"] + st["fail"]
        # ok needs runs, and faults that reached qemu-img in them
        if st["fail"] == 0 and runs and st["faults"]:
            print(f"ok - {g} ({runs} runs, {st['faults']} faults, seed {seed}): {SUMMARY[g]}")
        elif not runs:
            print(f"FAIL - {g}: no runs")
            failed += 1
        elif not st["faults"]:
            print(f"FAIL - {g}: {runs} runs, but no fault reached qemu-img")
            failed += 1
        failed += st["fail"]
    print(f"faults: {sum(v['ok'] + v['fail'] for v in s.groups.values())} runs, "
          f"{s.faults} faults injected, {failed} failed, {time.monotonic() - t0:.0f} s; "
          f"replay with --seed {seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
