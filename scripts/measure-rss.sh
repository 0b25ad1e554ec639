#!/usr/bin/env bash
# Pushes and pulls one large blob through a release quay-server on the embedded default and
# reports the server's peak resident memory (VmHWM) before and after, to show that memory
# stays flat as blob size grows. Usage: scripts/measure-rss.sh [SIZE_MIB] (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}"
PORT="${PORT:-5077}"
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -q -p quay-examples --bin quay-server
./target/release/quay-server --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.2; done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }
echo "idle peak RSS: $(( $(hwm) / 1024 )) MiB"

head -c "$((MIB * 1024 * 1024))" /dev/urandom >"$WORK/blob"
DIGEST="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
BASE="http://127.0.0.1:$PORT"

# Chunked: POST, one streamed PATCH of the whole file, PUT ?digest=.
LOC=$(curl -sf -X POST -D - -o /dev/null "$BASE/v2/rss/test/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
curl -sf -X PATCH -H 'Content-Type: application/octet-stream' -T "$WORK/blob" "$BASE$LOC" -o /dev/null
curl -sf -X PUT "$BASE$LOC?digest=$DIGEST" -o /dev/null
echo "after pushing ${MIB} MiB: peak RSS $(( $(hwm) / 1024 )) MiB"

GOT=$(curl -sf "$BASE/v2/rss/test/blobs/$DIGEST" | sha256sum | cut -d' ' -f1)
[ "sha256:$GOT" = "$DIGEST" ] || { echo "pulled blob does not match"; exit 1; }
echo "after pulling ${MIB} MiB: peak RSS $(( $(hwm) / 1024 )) MiB (digest verified)"
