"""A stock Confluent client on the other side of syncline (used by tests/interop.rs).

    client.py consume BOOTSTRAP REGISTRY TOPIC COUNT   -> one JSON object per record on stdout
    client.py produce BOOTSTRAP REGISTRY TOPIC ROWS    -> ROWS upserts then a delete of every 10th key

Both use confluent-kafka's SchemaRegistryClient with AvroSerializer /
AvroDeserializer (fastavro underneath), exactly as an application would.
"""
import datetime
import decimal
import json
import os
import struct
import sys
import time

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "..", "schemas")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(v):
    """JSON for Avro logical values: decimals as text, timestamps as epoch microseconds."""
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return (v - EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def consume(bootstrap, registry, topic, count):
    sr = SchemaRegistryClient({"url": registry})
    consumer = DeserializingConsumer({
        "bootstrap.servers": bootstrap,
        "group.id": "interop-python-%d" % os.getpid(),
        "auto.offset.reset": "earliest",
        "key.deserializer": AvroDeserializer(sr),
        "value.deserializer": AvroDeserializer(sr),
    })
    consumer.subscribe([topic])
    seen, deadline = 0, time.time() + 120
    while seen < count and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit("consume error: %s" % msg.error())
        print(json.dumps({"key": msg.key(), "value": msg.value()}, default=plain), flush=True)
        seen += 1
    consumer.close()
    if seen < count:
        raise SystemExit("only %d of %d records arrived" % (seen, count))


def load(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return json.load(f)


def envelope_schema(row):
    """schemas/envelope.avsc with the row type filled in, as syncline documents it."""
    env = load("envelope.avsc")
    env["namespace"] = "interop.people"
    for field in env["fields"]:
        if field["name"] == "op":
            field["type"] = load("syncline.Op.avsc")
        elif field["name"] == "source":
            field["type"] = load("syncline.Source.avsc")
        elif field["name"] == "before":
            field["type"] = ["null", row]
        elif field["name"] == "after":
            field["type"] = ["null", row["namespace"] + "." + row["name"]]
    return env


def position(n):
    """syncline's order-preserving encoding of one signed 64-bit integer."""
    return struct.pack(">Q", (n ^ (1 << 63)) & 0xFFFFFFFFFFFFFFFF)


def produce(bootstrap, registry, topic, rows):
    sr = SchemaRegistryClient({"url": registry})
    row = {
        "type": "record", "name": "people", "namespace": "interop",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": "string"},
            {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
    key = {"type": "record", "name": "peopleKey", "namespace": "interop", "fields": [{"name": "id", "type": "long"}]}
    producer = SerializingProducer({
        "bootstrap.servers": bootstrap,
        "key.serializer": AvroSerializer(sr, json.dumps(key)),
        "value.serializer": AvroSerializer(sr, json.dumps(envelope_schema(row))),
    })

    def source(pos):
        return {"connector": "python", "name": "interop", "db": "none", "table": "people",
                "position": position(pos), "position_text": str(pos),
                "ts_us": EPOCH + datetime.timedelta(microseconds=pos)}

    for i in range(1, rows + 1):
        after = {"id": i, "name": "person %d" % i, "amount": decimal.Decimal(i) / 4,
                 "seen_at": EPOCH + datetime.timedelta(seconds=1_600_000_000 + i, microseconds=i),
                 "note": None if i % 3 == 0 else "note %d" % i}
        producer.produce(topic, key={"id": i}, value={"op": "UPSERT", "before": None, "after": after, "source": source(i)})
    for i in range(10, rows + 1, 10):
        producer.produce(topic, key={"id": i}, value={"op": "DELETE", "before": None, "after": None, "source": source(rows + i)})
    left = producer.flush(60)
    if left:
        raise SystemExit("%d records not delivered" % left)


if __name__ == "__main__":
    verb, bootstrap, registry, topic, n = sys.argv[1:6]
    {"consume": consume, "produce": produce}[verb](bootstrap, registry, topic, int(n))
