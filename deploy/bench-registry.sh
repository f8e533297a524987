#!/usr/bin/env bash
# Benchmarks against a registry on loopback: starts Debian's docker-registry with temporary
# storage and runs `iib bench registry` (push a 3-arch 50 MB/arch base, copy it, build on it with
# a 5 MB layer), or with `add` as the first argument `iib bench add` (POST add of one bundle to
# an index of 1,000 bundles until complete; `add --fixtures DIR` uses the community catalog), or
# with `fleet` `iib bench fleet` (1 `iib api` + 1, 2, 3 `iib worker` on PostgreSQL, with and
# without LISTEN/NOTIFY; database: --database-url, default $TEST_POSTGRES_URL or the local server).
# BENCH_OTLP=1 runs it with traces exported to a stand-in receiver (deploy/otlp-sink.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
[ -x /usr/bin/docker-registry ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
cargo build --release --locked -q
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
port=${BENCH_REGISTRY_PORT:-15000}
cat > "$data/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $data/storage
http:
  addr: 127.0.0.1:$port
YML
/usr/bin/docker-registry serve "$data/config.yml" >/dev/null 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null; [ -z "$sink" ] || kill $sink; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
bench=registry
if [ "${1:-}" = add ] || [ "${1:-}" = registry ] || [ "${1:-}" = fleet ]; then bench=$1; shift; fi
if [ "$bench" = fleet ] && [[ " $* " != *" --database-url "* ]]; then
    set -- --database-url "${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}" "$@"
fi
"$CARGO_TARGET_DIR/release/iib" bench "$bench" --registry "127.0.0.1:$port" "$@"
