#!/bin/bash
# The engine's concurrency itself: writes in flight, their start order and
# the block-status look-ahead, counted in nbdkit's log filter on both NBD
# servers; the same checks must reject the unpatched build and a serial
# engine (tests/bin/qemu-img-serial).  tests/reliability/concurrency.py
# does the work; --help says what it checks.
#
#   QCE_SEED         seed of the source's data (default: random, printed)
#   QCE_BUILD, QCE_PATCHED, QCE_UNPATCHED   the builds (docs/testing.md)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
args=()
[ -z "${QCE_SEED:-}" ] || args+=(--seed "$QCE_SEED")
exec /usr/bin/python3 -B "$top/tests/reliability/concurrency.py" "${args[@]}" "$@"
