# bench, inputs: The input images, made deterministically from the seed (and cached).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import shutil

from benchlib.common import (
    INPUTS,
    KiB,
    MiB,
    TOP,
    die,
    fmt_size,
    note,
    qemu_bin,
    run,
)
from benchlib.catalog import (
    FS_SOURCE_DIR,
    INPUT_VERSION,
    LAYOUTS,
    QCOW2_OF,
)

# ---------------------------------------------------------------------------
# Inputs, deterministic from the seed

def make_inputs(layouts_needed, sizes, seed):
    """Create (or reuse) the input images; returns {name: (path, fmt)}."""
    os.makedirs(INPUTS, exist_ok=True)
    out = {}
    for name in ("dense", "frag", "heavy", "sparse"):
        if name not in layouts_needed and not any(
                QCOW2_OF[q] == name for q in layouts_needed if q in QCOW2_OF):
            continue
        size = sizes[name]
        path = os.path.join(INPUTS, f"{name}-{fmt_size(size)}-seed{seed}-{INPUT_VERSION}.raw")
        if not os.path.exists(path):
            note(f"creating {os.path.relpath(path, TOP)} (seed {seed})")
            _need_space(INPUTS, {"dense": size, "sparse": size >> 14}.get(name, size // 8),
                        "--size")
            rng = random.Random(f"{seed}:{name}")
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.truncate(size)
                lay = LAYOUTS[name]
                if lay is None:
                    for off in range(0, size, MiB):
                        f.write(rng.randbytes(min(MiB, size - off)))
                else:
                    data, period = lay
                    for off in range(0, size, period):
                        f.seek(off)
                        f.write(rng.randbytes(data))
            os.rename(tmp, path)
        out[name] = (path, "raw")
    if "fs" in layouts_needed or "fs-qcow2" in layouts_needed:
        size = sizes["fs"]
        path = os.path.join(INPUTS, f"fs-{fmt_size(size)}-{INPUT_VERSION}.raw")
        if not os.path.exists(path):
            note(f"creating {os.path.relpath(path, TOP)} (mke2fs -d {FS_SOURCE_DIR})")
            _need_space(INPUTS, size, "--size")
            tmp = path + ".tmp"
            if os.path.exists(tmp):
                os.unlink(tmp)
            run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", FS_SOURCE_DIR, tmp,
                 f"{size // KiB}k"],
                f"creating the file system input (does {FS_SOURCE_DIR} fit in "
                f"{fmt_size(size)}?)")
            os.rename(tmp, path)
        out["fs"] = (path, "raw")
    if "alloc-qcow2" in layouts_needed:
        size = sizes["alloc"]
        # what a copy must equal: zeroes (a sparse file, no space used)
        raw = os.path.join(INPUTS, f"alloc-{fmt_size(size)}-{INPUT_VERSION}.raw")
        if not os.path.exists(raw):
            with open(raw, "wb") as f:
                f.truncate(size)
        out["alloc"] = (raw, "raw")
        path = raw[:-4] + ".qcow2"
        if not os.path.exists(path):
            note(f"creating {os.path.relpath(path, TOP)} (preallocation=metadata)")
            _need_space(INPUTS, size >> 13, "--size")
            run([qemu_bin("unpatched"), "create", "-q", "-f", "qcow2", "-o",
                 "preallocation=metadata", path + ".tmp", str(size)],
                "creating the allocated qcow2 input")
            os.rename(path + ".tmp", path)
        out["alloc-qcow2"] = (path, "qcow2")
    for q, base in QCOW2_OF.items():
        if q not in layouts_needed or q == "alloc-qcow2":
            continue
        raw = out[base][0]
        path = raw[:-4] + ".qcow2"
        if not os.path.exists(path):
            note(f"creating {os.path.relpath(path, TOP)}")
            run([qemu_bin("unpatched"), "convert", "-f", "raw", "-O", "qcow2",
                 raw, path + ".tmp"], "creating the qcow2 input")
            os.rename(path + ".tmp", path)
        out[q] = (path, "qcow2")
    return out


def reference_raw(inputs, name):
    """The raw image whose content a copy of input `name` must equal."""
    return inputs[QCOW2_OF.get(name, name)][0]


def warm(path):
    """Read a file once so that the first timed run does not pay for disk."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def _need_space(d, nbytes, option):
    free = shutil.disk_usage(d).free
    if free < nbytes + 256 * MiB:
        die(f"not enough space in {d}: {free // MiB} MiB free, need about "
            f"{(nbytes + 256 * MiB) // MiB} MiB; pass a smaller {option} or "
            "another --scratch DIR")


