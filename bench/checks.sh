#!/usr/bin/env bash
# Check throughput, side by side with prometheus-blackbox-exporter, on this machine.
#
#   bash bench/checks.sh [CHECKS=20000] [INTERVAL_S=10] [SECONDS=60]
#
# Steward: CHECKS HTTP checks against a local target, each every INTERVAL_S seconds,
# measured over SECONDS after a warm-up of one interval: sustained checks/s, CPU-seconds
# per 1,000 checks (utime+stime of the steward process from /proc), peak RSS (VmHWM) and
# scheduling lag p50/p99 (from steward_scheduler_lag_seconds). blackbox_exporter: the same
# probe rate pushed through its /probe endpoint (module http_2xx) by a load driver, and its
# CPU-seconds per 1,000 probes measured the same way. Not a test: it prints figures.
# STEWARD_STORE=postgres://… runs steward on PostgreSQL; with REPLICAS=N (N > 1) N-1 more
# replicas join it on that store once it leads, and their CPU over the window is printed
# (the leader runs every check; followers stand by). SKIP_BLACKBOX=1 measures steward only.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${1:-20000}; INTERVAL=${2:-10}; SECONDS_=${3:-60}
RATE=$((CHECKS / INTERVAL))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_tool
BIN="$CARGO_TARGET_DIR/release"
TOOL="$BIN/examples/bench_tool"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }   # clock ticks are 100/s on Linux

TARGET_PORT=$(free_port); "$TOOL" target "$TARGET_PORT" & sleep 0.5

# ---- Steward -------------------------------------------------------------------------
{
  echo "checks:"
  for i in $(seq 0 $((CHECKS - 1))); do
    printf '  - name: c%d\n    interval: %ss\n    timeout: 5s\n    http: {url: "http://127.0.0.1:%d/c/%d"}\n' "$i" "$INTERVAL" "$TARGET_PORT" "$i"
  done
} > "$work/steward.yaml"
PORT=$(free_port)
STEWARD_LOG=warn "$BIN/steward" serve -c "$work/steward.yaml" --data "$work/data" --listen "127.0.0.1:$PORT" --max-concurrency 512 2>"$work/steward.log" &
SPID=$!
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.2; done
FOLLOWERS=()
if [ -n "${STEWARD_STORE:-}" ]; then
  until curl -s "http://127.0.0.1:$PORT/health/ready" | grep -q '"role":"leader"'; do sleep 0.2; done
  for i in $(seq 2 "${REPLICAS:-1}"); do
    p=$(free_port)
    STEWARD_LOG=warn "$BIN/steward" serve -c "$work/steward.yaml" --data "$work/data$i" --listen "127.0.0.1:$p" --max-concurrency 512 2>"$work/steward$i.log" &
    FOLLOWERS+=($!)
    until curl -s "http://127.0.0.1:$p/health/ready" | grep -q '"role":"follower"'; do sleep 0.2; done
  done
fi
sleep "$INTERVAL"   # warm-up: every check has started once
runs() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^steward_check_runs_total/ {s+=$2} END {print s+0}'; }
r0=$(runs); c0=$(cpu_s $SPID); t0=$(date +%s.%N)
f0=(); for f in "${FOLLOWERS[@]}"; do f0+=("$(cpu_s "$f")"); done
curl -s "http://127.0.0.1:$PORT/metrics" | grep '^steward_scheduler_lag_seconds_bucket' > "$work/lag0"
sleep "$SECONDS_"
r1=$(runs); c1=$(cpu_s $SPID); t1=$(date +%s.%N)
followers_cpu=""; for i in "${!FOLLOWERS[@]}"; do followers_cpu+=" $(echo "$(cpu_s "${FOLLOWERS[$i]}") - ${f0[$i]}" | bc)"; done
curl -s "http://127.0.0.1:$PORT/metrics" | grep '^steward_scheduler_lag_seconds_bucket' > "$work/lag1"
rss_mb=$(awk '/VmHWM/ {print $2/1024}' "/proc/$SPID/status")
failures=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^steward_check_runs_total.*result="failure"/ {s+=$2} END {print s+0}')
kill -TERM $SPID "${FOLLOWERS[@]}"; wait $SPID "${FOLLOWERS[@]}" 2>/dev/null || true
python3 - "$work/lag0" "$work/lag1" "$r0" "$r1" "$c0" "$c1" "$t0" "$t1" "$rss_mb" "$CHECKS" "$INTERVAL" "$failures" > "$work/steward.txt" <<'PY'
import sys, re
def buckets(path):
    out = []
    for line in open(path):
        m = re.search(r'le="([^"]+)"\} (\S+)', line)
        out.append((float('inf') if m.group(1) == '+Inf' else float(m.group(1)), float(m.group(2))))
    return out
