#!/usr/bin/env bash
# The local stack without Docker: a Kafka-protocol broker (nisshi) and
# `syncline registry`, on loopback, with their data and logs in $STACK_DIR.
# Postgres is the machine's own (127.0.0.1:5432); this script only checks it.
#   scripts/stack.sh up     start (idempotent)
#   scripts/stack.sh down   stop
#   scripts/stack.sh status
set -euo pipefail

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
STACK_DIR="${SYNCLINE_STACK_DIR:-$CACHE/stack}"
NISSHI="${SYNCLINE_NISSHI:-$CACHE/nisshi-0.8.1/bin/nisshi}"
SYNCLINE="${SYNCLINE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/syncline}"
KAFKA_PORT="${SYNCLINE_KAFKA_PORT:-9092}"
REGISTRY_PORT="${SYNCLINE_REGISTRY_PORT:-8081}"
PG_URL="${SYNCLINE_PG:-postgres://postgres@127.0.0.1:5432}"

mkdir -p "$STACK_DIR"

running() { [ -f "$STACK_DIR/$1.pid" ] && kill -0 "$(cat "$STACK_DIR/$1.pid")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "stack: $2 did not start on port $1; see $STACK_DIR/$2.log" >&2
  return 1
}

up() {
  if ! running broker; then
    # cd first, on its own, so that $! is the broker's pid (not a subshell's).
    (cd "$STACK_DIR" || exit 1; RUST_LOG=warn nohup "$NISSHI" broker \
      --kafka-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --kafka-advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://broker.db" --group-initial-rebalance-delay 500ms </dev/null >>broker.log 2>&1 & echo $! >broker.pid)
    wait_port "$KAFKA_PORT" broker
  fi
  if ! running registry; then
    nohup "$SYNCLINE" registry --listen "127.0.0.1:$REGISTRY_PORT" \
      --kafka-bootstrap "127.0.0.1:$KAFKA_PORT" </dev/null >>"$STACK_DIR/registry.log" 2>&1 &
    echo $! >"$STACK_DIR/registry.pid"
    wait_port "$REGISTRY_PORT" registry
  fi
  if ! psql "$PG_URL/postgres" -qAtc 'select 1' >/dev/null 2>&1; then
    echo "stack: Postgres is not answering at $PG_URL; start it (pg_ctlcluster 15 main start)" >&2
    return 1
  fi
  echo "stack: broker 127.0.0.1:$KAFKA_PORT, registry http://127.0.0.1:$REGISTRY_PORT, postgres $PG_URL (data and logs in $STACK_DIR)"
}

down() {
  for p in registry broker; do
    if running "$p"; then kill "$(cat "$STACK_DIR/$p.pid")" 2>/dev/null || true; fi
    rm -f "$STACK_DIR/$p.pid"
  done
  echo "stack: stopped"
}

status() {
  for p in broker registry; do
    if running "$p"; then echo "$p: running (pid $(cat "$STACK_DIR/$p.pid"))"; else echo "$p: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
