# bench, catalog: What is compared: the tools (builds and options), the scenarios, the
# input layouts and their sizes.  A new workload is one Scenario here (and,
# for a new input, a layout in inputs.py).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import shlex

from benchlib.common import (
    GiB,
    KiB,
    MiB,
)

# ---------------------------------------------------------------------------
# What is compared.  One line per tool variant; `default=False` variants run
# only when named with --tools.  `inflight` is the number of writes the tool
# keeps in flight, used only for the latency-limit column; None derives it
# from the arguments (unpatched in-order: 1 write in flight; patched
# in-order and -W: -m of them, default 8, and for the whole series at most
# the 16 chunks its copy buffers hold; nbdcopy: connections x requests).

class Tool:
    def __init__(self, id, build, args="", label=None, default=True,
                 inflight=None, env=None):
        self.id, self.build, self.args = id, build, shlex.split(args)
        self.label = label or (build + (" " + args if args else " (default)"))
        self.default, self._inflight = default, inflight
        self.env = env or {}   # run as `env K=V ... tool`

    def is_qemu(self):
        return not self.is_nbdcopy()

    def is_nbdcopy(self):
        return self.build in NBDCOPY_BUILDS

    def inflight(self):
        if self._inflight is not None:
            return self._inflight
        a = self.args
        if self.is_qemu():
            # Unpatched in-order mode: one write in flight.  The series
            # ('start in-order writes before ...') starts in-order writes before the previous one
            # completes, so there it is -m writes, as with -W.
            if "-W" not in a and self.build == "unpatched":
                return 1
            m = int(a[a.index("-m") + 1]) if "-m" in a else 8
            if self.build == "patched":
                # The whole series ('keep copy buffers within what 16
                # chunks take', 'default to 64 coroutines, with the copy
                # buffers of 8'): large chunks in flight are bounded by
                # the copy buffers, min(-m, 16) chunks, 8 without -m
                return min(m, 16)
            return m
        conns = int(_opt(a, ("-C", "--connections"), 4))
        reqs = int(_opt(a, ("-R", "--requests"), 64))
        return conns * reqs


def _opt(args, names, default):
    for i, x in enumerate(args):
        for n in names:
            if x == n and i + 1 < len(args):
                return args[i + 1]
            if x.startswith(n + "="):
                return x.split("=", 1)[1]
    return default


MALLOC_KEPT = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
TOOLS = [
    Tool("unpatched", "unpatched"),
    Tool("unpatched-tuned", "unpatched", "-m 16 -W"),
    Tool("patched", "patched"),
    Tool("patched-tuned", "patched", "-m 16 -W"),
    Tool("nbdcopy", "nbdcopy", label="nbdcopy 1.14 (default)"),
    # libnbd 1.22.2 (Debian 13's), built by scripts/build-nbdcopy
    Tool("nbdcopy-1.22", "nbdcopy-1.22", label="nbdcopy 1.22 (default)"),
    Tool("patched-m64", "patched", "-m 64 -W", default=False),
    # in-order and -W at large -m: compressed targets (qcow2's allocation
    # turns, patch 4) are where the two modes could differ
    Tool("patched-m64-in-order", "patched", "-m 64", default=False),
    Tool("patched-m512-in-order", "patched", "-m 512", default=False),
    Tool("patched-m512-W", "patched", "-m 512 -W", default=False),
    Tool("patched-m1", "patched", "-m 1", default=False),
    Tool("patched-m8", "patched", "-m 8", default=False),
    Tool("patched-m16", "patched", "-m 16", default=False),
    Tool("patched-m32", "patched", "-m 32", default=False),
    Tool("unpatched-m16", "unpatched", "-m 16", default=False),
    Tool("unpatched-W", "unpatched", "-W", default=False),
    Tool("patched-W", "patched", "-W", default=False),
    Tool("patched-p", "patched", "-p", default=False),
    # glibc's malloc gives large freed buffers back to the kernel (trim,
    # or munmap above the mmap threshold): a tool that allocates one
    # buffer per request (libnfs 4 per READ reply) page-faults on every
    # one.  These keep them: same binary, no heap trim below 256 MiB.
    Tool("unpatched-malloc", "unpatched", label="unpatched (default), malloc kept",
         default=False, env={"GLIBC_TUNABLES": MALLOC_KEPT}),
    Tool("patched-malloc", "patched", label="patched (default), malloc kept",
         default=False, env={"GLIBC_TUNABLES": MALLOC_KEPT}),
]
TOOL_BY_ID = {t.id: t for t in TOOLS}
REF_TOOL, NBDCOPY = "unpatched", "nbdcopy"
# The nbdcopy builds: Debian 12's /usr/bin/nbdcopy (libnbd 1.14.2), and
# libnbd 1.22.2's (upstream/libnbd.conf), which check_binaries() has
# scripts/build-nbdcopy fetch, verify and build (cached)
NBDCOPY_BUILDS = ("nbdcopy", "nbdcopy-1.22")
NBDCOPY_BIN = {"nbdcopy": "nbdcopy"}


