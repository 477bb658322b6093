#!/usr/bin/env bash
# Runs the mio-aio / fio / tokio comparison (benches/compare.rs) and keeps its output.
#
#   scripts/bench.sh             # full run: about 50 minutes on a 2-core VM
#   scripts/bench.sh --quick     # smoke test, under a minute
#   scripts/bench.sh --only "cached randread qd32" --secs 5
#
# The report goes to stdout and target/bench-results.md; progress (one line per point) to
# target/bench-progress.log. fio rows need fio on PATH (Debian: apt-get install fio); without it
# they print SKIPPED. Page-cache residency checks use util-linux's fincore.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || echo "note: fio is not on PATH; its rows will be SKIPPED" >&2
command -v fincore >/dev/null || echo "note: fincore is not on PATH; residency is not checked" >&2
mkdir -p target
cargo bench --features tokio --bench compare -- "$@" 2> >(tee target/bench-progress.log >&2)
