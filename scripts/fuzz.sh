#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, cargo-fuzz) and runs each for a short, fixed number of
# iterations with a fixed seed, so a parser that panics on some input fails CI. Long runs are
# described in fuzz/README.md. Installs cargo-fuzz when it is missing.
#
# The machine has stable Rust only: cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1
# unlocks. FUZZ_RUNS overrides the iterations per target (20000).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

log() { printf '==> %s\n' "$*" >&2; }

CARGO_FUZZ_VERSION=0.13.2
RUNS="${FUZZ_RUNS:-20000}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

log "building the fuzz targets"
cargo fuzz build

# A fresh corpus for each run, so that a run depends only on the seed and the committed seeds.
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT

for target in $(cargo fuzz list); do
    extra=()
    if [ -d "seeds/$target" ]; then extra+=("seeds/$target"); fi
    args=(-runs="$RUNS" -seed=1 -timeout=30)
    if [ -f "dict/$target.dict" ]; then args+=(-dict="dict/$target.dict"); fi
    log "fuzzing $target ($RUNS runs)"
    mkdir -p "$corpus/$target"
    # On a crash cargo fuzz exits non-zero and names the input saved in fuzz/artifacts/.
    cargo fuzz run "$target" "$corpus/$target" "${extra[@]}" -- "${args[@]}"
done
log "fuzzing passed"