# ---------------------------------------------------------------------------
# Scenarios.  delays are milliseconds per request type, applied by
# nbdkit-delay-filter on both servers (the source sees only reads and block
# status, the target only writes, zeroes, trims and flushes).

class Scenario:
    def __init__(self, id, group, title, kind, input, delays=None,
                 out_fmt="raw", out_opts="", quick=False, net=None,
                 src_server="nbdkit", on_disk=False, proxy_ms=None,
                 threads=None):
        self.id, self.group, self.title, self.kind = id, group, title, kind
        # kind "nbd": nbdkit's thread count on both servers (-t; None: its
        # default, 16); the engine's speed must not hang on it
        self.threads = threads
        # kind "nbd": who serves the source: "nbdkit" (its file plugin) or
        # "qemu-nbd" (the unpatched build's, behind nbdkit's nbd plugin
        # for the same delay and stats filters); the target is nbdkit's
        self.src_server = src_server
        # kind "local": the target on the disk the inputs are on
        # (build/bench), not on the tmpfs scratch (O_DIRECT needs it)
        self.on_disk = on_disk
        # kind "http": the delaying proxy's delay per direction, in ms
        self.proxy_ms = proxy_ms
        self.input, self.delays = input, delays or {}
        self.out_fmt, self.out_opts = out_fmt, shlex.split(out_opts)
        self.quick = quick
        # kind "net" (S4): (source, target, proxy delay per direction in
        # ms or None for no proxy); source nfs|local, target iscsi|local
        self.net = net

    def rw_delay(self):
        return self.delays.get("write", 0)


def _rw(ms):
    return {"read": ms, "write": ms, "zero": ms, "trim": ms}


def _all(ms, extents):
    return dict(_rw(ms), extents=extents)


SCENARIOS = [
    Scenario("s1-0ms", "S1", "dense NBD -> NBD, no delay", "nbd", "dense", _rw(0)),
    Scenario("s1-2ms", "S1", "dense NBD -> NBD, 2 ms on reads and writes",
             "nbd", "dense", _rw(2), quick=True),
    Scenario("s1-10ms", "S1", "dense NBD -> NBD, 10 ms on reads and writes",
             "nbd", "dense", _rw(10)),
    Scenario("s1-10ms-t64", "S1", "dense NBD -> NBD, 10 ms on reads and writes, "
             "nbdkit -t 64", "nbd", "dense", _rw(10), threads=64),
    Scenario("s2-frag", "S2", "fragmented NBD -> NBD, 1 ms on every request "
             "incl. block status", "nbd", "frag", _all(1, 1), quick=True),
    Scenario("s2-frag-bsfree", "S2", "fragmented NBD -> NBD, 1 ms on every "
             "request, block status free", "nbd", "frag", _all(1, 0)),
    Scenario("s2-heavy", "S2", "heavily fragmented NBD -> NBD, 1 ms on every "
             "request incl. block status", "nbd", "heavy", _all(1, 1)),
    Scenario("s2-heavy-bsfree", "S2", "heavily fragmented NBD -> NBD, 1 ms on "
             "every request, block status free", "nbd", "heavy", _all(1, 0)),
    Scenario("s2-heavy-t64", "S2", "heavily fragmented NBD -> NBD, 1 ms on every "
             "request incl. block status, nbdkit -t 64", "nbd", "heavy", _all(1, 1),
             threads=64),
    # a large, mostly empty disk: what the block status walk costs where
    # the source is one long hole (queries per GiB, not per extent)
    Scenario("s2-sparse", "S2", "large sparse NBD -> NBD, 1 ms on every request "
             "incl. block status", "nbd", "sparse", _all(1, 1)),
    # the server users run: a qcow2 exported by qemu-nbd (the L2 tables
    # are walked to answer block status)
    Scenario("s2-frag-qemu-nbd", "S2", "fragmented qcow2 served by qemu-nbd -> "
             "NBD, 1 ms on every request incl. block status", "nbd", "frag-qcow2",
             _all(1, 1), quick=True, src_server="qemu-nbd"),
    # a real file system image: metadata, many small and some large extents
    Scenario("s2-fs", "S2", "ext4 image NBD -> NBD, 1 ms on every request "
             "incl. block status", "nbd", "fs", _all(1, 1)),
    Scenario("s2-fs-qemu-nbd", "S2", "ext4 image as qcow2 served by qemu-nbd -> "
             "NBD, 1 ms on every request incl. block status", "nbd", "fs-qcow2",
             _all(1, 1), src_server="qemu-nbd"),
    # the 2021 objection to status replies with many extents: qemu-nbd
    # walks the L2 tables of the whole requested range; its CPU time is
    # recorded (a large qcow2 whose every cluster is allocated)
    Scenario("s2-alloc-qemu-nbd", "S2", "64 GiB qcow2, every cluster allocated "
             "(preallocation=metadata), served by qemu-nbd -> NBD, 1 ms on every "
             "request incl. block status", "nbd", "alloc-qcow2", _all(1, 1),
             src_server="qemu-nbd"),
    Scenario("s3-qcow2", "S3", "local raw -> qcow2", "local", "dense",
             out_fmt="qcow2", quick=True),
    Scenario("s3-raw", "S3", "local raw -> raw", "local", "dense"),
    Scenario("s3-zlib", "S3", "local raw -> compressed qcow2 (zlib)", "local",
             "dense", out_fmt="qcow2", out_opts="-c", quick=True),
    Scenario("s3-zstd", "S3", "local raw -> compressed qcow2 (zstd)", "local",
             "dense", out_fmt="qcow2", out_opts="-c -o compression_type=zstd"),
    Scenario("s3-from-qcow2", "S3", "local qcow2 -> raw", "local", "qcow2"),
    Scenario("s3-direct", "S3", "local raw -> raw on the machine's disk, O_DIRECT "
             "(-t none -T none)", "local", "dense", out_opts="-t none -T none",
             on_disk=True),
]
# S4: the seed's own table, through QEMU's nfs:// and iscsi:// drivers and
# real servers (scripts/netstorage.py).  "2ms" = 2 ms round trip: the proxy
# delays every byte by 1 ms each way.
S4_ONE_WAY_MS = 1
for _src, _dst in (("nfs", "iscsi"), ("nfs", "local"), ("local", "iscsi")):
    for _d in (None, S4_ONE_WAY_MS):
        SCENARIOS.append(Scenario(
            f"s4-{_src}-{_dst}-{2 * _d if _d else 0}ms", "S4",
            f"{_src} -> {_dst}, " + (f"{2 * _d} ms round trip (proxy, {_d} ms each way)"
                                     if _d else "no added latency (no proxy)"),
            "net", "dense", net=(_src, _dst, _d)))
