#!/usr/bin/python3
"""Differential random testing of qemu-img convert.

Each case builds a random source (qemu-io: pattern and random data, zero
writes, unmapping zero writes, discards, compressed clusters; sizes that
are multiples of 512, of the cluster size, of the 2 MiB buffer, or of
nothing), possibly a qcow2 backing chain or several sources to
concatenate, draws a target format and a random option set, and converts
it three times:

    P   the build under test with the drawn options (-m up to its maximum)
    1   the same build with -m 1
    U   the reference (unpatched) build, -m capped at its maximum (16)

P must equal the source (qemu-img compare), 1 and U; its allocation map
(qemu-img map, host offsets dropped) must equal theirs; a qcow2 target
written in order (no -W) must be the same file, byte for byte, as the
-m 1 one (the promise of the in-order patch) wherever qcow2 allocates in
the order the writes are submitted (layout_strict(): chunks on cluster
boundaries in one L2 slice, or compressed with no zero writes).  Some
cases read or write through nbd+unix:// (qemu-nbd or nbdkit).

Target formats (TARGETS): raw and qcow2 take 16 of every 25 cases; qed,
qcow, qcow-c (qcow with -c), vmdk (monolithicSparse), vmdk-stream
(streamOptimized, always -c), vdi, vhdx, vpc (force_size=on) and
parallels one each.  The formats of each block of 25 consecutive cases
are a seeded shuffle of those weights, so a run of 200 cases has each of
the nine 8 times, and the nth case of such a format takes the nth of its
(seeded, rotated) engine option sets: -m 1, -m 8, -m 64, -W -m 8,
-W -m 64 and three drawn ones.  Options a format does not support are
not drawn for it (-B without backing files, -C, compression types);
where the reference build has a bug the series fixes, the reference
conversion says so (reference_fixups()).  --target-formats picks some:
the blocks are then made of those alone.

Case I of seed S is drawn from random.Random("S:I") and, for its target
format and engine options, random.Random("S:targets:B") of its block B
and random.Random("S:engines:T") of its format T (and the formats
--target-formats selects), so `--seed S --case I` replays it exactly; a
failure prints that (with --target-formats if given) and the shell
commands the case ran.
"""

import argparse
import concurrent.futures
import json
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import run, nbd_uri  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
BUF = 2 * MiB          # convert's default copy buffer

# Hook for the iSCSI and NFS servers (built elsewhere): a function
# network_hook(case, role, path, fmt, log) -> (uri, stop) may be set by a
# module named in QCE_NET_HOOK (its attribute `network_hook`) to serve a
# source or target over another protocol.  See docs/testing.md.
NET_HOOK = None
NET_HOOK_KINDS = ()


