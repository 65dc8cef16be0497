#!/usr/bin/env bash
# Idempotent set-up of everything Arbor needs on a Debian 12 machine, run as root:
#   1. Debian packages (Mosquitto, PostgreSQL 15 with server headers, build tools);
#   2. TimescaleDB built from Debian's own source package (Debian 13's 2.19.3, Apache-2 edition),
#      fetched through a private apt directory so the system's sources are never changed;
#   3. the Mosquitto broker built the same way from Debian 13's source (2.0.21: bookworm's
#      2.0.11 segfaulted under load), installed as /usr/local/sbin/mosquitto, which `arbor up`
#      starts (arbor.stack.mosquitto_binary);
#   4. a virtual environment in .venv with the project installed from uv.lock.
# Every step checks first and does nothing when its result is already there, so a second run takes
# a second or two. Both `make demo` and `make test` start with it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="${ARBOR_STATE_DIR:-$here/.arbor}"
pg_version=15
tsdb_suite=trixie          # Debian 13: its timescaledb source is 2.19.3, which builds against PG 15
                           # and its mosquitto source 2.0.21
mqtt_min_version=2.0.18    # the first with upstream's fix for crashes on subscribe (#2881, #2885)
mqtt_bin=/usr/local/sbin/mosquitto
uv_version=0.13.8

log() { printf 'setup: %s\n' "$*"; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: $1 needs root (apt-get); run as root or install it yourself" >&2
        exit 1
    fi
}

# --- 1. Debian packages --------------------------------------------------------------------------
# openssl: `arbor up` makes the local CA and the broker's TLS certificate with it (docs/security.md).
packages=(mosquitto mosquitto-clients "postgresql-$pg_version" "postgresql-server-dev-$pg_version"
          chromium build-essential cmake dpkg-dev libssl-dev libkrb5-dev python3-venv ca-certificates
          openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    # Debian's maintainer scripts would start a system Mosquitto on 1883 and a PostgreSQL cluster on
    # 5432; Arbor runs its own servers on its own ports, so keep the system ones from starting.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$created_policy" = 1 ] && rm -f "$policy"
fi

# Debian 13 source packages come through a private apt directory: its deb-src entry points at the
# same Debian mirror the system already uses, so nothing outside this checkout changes and no host
# name is hard-coded. Sets apt_opts for `apt-get "${apt_opts[@]}" source ...`.
apt_opts=()
private_apt() {
    [ ${#apt_opts[@]} -gt 0 ] && return 0
    local apt_dir="$state/build/apt" mirror
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1)
    if [ -z "$mirror" ]; then
        mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$mirror" ] || { echo "setup: no Debian mirror found in the apt sources" >&2; exit 1; }
    printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
        "$mirror" "$tsdb_suite" >"$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
    log "reading Debian $tsdb_suite's source index"
    apt-get "${apt_opts[@]}" update -qq
}

# --- 2. TimescaleDB from Debian's source package ---------------------------------------------------
pg_config="/usr/lib/postgresql/$pg_version/bin/pg_config"
ext_dir=$("$pg_config" --sharedir)/extension
if [ -f "$ext_dir/timescaledb.control" ]; then
    log "TimescaleDB already installed ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ext_dir/timescaledb.control"))"
else
    need_root "building TimescaleDB"
    build="$state/build/timescaledb"
    private_apt
    log "fetching the timescaledb source package from Debian $tsdb_suite"
    rm -rf "$build" && mkdir -p "$build"
    (cd "$build" && apt-get "${apt_opts[@]}" source -qq --download-only timescaledb >/dev/null \
        && dpkg-source --no-check -x timescaledb_*.dsc src >/dev/null)
    log "building TimescaleDB (Apache-2 edition) against PostgreSQL $pg_version"
    (cd "$build/src" \
        && ./bootstrap -DPG_CONFIG="$pg_config" -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
               -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
               -DCMAKE_BUILD_TYPE=Release >"$build/configure.log" 2>&1 \
        && make -C build -j"$(nproc)" >"$build/build.log" 2>&1 \
        && make -C build install >"$build/install.log" 2>&1) || {
            echo "setup: the TimescaleDB build failed; logs in $build" >&2
            tail -n 30 "$build"/*.log >&2
            exit 1
        }
    log "TimescaleDB installed into $ext_dir"
fi

# --- 3. Mosquitto from Debian's source package ----------------------------------------------------
# Only the broker is built (no docs, websockets, dynsec/cJSON, systemd, tcp-wrappers: Arbor uses
# none of them); Debian's mosquitto package stays installed for its `mosquitto` user.
mqtt_version() { { "$1" -h 2>/dev/null || true; } | sed -n '1s/^mosquitto version \([0-9.]*\).*/\1/p'; }
have=$( [ -x "$mqtt_bin" ] && mqtt_version "$mqtt_bin" || true)
if [ -n "$have" ] && dpkg --compare-versions "$have" ge "$mqtt_min_version"; then
    log "Mosquitto $have already built ($mqtt_bin)"
else
    need_root "building Mosquitto"
    private_apt
    build="$state/build/mosquitto"
    rm -rf "$build" && mkdir -p "$build"
    log "fetching the mosquitto source package from Debian $tsdb_suite"
    (cd "$build" && apt-get "${apt_opts[@]}" source -qq --download-only mosquitto >/dev/null \
        && dpkg-source --no-check -x mosquitto_*.dsc src >/dev/null)
    log "building the Mosquitto broker"
    make -C "$build/src/src" -j"$(nproc)" WITH_DOCS=no WITH_WEBSOCKETS=no WITH_CJSON=no \
        WITH_SYSTEMD=no WITH_SRV=no WITH_DLT=no WITH_WRAP=no WITH_TLS=yes \
        >"$build/build.log" 2>&1 || {
            echo "setup: the Mosquitto build failed; log in $build/build.log" >&2
            tail -n 30 "$build/build.log" >&2
            exit 1
        }
    have=$(mqtt_version "$build/src/src/mosquitto")
    dpkg --compare-versions "${have:-0}" ge "$mqtt_min_version" || {
        echo "setup: Debian $tsdb_suite's mosquitto is ${have:-unknown}, older than $mqtt_min_version" >&2
        exit 1
    }
    install -D -m 0755 "$build/src/src/mosquitto" "$mqtt_bin"
    log "Mosquitto $have installed as $mqtt_bin"
fi

# --- 4. the project's virtual environment ---------------------------------------------------------
tools="$state/tools"
if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$uv_version" ]; then
    log "installing uv $uv_version (the lock file's installer) into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check "uv==$uv_version"
fi
# uv sync is a no-op when .venv already matches the lock; --frozen refuses to touch the lock.
# Bytecode compiled at install: this environment may forbid writing .pyc at run time, and every
# process start would otherwise parse FastAPI, numpy and friends from source again.
UV_PROJECT_ENVIRONMENT="$here/.venv" "$tools/bin/uv" sync --frozen --quiet --compile-bytecode \
    --project "$here"
bash "$here/deploy/web-assets.sh"
log "ready: $("$here/.venv/bin/python" --version), $(mosquitto -h 2>/dev/null | head -n1 | sed 's/ (build.*//'), PostgreSQL $("$pg_config" --version | cut -d' ' -f2)"
