#!/usr/bin/env bash
# Crash-safety harness: kill -9 a steward server at random moments under load.
#
#   bash bench/chaos.sh [RUNS=1000] [SEED=random]
#
# RUNS runbook runs with non-idempotent side effects are started while the server is
# killed and restarted again and again; alerts fire and resolve against a webhook
# receiver that flaps; directory backups run. A last life without kills lets everything
# settle, then it counts lost and duplicated runs, silent re-executions, runs stuck
# running, lost and duplicated notifications, alerts resolved while their target still
# failed, and partial backups listed. Figures go to RELIABILITY.md.
# Not a test: it prints figures, and exits 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000}; SEED=${2:-$RANDOM$RANDOM}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example chaos
BIN="$CARGO_TARGET_DIR/release"
echo "seed $SEED (replay: bash bench/chaos.sh $RUNS $SEED)" >&2
"$BIN/examples/chaos" "$BIN/steward" "$RUNS" "$SEED"
