#!/usr/bin/env bash
# Installs what syncline's build, tests, demo and benches need on a fresh
# machine, pinned, outside the checkout (so repeated runs reuse it), then
# starts the databases (scripts/services.sh up):
#   - Debian packages: the -sys crates' headers (openssl for rdkafka's TLS,
#     libclang for rocksdb's bindgen, libpq), the openssl command and CA
#     bundle (tests/tls.rs makes its certificates), PostgreSQL 15 and MariaDB
#     10.11 (servers the tests use), a Java 17 runtime and Maven (Kafka)
#   - Apache Kafka (the broker), assembled from Maven Central by
#     scripts/kafka/pom.xml into $SYNCLINE_CACHE/kafka-<version>/libs
#   - a Python venv with confluent-kafka + fastavro for the interoperability
#     test, and schemathesis for the management API's contract test
#   - Debian's Chromium and playwright-core from npm (no browser download)
#     for the dashboard's end-to-end test
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
VENV="$CACHE/venv"
NODE_DIR="$CACHE/node"
PLAYWRIGHT_VERSION=1.64.1
SCHEMATHESIS_VERSION=4.32.5
mkdir -p "$CACHE"

need_apt=()
for pkg in pkg-config libssl-dev openssl ca-certificates zlib1g-dev libclang-dev libpq-dev make gcc g++ perl python3-venv \
  postgresql-15 postgresql-client-15 mariadb-server mariadb-client openjdk-17-jre-headless maven chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tools: installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # The packages' own service start is refused here (no init system) and not
  # wanted: scripts/services.sh runs the servers with the project's settings.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >"$CACHE/apt.log" 2>&1 \
    || { tail -30 "$CACHE/apt.log"; exit 1; }
fi

if [ ! -f "$KAFKA_HOME/libs/.complete" ]; then
  echo "tools: assembling Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME/libs"
  mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$CACHE/kafka-install.log" 2>&1 \
    || { tail -40 "$CACHE/kafka-install.log"; exit 1; }
  touch "$KAFKA_HOME/libs/.complete"
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import confluent_kafka.schema_registry.avro, fastavro' 2>/dev/null; then
  echo "tools: installing the Python interop client (confluent-kafka, fastavro)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "confluent-kafka[avro,schemaregistry]==2.16.1"
fi

if ! "$VENV/bin/python" -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  echo "tools: installing schemathesis $SCHEMATHESIS_VERSION (the API contract test)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ] \
  || ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_DIR/node_modules/playwright-core/package.json"; then
  echo "tools: installing playwright-core $PLAYWRIGHT_VERSION (drives Debian's Chromium in the dashboard test)"
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION" >"$CACHE/npm.log" 2>&1) \
    || { tail -30 "$CACHE/npm.log"; exit 1; }
fi

scripts/services.sh up
echo "tools: ready (kafka: $KAFKA_HOME, python: $VENV/bin/python)"
