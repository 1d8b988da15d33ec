#!/usr/bin/env bash
# Installs what syncline's build, tests and demo need on a fresh machine, pinned,
# outside the checkout (so repeated runs reuse it):
#   - Debian packages for the -sys crates (openssl for rdkafka's TLS, libclang for rocksdb's bindgen, libpq for pg_walstream)
#   - the Kafka-protocol broker nisshi 0.8.1 (see ../shared/BROKERS.md) in $SYNCLINE_CACHE
#   - a Python venv with confluent-kafka + fastavro for the interoperability test
set -euo pipefail

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
NISSHI_VERSION=0.8.1
NISSHI="$CACHE/nisshi-$NISSHI_VERSION/bin/nisshi"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

need_apt=()
for pkg in pkg-config libssl-dev zlib1g-dev libclang-dev libpq-dev make gcc g++ perl python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# initdb/pg_ctl for the CDC tests' throwaway logical-replication server
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tools: installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$NISSHI" ]; then
  echo "tools: installing nisshi $NISSHI_VERSION (cold: ~12 minutes)"
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
    --root "$CACHE/nisshi-$NISSHI_VERSION" --target-dir "$CACHE/nisshi-build" >"$CACHE/nisshi-install.log" 2>&1 \
    || { tail -40 "$CACHE/nisshi-install.log"; exit 1; }
  rm -rf "$CACHE/nisshi-build"
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import confluent_kafka.schema_registry.avro, fastavro' 2>/dev/null; then
  echo "tools: installing the Python interop client (confluent-kafka, fastavro)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "confluent-kafka[avro,schemaregistry]==2.16.1"
fi
echo "tools: ready (nisshi: $NISSHI, python: $VENV/bin/python)"
