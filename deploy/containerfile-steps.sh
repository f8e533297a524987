#!/usr/bin/env bash
# Runs the build steps of deploy/Containerfile on this machine, without a container engine:
# the RUN lines of the build stage (cargo build) in the source tree, the COPY --from=build,
# then the RUN lines of the runtime stage into a temporary root; then runs the binary from
# that root as the image's user (uid 10001), in a chroot holding only the libraries ldd
# names (as root; else directly): `iib --version`, `iib config`, and `iib api` and
# `iib worker` on the embedded SQLite database until their probes answer, checked with the
# image's HEALTHCHECK command, then stopped with SIGTERM.
#
#   bash deploy/containerfile-steps.sh [--release] [--keep]
#
# The image builds the release profile; this check builds the dev profile by default (as
# --build-arg CARGO_PROFILE=dev would), reusing the test build in CARGO_TARGET_DIR
# (default ~/.cache/iib/target) so it adds seconds, not a release build, to tests/run-all.sh.
# It prints the temporary root's path on its last line (ROOT=...), kept with --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
containerfile="$repo/deploy/Containerfile"
profile=dev
keep=false
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --keep) keep=true ;;
        *) echo "usage: $0 [--release] [--keep]" >&2; exit 2 ;;
    esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/iib/target}"

work="$(mktemp -d /tmp/iib-containerfile.XXXXXX)"
chmod 0755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "$keep" = false ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "containerfile-steps: $*" >&2; exit 1; }

# The Containerfile as instructions: one line each (continuations joined), comments dropped,
# each prefixed with its stage number.
instructions="$work/instructions"
awk '
    /^[[:space:]]*#/ && !cont { next }
    {
        line = $0
        if (sub(/\\[[:space:]]*$/, "", line)) { buf = buf line " "; cont = 1; next }
        buf = buf line; cont = 0
        if (buf ~ /^[[:space:]]*$/) { buf = ""; next }
        if (buf ~ /^FROM[[:space:]]/) stage++
        print stage "\t" buf
        buf = ""
    }' "$containerfile" >"$instructions"

stages=$(cut -f1 "$instructions" | sort -u | grep -vc '^$' || true)
[ "$stages" = 2 ] || fail "expected a build and a runtime stage, found $stages stage(s)"
last=$(cut -f1 "$instructions" | tail -1)
grep -Eq $'^1\tFROM .* AS build$' "$instructions" || fail "the first stage must be 'FROM ... AS build'"
in_stage() { awk -F'\t' -v s="$1" '$1 == s { print $2 }' "$instructions"; }

# What the image must be: non-root, iib as entry point, the ports the manifests use, no
# podman/buildah/skopeo/opm (iib builds images itself).
runtime="$(in_stage "$last")"
user=$(echo "$runtime" | awk '$1 == "USER" { print $2 }' | tail -1)
[ -n "$user" ] || fail "the runtime stage sets no USER"
uid="${user%%:*}"
case "$uid" in '' | *[!0-9]*) fail "USER must be numeric (Kubernetes checks runAsNonRoot), got $user" ;; esac
[ "$uid" != 0 ] || fail "USER must not be root"
echo "$runtime" | grep -Eq '^ENTRYPOINT \["/usr/local/bin/iib"\]$' || fail "ENTRYPOINT must be [\"/usr/local/bin/iib\"]"
echo "$runtime" | grep -Eq '^EXPOSE 8080 9090$' || fail "EXPOSE must name 8080 (API) and 9090 (metrics and probes)"
if grep -Eiw 'podman|buildah|skopeo|opm' deploy/container/build.sh deploy/container/runtime.sh |
    grep -Ev '^[^:]+:[[:space:]]*#' | grep -q .; then
    fail "the image steps mention podman, buildah, skopeo or opm outside comments"
fi
echo "Containerfile: build and runtime stages, USER $user, ENTRYPOINT iib, EXPOSE 8080 9090"

