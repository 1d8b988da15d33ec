"""Dedup by identity with Quix Streams, for `cargo bench --bench dedup`.

The same job as syncline's `dedup` processor with `by: identity`, written the
way a Quix Streams user would:

- reads the input topic (syncline change records: Confluent Avro wire format)
  with quixstreams' AvroDeserializer backed by the schema registry; keys are
  kept as raw bytes (the row key, so redeliveries share a key and partition);
- a stateful filter (RocksDB state, backed by the compacted changelog topic
  Quix creates by default) keeps a "seen" flag per change identity
  (`source.name` + `source.position`) and passes only first occurrences;
- writes them to the output topic with quixstreams' AvroSerializer (the
  input's value schema, registered under `<output>-value`), key unchanged.

Processing guarantee: Quix's default (at-least-once), commit every 5 s.
Runs until killed. Usage:
  quix_dedup.py --broker HOST:PORT --registry URL --input T --output T \
                --group G --state-dir DIR
"""

import argparse
import json
import sys
import urllib.request

import quixstreams
from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig


def latest_value_schema(registry: str, topic: str) -> dict:
    url = f"{registry.rstrip('/')}/subjects/{topic}-value/versions/latest"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(json.load(r)["schema"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    a = p.parse_args()
    print(f"quixstreams {quixstreams.__version__}", file=sys.stderr, flush=True)

    registry = SchemaRegistryClientConfig(url=a.registry)
    app = Application(
        broker_address=a.broker,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        state_dir=a.state_dir,
        loglevel="INFO",
    )
    source = app.topic(
        a.input,
        key_deserializer="bytes",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
    )
    sink = app.topic(
        a.output,
        key_serializer="bytes",
        value_serializer=AvroSerializer(
            latest_value_schema(a.registry, a.input),
            schema_registry_client_config=registry,
        ),
    )

    def first_time(change: dict, state) -> bool:
        s = change["source"]
        identity = s["name"] + "|" + s["position"].hex()
        if state.exists(identity):
            return False
        state.set(identity, True)
        return True

    sdf = app.dataframe(source)
    sdf = sdf.filter(first_time, stateful=True)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
