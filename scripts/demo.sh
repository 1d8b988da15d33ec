#!/usr/bin/env bash
# `make demo`: create sample source tables, run examples/demo.yaml in the
# background, and show the targets catching up with inserts, updates and
# deletes: orders polled on a schedule, customers captured in real time from
# the WAL. Ends with the dashboard's address; the pipeline keeps running.
# `scripts/demo.sh stop` stops the pipeline and drops its replication slot.
set -euo pipefail
CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
STACK_DIR="${SYNCLINE_STACK_DIR:-$CACHE/stack}"
SYNCLINE="${SYNCLINE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/syncline}"
PG="${SYNCLINE_PG:-postgres://postgres@127.0.0.1:5432}"
export SYNCLINE_DEMO_SQLITE="${SYNCLINE_DEMO_SQLITE:-/tmp/syncline-demo-replica.db}"
cd "$(dirname "$0")/.."

if [ "${1:-}" = stop ]; then
  if [ -f "$STACK_DIR/demo.pid" ]; then
    pid="$(cat "$STACK_DIR/demo.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$STACK_DIR/demo.pid"
  # A replication slot nobody reads keeps WAL forever: drop the demo's.
  psql "$PG/syncline_demo_source" -qAt -c \
    "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = 'syncline_demo_crm' and not active" \
    >/dev/null 2>&1 || true
  echo "demo: pipeline stopped, its replication slot dropped"; exit 0
fi

src() { psql "$PG/syncline_demo_source" -qAt -v ON_ERROR_STOP=1 -c "$1"; }
dst() { psql "$PG/syncline_demo_target" -qAt -c "$1" 2>/dev/null || echo 0; }
for db in syncline_demo_source syncline_demo_target; do
  psql "$PG/postgres" -qAtc "select 1 from pg_database where datname='$db'" | grep -q 1 || psql "$PG/postgres" -qc "create database $db"
done
psql "$PG/syncline_demo_source" -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS orders (
  id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL DEFAULT 'new', updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS orders_touch ON orders;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
INSERT INTO orders (customer, amount) SELECT 'customer-' || g, (g % 1000) / 10.0 FROM generate_series(1, 5000) g;
CREATE TABLE IF NOT EXISTS customers (
  id bigserial PRIMARY KEY, name text NOT NULL, email text, tier text NOT NULL DEFAULT 'basic');
INSERT INTO customers (name, email) SELECT 'customer-' || g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
SQL

"$SYNCLINE" validate examples/demo.yaml
if ! { [ -f "$STACK_DIR/demo.pid" ] && kill -0 "$(cat "$STACK_DIR/demo.pid")" 2>/dev/null; }; then
  nohup "$SYNCLINE" run examples/demo.yaml --state-dir "$STACK_DIR/demo-state" </dev/null >>"$STACK_DIR/demo.log" 2>&1 &
  echo $! >"$STACK_DIR/demo.pid"
fi

checksum="select count(*) || ' rows, checksum ' || coalesce(md5(string_agg(id || ':' || customer || ':' || amount || ':' || status, ',' order by id)), '-') from orders"
# The same checksum over the SQLite replica (amount is its exact decimal text).
replica() {
  python3 - "$SYNCLINE_DEMO_SQLITE" <<'PY' 2>/dev/null || echo 0
import hashlib, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "select id || ':' || customer || ':' || amount || ':' || status from orders order by id").fetchall()
digest = hashlib.md5(",".join(r[0] for r in rows).encode()).hexdigest() if rows else "-"
print(f"{len(rows)} rows, checksum {digest}")
PY
}
customers="select count(*) || ' rows, checksum ' || coalesce(md5(string_agg(id || ':' || name || ':' || coalesce(email, '') || ':' || tier, ',' order by id)), '-') from customers"
follow() {
  local want wantc
  want=$(src "$checksum"); wantc=$(src "$customers")
  for _ in $(seq 1 120); do
    local got rep gotc; got=$(dst "$checksum"); rep=$(replica); gotc=$(dst "$customers")
    printf '  orders (sql_poll, every 500 ms)\n    source:          %s\n    postgres target: %s\n    sqlite replica:  %s\n' "$want" "$got" "$rep"
    printf '  customers (postgres_cdc, real time)\n    source:          %s\n    postgres target: %s\n' "$wantc" "$gotc"
    [ "$got" = "$want" ] && [ "$rep" = "$want" ] && [ "$gotc" = "$wantc" ] && return 0
    sleep 1
  done
  echo "demo: the targets did not catch up in 120s; see $STACK_DIR/demo.log" >&2; return 1
}
echo "demo: initial sync"; follow
echo "demo: 1000 inserts, an update of every 10th row, a delete of every 25th, in the source"
src "insert into orders (customer, amount) select 'late-' || g, g from generate_series(1, 1000) g"
src "update orders set status = 'shipped' where id % 10 = 0"
src "delete from orders where id % 25 = 1"
echo "demo: and in customers, 300 inserts, an upgrade of every 7th, a delete of every 50th"
src "insert into customers (name, email) select 'new-' || g, null from generate_series(1, 300) g"
src "update customers set tier = 'gold' where id % 7 = 0"
src "delete from customers where id % 50 = 3"
follow
"$SYNCLINE" status examples/demo.yaml --state-dir "$STACK_DIR/demo-state" || true
echo "demo: the pipeline keeps running (log: $STACK_DIR/demo.log); 'make demo-stop' stops it and the stack."
echo "demo: dashboard: http://127.0.0.1:9470/"