# RUN lines: drop --mount options; a bind mount's target becomes its source in the tree.
run_line() {
    local line="$1" command="" binds=() word
    line="${line#RUN }"
    while [[ "$line" =~ ^--mount=([^[:space:]]+)[[:space:]]+(.*)$ ]]; do
        local options="${BASH_REMATCH[1]}" source="" target=""
        line="${BASH_REMATCH[2]}"
        IFS=',' read -ra fields <<<"$options"
        for word in "${fields[@]}"; do
            case "$word" in
                source=*) source="${word#source=}" ;;
                target=*) target="${word#target=}" ;;
            esac
        done
        if [[ "$options" == type=bind* ]]; then
            binds+=("$target=$repo/$source")
        fi
    done
    command="$line"
    for word in "${binds[@]}"; do
        command="${command//${word%%=*}/${word#*=}}"
    done
    printf '%s' "$command"
}

out="$work/out"
root="$work/root"
mkdir -p "$out" "$root"

echo "build stage (CARGO_PROFILE=$profile, CARGO_TARGET_DIR=$CARGO_TARGET_DIR):"
while IFS= read -r line; do
    command="$(run_line "$line")"
    echo "  RUN $command"
    (cd "$repo" && CARGO_PROFILE="$profile" OUT="$out" bash -c "$command") || fail "build step failed: $command"
done < <(in_stage 1 | grep '^RUN ')

