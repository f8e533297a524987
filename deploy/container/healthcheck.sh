#!/usr/bin/env bash
# The image's HEALTHCHECK (installed as /usr/local/bin/iib-healthcheck): GET PATH (default
# /livez) over plain HTTP on the port of IIB_METRICS_ADDR (worker, relay) or IIB_LISTEN_ADDR
# (serve, api); exit 0 on a 200. The image has no curl: this uses bash's /dev/tcp.
# Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes/.
path="${1:-/livez}"
get() {
    local port="$1" status=
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
    read -r -t 5 status <&3 || true
    exec 3<&-
    case "$status" in
        "HTTP/1."?" 200"*) return 0 ;;
    esac
    return 1
}
for addr in "${IIB_METRICS_ADDR:-}" "${IIB_LISTEN_ADDR:-127.0.0.1:8080}"; do
    [ -n "$addr" ] || continue
    # A subshell: a refused connection must not end the script.
    if (get "${addr##*:}") 2>/dev/null; then
        exit 0
    fi
done
exit 1
