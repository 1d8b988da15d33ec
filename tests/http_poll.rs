//! The `http_poll` source end to end, on real parts: a real HTTP API on
//! loopback (tests/support/api.rs) paginating in every style behind every
//! kind of auth and failing on purpose, the real broker and registry, and
//! the `postgres` sink writing into a database of the machine's Postgres.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::api::{Api, Faults, Item};
use support::{pg_connect, topic_records, PgDb, Stack, SynclineRun, TempDir};

fn items(n: i64) -> Vec<Item> {
    (1..=n)
        .map(|id| Item {
            id,
            name: format!("item {id}"),
            updated_at: 1000 + id,
        })
        .collect()
}

/// One `http_poll` source entry (YAML under `sources:`).
fn source(name: &str, url: &str, topic: &str, body: &str) -> String {
    format!(
        "  {name}:\n    type: http_poll\n    url: {url}\n    topic: {topic}\n    key: [id]\n    schedule: {{ interval_ms: 2000 }}\n{body}"
    )
}

fn pipeline(
    stack: &Stack,
    name: &str,
    target: &str,
    sources: &[String],
    topics: &[&str],
) -> String {
    let map: Vec<String> = topics
        .iter()
        .map(|t| format!("{t}: {}", t.replace('.', "_")))
        .collect();
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
  partitions: 2
registry:
  url: {registry}
sources:
{sources}sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [{topics}]
    tables: {{ {map} }}
    batch_size: 500
"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        sources = sources.join(""),
        topics = topics.join(", "),
        map = map.join(", "),
    )
}

/// id -> (name, updated_at) of a target table.
async fn rows(url: &str, table: &str) -> BTreeMap<i64, (String, i64)> {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return BTreeMap::new();
    };
    tokio::spawn(conn);
    client
        .query(&format!("SELECT id, name, updated_at FROM {table}"), &[])
        .await
        .map(|rs| {
            rs.iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect()
        })
        .unwrap_or_default()
}

fn expected(items: &[Item]) -> BTreeMap<i64, (String, i64)> {
    items
        .iter()
        .map(|i| (i.id, (i.name.clone(), i.updated_at)))
        .collect()
}