echo "runtime stage (ROOT=$root):"
while IFS= read -r line; do
    set -- $line
    case "$1" in
        COPY)
            [ "$2" = --from=build ] || fail "unexpected COPY in the runtime stage: $line"
            # The build stage installs under OUT=/out (its ENV); here that is $out.
            [[ "$3" == /out/* ]] || fail "COPY --from=build must take from /out (the build stage's OUT): $line"
            install -D -m 0755 "$out${3#/out}" "$root$4"
            echo "  COPY $3 -> $4"
            ;;
        RUN)
            command="$(run_line "$line")"
            echo "  RUN $command"
            (cd "$repo" && ROOT="$root" bash -c "$command") || fail "runtime step failed: $command"
            ;;
    esac
done < <(in_stage "$last" | grep -E '^(COPY|RUN) ')

# The image's environment (ENV KEY=VALUE ...).
image_env=()
while IFS= read -r line; do
    for word in ${line#ENV }; do image_env+=("$word"); done
done < <(echo "$runtime" | grep '^ENV ')

# A root with only the binary, what ldd names and the CA certificates: if the binary needs
# anything else, it fails here as it would in the image.
binary="$root/usr/local/bin/iib"
ldd "$binary" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
    [ -e "$lib" ] || continue
    install -D "$(readlink -f "$lib")" "$root$lib"
done
# Each of those libraries comes from a package the runtime stage installs, or from one every
# Debian image has (libc6, libgcc-s1: essential).
installed="$(sed -n 's/^packages=(\(.*\))$/\1/p' deploy/container/runtime.sh) libc6 libgcc-s1"
for lib in $(ldd "$binary" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }'); do
    package="$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null)" || fail "no package owns $lib"
    package="${package%%:*}"
    [[ " $installed " == *" $package "* ]] || fail "the binary needs $lib from $package, which the runtime stage does not install"
done
echo "libraries the binary links come from: $installed"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# image_command [KEY=VALUE...] COMMAND [ARG...]: sets `argv` to run COMMAND from the root
# as the image's user, with the image's environment plus KEY=VALUE.
chroot_bin="$(command -v chroot)"
image_command() {
    local vars=()
    while [ $# -gt 0 ] && [[ "$1" == [A-Z]*=* ]]; do vars+=("$1"); shift; done
    if [ "$(id -u)" = 0 ]; then
        argv=(env -i "${image_env[@]}" "${vars[@]}" "$chroot_bin" --userspec="$uid:$uid" "$root" "$@")
    else
        argv=(env -i "${image_env[@]}" IIB_DATA_DIR="$root/var/lib/iib" "${vars[@]}" "$root$1" "${@:2}")
    fi
}
run_as_image() {
    image_command "$@"
    "${argv[@]}"
}
if [ "$(id -u)" = 0 ]; then where="chroot as uid $uid"; else where="as $(id -un), no chroot (not root)"; fi

version="$(run_as_image /usr/local/bin/iib --version)" || fail "iib --version failed ($where)"
echo "$version ($where)"
run_as_image /usr/local/bin/iib config >"$work/config.txt" || fail "iib config failed ($where): $(cat "$work/config.txt")"
grep -q 'IIB_DATA_DIR' "$work/config.txt" || fail "iib config printed no settings"
echo "iib config: $(grep -c '^IIB_\|^LOGIN_' "$work/config.txt") settings ($where)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The HEALTHCHECK command, run against a process of the image.
healthcheck="$(echo "$runtime" | awk '$1 == "HEALTHCHECK" { print }' | grep -o 'CMD \[.*\]')"
[[ "$healthcheck" == *'"/usr/local/bin/iib-healthcheck"'* ]] || fail "the HEALTHCHECK must run /usr/local/bin/iib-healthcheck"
[ -x "$root/usr/local/bin/iib-healthcheck" ] || fail "the runtime stage did not install /usr/local/bin/iib-healthcheck"
probe() {
    local path="$1"
    shift
    env -i "$@" bash "$root/usr/local/bin/iib-healthcheck" "$path"
}

# `iib api` and `iib worker` from the root, as the image's user, on the embedded database
# under IIB_DATA_DIR (writable by that user only).
start() {
    local name="$1" log="$work/$1.log"
    shift
    image_command "$@" /usr/local/bin/iib "$name"
    # Started directly (not through a function) so that $! is iib's pid and gets the SIGTERM.
    "${argv[@]}" >"$log" 2>&1 &
    pids+=($!)
}
stop_and_wait() {
    local pid="$1" name="$2" started
    kill -TERM "$pid"
    started=$(date +%s)
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "$name did not stop within 60 s of SIGTERM"
    local code=0
    wait "$pid" || code=$?
    [ "$code" = 0 ] || fail "$name exited with $code after SIGTERM: $(tail -5 "$work/$name.log")"
    echo "$name stopped on SIGTERM in $(( $(date +%s) - started )) s"
}
wait_probe() {
    local name="$1" path="$2"
    shift 2
    for _ in $(seq 1 300); do
        if probe "$path" "$@"; then return 0; fi
        sleep 0.1
    done
    fail "$name: $path did not answer 200 within 30 s: $(tail -5 "$work/$name.log")"
}

api_port=$(free_port)
start api IIB_LISTEN_ADDR="127.0.0.1:$api_port" LOGIN_DISABLED=true
api_pid=${pids[-1]}
wait_probe api /livez IIB_LISTEN_ADDR="127.0.0.1:$api_port"
wait_probe api /readyz IIB_LISTEN_ADDR="127.0.0.1:$api_port"
echo "api: /livez and /readyz answer 200 through the HEALTHCHECK command"
if probe /no-such-path IIB_LISTEN_ADDR="127.0.0.1:$api_port"; then
    fail "the HEALTHCHECK command answered 200 for a missing path"
fi
metrics_port=$(free_port)
start worker IIB_METRICS_ADDR="127.0.0.1:$metrics_port" IIB_REGISTRY=127.0.0.1:1
worker_pid=${pids[-1]}
wait_probe worker /livez IIB_METRICS_ADDR="127.0.0.1:$metrics_port"
wait_probe worker /readyz IIB_METRICS_ADDR="127.0.0.1:$metrics_port"
echo "worker: /livez and /readyz answer 200 through the HEALTHCHECK command"
owner=$(stat -c %u "$root/var/lib/iib/iib.db") || fail "no database under IIB_DATA_DIR"
[ "$owner" = "$uid" ] || [ "$(id -u)" != 0 ] || fail "the database under IIB_DATA_DIR belongs to uid $owner, not $uid"
stop_and_wait "$worker_pid" worker
stop_and_wait "$api_pid" api
pids=()

echo "ROOT=$root"
