//! The database sinks' shared scenarios, one set with the target a
//! parameter: each test below runs once per database sink (`postgres`,
//! `mysql` on MariaDB, `sqlite`) against a real Apache Kafka broker, the real `syncline
//! registry` and the real database, and reads the target back to compare it
//! with what was produced. What only one target has (its type mapping, its
//! refusals) is tested in that sink's own file.

mod support;

use apache_avro::types::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::changes::{change, col, delete, expected, items_table, upsert, workload, Producer};
use support::target::Target;
use support::{wait_until, Rng, Stack, SynclineRun, TempDir};
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::value::decimal_from_text;
use syncline_core::{ChangeEvent, ColumnType, Op, Position};
use syncline_runtime::Component;

const WAIT: Duration = Duration::from_secs(180);

/// One test per target for each scenario.
macro_rules! scenarios {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Target::postgres("sinks").await).await
                }
            )+
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Target::mysql("sinks").await).await
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Target::sqlite("sinks")).await
                }
            )+
        }
    };
}

scenarios!(
    upserts_deletes_and_replays_apply_only_newer_changes,
    kill_9_while_writing_large_batches_loses_and_duplicates_nothing,
    two_instances_share_partitions_and_take_over_exactly,
    three_cooperative_instances_joining_and_killed_stay_exact,
    unchanged_columns_keep_the_target_value,
    poison_records_are_dead_lettered_and_the_rest_lands,
    a_poison_record_goes_to_the_default_dead_letter_topic_with_its_reason_and_origin,
    a_record_the_target_refuses_is_dead_lettered_with_the_reason_and_its_batch_lands,
    a_column_added_at_the_source_is_added_to_the_table,
    a_registry_outage_is_waited_out,
);

// ---- the sink, in this process or as `syncline run` ----

fn ctx(stack: &Stack) -> ComponentContext {
    ComponentContext {
        pipeline: "test".into(),
        component: "warehouse".into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
    }
}

struct RunningSink {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<syncline_core::Result<()>>,
}

/// The sink of `target`'s kind in this process, with `body` (YAML lines)
/// after how it reaches the target.
fn start_sink(stack: &Stack, target: &Target, body: &str) -> RunningSink {
    let yaml = format!("{}{body}", target.reach_lines(""));
    let shutdown = Shutdown::new();
    let ctx = ctx(stack);
    let s = shutdown.clone();
    let task = match target.kind() {
        "postgres" => {
            let cfg: syncline_sinks::postgres::PostgresSinkConfig = parse(&yaml);
            tokio::spawn(async move { cfg.run(ctx, s).await })
        }
        "sqlite" => {
            let cfg: syncline_sinks::sqlite::SqliteSinkConfig = parse(&yaml);
            tokio::spawn(async move { cfg.run(ctx, s).await })
        }
        "mysql" => {
            let cfg: syncline_sinks::mysql::MysqlSinkConfig = parse(&yaml);
            tokio::spawn(async move { cfg.run(ctx, s).await })
        }
        other => unreachable!("no sink of type {other}"),
    };
    RunningSink { shutdown, task }
}

fn parse<C: serde::de::DeserializeOwned + Component>(yaml: &str) -> C {
    let cfg: C =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test config: {e}\n{yaml}"));
    assert_eq!(cfg.check(), [], "{yaml}");
    cfg
}

