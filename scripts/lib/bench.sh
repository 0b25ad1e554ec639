# Sourced by the benchmark scripts: small helpers they share. Expects BIN (the folder of the
# release binaries) and a PIDS array, whose processes the caller's cleanup ends.

# Ends the processes in PIDS (a cleanup's first step) and waits for them.
end_processes() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
log() { printf '==> %s\n' "$*" >&2; }
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until URL answers at all (any status).
wait_up() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }

# Starts quay-server on 127.0.0.1:PORT with DATA_DIR (and CONFIG when given), logging to
# LOG, and waits until it answers; sets QUAY_PID and adds it to PIDS.
start_quay() { # port data-dir log [config]
    local config=()
    [ -n "${4:-}" ] && config=(--config "$4")
    "$BIN/quay-server" --listen "127.0.0.1:$1" --data-dir "$2" "${config[@]}" >"$3" 2>&1 &
    QUAY_PID=$!
    PIDS+=("$QUAY_PID")
    wait_up "http://127.0.0.1:$1/v2/"
}
