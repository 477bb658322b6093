#!/usr/bin/env bash
# Runs the whole test suite once per backend, and once more with io_uring refused by the kernel.
# Usage: bash .ci/test.sh [extra cargo test args]
# On a system other than Linux it runs the suite once.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
  echo "=== cargo test ($*)"
  env "$@" cargo test --all-features --quiet -- "${TEST_ARGS[@]}"
}
TEST_ARGS=("${@}")

if [ "$(uname -s)" != Linux ]; then
  cargo test --all-features -- "${TEST_ARGS[@]}"
  exit 0
fi

# Stale state from a killed run: FUSE mounts of the test fixture, loop devices of the ENOSPC tests.
if grep -q 'mio-aio-slowfs' /proc/mounts 2>/dev/null; then
  grep 'mio-aio-slowfs' /proc/mounts | awk '{print $2}' | xargs -r -n1 umount -l 2>/dev/null || true
fi

cargo build --all-features --tests --examples --quiet
run MIO_AIO_BACKEND=auto
run MIO_AIO_BACKEND=io_uring
# The same without the cached-read shortcut (`nowait.rs`), so that io_uring's own read path
# (SQE + linked eventfd write) keeps being tested on page-cached files too.
run MIO_AIO_BACKEND=io_uring MIO_AIO_CACHED_READS=0
run MIO_AIO_BACKEND=kaio
run MIO_AIO_BACKEND=threads

# The whole suite again with io_uring refused by the kernel, as under Docker's default seccomp
# profile: the automatic choice must fall back to kernel AIO.
knob=/proc/sys/kernel/io_uring_disabled
if [ -w "$knob" ]; then
  old=$(cat "$knob")
  trap 'echo "$old" > "$knob"' EXIT
  echo 2 > "$knob"
  echo "=== kernel.io_uring_disabled=2"
  run MIO_AIO_BACKEND=auto MIO_AIO_EXPECT_BACKEND=kaio
  echo "$old" > "$knob"
  trap - EXIT
else
  echo "SKIPPED: the io_uring-refused run: $knob is not writable here (not root, or kernel < 6.6);"
  echo "         the seccomp tests in tests/backends.rs still refuse io_uring in a child process."
fi
