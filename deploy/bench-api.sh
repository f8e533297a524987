#!/usr/bin/env bash
# API throughput on loopback with wrk: 10,000 requests in the store (SQLite, the embedded
# default), then GET /builds/<id> and GET /builds?per_page=20. Prints wrk's figures.
# BENCH_OTLP=1 runs it with traces exported to a stand-in receiver (deploy/otlp-sink.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -q
iib="$CARGO_TARGET_DIR/release/iib"
data=$(mktemp -d)
# BENCH_OTLP=1: traces on (IIB_OTEL_TRACING), exported to a stand-in OTLP receiver.
sink=
if [ "${BENCH_OTLP:-0}" = 1 ]; then
  otlp_port=${BENCH_OTLP_PORT:-14318}
  python3 deploy/otlp-sink.py "$otlp_port" &
  sink=$!
  export IIB_OTEL_TRACING=true OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" OTEL_SERVICE_NAME=iib-bench
  # Short runs export too (the SDK's default waits 5 s between batches).
  export OTEL_BSP_SCHEDULE_DELAY="${OTEL_BSP_SCHEDULE_DELAY:-500}"
fi
port=${BENCH_PORT:-18080}
trap 'kill $server 2>/dev/null; [ -z "$sink" ] || kill $sink; rm -rf "$data"' EXIT
IIB_DATA_DIR="$data" "$iib" bench seed --requests "${BENCH_REQUESTS:-10000}"
IIB_DATA_DIR="$data" IIB_LISTEN_ADDR="127.0.0.1:$port" IIB_LOG_LEVEL=WARN "$iib" serve &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/api/v1/healthcheck" >/dev/null && break; sleep 0.1; done
duration=${BENCH_SECONDS:-10}
echo "== GET /api/v1/builds/5000"
wrk -t2 -c32 -d"${duration}s" "http://127.0.0.1:$port/api/v1/builds/5000"
echo "== GET /api/v1/builds?per_page=20"
wrk -t2 -c32 -d"${duration}s" "http://127.0.0.1:$port/api/v1/builds?per_page=20"
