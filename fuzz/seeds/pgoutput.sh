#!/usr/bin/env bash
# Seeds for the `pgoutput` fuzz target: real pgoutput messages (protocol 1)
# of a table with every type postgres_cdc maps, captured from a local
# Postgres with wal_level=logical (`make tools` starts one). Each seed is a
# sequence of messages, each a big-endian u16 length and the body.
# Usage: fuzz/seeds/pgoutput.sh [postgres-url]   (writes fuzz/corpus/pgoutput/)
set -euo pipefail
URL=${1:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$(cd "$(dirname "$0")/.." && pwd)/corpus/pgoutput
mkdir -p "$OUT"
DB=syncline_fuzz_seeds
psql "$URL" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
U=${URL%/*}/$DB
psql "$U" -q <<'SQL'
CREATE TABLE every_type (
  id int PRIMARY KEY, small int2, big int8, r real, d float8, b bool,
  n numeric(12,3), nx numeric, t text, vc varchar(10), c char(4),
  dt date, tm time, ts timestamp, tz timestamptz, u uuid, j json, jb jsonb,
  by bytea, ai int4[], at text[], an numeric[], big_text text
);
CREATE TABLE no_key (a text, b int);
ALTER TABLE no_key REPLICA IDENTITY FULL;
CREATE PUBLICATION fuzz_pub FOR ALL TABLES;
SELECT pg_create_logical_replication_slot('fuzz_slot', 'pgoutput');
INSERT INTO every_type VALUES (1, 2, 3, 1.5, 2.25, true, 123.456, 1e-20, 'hé "x"', 'v', 'ab',
  '2024-02-29', '23:59:59.999999', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"k": null}', '\x00ff10',
  '{1,NULL,3}', '{"a b",NULL,"c\"d"}', '{1.5,NaN}', repeat('x', 5000));
INSERT INTO every_type (id, d, dt, ts, n) VALUES (2, 'NaN', 'infinity', '-infinity', 'NaN');
INSERT INTO every_type (id, dt, tm, ts) VALUES (3, '0044-03-15 BC', '24:00:00', '10000-01-01 00:00:00');
UPDATE every_type SET t = 'changed', r = 'Infinity' WHERE id = 1;
UPDATE every_type SET id = 10 WHERE id = 2;
DELETE FROM every_type WHERE id = 3;
INSERT INTO no_key VALUES ('x', 1);
UPDATE no_key SET b = 2;
DELETE FROM no_key;
TRUNCATE every_type;
SQL
# One seed per transaction, and one with the whole stream.
psql "$U" -At -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('fuzz_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'fuzz_pub')" \
  | python3 -c '
import sys, os
out = sys.argv[1]
msgs = [bytes.fromhex(l.strip()) for l in sys.stdin if l.strip()]
frame = lambda ms: b"".join(len(m).to_bytes(2, "big") + m for m in ms)
txs, cur = [], []
for m in msgs:
    cur.append(m)
    if m[:1] == b"C":
        txs.append(cur); cur = []
relations = [m for m in msgs if m[:1] == b"R"]
for i, tx in enumerate(txs):
    body = tx if any(m[:1] == b"R" for m in tx) else relations + tx
    open(os.path.join(out, "tx-%02d" % i), "wb").write(frame(body))
open(os.path.join(out, "whole-stream"), "wb").write(frame(msgs))
print("pgoutput seeds:", len(txs) + 1, "files,", len(msgs), "messages")
' "$OUT"
psql "$U" -qc "SELECT pg_drop_replication_slot('fuzz_slot')"
psql "$URL" -qc "DROP DATABASE $DB"
