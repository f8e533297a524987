#!/usr/bin/env bash
# Checks the deploy files without a container engine (tests/run-all.sh runs this):
#  1. deploy/containerfile-steps.sh: the Containerfile's build and runtime steps on this
#     machine into a temporary root; the binary runs from it as the image's non-root user;
#  2. tests/deploy_checks.py: the Kubernetes manifests against the Kubernetes schemas, the
#     compose file against the Compose schema, `iib config` with every container's settings,
#     and each workload's command, ports and probes run for real.
# The validators (PyPI: kubernetes-validate ships the Kubernetes schemas, check-jsonschema)
# live in a venv in ~/.cache/iib; the Compose schema is vendored in deploy/schema/.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$HOME/.cache/iib/deploy-venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate, check_jsonschema' >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0'
fi

steps_log="$(mktemp)"
trap 'rm -f "$steps_log"' EXIT
bash deploy/containerfile-steps.sh --keep | tee "$steps_log"
root="$(sed -n 's/^ROOT=//p' "$steps_log" | tail -1)"
[ -d "$root" ] || { echo "deploy/containerfile-steps.sh made no root" >&2; exit 1; }
cleanup() { rm -rf "$steps_log" "$(dirname "$root")"; }
trap cleanup EXIT

IIB_BIN="$root/usr/local/bin/iib" ROOT="$root" VENV_BIN="$venv/bin" \
    "$venv/bin/python" tests/deploy_checks.py
