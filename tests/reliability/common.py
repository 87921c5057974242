"""Shared helpers of the reliability tests (differential.py, faults.py).

Standard library only.  Every command a case runs is recorded as a shell
line, so that a failure can print exactly what to type to replay it.
"""

import atexit
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dirs():
    """The tool directories under test, from the environment.

    QCE_BUILD (default: $BUILD_DIR or the repository's build/) holds
    patched/ and unpatched/; QCE_PATCHED and QCE_UNPATCHED point at one
    directory each (with qemu-img, qemu-io and qemu-nbd in it).
    """
    build = os.environ.get("QCE_BUILD") or os.environ.get("BUILD_DIR") or \
        os.path.join(TOP, "build")
    patched = os.environ.get("QCE_PATCHED") or os.path.join(build, "patched")
    unpatched = os.environ.get("QCE_UNPATCHED") or os.path.join(build, "unpatched")
    return os.path.abspath(patched), os.path.abspath(unpatched)


class Tools:
    """qemu-img, qemu-io and qemu-nbd of one build directory."""

    def __init__(self, name, directory, max_m):
        self.name = name
        self.dir = directory
        self.img = os.path.join(directory, "qemu-img")
        self.io = os.path.join(directory, "qemu-io")
        self.nbd = os.path.join(directory, "qemu-nbd")
        self.max_m = max_m

    def missing(self):
        return [p for p in (self.img, self.io, self.nbd) if not os.access(p, os.X_OK)]


# QCE_PROFILE=1: time spent per command, printed at the end
PROFILE = {} if os.environ.get("QCE_PROFILE") else None
_profile_lock = __import__("threading").Lock()

# Every process started in the background, so that none outlives the run.
_children = {}


def _kill_children():
    for pid, proc in list(_children.items()):
        stop_process(proc)


# Scratch directories to remove if the run is interrupted
_tmp_roots = []


def register_tmp(path):
    _tmp_roots.append(path)


def _on_signal(signum, _frame):
    _kill_children()
    import shutil
    for p in _tmp_roots:
        shutil.rmtree(p, ignore_errors=True)
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: interrupted by signal {signum}\n")
    os._exit(130)


def install_cleanup():
    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def stop_process(proc, sig=signal.SIGTERM, wait=5):
    """Stop a background process by its PID: sig, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    _children.pop(proc.pid, None)
    return proc.returncode


def _exec_retry(fn):
    """Run fn() (which starts a process), retrying for a while if the
    binary is missing or being rewritten (the lead may rebuild)."""
    for attempt in range(60):
        try:
            return fn()
        except OSError as e:
            # ENOENT: not there (yet); ETXTBSY: being written; ENOEXEC: half written
            if e.errno not in (2, 8, 26) or attempt == 59:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


class Log:
    """The commands of one case, as shell lines, and what they printed."""

    def __init__(self):
        self.lines = []

    def cmd(self, argv, stdout=None, background=False):
        line = shlex.join(argv)
        if stdout:
            line += " > " + shlex.quote(stdout)
        if background:
            line += " &"
        self.lines.append(line)

    def note(self, text):
        self.lines.append("# " + text)


class Result:
    def __init__(self, argv, rc, out, err, timed_out, secs):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err
        self.timed_out = timed_out
        self.secs = secs

    def describe(self):
        what = "timed out" if self.timed_out else (
            f"killed by signal {-self.rc}" if self.rc < 0 else f"exit {self.rc}")
        text = (self.err + self.out).strip()
        return what + (": " + text[-600:] if text else "")


def run(log, argv, timeout=120, cwd=None, stdout_file=None, env=None):
    """Run argv to completion with a hard timeout; record it in log."""
    log.cmd(argv, stdout=stdout_file)
    t0 = time.monotonic()
    out_f = open(stdout_file, "wb") if stdout_file else subprocess.PIPE

    def start():
        return subprocess.Popen(argv, stdout=out_f, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                start_new_session=True)
    try:
        proc = _exec_retry(start)
    finally:
        if stdout_file:
            out_f.close()
    _children[proc.pid] = proc
    r = finish(proc, argv, timeout, t0)
    if PROFILE is not None:
        key = os.path.basename(argv[0]) + " " + (argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "")
        with _profile_lock:
            PROFILE[key] = PROFILE.get(key, 0.0) + r.secs
    return r


def finish(proc, argv, timeout, t0=None):
    """Wait for a started process (killing its group after @timeout s)
    and return its Result; @t0 is when it started (default: now)."""
    if t0 is None:
        t0 = time.monotonic()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    _children.pop(proc.pid, None)
    return Result(argv, proc.returncode,
                  (out or b"").decode(errors="replace"),
                  (err or b"").decode(errors="replace"),
                  timed_out, time.monotonic() - t0)


def start_background(log, argv, cwd=None, stderr_file=None):
    log.cmd(argv, background=True)
    err = open(stderr_file, "wb") if stderr_file else subprocess.DEVNULL

    def start():
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=cwd,
                                start_new_session=True)
    try:
        proc = _exec_retry(start)
    finally:
        if stderr_file:
            err.close()
    _children[proc.pid] = proc
    return proc


def wait_socket(path, proc, timeout=30):
    """Wait until a server listens on unix socket path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return True
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    return False


