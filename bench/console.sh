#!/usr/bin/env bash
# Console page times with a large store: CHECKS checks (in SERVICES services), ALERTS
# firing alerts (sent through the Alertmanager webhook), RUNS finished runs (written into
# the SQLite store before steward starts, 3 events each), then every console page
# requested N times by a signed-in session. Prints, per page, the server's own time
# (the Server-Timing header: from the request reaching the console to the response
# ready) p50 / p95 / max, and the page size. Not a test: it prints figures.
#
#   bash bench/console.sh [CHECKS=20000] [ALERTS=20000] [RUNS=200000] [N=30]
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${1:-20000}; ALERTS=${2:-20000}; RUNS=${3:-200000}; N=${4:-30}; SERVICES=100
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward --example bench_tool
BIN="$CARGO_TARGET_DIR/release"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TARGET_PORT=$(free_port); "$BIN/examples/bench_tool" target "$TARGET_PORT" & sleep 0.5

python3 - "$work/steward.yaml" "$CHECKS" "$SERVICES" "$TARGET_PORT" <<'PY'
import sys
path, checks, services, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(path, "w") as f:
    f.write("services:\n")
    for s in range(services):
        deps = f", depends_on: [s{s-1}]" if s % 10 else ""
        f.write(f"  - {{name: s{s}, tier: {1 + s % 3}{deps}}}\n")
    f.write("checks:\n")
    for i in range(checks):
        # One check in 50 points at a closed port: failing, with a reason.
        url = f"http://127.0.0.1:{port}/c/{i}" if i % 50 else "http://127.0.0.1:9/down"
        f.write(f"  - {{name: c{i}, service: s{i % services}, interval: 60s, timeout: 5s, http: {{url: \"{url}\"}}}}\n")
    f.write("runbooks:\n  - name: deploy\n    params: {version: string}\n    steps:\n      - {name: roll, shell: {script: 'echo rolling'}}\n")