impl RunningSink {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The group of a sink named `warehouse` in pipeline `pipeline`.
fn group(pipeline: &str) -> String {
    format!("syncline.{pipeline}.warehouse")
}

async fn wait_consumed(target: &Target, group: &str, n: i64, what: &str) {
    wait_until(WAIT, &format!("{what}: {n} records committed"), || async {
        target.consumed(group).await >= n
    })
    .await;
    assert_eq!(
        target.consumed(group).await,
        n,
        "{what}: more offsets than records"
    );
}

/// A pipeline file with only the sink, reading `topic` into `items`;
/// `properties`: more librdkafka properties (YAML lines).
fn pipeline_file(
    dir: &TempDir,
    stack: &Stack,
    target: &Target,
    name: &str,
    topic: &str,
    batch_size: usize,
    properties: &str,
) -> std::path::PathBuf {
    let path = dir.path().join(format!("{name}.yaml"));
    let yaml = format!(
        "name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  properties:
    session.timeout.ms: \"6000\"
    heartbeat.interval.ms: \"500\"
{properties}registry:
  url: {registry}
external_topics: [{topic}]
sinks:
  warehouse:
{sink}    topics: [{topic}]
    tables: {{ {topic}: items }}
    batch_size: {batch_size}
    batch_timeout_ms: 100
",
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        sink = target.sink_lines("    "),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Wait until the committed count satisfies `cond`, failing fast (with the
/// log) if `syncline run` exits.
async fn wait_progress(
    run: &mut SynclineRun,
    target: &Target,
    g: &str,
    what: &str,
    cond: impl Fn(i64) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = target.consumed(g).await;
        if cond(n) {
            return;
        }
        assert!(
            run.exit_code().is_none(),
            "syncline run exited while waiting for {what}:\n{}",
            run.log()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({n} committed):\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- scenarios ----

/// Upserts, deletes, and replays of older changes (same identities): the
/// replay changes nothing and an older insert never resurrects a deleted
/// row; a restart resumes from the offsets stored in the target.
async fn upserts_deletes_and_replays_apply_only_newer_changes(target: Target) {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    let table = items_table();
    p.topic("replay.items", 1).await;
    let body = "topics: [replay.items]\ntables: { replay.items: items }\nbatch_size: 2\n";
    let sink = start_sink(&stack, &target, body);
    let g = group("test");

    let first = [
        upsert(1, 1, "a"),
        upsert(2, 1, "b"),
        upsert(3, 2, "c"),
        delete(4, 2),
        upsert(5, 3, "d"),
    ];
    p.send("replay.items", &table, &first).await;
    wait_consumed(&target, &g, 5, "first changes").await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "b".into()), (3, "d".into())])
    );
    assert_eq!(target.tombstones().await.len(), 1);

    // A source replays everything after a crash (same identities), in
    // batches of two so that old changes meet new rows across batches.
    p.send("replay.items", &table, &first).await;
    // And older versions arrive late: an insert of the deleted key, an old
    // update of a live key.
    p.send(
        "replay.items",
        &table,
        &[upsert(3, 2, "resurrected?"), upsert(1, 1, "a-old")],
    )
    .await;
    wait_consumed(&target, &g, 12, "replays").await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "b".into()), (3, "d".into())])
    );

    // A newer change of the deleted key applies, and its tombstone goes.
    p.send(
        "replay.items",
        &table,
        &[upsert(6, 2, "back"), delete(7, 3), upsert(8, 1, "e")],
    )
    .await;
    wait_consumed(&target, &g, 15, "newer changes").await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "e".into()), (2, "back".into())])
    );
    assert_eq!(
        target.tombstones().await,
        [Position::builder().i64(7).build().into_bytes()],
        "only key 3's tombstone is left"
    );
    sink.stop().await;

    // A restart resumes from the stored offsets: nothing is applied twice,
    // and new changes still land.
    let sink = start_sink(&stack, &target, body);
    p.send("replay.items", &table, &[upsert(9, 4, "f")]).await;
    wait_consumed(&target, &g, 16, "after restart").await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "e".into()), (2, "back".into()), (4, "f".into())])
    );
    sink.stop().await;
}

