#!/usr/bin/env bash
# Backup benchmark on this machine: one pgbench database, backed up three ways in the
# same run, with times, sizes and peak memory side by side.
#
#   bash bench/backups.sh [SCALE=50] [DATA=pgbench|random]
#
# DATA=pgbench keeps pgbench's data (its blank-padded filler compresses ~50x, so gzip is
# unusually fast); DATA=random fills every account's filler with random hex, which
# compresses about 2x like much real data.
#
# 1. the seeds' way: `pg_dump DB | gzip > file` (and its restore: `gunzip | psql` into
#    a new database);
# 2. `steward backup run` (pg_dump custom format, zstd level 3 on every core, blake3,
#    a local repository) and `steward backup verify --restore-test` (a scratch cluster
#    from initdb, pg_restore, row counts compared);
# 3. `pgbackrest backup --type=full` with its defaults (gz level 6, one process) and
#    tuned (process-max=2, compress-type=zst) — physical backups of the whole cluster,
#    so their size includes indexes and the other databases (small here).
# Peak RSS: steward's own (VmHWM, sampled), and pgbackrest's from GNU time.
# Needs: PostgreSQL on 127.0.0.1:5432 (trust), pgbench, pgbackrest (apt-get install
# pgbackrest), root (pgbackrest runs as postgres to read the data directory).
# Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-50}
DATA=${2:-pgbench}
DB=steward_bench_backup_$DATA
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --quiet --bin steward
STEWARD="$CARGO_TARGET_DIR/release/steward"
WORK=$(mktemp -d /tmp/steward-bench-backups.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${DB}_gz_restore" >/dev/null 2>&1 || true' EXIT
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)

want=$((SCALE * 100000))
have=$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) FROM pgbench_accounts" 2>/dev/null || echo 0)
if [ "$have" != "$want" ]; then
  echo "==> initializing pgbench scale $SCALE in $DB"
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  pgbench -h 127.0.0.1 -U postgres -i -s "$SCALE" -q "$DB" >/dev/null 2>&1
  if [ "$DATA" = random ]; then
    "${PSQL[@]}" -d "$DB" -c "UPDATE pgbench_accounts SET filler = substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84)"
    "${PSQL[@]}" -d "$DB" -c "VACUUM FULL pgbench_accounts"
  fi
  "${PSQL[@]}" -d "$DB" -c "VACUUM ANALYZE"
fi
db_size=$("${PSQL[@]}" -d "$DB" -c "SELECT pg_size_pretty(pg_database_size('$DB'))")
echo "database $DB: pgbench scale $SCALE ($DATA data), $want accounts, $db_size on disk; $(nproc) cores"
sync

source bench/lib.sh

echo
echo "==> pg_dump | gzip (the seeds' nightly job)"
t0=$(seconds)
pg_dump -h 127.0.0.1 -U postgres "$DB" | gzip > "$WORK/dump.sql.gz"
gz_time=$(elapsed "$t0")
gz_size=$(stat -c %s "$WORK/dump.sql.gz")
echo "   backup: ${gz_time}s, $(mib "$gz_size") MiB"
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS ${DB}_gz_restore" -c "CREATE DATABASE ${DB}_gz_restore"
t0=$(seconds)
gunzip -c "$WORK/dump.sql.gz" | "${PSQL[@]}" -d "${DB}_gz_restore" >/dev/null
gz_restore=$(elapsed "$t0")
echo "   restore (gunzip | psql into a new database): ${gz_restore}s"
"${PSQL[@]}" -d postgres -c "DROP DATABASE ${DB}_gz_restore"

echo
echo "==> steward backup run"
cat > "$WORK/steward.yaml" <<EOF
repositories:
  - name: bench
    path: $WORK/repo
backups:
  - name: bench
    postgres: { url: "postgres://postgres@127.0.0.1:5432/$DB" }
    schedule: "0 2 * * *"
    repository: bench
