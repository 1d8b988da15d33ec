/*
 * Dedup by identity with Kafka Streams, for `make bench` (benches/dedup.rs).
 *
 * The same job as syncline's `dedup` processor with `by: identity` (and as
 * benches/quix_dedup.py), written the way a Kafka Streams user would:
 *
 * - reads the input topic (syncline change records: Confluent Avro wire
 *   format, magic byte 0 + 4-byte big-endian schema id + Avro binary) as raw
 *   key and value bytes;
 * - decodes each value with its writer schema, fetched once per schema id
 *   from the registry (GET {registry}/schemas/ids/{id}) and cached;
 * - a persistent (RocksDB) key-value store "seen", backed by the compacted
 *   changelog topic Kafka Streams creates by default
 *   ({application-id}-seen-changelog), holds one entry per change identity
 *   (source.name + "|" + hex(source.position)); only first occurrences pass;
 * - writes them to the output topic with key and value bytes unchanged,
 *   partitioned by Kafka's default partitioner on the key bytes. A record
 *   without a value is passed on as it is.
 *
 * Processing guarantee: Kafka Streams' default, at_least_once (commit every
 * 30 s), or exactly_once_v2 with --guarantee (commit every 100 ms; the
 * output is then transactional: count it with a read_committed consumer,
 * since commit markers take offsets too). A record it cannot decode stops
 * the program (exit 1), as does any other stream-thread error. Runs until
 * killed (SIGTERM closes it cleanly; the JVM then exits 143). Usage:
 *   java -cp 'LIBS/*' io.syncline.peers.StreamsDedup --broker HOST:PORT \
 *     --registry URL --input T --output T --application-id ID \
 *     --state-dir DIR [--guarantee at_least_once|exactly_once_v2]
 */
package io.syncline.peers;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

public final class StreamsDedup {
    private static final String STORE = "seen";
    private static final byte[] SEEN = {1};

    /** Writer schemas by id, fetched from the registry once each. */
    static final class Registry {
        private final String url;
        private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        private final ObjectMapper json = new ObjectMapper();
        private final Map<Integer, Schema> schemas = new ConcurrentHashMap<>();

        Registry(String url) {
            this.url = url.replaceAll("/+$", "");
        }

        Schema schema(int id) {
            return schemas.computeIfAbsent(id, this::fetch);
        }

        private Schema fetch(int id) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + id))
                    .timeout(Duration.ofSeconds(30)).GET().build();
            try {
                HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
                if (resp.statusCode() != 200) {
                    throw new IllegalStateException("registry: schema id " + id + ": HTTP " + resp.statusCode() + ": " + resp.body());
                }
                return new Schema.Parser().parse(json.readTree(resp.body()).get("schema").asText());
            } catch (IOException e) {
                throw new IllegalStateException("registry: schema id " + id + ": " + e, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("registry: interrupted", e);
            }
        }
    }

    /** Passes a record on only the first time its change identity is seen. */
    static final class FirstOccurrence implements FixedKeyProcessor<byte[], byte[], byte[]> {
        private final Registry registry;
        private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
        private FixedKeyProcessorContext<byte[], byte[]> context;
        private KeyValueStore<String, byte[]> seen;
        private BinaryDecoder decoder;
        private GenericRecord reuse;

        FirstOccurrence(Registry registry) {
            this.registry = registry;
        }

        @Override
        public void init(FixedKeyProcessorContext<byte[], byte[]> context) {
            this.context = context;
            this.seen = context.getStateStore(STORE);
        }

        @Override
        public void process(FixedKeyRecord<byte[], byte[]> record) {
            byte[] value = record.value();
            if (value == null) {
                context.forward(record);
                return;
            }
            String identity = identity(value);
            if (seen.get(identity) == null) {
                seen.put(identity, SEEN);
                context.forward(record);
            }
        }

        /** source.name + "|" + hex(source.position) of a Confluent-framed Avro envelope. */
        private String identity(byte[] frame) {
            if (frame.length < 5 || frame[0] != 0) {
                throw new IllegalArgumentException("not a Confluent Avro frame (" + frame.length + " bytes)");
            }
            int id = ByteBuffer.wrap(frame, 1, 4).getInt();
            GenericDatumReader<GenericRecord> reader =
                    readers.computeIfAbsent(id, i -> new GenericDatumReader<>(registry.schema(i)));
            decoder = DecoderFactory.get().binaryDecoder(frame, 5, frame.length - 5, decoder);
            try {
                reuse = reader.read(reuse, decoder);
            } catch (IOException e) {
                throw new IllegalArgumentException("bad Avro value (schema id " + id + "): " + e, e);
            }
            GenericRecord source = (GenericRecord) reuse.get("source");
            ByteBuffer position = ((ByteBuffer) source.get("position")).duplicate();
            byte[] pos = new byte[position.remaining()];
            position.get(pos);
            return source.get("name") + "|" + HexFormat.of().formatHex(pos);
        }
    }

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> a = args(argv);
        System.err.println("kafka-streams " + streamsVersion());

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("application-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("broker"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state-dir"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.getOrDefault("guarantee", StreamsConfig.AT_LEAST_ONCE));

        Registry registry = new Registry(a.get("registry"));
        StreamsBuilder builder = new StreamsBuilder();
        // Persistent = RocksDB; logging (the changelog topic) is on by default.
        builder.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray()));
        builder.stream(a.get("input"), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .processValues(() -> new FirstOccurrence(registry), STORE)
                .to(a.get("output"), Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));

        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.err.println("StreamsDedup: stopped on an error (see the log above)");
            System.exit(1);
        }
    }

    /** The version of the kafka-streams jar itself (its kafka/kafka-streams-version.properties). */
    private static String streamsVersion() {
        Properties v = new Properties();
        try (InputStream in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-streams-version.properties")) {
            if (in != null) {
                v.load(in);
            }
        } catch (IOException e) {
            // fall through to "unknown"
        }
        return v.getProperty("version", "unknown");
    }

    private static Map<String, String> args(String[] argv) {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 == argv.length) {
                usage("bad argument " + argv[i]);
            }
            a.put(argv[i].substring(2), argv[++i]);
        }
        for (String k : new String[] {"broker", "registry", "input", "output", "application-id", "state-dir"}) {
            if (!a.containsKey(k)) {
                usage("--" + k + " is required");
            }
        }
        String g = a.get("guarantee");
        if (g != null && !g.equals(StreamsConfig.AT_LEAST_ONCE) && !g.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
            usage("--guarantee must be at_least_once or exactly_once_v2");
        }
        return a;
    }

    private static void usage(String problem) {
        System.err.println("StreamsDedup: " + problem + "\nusage: StreamsDedup --broker HOST:PORT --registry URL"
                + " --input T --output T --application-id ID --state-dir DIR [--guarantee at_least_once|exactly_once_v2]");
        System.exit(2);
    }
}
