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
#    (bench/checks.sh: checks/s, CPU-s per 1,000 checks, RSS, lag; on PostgreSQL with
#    two more replicas following, their CPU printed too) and alert ingest per
#    CPU-second (bench_alerts ingest), on SQLite and then on PostgreSQL (a fresh database
#    on the machine's PostgreSQL at 127.0.0.1:5432, through STEWARD_STORE). On PostgreSQL
#    the server's own CPU over each step is printed too (steward's figures leave it out).
# SKIP_FAILOVER=1 runs step 2 only.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20}; TTL=${2:-15}; CHECKS=${3:-20000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_failover --example bench_alerts --example bench_tool
BIN="$CARGO_TARGET_DIR/release"

if [ -z "${SKIP_FAILOVER:-}" ]; then
  echo "==> failover: $KILLS kills, lease TTL ${TTL}s"
  "$BIN/examples/bench_failover" "$BIN/steward" "$KILLS" "$TTL" "${SEED:-$RANDOM}"
fi

fresh_db() {
  psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS steward_bench" -c "CREATE DATABASE steward_bench" >/dev/null
  echo "postgres://postgres@127.0.0.1:5432/steward_bench"
}
# CPU-seconds the machine's PostgreSQL has used: its live processes' own time plus what
# the postmaster collected from backends that exited.
pg_cpu() {
  for p in $(pgrep -u postgres); do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}'; done |
    awk -v hz="$(getconf CLK_TCK)" '{s+=$1} END {printf "%.2f", s/hz}'
}
pg_cpu_since() { [ "$store" = postgres ] && echo "  postgres server: $(echo "$(pg_cpu) - $1" | bc) CPU-s over the step"; true; }
for store in sqlite postgres; do
  if [ "$store" = postgres ]; then export STEWARD_STORE; STEWARD_STORE=$(fresh_db); else unset STEWARD_STORE; fi
  echo "==> $store: $CHECKS checks every 10s for 30s"
  before=$(pg_cpu)
  # On PostgreSQL, three replicas: the leader runs the checks, two followers stand by.
  REPLICAS=3 SKIP_BLACKBOX=1 bash bench/checks.sh "$CHECKS" 10 30 | grep '^steward'
  pg_cpu_since "$before"
  [ "$store" = postgres ] && STEWARD_STORE=$(fresh_db)
  echo "==> $store: alert ingest (20,000 alerts)"
  before=$(pg_cpu)
  "$BIN/examples/bench_alerts" ingest "$BIN/steward" "$(command -v prometheus-alertmanager || echo /bin/false)" 20000 100 2>&1 | grep -i steward || true
  pg_cpu_since "$before"
done
