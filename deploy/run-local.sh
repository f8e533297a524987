#!/usr/bin/env bash
# Builds iib and runs `iib serve` on the embedded default: SQLite under IIB_DATA_DIR (./data),
# the API on IIB_LISTEN_ADDR (127.0.0.1:8080), the workers in the same process, and (unless
# IIB_REGISTRY names one) a local registry for the images they build: Debian's
# docker-registry on 127.0.0.1:${IIB_LOCAL_REGISTRY_PORT:-5000}, storage under IIB_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
cargo build --release --locked
export IIB_DATA_DIR="${IIB_DATA_DIR:-$PWD/data}"
export IIB_REQUEST_LOGS_DIR="${IIB_REQUEST_LOGS_DIR:-$IIB_DATA_DIR/logs}"
export IIB_REQUEST_RELATED_BUNDLES_DIR="${IIB_REQUEST_RELATED_BUNDLES_DIR:-$IIB_DATA_DIR/related-bundles}"
export IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR="${IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR:-$IIB_DATA_DIR/recursive-related-bundles}"
mkdir -p "$IIB_DATA_DIR" "$IIB_REQUEST_LOGS_DIR"

registry_pid=
if [ -z "${IIB_REGISTRY:-}" ]; then
    if [ ! -x /usr/bin/docker-registry ]; then
        as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker-registry >/dev/null
    fi
    port="${IIB_LOCAL_REGISTRY_PORT:-5000}"
    unset IIB_LOCAL_REGISTRY_PORT # ours, not iib's: iib refuses settings it does not know
    mkdir -p "$IIB_DATA_DIR/registry"
    cat > "$IIB_DATA_DIR/registry/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $IIB_DATA_DIR/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
    /usr/bin/docker-registry serve "$IIB_DATA_DIR/registry/config.yml" >"$IIB_DATA_DIR/registry/log" 2>&1 &
    registry_pid=$!
    export IIB_REGISTRY="127.0.0.1:$port"
    echo "local registry for built images: $IIB_REGISTRY (plain HTTP on loopback)"
fi

"$CARGO_TARGET_DIR/release/iib" serve "$@" &
iib_pid=$!
stop() {
    kill -TERM "$iib_pid" 2>/dev/null || true
    wait "$iib_pid" 2>/dev/null || true
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
}
trap stop INT TERM
wait "$iib_pid" || true
[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
