#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time from its seed corpus
# (fuzz/corpus/TARGET). Fails on the first crash, leak, timeout or out-of-memory, leaving the
# input that caused it under fuzz/artifacts/TARGET/ (turn it into a regression test in the
# crate that owns the decoder, then add it to the seed corpus).
#
#   bash fuzz/run.sh                       # every target, 20 s each
#   ENTENTE_FUZZ_SECS=60 bash fuzz/run.sh  # longer
#   bash fuzz/run.sh csv idx               # some targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Only a stable toolchain is needed:
# RUSTC_BOOTSTRAP=1 lets it take the nightly flags cargo-fuzz passes (sanitizer, coverage).
# New inputs the fuzzer finds go to a scratch folder, not into the repository's corpus.
set -euo pipefail
cd "$(dirname "$0")"

SECS="${ENTENTE_FUZZ_SECS:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${ENTENTE_FUZZ_TARGET_DIR:-$PWD/target}"

command -v cargo-fuzz >/dev/null || {
  echo "fuzz/run.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 1
}

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo fuzz list)
fi

started=$(date +%s)
cargo fuzz build
built=$(date +%s)
echo "fuzz/run.sh: built ${#TARGETS[@]} targets in $((built - started)) s"

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
for target in "${TARGETS[@]}"; do
  mkdir -p "$SCRATCH/$target" "artifacts/$target"
  # -rss_limit_mb: a decoder that allocates what an input claims fails here, not in production.
  if ! cargo fuzz run "$target" "$SCRATCH/$target" "corpus/$target" -- \
      -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      >"$SCRATCH/$target.log" 2>&1; then
    tail -n 60 "$SCRATCH/$target.log" >&2
    echo "fuzz/run.sh: target $target failed; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$SCRATCH/$target.log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz/run.sh: $target: $runs runs in $SECS s, no crash"
done
echo "fuzz/run.sh: ${#TARGETS[@]} targets, $(($(date +%s) - started)) s in all"