# S5: an HTTP source through QEMU's curl driver (lighttpd on a loopback
# address, the delaying proxy of S4 in front: 1 ms each way), copied to a
# local file; nbdcopy reads it through nbdkit's curl plugin
SCENARIOS.append(Scenario("s5-http-2ms", "S5", "http -> local file, 2 ms round trip "
                          "(lighttpd, proxy 1 ms each way)", "http", "dense",
                          proxy_ms=S4_ONE_WAY_MS, quick=True))
SC_BY_ID = {s.id: s for s in SCENARIOS}


def set_s4_rtt(rtt):
    """Give the S4 proxy scenarios another round trip (--s4-rtt)."""
    for s in SCENARIOS:
        if s.net and s.net[2]:
            src, dst, _ = s.net
            s.net = (src, dst, rtt / 2)
            s.id = f"s4-{src}-{dst}-{rtt:g}ms"
            s.title = f"{src} -> {dst}, {rtt:g} ms round trip (proxy, {rtt / 2:g} ms each way)"
    SC_BY_ID.clear()
    SC_BY_ID.update({s.id: s for s in SCENARIOS})

# Input layouts: (data bytes per period, period); None = dense.
LAYOUTS = {
    "dense": None,
    "frag": (64 * KiB, 1 * MiB),
    "heavy": (4 * KiB, 64 * KiB),
    "sparse": (64 * KiB, 1 * GiB),
}
INPUT_DESC = {
    "dense": "random data, fully allocated",
    "frag": "64 KiB of random data at the start of every 1 MiB, holes between",
    "heavy": "4 KiB of random data at the start of every 64 KiB, holes between",
    "sparse": "64 KiB of random data at the start of every GiB, holes between",
    "qcow2": "the dense image converted to qcow2 (64 KiB clusters) by the unpatched qemu-img",
    "frag-qcow2": "the fragmented image converted to qcow2 (64 KiB clusters) by the "
                  "unpatched qemu-img",
    "fs": "an ext4 file system that mke2fs -d made from this machine's "
          "/usr/share/doc (real files: metadata, small and large extents)",
    "fs-qcow2": "the ext4 image converted to qcow2 (64 KiB clusters) by the unpatched "
                "qemu-img",
    "alloc-qcow2": "a qcow2 (64 KiB clusters) whose every cluster is allocated: "
                   "qemu-img create -o preallocation=metadata (reads as zeroes)",
}
# qcow2 inputs and the raw layout each is converted from
QCOW2_OF = {"qcow2": "dense", "frag-qcow2": "frag", "fs-qcow2": "fs",
            "alloc-qcow2": "alloc"}
# the "fs" input: a file system image of a directory every Debian has
FS_SOURCE_DIR = "/usr/share/doc"
DEFAULT_SIZES = {"dense": 256 * MiB, "frag": 256 * MiB, "heavy": 64 * MiB,
                 "sparse": 16 * GiB, "fs": 512 * MiB, "alloc": 64 * GiB}
QUICK_SIZES = {"dense": 16 * MiB, "frag": 16 * MiB, "heavy": 2 * MiB,
               "sparse": 64 * MiB, "fs": 512 * MiB, "alloc": 1 * GiB}
INPUT_VERSION = "v1"  # bump when the generator changes


