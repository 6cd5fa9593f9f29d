#!/usr/bin/env bash
# WAL archiving under kill -9: pgbench writes for SECONDS while one `steward wal push`
# in KILL_ONE_IN gets SIGKILL at a random moment 0-100 ms into its life (a push of a
# 16 MiB segment takes about that; one that finished first is not killed). PostgreSQL
# retries what failed. Then the archive is checked and restored:
#
#   bash bench/wal-chaos.sh [SECONDS=60] [KILL_ONE_IN=3] [AHEAD=0]
#
# AHEAD > 0 runs `wal push --ahead AHEAD`: kills then also land in pushes ahead.
#
# Counts: pushes started, killed, segments archived, holes (`steward wal verify`), and
# whether a restore to the end of the archive (`steward backup restore --latest`) holds
# exactly the source's pgbench history (row count and sum of deltas). Needs root,
# PostgreSQL 15 server binaries and pgbench. Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_OF_LOAD=${1:-60}
KILL_ONE_IN=${2:-3}
AHEAD=${3:-0}
source bench/lib.sh
BIN=$(pg_bindir)
WORK=$(mktemp -d /tmp/steward-wal-chaos.XXXXXX)
chmod 755 "$WORK"
steward_for_postgres "$WORK" >/dev/null
PORT=$(free_port)
cleanup() {
  for d in "$WORK/pg" "$WORK/restored"; do
    [ -f "$d/postmaster.pid" ] && PG "$BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
PSQL=(psql -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt -d postgres)

cat > "$WORK/steward.yaml" <<EOF
repositories: [{ name: local, path: $WORK/repo }]
backups:
  - name: pg
    postgres: { url: "postgres://postgres@127.0.0.1:$PORT/postgres", mode: physical }
    repository: local
EOF
# The archive_command: a push, killed at a random moment one time in KILL_ONE_IN.
cat > "$WORK/push.sh" <<EOF
#!/usr/bin/env bash
echo started >> "$WORK/pushes.log"
if (( RANDOM % $KILL_ONE_IN == 0 )); then
  timeout -s KILL "0.\$(printf %03d \$((RANDOM % 100)))" "$WORK/steward" wal push "\$1" --ahead $AHEAD --policy pg -c "$WORK/steward.yaml" && exit 0
  code=\$?
  [ \$code = 137 ] && echo killed >> "$WORK/pushes.log"
  exit \$code
fi
exec "$WORK/steward" wal push "\$1" --ahead $AHEAD --policy pg -c "$WORK/steward.yaml"
EOF
chmod 755 "$WORK/push.sh"
mkdir -p "$WORK/repo"
chown -R postgres: "$WORK"

PG "$BIN/initdb" -A trust -U postgres --no-sync -D "$WORK/pg" >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
archive_mode = on
archive_command = '$WORK/push.sh %p'
max_wal_size = 256MB
EOF
PG "$BIN/pg_ctl" -w -D "$WORK/pg" -l "$WORK/pg.log" start >/dev/null
PG "$BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
"$WORK/steward" backup run pg -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/backup.json"
echo "==> pgbench for ${SECONDS_OF_LOAD}s, one push in $KILL_ONE_IN killed at random, --ahead $AHEAD"
PG "$BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -c 2 -T "$SECONDS_OF_LOAD" postgres >/dev/null 2>&1
source=$("${PSQL[@]}" -c "SELECT count(*) || ' rows, sum ' || sum(delta) FROM pgbench_history")
closed=$("${PSQL[@]}" -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$("${PSQL[@]}" -c "SELECT coalesce(last_archived_wal >= '$closed', false) FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
files=$(find "$WORK/repo/_wal/pg" -name '*.json' ! -name cluster.json | wc -l)
started=$(grep -c started "$WORK/pushes.log" || true)
killed=$(grep -c killed "$WORK/pushes.log" || true)
"$WORK/steward" wal verify --policy pg -c "$WORK/steward.yaml" -o json > "$WORK/verify.json" || true
"$WORK/steward" backup restore pg --latest --to "$WORK/restored" --yes -c "$WORK/steward.yaml" -d "$WORK/data" -o json > "$WORK/restore.json"
RPORT=$(free_port)
PG "$BIN/pg_ctl" -w -D "$WORK/restored" -l "$WORK/restored.log" -o "-p $RPORT -k $WORK -c listen_addresses= -c archive_mode=off" start >/dev/null
restored=$(psql -h "$WORK" -p "$RPORT" -U postgres -qAt -d postgres -c "SELECT count(*) || ' rows, sum ' || sum(delta) FROM pgbench_history")
python3 - "$WORK/verify.json" "$started" "$killed" "$files" "$source" "$restored" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
started, killed, files, source, restored = sys.argv[2:]
print(f"pushes started {started} for {files} files archived: killed {killed}, each retried by PostgreSQL")
print(f"archive: {v['expected']} segments {v['first']} .. {v['last']}, missing {v['missing_count']}, continuous {v['continuous']}")
print(f"source pgbench_history:   {source}")
print(f"restored (--latest):      {restored}  -> {'EQUAL' if source == restored else 'DIFFERENT'}")
PY