/// `syncline run` with only this sink, killed with SIGKILL at random moments
/// while it writes large batches; after the last restart the target holds
/// exactly what was produced.
async fn kill_9_while_writing_large_batches_loses_and_duplicates_nothing(target: Target) {
    let stack = Stack::start();
    let dir = TempDir::new("sink-kill");
    let p = Producer::new(&stack);
    p.topic("kill.items", 3).await;
    let events = workload(80_000, 30_000);
    p.send("kill.items", &items_table(), &events).await;
    let total = events.len() as i64;

    let pipeline = pipeline_file(&dir, &stack, &target, "kill", "kill.items", 5000, "");
    let g = group("kill");
    let mut rng = Rng::from_time();
    let mut run = SynclineRun::start(&pipeline);
    let mut kills = 0;
    for _ in 0..5 {
        // Wait for writing to be under way, then kill at a random moment
        // inside the next batches.
        let before = target.consumed(&g).await;
        if before >= total {
            break;
        }
        wait_progress(&mut run, &target, &g, "progress", |n| n > before).await;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        run.kill9();
        kills += 1;
        println!(
            "killed at {} of {total} committed",
            target.consumed(&g).await
        );
        run.restart();
    }
    wait_progress(&mut run, &target, &g, "every record committed", |n| {
        n >= total
    })
    .await;
    assert_eq!(target.consumed(&g).await, total, "{}", run.log());
    assert!(
        kills >= 2,
        "the sink finished before it could be killed twice; make the workload larger"
    );
    let want = expected(&events);
    let have = target.rows("items").await;
    assert_eq!(have.len(), want.len(), "row count");
    assert!(have == want, "rows differ from what was produced");
    let log = run.log();
    assert!(!log.contains("sink failed"), "{log}");
}

/// Two `syncline run` instances in one group share the partitions; one is
/// killed midway and the other takes its partitions over from the stored
/// offsets. The result is exact.
async fn two_instances_share_partitions_and_take_over_exactly(target: Target) {
    let stack = Stack::start();
    let dir = TempDir::new("sink-group");
    let p = Producer::new(&stack);
    p.topic("group.items", 4).await;
    let pipeline = pipeline_file(&dir, &stack, &target, "group", "group.items", 1000, "");
    let mut a = SynclineRun::start(&pipeline);
    let mut b = SynclineRun::start(&pipeline);
    let last_assignment = |log: &str| {
        log.lines()
            .rfind(|l| l.contains("partitions assigned"))
            .map(|l| l.matches("group.items[").count())
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let held = (last_assignment(&a.log()), last_assignment(&b.log()));
        if matches!(held, (Some(x), Some(y)) if x > 0 && y > 0 && x + y == 4) {
            break;
        }
        let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());
        assert!(
            a.exit_code().is_none() && b.exit_code().is_none(),
            "an instance exited:\n{logs}"
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for both instances to hold partitions:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let events = workload(30_000, 10_000);
    p.send("group.items", &items_table(), &events).await;
    let total = events.len() as i64;
    let g = group("group");
    wait_progress(&mut b, &target, &g, "a tenth committed", |n| n > total / 10).await;
    a.kill9();
    let deadline = Instant::now() + WAIT;
    while last_assignment(&b.log()) != Some(4) {
        assert!(b.exit_code().is_none(), "B exited:\n{}", b.log());
        assert!(
            Instant::now() < deadline,
            "B did not take every partition over:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_progress(&mut b, &target, &g, "every record committed", |n| {
        n >= total
    })
    .await;
    assert_eq!(target.consumed(&g).await, total, "{}", b.log());
    let have = target.rows("items").await;
    assert!(
        have == expected(&events),
        "rows differ from what was produced"
    );
}

/// Three instances with the cooperative protocol (`cooperative-sticky`):
/// they join one by one while records flow, and two of them are killed
/// with SIGKILL and come back, so partitions move incrementally many times.
/// The target is still exact: nothing lost, nothing applied twice.
async fn three_cooperative_instances_joining_and_killed_stay_exact(target: Target) {
    let stack = Stack::start();
    let dir = TempDir::new("sink-coop");
    let p = Producer::new(&stack);
    p.topic("coop.items", 6).await;
    let pipeline = pipeline_file(
        &dir,
        &stack,
        &target,
        "coop",
        "coop.items",
        500,
        "    partition.assignment.strategy: cooperative-sticky\n",
    );
    let events = workload(45_000, 9_000);
    let chunks: Vec<&[ChangeEvent]> = events.chunks(events.len() / 5 + 1).collect();
    let g = group("coop");
    let mut a = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[0]).await;
    wait_progress(&mut a, &target, &g, "A under way", |n| n > 0).await;
    let mut b = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[1]).await;
    let mut cc = SynclineRun::start(&pipeline);
    p.send("coop.items", &items_table(), chunks[2]).await;
    b.kill9();
    p.send("coop.items", &items_table(), chunks[3]).await;
    b.restart();
    cc.kill9();
    for chunk in &chunks[4..] {
        p.send("coop.items", &items_table(), chunk).await;
    }
    cc.restart();
    let total = events.len() as i64;
    wait_progress(&mut a, &target, &g, "every record committed", |n| {
        n >= total
    })
    .await;
    let logs = format!("A:\n{}\nB:\n{}\nC:\n{}", a.log(), b.log(), cc.log());
    assert_eq!(target.consumed(&g).await, total, "{logs}");
    assert!(
        logs.contains("cooperative=true"),
        "the cooperative protocol was not in use:\n{logs}"
    );
    let have = target.rows("items").await;
    let want = expected(&events);
    assert_eq!(have.len(), want.len(), "row count");
    assert!(have == want, "rows differ from what was produced");
    for (name, run) in [("A", &mut a), ("B", &mut b), ("C", &mut cc)] {
        assert!(run.exit_code().is_none(), "{name} exited:\n{}", run.log());
    }
}

