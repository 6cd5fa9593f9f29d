#!/usr/bin/env bash
# Installs (Debian/Ubuntu packages) and starts the real components the test suite talks
# to: PostgreSQL, MariaDB, Redis and NATS with JetStream on their standard loopback
# ports, plus Chromium and its chromedriver for browser tests, Prometheus for PromQL
# rules and dnsmasq for DNS checks. Safe to run again: it only installs what is missing
# and only starts what is not answering.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v psql >/dev/null && command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v chromium >/dev/null || need+=(chromium)
# Browser tests drive Chromium through WebDriver.
command -v chromedriver >/dev/null || need+=(chromium-driver)
# Tests start private Prometheus servers (PromQL rules); the package's own service is not used.
command -v prometheus >/dev/null || need+=(prometheus)
# The dns probe's tests start private dnsmasq servers on free ports (no daemon is started here).
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# The packaging test checks the systemd unit with systemd-analyze.
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  echo "error: nothing is listening on 127.0.0.1:$1 after 20s ($2)" >&2
  return 1
}

if ! port_open 5432; then
  echo "==> starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
wait_port 5432 PostgreSQL
# The tests connect as postgres over TCP without a password (as on the CI machines).
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  echo "==> allowing passwordless loopback connections to PostgreSQL for the test suite"
  hba=$($SUDO -u postgres psql -Atc 'show hba_file' 2>/dev/null || runuser -u postgres -- psql -Atc 'show hba_file')
  echo "host all all 127.0.0.1/32 trust" | $SUDO tee -a "$hba" >/dev/null
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main reload
fi

if ! port_open 3306; then
  echo "==> starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1
fi
wait_port 3306 MariaDB
if ! mariadb -h 127.0.0.1 -u root -e 'select 1' >/dev/null 2>&1; then
  echo "==> allowing root over loopback with an empty password for the test suite"
  $SUDO mariadb -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" || true
fi

if ! port_open 6379; then
  echo "==> starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
wait_port 6379 Redis

if ! port_open 4222; then
  echo "==> starting NATS with JetStream"
  mkdir -p /tmp/steward-test-nats
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server || echo /usr/sbin/nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /tmp/steward-test-nats
fi
wait_port 4222 NATS
echo "==> test services are up: PostgreSQL :5432, MariaDB :3306, Redis :6379, NATS :4222"
