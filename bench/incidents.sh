#!/usr/bin/env bash
# Incident benchmark on this machine.
#
#   bash bench/incidents.sh [ALERTS=2000] [SERVICES=20]
#
# A storm of ALERTS firing alerts over SERVICES services through the Alertmanager
# ingest endpoint, with an incident policy grouping by service and paging a webhook:
# time to the first page, time until every alert is attached (one incident per
# service), steward's CPU for the storm, and the steady cost of the incident pass.
# Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ALERTS=${1:-2000}; SERVICES=${2:-20}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_incidents
BIN="$CARGO_TARGET_DIR/release"
"$BIN/examples/bench_incidents" storm "$BIN/steward" "$ALERTS" "$SERVICES"
