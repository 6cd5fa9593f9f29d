# Shared by the bench scripts: `source "$(dirname "$0")/lib.sh"`.

# Wall clock, and the seconds since $1, with nanoseconds.
seconds() { date +%s.%N; }
elapsed() { echo "$(seconds) - $1" | bc; }
# A TCP port free on loopback right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Runs a command as the postgres user (the server and its tools refuse root).
PG() { runuser -u postgres -- "$@"; }
# The newest PostgreSQL server binaries (Debian keeps them outside PATH).
pg_bindir() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
# The release binary, built, copied into $1 (a directory the postgres user can reach:
# archive_command and restore_command run it as postgres); prints its path.
steward_for_postgres() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
  cargo build --release --quiet --bin steward
  cp "$CARGO_TARGET_DIR/release/steward" "$1/steward"
  echo "$1/steward"
}
# Bytes as MiB with one decimal.
mib() { echo "scale=1; $1 / 1048576" | bc; }
# Peak RSS in KiB of process $1 (its own, not its children's): VmHWM, sampled every
# 50 ms until it ends.
peak_rss() {
  local pid=$1 peak=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.05
  done
  echo "$peak"
}
