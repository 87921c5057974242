#!/bin/bash
# Differential random testing of qemu-img convert: random sources and
# option sets, each converted by the build under test, by it with -m 1 and
# by the unpatched build, all compared (content, allocation map, and for
# in-order qcow2 targets the file itself).  tests/reliability/differential.py
# does the work; --help lists its options.
#
#   QCE_DIFF_CASES   number of cases (default 200; --cases overrides)
#   QCE_SEED         base seed (default: random, printed; --seed overrides)
#   QCE_BUILD, QCE_PATCHED, QCE_UNPATCHED   the builds (docs/testing.md)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
args=(--cases "${QCE_DIFF_CASES:-200}")
[ -z "${QCE_SEED:-}" ] || args+=(--seed "$QCE_SEED")
exec /usr/bin/python3 -B "$top/tests/reliability/differential.py" "${args[@]}" "$@"
