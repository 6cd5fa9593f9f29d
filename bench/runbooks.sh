#!/usr/bin/env bash
# Runbook engine benchmark on this machine.
#
#   bash bench/runbooks.sh [STEPS=1000] [RUNS=100] [RUN_STEPS=20] [HISTORY=200000]
#
# 1. One run of STEPS trivial steps (sleep 0s, then `true` processes): engine overhead
#    per step beyond the commands' own time, durable state on.
# 2. RUNS concurrent runs of RUN_STEPS steps: throughput and per-step cost against one
#    run alone.
# 3. HISTORY finished runs in the store: the run list, filters and audit query times.
# Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1000}; RUNS=${2:-100}; RUN_STEPS=${3:-20}; HISTORY=${4:-200000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_runbooks
BIN="$CARGO_TARGET_DIR/release"
"$BIN/examples/bench_runbooks" steps "$BIN/steward" "$STEPS"
"$BIN/examples/bench_runbooks" concurrent "$BIN/steward" "$RUNS" "$RUN_STEPS"
"$BIN/examples/bench_runbooks" history "$BIN/steward" "$HISTORY"