/// A change that does not carry a column (unchanged, as `postgres_cdc` sends
/// an unchanged TOASTed value) keeps the target's value, whether that value
/// is in the target already or in an older change of the same batch; a
/// change that carries the column replaces it.
async fn unchanged_columns_keep_the_target_value(target: Target) {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    let table = items_table();
    p.topic("toast.items", 1).await;
    let big = "x".repeat(10_000);
    let unchanged = |pos, id| ChangeEvent {
        unchanged: vec!["v".into()],
        ..upsert(pos, id, "")
    };
    // Key 1's value lands in one batch and the change without it in a
    // later one; key 2's value and the change without it share a batch.
    p.send("toast.items", &table, &[upsert(1, 1, &big)]).await;
    let body = "topics: [toast.items]\ntables: { toast.items: items }\nbatch_size: 1000\n";
    let sink = start_sink(&stack, &target, body);
    let g = group("test");
    wait_consumed(&target, &g, 1, "the first value").await;
    p.send(
        "toast.items",
        &table,
        &[
            unchanged(2, 1),
            upsert(3, 2, "small"),
            unchanged(4, 2),
            unchanged(5, 3),
        ],
    )
    .await;
    wait_consumed(&target, &g, 5, "the changes without a value").await;
    let rows = target.rows("items").await;
    assert_eq!(
        rows.get(&1).map(String::len),
        Some(big.len()),
        "key 1 lost its value"
    );
    assert_eq!(rows.get(&2).map(String::as_str), Some("small"));
    // Key 3 had no value anywhere: the placeholder is all there is.
    assert_eq!(rows.get(&3).map(String::as_str), Some(""));
    p.send("toast.items", &table, &[upsert(6, 1, "replaced")])
        .await;
    wait_consumed(&target, &g, 6, "a new value").await;
    assert_eq!(target.rows("items").await[&1], "replaced");
    sink.stop().await;
}