/// [`wait_until`], showing the end of syncline's log when it times out.
async fn wait_for<F, Fut>(run: &SynclineRun, timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !cond().await {
        if std::time::Instant::now() > deadline {
            let log = run.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {timeout:?} waiting for: {what}\nsyncline's log ends:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write(dir: &TempDir, yaml: &str) -> std::path::PathBuf {
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Each pagination style, each behind its own auth (bearer, API key in the
/// query, OAuth2 client credentials with tokens that expire every second
/// and are refused (401) after three requests,
/// basic, API key in a header), against an API that answers every 7th
/// request 429 (`Retry-After: 1`) and every 11th 500: every record lands at
/// the target, and each was published exactly once (no crash, so no
/// republishing: the retries of failed requests publish nothing twice).
#[tokio::test(flavor = "multi_thread")]
async fn every_pagination_style_and_auth_lands_each_record_once_through_429s_and_500s() {
    const N: i64 = 300;
    let stack = Stack::start();
    let target = PgDb::create("http_poll_styles").await;
    let api = Api::start(
        items(N),
        Faults {
            too_many_every: Some(7),
            error_every: Some(11),
            delay: Duration::ZERO,
        },
    )
    .await;
    let sources = vec![
        source("pages", &api.url("/page"), "api.pages",
            "    records: $.data\n    pagination: { type: page_number, size_param: per_page, size: 20, has_more_path: $.has_more }\n    auth: { bearer: static-token }\n"),
        source("offsets", &api.url("/offset"), "api.offsets",
            "    records: $.items\n    pagination: { type: offset, size: 30 }\n    auth: { api_key: { query: api_key, value: k3y } }\n"),
        source("cursors", &api.url("/cursor"), "api.cursors",
            &format!("    records: $.data\n    query: {{ limit: \"40\" }}\n    pagination: {{ type: cursor, cursor_path: $.meta.next }}\n    auth: {{ oauth2: {{ token_url: \"{}\", client_id: syncline, client_secret: s3cret }} }}\n", api.url("/token"))),
        source("nexts", &api.url("/next"), "api.nexts",
            "    records: $.results\n    pagination: { type: next_url, next_url_path: $.next }\n    auth: { basic: { username: user, password: pw } }\n"),
        source("links", &api.url("/link"), "api.links",
            "    pagination: { type: link_header }\n    auth: { api_key: { header: X-Api-Key, value: k3y } }\n    requests_per_second: 50\n"),
    ];
    let topics = [
        "api.pages",
        "api.offsets",
        "api.cursors",
        "api.nexts",
        "api.links",
    ];
    let dir = TempDir::new("http-poll-styles");
    // One run per source: the schedule is long, so a second run cannot
    // republish before the counts are taken.
    let yaml = pipeline(&stack, "styles", &target.url(), &sources, &topics)
        .replace("interval_ms: 2000", "interval_ms: 3600000");
    let run = SynclineRun::start(&write(&dir, &yaml));
    let want = expected(&items(N));
    for t in topics {
        let table = t.replace('.', "_");
        let url = target.url();
        wait_for(
            &run,
            Duration::from_secs(240),
            &format!("every record in `{table}`"),
            || async { rows(&url, &table).await.len() >= want.len() },
        )
        .await;
        assert_eq!(
            rows(&url, &table).await,
            want,
            "`{table}` equals the API's records"
        );
        assert_eq!(
            topic_records(&stack.bootstrap(), t),
            N,
            "`{t}`: each record published once"
        );
    }
    let log = api.log();
    assert!(
        log.iter().any(|l| l.status == 429),
        "the API turned requests away"
    );
    assert!(log.iter().any(|l| l.status == 500));
    assert!(
        log.iter().filter(|l| l.path == "/token").count() >= 2,
        "expiring OAuth2 tokens were fetched again"
    );
    assert!(
        !run.log().contains("k3y")
            && !run.log().contains("s3cret")
            && !run.log().contains("static-token"),
        "no secret in the log"
    );
}

/// An API whose cursor never moves: each run ends after the repeat, says so
/// in the log, and the source keeps running (the next run comes); the
/// records of the first page land.
#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_that_does_not_move_ends_the_run_and_says_so() {
    let stack = Stack::start();
    let target = PgDb::create("http_poll_stuck").await;
    let api = Api::start(items(100), Faults::default()).await;
    let sources = vec![source(
        "stuck",
        &api.url("/stuck"),
        "api.stuck",
        "    records: $.data\n    pagination: { type: cursor, cursor_path: $.meta.next }\n",
    )];
    let dir = TempDir::new("http-poll-stuck");
    let run = SynclineRun::start(&write(
        &dir,
        &pipeline(&stack, "stuck", &target.url(), &sources, &["api.stuck"]),
    ));
    wait_for(
        &run,
        Duration::from_secs(120),
        "two runs that stopped looping",
        || async { run.log().matches("the pagination did not move").count() >= 2 },
    )
    .await;
    let url = target.url();
    let want = expected(&items(25));
    wait_for(
        &run,
        Duration::from_secs(60),
        "the first page at the target",
        || async { rows(&url, "api_stuck").await == want },
    )
    .await;
    let requests = api.log().len();
    assert!(
        requests < 20,
        "{requests} requests: the pagination was not followed in a loop"
    );
}

/// `kill -9` in the middle of a run of 80 pages: the restarted source asks
/// for the page it was at (not the first), every record lands, and at most
/// one page was published twice.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_pagination_resumes_at_the_stored_page() {
    const N: i64 = 2000;
    let stack = Stack::start();
    let target = PgDb::create("http_poll_kill").await;
    let api = Api::start(
        items(N),
        Faults {
            delay: Duration::from_millis(60),
            ..Default::default()
        },
    )
    .await;
    let sources = vec![source("pages", &api.url("/page"), "api.pages",
        "    records: $.data\n    pagination: { type: page_number, has_more_path: $.has_more }\n    auth: { bearer: static-token }\n    schedule: { interval_ms: 3600000 }\n")
        .replace("    schedule: { interval_ms: 2000 }\n", "")];
    let dir = TempDir::new("http-poll-kill");
    let mut run = SynclineRun::start(&write(
        &dir,
        &pipeline(&stack, "kill", &target.url(), &sources, &["api.pages"]),
    ));
    wait_for(
        &run,
        Duration::from_secs(120),
        "30 pages asked for",
        || async { api.log().iter().filter(|l| l.path == "/page").count() >= 30 },
    )
    .await;
    run.kill9();
    let before = api.log().len();
    run.restart();
    let url = target.url();
    let want = expected(&items(N));
    wait_for(
        &run,
        Duration::from_secs(240),
        "every record at the target",
        || async { rows(&url, "api_pages").await.len() >= want.len() },
    )
    .await;
    assert_eq!(rows(&url, "api_pages").await, want);
    let first_after = api.log()[before..]
        .iter()
        .find(|l| l.path == "/page")
        .map(|l| l.target.clone())
        .unwrap();
    assert!(
        !first_after.contains("page=1&") && !first_after.ends_with("page=1"),
        "the restart resumed at its stored page, not at the first: {first_after}"
    );
    let published = topic_records(&stack.bootstrap(), "api.pages");
    assert!(
        published <= N + 25,
        "{published} records: at most one page republished"
    );
}

/// Incremental runs: the first run asks from `start`; the next asks from
/// the greatest cursor minus the lookback, gets the boundary records again
/// and drops them by key (they are not republished), publishes the changed
/// and new records, and the target follows the API.
#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_ask_from_the_cursor_with_lookback_and_drop_the_boundary() {
    let stack = Stack::start();
    let target = PgDb::create("http_poll_incremental").await;
    let api = Api::start(items(100), Faults::default()).await;
    let sources = vec![source("inc", &api.url("/cursor"), "api.inc",
        &format!("    records: $.data\n    pagination: {{ type: cursor, cursor_path: $.meta.next }}\n    incremental: {{ cursor_field: updated_at, param: updated_since, start: \"0\", lookback: 5 }}\n    auth: {{ oauth2: {{ token_url: \"{}\", client_id: syncline, client_secret: s3cret }} }}\n", api.url("/token")))];
    let dir = TempDir::new("http-poll-inc");
    let run = SynclineRun::start(&write(
        &dir,
        &pipeline(&stack, "inc", &target.url(), &sources, &["api.inc"]),
    ));
    let url = target.url();
    let mut now = items(100);
    wait_for(
        &run,
        Duration::from_secs(120),
        "the first run at the target",
        || async { rows(&url, "api_inc").await == expected(&now) },
    )
    .await;
    assert_eq!(topic_records(&stack.bootstrap(), "api.inc"), 100);
    // Two changed items and one new one, all after the greatest cursor (1100).
    for item in [
        Item {
            id: 7,
            name: "item 7 changed".into(),
            updated_at: 1200,
        },
        Item {
            id: 50,
            name: "item 50 changed".into(),
            updated_at: 1201,
        },
        Item {
            id: 101,
            name: "item 101".into(),
            updated_at: 1202,
        },
    ] {
        api.put(item.clone());
        match now.iter_mut().find(|i| i.id == item.id) {
            Some(i) => *i = item,
            None => now.push(item),
        }
    }
    wait_for(
        &run,
        Duration::from_secs(120),
        "the changes at the target",
        || async { rows(&url, "api_inc").await == expected(&now) },
    )
    .await;
    // Let a few more runs pass: each asks from 1202 - 5 and drops what it
    // published already.
    let runs = || run.log().matches("http_poll: run done").count();
    let seen = runs();
    wait_for(&run, Duration::from_secs(60), "two more runs", || async {
        runs() >= seen + 2
    })
    .await;
    assert_eq!(
        topic_records(&stack.bootstrap(), "api.inc"),
        103,
        "boundary records are not republished"
    );
    let asked: Vec<String> = api
        .log()
        .iter()
        .filter(|l| l.path == "/cursor")
        .map(|l| l.target.clone())
        .collect();
    assert!(asked[0].contains("updated_since=0"), "{}", asked[0]);
    assert!(
        asked.last().unwrap().contains("updated_since=1197"),
        "lookback 5 from 1202: {:?}",
        asked.last()
    );
    let rows: i64 = pg_connect(&url)
        .await
        .query_one("SELECT count(*) FROM api_inc", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 101);
}
