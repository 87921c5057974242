#!/usr/bin/env python3
"""The engine's concurrency itself, counted on the NBD servers.

qemu-img convert copies an NBD source into an NBD target, both served by
nbdkit's file plugin behind the delay filter (latency) and the log filter
(one line when a request arrives, one when its reply leaves: nbdkit(1)
nbdkit-log-filter, "Use the id=N field for correlation").  From the two
logs this test counts, without any timing threshold:

  writes in flight   the most Write/Zero/Trim requests the target had
                     received and not yet answered, at any moment;
  start order        whether they were sent in ascending offset order (each
                     one's offset >= the previous one's).  nbdkit's worker
                     threads may log requests in another order than they
                     came off the wire, so the order is taken from the
                     client instead: qemu-img's trace event
                     nbd_send_request, emitted under the connection's send
                     lock (QEMU's 'log' trace backend, the default);
  status look-ahead  how far beyond the copy front the block status
                     (Extents) requests made once the copy had started were
                     (the copy front: the end of the furthest Read the
                     source had received), and how many came while a Read
                     was in flight (reported only: that is timing).

What must hold (the reason the series exists):
  default mode  more than one write in flight, started in ascending order;
  -W            more than one write in flight (order not promised);
  both          status fetched ahead of the copy: status is requested once
                the copy has started (the source is larger than the 1 GiB
                the walk may run ahead), some such request more than
                LOOKAHEAD bytes beyond the copy front.
  in order at any -m  (issue 16) a 32 MiB qcow2 of 128 runs of 64 KiB of
                data and a 64 KiB zero cluster, copied with -n at -m 64
                and -m 512 into (a) an NBD target that refuses any write
                below the end of an earlier one (tests/bin/nbdkit-ascending,
                one nbdkit thread: requests handled in wire order), which
                must succeed, and (b) a new qcow2 exported by the build's
                qemu-nbd, whose data clusters must lie in guest order
                (qemu-img map: host offsets ascending).
Every copy is checked with the unpatched build's `qemu-img compare`.

The same criteria are applied to engines that must be rejected, so a
green run proves the checks can fail:
  - -W -m 64 (writes out of order): refused by the ascending-only target,
    qcow2 clusters out of guest order behind qemu-nbd;
  - the unpatched build: one write in flight in the default mode, and
    status queried at the copy's cursor, one extent at a time;
  - a serial engine: the build under test behind tests/bin/qemu-img-serial,
    which turns every -m into -m 1 and drops -W.
"""

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MiB = 1024 * 1024
# Source: 2 GiB, 64 KiB of seeded random data every 4 MiB (512 extents).
# Larger than the 1 GiB the walkers may run ahead of the copy without -p,
# so that the walk cannot finish before the copy starts.
SIZE = 2048 * MiB
STRIDE = 4 * MiB
EXTENT = 64 * 1024
# How far ahead of the copy front a status request made during the copy
# must be.  The unpatched engine asks at its cursor: at most one hole
# (STRIDE) beyond the front.
LOOKAHEAD = 4 * STRIDE
WRITE_TYPES = ("Write", "Zero", "Trim")
# The in-order case: 128 runs of 64 KiB of data, then a 64 KiB zero
# cluster, at the start of a 32 MiB qcow2 (the rest unallocated)
ORDER_SIZE = 32 * MiB
ORDER_RUNS = 128
ORDER_RUN = 64 * 1024


def analyse_target(events):
    """(most writes in flight at once, number of writes) on the target."""
    inflight = set()
    most = writes = 0
    for kind, typ, key, _, _, _ in events:
        if typ not in WRITE_TYPES:
            continue
        if kind == "start":
            writes += 1
            inflight.add(key)
            most = max(most, len(inflight))
        else:
            inflight.discard(key)
    return most, writes


SEND_RE = re.compile(r"^nbd_send_request .*\.from = (\d+), .*\((write|write zeroes|trim)\) }")


def write_order(trace):
    """(writes sent, writes sent below the previous write's offset), from
    the nbd_send_request events in @trace, qemu-img's stderr (a string);
    only the target is written to, so its writes are the only ones."""
    sent = backward = 0
    last = -1
    for line in trace.splitlines():
        m = SEND_RE.match(line)
        if m:
            sent += 1
            off = int(m.group(1))
            if off < last:
                backward += 1
            last = off
    return sent, backward


WRITE_SEND_RE = re.compile(r"^nbd_send_request .*\.cookie = (\d+), .*"
                           r"\((write|write zeroes|trim)\) }")
