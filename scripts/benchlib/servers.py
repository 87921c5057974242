# bench, servers: The servers a run talks to: nbdkit (stats and delay filters, optionally
# in front of qemu-nbd) and the HTTP source (lighttpd behind the delaying
# proxy).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

from benchlib.common import (
    GiB,
    KiB,
    MiB,
    PROCS,
    TOP,
    die,
    log_tail,
    note,
    qemu_bin,
    spawn,
)

# ---------------------------------------------------------------------------
# nbdkit servers

STAT_RE = re.compile(r"^(\w+): (\d+) ops, [\d.]+ s, ([\d.]+) (bytes|KiB|MiB|GiB|TiB|PiB)")
STAT_UNITS = {"bytes": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": 1 << 40,
              "PiB": 1 << 50}
STAT_TYPES = ("read", "extents", "write", "zero", "trim", "flush", "cache")


def parse_stats(path):
    """nbdkit-stats-filter output -> {type: {"ops": n, "bytes": approx}}.

    The filter prints only the operation types that were used, with byte
    counts rounded to 2 decimals of their unit (so bytes are approximate;
    ops are exact)."""
    res = {}
    with open(path) as f:
        for line in f:
            m = STAT_RE.match(line)
            if m and m.group(1) != "total":
                res[m.group(1)] = {"ops": int(m.group(2)),
                                   "bytes": round(float(m.group(3)) * STAT_UNITS[m.group(4)])}
    return res


def proc_cpu_s(pid):
    """User + system CPU seconds a running process has used so far
    (/proc/PID/stat fields 14 and 15, in clock ticks), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """nbdkit on a unix socket, with the stats and delay filters, serving
    `image` with its file plugin, or (qemu_nbd_fmt set) a qemu-nbd of the
    unpatched build that serves `image` in that format, through nbdkit's
    nbd plugin.  threads: nbdkit's -t (None: its default, 16)."""

    def __init__(self, name, scratch, image, delays, readonly, serial,
                 qemu_nbd_fmt=None, threads=None):
        self.sock = os.path.join(scratch, f"{name}.sock")
        self.qemu_nbd = None
        backend = ["file", image]
        if qemu_nbd_fmt:
            qsock = os.path.join(scratch, f"{name}-qemu-nbd.sock")
            if os.path.exists(qsock):
                os.unlink(qsock)
            qlog = os.path.join(scratch, f"{serial}-{name}.qemu-nbd.log")
            # -t: stays for every connection (nbdcopy opens several); -e 0:
            # no limit on them
            self.qemu_nbd_cmd = [qemu_bin("unpatched", "qemu-nbd"), "-t", "-e", "0",
                                 "-f", qemu_nbd_fmt, "-k", qsock] + \
                (["-r"] if readonly else []) + [image]
            with open(qlog, "w") as logf:
                self.qemu_nbd = spawn(self.qemu_nbd_cmd, stdin=subprocess.DEVNULL,
                                      stdout=logf, stderr=logf)
            deadline = time.monotonic() + 15
            while not os.path.exists(qsock):
                if self.qemu_nbd.poll() is not None or time.monotonic() > deadline:
                    PROCS.stop(self.qemu_nbd)
                    die(f"qemu-nbd did not start ({shlex.join(self.qemu_nbd_cmd)}):\n"
                        + log_tail(qlog))
                time.sleep(0.01)
            backend = ["nbd", f"socket={qsock}"]
        if len(self.sock) > 100:
            die(f"socket path too long for a unix socket: {self.sock}; pass a "
                "shorter --scratch DIR")
        self.stats = os.path.join(scratch, f"{serial}-{name}.stats")
        self.log = os.path.join(scratch, f"{serial}-{name}.nbdkit.log")
        pidfile = os.path.join(scratch, f"{name}.pid")
        for p in (self.sock, self.stats, pidfile):
            if os.path.exists(p):
                os.unlink(p)
        self.cmd = ["nbdkit", "-f", "--exit-with-parent", "-U", self.sock,
                    "-P", pidfile] + (["-r"] if readonly else []) + \
                   (["-t", str(threads)] if threads else []) + \
                   ["--filter=stats", "--filter=delay"] + backend + \
                   [f"statsfile={self.stats}"] + \
                   [f"delay-{k}={v}ms" for k, v in sorted(delays.items()) if v]
        with open(self.log, "w") as logf:
            self.proc = spawn(self.cmd, stdin=subprocess.DEVNULL, stdout=logf,
                              stderr=logf)
        self.uri = f"nbd+unix:///?socket={self.sock}"
        deadline = time.monotonic() + 15
        while not os.path.exists(pidfile):  # written once it accepts connections
            if self.proc.poll() is not None or time.monotonic() > deadline:
                PROCS.stop(self.proc)
                with open(self.log) as f:
                    msg = f.read().strip()
                die(f"nbdkit did not start ({shlex.join(self.cmd)}):\n{msg}\n"
                    "check that nbdkit with its file plugin and the stats and "
                    "delay filters is installed (scripts/install-deps)")
            time.sleep(0.01)

    def stop(self):
        """Stop by PID; the stats filter writes its file at exit.  The
        qemu-nbd's CPU time (user + system, s) is kept in qemu_nbd_cpu."""
        PROCS.stop(self.proc)
        self.qemu_nbd_cpu = None
        if self.qemu_nbd:
            self.qemu_nbd_cpu = proc_cpu_s(self.qemu_nbd.pid)
            PROCS.stop(self.qemu_nbd)
        try:
            return parse_stats(self.stats)
        except OSError:
            note(f"no stats file from nbdkit ({self.stats}); see {self.log}")
            return None


