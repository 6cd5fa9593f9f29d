#!/usr/bin/env bash
# Point-in-time recovery benchmark: one PostgreSQL 15 cluster of our own, archived by
# steward and by pgBackRest at once (archive_command runs both), then measured side by
# side in the same run:
#
#   bash bench/pitr.sh [SCALE=50] [SEGMENTS=64] [DATA=random|pgbench]
#
# DATA=random (the default) fills every account's filler with random hex, which
# compresses about 2x like much real data; DATA=pgbench keeps pgbench's blank padding,
# which compresses ~50x and makes every compressor look free.
#
# 1. base backup time, stored size, peak RSS: `steward backup run` (mode: physical,
#    zstd level 3 on every core, blake3) vs `pgbackrest backup --type=full` with its
#    defaults (gz level 6, process-max=1) and tuned (process-max=2, compress-type=zst);
#    each waits until its backup's WAL is archived (pgBackRest: archive-check=y).
# 2. restore to a time between two marker rows, until the cluster is promoted at the
#    target: `steward backup restore --to-time` (unpack, pg_verifybackup, recovery with
#    `steward wal fetch`, promotion, clean shutdown) vs `pgbackrest restore
#    --type=time --target-action=promote`, then starting the cluster until it promoted
#    and shutting it down (defaults, and tuned with process-max=2). Each restored
#    cluster is checked: the first marker there, the second not.
# 3. WAL push throughput: SEGMENTS real 16 MiB segments pushed one process per segment
#    (as archive_command does) into fresh archives: `steward wal push` vs `pgbackrest
#    archive-push` (defaults, and compress-type=zst).
# Peak RSS: steward's own (VmHWM, sampled), pgbackrest's from GNU time.
# Needs: root, PostgreSQL 15 server binaries, pgbench, pgbackrest (apt-get install
# pgbackrest). Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-50}
SEGMENTS=${2:-64}
DATA=${3:-random}
source bench/lib.sh
BIN=$(pg_bindir)
WORK=$(mktemp -d /tmp/steward-bench-pitr.XXXXXX)
chmod 755 "$WORK"
STEWARD=$(steward_for_postgres "$WORK")
PORT=$(free_port)
cleanup() {
  for d in "$WORK"/pg "$WORK"/r-*; do
    [ -f "$d/postmaster.pid" ] && PG "$BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
PSQL=(psql -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt -d postgres)

mkdir -p "$WORK/pgbackrest/repo1" "$WORK/pgbackrest/repo2" "$WORK/pgbackrest/push1" "$WORK/pgbackrest/push2" \
  "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock" "$WORK/repo" "$WORK/push"
cat > "$WORK/pgbackrest.conf" <<EOF
[global]
repo1-path=$WORK/pgbackrest/repo1
repo2-path=$WORK/pgbackrest/repo2
log-path=$WORK/pgbackrest/log
lock-path=$WORK/pgbackrest/lock
log-level-console=warn
log-level-file=off
start-fast=y
repo1-retention-full=99
repo2-retention-full=99

[bench]
pg1-path=$WORK/pg
pg1-port=$PORT
pg1-socket-path=$WORK
EOF
# Fresh archives for the push benchmark: one repository each.
for n in 1 2; do
  sed -e "s|repo1-path=.*|repo1-path=$WORK/pgbackrest/push$n|" -e "/repo2-path/d" "$WORK/pgbackrest.conf" > "$WORK/push$n.conf"
done
cat > "$WORK/steward.yaml" <<EOF
repositories:
  - { name: bench, path: $WORK/repo }
  - { name: push, path: $WORK/push }
backups:
  - name: pitr
    postgres: { url: "postgres://postgres@127.0.0.1:$PORT/postgres", mode: physical }
    repository: bench
    timeout: 2h
  - name: push
    postgres: { url: "postgres://postgres@127.0.0.1:$PORT/postgres", mode: physical }
    repository: push
EOF
chown -R postgres: "$WORK"
PGBR=(pgbackrest "--config=$WORK/pgbackrest.conf" --stanza=bench)

echo "==> a cluster of our own on port $PORT, archived by steward and pgBackRest"
PG "$BIN/initdb" -A trust -U postgres --no-sync -D "$WORK/pg" >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
archive_mode = on
archive_command = '$STEWARD wal push %p --policy pitr -c $WORK/steward.yaml && pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench archive-push %p'
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
PG "$BIN/pg_ctl" -w -D "$WORK/pg" -l "$WORK/pg.log" start >/dev/null
PG "${PGBR[@]}" stanza-create >/dev/null
echo "==> pgbench scale $SCALE"
PG "$BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
if [ "$DATA" = random ]; then
  "${PSQL[@]}" -c "UPDATE pgbench_accounts SET filler = substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84)"
  "${PSQL[@]}" -c "VACUUM FULL pgbench_accounts"
fi
"${PSQL[@]}" -c "VACUUM ANALYZE" -c "CHECKPOINT"
wait_archived() {
  local closed
  closed=$("${PSQL[@]}" -c "SELECT pg_walfile_name(pg_switch_wal())")
  until [ -f "$WORK/repo/_wal/pitr/$closed.json" ] && [ "$("${PSQL[@]}" -c "SELECT last_archived_wal >= '$closed' FROM pg_stat_archiver")" = t ]; do
    sleep 0.2
  done
}
wait_archived
size=$("${PSQL[@]}" -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
echo "cluster: $size in its databases (pgbench scale $SCALE, $DATA data); $(nproc) cores; $("$BIN/postgres" --version)"

echo
echo "==> 1. base backups"
t0=$(seconds)
"$STEWARD" backup run pitr -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/run.json" &
pid=$!
st_rss=$(peak_rss $pid)
wait $pid
st_time=$(elapsed "$t0")
st_size=$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['stored_bytes'])")
echo "   steward:             ${st_time}s, $(mib "$st_size") MiB stored, peak RSS $((st_rss / 1024)) MiB"
t0=$(seconds)
PG /usr/bin/time -f "%M" -o "$WORK/br1.rss" "${PGBR[@]}" --repo=1 backup --type=full
br1_time=$(elapsed "$t0")
br1_size=$(du -sb "$WORK/pgbackrest/repo1/backup" | cut -f1)
echo "   pgBackRest defaults: ${br1_time}s, $(mib "$br1_size") MiB, peak RSS $(( $(cat "$WORK/br1.rss") / 1024 )) MiB"
t0=$(seconds)
PG /usr/bin/time -f "%M" -o "$WORK/br2.rss" "${PGBR[@]}" --repo=2 backup --type=full --process-max=2 --compress-type=zst
br2_time=$(elapsed "$t0")
br2_size=$(du -sb "$WORK/pgbackrest/repo2/backup" | cut -f1)
echo "   pgBackRest tuned:    ${br2_time}s, $(mib "$br2_size") MiB, peak RSS $(( $(cat "$WORK/br2.rss") / 1024 )) MiB"

echo
echo "==> 2. restore to a time between two marker rows"
"${PSQL[@]}" -c "CREATE TABLE markers (id serial PRIMARY KEY, note text)" -c "INSERT INTO markers (note) VALUES ('one')"
"$BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -c 2 -T 10 postgres >/dev/null 2>&1
sleep 1
target=$("${PSQL[@]}" -c "SELECT clock_timestamp()")
sleep 1
"${PSQL[@]}" -c "INSERT INTO markers (note) VALUES ('two')"
wait_archived
markers_in() {
  local dir=$1 port out
  port=$(free_port)
  PG "$BIN/pg_ctl" -w -D "$dir" -l "$dir.log" -o "-p $port -k $WORK -c listen_addresses= -c archive_mode=off" start >/dev/null
  out=$(psql -h "$WORK" -p "$port" -U postgres -qAt -d postgres -c "SELECT string_agg(note, ',' ORDER BY id) FROM markers")
  PG "$BIN/pg_ctl" -w -D "$dir" -m fast stop >/dev/null
  echo "$out"
}
t0=$(seconds)
"$STEWARD" backup restore pitr --to-time "$target" --to "$WORK/r-steward" --yes -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/restore.json" &
pid=$!
sr_rss=$(peak_rss $pid)
wait $pid
sr_time=$(elapsed "$t0")
echo "   steward:             ${sr_time}s to a promoted cluster at the target, peak RSS $((sr_rss / 1024)) MiB; markers: $(markers_in "$WORK/r-steward")"
# pgBackRest: restore, then recovery by starting the cluster until it promotes.
pgbr_restore() {
  local repo=$1 dir=$2 port t0 extra=()
  shift 2
  extra=("$@")
  port=$(free_port)
  t0=$(seconds)
  install -d -o postgres -g postgres -m 700 "$dir"
  PG /usr/bin/time -f "%M" -o "$dir.rss" "${PGBR[@]}" --repo="$repo" --pg1-path="$dir" restore --type=time "--target=$target" \
    --target-action=promote "${extra[@]}"
  PG "$BIN/pg_ctl" -D "$dir" -l "$dir.log" -o "-p $port -k $WORK -c listen_addresses= -c archive_mode=off" start >/dev/null
  until [ "$(psql -h "$WORK" -p "$port" -U postgres -qAt -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.1; done
  PG "$BIN/pg_ctl" -w -D "$dir" -m fast stop >/dev/null
  elapsed "$t0"
}
br1_r=$(pgbr_restore 1 "$WORK/r-pgbr1")
echo "   pgBackRest defaults: ${br1_r}s, peak RSS $(( $(cat "$WORK/r-pgbr1.rss") / 1024 )) MiB; markers: $(markers_in "$WORK/r-pgbr1")"
br2_r=$(pgbr_restore 2 "$WORK/r-pgbr2" --process-max=2)
echo "   pgBackRest tuned:    ${br2_r}s, peak RSS $(( $(cat "$WORK/r-pgbr2.rss") / 1024 )) MiB; markers: $(markers_in "$WORK/r-pgbr2")"

echo
echo "==> 3. WAL push, $SEGMENTS segments, one process each"
mkdir -p "$WORK/segs"
python3 - "$WORK/repo/_wal/pitr" "$SEGMENTS" > "$WORK/segs.txt" <<'PY'
import os, sys
names = sorted(n for n in os.listdir(sys.argv[1]) if len(n) == 24)
print("\n".join(names[-int(sys.argv[2]):]))
PY
while read -r seg; do
  "$STEWARD" wal fetch "$seg" "$WORK/segs/$seg" --policy pitr -c "$WORK/steward.yaml"
done < "$WORK/segs.txt"
chown -R postgres: "$WORK/segs"
count=$(wc -l < "$WORK/segs.txt")
t0=$(seconds)
while read -r seg; do PG "$STEWARD" wal push "$WORK/segs/$seg" --policy push -c "$WORK/steward.yaml"; done < "$WORK/segs.txt"
sp_time=$(elapsed "$t0")
sp_size=$(du -sb "$WORK/push/_wal" | cut -f1)
for n in 1 2; do PG pgbackrest "--config=$WORK/push$n.conf" --stanza=bench stanza-create >/dev/null; done
t0=$(seconds)
while read -r seg; do PG pgbackrest "--config=$WORK/push1.conf" --stanza=bench archive-push "$WORK/segs/$seg"; done < "$WORK/segs.txt"
bp1_time=$(elapsed "$t0")
t0=$(seconds)
while read -r seg; do PG pgbackrest "--config=$WORK/push2.conf" --stanza=bench --compress-type=zst archive-push "$WORK/segs/$seg"; done < "$WORK/segs.txt"
bp2_time=$(elapsed "$t0")
bp1_size=$(du -sb "$WORK/pgbackrest/push1/archive" | cut -f1)
bp2_size=$(du -sb "$WORK/pgbackrest/push2/archive" | cut -f1)
rate() { echo "scale=1; $count / $1" | bc; }
echo "   steward:             $(rate "$sp_time") segments/s, $(mib "$sp_size") MiB stored"
echo "   pgBackRest defaults: $(rate "$bp1_time") segments/s, $(mib "$bp1_size") MiB stored"
echo "   pgBackRest zst:      $(rate "$bp2_time") segments/s, $(mib "$bp2_size") MiB stored"

echo
python3 - "$st_time" "$st_size" "$br1_time" "$br1_size" "$br2_time" "$br2_size" "$sr_time" "$br1_r" "$br2_r" <<'PY'
import sys
st_t, st_s, b1_t, b1_s, b2_t, b2_s, sr, r1, r2 = map(float, sys.argv[1:])
print(f"base backup: {b1_t / st_t:.1f}x faster than pgBackRest's defaults, {b2_t / st_t:.1f}x than tuned; size {st_s / b1_s:.2f}x and {st_s / b2_s:.2f}x")
print(f"restore to a time: {r1 / sr:.1f}x faster than pgBackRest's defaults, {r2 / sr:.1f}x than tuned")
PY
