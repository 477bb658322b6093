#!/usr/bin/env bash
# Drop-in check: does code written for upstream mio-aio 2.0 on FreeBSD, the way tokio-file uses
# it (tokio::io::bsd::{Aio, AioSource} over mio_aio::Source, plus LioCb and plain mio), still
# build against this checkout?
#
# It builds a throwaway crate (from .ci/dropin/) in a temporary directory that depends on
# `mio-aio = "2"` (feature `tokio`) and `tokio` (features `net`, `rt`), with
# `[patch.crates-io] mio-aio = { path = <this repo> }`, and runs
# `cargo check --target x86_64-unknown-freebsd` on it (it cannot run here). If
# cargo-semver-checks is installed, it also compares the public API with mio-aio 2.0.0 for
# FreeBSD and prints the findings (informational; DROPIN_SEMVER_STRICT=1 makes them fatal).
#
# Needs crates.io (or a warm cargo cache). Exits non-zero on failure.
set -euo pipefail

TARGET=x86_64-unknown-freebsd
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE="$REPO/.ci/dropin"
# A persistent target directory (ignored by git) makes reruns take seconds.
export CARGO_TARGET_DIR="${DROPIN_TARGET_DIR:-$REPO/target/dropin-check}"

log() { printf '==> %s\n' "$*"; }
fail() {
    printf 'dropin-check: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ -f "$TEMPLATE/Cargo.toml.in" && -f "$TEMPLATE/src/main.rs" ]] ||
    fail "template missing under $TEMPLATE"
command -v cargo >/dev/null || fail "cargo not found"

if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "installing the $TARGET standard library (rustup target add $TARGET)"
        rustup target add "$TARGET" || fail "could not install $TARGET"
    fi
else
    log "rustup not found: assuming the $TARGET standard library is installed"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mio-aio-dropin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "consumer crate in $WORK (mio-aio patched to $REPO)"
cp -R "$TEMPLATE/src" "$WORK/src"
# `|` delimits: the path cannot contain it without breaking Cargo.toml anyway.
[[ "$REPO" != *'|'* ]] || fail "repository path contains '|'"
sed "s|@REPO@|$REPO|" "$TEMPLATE/Cargo.toml.in" >"$WORK/Cargo.toml"
# Start from the repository's resolution (same nix/mio/libc as its own builds), if there is one.
if [[ -f "$REPO/Cargo.lock" ]]; then
    cp "$REPO/Cargo.lock" "$WORK/Cargo.lock"
fi

log "resolving and fetching dependencies"
cargo fetch --manifest-path "$WORK/Cargo.toml" --target "$TARGET" ||
    fail "could not resolve or fetch the dependencies (is crates.io reachable?)"
# The patch must really apply: a version mismatch would silently use crates.io's mio-aio.
resolved=$(cargo tree --manifest-path "$WORK/Cargo.toml" --target "$TARGET" -e normal \
    -i mio-aio --depth 0 2>&1) || fail "cargo tree: $resolved"
printf '    %s\n' "$resolved"
[[ "$resolved" == *"($REPO)"* ]] ||
    fail "[patch.crates-io] not applied (is the crate version still 2.x?)"

log "cargo check --target $TARGET (tokio-file style AioSource, LioCb via new_for_lio, mio)"
cargo check --manifest-path "$WORK/Cargo.toml" --target "$TARGET" --all-targets ||
    fail "the 2.0-style consumer does not build against this checkout"

if command -v cargo-semver-checks >/dev/null; then
    log "cargo semver-checks check-release --baseline-version 2.0.0 --target $TARGET"
    if cargo semver-checks check-release --manifest-path "$REPO/Cargo.toml" \
        --baseline-version 2.0.0 --target "$TARGET"; then
        log "semver-checks: no findings"
    elif [[ "${DROPIN_SEMVER_STRICT:-0}" == 1 ]]; then
        fail "cargo semver-checks reported breaking changes (DROPIN_SEMVER_STRICT=1)"
    else
        log "semver-checks reported findings (informational; see above)"
    fi
else
    log "cargo-semver-checks not installed: skipping the API comparison with 2.0.0"
fi

log "drop-in check passed"
