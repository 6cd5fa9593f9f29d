#!/usr/bin/env bash
# SLO evaluation cost, side by side with a real Prometheus evaluating the same SLOs as
# the Sloth-style rules `steward slo export --prometheus-rules` writes.
#
#   bash bench/slos.sh [CHECKS=20000] [SLOS=1000] [SECONDS=120]
#
# Steward: CHECKS HTTP checks every 10 s against a local target, run twice over the same
# window — without SLOs, then with SLOS SLOs (each over its own check, the default four
# burn-rate alerts) — so the difference in CPU-seconds (utime+stime from /proc) is what
# the SLOs cost: counting events, evaluating 4 × SLOS burn-rate rules every 10 s, the
# gauges every 15 s. Store growth: the slo_buckets rows and bytes added over the window.
# Prometheus (Debian's): scrapes the second server's /metrics every 15 s (keeping only
# the steward_slo_* series) and evaluates the exported rules every 30 s, Sloth's
# default; its CPU-seconds over the same window, and the rule groups' own evaluation
# time (prometheus_rule_group_last_duration_seconds, summed per evaluation round).
# Caveat, printed with the figures: Prometheus' range queries here hold minutes of
# samples, not 30 days — its figure is a lower bound of its steady-state cost.
# Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${1:-20000}; SLOS=${2:-1000}; SECONDS_=${3:-120}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_tool
BIN="$CARGO_TARGET_DIR/release"
TOOL="$BIN/examples/bench_tool"
work=$(mktemp -d); PIDS=""
trap 'kill $(jobs -p) $PIDS 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
slo_rows() { python3 -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute('select count(*) from slo_buckets').fetchone()[0])" "$1/steward.db"; }

TARGET_PORT=$(free_port); "$TOOL" target "$TARGET_PORT" & sleep 0.5
{
  echo "services: [{name: api}]"
  echo "checks:"
  for i in $(seq 0 $((CHECKS - 1))); do
    printf '  - {name: c%d, service: api, interval: 10s, timeout: 5s, http: {url: "http://127.0.0.1:%d/c/%d"}}\n' "$i" "$TARGET_PORT" "$i"
  done
} > "$work/base.yaml"
cp "$work/base.yaml" "$work/with-slos.yaml"
{
  echo "slos:"
  for i in $(seq 0 $((SLOS - 1))); do
    printf '  - {name: s%d, service: api, objective: 99.9, window: 30d, sli: {check: c%d}}\n' "$i" $((i * CHECKS / SLOS))
  done
} >> "$work/with-slos.yaml"

# One steward run (config, data directory, port) over the window: prints "CPU_SECONDS
# SLO_ROWS_ADDED DATA_BYTES_ADDED PID PORT" and leaves the server running (the caller
# stops it).
run() {
  local config=$1 data=$2 port=$3
  STEWARD_LOG=warn "$BIN/steward" serve -c "$config" --data "$data" --listen "127.0.0.1:$port" --max-concurrency 512 2>"$data.log" &
  local pid=$!
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
  sleep 20   # warm-up: every check has run, every tally loaded
  local c0 rows0 bytes0 c1 rows1 bytes1
  c0=$(cpu_s $pid); rows0=$(slo_rows "$data"); bytes0=$(du -sb "$data" | cut -f1)
  sleep "$SECONDS_"
  c1=$(cpu_s $pid); rows1=$(slo_rows "$data"); bytes1=$(du -sb "$data" | cut -f1)
  echo "$(echo "$c1 - $c0" | bc) $((rows1 - rows0)) $((bytes1 - bytes0)) $pid $port"
}

# The servers start inside `run`'s subshell: stop them by pid and wait until they are gone.
stop() { kill -TERM "$@" 2>/dev/null || true; for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done; }
read -r cpu_a _ _ pid_a _ < <(run "$work/base.yaml" "$work/a" "$(free_port)")
rss_a=$(awk '/VmHWM/ {print $2/1024}' "/proc/$pid_a/status")
PIDS="$pid_a"; stop "$pid_a"