REPLY_RE = re.compile(r"^nbd_receive_(?:simple_reply|reply_chunk_header) .*cookie = (\d+)")


def writes_on_wire(trace):
    """The most write requests sent and not yet answered at once, from
    qemu-img's nbd_send_request and nbd_receive_* trace events in
    @trace (its stderr): what the client had on the wire, whatever the
    server does with them."""
    out, most = set(), 0
    for line in trace.splitlines():
        m = WRITE_SEND_RE.match(line)
        if m:
            out.add(m.group(1))
            most = max(most, len(out))
            continue
        m = REPLY_RE.match(line)
        if m:
            out.discard(m.group(1))
    return most


def analyse_source(events):
    """(status requests in all, status requests sent while a read was in
    flight, the greatest distance in bytes between a status request made
    after the first read and the copy front, or None if there was none)."""
    reads = set()
    front = None
    status = overlapping = 0
    ahead = None
    for kind, typ, key, off, length, _ in events:
        if typ == "Read":
            if kind == "start":
                reads.add(key)
                front = max(front or 0, off + length)
            else:
                reads.discard(key)
        elif typ == "Extents" and kind == "start":
            status += 1
            if reads:
                overlapping += 1
            if front is not None:
                d = off - front
                ahead = d if ahead is None else max(ahead, d)
    return status, overlapping, ahead


def self_test(root):
    """The analysers on made-up logs whose answers are known: a write sent
    below the previous one, two writes in flight, status at the front."""
    tgt = os.path.join(root, "selftest-tgt.log")
    with open(tgt, "w") as f:
        f.write("connection=1 Write id=1 offset=0x200000 count=0x10000 fua=0 ...\n"
                "connection=1 Write id=2 offset=0x0 count=0x10000 fua=0 ...\n"
                "connection=1 ...Write id=1 return=0\n"
                "connection=1 ...Write id=2 return=0\n"
                "connection=1 Zero id=3 offset=0x400000 count=0x10000 fua=0 ...\n"
                "connection=1 ...Zero id=3 return=0\n")
    src = os.path.join(root, "selftest-src.log")
    with open(src, "w") as f:
        f.write("connection=1 Read id=1 offset=0x0 count=0x10000 ...\n"
                "connection=1 Extents id=2 offset=0x10000 count=0x400000 req_one=0 ...\n"
                "connection=1 ...Read id=1 return=0\n"
                "connection=1 ...Extents id=2 return=0\n")
    trace = "".join(
        f"nbd_send_request Sending request to server: {{ .from = {off}, "
        f".len = 65536, .cookie = {c}, .flags = 0x0, .type = 1 ({name}) }}\n"
        for off, c, name in ((2097152, 1, "write"), (0, 1, "write zeroes"),
                             (4194304, 1, "trim"), (0, 2, "read")))
    def send(c):
        return (f"nbd_send_request Sending request to server: {{ .from = 0, .len = 512, "
                f".cookie = {c}, .flags = 0x0, .type = 1 (write) }}\n")
    # two writes out, one answered (simple reply), a third out, the second
    # answered (structured reply): never more than two at once
    wire = (send(1) + send(2) + "nbd_receive_simple_reply Got simple reply: "
            "{ .error = 0 (success), cookie = 1 }\n" + send(3) +
            "nbd_receive_reply_chunk_header Got reply chunk header: { flags = 0x1, "
            "type = 0 (none), cookie = 2, length = 0 }\n" + send(4))
    return (analyse_target(common.nbdkit_log(tgt)) == (2, 3)
            and write_order(trace) == (3, 1)
            and writes_on_wire(wire) == 2
            and analyse_source(common.nbdkit_log(src)) == (1, 1, 0))


