#!/usr/bin/env bash
# Garbage collection: one pass of `quayctl gc` over a registry on PostgreSQL (as deployments run
# it) against Debian's `docker-registry garbage-collect` (CNCF Distribution 2.8) on its
# filesystem driver, over the same image set, in the same run.
#
# Both registries get IMAGES images (one layer and one config each, unique, pushed over HTTP by
# scripts/lib/gc-images.py), then every second image is deleted: by tag on quay-server (Quay's
# time machine, with DEFAULT_TAG_EXPIRATION 0s so the history ends at once) and by digest on
# docker-registry (what its collector needs). Half of the blobs are then garbage. Timed, each
# from process start to exit:
#
#   - docker-registry garbage-collect: marks, then deletes the garbage files (offline: the
#     registry must not take pushes while it runs);
#   - quayctl gc: one online pass (tag history, manifests, blob rows, delete jobs queued, the
#     orphan sweep of the location);
#   - quayctl gc + quayctl worker until the garbage files are gone from the location (the
#     delete jobs run by the worker), for the comparison of freed storage.
#
#   scripts/bench-gc.sh                    # 25000 images (50000 blobs, half garbage)
#   IMAGES=2000 scripts/bench-gc.sh        # a quick run
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and installs Debian's
# docker-registry with apt-get when it is missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES="${IMAGES:-25000}"
REPOS="${REPOS:-50}"
LAYER_BYTES="${LAYER_BYTES:-1024}"
THREADS="${THREADS:-8}"
SEED="${SEED:-1}"
PG="${PG:-postgresql://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-target}"
WORK="$(mktemp -d)"
DB="quay_bench_gc_$$"
PIDS=()
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
cleanup() {
    end_processes
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
files() { find "$1" -type f | wc -l; }

pg_isready -q -h 127.0.0.1 -p 5432 || {
    echo "PostgreSQL is not answering on 127.0.0.1:5432; start it with:" >&2
    echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
    exit 1
}
if ! command -v docker-registry >/dev/null 2>&1; then
    log "installing Debian's docker-registry (apt-get)"
    apt-get install -y -q docker-registry >/dev/null
fi
log "building quay-server and quayctl (release)"
cargo build --release -q -p quay-examples --bin quay-server --bin quayctl
BIN="$TARGET/release"
IMAGES_PY=scripts/lib/gc-images.py

# quay-server: PostgreSQL, one location on local files; the background collector is off so
# the timed pass is the only one.
psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
mkdir -p "$WORK/quay/storage"
cat >"$WORK/quay/config.yaml" <<EOF
DB_URI: $PG/$DB
DISTRIBUTED_STORAGE_CONFIG:
  local:
    - LocalStorage
    - storage_path: $WORK/quay/storage
DISTRIBUTED_STORAGE_PREFERENCE: [local]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local]
FEATURE_PROXY_STORAGE: true
FEATURE_GARBAGE_COLLECTION: false
PUSH_TEMP_TAG_EXPIRATION_SEC: 0
DEFAULT_TAG_EXPIRATION: 0s
EOF
Q_PORT="$(free_port)"
start_quay "$Q_PORT" "$WORK/quay" "$WORK/quay.log" "$WORK/quay/config.yaml"
Q_PID=$QUAY_PID

# docker-registry on its filesystem driver, deletes enabled.
D_PORT="$(free_port)"
mkdir -p "$WORK/dr/root"
cat >"$WORK/dr/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/dr/root
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$D_PORT
EOF
docker-registry serve "$WORK/dr/config.yml" >"$WORK/dr.log" 2>&1 &
D_PID=$!
PIDS+=("$D_PID")
wait_up "http://127.0.0.1:$D_PORT/v2/"

args() { echo "$REPOS $IMAGES $LAYER_BYTES $THREADS $SEED"; }
log "pushing $IMAGES images ($((2 * IMAGES)) blobs) to quay-server"
t0="$(now)"
# shellcheck disable=SC2046
python3 "$IMAGES_PY" push "http://127.0.0.1:$Q_PORT" $(args)
Q_PUSH="$(echo "$(now) - $t0" | bc -l)"
log "pushing the same images to docker-registry"
t0="$(now)"
# shellcheck disable=SC2046
python3 "$IMAGES_PY" push "http://127.0.0.1:$D_PORT" $(args)
D_PUSH="$(echo "$(now) - $t0" | bc -l)"
log "deleting every second image (by tag on quay-server, by digest on docker-registry)"
# shellcheck disable=SC2046
python3 "$IMAGES_PY" delete "http://127.0.0.1:$Q_PORT" $(args) by-tag
# shellcheck disable=SC2046
python3 "$IMAGES_PY" delete "http://127.0.0.1:$D_PORT" $(args) by-digest

