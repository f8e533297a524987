#!/usr/bin/env bash
# The build stage of deploy/Containerfile: builds `iib` and installs it under $OUT.
# deploy/containerfile-steps.sh runs this same script on the host (tests/run-all.sh), so what
# the image build does is checked without a container engine.
#
#   CARGO_PROFILE     release (the image) or dev (the host check, reusing the test build)
#   CARGO_TARGET_DIR  where cargo builds (a cache mount in the image)
#   OUT               where the binary is installed: $OUT/usr/local/bin/iib
set -euo pipefail
profile="${CARGO_PROFILE:-release}"
out="${OUT:?set OUT to the directory the binary is installed under}"
target="${CARGO_TARGET_DIR:-target}"

# What building needs besides the Rust toolchain: a C toolchain and make for librdkafka and
# zlib (built from source by rdkafka-sys), pkg-config and OpenSSL's headers for its TLS.
# The Rust image has them; install whatever is missing.
missing=()
for package in gcc g++ make pkg-config libssl-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --locked --profile "$profile" --bin iib
case "$profile" in
    dev) dir=debug ;;
    *) dir="$profile" ;;
esac
# The target directory is a cache mount in the image: copy the binary out of it.
install -D -m 0755 "$target/$dir/iib" "$out/usr/local/bin/iib"
echo "built $out/usr/local/bin/iib ($profile)"
