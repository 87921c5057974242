"""An example QCE_NET_HOOK for tests/reliability/differential.py.

It serves the file over NBD with nbdkit, under the kinds "src-example" and
"tgt-example", to show (and test) the interface that the iSCSI and NFS
servers plug into:

    QCE_NET_HOOK=tests/reliability/example_net_hook.py tests/differential.sh

KINDS: the network kinds this hook adds; "src-..." serves the source
(a raw file, read-only), "tgt-..." the target (a raw file, written with
-n -O raw).  network_hook(case, role, path, fmt, log) starts a server for
`path` and returns (uri, stop); it records the commands it runs in `log`
(log.cmd(argv), as common.start_nbdkit does) so that a failing case
prints them.
"""

import os

import common

KINDS = ["src-example", "tgt-example"]


def network_hook(case, role, path, fmt, log):
    assert fmt == "raw", "the example serves raw files only"
    sock = os.path.join(os.path.dirname(path), f"example-{role}-{os.path.basename(path)}.sock")
    extra = ["--readonly"] if role == "source" else []
    proc = common.start_nbdkit(log, sock, ["file", f"file={path}"], extra=extra)
    return common.nbd_uri(sock), lambda: common.stop_process(proc)
