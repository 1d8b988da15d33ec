"""Seeds for the `record_decode` fuzz target: syncline change records of a
table with many column types (as the sources write them), and the hostile
writer schemas and bodies of the poison corpus (recursive schema, 1e9 array
block count, decimal scale 4e9, deep nesting, truncated and wrong frames).

Input layout (see fuzz_targets/record_decode.rs): u16 length + writer schema
id 1, u16 length + writer schema id 2, u16 length + key frame, value frame.

Usage: python3 fuzz/seeds/records.py   (needs fastavro; the project venv has it)
"""
import io, json, os, struct
import fastavro

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "..", "..", "schemas")
OUT = os.path.join(HERE, "..", "corpus", "record_decode")
os.makedirs(OUT, exist_ok=True)


def load(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return json.load(f)


def nullable(t):
    return {"type": ["null", t], "default": None}


ROW = {
    "type": "record", "name": "items", "namespace": "syncline.fuzz",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "small", **nullable("int")},
        {"name": "price", **nullable({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3})},
        {"name": "name", **nullable("string")},
        {"name": "ok", **nullable("boolean")},
        {"name": "born", **nullable({"type": "int", "logicalType": "date"})},
        {"name": "at", **nullable({"type": "long", "logicalType": "timestamp-micros"})},
        {"name": "uid", **nullable({"type": "string", "logicalType": "uuid"})},
        {"name": "tags", **nullable({"type": "array", "items": ["null", "string"]})},
        {"name": "blob", **nullable("bytes")},
        {"name": "score", **nullable("double")},
    ],
}
KEY = {"type": "record", "name": "itemsKey", "namespace": "syncline.fuzz",
       "fields": [{"name": "id", "type": "long"}]}


def envelope(row):
    env = load("envelope.avsc")
    env["namespace"] = "syncline.fuzz.items"
    for f in env["fields"]:
        if f["name"] == "op":
            f["type"] = load("syncline.Op.avsc")
        elif f["name"] == "source":
            f["type"] = load("syncline.Source.avsc")
        elif f["name"] == "before":
            f["type"] = ["null", row]
        elif f["name"] == "after":
            f["type"] = ["null", row["namespace"] + "." + row["name"]]
    return env


def body(schema, value):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), value)
    return buf.getvalue()


def frame(schema_id, b):
    return b"\x00" + struct.pack(">I", schema_id) + b


def seed(name, schema_1, schema_2, key, value):
    s1 = schema_1 if isinstance(schema_1, bytes) else json.dumps(schema_1).encode()
    s2 = schema_2 if isinstance(schema_2, bytes) else json.dumps(schema_2).encode()
    parts = b"".join(struct.pack(">H", len(p)) + p for p in (s1, s2, key))
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(parts + value)


SOURCE = {"connector": "postgres_cdc", "name": "fuzz", "db": "app", "table": "public.items",
          "position": b"\x00\x00\x00\x01\x00\x00\x00\x02", "position_text": "0/1:2", "ts_us": 1700000000000000}
ROW_VALUE = {"id": 7, "small": 3, "price": b"\x01\xe2\x40", "name": "héllo", "ok": True, "born": 19000,
             "at": 1700000000123456, "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
             "tags": ["a", None, "c"], "blob": b"\x00\xff", "score": 2.5}
env = envelope(ROW)
key = frame(2, body(KEY, {"id": 7}))
for op in ["INSERT", "UPDATE", "DELETE", "READ", "UPSERT"]:
    value = {"op": op, "before": ROW_VALUE if op in ("UPDATE", "DELETE") else None,
             "after": None if op == "DELETE" else ROW_VALUE, "source": SOURCE}
    seed("change-" + op.lower(), env, KEY, key, frame(1, body(env, value)))
seed("truncate", env, KEY, b"", frame(1, body(env, {"op": "TRUNCATE", "before": None, "after": None, "source": SOURCE})))
good = frame(1, body(env, {"op": "INSERT", "before": None, "after": ROW_VALUE, "source": SOURCE}))
seed("truncated-frame", env, KEY, key, good[:len(good) // 2])
seed("wrong-magic", env, KEY, key, b"\x01" + good[1:])
seed("unknown-id", env, KEY, key, frame(99, good[5:]))
seed("trailing-bytes", env, KEY, key, good + b"\x00\x01")

# Hostile writer schemas (the poison corpus's kinds).
recursive = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
seed("recursive-schema", recursive, KEY, key, frame(1, b"\x02" * 4096 + b"\x00"))
nested = "long"
for i in range(60):
    nested = {"type": "array", "items": nested}
seed("deep-schema", {"type": "record", "name": "R", "fields": [{"name": "a", "type": nested}]}, KEY, key,
     frame(1, b"\x02" * 60 + b"\x00" * 60))
arr = {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}]}
seed("array-1e9", arr, KEY, key, frame(1, b"\x80\xa8\xd6\xb9\x07"))  # zigzag 1e9 block count
big_map = {"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map", "values": "string"}}]}
seed("map-5e8", big_map, KEY, key, frame(1, b"\x80\xd0\xac\xf3\x03"))
big_string = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
seed("string-4gb", big_string, KEY, key, frame(1, b"\xfe\xff\xff\xff\x1f"))
dec = {"type": "record", "name": "R", "fields": [{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4000000000, "scale": 4000000000}}]}
seed("decimal-scale-4e9", dec, KEY, key, frame(1, b"\x02\x01"))
fixed = {"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "fixed", "name": "F", "size": 4000000000}}]}
seed("fixed-4e9", fixed, KEY, key, frame(1, b"\x00"))
seed("not-json-schema", b"{not json", KEY, key, frame(1, b"\x00"))
bad_utf8 = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
seed("non-utf8-string", bad_utf8, KEY, key, frame(1, b"\x04\xc3\x28"))
print("record_decode seeds:", len(os.listdir(OUT)), "files")
