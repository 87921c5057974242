#!/bin/bash
# Fault injection on every path of qemu-img convert: blkdebug errors at
# chosen and random offsets, nbdkit's error filter, servers killed
# mid-copy, --salvage; with -m 1, 8 and 512, with and without -W.
# tests/reliability/faults.py does the work; --help lists its options.
#
#   QCE_SEED         seed for offsets and rates (default: random, printed)
#   QCE_BUILD, QCE_PATCHED   the build under test (docs/testing.md)
#   QCE_UNPATCHED    the verifier: every compare, check, map and qemu-io
#                    read-back uses this build (default: the unpatched
#                    build), never the build under test; missing: FAIL
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
args=()
[ -z "${QCE_SEED:-}" ] || args+=(--seed "$QCE_SEED")
exec /usr/bin/python3 -B "$top/tests/reliability/faults.py" "${args[@]}" "$@"