EOF
# Peak RSS of steward itself (not pg_dump's): peak_rss in lib.sh.
t0=$(seconds)
"$STEWARD" backup run bench -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/run.json" &
pid=$!
rss=$(peak_rss $pid)
wait $pid
st_time=$(elapsed "$t0")
st_size=$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['stored_bytes'])")
id=$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['id'])")
echo "   backup: ${st_time}s, $(mib "$st_size") MiB stored, steward peak RSS $((rss / 1024)) MiB"
t0=$(seconds)
"$STEWARD" backup verify "$id" --restore-test -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/verify.json" &
pid=$!
vrss=$(peak_rss $pid)
wait $pid
v_time=$(elapsed "$t0")
python3 - "$WORK/verify.json" "$v_time" "$((vrss / 1024))" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))["verifications"][0]
print(f"   restore test: {v['result']}, {float(sys.argv[2]):.1f}s in all (initdb, restore, compare); "
      f"restore itself {v['restore_ms'] / 1000:.1f}s; steward peak RSS {sys.argv[3]} MiB")
PY

echo
echo "==> pgbackrest backup --type=full (defaults: compress-type=gz, process-max=1)"
mkdir -p "$WORK/pgbackrest/repo" "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock"
chown -R postgres: "$WORK/pgbackrest"
PGDATA_DIR=$("${PSQL[@]}" -d postgres -c "SHOW data_directory")
cat > "$WORK/pgbackrest/pgbackrest.conf" <<EOF
[global]
repo1-path=$WORK/pgbackrest/repo
log-path=$WORK/pgbackrest/log
lock-path=$WORK/pgbackrest/lock
log-level-console=warn
start-fast=y
archive-check=n
repo1-retention-full=99

[bench]
pg1-path=$PGDATA_DIR
pg1-port=5432
pg1-socket-path=/var/run/postgresql
EOF
PGBR=(runuser -u postgres -- pgbackrest "--config=$WORK/pgbackrest/pgbackrest.conf" --stanza=bench)
"${PGBR[@]}" stanza-create >/dev/null
t0=$(seconds)
/usr/bin/time -f "%M" -o "$WORK/pgbr.rss" "${PGBR[@]}" backup --type=full
br_time=$(elapsed "$t0")
br_size=$(du -sb "$WORK/pgbackrest/repo/backup" | cut -f1)
echo "   backup: ${br_time}s, $(mib "$br_size") MiB in the repository, peak RSS $(( $(cat "$WORK/pgbr.rss") / 1024 )) MiB"

echo
echo "==> pgbackrest backup --type=full tuned (process-max=2, compress-type=zst)"
rm -rf "$WORK/pgbackrest/repo"/*
"${PGBR[@]}" stanza-create >/dev/null
t0=$(seconds)
/usr/bin/time -f "%M" -o "$WORK/pgbr2.rss" "${PGBR[@]}" backup --type=full --process-max=2 --compress-type=zst
br2_time=$(elapsed "$t0")
br2_size=$(du -sb "$WORK/pgbackrest/repo/backup" | cut -f1)
echo "   backup: ${br2_time}s, $(mib "$br2_size") MiB in the repository, peak RSS $(( $(cat "$WORK/pgbr2.rss") / 1024 )) MiB"

echo
python3 - "$gz_time" "$gz_size" "$st_time" "$st_size" "$br_time" "$br_size" "$br2_time" "$br2_size" <<'PY'
import sys
gz_t, gz_s, st_t, st_s, br_t, br_s, br2_t, br2_s = map(float, sys.argv[1:])
print(f"steward vs pg_dump | gzip:        {gz_t / st_t:.1f}x faster, size {st_s / gz_s:.2f}x")
print(f"steward vs pgbackrest (defaults): {br_t / st_t:.1f}x faster, size {st_s / br_s:.2f}x")
print(f"steward vs pgbackrest (tuned):    {br2_t / st_t:.1f}x faster, size {st_s / br2_s:.2f}x")
PY
