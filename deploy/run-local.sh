#!/usr/bin/env bash
# Builds iib and runs `iib serve` on the embedded default: SQLite under IIB_DATA_DIR
# (./data), API on IIB_LISTEN_ADDR (127.0.0.1:8080), workers in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
cargo build --release --locked
export IIB_DATA_DIR="${IIB_DATA_DIR:-$PWD/data}"
exec "$CARGO_TARGET_DIR/release/iib" serve "$@"
