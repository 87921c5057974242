# bench, common: Paths, units, errors, signals and the processes bench starts (stopped
# on every exit), small helpers, the machine description.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time


PROG = "bench"
# the repository: scripts/benchlib/common.py is three levels down
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
sys.path.insert(0, os.path.join(TOP, "scripts"))
import netstorage  # noqa: E402  (S4: nfs-ganesha, tgtd, the delaying proxy)
BUILD = os.environ.get("BUILD_DIR", os.path.join(TOP, "build"))
BENCH = os.path.join(BUILD, "bench")
INPUTS = os.path.join(BENCH, "inputs")
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# ---------------------------------------------------------------------------
# Errors, signals, cleanup

class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def die(msg):
    raise BenchError(msg)


def note(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


class Procs:
    """Every child we start, so that all of them are stopped, always."""

    def __init__(self):
        self.live = {}  # pid -> Popen
        self.stacks = []  # S4 netstorage.Stack objects not closed yet

    def add_stack(self, st):
        self.stacks.append(st)

    def drop_stack(self, st):
        if st in self.stacks:
            self.stacks.remove(st)

    def add(self, p, group=False):
        """group: p leads its own process group (start_new_session=True),
        and is stopped with all of that group."""
        p.bench_group = group
        self.live[p.pid] = p
        return p

    @staticmethod
    def _signal(p, sig):
        try:
            if p.bench_group:
                os.killpg(p.pid, sig)
            else:
                p.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, p, timeout=10):
        """SIGTERM by PID, wait, SIGKILL if needed; reap.  Idempotent."""
        if p.returncode is None:
            self._signal(p, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                p.wait()
        elif p.bench_group:  # the leader is gone; its group may not be
            self._signal(p, signal.SIGKILL)
        self.live.pop(p.pid, None)

    def stop_all(self):
        # A stack first (tgtd wants its targets deleted, not SIGTERM); one
        # is left here only when a signal came before or during its close()
        for st in list(self.stacks):
            try:
                for e in st.close():
                    note(f"S4 servers: {e}")
            except Exception as e:  # keep stopping the rest
                note(f"S4 servers: stopping failed: {e}")
                self.drop_stack(st)
        for p in list(self.live.values()):
            self.stop(p)


PROCS = Procs()


def spawn(cmd, group=False, **kw):
    """Popen + PROCS.add.  A stop signal waits until the child is
    registered: one that cut Popen() after its fork would leave a child
    that stop_all() does not know (the tool would go on copying)."""
    with netstorage.signals_deferred():
        return PROCS.add(subprocess.Popen(cmd, **kw), group)


# ---------------------------------------------------------------------------
# Small helpers

def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", s.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size '{s}' (want e.g. 512M, 2G)")
    return int(m.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": GiB,
                              "T": 1 << 40}[m.group(2).upper()]


def fmt_size(n):
    for unit, v in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= v and n % v == 0:
            return f"{n // v}{unit}"
    return str(n)


def run(cmd, what, **kw):
    """Run a helper command; fail with its output and what to do."""
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        die(f"{what} failed (exit {r.returncode}): {shlex.join(cmd)}\n"
            + r.stdout.rstrip())
    return r.stdout


def first_line(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


# --build ID=DIR: more qemu builds (e.g. build/steps/N of scripts/
# bisect-build --keep), each run with its default options (ID) and with
# -p (ID-p), to measure one patch against the one before it
EXTRA_BUILDS = {}


def qemu_bin(build, name="qemu-img"):
    if build in EXTRA_BUILDS:
        return os.path.join(EXTRA_BUILDS[build], name)
    return os.path.join(BUILD, build, name)




# An idle machine: over IDLE_SAMPLE_S seconds, at most IDLE_MAX_BUSY of all
# CPU time spent outside the idle and iowait states (/proc/stat, all CPUs)
IDLE_SAMPLE_S = 2.0
IDLE_MAX_BUSY = 0.15


def _cpu_times():
    """(busy, total) jiffies of all CPUs since boot (proc(5): the first
    line of /proc/stat; idle and iowait count as not busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def idle_sample(seconds=IDLE_SAMPLE_S):
    """How busy the machine is now: {"cpu_busy": share of all CPU time
    spent busy over @seconds (0..1), "loadavg": (1, 5, 15 min)}.  Taken
    while the bench runs nothing of its own."""
    b0, t0 = _cpu_times()
    time.sleep(seconds)
    b1, t1 = _cpu_times()
    return {"cpu_busy": round((b1 - b0) / max(1, t1 - t0), 3),
            "loadavg": os.getloadavg(), "seconds": seconds}








def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return ""

