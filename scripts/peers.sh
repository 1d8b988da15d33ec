#!/usr/bin/env bash
# Installs the JVM peers `make bench` measures beside syncline (Kafka
# Connect standalone with Debezium's Postgres source and JDBC sink, and
# StreamsDedup on Kafka Streams; benches/peers/README.md), pinned by
# benches/peers/pom.xml, outside the checkout:
#   $SYNCLINE_CACHE/peers/libs   every runtime jar + syncline-peers.jar: one
#                                classpath, java -cp "$SYNCLINE_CACHE/peers/libs/*"
#   $SYNCLINE_CACHE/peers/build  Maven's build directory
#   $SYNCLINE_CACHE/peers/install.log
# Skips the build when libs/.complete holds the checksum of the pom, the
# Maven settings and StreamsDedup's sources. Needs Java 17 and Maven
# (scripts/tools.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
PEERS="$CACHE/peers"
SRC=benches/peers
sum="$(cat "$SRC/pom.xml" "$SRC/settings.xml" $(find "$SRC/src" -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)"
if [ -f "$PEERS/libs/.complete" ] && [ "$(cat "$PEERS/libs/.complete")" = "$sum" ]; then
  exit 0
fi

echo "peers: building StreamsDedup and assembling Connect, Debezium and Kafka Streams into $PEERS/libs"
mkdir -p "$PEERS"
rm -rf "$PEERS/libs" "$PEERS/build"
# settings.xml mirrors every repository to Maven Central (Debezium's parent
# pom names others). One Maven thread: the machine has two cores.
mvn -q -B -Dstyle.color=never -s "$SRC/settings.xml" -f "$SRC/pom.xml" -Dpeers.build="$PEERS/build" \
  package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PEERS/libs" \
  >"$PEERS/install.log" 2>&1 || { tail -40 "$PEERS/install.log"; exit 1; }
cp "$PEERS/build/syncline-peers.jar" "$PEERS/libs/"
echo "$sum" >"$PEERS/libs/.complete"
