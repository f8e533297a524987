#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test (the README's test
# command; .ci/run calls it). Build output is cached outside the clone, in ~/.cache/iib.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi

# PostgreSQL: the tests need a real server. Use TEST_POSTGRES_URL if given, else the
# local server on 127.0.0.1:5432 (trust auth), starting or installing it when it is not there.
postgres_answers() {
    command -v psql >/dev/null && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

ensure_postgres() {
    if [ -n "${TEST_POSTGRES_URL:-}" ]; then
        return
    fi
    local url="postgres://postgres@127.0.0.1:5432/postgres"
    if ! postgres_answers "$url"; then
        step "starting PostgreSQL"
        if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
        fi
        for version in $(ls /etc/postgresql); do
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        done
        for _ in $(seq 1 30); do
            postgres_answers "$url" && break
            # A server we installed asks for a password on TCP: give user postgres one.
            if as_root su postgres -c "psql -Atqc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1; then
                url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
                postgres_answers "$url" && break
            fi
            sleep 1
        done
        postgres_answers "$url" || { echo "PostgreSQL is not reachable at 127.0.0.1:5432" >&2; exit 1; }
    fi
    export TEST_POSTGRES_URL="$url"
    # Databases left by earlier runs (each test makes its own).
    psql "$url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'iib_test_%'" |
        while read -r db; do psql "$url" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null || true; done
}

step "PostgreSQL"
ensure_postgres
echo "using $TEST_POSTGRES_URL"

# What the tests drive: iiblib (IIB's Python client, from PyPI; it builds against Debian's
# libkrb5-dev) and schemathesis in venvs kept in the cache, openssl for test certificates, and
# Debian's docker-registry (the tests start their own on free loopback ports).
ensure_clients() {
    local venv="$HOME/.cache/iib/iiblib-venv"
    local missing=()
    command -v openssl >/dev/null || missing+=(openssl)
    [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v umoci >/dev/null || missing+=(umoci)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v socat >/dev/null || missing+=(socat)
    command -v promtool >/dev/null || missing+=(prometheus)
    if ! "$venv/bin/python" -c 'import iiblib' >/dev/null 2>&1; then
        dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
        command -v krb5-config >/dev/null || missing+=(libkrb5-dev)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! "$venv/bin/python" -c 'import iiblib' >/dev/null 2>&1; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q 'iiblib==7.4.0'
    fi
    export IIBLIB_PYTHON="$venv/bin/python"
    local fuzz="$HOME/.cache/iib/schemathesis-venv"
    if ! "$fuzz/bin/schemathesis" --version >/dev/null 2>&1; then
        rm -rf "$fuzz"
        python3 -m venv "$fuzz"
        "$fuzz/bin/pip" install -q 'schemathesis==4.32.5'
    fi
    export SCHEMATHESIS="$fuzz/bin/schemathesis"
    # A real S3-compatible server for the artifact tests.
    local moto="$HOME/.cache/iib/moto-venv"
    if ! "$moto/bin/moto_server" --help >/dev/null 2>&1; then
        rm -rf "$moto"
        python3 -m venv "$moto"
        "$moto/bin/pip" install -q 'moto[server]==5.2.5'
    fi
    export MOTO_SERVER="$moto/bin/moto_server"
}

step "clients and services (iiblib, schemathesis, moto, openssl, docker-registry, skopeo, umoci, promtool)"
ensure_clients
echo "iiblib: $("$IIBLIB_PYTHON" -c 'import importlib.metadata as m; print(m.version("iiblib"))')"

# The Kafka-compatible broker the relay tests publish to: tansu from crates.io (its default
# build has no storage engine), built once into the cache (about 11 minutes on 2 cores).
ensure_tansu() {
    local root="$HOME/.cache/iib/tansu"
    if [ ! -x "$root/bin/tansu" ]; then
        echo "building tansu (once; cached in $root)"
        CARGO_TARGET_DIR="$HOME/.cache/iib/tansu-target" \
            cargo install tansu@0.6.0 --locked --features dynostore,postgres --root "$root"
    fi
    export TANSU="$root/bin/tansu"
}

step "Kafka-compatible broker (tansu)"
ensure_tansu
"$TANSU" --version 2>/dev/null || true

step "formatting (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (cargo test)"
cargo test --workspace --locked 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"
status=${PIPESTATUS[0]}

# deploy/: the Containerfile's steps run on this machine, the Kubernetes manifests and the
# compose file against their schemas, and each workload's command, settings and probes for real.
step "deploy files (Containerfile steps, Kubernetes and Compose schemas, settings, probes)"
if ! bash tests/deploy-checks.sh; then
    echo "deploy checks: 1 failed;" | tee -a "$CARGO_TARGET_DIR/test-output.txt"
    [ "$status" != 0 ] || status=1
fi

# One closing line for the whole run.
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
