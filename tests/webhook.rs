//! The `webhook` source end to end, on real parts: syncline listening on
//! loopback, senders that sign like Standard Webhooks senders and retry like
//! them, the real broker and registry, and the `postgres` sink writing the
//! deliveries into a database of the machine's Postgres.

mod support;

use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{free_port, pg_connect, wait_until, PgDb, Stack, SynclineRun, TempDir};
use syncline_sources::webhook::verify::sign;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The secret being rotated out: still accepted.
const OLD_SECRET: &str = "whsec_b2xkIHNlY3JldCBvbGQgc2VjcmV0";

fn pipeline(stack: &Stack, port: u16, target: &str, extra: &str) -> String {
    format!(
        r#"name: hooks
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
  hooks:
    type: webhook
    listen: 127.0.0.1:{port}
    path: /hooks
    topic: hooks.deliveries
    verify: standard
    secrets: ["{SECRET}", "{OLD_SECRET}"]
    max_body_bytes: 100000
{extra}sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [hooks.deliveries]
    tables: {{ hooks.deliveries: deliveries }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
    )
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POST `body` as delivery `id`, signed with `secret` at `ts` (no
/// signature when `secret` is None).
async fn post(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    ts: i64,
    secret: Option<&str>,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string());
    if let Some(s) = secret {
        req = req.header(
            "webhook-signature",
            sign::standard(s, id, ts, body.as_bytes()),
        );
    }
    req.body(body.to_string()).send().await
}

/// What a sender saw.
#[derive(Default)]
struct Seen {
    too_many: AtomicUsize,
    unavailable: AtomicUsize,
    retry_after_missing: AtomicUsize,
}

/// Deliver `id` as a Standard Webhooks sender does: sign afresh at each
/// attempt, retry on no answer, 429 and 5xx until a 2xx.
async fn deliver(client: &reqwest::Client, url: &str, id: &str, body: &str, seen: &Seen) {
    loop {
        match post(client, url, id, now_s(), Some(SECRET), body).await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status() == 429 || r.status().is_server_error() => {
                if r.status() == 429 {
                    seen.too_many.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                if r.headers().get("retry-after").is_none() {
                    seen.retry_after_missing.fetch_add(1, Ordering::Relaxed);
                }
                // Retry-After says seconds; the test waits less to stay short.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(r) => panic!("delivery {id}: unexpected {}", r.status()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn target_ids(url: &str) -> BTreeSet<String> {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return BTreeSet::new();
    };
    tokio::spawn(conn);
    client
        .query("SELECT id FROM deliveries", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

async fn wait_listening(client: &reqwest::Client, url: &str) {
    wait_until(Duration::from_secs(120), "the webhook listener", || async {
        client.post(url).body("{}").send().await.is_ok()
    })
    .await;
}

/// 10,000 signed deliveries from 64 concurrent senders that retry, one in
/// ten sent again after its 2xx (a sender that lost the answer), while
/// syncline is killed with SIGKILL twice. Every delivery that got a 2xx is
/// at the target exactly once; no unsigned, mis-signed, stale or tampered
/// delivery is, each of those was answered 401; a body over the limit 413,
/// one that is not JSON 400; the senders met 429s with `Retry-After`, as
/// `max_in_flight: 8` makes them.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_signed_deliveries_with_retries_and_kill_9_land_exactly_once() {
    const N: usize = 10_000;
    let stack = Stack::start();
    let target = PgDb::create("webhook_target").await;
    let port = free_port();
    let dir = TempDir::new("webhook");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline(&stack, port, &target.url(), "    max_in_flight: 8\n"),
    )
    .unwrap();
    let mut run = SynclineRun::start(&file);
    let url = format!("http://127.0.0.1:{port}/hooks");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_listening(&client, &url).await;

    // Hostile deliveries first: each refused, none published.
    let body = r#"{"type":"order.created","data":{"n":0}}"#;
    let bad: Vec<(&str, Option<&str>, i64, &str)> = vec![
        ("unsigned", None, now_s(), body),
        (
            "wrong-secret",
            Some("whsec_c29tZW9uZSBlbHNl"),
            now_s(),
            body,
        ),
        ("stale", Some(SECRET), now_s() - 600, body),
        ("future", Some(SECRET), now_s() + 600, body),
    ];
    for (id, secret, ts, body) in bad {
        let r = post(&client, &url, &format!("bad_{id}"), ts, secret, body)
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{id}");
    }
    // Tampered: signed, then one byte of the body changed.
    let ts = now_s();
    let r = client
        .post(&url)
        .header("webhook-id", "bad_tampered")
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign::standard(SECRET, "bad_tampered", ts, body.as_bytes()),
        )
        .body(body.replace('0', "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tampered");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(200_000));
    // The listener answers 413 as soon as the body passes the limit and
    // closes the connection; a sender still writing may see the close
    // before the answer, which is a refusal too: try until the answer is read.
    let mut answer = None;
    for _ in 0..5 {
        if let Ok(r) = post(
            &reqwest::Client::new(),
            &url,
            "bad_big",
            now_s(),
            Some(SECRET),
            &big,
        )
        .await
        {
            answer = Some(r.status());
            break;
        }
    }
    assert_eq!(answer.map(|s| s.as_u16()), Some(413), "over max_body_bytes");
    let r = post(&client, &url, "bad_json", now_s(), Some(SECRET), "not json")
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not JSON");
    // Signed by the secret being rotated out: accepted.
    let ts = now_s();
    let r = client
        .post(&url)
        .header("webhook-id", "rotated")
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign::standard(OLD_SECRET, "rotated", ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old secret during a rotation");

    let acked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Seen::default());
    let acked_ids = Arc::new(Mutex::new(BTreeSet::new()));
    let senders = {
        let (client, url, acked, seen, acked_ids) = (
            client.clone(),
            url.clone(),
            acked.clone(),
            seen.clone(),
            acked_ids.clone(),
        );
        tokio::spawn(async move {
            futures::stream::iter(0..N)
                .map(|i| {
                    let (client, url, acked, seen, acked_ids) =
                        (&client, &url, &acked, &seen, &acked_ids);
                    async move {
                        let id = format!("msg_{i:05}");
                        let body = format!(r#"{{"type":"order.created","data":{{"n":{i}}}}}"#);
                        deliver(client, url, &id, &body, seen).await;
                        if i % 10 == 0 {
                            // The sender lost our answer and delivers again.
                            deliver(client, url, &id, &body, seen).await;
                        }
                        acked_ids.lock().unwrap().insert(id);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await;
        })
    };
    for at in [N * 3 / 10, N * 7 / 10] {
        wait_until(
            Duration::from_secs(300),
            "deliveries to be acknowledged",
            || async { acked.load(Ordering::Relaxed) >= at },
        )
        .await;
        run.kill9();
        tokio::time::sleep(Duration::from_millis(500)).await;
        run.restart();
    }
    senders.await.unwrap();
    let mut want = acked_ids.lock().unwrap().clone();
    assert_eq!(want.len(), N);
    want.insert("rotated".into());
    let url_db = target.url();
    wait_until(
        Duration::from_secs(180),
        "every acknowledged delivery at the target",
        || async { target_ids(&url_db).await.len() >= want.len() },
    )
    .await;
    let got = target_ids(&url_db).await;
    assert_eq!(
        got, want,
        "the target holds exactly the acknowledged deliveries"
    );
    let rows: i64 = pg_connect(&url_db)
        .await
        .query_one("SELECT count(*) FROM deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, want.len());
    let published = support::topic_records(&stack.bootstrap(), "hooks.deliveries");
    eprintln!(
        "published {published} records for {} deliveries; 429s {}, 5xx {}",
        want.len(),
        seen.too_many.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed)
    );
    assert!(
        published as usize >= want.len() + N / 10,
        "every re-delivery was published too"
    );
    assert!(
        seen.too_many.load(Ordering::Relaxed) > 0,
        "max_in_flight: 8 turned senders away"
    );
    assert_eq!(
        seen.retry_after_missing.load(Ordering::Relaxed),
        0,
        "each 429/503 says Retry-After"
    );
    let body_ok: i64 = pg_connect(&url_db)
        .await
        .query_one(
            "SELECT count(*) FROM deliveries \
             WHERE id LIKE 'msg\\_%' AND body->'data'->>'n' = substr(id, 5)::int::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        body_ok as usize, N,
        "each row holds its own delivery's body"
    );
}

/// While the broker is away a delivery is answered 503 with `Retry-After`
/// once `ack_timeout_ms` passed, never 2xx; the sender's retry after the
/// broker is back lands, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_answered_503_while_the_broker_is_away_and_lands_once_after() {
    let mut stack = Stack::start();
    let target = PgDb::create("webhook_broker_away").await;
    let port = free_port();
    let dir = TempDir::new("webhook-away");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        pipeline(&stack, port, &target.url(), "    ack_timeout_ms: 1500\n"),
    )
    .unwrap();
    let run = SynclineRun::start(&file);
    let url = format!("http://127.0.0.1:{port}/hooks");
    let client = reqwest::Client::new();
    wait_listening(&client, &url).await;
    let body = r#"{"type":"ping"}"#;
    let r = post(&client, &url, "before", now_s(), Some(SECRET), body)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stack.broker.kill9();
    let r = post(&client, &url, "while-away", now_s(), Some(SECRET), body)
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "no 2xx before the broker has it");
    assert!(r.headers().get("retry-after").is_some());
    stack.broker.start_again();
    let seen = Seen::default();
    deliver(&client, &url, "while-away", body, &seen).await;
    let url_db = target.url();
    wait_until(
        Duration::from_secs(180),
        "both deliveries at the target",
        || async { target_ids(&url_db).await.len() == 2 },
    )
    .await;
    assert_eq!(
        target_ids(&url_db).await,
        BTreeSet::from(["before".to_string(), "while-away".to_string()])
    );
    drop(run);
}