# Both registries stop taking requests: docker-registry must (its collector is offline), and
# quay-server's own worker would otherwise run the delete jobs inside the timed window.
kill "$Q_PID" "$D_PID"
wait "$Q_PID" "$D_PID" 2>/dev/null || true

GARBAGE_IMAGES=$((IMAGES / 2))
GARBAGE_BLOBS=$((2 * GARBAGE_IMAGES))
Q_FILES0="$(files "$WORK/quay/storage")"
D_FILES0="$(files "$WORK/dr/root/docker/registry/v2/blobs")"

log "docker-registry garbage-collect"
t0="$(now)"
docker-registry garbage-collect "$WORK/dr/config.yml" >"$WORK/dr-gc.log" 2>&1
D_GC="$(echo "$(now) - $t0" | bc -l)"
D_FILES1="$(files "$WORK/dr/root/docker/registry/v2/blobs")"

log "quayctl gc"
t0="$(now)"
"$BIN/quayctl" --config "$WORK/quay/config.yaml" --data-dir "$WORK/quay" gc --json >"$WORK/gc.json"
Q_GC="$(echo "$(now) - $t0" | bc -l)"
log "quayctl worker until the garbage files are gone"
"$BIN/quayctl" --config "$WORK/quay/config.yaml" --data-dir "$WORK/quay" worker >"$WORK/worker.log" 2>&1 &
W_PID=$!
PIDS+=("$W_PID")
WANT=$((Q_FILES0 - GARBAGE_BLOBS))
for _ in $(seq 1 6000); do
    [ "$(files "$WORK/quay/storage")" -le "$WANT" ] && break
    sleep 0.1
done
Q_ALL="$(echo "$(now) - $t0" | bc -l)"
Q_FILES1="$(files "$WORK/quay/storage")"
kill "$W_PID" 2>/dev/null || true

# What each removed, checked: half of the blobs (docker-registry also stores each manifest as
# a blob, so its count drops by three files per garbage image).
removed="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["blobs_total"], "manifests", r["manifests"], "orphans", sum(o["count"] for o in r["orphans"].values()))' "$WORK/gc.json" 2>/dev/null || echo '?')"
[ "$Q_FILES1" -le "$WANT" ] || { echo "quay: $Q_FILES1 files left, wanted $WANT; gc said: $(cat "$WORK/gc.json")" >&2; exit 1; }
[ "$D_FILES1" -le $((D_FILES0 - GARBAGE_BLOBS)) ] || { echo "docker-registry: $D_FILES1 files left of $D_FILES0" >&2; exit 1; }

fmt() { printf '%.2f' "$1"; }
echo
echo "garbage collection, $IMAGES images in $REPOS repositories ($((2 * IMAGES)) blobs, $GARBAGE_BLOBS garbage), quay on PostgreSQL"
printf '%-52s %10s\n' "" "seconds"
printf '%-52s %10s\n' "docker-registry garbage-collect (offline)" "$(fmt "$D_GC")"
printf '%-52s %10s\n' "quayctl gc, one online pass" "$(fmt "$Q_GC")"
printf '%-52s %10s\n' "quayctl gc + worker until the garbage files are gone" "$(fmt "$Q_ALL")"
printf '%-52s %10s\n' "ratio docker-registry / quayctl gc pass" "$(fmt "$(echo "$D_GC / $Q_GC" | bc -l)")x"
printf '%-52s %10s\n' "ratio docker-registry / quayctl gc + deletes" "$(fmt "$(echo "$D_GC / $Q_ALL" | bc -l)")x"
echo "files: quay $Q_FILES0 -> $Q_FILES1 (blobs removed by the pass: $removed), docker-registry $D_FILES0 -> $D_FILES1"
echo "pushes (not timed against each other; the client is the limit): quay-server $(fmt "$Q_PUSH") s, docker-registry $(fmt "$D_PUSH") s"
