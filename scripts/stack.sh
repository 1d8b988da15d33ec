#!/usr/bin/env bash
# The local stack without Docker: an Apache Kafka broker (KRaft, one node,
# scripts/kafka/broker.sh) and `syncline registry`, on loopback, with their
# data and logs in $STACK_DIR; and the databases (scripts/services.sh).
#   scripts/stack.sh up     start (idempotent)
#   scripts/stack.sh down   stop the broker and the registry (the databases keep
#                           running: scripts/services.sh down stops them)
#   scripts/stack.sh status
set -euo pipefail

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
STACK_DIR="${SYNCLINE_STACK_DIR:-$CACHE/stack}"
SYNCLINE="${SYNCLINE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/syncline}"
KAFKA_PORT="${SYNCLINE_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SYNCLINE_KAFKA_CONTROLLER_PORT:-9093}"
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
    nohup "$(dirname "$0")/kafka/broker.sh" --dir "$STACK_DIR/kafka" \
      --port "$KAFKA_PORT" --controller-port "$CONTROLLER_PORT" </dev/null >>"$STACK_DIR/broker.log" 2>&1 &
    echo $! >"$STACK_DIR/broker.pid"
    wait_port "$KAFKA_PORT" broker
  fi
  if ! running registry; then
    nohup "$SYNCLINE" registry --listen "127.0.0.1:$REGISTRY_PORT" \
      --kafka-bootstrap "127.0.0.1:$KAFKA_PORT" </dev/null >>"$STACK_DIR/registry.log" 2>&1 &
    echo $! >"$STACK_DIR/registry.pid"
    wait_port "$REGISTRY_PORT" registry
  fi
  "$(dirname "$0")/services.sh" up >/dev/null
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
  "$(dirname "$0")/services.sh" status
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
