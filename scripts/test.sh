#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing (skopeo, Chromium
# for the status page test, Azurite from npm) and
# starts PostgreSQL and Redis when they are installed but stopped. Tests that need a service
# fail, never skip, when it cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

ensure_skopeo() {
    if command -v skopeo >/dev/null 2>&1; then return; fi
    log "installing skopeo (Debian package)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null
}

ensure_chromium() {
    # The status page is checked in headless Chromium (Debian's package, about 300 MB).
    if command -v chromium >/dev/null 2>&1; then return; fi
    log "installing Chromium (Debian package chromium) for the status page test"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
        log "WARNING: could not install Chromium; the status page test will fail"
    fi
}

ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
    fi
    log "WARNING: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will fail"
}

ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    if command -v redis-server >/dev/null 2>&1; then
        log "starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
        for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 1; done
    fi
    log "WARNING: Redis is not reachable on 127.0.0.1:6379; its tests will fail"
}

ensure_azurite() {
    # The Azure storage tests run Azurite (npm); they install it themselves when it is missing,
    # this does it ahead of time. Without Node.js they fail and say how to install it.
    local version=3.37.0
    local dir="${QUAY_TEST_AZURITE_DIR:-${TMPDIR:-/tmp}/quay-test-azurite-$version}"
    if [ -n "${QUAY_TEST_AZURITE:-}" ] || [ -x "$dir/node_modules/.bin/azurite-blob" ]; then return; fi
    if ! command -v npm >/dev/null 2>&1; then
        log "WARNING: Node.js and npm are not installed; the Azure storage tests will fail"
        return
    fi
    log "installing Azurite $version into $dir"
    local staging="$dir.partial-$$"
    if npm install --no-audit --no-fund --loglevel=error --prefix "$staging" "azurite@$version" >/dev/null; then
        mv -T "$staging" "$dir" 2>/dev/null || rm -rf "$staging"
    else
        rm -rf "$staging"
        log "WARNING: could not install Azurite; the Azure storage tests will fail"
    fi
}

ensure_skopeo
ensure_chromium
ensure_postgres
ensure_redis
ensure_azurite

log "building the S3 test server the failover tests run as a separate process"
cargo build -p quay-storage --features testkit --bin s3-test-server

log "checking the monitoring assets (alert rules with promtool, the dashboard's metrics)"
./scripts/check-monitoring.sh

log "running the test suite"
if cargo nextest --version >/dev/null 2>&1; then
    cargo test --workspace --all-features --doc
    cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
    cargo test --workspace --all-features --no-fail-fast "$@"
fi