/// Poison among good records: an undecodable record, one that is not a
/// change record, and one with a column named like the sink's own go to the
/// dead-letter topic with a reason; every good record lands, once.
async fn poison_records_are_dead_lettered_and_the_rest_lands(target: Target) {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    let table = items_table();
    p.topic("poison.items", 1).await;
    let mut own_column = items_table();
    own_column.columns[1].name = "_syncline_position".into();
    p.send("poison.items", &table, &[upsert(1, 1, "a")]).await;
    p.send_raw("poison.items", b"k", b"\x00\x00\x00\x00").await;
    p.send_raw("poison.items", b"k", b"not avro at all").await;
    let own = ChangeEvent {
        after: Some(vec![
            ("id".into(), Value::Long(2)),
            ("_syncline_position".into(), Value::String("b".into())),
        ]),
        ..upsert(2, 2, "b")
    };
    p.send("poison.items", &own_column, &[own]).await;
    p.send(
        "poison.items",
        &table,
        &[upsert(3, 3, "c"), upsert(4, 1, "a2")],
    )
    .await;
    let body =
        "topics: [poison.items]\ntables: { poison.items: items }\ndead_letter_topic: poison.dead\n";
    let sink = start_sink(&stack, &target, body);
    let g = group("test");
    wait_consumed(&target, &g, 6, "every record").await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "a2".into()), (3, "c".into())])
    );
    sink.stop().await;
    let dead = support::topic_records(&stack.bootstrap(), "poison.dead");
    assert_eq!(dead, 3, "three poison records dead-lettered");
}

/// Without `dead_letter_topic`, a poison record goes to the default one
/// (`<pipeline>.<sink>.dead`) as it was (key and value), with the reason
/// and its origin in headers; nothing stops, the records around it land.
async fn a_poison_record_goes_to_the_default_dead_letter_topic_with_its_reason_and_origin(
    target: Target,
) {
    use rdkafka::message::Message;
    let stack = Stack::start();
    let p = Producer::new(&stack);
    p.topic("dlq.items", 1).await;
    p.send("dlq.items", &items_table(), &[upsert(1, 1, "a")])
        .await;
    p.send_raw("dlq.items", b"not avro", b"not avro either")
        .await;
    p.send("dlq.items", &items_table(), &[upsert(2, 2, "b")])
        .await;
    let sink = start_sink(&stack, &target, "topics: [dlq.items]\nbatch_size: 2\n");
    let g = group("test");
    wait_consumed(&target, &g, 3, "records around the poison one").await;
    assert_eq!(
        target.rows("dlq_items").await,
        BTreeMap::from([(1, "a".into()), (2, "b".into())])
    );
    sink.stop().await;
    let m = support::first_record(&stack.bootstrap(), "test.warehouse.dead");
    assert_eq!(m.key(), Some(&b"not avro"[..]));
    assert_eq!(m.payload(), Some(&b"not avro either"[..]));
    assert_eq!(support::header(&m, "syncline.topic"), "dlq.items");
    assert_eq!(support::header(&m, "syncline.partition"), "0");
    assert_eq!(support::header(&m, "syncline.offset"), "1");
    let reason = support::header(&m, "syncline.reason");
    assert!(reason.contains("Confluent wire format"), "{reason}");
}

/// A record the target refuses (a unique index the user added to the
/// table, which the record's value violates), inside a batch of several,
/// goes to the dead-letter topic with the database's reason and its origin;
/// the rest of its batch lands and every offset is stored.
async fn a_record_the_target_refuses_is_dead_lettered_with_the_reason_and_its_batch_lands(
    target: Target,
) {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    let table = items_table();
    p.topic("refused.items", 1).await;
    p.send("refused.items", &table, &[upsert(1, 1, "taken")])
        .await;
    let body = "topics: [refused.items]\ntables: { refused.items: items }\nbatch_timeout_ms: 2000\nbatch_linger_ms: 1000\n";
    let sink = start_sink(&stack, &target, body);
    let g = group("test");
    wait_consumed(&target, &g, 1, "the table made").await;
    // (a prefix: MySQL indexes at most part of a text column)
    let column = if target.kind() == "mysql" {
        "v(64)"
    } else {
        "v"
    };
    target
        .exec(&format!("CREATE UNIQUE INDEX items_v ON items ({column})"))
        .await;
    p.send(
        "refused.items",
        &table,
        &[upsert(2, 2, "b"), upsert(3, 3, "taken"), upsert(4, 4, "c")],
    )
    .await;
    wait_consumed(&target, &g, 4, "the batch around the refused record").await;
    sink.stop().await;
    assert_eq!(
        target.rows("items").await,
        BTreeMap::from([(1, "taken".into()), (2, "b".into()), (4, "c".into())])
    );
    let m = support::first_record(&stack.bootstrap(), "test.warehouse.dead");
    assert_eq!(support::header(&m, "syncline.offset"), "2");
    let reason = support::header(&m, "syncline.reason");
    assert!(
        reason.contains("topic `refused.items` partition 0 offset 2"),
        "{reason}"
    );
    let lower = reason.to_lowercase();
    assert!(
        lower.contains("unique") || lower.contains("duplicate"),
        "the database's reason: {reason}"
    );
}

