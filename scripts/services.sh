#!/usr/bin/env bash
# The databases the tests, the demo and the benches use, run with the
# project's own settings and data dirs (the machine's clusters and config
# files are left alone):
#   - PostgreSQL on 127.0.0.1:${SYNCLINE_PG_PORT:-5432}, trust auth for local
#     connections, user postgres, wal_level=logical (the demo captures it);
#   - MariaDB on 127.0.0.1:${SYNCLINE_MARIADB_PORT:-3306}, user root with no
#     password, binlog in ROW format with full row images.
# Both listen on loopback only. Data lives in $SYNCLINE_SERVICES_DIR
# (as root: /var/lib/syncline, owned by the servers' own users, since
# neither server runs as root; otherwise $SYNCLINE_CACHE/services).
# The tests that need other server settings start their own throwaway
# servers (tests/support/pg_server.rs).
#   scripts/services.sh up | down | status
set -euo pipefail

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
if [ "$(id -u)" = 0 ]; then ROOT=1; DEFAULT_DIR=/var/lib/syncline; else ROOT=0; DEFAULT_DIR="$CACHE/services"; fi
DIR="${SYNCLINE_SERVICES_DIR:-$DEFAULT_DIR}"
PG_PORT="${SYNCLINE_PG_PORT:-5432}"
MY_PORT="${SYNCLINE_MARIADB_PORT:-3306}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
PG_DATA="$DIR/postgres"
MY_DATA="$DIR/mariadb"
RUN="$DIR/run"   # sockets and pid files
LOG="$DIR/log"

# `as USER cmd...`: run as the server's user when we are root.
as() { local user="$1"; shift; if [ "$ROOT" = 1 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 300); do "$@" && return 0; sleep 0.2; done
  return 1
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
my_ready() { mariadb-admin --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u root ping >/dev/null 2>&1; }

prepare_dirs() {
  mkdir -p "$DIR" "$RUN" "$LOG"
  if [ "$ROOT" = 1 ]; then chmod 755 "$DIR"; chmod 1777 "$RUN" "$LOG"; fi
}

pg_up() {
  if pg_ready; then return 0; fi
  if port_open "$PG_PORT"; then
    echo "services: something else listens on 127.0.0.1:$PG_PORT; set SYNCLINE_PG_PORT" >&2; return 1
  fi
  [ -n "$PG_BIN" ] || { echo "services: PostgreSQL is not installed (make tools)" >&2; return 1; }
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$ROOT" = 1 ] && chown postgres:postgres "$PG_DATA"
    as postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$LOG/postgres-initdb.log" 2>&1 \
      || { cat "$LOG/postgres-initdb.log" >&2; return 1; }
  fi
  as postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG/postgres.log" -w -t 60 start -o "\
    -c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$RUN \
    -c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=64 \
    -c max_connections=400 -c shared_buffers=256MB" >/dev/null \
    || { tail -20 "$LOG/postgres.log" >&2; return 1; }
  wait_for pg_ready
}

my_up() {
  if my_ready; then return 0; fi
  if port_open "$MY_PORT"; then
    echo "services: something else listens on 127.0.0.1:$MY_PORT; set SYNCLINE_MARIADB_PORT" >&2; return 1
  fi
  command -v mariadbd >/dev/null || { echo "services: MariaDB is not installed (make tools)" >&2; return 1; }
  local user; user="$(id -un)"; [ "$ROOT" = 1 ] && user=mysql
  if [ ! -d "$MY_DATA/mysql" ]; then
    mkdir -p "$MY_DATA"
    [ "$ROOT" = 1 ] && chown mysql:mysql "$MY_DATA"
    mariadb-install-db --no-defaults --datadir="$MY_DATA" --user="$user" \
      --auth-root-authentication-method=normal --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
      || { cat "$LOG/mariadb-install.log" >&2; return 1; }
  fi
  # --no-defaults: the machine's my.cnf files are not ours to depend on.
  nohup mariadbd --no-defaults --user="$user" --datadir="$MY_DATA" \
    --bind-address=127.0.0.1 --port="$MY_PORT" --socket="$RUN/mariadb.sock" \
    --pid-file="$RUN/mariadb.pid" --log-error="$LOG/mariadb.log" \
    --server-id=1 --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --max-connections=400 --innodb-buffer-pool-size=256M </dev/null >/dev/null 2>&1 &
  if ! wait_for my_ready; then tail -20 "$LOG/mariadb.log" >&2; return 1; fi
}

up() {
  prepare_dirs
  pg_up
  my_up
  echo "services: postgres postgres://postgres@127.0.0.1:$PG_PORT, mariadb mysql://root@127.0.0.1:$MY_PORT (data in $DIR, logs in $LOG)"
}

down() {
  if [ -f "$PG_DATA/postmaster.pid" ]; then as postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || true; fi
  if [ -f "$RUN/mariadb.pid" ]; then
    local pid; pid="$(cat "$RUN/mariadb.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  echo "services: stopped"
}

status() {
  if pg_ready; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; fi
  if my_ready; then echo "mariadb: running on 127.0.0.1:$MY_PORT"; else echo "mariadb: stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
