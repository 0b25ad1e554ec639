#!/usr/bin/env bash
# The chaos soak of issue 14 (examples/tests/chaos.rs) at full length: two quay-server
# instances in redirect mode, two S3 servers, a private PostgreSQL cluster and Redis, 8 minutes
# of pushes and pulls through both instances while faults fire (S3 server killed, worker
# SIGKILLed, Redis restarted and flushed, PostgreSQL restarted, a location drained, an object
# deleted or corrupted); then convergence and the checks. Prints the report.
#
# CI runs the same test with 75 s of load as part of scripts/test.sh. QUAY_CHAOS_SECS
# overrides the load time here.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }
log "building the binaries and the S3 test server"
cargo build -p quay-storage --features testkit --bin s3-test-server
cargo build -p quay-examples --bins
log "chaos soak: ${QUAY_CHAOS_SECS:-480} s of load"
QUAY_CHAOS_SECS="${QUAY_CHAOS_SECS:-480}" cargo nextest run -p quay-examples --test chaos \
    --no-capture --status-level all
