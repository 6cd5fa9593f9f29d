#!/usr/bin/env bash
# Replicas on PostgreSQL, measured (not a test: it prints figures).
#
#   bash bench/replicas.sh [KILLS=20] [TTL_S=15] [CHECKS=20000]
#
# 1. Failover: three replicas on a private PostgreSQL cluster, the leader killed with
#    SIGKILL KILLS times at random moments while four alerts flap into a webhook:
#    takeover and first action of the new leader (p50, max), lost and duplicated
#    notifications over all the kills (bench_failover).
# 2. The same server on each store, side by side: CHECKS HTTP checks every 10 s for 30 s
#    (bench/checks.sh: checks/s, CPU-s per 1,000 checks, RSS, lag) and alert ingest per
#    CPU-second (bench_alerts ingest), on SQLite and then on PostgreSQL (a fresh database
#    on the machine's PostgreSQL at 127.0.0.1:5432, through STEWARD_STORE).
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20}; TTL=${2:-15}; CHECKS=${3:-20000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_failover --example bench_alerts --example bench_tool
BIN="$CARGO_TARGET_DIR/release"

echo "==> failover: $KILLS kills, lease TTL ${TTL}s"
"$BIN/examples/bench_failover" "$BIN/steward" "$KILLS" "$TTL" "${SEED:-$RANDOM}"

fresh_db() {
  psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS steward_bench" -c "CREATE DATABASE steward_bench" >/dev/null
  echo "postgres://postgres@127.0.0.1:5432/steward_bench"
}
for store in sqlite postgres; do
  if [ "$store" = postgres ]; then export STEWARD_STORE; STEWARD_STORE=$(fresh_db); else unset STEWARD_STORE; fi
  echo "==> $store: $CHECKS checks every 10s for 30s"
  SKIP_BLACKBOX=1 bash bench/checks.sh "$CHECKS" 10 30 | grep '^steward'
  [ "$store" = postgres ] && STEWARD_STORE=$(fresh_db)
  echo "==> $store: alert ingest (20,000 alerts)"
  "$BIN/examples/bench_alerts" ingest "$BIN/steward" "$(command -v prometheus-alertmanager || echo /bin/false)" 20000 100 2>&1 | grep -i steward || true
done
