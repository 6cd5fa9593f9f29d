#!/usr/bin/env bash
# Alerting benchmarks, side by side with prometheus-alertmanager, on this machine.
#
#   bash bench/alerts.sh [LATENCY_ALERTS=200] [INGEST_ALERTS=20000]
#
# 1. Threshold crossed → webhook delivered: LATENCY_ALERTS checks (1 s interval,
#    failure_threshold 1), one alert rule each, group_wait 0s; the checks start failing
#    one after another, 100 ms apart. Per alert: from the target serving the failing
#    response to the webhook receiving the firing notification; p50 / p99 / max.
# 2. Ingest: INGEST_ALERTS distinct alerts posted in batches of 100 to steward's
#    Alertmanager ingest endpoint, then to Alertmanager's /api/v2/alerts; both group by
#    instance (100 groups) into one webhook. Alerts routed per CPU-second of each server
#    (utime+stime from /proc) until the receiver has seen every alert.
#    BENCH_GROUP_INTERVAL=15s (both servers' group_wait and group_interval; default 1s)
#    measures ingest alone: one flush per group, after every alert is in.
# Not a test: it prints figures. Needs prometheus-alertmanager (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
LATENCY_ALERTS=${1:-200}; INGEST_ALERTS=${2:-20000}
command -v prometheus-alertmanager >/dev/null || { echo "error: apt-get install prometheus-alertmanager" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_alerts
BIN="$CARGO_TARGET_DIR/release"
"$BIN/examples/bench_alerts" latency "$BIN/steward" "$LATENCY_ALERTS"
"$BIN/examples/bench_alerts" ingest "$BIN/steward" "$(command -v prometheus-alertmanager)" "$INGEST_ALERTS" 100
