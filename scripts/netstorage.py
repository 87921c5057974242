#!/usr/bin/python3
# netstorage: real NFS and iSCSI servers for scripts/bench (scenario S4) and
# tests/netstorage.sh, started here, inside network namespaces, and always
# stopped again.  Also the delaying TCP proxy that stands for the network
# latency (the kernel here has no netem).
#
#   import netstorage                       # from scripts/bench and tests
#   with netstorage.Stack(workdir, export_dir, lun_file, delay_ms=1) as st:
#       st.client_cmd(["qemu-img", "convert", ..., st.nfs_url("src.raw"),
#                      st.iscsi_url()])
#
#   scripts/netstorage.py check             # can S4 run here? (why not)
#   scripts/netstorage.py proxy ...         # the proxy (run by Stack)
#   scripts/netstorage.py cleanup           # remove what a killed run left
#
# Layout (see docs/benchmarks.md, "S4"):
#
#   netns qconv-PID-c (client)          netns qconv-PID-s (server)
#   qemu-img                            rpcbind, ganesha.nfsd (VFS), tgtd
#   [proxy on 127.0.0.1:111,2049,       all on 10.213.0.2 (and their own lo)
#    20048,3260 -> 10.213.0.2]
#         10.213.0.1  ==== veth ====  10.213.0.2
#
# Python 3 standard library only.
# SPDX-License-Identifier: GPL-2.0-or-later

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import queue

NS_PREFIX = "qconv"
CLIENT_ADDR, SERVER_ADDR = "10.213.0.1", "10.213.0.2"
IQN = "iqn.2026-11.org.example.qemu-convert-engine:s4"
EXPORT = "/s4"                      # NFS pseudo path of the export
PORTS = {"portmapper": 111, "nfs": 2049, "mount": 20048, "iscsi": 3260}
PACKAGES = {"tgtd": "tgt", "tgtadm": "tgt", "ganesha.nfsd": "nfs-ganesha",
            "rpcbind": "rpcbind", "rpcinfo": "rpcbind", "ip": "iproute2",
            "nsenter": "util-linux", "unshare": "util-linux",
            "setpriv": "util-linux"}