def load_net_hook():
    global NET_HOOK, NET_HOOK_KINDS
    name = os.environ.get("QCE_NET_HOOK")
    if not name:
        return
    import importlib.util
    spec = importlib.util.spec_from_file_location("qce_net_hook", name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    NET_HOOK = mod.network_hook
    NET_HOOK_KINDS = tuple(getattr(mod, "KINDS", ()))


# ---------------------------------------------------------------- targets

# The target formats (-O), by the names --target-formats takes.
#   fmt       qemu's name of the format
#   weight    cases of each block of consecutive cases (target_plan())
#   create    -o options every target of this kind is created with
#   size_opt  a cluster/block size option and its choices (None: the default)
#   backing   -B may be drawn: the format stores a backing file of the
#             chain's formats (raw, qcow2).  vmdk stores only vmdk backing
#             files ("backing_file must be a vmdk image"); vdi, vhdx, vpc
#             and parallels refuse a backing file ("Backing file not
#             supported for file format")
#   compress  "always" (-c in every case) or absent; qcow2 draws its own
#             (zlib or zstd).  Only qcow2 has compression_type: qcow and
#             vmdk compress with zlib's deflate, no option
# -C (copy offloading) is drawn for raw and qcow2 only: of the formats,
# only they implement copy_range; with any other, convert's first
# copy_range fails and it copies as without -C.
# vpc is created with force_size=on: without it vpc rounds the virtual
# size up to its CHS geometry (1000448 bytes asked, 1009664 made), and
# the target would be larger than its source (in every build alike).
# vdi (1 MiB), vpc (2 MiB), parallels (1 MiB by default) and vhdx (its
# block_size) allocate in blocks far larger than the source's clusters:
# their maps show whole blocks as data where the source has a few sectors
# of it.  The map check compares targets of the same format with each
# other (P, -m 1, reference), never with the source, so that is the same
# in all three and needs no tolerance.
# vhdx has no block status at all: qemu-img map reports every byte as
# data (MAP_FLAT below), so its map check is compared but can find
# nothing; the content checks (source, -m 1, reference) are what hold.
TARGETS = {
    "raw": dict(fmt="raw", weight=6),
    "qcow2": dict(fmt="qcow2", weight=10, backing=True),
    "qed": dict(fmt="qed", weight=1, backing=True,
                size_opt=("cluster_size", [None, None, 4 * KiB, 1 * MiB])),
    "qcow": dict(fmt="qcow", weight=1, backing=True),
    "qcow-c": dict(fmt="qcow", weight=1, backing=True, compress="always"),
    "vmdk": dict(fmt="vmdk", weight=1, create=["subformat=monolithicSparse"]),
    # streamOptimized takes compressed writes only (the driver sets
    # needs_compressed_writes, and convert compresses with or without -c):
    # drawn with -c always, so the command line says what happens
    "vmdk-stream": dict(fmt="vmdk", weight=1, create=["subformat=streamOptimized"],
                        compress="always"),
    "vdi": dict(fmt="vdi", weight=1),
    "vhdx": dict(fmt="vhdx", weight=1,
                 size_opt=("block_size", [None, None, 1 * MiB, 8 * MiB])),
    "vpc": dict(fmt="vpc", weight=1, create=["force_size=on"]),
    "parallels": dict(fmt="parallels", weight=1,
                      size_opt=("cluster_size", [None, None, 4 * KiB, 64 * KiB])),
}
CLASSIC = ("raw", "qcow2")
# formats whose qemu-img map has no zero/data distinction (no block status)
MAP_FLAT = ("vhdx",)

# The engine option sets of the other targets, taken in turn (rotated by
# a seeded offset per format): m None is draw_m(), W None a coin
ENGINES = [(1, False), (8, False), (64, False), (8, True), (64, True),
           (None, False), (None, True), (None, None)]


def target_plan(seed, index, targets):
    """(target name, occurrence) of case `index`: the cases are cut into
    blocks of sum(weight) of the selected targets, each block a seeded
    shuffle of every target `weight` times; occurrence counts the cases of
    that target before this one (from case 0 on)."""
    names = [t for t in TARGETS if t in targets]
    slots = [t for t in names for _ in range(TARGETS[t]["weight"])]
    b, pos = divmod(index, len(slots))
    random.Random(f"{seed}:targets:{b}").shuffle(slots)
    t = slots[pos]
    return t, b * TARGETS[t]["weight"] + slots[:pos].count(t)


def engine_label(o):
    m = o["m"]
    return (f"-m {m}" if m in (1, 8, 64) else "-m other") + (" -W" if o["W"] else "")


def engine_order(label):
    m = label.split()[1]
    return ("-W" in label, int(m) if m.isdigit() else 1 << 30)


# --target-formats, when not the default, for the replay lines
REPLAY_EXTRA = ""


# ---------------------------------------------------------------- drawing

def draw_size(rng, cluster, unaligned_ok, limit=9 * MiB):
    c = rng.random()
    if c < 0.15:
        size = rng.randint(1, 4) * BUF                       # whole buffers
    elif c < 0.35:
        size = rng.randint(1, max(1, limit // cluster)) * cluster
    elif c < 0.45:
        size = rng.choice([512, cluster, BUF, BUF + 512, BUF - 512,
                           2 * BUF + cluster, 3 * BUF - cluster])
    elif c < 0.55 and unaligned_ok:
        return rng.randint(1, limit)                         # any byte count
    else:
        size = rng.randint(1, limit // 512) * 512
    return max(512, min(size, limit))


def draw_ops(rng, size, fmt, cluster):
    """qemu-io commands for an image of `size` bytes."""
    usable = size // 512 * 512
    ops = []
    if usable == 0:
        return ops
    if rng.random() < 0.2:
        ops.append(("data", 0, usable))
    for _ in range(rng.randint(0, 10)):
        g = rng.choice([512, 4 * KiB, 64 * KiB, cluster, BUF])
        if g > usable:
            g = 512
        blocks = usable // g
        first = rng.randrange(blocks)
        n = rng.randint(1, max(1, min(blocks - first, rng.choice([1, 2, 3, 8, 40]))))
        off, ln = first * g, n * g
        kind = rng.choices(["pattern", "data", "zero", "zero-unmap", "discard", "compressed"],
                           [30, 25, 15, 10, 10, 10 if fmt == "qcow2" else 0])[0]
        if kind == "compressed":
            # whole clusters only
            first_c = -(-off // cluster) * cluster
            end_c = (off + ln) // cluster * cluster
            if end_c <= first_c:
                kind = "pattern"
            else:
                off, ln = first_c, end_c - first_c
        ops.append((kind, off, ln) if kind != "pattern" else
                   (kind, off, ln, rng.randint(1, 255)))
    return ops


def draw_image(rng, name, fmt=None, unaligned_ok=True, size=None):
    fmt = fmt or rng.choice(["raw", "qcow2", "qcow2"])
    cluster = rng.choice([512, 4 * KiB, 64 * KiB, 64 * KiB, 1 * MiB, 2 * MiB]) \
        if fmt == "qcow2" else 64 * KiB
    if size is None:
        size = draw_size(rng, cluster, unaligned_ok and fmt == "raw")
    return {"name": name, "fmt": fmt, "cluster": cluster, "size": size,
            "ops": draw_ops(rng, size, fmt, cluster)}


def draw_m(rng, max_m):
    return min(max_m, rng.choice([1, 2, 3, 4, 7, 8, 8, 16, 17, 31, 64, 100, 512,
                                  rng.randint(1, 512)]))


def draw_case(seed, index, max_m, targets=tuple(TARGETS)):
    rng = random.Random(f"{seed}:{index}")
    case = {"seed": seed, "index": index}
    target, occurrence = target_plan(seed, index, targets)
    kind = rng.choices(["single", "chain", "concat"], [60, 22, 18])[0]
    net = "none"
    if kind == "single":
        kinds = ["none", "src-qemu-nbd", "src-nbdkit"]
        weights = [76, 6, 6]
        if target == "raw":
            # an NBD target is written with -O raw (its file raw or
            # qcow2): drawn in raw cases only, more often there, so that
            # their share of all cases stays near what it was
            kinds += ["tgt-qemu-nbd", "tgt-nbdkit"]
            weights += [30, 30]
        for k in NET_HOOK_KINDS:
            if not k.startswith("tgt-") or target == "raw":
                kinds.append(k)
                weights.append(30 if k.startswith("tgt-") else 6)
        net = rng.choices(kinds, weights)[0]
    case["kind"], case["net"] = kind, net

    if kind == "single":
        # nbdkit and the hook's servers export the file as it is: raw
        fmt = "raw" if net == "src-nbdkit" or net in NET_HOOK_KINDS else None
        img = draw_image(rng, "src", fmt, unaligned_ok=(net == "none"))
        case["sources"] = [img]
    elif kind == "chain":
        base = draw_image(rng, "base", unaligned_ok=False)
        layers = [base]
        for name in (["mid", "top"] if rng.random() < 0.5 else ["top"]):
            c = rng.random()
            size = (layers[-1]["size"] if c < 0.4 else
                    draw_size(rng, 64 * KiB, False))
            layers.append(draw_image(rng, name, "qcow2", size=size))
        case["chain"] = layers
        case["sources"] = [layers[-1]]
    else:
        case["sources"] = [draw_image(rng, f"part{i}", unaligned_ok=False,
                                      size=draw_size(rng, 64 * KiB, False, limit=4 * MiB))
                           for i in range(rng.randint(2, 3))]

    spec = TARGETS[target]
    o = {"target": target}
    if net.startswith("tgt-"):
        o["fmt"] = "raw"
        o["target_file_fmt"] = "qcow2" if net == "tgt-qemu-nbd" and rng.random() < 0.5 else "raw"
        o["n"] = rng.choice(["fresh", "fresh-zero", "dirty"])
    else:
        o["fmt"] = spec["fmt"]
        o["target_file_fmt"] = o["fmt"]
    if o["target_file_fmt"] == "qcow2":
        o["cluster"] = rng.choice([None, None, 512, 4 * KiB, 64 * KiB, 1 * MiB, 2 * MiB])
    create = list(spec.get("create", []))
    if spec.get("size_opt"):
        name, choices = spec["size_opt"]
        size_opt = rng.choice(choices)
        if size_opt:
            create.append(f"{name}={size_opt}")
    if create:
        o["create"] = create
    if o["fmt"] == "qcow2" and rng.random() < 0.3:
        o["compress"] = rng.choice(["zlib", "zstd"])
    elif spec.get("compress") == "always":
        o["compress"] = "zlib"        # qcow's and vmdk's only one (deflate)
    o["S"] = rng.choice([None, None, "0", "4k", "64k"])
    if target in CLASSIC:
        o["W"] = rng.random() < 0.5
        o["m"] = draw_m(rng, max_m)
    else:
        # -m 1, 8 and 64 and -W with 8 and 64, in turn (ENGINES)
        rot = random.Random(f"{seed}:engines:{target}").randrange(len(ENGINES))
        m, w = ENGINES[(occurrence + rot) % len(ENGINES)]
        o["m"] = min(max_m, m) if m is not None else draw_m(rng, max_m)
        o["W"] = w if w is not None else rng.random() < 0.5
    if kind == "chain" and spec.get("backing") and not net.startswith("tgt-") \
            and rng.random() < 0.55:
        o["B"] = True
    if "n" not in o and not o.get("B") and rng.random() < 0.25:
        o["n"] = rng.choice(["fresh", "fresh-zero", "dirty"])
    if o["fmt"] == "qcow2" and not o["W"] and (o.get("cluster") or 64 * KiB) >= 64 * KiB \
            and rng.random() < 0.5:
        # in-order qcow2 with chunks on cluster boundaries: the layout
        # check is strict for these (layout_strict())
        align_case(case, o.get("cluster") or 64 * KiB)
    if o.get("compress") and o.get("n") == "dirty":
        # qcow2, qcow and vmdk streamOptimized cannot write compressed
        # clusters over allocated ones (EIO; "Could not write to allocated
        # cluster for streamOptimized"): keep such cases productive.  qcow
        # refuses since the series' patch "qcow: refuse a compressed write
        # over an allocated cluster" (iotest qcow-convert-compressed);
        # 10.2.2 wrote the compressed bytes into the allocated cluster
        # (found here: seed 8, 450 cases of the new formats, 4 corrupt)
        o["n"] = "fresh"
    if not o.get("compress") and o["S"] is None and target in CLASSIC \
            and rng.random() < 0.15:
        o["C"] = True
    case["opts"] = o
    case["data_seed"] = rng.randrange(1 << 30)
    return case


def align_case(case, c):
    """Move every op and image size of the case onto multiples of c."""
    images = case["chain"] if case["kind"] == "chain" else case["sources"]
    for img in images:
        img["size"] = max(c, -(-img["size"] // c) * c)
        ops = []
        for op in img["ops"]:
            off = op[1] // c * c
            end = min(img["size"], -(-(op[1] + op[2]) // c) * c)
            if op[0] == "compressed":
                # whole clusters of the source image too
                cc = max(c, img["cluster"])
                off = -(-op[1] // cc) * cc
                end = (op[1] + op[2]) // cc * cc
            if end > off:
                ops.append((op[0], off, end - off) + tuple(op[3:]))
        img["ops"] = ops
    case["aligned"] = c


def describe(case):
    o = case["opts"]
    src = "+".join(f"{s['fmt']}({s['size']})" for s in case["sources"])
    if case["kind"] == "chain":
        src = "<-".join(f"{s['fmt']}({s['size']})" for s in case["chain"])
    words = [case["kind"], src, "->", o["fmt"]]
    if o.get("target", o["fmt"]) != o["fmt"]:
        words[-1] += f"[{o['target']}]"
    if o.get("target_file_fmt") != o["fmt"]:
        words.append(f"(file {o['target_file_fmt']})")
    if o.get("cluster"):
        words.append(f"cluster_size={o['cluster']}")
    if o.get("create"):
        words.append("-o " + ",".join(o["create"]))
    words.append(f"-m {o['m']}")
    for k, flag in (("W", "-W"), ("C", "-C"), ("B", "-B")):
        if o.get(k):
            words.append(flag)
    if o.get("compress"):
        words.append(f"-c {o['compress']}")
    if o.get("S") is not None:
        words.append(f"-S {o['S']}")
    if o.get("n"):
        words.append(f"-n ({o['n']})")
    if case["net"] != "none":
        words.append(f"[{case['net']}]")
    return " ".join(words)


def zero_for_data_only(mp, mq):
    """True if filtered maps mp and mq (qemu-img map extents: start,
    length, flags) differ only in ranges that mp reports as zero and not
    data and mq as data and not zero, at the same depth: mp is the sparser
    of two maps of equal content."""
    def ranges(m):
        return [(e["start"], e["start"] + e["length"], e) for e in m]
    a, b = ranges(mp), ranges(mq)
    if not a or not b or a[-1][1] != b[-1][1]:
        return False
    cuts = sorted({x for r in a + b for x in r[:2]})
    i = j = 0
    for lo in cuts[:-1]:
        while a[i][1] <= lo:
            i += 1
        while b[j][1] <= lo:
            j += 1
        x, y = a[i][2], b[j][2]
        kx = {k: v for k, v in x.items() if k not in ("start", "length")}
        ky = {k: v for k, v in y.items() if k not in ("start", "length")}
        if kx == ky:
            continue
        if not (x.get("zero") and not x.get("data") and y.get("data")
                and not y.get("zero") and x.get("depth") == y.get("depth")):
            return False
    return True


def layout_strict(case, total):
    """Why in-order mode must lay the qcow2 target out exactly as -m 1
    does, from the drawn case alone: "compressed" or "aligned"; None if the
    draw does not tell (the run may still: Runner.run_case()).

    "compressed": -c, and convert writes no zeroes to the target (no -B,
    and a new target or -n --target-is-zero, so it skips zero ranges; or
    -S 0, which writes them as compressed data).  Every write is then one
    compressed cluster (convert's compressed chunks are one cluster each),
    and qcow2 allocates each, metadata included, in the order the writes
    took their tickets (patch 4), i.e. in submission order.  A zero write
    (-B, or -n without --target-is-zero, where the source reads zeroes)
    makes qcow2 zero clusters: those allocate L2 tables under s->lock when
    submitted, outside the ticket order, possibly before a compressed
    cluster submitted earlier allocates.

    "aligned": every chunk convert makes starts and ends on a cluster of
    the qcow2 target and one L2 slice maps the whole target: then no write
    waits inside qcow2 for another one."""
    o = case["opts"]
    if o.get("compress") and (o["S"] == "0" or not o.get("B") and
                              o.get("n") in (None, "fresh-zero")):
        return "compressed"
    c = o.get("cluster") or 64 * KiB
    if min(c, 4 * KiB) // 8 * c < total:
        return None
    # Chunk boundaries come from the source's extents (ops, image ends,
    # -B's backing end), the 2 MiB buffer, and -S's zero runs inside data
    # (which lie on op boundaries too).
    images = case["chain"] if case["kind"] == "chain" else case["sources"]
    for img in images:
        for op in img["ops"]:
            if op[1] % c or (op[2] % c and op[1] + op[2] < img["size"] // 512 * 512):
                return None
    if case["kind"] == "chain" and any(img["size"] % c for img in images[:-1]):
        return None
    pos = 0
    if case["kind"] == "concat":
        for img in case["sources"][:-1]:
            pos += -(-img["size"] // 512) * 512
            if pos % c:
                return None
    return "aligned"


def reference_fixups(o):
    """The bugs of the reference build (10.2.2) that the case's target
    runs into there, each fixed by a patch of the series, as {what: why}:

    "no-W": the reference conversion runs without -W.  qcow, -c: two
        compressed writes in flight get the same offset and the image is
        corrupt (patch 5); in-order, 10.2.2 has one write in flight.
        qcow2, -W -C: a zero write widened to a whole cluster races with
        a copy-offload write allocating that cluster, which links its
        cluster over the zero entry (patch 1; docs/testing.md, known
        issue 5): the reference's copy differs from its source.  CI seed
        779488248 case 133 (-m 4 -W -C -n, 4 KiB clusters): 9 of 20 runs.
    "abort-W": if the reference conversion aborts on qed's assertion
        `s->allocating_acb == NULL' (a woken allocating write, patch 7;
        reached with -W), it runs again without -W.
    "exit-1": qcow, -c: the reference exits 1 without a message, having
        written the whole image (the zero-length compressed write that ends
        the conversion fails, patch 6): that exit is accepted.

    The reference conversion is made and compared (content and map) in
    every case all the same; the case's line and the coverage count say
    which of these applied (Runner.remarks)."""
    fix = {}
    if o["fmt"] == "qcow" and o.get("compress"):
        if o["W"]:
            fix["no-W"] = "reference without -W (10.2.2: -c -W -O qcow corrupts, patch 5)"
        fix["exit-1"] = "reference exit 1 accepted (10.2.2: -c -O qcow exits 1, patch 6)"
    if o["fmt"] == "qcow2" and o["W"] and o.get("C"):
        fix["no-W"] = ("reference without -W (10.2.2: qcow2 zero write races with an "
                       "allocating -C write, patch 1)")
    if o["fmt"] == "qed" and o["W"]:
        fix["abort-W"] = "reference aborted with -W, rerun without (10.2.2 qed, patch 7)"
    return fix


def written_zeroes(e):
    """A map extent that only a zero write makes: qcow2 zero clusters in
    the target's own layer (convert writes nothing else that reads as
    zeroes without data there)."""
    return e["depth"] == 0 and e["present"] and e["zero"] and not e["data"]


# ---------------------------------------------------------------- running

class CaseFailure(Exception):
    pass


class Runner:
    def __init__(self, case, tools_p, tools_u, workdir):
        self.case = case
        self.P, self.U = tools_p, tools_u
        self.dir = workdir
        self.log = common.Log()
        self.errors = []
        self.servers = []
        self.consistent_failure = None
        self.notes = []
        self.layout_checked = None
        self.checked = set()      # the CATEGORIES this case checked
        self.remarks = []         # reference_fixups() and MAP_FLAT that applied

    def path(self, name):
        return os.path.join(self.dir, name)

    def must(self, argv, what, **kw):
        r = run(self.log, argv, **kw)
        if r.rc != 0 or r.timed_out:
            raise CaseFailure(f"{what}: {r.describe()}")
        return r

    def fail(self, category, text):
        self.errors.append((category, text))

    # --- sources
    def make_data_file(self):
        path = self.path("random.bin")
        code = ("import random,sys; sys.stdout.buffer.write("
                f"random.Random({self.case['data_seed']}).randbytes(100003))")
        # written here rather than by a python3 child (one process less);
        # the log has the equivalent command
        self.log.cmd(["python3", "-c", code], stdout=path)
        with open(path, "wb") as f:
            f.write(random.Random(self.case["data_seed"]).randbytes(100003))
        return path

    def make_image(self, img, backing=None):
        p = self.path(img["name"] + "." + img["fmt"])
        img["path"] = p
        if img["fmt"] == "raw":
            self.must(["truncate", "-s", str(img["size"]), p], "creating " + p)
        else:
            argv = [self.U.img, "create", "-q", "-f", "qcow2",
                    "-o", f"cluster_size={img['cluster']}"]
            if backing:
                argv += ["-b", backing["path"], "-F", backing["fmt"]]
            self.must(argv + [p, str(img["size"])], "creating " + p)
        cmds = []
        for op in img["ops"]:
            kind, off, ln = op[0], op[1], op[2]
            if kind == "pattern":
                cmds.append(f"write -q -P {op[3]} {off} {ln}")
            elif kind == "data":
                cmds.append(f"write -q -s {self.data} {off} {ln}")
            elif kind == "zero":
                cmds.append(f"write -q -z {off} {ln}")
            elif kind == "zero-unmap":
                cmds.append(f"write -q -z -u {off} {ln}")
            elif kind == "discard":
                cmds.append(f"discard -q {off} {ln}")
            elif kind == "compressed":
                cmds.append(f"write -q -c -s {self.data} {off} {ln}")
        if cmds:
            argv = [self.U.io, "-f", img["fmt"]]
            for c in cmds:
                argv += ["-c", c]
            self.must(argv + [p], "writing the layout of " + p)

    def settle(self, images):
        """Give raw sources a stable block status.  A range zeroed with
        fallocate (qemu-io write -z) is an unwritten extent on ext4, which
        SEEK_DATA reports as a hole until something reads it into the page
        cache (readahead of a neighbouring read does), and as data after:
        the first conversion would change what the next one sees (found
        with -C, which copies what block status calls data).  Rewritten by
        cp --sparse=always, the file has only holes and written blocks."""
        for img in images:
            p = img["path"]
            # (qcow2 files too: qcow2 zeroes the rest of a new cluster
            # with fallocate, and its block status asks the file's)
            self.must(["cp", "--sparse=always", p, p + ".tmp"], "settling " + p)
            self.log.cmd(["mv", p + ".tmp", p])
            os.replace(p + ".tmp", p)
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def virtual_size(self, path, fmt):
        r = self.must([self.U.img, "info", "--output=json", "-f", fmt, path], "qemu-img info")
        return json.loads(r.out)["virtual-size"]

    def source_top_map(self):
        """Filtered map of the source (the top of its chain), or of the
        concatenated sources, each shifted to where it lands in the
        target."""
        out, off = [], 0
        for s in self.case["sources"]:
            mp, r = common.filtered_map(self.log, self.U, s["path"], s["fmt"])
            if mp is None:
                self.fail("map", f"qemu-img map of {s['name']}: {r.describe()}")
                return []
            out += [dict(e, start=e["start"] + off) for e in mp]
            off += self.source_size(s)
        return out

    @staticmethod
    def source_size(img):
        # what the block layer sees: the size rounded up to whole sectors
        return -(-img["size"] // 512) * 512

    # --- conversions
    def convert(self, tools, m, tag, W=None):
        """Convert with the case's options, -m m, and -W unless W says
        otherwise (reference_fixups())."""
        case, o = self.case, self.case["opts"]
        tfile = self.path(f"out-{tag}.{o['target_file_fmt']}")
        srcs = [s["path"] for s in case["sources"]]
        sfmt = [s["fmt"] for s in case["sources"]]
        argv = [tools.img, "convert"]
        # source
        if case["net"].startswith("src-"):
            argv += ["-f", "raw"]
            srcs = [self.src_uri]
        # per-source formats: convert takes one -f; give it only if all agree
        if not case["net"].startswith("src-") and len(set(sfmt)) == 1:
            argv += ["-f", sfmt[0]]
        argv += ["-O", o["fmt"], "-m", str(m)]
        if o["W"] if W is None else W:
            argv.append("-W")
        if o.get("C"):
            argv.append("-C")
        if o.get("S") is not None:
            argv += ["-S", o["S"]]
        if o.get("compress"):
            argv.append("-c")
        create_opts = []
        if o.get("cluster"):
            create_opts.append(f"cluster_size={o['cluster']}")
        if o.get("compress") and o["fmt"] == "qcow2":
            create_opts.append(f"compression_type={o['compress']}")
        create_opts += o.get("create", [])
        if o.get("B"):
            back = case["chain"][-2]
            argv += ["-B", back["path"], "-F", back["fmt"]]
        stop = None
        target = tfile
        if o.get("n"):
            self.precreate(tfile, create_opts)
            argv.append("-n")
            if o["n"] == "fresh-zero":
                argv.append("--target-is-zero")
            if case["net"] == "tgt-qemu-nbd":
                sock = self.path(f"tgt-{tag}.sock")
                srv = common.start_qemu_nbd(self.log, self.U, tfile, o["target_file_fmt"], sock)
                target, stop = nbd_uri(sock), srv
            elif case["net"] == "tgt-nbdkit":
                sock = self.path(f"tgt-{tag}.sock")
                srv = common.start_nbdkit(self.log, sock, ["file", f"file={tfile}"])
                target, stop = nbd_uri(sock), srv
            elif case["net"].startswith("tgt-") and NET_HOOK:
                target, stop = NET_HOOK(case, "target", tfile, o["target_file_fmt"], self.log)
        elif create_opts:
            argv += ["-o", ",".join(create_opts)]
        argv += srcs + [target]
        r = run(self.log, argv, timeout=180)
        if stop is not None:
            if callable(stop):
                stop()
            else:
                common.stop_process(stop)
        return tfile, r

    def precreate(self, tfile, create_opts):
        o = self.case["opts"]
        size = self.total
        first = self.path("precreated." + o["target_file_fmt"])
        if not os.path.exists(first):
            self._precreate(first, create_opts)
        self.must(["cp", "--sparse=always", first, tfile], "copying the pre-created target")

    def _precreate(self, tfile, create_opts):
        o = self.case["opts"]
        size = self.total
        argv = [self.U.img, "create", "-q", "-f", o["target_file_fmt"]]
        # (a raw file gets none: create_opts are the qcow2 ones of a qcow2
        # file, or those of the target's own format: vpc's force_size=on,
        # vmdk's subformat, a block size)
        if create_opts:
            argv += ["-o", ",".join(create_opts)]
        self.must(argv + [tfile, str(size)], "pre-creating the target")
        if o["n"] == "dirty":
            # garbage everywhere, partly as zero clusters, that the copy
            # must overwrite
            self.must([self.U.io, "-f", o["target_file_fmt"],
                       "-c", f"write -q -P 238 0 {size}",
                       "-c", f"write -q -z {size // 3 // 512 * 512} {size // 4 // 512 * 512}",
                       tfile], "dirtying the target")

    # --- checks
    def compare(self, a, afmt, b, bfmt, what, category):
        r = run(self.log, [self.U.img, "compare", "-f", afmt, "-F", bfmt, a, b])
        if r.rc != 0:
            self.fail(category, f"{what}: {r.describe()}")

    def run_case(self):
        case, o = self.case, self.case["opts"]
        self.data = self.make_data_file()
        if case["kind"] == "chain":
            prev = None
            for layer in case["chain"]:
                self.make_image(layer, prev)
                prev = layer
        else:
            for s in case["sources"]:
                self.make_image(s)
        self.settle(case["chain"] if case["kind"] == "chain" else case["sources"])
        sizes = [self.source_size(s) for s in case["sources"]]
        self.total = sum(sizes)
        if case["net"] == "src-qemu-nbd":
            s = case["sources"][0]
            sock = self.path("src.sock")
            self.servers.append(common.start_qemu_nbd(self.log, self.U, s["path"], s["fmt"],
                                                      sock, read_only=True))
            self.src_uri = nbd_uri(sock)
        elif case["net"] == "src-nbdkit":
            s = case["sources"][0]
            sock = self.path("src.sock")
            self.servers.append(common.start_nbdkit(self.log, sock,
                                                    ["file", f"file={s['path']}"],
                                                    extra=["--readonly"]))
            self.src_uri = nbd_uri(sock)
        elif case["net"].startswith("src-") and NET_HOOK:
            s = case["sources"][0]
            self.src_uri, stop = NET_HOOK(case, "source", s["path"], s["fmt"], self.log)
            self.servers.append(stop)

        m_u = min(o["m"], self.U.max_m)
        self.log.note(f"the conversion under test ({self.P.name}, -m {o['m']})")
        out_p, rp = self.convert(self.P, o["m"], "P")
        self.log.note("references: -m 1 of the same build, then the reference build")
        out_1, r1 = self.convert(self.P, 1, "m1")
        fix = reference_fixups(o)
        if "no-W" in fix:
            self.log.note(fix["no-W"])
            self.remarks.append(fix["no-W"])
        out_u, ru = self.convert(self.U, m_u, "U", W=False if "no-W" in fix else None)
        if "abort-W" in fix and ru.rc == -signal.SIGABRT and "allocating_acb" in ru.err:
            self.log.note(fix["abort-W"])
            self.remarks.append(fix["abort-W"])
            out_u, ru = self.convert(self.U, m_u, "U", W=False)
        tf = o["target_file_fmt"]
        results = {"P": rp, "-m 1": r1, "unpatched": ru}
        bad = {t: r for t, r in results.items() if r.rc != 0 or r.timed_out}
        if "exit-1" in fix and ru.rc == 1 and not ru.timed_out and not ru.err.strip():
            # (an exit 1 with a message is some other failure, and stays one)
            self.remarks.append(fix["exit-1"])
            del bad["unpatched"]
        self.checked.add("run")
        if bad:
            # An option set that every build refuses the same way (exit 1,
            # same message but for offsets) is consistent, not an engine bug
            def gist(r):
                return (r.rc, r.timed_out, re.sub(r"\d+", "N", r.err.strip()))
            if len(bad) == 3 and len({gist(r) for r in bad.values()}) == 1 \
                    and rp.rc == 1 and not rp.timed_out:
                self.consistent_failure = rp.err.strip().splitlines()[-1]
                return
            for t, r in bad.items():
                self.fail("run", f"convert ({t}) {r.describe()}")
            return

        # 1. content equals the source
        if case["kind"] == "concat":
            off = 0
            for s, size in zip(case["sources"], sizes):
                part = f"driver={s['fmt']},file.filename={s['path']}"
                region = (f"driver=raw,offset={off},size={size},"
                          f"file.driver={tf},file.file.filename={out_p}")
                r = run(self.log, [self.U.img, "compare", "--image-opts", part, region])
                if r.rc != 0:
                    self.fail("source", f"{s['name']} at {off} in P: {r.describe()}")
                off += size
            vs = self.virtual_size(out_p, tf)
            if vs < self.total:
                self.fail("source", f"P is {vs} bytes, the sources {self.total}")
        else:
            s = case["sources"][0]
            self.compare(s["path"], s["fmt"], out_p, tf, "source vs P", "source")
        self.checked.add("source")
        # 2. content equals -m 1 and the reference build; 3. allocation.
        # Identical files need no qemu-img compare (nor map, for qcow2);
        # raw maps are the files' holes (SEEK_DATA/SEEK_HOLE, which is
        # what qemu's file driver reports), so only qcow2 needs qemu-img map
        sums = {t: common.file_sha256(p) for t, p in (("P", out_p), ("m1", out_1), ("U", out_u))}
        maps = {}

        def get_map(tag, path):
            if tag not in maps:
                if tf == "raw":
                    self.log.cmd([self.U.img, "map", "--output=json", "-f", "raw", path])
                    maps[tag] = common.raw_map(path)
                else:
                    mp, r = common.filtered_map(self.log, self.U, path, tf)
                    if mp is None:
                        self.fail("map", f"qemu-img map of {tag}: {r.describe()}")
                    maps[tag] = mp
            return maps[tag]

        if tf in MAP_FLAT:
            # vhdx has no block status: its map is one data extent whatever
            # was written (TARGETS).  It is compared all the same (it must
            # still be equal); the count says how many cases had only
            # content to go by
            self.remarks.append(f"map of {tf} shows no zero/data distinction")
        for tag, path, cat, what in (("m1", out_1, "m1", "-m 1"),
                                     ("U", out_u, "unpatched", "unpatched")):
            same_file = sums["P"] == sums[tag]
            if not same_file:
                self.compare(out_p, tf, path, tf, f"P vs {what}", cat)
            # (an identical file has the same content and map)
            self.checked.update((cat, "map"))
            if tf == "raw" or not same_file:
                mp, mq = get_map("P", out_p), get_map(tag, path)
                if mp is not None and mq is not None and mp != mq:
                    if tf == "qcow2" and o.get("B") and zero_for_data_only(mp, mq):
                        # known issue 8 (docs/testing.md): with a backing
                        # file, whether qcow2 turns a zero write that
                        # covers part of a cluster into a zero cluster or
                        # into written zeroes depends on what else is in
                        # flight on that cluster; 10.2.2 with -W does the
                        # same.  Content is checked strictly above.
                        self.notes.append(f"known map issue: P has zero clusters where "
                                          f"{what} wrote zeroes as data (-B, qcow2)")
                        continue
                    self.fail("map", f"map of P differs from {what}:\n" +
                              common.map_diff(mp, mq))
        # 4. in-order qcow2 layout: the very file -m 1 writes.  It holds
        # where qcow2 allocates in the order the writes are submitted
        # (layout_strict(); docs/testing.md, "known issues"), and is
        # strict there: compressed with no zero writes, or every chunk
        # boundary a target cluster boundary and one L2 slice covering the
        # target.  A compressed case whose options allow zero writes is
        # strict too if the -m 1 target shows that none was made (no zero
        # cluster in its own layer).
        # The tolerance, for every other case: a difference is a note
        # (QCE_STRICT_LAYOUT=1: a failure), because qcow2 may allocate
        # out of submission order there: a chunk that spans L2 slices or
        # shares a cluster with its neighbour allocates in several rounds
        # and drops s->lock in between, and a zero write allocates its L2
        # table outside the ticket order of compressed writes.  Content
        # and map are still checked strictly above.
        # Not through NBD: there the order is the server's.
        if o["fmt"] == "qcow2" and not o["W"]:
            self.log.cmd(["cmp", out_p, out_1])
            why = layout_strict(case, self.total)
            if why is None and o.get("compress"):
                mp = get_map("m1", out_1)
                if mp is not None and not any(written_zeroes(e) for e in mp):
                    why = "compressed"
            self.layout_checked = f"strict {why}" if why else "loose"
            if why:
                self.checked.add("layout")
            if sums["P"] != sums["m1"]:
                if why or os.environ.get("QCE_STRICT_LAYOUT") == "1":
                    self.fail("layout", "in-order qcow2 target differs byte for byte from "
                              "the -m 1 one" + (f" (strict: {why})" if why else ""))
                else:
                    self.notes.append("known layout issue: in-order qcow2 target differs byte "
                                      "for byte from the -m 1 one (chunks not cluster-aligned "
                                      "or spanning L2 slices, or zero writes)")

    def stop_servers(self):
        for s in self.servers:
            if callable(s):
                s()
            else:
                common.stop_process(s)
        self.servers = []


CATEGORIES = [
    ("run", "every conversion exits 0 within its timeout (or every build refuses the options alike)"),
    ("source", "every output equals its source(s) (qemu-img compare)"),
    ("m1", "every output equals the -m 1 output of the same build"),
    ("unpatched", "every output equals the reference (unpatched) build's output"),
    ("map", "every output has the allocation map of the -m 1 and reference outputs"),
    ("layout", "every in-order qcow2 output that qcow2 allocates in submission order (compressed with no "
               "zero writes, or chunks cluster-aligned in one L2 slice) is byte-identical to the -m 1 one"),
]
# A run of this many cases (or more) must exercise every category: one that
# no case checked is a failure there, and a skip in a shorter run
DEFAULT_CASES = 200


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="base seed (default: random, printed)")
    ap.add_argument("--cases", type=int, default=DEFAULT_CASES,
                    help=f"number of cases (default {DEFAULT_CASES})")
    ap.add_argument("--case", type=int, action="append",
                    help="run only case I of the seed (repeatable)")
    ap.add_argument("--first", type=int, default=0, help="first case index")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the case directories")
    ap.add_argument("--list", action="store_true", help="print the drawn cases, run nothing")
    ap.add_argument("--target-formats", default=",".join(TARGETS), metavar="T,T,...",
                    help="the target formats (-O) to draw from, comma-separated; default all: "
                    + ", ".join(f"{t} ({TARGETS[t]['weight']})" for t in TARGETS)
                    + " (weights: cases per block of consecutive cases).  qcow-c is qcow "
                    "with -c, vmdk is monolithicSparse, vmdk-stream streamOptimized (always -c); "
                    "vpc is created with force_size=on.  The draw depends on this list: "
                    "replay a case with the same one")
    args = ap.parse_args()
    targets = [t.strip() for t in args.target_formats.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        ap.error(f"--target-formats: unknown {', '.join(unknown) or '(none given)'}; "
                 f"known: {', '.join(TARGETS)}")
    targets = tuple(t for t in TARGETS if t in targets)
    global REPLAY_EXTRA
    if targets != tuple(TARGETS):
        REPLAY_EXTRA = " --target-formats " + ",".join(targets)

    load_net_hook()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    pdir, udir = common.build_dirs()
    P = common.Tools("patched", pdir, int(os.environ.get("QCE_PATCHED_MAX_M", "512")))
    U = common.Tools("unpatched", udir, int(os.environ.get("QCE_UNPATCHED_MAX_M", "16")))
    indices = args.case or list(range(args.first, args.first + args.cases))
    print(f"differential: seed {seed}, {len(indices)} cases, build under test {P.dir}, "
          f"reference {U.dir}, target formats {','.join(targets)}", flush=True)
    if args.list:
        for i in indices:
            print(f"  case {i}: {describe(draw_case(seed, i, P.max_m, targets))}")
        return 0
    for t in (P, U):
        if t.missing():
            print(f"FAIL - differential: missing {', '.join(t.missing())}; run scripts/build first")
            return 1

    common.install_cleanup()
    root = tempfile.mkdtemp(prefix="qce-diff.")
    if not args.keep:
        common.register_tmp(root)
    failures = []
    stats = {}
    per_target = {t: {"cases": 0, "failed": 0, "engines": {}} for t in targets}
    checked = {cat: 0 for cat, _ in CATEGORIES}
    lock = threading.Lock()
    t0 = time.monotonic()

    def one(i):
        case = draw_case(seed, i, P.max_m, targets)
        wd = os.path.join(root, f"case-{i}")
        os.mkdir(wd)
        r = Runner(case, P, U, wd)
        t = time.monotonic()
        try:
            r.run_case()
        except CaseFailure as e:
            r.fail("run", str(e))
        except Exception as e:  # a harness problem is a failure too
            r.fail("run", f"{type(e).__name__}: {e}")
        finally:
            r.stop_servers()
        secs = time.monotonic() - t
        with lock:
            for key in feature_keys(case):
                stats[key] = stats.get(key, 0) + 1
            if r.layout_checked:
                key = f"layout {r.layout_checked}"
                stats[key] = stats.get(key, 0) + 1
            for cat in r.checked:
                checked[cat] += 1
            pt = per_target[case["opts"]["target"]]
            pt["cases"] += 1
            pt["failed"] += bool(r.errors)
            eng = engine_label(case["opts"])
            pt["engines"][eng] = pt["engines"].get(eng, 0) + 1
            for n in r.remarks:
                stats[n] = stats.get(n, 0) + 1
            status = "ok" if not r.errors else "FAILED"
            if r.consistent_failure and not r.errors:
                status = "ok (every build refuses: " + r.consistent_failure + ")"
                stats["every build refuses"] = stats.get("every build refuses", 0) + 1
            print(f"  case {i} {status} {secs:5.1f}s  {describe(case)}"
                  + "".join(f"; {n}" for n in r.remarks), flush=True)
            for n in r.notes:
                print(f"    note: {n}; replay: tests/differential.sh --seed {seed} --case {i}"
                      + REPLAY_EXTRA)
                key = "known layout issue" if n.startswith("known layout issue") else "note"
                stats[key] = stats.get(key, 0) + 1
            if r.errors:
                failures.append((case, r))
                report(seed, case, r, wd, args.keep)
        if not r.errors and not args.keep:
            shutil.rmtree(wd, ignore_errors=True)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            list(ex.map(one, indices))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    secs = time.monotonic() - t0

    if common.PROFILE:
        print("differential: time per command: " + ", ".join(
            f"{k.strip()} {v:.1f}s" for k, v in sorted(common.PROFILE.items(), key=lambda x: -x[1])))
    print("differential: coverage: " +
          ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    strict = {k[len("layout strict "):]: v for k, v in stats.items()
              if k.startswith("layout strict ")}
    print(f"differential: layout checked strictly in {sum(strict.values())} of "
          f"{sum(strict.values()) + stats.get('layout loose', 0)} in-order qcow2 cases "
          f"({strict.get('compressed', 0)} compressed with no zero writes, "
          f"{strict.get('aligned', 0)} with chunks cluster-aligned in one L2 slice); "
          f"{stats.get('known layout issue', 0)} of the others differed (notes)")
    print("differential: cases that checked each category: " +
          ", ".join(f"{cat} {checked[cat]}" for cat, _ in CATEGORIES))
    print("differential: cases per target format: " + ", ".join(
        f"{t} {v['cases']}" + (f" ({v['failed']} failed)" if v["failed"] else "")
        for t, v in per_target.items()))
    for t, v in per_target.items():
        if t not in CLASSIC and v["cases"]:
            engines = sorted(v["engines"].items(), key=lambda x: engine_order(x[0]))
            print(f"differential:   {t}: " + ", ".join(f"{e} {n}" for e, n in engines))
    full = not args.case and len(indices) >= DEFAULT_CASES
    unchecked = []
    for cat, text in CATEGORIES:
        bad = [(c, r) for c, r in failures if any(e[0] == cat for e in r.errors)]
        if cat == "layout" and "qcow2" not in targets:
            # only qcow2 targets have a layout to check
            print(f"skip - differential ({len(indices)} cases, seed {seed}): {text}: "
                  f"no qcow2 among the target formats")
            continue
        if not bad and not checked[cat]:
            # a check no case made passed nothing
            if full:
                print(f"FAIL - differential ({len(indices)} cases, seed {seed}): no case "
                      f"checked that {text}")
                unchecked.append(cat)
            else:
                print(f"skip - differential ({len(indices)} cases, seed {seed}): {text}: "
                      f"no case of these {len(indices)} checked it (a run of "
                      f"{DEFAULT_CASES} must)")
        elif not bad:
            print(f"ok - differential ({len(indices)} cases, seed {seed}): {text}")
        for c, r in bad:
            first = next(e[1] for e in r.errors if e[0] == cat).splitlines()[0]
            print(f"FAIL - differential case {c['index']} (seed {seed}): {first}")
    print(f"differential: {len(indices)} cases in {secs:.0f} s, "
          f"{len(failures)} failed"
          + (f", and no case checked {len(unchecked)} "
             f"categor{'y' if len(unchecked) == 1 else 'ies'}" if unchecked else "")
          + f"; replay one with: tests/differential.sh --seed {seed} --case I{REPLAY_EXTRA}")
    if args.keep:
        print(f"differential: case directories kept in {root}")
    return 1 if failures or unchecked else 0


def feature_keys(case):
    o = case["opts"]
    keys = [f"kind={case['kind']}", f"O={o.get('target', o['fmt'])}"]
    if case["net"] != "none":
        keys.append(f"net={case['net']}")
    for k in ("W", "C", "B"):
        if o.get(k):
            keys.append(f"-{k}")
    if o.get("compress"):
        keys.append(f"-c {o['compress']}")
    if o.get("n"):
        keys.append(f"-n {o['n']}")
    if o.get("S") is not None:
        keys.append(f"-S {o['S']}")
    m = o["m"]
    keys.append("m=1" if m == 1 else "m<=16" if m <= 16 else "m>16")
    if any(s["size"] % 512 for s in case["sources"]):
        keys.append("size%512!=0")
    return keys


def report(seed, case, r, wd, keep):
    lines = [f"== differential case {case['index']} of seed {seed} FAILED: {describe(case)}"]
    for cat, text in r.errors:
        lines.append(f"   [{cat}] {text}")
    lines.append(f"   replay: tests/differential.sh --seed {seed} --case {case['index']} --keep"
                 + REPLAY_EXTRA)
    lines.append("   or run these commands (the directory was "
                 f"{wd}{'' if keep else ', removed'}):")
    lines.append(f"     mkdir -p {shlex.quote(wd)}")
    lines += ["     " + line for line in r.log.lines]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
