#!/usr/bin/env bash
# Kafka relay figures: starts tansu (the broker the tests use, built once into ~/.cache/iib by
# tests/run-all.sh) with memory storage on loopback and runs `iib bench kafka`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
tansu="${TANSU:-$HOME/.cache/iib/tansu/bin/tansu}"
if [ ! -x "$tansu" ]; then
    CARGO_TARGET_DIR="$HOME/.cache/iib/tansu-target" \
        cargo install tansu@0.6.0 --locked --features dynostore,postgres --root "$HOME/.cache/iib/tansu"
fi
cargo build --release --locked -q
port=${BENCH_KAFKA_PORT:-19192}
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$CARGO_TARGET_DIR/release/iib" bench kafka --brokers "127.0.0.1:$port" "$@"
