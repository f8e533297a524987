#!/usr/bin/env bash
# The runtime stage of deploy/Containerfile: what the binary needs at run time, the non-root
# user, the directories it writes, and a check that the binary starts as that user.
# deploy/containerfile-steps.sh runs this same script on the host with ROOT set to a
# temporary root (the host is Debian 12 like the runtime image).
#
#   ROOT  the root to set up (empty: / in the image); $ROOT/usr/local/bin/iib must exist
set -euo pipefail
root="${ROOT:-}"
uid=10001
binary="$root/usr/local/bin/iib"
[ -x "$binary" ] || { echo "no binary at $binary" >&2; exit 1; }

# Run-time packages (ldd of the binary: libc, libgcc_s, libm from the base image; libssl3 for
# librdkafka's TLS; CA certificates, the roots rustls trusts for registries, S3, Greenwave).
# No podman, buildah, skopeo or opm: iib builds images itself.
packages=(ca-certificates libssl3)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "$root" ]; then
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
fi

# The user iib runs as (numeric in USER, so Kubernetes can check runAsNonRoot).
mkdir -p "$root/etc"
touch "$root/etc/passwd" "$root/etc/group"
grep -q '^iib:' "$root/etc/group" || echo "iib:x:$uid:" >>"$root/etc/group"
grep -q '^iib:' "$root/etc/passwd" ||
    echo "iib:x:$uid:$uid:iib:/var/lib/iib:/usr/sbin/nologin" >>"$root/etc/passwd"

# What iib writes: IIB_DATA_DIR (the embedded SQLite database; request logs and related
# bundles under it) and temporary files. In Kubernetes these are emptyDir volumes and the
# root file system is read-only.
for dir in /var/lib/iib /var/lib/iib/logs /var/lib/iib/related-bundles /var/lib/iib/recursive-related-bundles; do
    install -d -m 0750 -o "$uid" -g "$uid" "$root$dir"
done
install -d -m 1777 "$root/tmp"

# The HEALTHCHECK command.
install -D -m 0755 "$(dirname "$0")/healthcheck.sh" "$root/usr/local/bin/iib-healthcheck"

# Every library the binary links is there, and it starts as the non-root user.
if ldd "$binary" | grep 'not found'; then
    echo "the binary needs libraries the image lacks" >&2
    exit 1
fi
setpriv --reuid="$uid" --regid="$uid" --clear-groups "$binary" --version
