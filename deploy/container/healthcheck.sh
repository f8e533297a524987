#!/usr/bin/env bash
# The image's HEALTHCHECK (installed as /usr/local/bin/iib-healthcheck): GET PATH (default
# /livez) over plain HTTP on the port of IIB_METRICS_ADDR (worker, relay) or IIB_LISTEN_ADDR
# (serve, api); exit 0 on a 200. The image has no curl: this uses bash's /dev/tcp.
# Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes/.
path="${1:-/livez}"
for addr in "${IIB_METRICS_ADDR:-}" "${IIB_LISTEN_ADDR:-127.0.0.1:8080}"; do
    [ -n "$addr" ] || continue
    port="${addr##*:}"
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
        status=
        read -r -t 5 status <&3 || true
        exec 3<&-
        case "$status" in
            "HTTP/1."?" 200"*) exit 0 ;;
        esac
    fi 2>/dev/null
done
exit 1
