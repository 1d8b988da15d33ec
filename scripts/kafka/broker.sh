#!/usr/bin/env bash
# One Apache Kafka broker (KRaft, combined broker + controller) on loopback,
# from the jars scripts/tools.sh assembled. Used by scripts/stack.sh, by the
# tests (tests/support) and by the benches, so there is one broker setup.
#
#   scripts/kafka/broker.sh --dir DIR --port PORT --controller-port CPORT
#       [--node-id N] [--voters "1@127.0.0.1:C1,2@127.0.0.1:C2,3@127.0.0.1:C3"]
#       [--set key=value]...
#
# DIR holds server.properties, the log dir (DIR/data) and nothing else; the
# script writes the config each time and formats DIR/data only when it is
# empty, so a restart on the same DIR keeps the data (kill -9 and restart is
# how the fault tests use it). With three voters the cluster replicates
# internal topics three times (min.insync.replicas 2); with one it is a
# single broker. It ends by exec'ing java, so the caller's pid is the broker's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${SYNCLINE_CACHE:-$HOME/.cache/syncline}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
KAFKA_HOME="${SYNCLINE_KAFKA_HOME:-$CACHE/kafka-$VERSION}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

dir="" port="" cport="" node=1 voters="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --controller-port) cport="$2"; shift 2 ;;
    --node-id) node="$2"; shift 2 ;;
    --voters) voters="$2"; shift 2 ;;
    --set) extra+=("$2"); shift 2 ;;
    *) echo "broker.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$dir" ] && [ -n "$port" ] && [ -n "$cport" ] || { echo "broker.sh: --dir, --port and --controller-port are required" >&2; exit 2; }
[ -f "$KAFKA_HOME/libs/.complete" ] || { echo "broker.sh: Kafka $VERSION is not installed in $KAFKA_HOME (run make tools)" >&2; exit 1; }
voters="${voters:-$node@127.0.0.1:$cport}"
n_voters=$(tr ',' '\n' <<<"$voters" | grep -c @)
if [ "$n_voters" -ge 3 ]; then rf=3 isr=2; else rf=1 isr=1; fi

mkdir -p "$dir/data"
cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
# Tests and the demo start consumers one after another: no 3 s wait before
# the first rebalance of a group.
group.initial.rebalance.delay.ms=0
# Small segments keep a test broker's disk use small and let compaction run.
log.segment.bytes=67108864
log.cleaner.dedupe.buffer.size=33554432
EOF
for kv in "${extra[@]}"; do echo "$kv" >>"$dir/server.properties"; done

cp_="$KAFKA_HOME/libs/*"
log4j="-Dlog4j2.configurationFile=$here/log4j2.properties"
if [ ! -f "$dir/data/meta.properties" ]; then
  # Formatting starts a JVM (seconds): format once per node id into a
  # template next to the jars, then copy it. Every broker of every syncline
  # test cluster shares this cluster id; the clusters never meet (each has
  # its own ports and voters).
  tmpl="$KAFKA_HOME/formatted/node-$node"
  if [ ! -f "$tmpl/meta.properties" ]; then
    tmp="$tmpl.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    sed "s#^log.dirs=.*#log.dirs=$tmp#" "$dir/server.properties" >"$tmp.properties"
    "$JAVA" -Xshare:auto -cp "$cp_" "$log4j" kafka.tools.StorageTool format \
      --cluster-id SYNCLINEtestCLUSTERid0 --config "$tmp.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; exit 1; }
    rm -f "$tmp.properties"
    mv -T "$tmp" "$tmpl" 2>/dev/null || rm -rf "$tmp"   # another broker won the race: same content
  fi
  cp -a "$tmpl/." "$dir/data/"
fi
exec "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "$log4j" \
  -cp "$cp_" kafka.Kafka "$dir/server.properties"