HERE = os.path.realpath(__file__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class NetStorageError(Exception):
    pass


def _run(cmd, what, timeout=30):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        raise NetStorageError(f"{what} failed (exit {r.returncode}): "
                              f"{' '.join(cmd)}\n{r.stdout.rstrip()}")
    return r.stdout


def _vfs_fsal():
    return glob.glob("/usr/lib/*/ganesha/libfsalvfs.so") + \
        glob.glob("/usr/lib*/ganesha/libfsalvfs.so")


_UNAVAILABLE = None


def unavailable():
    """None if S4 can run here, else why not (one line, with what to do)."""
    global _UNAVAILABLE
    if _UNAVAILABLE is not None:
        return _UNAVAILABLE or None
    why = ""
    missing = sorted({pkg for prog, pkg in PACKAGES.items() if not shutil.which(prog)})
    if os.geteuid() != 0:
        why = "needs root (network namespaces, nfs-ganesha, tgtd)"
    elif missing:
        why = (f"missing package(s) {', '.join(missing)}; run scripts/install-deps "
               "as root")
    elif not _vfs_fsal():
        why = "nfs-ganesha's VFS backend is missing; install nfs-ganesha-vfs " \
              "(scripts/install-deps)"
    else:
        probe = f"{NS_PREFIX}-{os.getpid()}-probe"
        r = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            why = f"cannot create a network namespace ({r.stdout.strip()})"
        else:
            r = subprocess.run(["ip", "-n", probe, "link", "add", "qcv0", "type",
                                "veth", "peer", "name", "qcv1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            subprocess.run(["ip", "netns", "del", probe], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if r.returncode != 0:
                why = f"cannot create a veth pair ({r.stdout.strip()})"
    _UNAVAILABLE = why
    return why or None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def our_namespaces():
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines()
            if re.match(rf"{NS_PREFIX}-\d+-(s|c|probe)\b", ln)]


def cleanup_stale(all_=False):
    """Delete the namespaces of runs whose process is gone (killed -9)."""
    gone = []
    for ns in our_namespaces():
        pid = int(ns.split("-")[1])
        if all_ or not _pid_alive(pid):
            # Processes still inside (a SIGKILLed run's servers die with
            # their parent through PDEATHSIG; this is the fallback).
            pids = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            gone.append(ns)
    return gone


GANESHA_CONF = """\
# Written by scripts/netstorage.py; one read-only or read-write VFS export.
NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {nfs};
    MNT_Port = {mount};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    mount_path_pseudo = true;
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = "{workdir}/ganesha-recovery";
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = "{export_dir}";
    Pseudo = "{pseudo}";
    Access_Type = {access};
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


class Stack:
    """Network namespaces, rpcbind + nfs-ganesha, tgtd, optionally the proxy.

    workdir     logs, config, the proxy statistics (not under /run)
    export_dir  exported over NFSv3 as nfs://HOST/s4/ (None: no NFS server)
    lun_file    backing file of LUN 1 of IQN (None: no iSCSI target)
    delay_ms    None: qemu-img talks to the servers directly over the veth;
                a number: through the proxy, which delays every chunk of
                data by that many ms in each direction (RTT = 2 x delay_ms)
    procs       optional registry with add(popen, group) / stop(popen) (the
                bench's), so that its Ctrl-C handling sees these too
    tgtd_iothreads  tgtd's -t (its backing-store I/O threads per LUN);
                None: tgtd's default
    """

    def __init__(self, workdir, export_dir=None, lun_file=None, delay_ms=None,
                 procs=None, readonly_export=True, tag=None, tgtd_iothreads=None):
        self.workdir = os.path.realpath(workdir)
        if self.workdir == "/run" or self.workdir.startswith(("/run/", "/var/run/")):
            raise NetStorageError(f"workdir {workdir} is under /run, which the "
                                  "server namespace replaces by its own tmpfs")
        self.export_dir = export_dir and os.path.realpath(export_dir)
        self.lun_file = lun_file and os.path.realpath(lun_file)
        self.delay_ms, self.procs = delay_ms, procs
        self.readonly_export = readonly_export
        self.tgtd_iothreads = tgtd_iothreads
        tag = tag or str(os.getpid())
        self.ns_s, self.ns_c = f"{NS_PREFIX}-{tag}-s", f"{NS_PREFIX}-{tag}-c"
        self.started = []     # (name, Popen), in start order
        self.commands = []    # what was run, for the record
        self.holder = None
        self.have_ns = False
        self.proxy_stats = None
        self.stats_file = os.path.join(self.workdir, "proxy-stats.json")
        self.errors = []
        # Registered before anything starts: if a signal cuts close() (or
        # the caller before it has the object), the registry closes it.
        if procs is not None and hasattr(procs, "add_stack"):
            procs.add_stack(self)

    # -- processes ---------------------------------------------------------

    def _spawn(self, name, cmd, log):
        """Start a server: its own session (no terminal signals), killed by
        the kernel if we die (PDEATHSIG through setpriv, kept across the
        execs of ip/nsenter, which do not fork).  A stop signal waits until
        the server is recorded: one that cut Popen() between the fork and
        its return would leave a child that close() does not know."""
        full = ["setpriv", "--pdeathsig", "KILL", "--"] + cmd
        self.commands.append(" ".join(cmd))
        with open(log, "w") as logf, signals_deferred():
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            p.ns_name, p.ns_log = name, log
            if self.procs is not None:
                self.procs.add(p)
            self.started.append((name, p))
        return p

    def _in_server(self, cmd):
        """Run in the server namespaces (network + the mount namespace with
        the private /run that rpcbind, ganesha and tgtd share)."""
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-m", "--"] + cmd

    def _wait(self, what, ok, proc, log, timeout=20):
        deadline = time.monotonic() + timeout
        while not ok():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = ""
                try:
                    with open(log, errors="replace") as f:
                        tail = "".join(f.readlines()[-15:]).rstrip()
                except OSError:
                    pass
                state = (f"exited {proc.returncode}" if proc.returncode is not None
                         else f"not ready after {timeout} s")
                raise NetStorageError(f"{what} {state}; log {log}:\n{tail}")
            time.sleep(0.02)

    def _stop(self, p, sig=signal.SIGTERM, timeout=5):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if self.procs is not None:
            self.procs.stop(p)

    # -- setup -------------------------------------------------------------

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _start(self):
        why = unavailable()
        if why:
            raise NetStorageError(f"S4 cannot run here: {why}")
        os.makedirs(self.workdir, exist_ok=True)
        cleanup_stale()
        for ns in (self.ns_s, self.ns_c):
            if ns in our_namespaces():
                _run(["ip", "netns", "del", ns], "removing an old namespace")
            self.have_ns = True   # before: a signal may come in between
            _run(["ip", "netns", "add", ns], "creating a network namespace")
            self.commands.append(f"ip netns add {ns}")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"], "bringing up lo")
        _run(["ip", "link", "add", "qcv0", "netns", self.ns_c, "type", "veth",
              "peer", "name", "qcv1", "netns", self.ns_s], "creating the veth pair")
        for ns, dev, addr in ((self.ns_c, "qcv0", CLIENT_ADDR),
                              (self.ns_s, "qcv1", SERVER_ADDR)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev], "address")
            _run(["ip", "-n", ns, "link", "set", dev, "up"], "link up")
        self.commands.append(f"ip link add qcv0 netns {self.ns_c} type veth peer "
                             f"name qcv1 netns {self.ns_s}  # {CLIENT_ADDR} - {SERVER_ADDR}")
        # The holder keeps a mount namespace with a private /run: rpcbind's
        # socket and lock (/run/rpcbind.sock), tgtd's control socket
        # (/run/tgtd) and ganesha's pid file must not meet the host's.
        log = os.path.join(self.workdir, "holder.log")
        self.holder = self._spawn("holder", [
            "ip", "netns", "exec", self.ns_s, "unshare", "--mount",
            "--propagation", "private", "--", "sh", "-c",
            "mount -t tmpfs -o mode=0755 tmpfs /run && touch /run/.qconv-ready "
            "&& exec sleep infinity"], log)
        self._wait("the namespace holder", lambda: os.path.exists(
            f"/proc/{self.holder.pid}/root/run/.qconv-ready") and
            _readlink(f"/proc/{self.holder.pid}/ns/mnt") !=
            _readlink("/proc/self/ns/mnt"), self.holder, log)
        if self.export_dir:
            self._start_nfs()
        if self.lun_file:
            self._start_iscsi()
        if self.delay_ms is not None:
            self._start_proxy()

    def _start_nfs(self):
        log = os.path.join(self.workdir, "rpcbind.log")
        # rpcbind switches to user _rpc, which clears its PDEATHSIG: it runs
        # in a PID namespace whose init (a shell, which keeps PDEATHSIG from
        # unshare --kill-child) takes it along when it dies.  unshare blocks
        # SIGTERM while it waits: stop it with SIGKILL.
        rpcb = self._spawn("rpcbind", self._in_server(
            ["unshare", "--pid", "--fork", "--kill-child=KILL", "--", "sh", "-c",
             "rpcbind -f & wait"]), log)
        self._wait("rpcbind", lambda: subprocess.run(
            self._in_server(["rpcinfo", "-T", "tcp", "127.0.0.1", "100000", "2"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0,
            rpcb, log)
        conf = os.path.join(self.workdir, "ganesha.conf")
        os.makedirs(os.path.join(self.workdir, "ganesha-recovery"), exist_ok=True)
        with open(conf, "w") as f:
            f.write(GANESHA_CONF.format(
                nfs=PORTS["nfs"], mount=PORTS["mount"], workdir=self.workdir,
                export_dir=self.export_dir, pseudo=EXPORT,
                access="RO" if self.readonly_export else "RW"))
        log = os.path.join(self.workdir, "ganesha.log")
        gan = self._spawn("ganesha.nfsd", self._in_server(
            ["ganesha.nfsd", "-F", "-L", log, "-f", conf, "-p", "/run/ganesha.pid",
             "-N", "NIV_EVENT"]), os.path.join(self.workdir, "ganesha.out"))

        def nfs_ready():
            try:
                with open(log, errors="replace") as f:
                    if "NFS SERVER INITIALIZED" not in f.read():
                        return False
            except OSError:
                return False
            return subprocess.run(self._in_server(
                ["rpcinfo", "-T", "tcp", "127.0.0.1", "100005", "3"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        self._wait("ganesha.nfsd", nfs_ready, gan, log)

    def _tgtadm(self, *args, check=True):
        cmd = self._in_server(["tgtadm", "--lld", "iscsi"] + list(args))
        if check:
            self.commands.append("tgtadm --lld iscsi " + " ".join(args))
            return _run(cmd, "tgtadm")
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode

    def _start_iscsi(self):
        log = os.path.join(self.workdir, "tgtd.log")
        tgtd = self._spawn("tgtd", self._in_server(
            ["tgtd", "-f", "--iscsi", f"portal=0.0.0.0:{PORTS['iscsi']}",
             *(["-t", str(self.tgtd_iothreads)] if self.tgtd_iothreads else [])]), log)
        self._wait("tgtd", lambda: self._tgtadm("--op", "show", "--mode", "sys",
                                                check=False) == 0, tgtd, log)
        self._tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        self._tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1",
                     "--lun", "1", "-b", self.lun_file)
        self._tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")

    def _start_proxy(self):
        log = os.path.join(self.workdir, "proxy.log")
        ready = os.path.join(self.workdir, "proxy.ready")
        for p in (ready, self.stats_file):
            if os.path.exists(p):
                os.unlink(p)
        ports = [PORTS["iscsi"]] if self.lun_file else []
        if self.export_dir:
            ports += [PORTS["portmapper"], PORTS["nfs"], PORTS["mount"]]
        proxy = self._spawn("proxy", [
            "ip", "netns", "exec", self.ns_c, sys.executable or "/usr/bin/python3",
            HERE, "proxy", "--listen", "127.0.0.1", "--upstream", SERVER_ADDR,
            "--ports", ",".join(map(str, sorted(ports))),
            "--delay-ms", f"{self.delay_ms:g}", "--stats", self.stats_file,
            "--ready", ready], log)
        self._wait("the delaying proxy", lambda: os.path.exists(ready), proxy, log)

    # -- what the client uses -----------------------------------------------

    @property
    def host(self):
        return "127.0.0.1" if self.delay_ms is not None else SERVER_ADDR

    def nfs_url(self, name):
        return f"nfs://{self.host}{EXPORT}/{name}"

    def iscsi_url(self, lun=1):
        return f"iscsi://{self.host}/{IQN}/{lun}"

    def client_cmd(self, cmd):
        """cmd run in the client namespace (ip netns exec does not fork, so
        the PID, rusage and exit status are the command's own)."""
        return ["ip", "netns", "exec", self.ns_c] + list(cmd)

    # -- teardown -----------------------------------------------------------

    def close(self):
        """Stop everything we started, in reverse order; remove the
        namespaces.  Idempotent; safe after a failed start.  SIGINT,
        SIGTERM and SIGHUP wait until it is done (a second Ctrl-C must not
        leave tgtd half torn down).  If a signal already due raises before
        the block, close() raises before _close() and the caller's
        registry (procs) closes the stack again."""
        with _stop_signals_blocked():
            return self._close()

    def _close(self):
        errors = []
        watched = set()   # every process in our namespaces: gone at the end
        if self.have_ns:
            watched = set(_ns_pids(self.ns_c)) | set(_ns_pids(self.ns_s))
            # The client first: a tool still running here was interrupted
            # (Ctrl-C during a copy); it must not see its servers go away.
            ours = {p.pid for _, p in self.started}
            for pid in _ns_pids(self.ns_c):
                if pid not in ours:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for name, p in reversed(self.started):
            try:
                if name == "proxy":
                    self._stop(p)   # SIGTERM: it writes its statistics
                    self.proxy_stats = _read_json(self.stats_file)
                elif name == "tgtd":
                    # tgtd ignores SIGTERM while targets exist: delete the
                    # target (with its LUN and sessions), then the system.
                    if p.poll() is None:
                        self._tgtadm("--op", "delete", "--mode", "target", "--tid",
                                     "1", "--force", check=False)
                        self._tgtadm("--op", "delete", "--mode", "system", check=False)
                        try:
                            p.wait(5)
                        except subprocess.TimeoutExpired:
                            errors.append("tgtd did not stop after tgtadm --op delete "
                                          "--mode system; killed")
                    self._stop(p, signal.SIGKILL)
                elif name in ("holder", "rpcbind"):
                    self._stop(p, signal.SIGKILL)
                else:
                    self._stop(p, timeout=3)
            except Exception as e:  # keep stopping the others
                errors.append(f"stopping {name}: {e}")
        self.started = []
        if self.have_ns:
            for ns in (self.ns_c, self.ns_s):
                for pid in _ns_pids(ns):
                    # rpcbind's PID namespace dies after unshare, not with
                    # it: wait for it before calling anything left behind
                    if pid in watched and not _wait_gone({pid}, 2):
                        continue
                    errors.append(f"process {pid} left in {ns}; killed")
                    watched.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            # SIGKILL is not synchronous: nothing of ours may still run when
            # close() returns (the caller checks, a new run may start)
            for pid in sorted(_wait_gone(watched, 10)):
                errors.append(f"process {pid} still exits 10 s after SIGKILL")
            for ns in (self.ns_c, self.ns_s):
                subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            self.have_ns = False
        self.errors = errors
        if self.procs is not None and hasattr(self.procs, "drop_stack"):
            self.procs.drop_stack(self)
        return errors


@contextlib.contextmanager
def _stop_signals_blocked():
    """SIGINT, SIGTERM and SIGHUP stay pending inside the block (the signal
    mask: a child started inside would inherit it).  pthread_sigmask()
    runs a handler already due after changing the mask: read the mask
    first (no change), then block, so that the finally restores it
    whichever call raised."""
    old = None
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def signals_deferred():
    """SIGINT, SIGTERM and SIGHUP that come inside the block are handled
    at its end, by the handler in place before it.  The handlers change,
    not the signal mask (a server started inside with SIGTERM blocked
    would not stop); they are swapped with the signals blocked, so that
    none lands between two swaps.  Main thread only (the signal module's
    rule); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got, old = [], {}

    def record(signum, _frame):
        got.append(signum)
    with _stop_signals_blocked():
        for sig in STOP_SIGNALS:
            h = signal.getsignal(sig)
            if callable(h) or h == signal.SIG_DFL:
                old[sig] = signal.signal(sig, record)
    try:
        yield
    finally:
        with _stop_signals_blocked():
            for sig, h in old.items():
                signal.signal(sig, h)
        if got:
            signal.raise_signal(got[0])


def _running(pid, among):
    """pid still runs: it exists and is not a zombie, or it is the zombie
    of one of `among` (its parent, about to reap it).  The zombie of an
    orphan (whose parent died first) holds no socket, file or namespace;
    it waits for an init that may never reap it (or late: a test that
    looks right after we exit sees it).  So a zombie child of ours is
    reaped here, not left to init."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
    if state == "Z" and int(ppid) == os.getpid():
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return state != "Z" or int(ppid) in among


def _wait_gone(pids, timeout):
    """Wait until none of pids runs; returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if _running(p, pids)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _ns_pids(ns):
    out = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def _readlink(p):
    try:
        return os.readlink(p)
    except OSError:
        return None


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# The delaying proxy.
#
# Every chunk read from one side is written to the other side `delay` after
# it was read, in order; reading goes on meanwhile.  So a stream of
# pipelined requests keeps its pipelining and every byte arrives `delay`
# late: a request and its reply cost one round trip of 2 x delay, however
# many are in flight, which is what a link with that latency does.  (A
# per-request delay in the server, as nbdkit's delay filter does, is the
# same for the client when the server handles requests in parallel.)
# Bandwidth is not limited; the buffer per direction is bounded (back
# pressure through TCP once 64 chunks wait).
#
# It also reads the protocol framing, to count what a stats filter would:
# ONC RPC calls by program and procedure (portmapper, MOUNT, NFSv3), and
# iSCSI PDUs by opcode with SCSI commands by CDB opcode and R2Ts.

NFS3_PROCS = ["NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ",
              "WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR",
              "RENAME", "LINK", "READDIR", "READDIRPLUS", "FSSTAT", "FSINFO",
              "PATHCONF", "COMMIT"]
RPC_PROGS = {100000: "portmap", 100003: "nfs", 100005: "mount"}
RPC_PROCS = {100000: {0: "NULL", 3: "GETPORT", 4: "DUMP"},
             100005: {0: "NULL", 1: "MNT", 2: "DUMP", 3: "UMNT", 4: "UMNTALL",
                      5: "EXPORT"},
             100003: dict(enumerate(NFS3_PROCS))}
ISCSI_OPS = {0x00: "nop-out", 0x01: "scsi-cmd", 0x02: "task-mgmt", 0x03: "login",
             0x04: "text", 0x05: "data-out", 0x06: "logout", 0x10: "snack",
             0x20: "nop-in", 0x21: "scsi-rsp", 0x22: "task-mgmt-rsp",
             0x23: "login-rsp", 0x24: "text-rsp", 0x25: "data-in",
             0x26: "logout-rsp", 0x31: "r2t", 0x32: "async", 0x3f: "reject"}
SCSI_OPS = {0x28: "read", 0x88: "read", 0xa8: "read", 0x2a: "write", 0x8a: "write",
            0xaa: "write", 0x35: "sync", 0x91: "sync", 0x42: "unmap",
            0x41: "write-same", 0x93: "write-same", 0x9e: "service-action-in",
            0x25: "read-capacity", 0x12: "inquiry", 0x00: "test-unit-ready",
            0xa0: "report-luns", 0x1a: "mode-sense", 0x5a: "mode-sense",
            0x34: "prefetch", 0x90: "prefetch"}


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


class Framer:
    """Walks one direction of a byte stream message by message; `want(n,
    cb)` asks for the next n bytes, cb(bytes) returns (skip, n, cb)."""

    def __init__(self, start):
        self.skip, (self.need, self.cb) = 0, start
        self.buf = bytearray()
        self.dead = False

    def feed(self, data):
        i, n = 0, len(data)
        try:
            while i < n and not self.dead:
                if self.skip:
                    k = min(self.skip, n - i)
                    self.skip -= k
                    i += k
                    continue
                k = min(self.need - len(self.buf), n - i)
                self.buf += data[i:i + k]
                i += k
                if len(self.buf) == self.need:
                    self.skip, self.need, self.cb = self.cb(bytes(self.buf))
                    self.buf = bytearray()
        except Exception:
            self.dead = True


def rpc_framer(counter, calls):
    """ONC RPC over TCP (record marking, RFC 5531)."""
    state = {"first": True}

    def mark(b):
        (m,) = struct.unpack(">I", b)
        length, last = m & 0x7fffffff, bool(m & 0x80000000)
        first = state["first"]
        state["first"] = last
        if first and length >= 24 and calls:
            return 0, 24, lambda h: body(h, length)
        if first:
            counter.add("rpc replies")
        return length, 4, mark

    def body(h, length):
        xid, mtype, vers, prog, pvers, proc = struct.unpack(">6I", h)
        if mtype == 0:
            name = RPC_PROGS.get(prog, str(prog))
            pname = RPC_PROCS.get(prog, {}).get(proc, str(proc)) \
                if prog != 100003 or pvers == 3 else str(proc)
            counter.add(f"{name} {pname}")
        return length - 24, 4, mark
    return (4, mark)


def iscsi_framer(counter, digests):
    """iSCSI PDUs (RFC 7143): 48-byte BHS, AHS, data segment padded to 4,
    and the digests negotiated at login (seen in the target's login reply)."""

    def bhs(h):
        op = h[0] & 0x3f
        ahs = h[4] * 4
        dsl = int.from_bytes(h[5:8], "big")
        data = (dsl + 3) & ~3
        name = ISCSI_OPS.get(op, f"op-{op:#x}")
        counter.add(f"iscsi {name}")
        hd, dd = (0, 0) if op in (0x03, 0x23) else digests
        rest = ahs + hd + data + (dd if dsl else 0)
        if op == 0x01:
            cdb = SCSI_OPS.get(h[32], f"cdb-{h[32]:#x}")
            counter.add(f"scsi {cdb}")
            counter.add(f"scsi {cdb} bytes", int.from_bytes(h[20:24], "big"))
        if op == 0x23 and dsl:
            return 0, ahs + data, lambda d: login_data(d, rest)
        return rest, 48, bhs

    def login_data(d, rest):
        text = bytes(d)
        if b"HeaderDigest=CRC32C" in text:
            digests[0] = 4
        if b"DataDigest=CRC32C" in text:
            digests[1] = 4
        return 0, 48, bhs
    return (48, bhs)


class Pipe:
    """One direction: a reader thread and a writer thread."""

    def __init__(self, src, dst, delay, counter, framer, tag, done):
        self.src, self.dst, self.delay = src, dst, delay
        self.counter, self.framer, self.tag, self.done = counter, framer, tag, done
        self.q = queue.Queue(maxsize=64)
        # timer overshoot of the chunks that waited for their time (the
        # proxy's own error); chunks that were already due when taken from
        # the queue waited behind earlier ones (the receiver was slower)
        self.over_sum, self.over_n, self.late = 0.0, 0, 0
        threading.Thread(target=self.rx, daemon=True).start()
        threading.Thread(target=self.tx, daemon=True).start()

    def rx(self):
        try:
            while True:
                data = self.src.recv(1 << 18)
                t = time.monotonic()
                if not data:
                    break
                self.counter.add(f"{self.tag} bytes", len(data))
                self.counter.add(f"{self.tag} chunks")
                if self.framer:
                    self.framer.feed(data)
                self.q.put((t + self.delay, data))
        except OSError:
            pass
        self.q.put((time.monotonic() + self.delay, None))

    def tx(self):
        try:
            while True:
                due, data = self.q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                    self.over_sum += time.monotonic() - due
                    self.over_n += 1
                else:
                    self.late += 1
                if data is None:
                    self.dst.shutdown(socket.SHUT_WR)
                    break
                self.dst.sendall(data)
        except OSError:
            for s in (self.src, self.dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.counter.add(f"{self.tag} overshoot sum us", int(self.over_sum * 1e6))
        self.counter.add(f"{self.tag} overshoot n", self.over_n)
        self.counter.add(f"{self.tag} chunks already due", self.late)
        self.done()


def proxy_main(args):
    import argparse
    p = argparse.ArgumentParser(prog="netstorage.py proxy")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--upstream", required=True)
    p.add_argument("--ports", required=True, help="comma-separated; same port upstream")
    p.add_argument("--delay-ms", type=float, default=0, help="per direction")
    p.add_argument("--stats", required=True)
    p.add_argument("--ready")
    a = p.parse_args(args)
    delay = a.delay_ms / 1000
    counters = {}
    conns = Counter()

    active = Counter()

    def write_stats(*_):
        # connections the tool just closed: let their EOF (due `delay`
        # later) through, so that their timer statistics are in
        deadline = time.monotonic() + delay + 1
        while active.snapshot().get("pipes", 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        out = {"delay_ms_per_direction": a.delay_ms,
               "connections": conns.snapshot(),
               "ports": {str(k): v.snapshot() for k, v in counters.items()}}
        with open(a.stats + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.rename(a.stats + ".tmp", a.stats)
        os._exit(0)
    signal.signal(signal.SIGTERM, write_stats)
    signal.signal(signal.SIGINT, write_stats)

    def serve(lsock, port):
        counter = counters[port]
        while True:
            c, _ = lsock.accept()
            try:
                u = socket.create_connection((a.upstream, port), timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                conns.add(f"{port} upstream refused")
                continue
            conns.add(str(port))
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if port == PORTS["iscsi"]:
                dig = [0, 0]
                f_up, f_down = Framer(iscsi_framer(counter, dig)), \
                    Framer(iscsi_framer(counter, dig))
            else:
                f_up, f_down = Framer(rpc_framer(counter, True)), \
                    Framer(rpc_framer(counter, False))
            left = [2]
            lk = threading.Lock()
            active.add("pipes", 2)

            def done(c=c, u=u, left=left, lk=lk):
                active.add("pipes", -1)
                with lk:
                    left[0] -= 1
                    if left[0] == 0:
                        c.close()
                        u.close()
            Pipe(c, u, delay, counter, f_up, "to-server", done)
            Pipe(u, c, delay, counter, f_down, "to-client", done)

    for port in [int(x) for x in a.ports.split(",")]:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.listen, port))
        ls.listen(64)
        counters[port] = Counter()
        threading.Thread(target=serve, args=(ls, port), daemon=True).start()
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ready\n")
    while True:
        signal.pause()


def summarize_proxy(stats):
    """Proxy statistics -> the counts the bench shows."""
    if not stats:
        return None
    ports = stats.get("ports", {})
    nfs = {}
    for port in (str(PORTS["portmapper"]), str(PORTS["nfs"]), str(PORTS["mount"])):
        for k, v in ports.get(port, {}).items():
            if k.startswith(("nfs ", "mount ", "portmap ")):
                nfs[k] = nfs.get(k, 0) + v
    isc = ports.get(str(PORTS["iscsi"]), {})
    out = {"nfs": nfs, "iscsi": {k: v for k, v in isc.items()
                                 if k.startswith(("scsi ", "iscsi "))}}
    over = {}
    for c in ports.values():
        for d in ("to-server", "to-client"):
            o = over.setdefault(d, [0, 0, 0])
            o[0] += c.get(f"{d} overshoot sum us", 0)
            o[1] += c.get(f"{d} overshoot n", 0)
            o[2] += c.get(f"{d} chunks already due", 0)
    # mean extra delay of the timer over the nominal one, per direction
    out["overshoot_ms"] = {d: round(s / n / 1000, 3) for d, (s, n, _) in over.items() if n}
    out["chunks_already_due"] = {d: x for d, (_, _, x) in over.items()}
    out["bytes"] = {d: sum(c.get(f"{d} bytes", 0) for c in ports.values())
                    for d in ("to-server", "to-client")}
    out["connections"] = stats.get("connections", {})
    return out


def main(argv):
    if argv[:1] == ["proxy"]:
        return proxy_main(argv[1:])
    if argv[:1] == ["check"]:
        why = unavailable()
        print(f"netstorage: S4 cannot run here: {why}" if why else "netstorage: ok")
        return 1 if why else 0
    if argv[:1] == ["cleanup"]:
        for ns in cleanup_stale(all_="--all" in argv):
            print(f"netstorage: removed {ns}")
        return 0
    print("Usage: scripts/netstorage.py check | cleanup [--all] | proxy --help\n"
          "The module scripts/bench imports for scenario S4 (nfs-ganesha, tgtd,\n"
          "rpcbind in network namespaces; a delaying TCP proxy).", file=sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