# Prometheus, started before the second server so it scrapes it from its first second.
"$BIN/steward" slo export --prometheus-rules -c "$work/with-slos.yaml" > "$work/slo.rules.yml"
promtool check rules "$work/slo.rules.yml" >/dev/null
STEWARD_PORT=$(free_port)
cat > "$work/prometheus.yml" <<YML
global: {scrape_interval: 15s, evaluation_interval: 30s}
rule_files: [slo.rules.yml]
scrape_configs:
  - job_name: steward
    static_configs: [{targets: ['127.0.0.1:$STEWARD_PORT']}]
    metric_relabel_configs: [{source_labels: [__name__], regex: 'steward_slo_.*', action: keep}]
YML
PPORT=$(free_port)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" --web.listen-address="127.0.0.1:$PPORT" --log.level=warn 2>"$work/prom.log" &
PPID_=$!
until curl -sf "http://127.0.0.1:$PPORT/-/ready" >/dev/null; do sleep 0.2; done

# The second run, on the port Prometheus scrapes.
p0=$(cpu_s $PPID_)
read -r cpu_b rows bytes pid_b _ < <(run "$work/with-slos.yaml" "$work/b" "$STEWARD_PORT")
PIDS="$pid_b"
p1=$(cpu_s $PPID_)
rule_eval=$(curl -s "http://127.0.0.1:$PPORT/metrics" | awk '/^prometheus_rule_group_last_duration_seconds/ {s+=$2} END {print s+0}')
groups=$(curl -s "http://127.0.0.1:$PPORT/metrics" | awk '/^prometheus_rule_group_rules/ {n+=1; r+=$2} END {print n+0, r+0}')
firing=$(curl -s "http://127.0.0.1:$PPORT/api/v1/query?query=count(ALERTS)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
rss_b=$(awk '/VmHWM/ {print $2/1024}' "/proc/$pid_b/status")
prss=$(awk '/VmHWM/ {print $2/1024}' "/proc/$PPID_/status")
stop "$pid_b" "$PPID_"

python3 - "$cpu_a" "$cpu_b" "$rows" "$bytes" "$SECONDS_" "$SLOS" "$CHECKS" "$(echo "$p1 - $p0" | bc)" "$rule_eval" $groups "$firing" "$rss_a" "$rss_b" "$prss" <<'PY'
import sys
a, b, rows, nbytes, secs, slos, checks, pcpu, eval_s, ngroups, nrules, firing, rss_a, rss, prss = map(float, sys.argv[1:])
per_min = lambda x: x / secs * 60
slo_cpu = max(b - a, 0.0)
print(f"steward, {int(checks)} checks every 10 s: {per_min(a):.2f} CPU-s/min without SLOs, {per_min(b):.2f} with {int(slos)} SLOs "
      f"-> the SLOs cost {per_min(slo_cpu):.3f} CPU-s per minute; peak RSS {rss_a:.0f} MB without, {rss:.0f} MB with")
print(f"steward store growth: {rows:.0f} slo_buckets rows in {secs:.0f} s ({rows/secs*86400:,.0f} rows/day before roll-up; "
      f"steady state about {slos*(4320+720):,.0f} rows: 3 days of minutes and the window's hours per SLO); data directory +{nbytes/1e6:.1f} MB over the window (results included)")
print(f"prometheus, {int(ngroups)} rule groups / {int(nrules)} rules every 30 s: {per_min(pcpu):.3f} CPU-s per minute (scrapes included); "
      f"one evaluation round {eval_s*1000:.0f} ms of rule-group time -> {eval_s*2:.3f} s per minute; {int(firing)} alerts; peak RSS {prss:.0f} MB")
print("caveat: Prometheus' windows hold minutes of samples here, not 30 days: its cost is a lower bound of its steady state")
if slo_cpu > 0:
    print(f"ratio (prometheus CPU / steward SLO CPU): {pcpu/slo_cpu:.1f}x")
PY
