#!/usr/bin/env bash
# System calls per operation of each I/O path, from `strace -f -c`: 4 KiB random reads and
# writes, QD32 (or --qd N), cached and O_DIRECT, for mio-aio's per-op loop (io_uring, kaio,
# threads), its batch and 2×½-batch pipelines and its tokio layer (io_uring), and fio io_uring.
#
#   scripts/syscalls_per_op.sh [--qd N] [--secs S] [--ops N]
#
# Each mio-aio path runs as one point of the benchmark's child process (no warm-up, --secs
# seconds, default 0.5, under strace), which reports every operation it completed (the window
# and the drain after it): system calls ÷ that count. fio io_uring runs --ops operations
# (default 20000, `--number_ios`) and is divided by its total_ios. strace counts the whole
# process (set-up included: a few hundred calls, under 0.05 per operation here) and slows every
# call, so these are counts, not times. Needs strace (Debian: apt-get install -y strace), fio
# for its row, and the benchmark's data file (any earlier `cargo bench --bench compare` run
# creates it). Run it under `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
qd=32 secs=0.5 ops=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --qd) qd="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --ops) ops="$2"; shift 2 ;;
    *) echo "usage: $0 [--qd N] [--secs S] [--ops N]" >&2; exit 2 ;;
  esac
done
if ! command -v strace >/dev/null; then
  echo "strace is not installed (Debian/Ubuntu: apt-get install -y strace)" >&2
  exit 1
fi
exe=$(cargo bench --no-run --features tokio --bench compare 2>&1 |
  sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$exe" ] || { echo "cannot find the benchmark binary" >&2; exit 1; }
file=target/bench-data/bench1280m
size=$((1280 << 20))
if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" -ne "$size" ]; then
  echo "$file is missing: run the benchmark once first (cargo bench --features tokio --bench compare -- --quick --only qd1)" >&2
  exit 1
fi
# The benchmark's layout (benches/common/data.rs): reads in the first 1024 MiB, writes after.
read_off=0 read_len=$((1024 << 20)) write_off=$((1024 << 20)) write_len=$((256 << 20))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# per_op NAME OPS STRACE_FILE: one markdown row from strace -c's table.
per_op() {
  python3 - "$@" <<'EOF'
import sys
name, ops, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = {}
for line in open(path):
    f = line.split()
    # "% time seconds usecs/call calls [errors] syscall"
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values())
watch = ["io_uring_enter", "io_submit", "io_getevents", "epoll_wait", "epoll_pwait",
         "epoll_ctl", "read", "write", "pread64", "pwrite64", "preadv2", "pwritev2", "fcntl",
         "statx", "futex", "sched_yield"]
cols = " | ".join(f"{calls.get(s, 0) / ops:.2f}" if calls.get(s) else "" for s in watch)
top = sorted(calls.items(), key=lambda kv: -kv[1])[:4]
tops = ", ".join(f"{s} {c / ops:.2f}" for s, c in top)
print(f"| {name} | {ops} | {total / ops:.2f} | {cols} | {tops} |")
EOF
}

echo "System calls per operation, 4 KiB random I/O at QD$qd (strace -f -c; $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r))"
for regime in cached direct; do
  for wl in randread randwrite; do
    echo
    echo "### $wl, $regime"
    echo
    echo "| path | ops | all calls /op | io_uring_enter | io_submit | io_getevents | epoll_wait | epoll_pwait | epoll_ctl | read | write | pread64 | pwrite64 | preadv2 | pwritev2 | fcntl | statx | futex | sched_yield | top 4 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for m in mio-perop-io_uring mio-perop-kaio mio-perop-threads mio-batch-io_uring \
      mio-halves-io_uring mio-tokio-io_uring; do
      [ "$regime" = cached ] && cat "$file" >/dev/null
      out=$(env -u MIO_AIO_BACKEND -u MIO_AIO_URING_SQPOLL \
        strace -f -c -o "$tmp/s" -- "$exe" --child "$m" "$regime" "$wl" "$qd" 0 "$secs" "$size" "$file")
      # RESULT ops secs cpu p50 p99 interrupted spurious all_ops verified
      all=$(echo "$out" | awk '/^RESULT/ {print $9}')
      if [ -z "$all" ] || [ "$all" = "-" ]; then
        echo "| $m | FAILED: $out | |"
        continue
      fi
      per_op "$m" "$all" "$tmp/s"
    done
    if command -v fio >/dev/null; then
      [ "$regime" = cached ] && cat "$file" >/dev/null
      if [ "$wl" = randread ]; then off=$read_off len=$read_len; else off=$write_off len=$write_len; fi
      strace -f -c -o "$tmp/s" -- fio --name=s --filename="$file" --offset="$off" --size="$len" \
        --rw="$wl" --bs=4k --ioengine=io_uring --iodepth="$qd" --numjobs=1 \
        --direct="$([ "$regime" = direct ] && echo 1 || echo 0)" --invalidate=0 \
        --allow_file_create=0 --norandommap --randrepeat=0 --number_ios="$ops" \
        --output-format=json >"$tmp/fio.json"
      fio_ops=$(python3 -c "import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.index('{'):])['jobs'][0]; print(j['read']['total_ios']+j['write']['total_ios'])" "$tmp/fio.json")
      per_op "fio io_uring" "$fio_ops" "$tmp/s"
    fi
  done
done
