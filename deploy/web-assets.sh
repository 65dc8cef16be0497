#!/usr/bin/env bash
# The dashboard's third-party browser assets, fetched from the npm registry at pinned versions into
# .arbor/web/vendor/ (gitignored; served by the API at /vendor/). Nothing is loaded from a CDN.
#
# Idempotent: a package whose pinned version is already unpacked is skipped. Each tarball's
# integrity (the registry's SHA-512) is checked against the pin before it is unpacked.
#
#   bash deploy/web-assets.sh            # or: ARBOR_STATE_DIR=/elsewhere bash deploy/web-assets.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${ARBOR_STATE_DIR:-$here/.arbor}"
vendor="$state/web/vendor"

# name  version  sha512 (npm's dist.integrity)  files to keep (relative to the package root)
packages=(
    "uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== dist/uPlot.esm.js,dist/uPlot.min.css,LICENSE"
)

log() { echo "web-assets: $*"; }

if ! command -v npm >/dev/null 2>&1; then
    log "npm not found; installing Debian's npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm >/dev/null
fi

mkdir -p "$vendor"
for entry in "${packages[@]}"; do
    read -r name version integrity files <<<"$entry"
    dest="$vendor/$name"
    if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$version" ]; then
        continue
    fi
    log "fetching $name@$version"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent --loglevel=error "$name@$version" >/dev/null 2>&1)
    tarball="$(ls "$tmp"/*.tgz)"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "web-assets: $name@$version integrity mismatch ($actual)" >&2
        exit 1
    fi
    mkdir -p "$tmp/unpacked"
    tar -xzf "$tarball" -C "$tmp/unpacked"
    rm -rf "$dest.new"
    mkdir -p "$dest.new"
    IFS=',' read -ra keep <<<"$files"
    for f in "${keep[@]}"; do
        install -D -m 0644 "$tmp/unpacked/package/$f" "$dest.new/$f"
    done
    echo "$version" >"$dest.new/.version"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
    rm -rf "$tmp"
    trap - EXIT
    log "$name@$version ready in $dest"
done