def nbd_uri(sock):
    return f"nbd+unix:///?socket={sock}"


def start_qemu_nbd(log, tools, path, fmt, sock, read_only=False, extra=()):
    argv = [tools.nbd, "-t", "-e", "8", "-k", sock, "-f", fmt, "--cache=writeback"]
    if read_only:
        argv.append("--read-only")
    argv += list(extra) + [path]
    proc = start_background(log, argv)
    if not wait_socket(sock, proc):
        stop_process(proc)
        raise RuntimeError("qemu-nbd did not start: " + shlex.join(argv))
    return proc


def start_nbdkit(log, sock, plugin_args, filters=(), extra=(), stderr_file=None):
    argv = ["nbdkit", "-f", "-U", sock]
    for f in filters:
        argv += ["--filter=" + f]
    argv += list(extra) + list(plugin_args)
    proc = start_background(log, argv, stderr_file=stderr_file)
    if not wait_socket(sock, proc):
        stop_process(proc)
        raise RuntimeError("nbdkit did not start: " + shlex.join(argv))
    return proc


_NBDKIT_REQUEST = re.compile(
    r"connection=(\d+) (\w+) id=(\d+) offset=0x([0-9a-f]+) count=0x([0-9a-f]+)")
_NBDKIT_REPLY = re.compile(r"connection=(\d+) \.\.\.(\w+) id=(\d+)(?: .*?return=(-?\d+))?")


def nbdkit_log(path):
    """The requests in the file of nbdkit's log filter (nbdkit-log-filter(1):
    one line when a request arrives, one when its reply leaves), in the
    order nbdkit logged them: ("start", type, key, offset, count, None)
    and ("end", type, key, None, None, ret), type as nbdkit names it
    ("Read", "Write", "Zero", "Trim", "Extents", ...), key (connection,
    id) pairing the two, ret the reply's return value.  A missing file
    gives [].  nbdkit's worker threads may log requests out of wire
    order."""
    events = []
    try:
        f = open(path, errors="replace")
    except FileNotFoundError:
        return events
    with f:
        for line in f:
            m = _NBDKIT_REQUEST.search(line)
            if m:
                events.append(("start", m.group(2), (m.group(1), m.group(3)),
                               int(m.group(4), 16), int(m.group(5), 16), None))
                continue
            m = _NBDKIT_REPLY.search(line)
            if m:
                ret = int(m.group(4)) if m.group(4) is not None else None
                events.append(("end", m.group(2), (m.group(1), m.group(3)), None, None, ret))
    return events


def filtered_map(log, tools, path, fmt, extra=()):
    """qemu-img map --output=json without host offsets, neighbours merged."""
    argv = [tools.img, "map", "--output=json"] + list(extra)
    if fmt:
        argv += ["-f", fmt]
    argv.append(path)
    r = run(log, argv)
    if r.rc != 0:
        return None, r
    merged = []
    for e in json.loads(r.out):
        e.pop("offset", None)
        key = {k: v for k, v in e.items() if k not in ("start", "length")}
        if merged and merged[-1][1] == key and \
                merged[-1][0]["start"] + merged[-1][0]["length"] == e["start"]:
            merged[-1][0]["length"] += e["length"]
        else:
            merged.append(({"start": e["start"], "length": e["length"]}, key))
    return [dict(a, **k) for a, k in merged], r


def raw_data_extents(path):
    """(offset, length) of the data (non-hole) extents of a file."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:          # ENXIO: no data after pos
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h - d))
            pos = h
    finally:
        os.close(fd)
    return out, size


def raw_map(path):
    """The filtered map qemu-img map gives a raw file: data extents and
    zero (hole) extents, in 512-byte sectors rounded as the block layer
    does."""
    data, size = raw_data_extents(path)
    end = -(-size // 512) * 512
    out, pos = [], 0
    for d, ln in data:
        if d > pos:
            out.append({"start": pos, "length": d - pos, "zero": True, "data": False})
        out.append({"start": d, "length": min(d + ln, end) - d, "zero": False, "data": True})
        pos = min(d + ln, end)
    if pos < end:
        out.append({"start": pos, "length": end - pos, "zero": True, "data": False})
    return out


def _map_entry(mp, off):
    """The extent of filtered map @mp that holds byte @off, or None."""
    for e in mp:
        if e["start"] <= off < e["start"] + e["length"]:
            return e
    return None


def map_diff(a, b, limit=6):
    """Short text naming the first extents where two filtered maps differ."""
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            out.append(f"    extent {i}: {json.dumps(x)}  vs  {json.dumps(y)}")
            if len(out) >= limit:
                break
    return "\n".join(out)


def file_sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha256(paths):
    return {p: file_sha256(p) for p in paths}
