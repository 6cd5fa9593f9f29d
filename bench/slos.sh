#!/usr/bin/env bash
# SLO evaluation cost over a full window of history, side by side with a real Prometheus
# evaluating the same SLOs as the Sloth-style rules `steward slo export
# --prometheus-rules` writes.
#
#   bash bench/slos.sh [CHECKS=20000] [SLOS=1000] [SECONDS=300] [DAYS=30]
#
# Both sides hold DAYS days of history before the measured window:
# - Steward: every SLO's buckets as its store keeps them (3 days of minutes, hours
#   before), written into the data directory before the server starts;
# - Prometheus: every SLO's two counters scraped once a minute (Prometheus' default
#   interval: the cheapest history for it to read), written by `promtool tsdb
#   create-blocks-from openmetrics` a day at a time; the bench waits until
#   Prometheus has compacted them before measuring.
# Steward runs CHECKS HTTP checks every 10 s against a local target, SLOS of them with
# a 99.9 %/30-day SLO and the default four burn-rate alerts. Its SLO cost is measured
# directly: `steward_slo_cpu_seconds_total` (CPU of the SLO work in memory, per thread
# that did it) and `steward_slo_store_write_seconds_total` (wall time of writing the
# counts). As a cross-check, the same server without SLOs runs alone first, and the
# difference in process CPU is printed too (noisy: two 15-CPU-s/min runs).
# Prometheus scrapes the server's steward_slo_* series once a minute and evaluates the
# exported rules every 30 s (Sloth's default); its process CPU over the window and its
# rule groups' own evaluation time (prometheus_rule_group_last_duration_seconds).
# Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${1:-20000}; SLOS=${2:-1000}; SECONDS_=${3:-300}; DAYS=${4:-30}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_tool
BIN="$CARGO_TARGET_DIR/release"
TOOL="$BIN/examples/bench_tool"
work=$(mktemp -d); PIDS=""
trap 'kill $(jobs -p) $PIDS 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
slo_rows() { python3 -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute('select count(*) from slo_buckets').fetchone()[0])" "$1/steward.db"; }
# The sum of a metric's samples on a /metrics page (all label sets).
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m || index($1, m"{") == 1 {s += $2} END {print s+0}'; }
stop() { kill -TERM "$@" 2>/dev/null || true; for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done; }

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
STEWARD_PORT=$(free_port)
serve() { # config data port: starts a server, waits for /health, prints its pid
  STEWARD_LOG=warn "$BIN/steward" serve -c "$1" --data "$2" --listen "127.0.0.1:$3" --max-concurrency 512 >>"$2.log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$3/health" >/dev/null; do sleep 0.2; done
  echo "$pid"
}

