#!/usr/bin/env bash
# `make demo`: create a sample source table, run examples/demo.yaml in the
# background, and show the target catching up with inserts, updates, deletes.
# `scripts/demo.sh stop` stops the pipeline.
set -euo pipefail
CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
STACK_DIR="${SYNCLINE_STACK_DIR:-$CACHE/stack}"
SYNCLINE="${SYNCLINE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/syncline}"
PG="${SYNCLINE_PG:-postgres://postgres@127.0.0.1:5432}"
export SYNCLINE_DEMO_SQLITE="${SYNCLINE_DEMO_SQLITE:-/tmp/syncline-demo-replica.db}"
cd "$(dirname "$0")/.."

if [ "${1:-}" = stop ]; then
  [ -f "$STACK_DIR/demo.pid" ] && kill "$(cat "$STACK_DIR/demo.pid")" 2>/dev/null || true
  rm -f "$STACK_DIR/demo.pid"; echo "demo: pipeline stopped"; exit 0
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
SQL

"$SYNCLINE" validate examples/demo.yaml
if ! { [ -f "$STACK_DIR/demo.pid" ] && kill -0 "$(cat "$STACK_DIR/demo.pid")" 2>/dev/null; }; then
  nohup "$SYNCLINE" run examples/demo.yaml </dev/null >>"$STACK_DIR/demo.log" 2>&1 &
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
follow() {
  local want
  want=$(src "$checksum")
  for _ in $(seq 1 120); do
    local got rep; got=$(dst "$checksum"); rep=$(replica)
    printf '  source:          %s\n  postgres target: %s\n  sqlite replica:  %s\n' "$want" "$got" "$rep"
    [ "$got" = "$want" ] && [ "$rep" = "$want" ] && return 0
    sleep 1
  done
  echo "demo: the targets did not catch up in 120s; see $STACK_DIR/demo.log" >&2; return 1
}
echo "demo: initial sync"; follow
echo "demo: 1000 inserts, an update of every 10th row, a delete of every 25th, in the source"
src "insert into orders (customer, amount) select 'late-' || g, g from generate_series(1, 1000) g"
src "update orders set status = 'shipped' where id % 10 = 0"
src "delete from orders where id % 25 = 1"
follow
echo "demo: the pipeline keeps running (log: $STACK_DIR/demo.log); 'make demo-stop' stops it and the stack."
