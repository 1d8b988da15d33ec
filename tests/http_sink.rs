//! The `http` sink against a real HTTP receiver on loopback that fails on
//! purpose (tests/support/receiver.rs), a real Apache Kafka broker and the
//! real `syncline registry`: across kill -9 of the sink and the receiver's
//! failures, the receiver gets every change at least once, exactly once
//! after dropping repeats by change id, in per-partition (so per-key)
//! order; a change it refuses (4xx) is dead-lettered alone.

mod support;

use base64::Engine;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use support::changes::{expected, items_table, upsert, workload, Producer};
use support::receiver::{Answer, Receiver, Request};
use support::{Rng, Stack, SynclineRun, TempDir};
use syncline_core::ChangeEvent;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `token_var`: the environment variable holding the bearer token (one per
/// test: tests run in parallel in one process).
fn pipeline(
    stack: &Stack,
    dir: &TempDir,
    url: &str,
    token_var: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(
        &path,
        format!(
            "name: hook
kafka:
  bootstrap_servers: {bootstrap}
  properties:
    session.timeout.ms: \"6000\"
    heartbeat.interval.ms: \"500\"
registry:
  url: {registry}
external_topics: [http.items]
sinks:
  receiver:
    type: http
    url: {url}
    topics: [http.items]
    batch_size: 200
    timeout_ms: 1000
    auth: {{ bearer: ${{{token_var}}} }}
    headers: {{ X-Tenant: test }}
    dead_letter_topic: http.dead
{extra}",
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
        ),
    )
    .unwrap();
    path
}

/// The id of a produced change, as the sink makes it.
fn id_of(e: &ChangeEvent) -> String {
    syncline_sinks::http::change_id(e)
}

/// Check a request as a Standard Webhooks receiver would.
fn verify_signature(r: &Request) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = r.header("webhook-signature").expect("webhook-signature");
    // (the HMAC itself is checked against RFC 4231 and the Standard
    // Webhooks example in the sink's unit tests)
    let mac = syncline_sinks::http::sign::hmac_sha256(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &r.raw_body],
    );
    let mac = base64::engine::general_purpose::STANDARD.encode(mac);
    assert_eq!(sig, format!("v1,{mac}"), "signature");
    assert_eq!(
        Some(id),
        r.header("idempotency-key"),
        "webhook-id is the idempotency key"
    );
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "timestamp {ts} is {age}s old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_arrives_once_after_dropping_repeats_in_order_across_kill9_and_failures() {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    p.topic("http.items", 3).await;
    let events = workload(6000, 1500);
    p.send("http.items", &items_table(), &events).await;

    // Every 5th request a 500, every 7th a 429 (retry after 1 s), every
    // 11th answered after the sink's timeout, every 13th dropped.
    let receiver = Receiver::start(|n, _| match n {
        n if n % 13 == 0 => Answer::Drop,
        n if n % 11 == 0 => Answer::Late(Duration::from_millis(1500)),
        n if n % 7 == 0 => Answer::TooMany(1),
        n if n % 5 == 0 => Answer::Status(503),
        _ => Answer::Ok,
    })
    .await;
    // The token comes from the environment, as a secret should.
    std::env::set_var("SYNCLINE_TEST_HTTP_TOKEN_A", "t0ken-never-logged");
    let dir = TempDir::new("http-sink");
    let file = pipeline(
        &stack,
        &dir,
        &receiver.url(),
        "SYNCLINE_TEST_HTTP_TOKEN_A",
        &format!("    signing_secret: {SECRET}\n"),
    );
    let mut run = SynclineRun::start(&file);
    let mut rng = Rng::from_time();
    let ids: BTreeSet<String> = events.iter().map(id_of).collect();
    assert_eq!(
        ids.len(),
        6000,
        "one id per distinct change, a replay's the same"
    );
    let got = |receiver: &Receiver| -> BTreeSet<String> {
        receiver
            .accepted()
            .iter()
            .flat_map(|r| r.body["changes"].as_array().cloned().unwrap_or_default())
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    for _ in 0..2 {
        let before = got(&receiver).len();
        let deadline = Instant::now() + Duration::from_secs(120);
        while got(&receiver).len() <= before + 200 && got(&receiver).len() < ids.len() {
            assert!(Instant::now() < deadline, "no progress:\n{}", run.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        run.kill9();
        run.restart();
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    while got(&receiver) != ids {
        assert!(
            run.exit_code().is_none(),
            "syncline run exited:\n{}",
            run.log()
        );
        assert!(
            Instant::now() < deadline,
            "{} of {} changes received:\n{}",
            got(&receiver).len(),
            ids.len(),
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let accepted = receiver.accepted();
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut first_seen: BTreeSet<String> = BTreeSet::new();
    let mut state: BTreeMap<i64, String> = BTreeMap::new();
    let mut last_offset: HashMap<i64, i64> = HashMap::new();
    let mut deliveries = 0;
    for r in &accepted {
        verify_signature(r);
        assert_eq!(r.header("authorization"), Some("Bearer t0ken-never-logged"));
        assert_eq!(r.header("x-tenant"), Some("test"));
        let changes = r.body["changes"].as_array().unwrap();
        let key = r.header("idempotency-key").unwrap().to_string();
        let request_ids: Vec<String> = changes
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        // The same key always carries the same changes (retries resend them).
        let known = by_key.entry(key).or_insert_with(|| request_ids.clone());
        assert_eq!(known, &request_ids, "one idempotency key, two bodies");
        for c in changes {
            deliveries += 1;
            // The receiver drops repeats by id.
            if !first_seen.insert(c["id"].as_str().unwrap().to_string()) {
                continue;
            }
            let partition = c["partition"].as_i64().unwrap();
            let offset = c["offset"].as_i64().unwrap();
            let last = last_offset.insert(partition, offset);
            assert!(
                last.is_none_or(|l| l < offset),
                "partition {partition}: offset {offset} first seen after {last:?}"
            );
            let id = c["key"]["id"].as_i64().unwrap();
            match c["op"].as_str().unwrap() {
                "DELETE" => {
                    state.remove(&id);
                }
                _ => {
                    state.insert(id, c["after"]["v"].as_str().unwrap().to_string());
                }
            }
        }
    }
    eprintln!(
        "{} requests seen, {} accepted, {deliveries} change deliveries for {} changes",
        receiver.seen(),
        accepted.len(),
        ids.len()
    );
    assert!(
        deliveries > ids.len(),
        "the faults caused no redelivery; the test proves nothing"
    );
    assert_eq!(
        state,
        expected(&events),
        "the receiver's state after dropping repeats"
    );
    let log = run.log();
    assert!(
        !log.contains("t0ken-never-logged"),
        "the token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_receiver_refuses_is_dead_lettered_alone_with_the_answer() {
    let stack = Stack::start();
    let p = Producer::new(&stack);
    p.topic("http.items", 1).await;
    let events: Vec<ChangeEvent> = (1..=50)
        .map(|i| upsert(i, i, if i == 17 { "refuse-me" } else { "ok" }))
        .collect();
    p.send("http.items", &items_table(), &events).await;
    let receiver = Receiver::start(|_, body| {
        let refused = body["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["after"]["v"] == "refuse-me"));
        if refused {
            Answer::Status(422)
        } else {
            Answer::Ok
        }
    })
    .await;
    std::env::set_var("SYNCLINE_TEST_HTTP_TOKEN_B", "another-t0ken");
    let dir = TempDir::new("http-refused");
    let file = pipeline(
        &stack,
        &dir,
        &receiver.url(),
        "SYNCLINE_TEST_HTTP_TOKEN_B",
        "",
    );
    let run = SynclineRun::start(&file);
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |r: &Receiver| {
        r.accepted()
            .iter()
            .map(|r| r.body["changes"].as_array().unwrap().len())
            .sum::<usize>()
    };
    while count(&receiver) < 49 || support::topic_records(&stack.bootstrap(), "http.dead") < 1 {
        assert!(Instant::now() < deadline, "{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&receiver), 49, "every other change once");
    let log = run.log();
    assert!(log.contains("422"), "the reason names the answer:\n{log}");
}