# --- History. Steward: start once so the store exists, then write DAYS days of
# buckets per SLO (six events a minute, one bad minute in 997) as its roll-up leaves them.
pid=$(serve "$work/with-slos.yaml" "$work/b" "$STEWARD_PORT"); stop "$pid"
echo "==> writing $DAYS days of buckets for $SLOS SLOs into Steward's store"
python3 - "$work/b/steward.db" "$SLOS" "$DAYS" <<'PY'
import sqlite3, sys, time
db, slos, days = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = int(time.time()) // 60
minutes_from = (now - 3 * 1440) // 60 * 60          # slos::hours_before: 3 days of minutes
hours_from = -(-(now - days * 1440) // 60) * 60       # the first whole hour in the window
bad = lambda m: m % 997 == 0
c = sqlite3.connect(db)
c.execute("DELETE FROM slo_buckets")
def rows():
    for s in range(slos):
        name = f"s{s}"
        for h in range(hours_from, minutes_from, 60):
            nbad = sum(bad(m) for m in range(h, h + 60))
            yield (name, h, 60, 6 * 60 - nbad, 6 * 60, 60 - nbad, 60)
        for m in range(minutes_from, now):
            yield (name, m, 1, 6 - bad(m), 6, 0, 0)
c.executemany("INSERT INTO slo_buckets (slo, start_minute, minutes, good, total, good_slices, slices) VALUES (?,?,?,?,?,?,?)", rows())
c.commit()
print(f"    {c.execute('select count(*) from slo_buckets').fetchone()[0]:,} rows")
PY

# Prometheus: the same counters, a sample a minute, up to 5 minutes ago, as the
# server's scrape labels them (the live scrape continues the series after a reset).
echo "==> backfilling $DAYS days of counters for $SLOS SLOs into Prometheus"
mkdir -p "$work/prom"
T0=$(( $(date +%s) / 60 * 60 - 300 ))
for day in $(seq "$DAYS" -1 1); do
  python3 - "$work/day.om" "$SLOS" "$day" "$T0" "$DAYS" "$STEWARD_PORT" <<'PY'
import sys
out, slos, day, t0, days, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
start_min = t0 // 60 - days * 1440                 # the counters start at 0 here
first, last = t0 // 60 - day * 1440, t0 // 60 - (day - 1) * 1440
with open(out, "w") as f:
    for family, good in (("steward_slo_events", False), ("steward_slo_good_events", True)):
        f.write(f"# TYPE {family} counter\n")
        for s in range(slos):
            labels = f'instance="127.0.0.1:{port}",job="steward",slo="s{s}"'
            lines = []
            for m in range(first, last):
                n = m - start_min
                v = 6 * n - (n // 997 if good else 0)
                lines.append(f"{family}_total{{{labels}}} {v} {m * 60}\n")
            f.write("".join(lines))
    f.write("# EOF\n")
PY
  promtool tsdb create-blocks-from openmetrics -q "$work/day.om" "$work/prom" >/dev/null
done
rm -f "$work/day.om"

# --- Run A: the server without SLOs, alone (the cross-check's baseline).
echo "==> run A: $CHECKS checks, no SLOs, ${SECONDS_}s"
pid=$(serve "$work/base.yaml" "$work/a" "$(free_port)"); PIDS="$pid"
sleep 20
c0=$(cpu_s "$pid"); sleep "$SECONDS_"; cpu_a=$(echo "$(cpu_s "$pid") - $c0" | bc)
rss_a=$(awk '/VmHWM/ {print $2/1024}' "/proc/$pid/status")
stop "$pid"

# --- Prometheus over the backfilled history, compacted before anything is measured.
"$BIN/steward" slo export --prometheus-rules -c "$work/with-slos.yaml" > "$work/slo.rules.yml"
promtool check rules "$work/slo.rules.yml" >/dev/null
cat > "$work/prometheus.yml" <<YML
global: {scrape_interval: 1m, evaluation_interval: 30s}
rule_files: [slo.rules.yml]
scrape_configs:
  - job_name: steward
    static_configs: [{targets: ['127.0.0.1:$STEWARD_PORT']}]
    metric_relabel_configs: [{source_labels: [__name__], regex: 'steward_slo_.*', action: keep}]
YML
PPORT=$(free_port); PROM="http://127.0.0.1:$PPORT"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" --storage.tsdb.retention.time=$((DAYS + 15))d \
  --web.listen-address="127.0.0.1:$PPORT" --log.level=warn 2>"$work/prom.log" &
PPID_=$!; PIDS="$PIDS $PPID_"
until curl -sf "$PROM/-/ready" >/dev/null; do sleep 0.5; done
echo "==> waiting for Prometheus to compact the backfilled blocks"
last=-1
while :; do
  n=$(metric "$PROM" prometheus_tsdb_compactions_total)
  [ "$n" = "$last" ] && [ "$n" != 0 ] && break
  last=$n; sleep 75
done
echo "    $n compactions"

# --- Run B: the server with SLOs over their history, Prometheus scraping it.
echo "==> run B: $CHECKS checks, $SLOS SLOs, ${SECONDS_}s, Prometheus evaluating the same SLOs"
pid=$(serve "$work/with-slos.yaml" "$work/b" "$STEWARD_PORT"); PIDS="$PIDS $pid"
S="http://127.0.0.1:$STEWARD_PORT"
# Every tally loaded (the gauges of every SLO published), then a rule round on both sides.
until [ "$(curl -s "$S/metrics" | grep -c '^steward_slo_error_budget_remaining_ratio')" -ge "$SLOS" ]; do sleep 2; done
sleep 40
c0=$(cpu_s "$pid"); p0=$(cpu_s "$PPID_"); rows0=$(slo_rows "$work/b")
slo0=$(metric "$S" steward_slo_cpu_seconds_total); w0=$(metric "$S" steward_slo_store_write_seconds_total)
parts0=$(curl -s "$S/metrics" | grep '^steward_slo_cpu_seconds_total' || true)
comp0=$(metric "$PROM" prometheus_tsdb_compactions_total)
eval_sum=0; rounds=0; t_end=$(( $(date +%s) + SECONDS_ ))
while [ "$(date +%s)" -lt "$t_end" ]; do
  sleep 30
  e=$(metric "$PROM" prometheus_rule_group_last_duration_seconds)
  eval_sum=$(echo "$eval_sum + $e" | bc); rounds=$((rounds + 1))
done
cpu_b=$(echo "$(cpu_s "$pid") - $c0" | bc); pcpu=$(echo "$(cpu_s "$PPID_") - $p0" | bc); rows=$(( $(slo_rows "$work/b") - rows0 ))
slo_cpu=$(echo "$(metric "$S" steward_slo_cpu_seconds_total) - $slo0" | bc)
slo_write=$(echo "$(metric "$S" steward_slo_store_write_seconds_total) - $w0" | bc)
parts1=$(curl -s "$S/metrics" | grep '^steward_slo_cpu_seconds_total' || true)
comp=$(( $(metric "$PROM" prometheus_tsdb_compactions_total) - comp0 ))
missed=$(metric "$PROM" prometheus_rule_group_iterations_missed_total)
groups=$(curl -s "$PROM/metrics" | awk '/^prometheus_rule_group_rules/ {n+=1; r+=$2} END {print n+0, r+0}')
firing=$(curl -s "$PROM/api/v1/query?query=count(ALERTS)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
budget=$(curl -s "$PROM/api/v1/query?query=avg(slo:period_error_budget_remaining:ratio)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")')
sbudget=$(curl -s "$S/metrics" | awk '/^steward_slo_error_budget_remaining_ratio/ {s+=$2; n+=1} END {print n ? s/n : "none"}')
rss_b=$(awk '/VmHWM/ {print $2/1024}' "/proc/$pid/status"); prss=$(awk '/VmHWM/ {print $2/1024}' "/proc/$PPID_/status")
stop "$pid" "$PPID_"

echo "steward_slo_cpu_seconds_total by part over the window:"
python3 - "$parts0" "$parts1" <<'PY'
import sys
def parse(t): return {l.split()[0]: float(l.split()[1]) for l in t.splitlines() if l.strip()}
a, b = parse(sys.argv[1]), parse(sys.argv[2])
for k in sorted(b): print(f"  {k} {b[k] - a.get(k, 0.0):.3f} s")
PY
python3 - "$cpu_a" "$cpu_b" "$slo_cpu" "$slo_write" "$rows" "$SECONDS_" "$SLOS" "$CHECKS" "$pcpu" "$eval_sum" "$rounds" $groups "$firing" "$comp" "$missed" "$rss_a" "$rss_b" "$prss" "$DAYS" "$budget" "$sbudget" <<'PY'
import sys
a, b, slo_cpu, slo_write, rows, secs, slos, checks, pcpu, eval_sum, rounds, ngroups, nrules, firing, comp, missed, rss_a, rss, prss, days = map(float, sys.argv[1:21])
budget, sbudget = sys.argv[21], sys.argv[22]
per_min = lambda x: x / secs * 60
own = slo_cpu + slo_write
print(f"steward, {int(checks)} checks every 10 s, {int(slos)} SLOs over {days:.0f} days of buckets:")
print(f"  SLO work measured: {per_min(slo_cpu):.3f} CPU-s/min in memory + {per_min(slo_write):.3f} s/min writing counts = {per_min(own):.3f} s/min")
print(f"  cross-check, whole process: {per_min(a):.2f} CPU-s/min without SLOs (alone), {per_min(b):.2f} with -> difference {per_min(b - a):.2f}")
print(f"  store: {rows:.0f} slo_buckets rows in {secs:.0f} s ({rows/secs*86400:,.0f} a day before roll-up; about {slos*(4320+720):,.0f} at steady state); peak RSS {rss_a:.0f} MB without SLOs, {rss:.0f} MB with")
print(f"  mean budget remaining {sbudget}")
print(f"prometheus over {days:.0f} days of counters, {int(ngroups)} rule groups / {int(nrules)} rules every 30 s:")
print(f"  {per_min(pcpu):.2f} CPU-s/min (scrapes included; {comp:.0f} compactions in the window); rule-group time {eval_sum/max(rounds,1):.1f} s per round over {rounds:.0f} rounds; {missed:.0f} missed iterations; {int(firing)} alerts; peak RSS {prss:.0f} MB")
print(f"  mean budget remaining {budget}")
if own > 0:
    print(f"ratio (prometheus CPU / steward SLO work): {pcpu/own:.1f}x")
PY