b0, b1 = buckets(sys.argv[1]), buckets(sys.argv[2])
cum = [(le, c1 - c0) for (le, c1), (_, c0) in zip(b1, b0)]
total = cum[-1][1]
def q(p):
    target, prev_le, prev_c = p * total, 0.0, 0.0
    for le, c in cum:
        if c >= target:
            if le == float('inf'): return prev_le
            return prev_le + (le - prev_le) * ((target - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
r0, r1, c0, c1, t0, t1, rss, n, interval, failures = map(float, sys.argv[3:])
runs, secs, cpu = r1 - r0, t1 - t0, c1 - c0
print(f"steward: {int(n)} checks every {int(interval)}s: {runs/secs:.0f} checks/s sustained, {cpu/runs*1000:.3f} CPU-s per 1000 checks, "
      f"peak RSS {rss:.0f} MB, scheduling lag p50 {q(0.5)*1000:.2f} ms p99 {q(0.99)*1000:.2f} ms, failed runs {int(failures)}")
print(f"STEWARD_CPU_PER_1000={cpu/runs*1000:.4f}")
PY
cat "$work/steward.txt" | head -1
[ ${#FOLLOWERS[@]} -gt 0 ] && echo "steward followers (${#FOLLOWERS[@]}): CPU-s over the ${SECONDS_}s window:$followers_cpu"

# ---- blackbox_exporter ---------------------------------------------------------------
[ -n "${SKIP_BLACKBOX:-}" ] && exit 0
BB=$(command -v prometheus-blackbox-exporter || true)
if [ -z "$BB" ]; then echo "blackbox_exporter not installed: apt-get install prometheus-blackbox-exporter"; exit 0; fi
cat > "$work/bb.yml" <<'YML'
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http: {preferred_ip_protocol: ip4}
YML
BPORT=$(free_port)
"$BB" --config.file="$work/bb.yml" --web.listen-address="127.0.0.1:$BPORT" --log.level=warn 2>"$work/bb.log" &
BPID=$!
until curl -sf "http://127.0.0.1:$BPORT/-/healthy" >/dev/null; do sleep 0.2; done
c0=$(cpu_s $BPID)
read -r ok failed elapsed < <("$TOOL" drive "http://127.0.0.1:$BPORT/probe?module=http_2xx&target=http://127.0.0.1:$TARGET_PORT/c/" "$RATE" "$SECONDS_" 512)
c1=$(cpu_s $BPID)
bb_rss=$(awk '/VmHWM/ {print $2/1024}' "/proc/$BPID/status")
kill $BPID
python3 -c "
ok,failed,el,c0,c1,rss=$ok,$failed,$elapsed,$c0,$c1,$bb_rss
cpu=c1-c0
print(f'blackbox_exporter: offered {$RATE}/s: {ok/el:.0f} probes/s succeeded ({failed} failed), {cpu/ok*1000:.3f} CPU-s per 1000 probes, peak RSS {rss:.0f} MB')
"
steward_cpu=$(grep STEWARD_CPU_PER_1000 "$work/steward.txt" | cut -d= -f2)
python3 -c "
bb=($c1-$c0)/$ok*1000; st=$steward_cpu
print(f'probes per CPU-second: steward {1000/st:.0f}, blackbox_exporter {1000/bb:.0f} -> {bb/st:.1f}x')
"
