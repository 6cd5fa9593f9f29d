# Shared by the bench scripts: `source "$(dirname "$0")/lib.sh"`.

# Wall clock, and the seconds since $1, with nanoseconds.
seconds() { date +%s.%N; }
elapsed() { echo "$(seconds) - $1" | bc; }
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