class Run:
    def __init__(self, root, seed):
        self.root = root
        self.seed = seed
        self.results = []   # one bool per check

    def say(self, good, text):
        print(("ok - " if good else "FAIL - ") + text, flush=True)
        self.results.append(good)

    def make_source(self, path):
        rng = random.Random(self.seed)
        with open(path, "wb") as f:
            f.truncate(SIZE)
            for off in range(0, SIZE, STRIDE):
                f.seek(off)
                f.write(rng.randbytes(EXTENT))

    def convert(self, name, img, opts, src):
        """Copy src into a fresh target through two delayed, logged nbdkit
        servers.  Returns (result, target events, source events, target);
        the result's stderr is qemu-img's trace."""
        d = os.path.join(self.root, name)
        os.mkdir(d)
        log = common.Log()
        tgt = os.path.join(d, "target.raw")
        with open(tgt, "wb") as f:
            f.truncate(SIZE)
        procs = []
        try:
            procs.append(common.start_nbdkit(
                log, os.path.join(d, "src.sock"),
                ["file", src, "logfile=" + os.path.join(d, "src.log"),
                 "delay-read=2ms", "delay-extents=2ms"],
                filters=("log", "delay"), extra=["--readonly"]))
            procs.append(common.start_nbdkit(
                log, os.path.join(d, "tgt.sock"),
                ["file", tgt, "logfile=" + os.path.join(d, "tgt.log"),
                 "delay-write=10ms", "delay-zero=10ms", "delay-trim=10ms"],
                filters=("log", "delay")))
            argv = [img, "--trace", "nbd_send_request",
                    "convert", "-n", "-f", "raw", "-O", "raw"] + opts + [
                common.nbd_uri(os.path.join(d, "src.sock")),
                common.nbd_uri(os.path.join(d, "tgt.sock"))]
            r = common.run(log, argv, timeout=600)
        finally:
            for p in procs:
                common.stop_process(p)
        if r.rc != 0:
            print("\n".join("    " + line for line in log.lines))
        return (r, common.nbdkit_log(os.path.join(d, "tgt.log")),
                common.nbdkit_log(os.path.join(d, "src.log")), tgt)

    def same(self, verifier, src, tgt):
        r = common.run(common.Log(), [verifier, "compare", "-f", "raw", "-F", "raw", src, tgt])
        return r.rc == 0, r

    def measure(self, label, img, opts, src, verifier):
        r, tev, sev, tgt = self.convert(label.replace(" ", "_").replace("-", ""),
                                         img, opts, src)
        most, writes = analyse_target(tev)
        sent, backward = write_order(r.err)
        status, overlapping, ahead = analyse_source(sev)
        good, c = self.same(verifier, src, tgt) if r.rc == 0 else (False, r)
        print(f"  {label}: exit {r.rc}, {writes} writes, at most {most} in flight, "
              f"{sent} sent, {backward} below the previous one; {status} status requests, "
              f"{overlapping} during a read, furthest look-ahead "
              f"{'-' if ahead is None else ahead // MiB} MiB", flush=True)
        return {"rc": r.rc, "r": r, "most": most, "writes": writes, "sent": sent,
                "backward": backward,
                "status": status, "overlapping": overlapping, "ahead": ahead,
                "same": good, "compare": c}

    def make_order_source(self, tools, path):
        """The in-order case's qcow2 source (see ORDER_RUNS), written with
        the qemu-img and qemu-io of `tools`; the data pattern byte changes
        per run."""
        log = common.Log()
        r = common.run(log, [tools.img, "create", "-q", "-f", "qcow2", path,
                             str(ORDER_SIZE)])
        cmds = []
        for i in range(ORDER_RUNS):
            off = 2 * i * ORDER_RUN
            cmds += ["-c", f"write -P {i % 250 + 1} {off} {ORDER_RUN}",
                     "-c", f"write -z {off + ORDER_RUN} {ORDER_RUN}"]
        if r.rc == 0:
            r = common.run(log, [tools.io, "-f", "qcow2", path] + cmds)
        if r.rc != 0:
            print("\n".join("    " + line for line in log.lines))
            raise RuntimeError("cannot make the in-order case's source")

    def into_ascending(self, label, img, opts, src, verifier):
        """Copy the in-order source into tests/bin/nbdkit-ascending.
        Returns (exit status, copy right, writes the server refused, the
        most writes the client had on the wire at once)."""
        d = os.path.join(self.root, "asc-" + label.replace(" ", "_").replace("-", ""))
        os.mkdir(d)
        log = common.Log()
        tgt, err = os.path.join(d, "target.raw"), os.path.join(d, "nbdkit.err")
        with open(tgt, "wb") as f:
            f.truncate(ORDER_SIZE)
        plugin = os.path.join(common.TOP, "tests", "bin", "nbdkit-ascending")
        sock = os.path.join(d, "tgt.sock")
        p = common.start_nbdkit(log, sock, ["sh", plugin, "file=" + tgt],
                                extra=["--threads", "1"], stderr_file=err)
        try:
            r = common.run(log, [img, "--trace", "nbd_send_request",
                                 "--trace", "nbd_receive_simple_reply",
                                 "--trace", "nbd_receive_reply_chunk_header",
                                 "convert", "-n", "-f", "qcow2", "-O", "raw"] + opts
                           + [src, common.nbd_uri(sock)], timeout=600)
        finally:
            common.stop_process(p)
        with open(err, errors="replace") as f:
            refused = sum("refused:" in line for line in f)
        good = r.rc == 0 and self.same_fmt(verifier, "raw", src, tgt)
        wire = writes_on_wire(r.err)
        print(f"  ascending-only target, {label}: exit {r.rc}, {refused} writes refused, "
              f"at most {wire} writes on the wire", flush=True)
        return r.rc, good, refused, wire

    def into_qemu_nbd(self, label, tools, opts, src, verifier):
        """Copy the in-order source with `tools`' qemu-img into a new qcow2
        that `tools`' qemu-nbd exports.  Returns (exit status, copy right, data extents,
        data extents whose host offset is below the previous one's)."""
        d = os.path.join(self.root, "qnbd-" + label.replace(" ", "_").replace("-", ""))
        os.mkdir(d)
        log = common.Log()
        tgt, sock = os.path.join(d, "target.qcow2"), os.path.join(d, "tgt.sock")
        r = common.run(log, [tools.img, "create", "-q", "-f", "qcow2", tgt, str(ORDER_SIZE)])
        if r.rc != 0:
            raise RuntimeError("qemu-img create failed: " + r.err)
        p = common.start_background(log, [tools.nbd, "-f", "qcow2", "-k", sock, tgt])
        try:
            if not common.wait_socket(sock, p):
                raise RuntimeError("qemu-nbd did not start")
            r = common.run(log, [tools.img, "convert", "-n", "-f", "qcow2", "-O", "raw"]
                           + opts + [src, common.nbd_uri(sock)], timeout=600)
        finally:
            # qemu-nbd without --persistent exits once the client is gone
            common.stop_process(p)
        m = common.run(log, [verifier, "map", "--output=json", "-f", "qcow2", tgt])
        data = [e for e in json.loads(m.out or "[]") if e.get("data") and "offset" in e]
        backward = sum(1 for a, b in zip(data, data[1:]) if b["offset"] < a["offset"])
        good = r.rc == 0 and m.rc == 0 and self.same_fmt(verifier, "qcow2", src, tgt)
        print(f"  qcow2 behind qemu-nbd, {label}: exit {r.rc}, {len(data)} data extents, "
              f"{backward} below the previous one in the file", flush=True)
        return r.rc, good, len(data), backward

    @staticmethod
    def same_fmt(verifier, tgt_fmt, src, tgt):
        """The qcow2 @src and @tgt (of format @tgt_fmt) have the same content."""
        return common.run(common.Log(), [verifier, "compare", "-q", "-f", "qcow2",
                                         "-F", tgt_fmt, src, tgt]).rc == 0

    @staticmethod
    def ahead(m):
        """The status walk ran ahead of the copy: status was requested once
        the copy had started (the source is larger than the walk's 1 GiB
        bound, so it must be), and some of those requests went more than
        LOOKAHEAD bytes beyond the copy front (an engine that queries at
        its cursor asks at most one extent ahead; the walker that walks
        the segment the copy is in may be at the front, so the least
        distance says nothing).  Whether one of those requests met a read
        in flight is timing, so it is reported, not required."""
        return m["ahead"] is not None and m["ahead"] > LOOKAHEAD


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--seed", type=int, help="seed of the source's data (default: random)")
    ap.add_argument("-m", type=int, default=8, help="coroutines (default 8)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    patched, unpatched = common.build_dirs()
    P = common.Tools("patched", patched, 0)
    U = common.Tools("unpatched", unpatched, 0)
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    serial = os.path.join(top, "tests", "bin", "qemu-img-serial")
    print(f"concurrency: seed {seed} (replay: tests/concurrency.sh --seed {seed}), "
          f"build under test {P.dir}, verifier {U.dir}", flush=True)
    for t in (P, U):
        if t.missing():
            print(f"FAIL - concurrency: missing {', '.join(t.missing())}; run scripts/build first")
            return 1
    if not shutil.which("nbdkit"):
        print("FAIL - concurrency: nbdkit is not installed (scripts/install-deps)")
        return 1
    common.install_cleanup()
    root = tempfile.mkdtemp(prefix="qce-concurrency-")
    common.register_tmp(root)
    run = Run(root, seed)
    try:
        run.say(self_test(root), "the analysers count made-up logs right "
                "(writes in flight, a backward write, status overlapping a read, writes on the wire)")
        src = os.path.join(root, "source.raw")
        run.make_source(src)
        m = ["-m", str(args.m)]
        # for qemu-img-serial (already set when the build under test is
        # itself a serial engine: QCE_PATCHED naming a directory whose
        # qemu-img is the wrapper)
        os.environ.setdefault("QCE_REAL_QEMU_IMG", P.img)

        d = run.measure("default", P.img, m, src, U.img)
        run.say(d["rc"] == 0 and d["same"],
                f"default -m {args.m}: the copy is right (unpatched qemu-img compare)")
        run.say(d["most"] > 1,
                f"default -m {args.m}: more than one write in flight (at most {d['most']})")
        run.say(d["sent"] == d["writes"] > 1 and d["backward"] == 0,
                f"default -m {args.m}: the writes are sent in ascending order ({d['sent']} "
                f"traced, {d['writes']} logged by nbdkit, {d['backward']} below the previous one)")
        run.say(run.ahead(d),
                f"default -m {args.m}: block status runs ahead of the copy "
                f"({d['overlapping']} of {d['status']} status requests during a read; "
                f"furthest look-ahead during the copy {d['ahead']} bytes, must exceed {LOOKAHEAD})")

        w = run.measure("-W", P.img, m + ["-W"], src, U.img)
        run.say(w["rc"] == 0 and w["same"], f"-W -m {args.m}: the copy is right")
        run.say(w["most"] > 1, f"-W -m {args.m}: more than one write in flight (at most {w['most']})")
        run.say(run.ahead(w), f"-W -m {args.m}: block status runs ahead of the copy")

        # In order at any -m: the writes reach the target in ascending
        # order even where the client has fewer request slots than -m
        osrc = os.path.join(root, "order.qcow2")
        run.make_order_source(U, osrc)
        for mm in (64, 512):
            rc, good, refused, wire = run.into_ascending(f"-m {mm}", P.img,
                                                         ["-m", str(mm)], osrc, U.img)
            run.say(rc == 0 and good and refused == 0 and wire > 1,
                    f"default -m {mm}: an ascending-only NBD target takes the copy "
                    f"(exit {rc}, {refused} writes refused, {wire} writes on the wire "
                    f"at once, must be more than 1)")
            rc, good, n, back = run.into_qemu_nbd(f"-m {mm}", P, ["-m", str(mm)],
                                                  osrc, U.img)
            run.say(rc == 0 and good and n == ORDER_RUNS and back == 0,
                    f"default -m {mm}: a qcow2 behind qemu-nbd gets its {n} data "
                    f"clusters in guest order ({back} below the previous one)")
        rc, good, refused, _ = run.into_ascending("-W -m 64", P.img, ["-m", "64", "-W"],
                                                  osrc, U.img)
        run.say(rc != 0 and refused > 0,
                f"the checks reject out-of-order writes (-W -m 64: exit {rc}, "
                f"{refused} writes refused)")
        rc, good, n, back = run.into_qemu_nbd("-W -m 64", P, ["-m", "64", "-W"],
                                              osrc, U.img)
        run.say(good and back > 0,
                f"the checks reject out-of-order writes behind qemu-nbd (-W -m 64: "
                f"{back} of {n} data clusters below the previous one)")

        # The same checks must reject the engines the series replaces.
        u = run.measure("unpatched default", U.img, m, src, U.img)
        run.say(u["rc"] == 0 and u["same"] and u["most"] == 1 and not run.ahead(u),
                f"the checks reject the unpatched build (default -m {args.m}: at most "
                f"{u['most']} write in flight; status ahead: {run.ahead(u)})")
        s = run.measure("serial default", serial, m, src, U.img)
        run.say(s["rc"] == 0 and s["same"] and s["most"] == 1,
                f"the checks reject a serial engine (qemu-img-serial: at most "
                f"{s['most']} write in flight)")
        s = run.measure("serial -W", serial, m + ["-W"], src, U.img)
        run.say(s["rc"] == 0 and s["same"] and s["most"] == 1,
                f"the checks reject a serial engine with -W (at most {s['most']} write in flight)")
        rc, good, refused, wire = run.into_ascending("serial -m 64", serial, ["-m", "64"],
                                                     osrc, U.img)
        run.say(rc == 0 and good and refused == 0 and wire == 1,
                f"the ascending-only check rejects a serial engine (qemu-img-serial at "
                f"-m 64: {wire} write on the wire at once)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bad = run.results.count(False)
    print(f"concurrency: {len(run.results) - bad} passed, {bad} failed (seed {seed})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
