#!/usr/bin/env bash
# Runs the whole test suite once per backend, and once more with io_uring refused by the kernel.
# Usage: bash .ci/test.sh [extra cargo test args]
# On a system other than Linux it runs the suite once.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test binaries whose result cannot depend on the backend run once, not once per backend:
# support_selftest checks the test fixtures only, and kaio_engine forces kernel AIO itself.
ONCE=(kaio_engine support_selftest)
PER_BACKEND=(--lib)
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ " ${ONCE[*]} " == *" $name "* ]] || PER_BACKEND+=(--test "$name")
done

# The backend-dependent part of the suite (library, integration tests, doc tests), with the
# environment given as arguments.
run() {
  echo "=== cargo test ($*)"
  env "$@" cargo test --all-features --quiet "${PER_BACKEND[@]}" -- "${TEST_ARGS[@]}"
  env "$@" cargo test --all-features --quiet --doc -- "${TEST_ARGS[@]}"
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
echo "=== cargo test, once: ${ONCE[*]}"
once_targets=()
for name in "${ONCE[@]}"; do once_targets+=(--test "$name"); done
cargo test --all-features --quiet "${once_targets[@]}" -- "${TEST_ARGS[@]}"
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