/// A schema that gains a column: the sink adds it (nullable, its type per
/// the sink's mapping) to the table it created, and rows of both shapes
/// land with their values.
async fn a_column_added_at_the_source_is_added_to_the_table(target: Target) {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    p.topic("evolve.items", 1).await;
    p.send("evolve.items", &items_table(), &[upsert(1, 1, "a")])
        .await;
    let sink = start_sink(
        &stack,
        &target,
        "topics: [evolve.items]\ntables: { evolve.items: items }\n",
    );
    let g = group("test");
    wait_consumed(&target, &g, 1, "first shape").await;
    assert_eq!(target.column("items", "amount").await, None);
    let mut wider = items_table();
    wider.columns.push(col(
        "amount",
        ColumnType::Decimal {
            precision: 10,
            scale: 2,
        },
        true,
        "numeric(10,2)",
    ));
    let with_amount = |pos, id: i64, v: &str, amount: &str| {
        let after = vec![
            ("id".to_string(), Value::Long(id)),
            ("v".into(), Value::String(v.into())),
            ("amount".into(), decimal_from_text(amount, 2).unwrap()),
        ];
        change(Op::Update, pos, id, Some(after))
    };
    p.send(
        "evolve.items",
        &wider,
        &[
            with_amount(2, 1, "b", "12.5"),
            with_amount(3, 2, "c", "-0.01"),
        ],
    )
    .await;
    wait_consumed(&target, &g, 3, "second shape").await;
    sink.stop().await;
    let declared = match target.kind() {
        "postgres" => "numeric(10,2)",
        "mysql" => "decimal(10,2)",
        _ => "text", // SQLite keeps a decimal's exact text
    };
    assert_eq!(
        target.column("items", "amount").await,
        Some((declared.to_string(), true))
    );
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        target.texts("items", &["id", "v", "amount"]).await,
        [
            vec![text("1"), text("b"), text("12.50")],
            vec![text("2"), text("c"), text("-0.01")],
        ]
    );
}

/// The registry is down when the sink needs a schema: the sink waits and
/// retries (it neither gives up nor stores an offset), and finishes once
/// the registry is back.
async fn a_registry_outage_is_waited_out(target: Target) {
    let mut stack = Stack::start();
    let p = Producer::new(&stack);
    p.topic("outage.items", 1).await;
    p.send(
        "outage.items",
        &items_table(),
        &[upsert(1, 1, "a"), upsert(2, 2, "b")],
    )
    .await;
    stack.registry.kill9();
    let sink = start_sink(&stack, &target, "topics: [outage.items]\n");
    let g = group("test");
    tokio::time::sleep(Duration::from_secs(8)).await; // past the group join (3 s) and several retries
    assert_eq!(
        target.consumed(&g).await,
        0,
        "nothing can be decoded without the registry"
    );
    assert!(
        !sink.task.is_finished(),
        "the sink gave up while the registry was away"
    );
    stack.registry.restart();
    wait_consumed(&target, &g, 2, "after the registry came back").await;
    assert_eq!(
        target.rows("outage_items").await,
        BTreeMap::from([(1, "a".into()), (2, "b".into())])
    );
    sink.stop().await;
}
