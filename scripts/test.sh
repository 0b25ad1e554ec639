#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing (skopeo) and
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

ensure_skopeo
ensure_postgres
ensure_redis

log "running the test suite"
if cargo nextest --version >/dev/null 2>&1; then
    cargo test --workspace --all-features --doc
    cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
    cargo test --workspace --all-features --no-fail-fast "$@"
fi
