#!/usr/bin/env bash
# Proves that the benchmark's `--verify` mode can fail: runs the mio-aio points (quick mode:
# QD1 and QD32, both regimes, reads and writes) once with each test fault of the benchmark
# (MIO_AIO_BENCH_FAULT, see benches/common/verify.rs) and requires every point to fail with
# "verify mismatch" and the run to exit nonzero.
#
#   scripts/verify_selftest.sh [PATTERN]     # --only PATTERN; default: every mio-aio point
#
# wrong-offset: one operation goes to the next block; lost-op: one operation is not issued and
# the method carries on as if it had completed (a stale or duplicated completion). A faulty
# point stops at its 20th operation, so the script takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
only="${1:-mio-aio}"
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
status=0
for fault in wrong-offset lost-op; do
  rc=0
  MIO_AIO_BENCH_FAULT=$fault cargo bench -q --features tokio --bench compare -- \
    --quick --verify --only "$only" >"$out" 2>"$err" || rc=$?
  planned=$(sed -n 's/^\([0-9]*\) points × .*/\1/p' "$err")
  # The report's list of failures: "* POINT: child exit status: 1: POINT: verify mismatch: …".
  caught=$(grep -c '^\* .*: verify mismatch: ' "$out" || true)
  echo "fault $fault: exit status $rc; $caught of ${planned:-?} points failed with \"verify mismatch\""
  grep -m1 '^\* .*: verify mismatch: ' "$out" | sed 's/^\* /  e.g. /' || true
  if [ "$rc" -eq 0 ] || [ -z "$planned" ] || [ "$planned" -eq 0 ] || [ "$caught" -ne "$planned" ]; then
    echo "FAIL: --verify did not catch the $fault fault in every point" >&2
    tail -5 "$err" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "ok: --verify caught both faults in every point"
exit $status
