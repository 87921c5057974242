#!/bin/bash
# SIGINT and SIGTERM while qemu-img convert copies from a slow NBD source
# (nbdkit's delay filter over a unix socket) must end it promptly with a
# non-zero status, with -m 1, -m 8, -W and -c.
# tests/reliability/faults.py --group signals does the work.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
args=(--group signals)
[ -z "${QCE_SEED:-}" ] || args+=(--seed "$QCE_SEED")
exec /usr/bin/python3 -B "$top/tests/reliability/faults.py" "${args[@]}" "$@"
