//! `make bench` (webhook): the `webhook` source beside the limits it passes
//! through, in the same run, on the same Apache Kafka broker:
//!
//! - raw producer: plain librdkafka writing records of a delivery's size;
//! - plain HTTP: the same signed requests, from the same client and
//!   concurrency, to a loopback server that answers 200 at once (the
//!   receiver of the http sink's tests), so the HTTP cost alone;
//! - webhook: the same requests to syncline's `webhook` source, each answered
//!   only after the broker acknowledged its record: deliveries/s, and the
//!   p50/p99 time from sending a delivery to its 2xx, at 64 senders and at 1.
//!
//! - http_poll: the `http_poll` source reading the same number of records
//!   from a loopback API (tests/support/api.rs, page numbers, 1,000 records
//!   a page) until the broker acknowledged every one: records/s.
//!
//! Prints figures; asserts only that every delivery got its 2xx and every
//! polled record arrived.

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use std::time::{Duration, Instant};
use support::{free_port, raw_producer, Stack, SynclineRun, TempDir};
use syncline_sources::webhook::verify::sign;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn deliveries() -> usize {
    std::env::var("SYNCLINE_BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn body(i: usize) -> String {
    format!(
        r#"{{"type":"order.updated","timestamp":"2026-12-01T00:00:00Z","data":{{"id":{i},"status":"paid","amount":"{}.{:02}","customer":"customer {}"}}}}"#,
        i / 100,
        i % 100,
        i % 997
    )
}

/// Send `n` signed deliveries to `url` from `senders` concurrent senders;
/// the wall time and each delivery's time to its 2xx.
async fn send_all(url: &str, n: usize, senders: usize, offset: usize) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .build()
        .unwrap();
    let start = Instant::now();
    let times: Vec<Duration> = futures::stream::iter(offset..offset + n)
        .map(|i| {
            let client = &client;
            async move {
                let id = format!("msg_{i}");
                let body = body(i);
                let ts = chrono::Utc::now().timestamp();
                let sent = Instant::now();
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header(
                        "webhook-signature",
                        sign::standard(SECRET, &id, ts, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "delivery {id}: {}", r.status());
                sent.elapsed()
            }
        })
        .buffer_unordered(senders)
        .collect()
        .await;
    (start.elapsed(), times)
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i].as_secs_f64() * 1000.0
}

fn report(what: &str, n: usize, took: Duration, times: &mut [Duration]) -> f64 {
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "{what:<44} {rate:>9.0} deliveries/s   time to 2xx p50 {:.2} ms, p99 {:.2} ms",
        percentile(times, 0.5),
        percentile(times, 0.99)
    );
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = deliveries();
    let stack = Stack::start();
    let size = body(n / 2).len() + 64;
    let raw = raw_producer(&stack.bootstrap(), n as i64, size).await;
    let raw_rate = n as f64 / raw.as_secs_f64();
    println!(
        "webhook bench: {n} deliveries of ~{size} bytes, one Apache Kafka broker, release build"
    );
    println!(
        "{:<44} {raw_rate:>9.0} records/s",
        "raw producer (librdkafka, acks=all)"
    );

    let null = support::receiver::Receiver::null().await;
    let (took, mut times) = send_all(&null.url(), n, 64, 0).await;
    let plain = report(
        "plain HTTP, 64 senders (answers at once)",
        n,
        took,
        &mut times,
    );

    let port = free_port();
    let dir = TempDir::new("bench-webhook");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: bench-webhook
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  hooks:
    type: webhook
    listen: 127.0.0.1:{port}
    path: /hooks
    topic: bench.deliveries
    verify: standard
    secrets: ["{SECRET}"]
"#,
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
        ),
    )
    .unwrap();
    let run = SynclineRun::start(&file);
    let url = format!("http://127.0.0.1:{port}/hooks");
    let client = reqwest::Client::new();
    support::wait_until(Duration::from_secs(120), "the webhook listener", || async {
        client.post(&url).body("{}").send().await.is_ok()
    })
    .await;
    // Warm up: the first delivery registers nothing (schemas are registered
    // at start) but opens the producer's connections.
    send_all(&url, 1_000, 64, n * 10).await;
    let (took, mut times) = send_all(&url, n, 64, 0).await;
    let hooked = report("syncline webhook, 64 senders", n, took, &mut times);
    let one = (n / 10).max(1_000);
    let (took, mut times) = send_all(&url, one, 1, n * 20).await;
    report(
        "syncline webhook, 1 sender (latency)",
        one,
        took,
        &mut times,
    );
    println!(
        "webhook / plain HTTP {:.2}; webhook / raw producer {:.2}",
        hooked / plain,
        hooked / raw_rate
    );
    drop(run);

    // http_poll: the same number of records from a loopback API.
    let items = (1..=n as i64)
        .map(|id| support::api::Item {
            id,
            name: format!("customer {}", id % 997),
            updated_at: 1_000 + id,
        })
        .collect();
    let api = support::api::Api::start(items, support::api::Faults::default()).await;
    std::fs::write(
        &file,
        format!(
            r#"name: bench-http-poll
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 3
registry:
  url: {registry}
sources:
  api:
    type: http_poll
    url: {url}
    topic: bench.polled
    records: $.data
    key: [id]
    schedule: {{ interval_ms: 3600000 }}
    pagination: {{ type: page_number, size_param: per_page, size: 1000, has_more_path: $.has_more }}
    auth: {{ bearer: static-token }}
"#,
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
            url = api.url("/page"),
        ),
    )
    .unwrap();
    let start = Instant::now();
    let run = SynclineRun::start(&file);
    support::wait_until(
        Duration::from_secs(600),
        "every polled record in the topic",
        || async { support::topic_records(&stack.bootstrap(), "bench.polled") >= n as i64 },
    )
    .await;
    let took = start.elapsed();
    println!(
        "{:<44} {:>9.0} records/s (start-up included; 1,000 records a page)",
        "syncline http_poll, loopback API",
        n as f64 / took.as_secs_f64()
    );
    drop(run);
}