PY
TOKEN=$("$BIN/steward" token create --name bench --role operator --data "$work/data" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 - "$work/data/steward.db" "$RUNS" <<'PY'
import sqlite3, sys, time, json
db, runs = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = int(time.time() * 1000)
rows = []
for i in range(runs):
    created = now - (runs - i) * 1000
    rows.append(("deploy", json.dumps({"version": f"v{i}"}), "succeeded", "manual", "bench", created, created + 800, created + 800, "null", "bench"))
c.executemany("INSERT INTO runs (runbook, params, status, trigger, started_by, created_ms, finished_ms, heartbeat_ms, outputs, owner) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
events = []
for rid in range(1, runs + 1):
    at = now - (runs - rid + 1) * 1000
    for kind, msg, audit in (("run_started", "started by bench", 1), ("output", "rolling", 0), ("run_finished", "succeeded", 1)):
        events.append((rid, at, kind, "roll", "bench", msg, "null", audit))
c.executemany("INSERT INTO run_events (run_id, at_ms, kind, step, actor, message, data, audit) VALUES (?,?,?,?,?,?,?,?)", events)
c.commit()
PY
# 90 days of hourly rollups and daily sums for every check (what compaction leaves): the public status
# page's uptime bars read them. One check in 50 failed for an hour a day.
python3 - "$work/data/steward.db" "$CHECKS" <<'PY'
import sqlite3, sys, time
db, checks = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.execute("PRAGMA synchronous=OFF")
hour = int(time.time() // 3600) * 3600 * 1000
def rows():
    for i in range(checks):
        for h in range(1, 90 * 24 + 1):
            failed = 60 if i % 50 == 0 and h % 24 == 3 else 0
            yield (f"c{i}", hour - h * 3_600_000, 60, failed, 600.0, 30.0)
c.executemany("INSERT INTO check_rollups (check_name, hour_ms, runs, failures, latency_sum_ms, latency_max_ms) VALUES (?,?,?,?,?,?)", rows())
# Compaction writes each day's sums with its hours; so does the seed.
c.execute("""INSERT INTO check_days (check_name, day_ms, runs, failures, latency_sum_ms, latency_max_ms)
             SELECT check_name, (hour_ms / 86400000) * 86400000, sum(runs), sum(failures), sum(latency_sum_ms), max(latency_max_ms)
             FROM check_rollups GROUP BY 1, 2""")
c.commit()
PY
PORT=$(free_port)
STEWARD_LOG=warn,steward::api::uptime=debug "$BIN/steward" serve -c "$work/steward.yaml" --data "$work/data" --listen "127.0.0.1:$PORT" --max-concurrency 512 2>"$work/steward.log" &
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.2; done
BASE="http://127.0.0.1:$PORT"
# ALERTS alerts in batches of 1,000 through the Alertmanager webhook.
python3 - "$BASE" "$TOKEN" "$ALERTS" <<'PY'
import json, sys, urllib.request
base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for start in range(0, n, 1000):
    alerts = [{"status": "firing", "labels": {"alertname": f"Bench{i % 200}", "instance": f"host-{i}", "service": f"s{i % 100}", "severity": "warning"},
               "annotations": {"summary": f"bench alert {i}"}, "startsAt": "2026-01-01T00:00:00Z"} for i in range(start, min(n, start + 1000))]
    body = json.dumps({"version": "4", "status": "firing", "receiver": "bench", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://am", "alerts": alerts}).encode()
    req = urllib.request.Request(base + "/api/v1/ingest/alertmanager", data=body, headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
sleep 65   # every check has run once
COOKIE=$(curl -s -D - -o /dev/null --data-urlencode "token=$TOKEN" "$BASE/console/sign-in" | sed -n 's/^set-cookie: steward_session=\([^;]*\).*/\1/ip')
echo "store: $CHECKS checks in $SERVICES services, $(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/alerts" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["alerts"]))') alerts, $RUNS runs; $N requests per page"
printf '%-44s %9s %9s %9s %10s\n' page "p50 ms" "p95 ms" "max ms" "bytes"
for page in /console "/console/checks" "/console/checks?health=unhealthy" "/console/checks/c1?range=24h" "/console/checks/c1?range=90d" \
            /console/incidents /console/alerts /console/runs "/console/runs?status=failed" "/console/runs/$RUNS" /console/runbooks \
            /console/runbooks/deploy /console/oncall /console/backups /console/audit "/console/audit?actor=nobody"; do
  for i in $(seq "$N"); do
    curl -s -o "$work/page" -D - -b "steward_session=$COOKIE" "$BASE$page" | sed -n 's/^server-timing: app;dur=\([0-9.]*\).*/\1/ip'
  done | sort -n > "$work/times"
  size=$(wc -c < "$work/page")
  awk -v page="$page" -v size="$size" '{a[NR]=$1} END {printf "%-44s %9.2f %9.2f %9.2f %10d\n", page, a[int((NR+1)/2)], a[int(NR*0.95+0.5)], a[NR], size}' "$work/times"
done

# ---- The public status page: services and their 90-day uptime bars -------------------
# No Server-Timing there (it is public): wall time as curl sees it on loopback. The
# server read every check's 90 days at start, in the background (its log says how long
# that took); the first request is served that reading and, the reading being stale by
# now, has the next one read behind it, while the requests measured here are served.
echo
echo "public status page, $SERVICES services, $CHECKS checks with 90 days of hourly rollups (curl time_total)"
sed -n 's/.*read the uptime history.*took_ms=\([0-9]*\).*/uptime history read at start, in the background: \1 ms/p' "$work/steward.log" | head -1
printf '%-44s %9s %9s %9s %10s\n' request "p50 ms" "p95 ms" "max ms" "bytes"
curl -s -o "$work/page" -w '%{time_total}\n' "$BASE/" | awk -v size="$(wc -c < "$work/page")" '{printf "%-44s %9.2f %9s %9s %10s\n", "/ (first after start)", $1 * 1000, "", "", ""}'
for page in / /status.json; do
  for i in $(seq "$N"); do curl -s -o "$work/page" -w '%{time_total}\n' "$BASE$page"; done | awk '{print $1 * 1000}' | sort -n > "$work/times"
  size=$(wc -c < "$work/page")
  awk -v page="$page" -v size="$size" '{a[NR]=$1} END {printf "%-44s %9.2f %9.2f %9.2f %10d\n", page, a[int((NR+1)/2)], a[int(NR*0.95+0.5)], a[NR], size}' "$work/times"
done

# ---- Side by side: listing the same ALERTS alerts ------------------------------------
# Steward's JSON API and console alerts page vs Alertmanager's /api/v2/alerts (what its
# UI loads), each holding the same ALERTS alerts; wall time of the whole response as
# curl sees it on loopback (Alertmanager sends no Server-Timing). SKIP_ALERTMANAGER=1
# leaves it out.
if [ -z "${SKIP_ALERTMANAGER:-}" ]; then
  command -v prometheus-alertmanager >/dev/null || { echo "error: apt-get install prometheus-alertmanager (or SKIP_ALERTMANAGER=1)" >&2; exit 1; }
  AM_PORT=$(free_port)
  printf 'route:\n  receiver: bench\n  group_by: [alertname]\nreceivers:\n  - name: bench\n' > "$work/am.yml"
  prometheus-alertmanager --config.file="$work/am.yml" --storage.path="$work/am" --web.listen-address="127.0.0.1:$AM_PORT" \
    --cluster.listen-address= >/dev/null 2>&1 &
  until curl -sf "http://127.0.0.1:$AM_PORT/-/ready" >/dev/null; do sleep 0.2; done
  python3 - "http://127.0.0.1:$AM_PORT" "$ALERTS" <<'PY'
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
for start in range(0, n, 1000):
    alerts = [{"labels": {"alertname": f"Bench{i % 200}", "instance": f"host-{i}", "service": f"s{i % 100}", "severity": "warning"},
               "annotations": {"summary": f"bench alert {i}"}, "startsAt": "2026-01-01T00:00:00Z"} for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(base + "/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
  echo
  echo "listing $ALERTS alerts, whole response on loopback (curl time_total), $N requests each"
  printf '%-44s %9s %9s %9s %10s\n' request "p50 ms" "p95 ms" "max ms" "bytes"
  timed() {  # label, then curl arguments
    local label=$1; shift
    for i in $(seq "$N"); do curl -s -o "$work/page" -w '%{time_total}\n' "$@"; done | awk '{print $1 * 1000}' | sort -n > "$work/times"
    awk -v page="$label" -v size="$(wc -c < "$work/page")" '{a[NR]=$1} END {printf "%-44s %9.2f %9.2f %9.2f %10d\n", page, a[int((NR+1)/2)], a[int(NR*0.95+0.5)], a[NR], size}' "$work/times"
  }
  timed "alertmanager GET /api/v2/alerts" "http://127.0.0.1:$AM_PORT/api/v2/alerts"
  timed "steward GET /api/v1/alerts" -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/alerts"
  timed "steward console /console/alerts (100 shown)" -b "steward_session=$COOKIE" "$BASE/console/alerts"
fi