class HttpSource:
    """lighttpd serving the directory of `image` on 127.0.0.2 (loopback,
    a free port), and the delaying proxy of scripts/netstorage.py on
    127.0.0.1 with the same port in front of it.  url: the image through
    the proxy."""

    def __init__(self, scratch, image, delay_ms, serial):
        with socket.socket() as so:
            so.bind(("127.0.0.2", 0))
            port = so.getsockname()[1]
        d = os.path.join(scratch, f"{serial}-http")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "lighttpd.conf")
        with open(conf, "w") as f:
            f.write(f'server.document-root = "{os.path.dirname(image)}"\n'
                    f'server.bind = "127.0.0.2"\nserver.port = {port}\n'
                    f'server.errorlog = "{d}/error.log"\n'
                    'mimetype.assign = ( "" => "application/octet-stream" )\n')
        self.log = os.path.join(d, "servers.log")
        self.stats = os.path.join(d, "proxy-stats.json")
        ready = os.path.join(d, "proxy.ready")
        self.cmds = [["lighttpd", "-D", "-f", conf],
                     [sys.executable, os.path.join(TOP, "scripts", "netstorage.py"),
                      "proxy", "--listen", "127.0.0.1", "--upstream", "127.0.0.2",
                      "--ports", str(port), "--delay-ms", str(delay_ms),
                      "--stats", self.stats, "--ready", ready]]
        self.procs = []
        with open(self.log, "w") as logf:
            for c in self.cmds:
                self.procs.append(spawn(c, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=logf))
        self.url = f"http://127.0.0.1:{port}/{os.path.basename(image)}"
        deadline = time.monotonic() + 15
        while not (os.path.exists(ready) and self._answers("127.0.0.2", port)):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.stop()
                die("lighttpd or the proxy did not start: " + log_tail(self.log) +
                    "\n(scripts/install-deps installs lighttpd)")
            time.sleep(0.05)

    @staticmethod
    def _answers(host, port):
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        """Stop both; the proxy writes its statistics at SIGTERM."""
        for p in reversed(self.procs):
            PROCS.stop(p)
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


