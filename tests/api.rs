//! The management API (docs/api.md) of a real `syncline run`, over HTTP, on
//! real parts (broker, registry, Postgres source and target): what it shows
//! of healthy, paused and stopped components; who may do what; dead
//! letters listed and replayed so that each lands exactly once; the
//! `syncline status` and `syncline dlq` commands; and the contract of
//! docs/openapi.yaml, checked by schemathesis against the live server.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use support::{wait_until, PgDb, Stack, SynclineRun, TempDir};

const READ_TOKEN: &str = "read-token-4c1b6f0e9a2d";
const OPERATOR_TOKEN: &str = "operator-token-7e3a9d51c8b0";

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    fn of(run: &SynclineRun) -> Api {
        Api {
            url: run.api_url(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("the API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("the API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn component(&self, name: &str, token: Option<&str>) -> Value {
        let (status, c) = self.get(&format!("/api/v1/components/{name}"), token).await;
        assert_eq!(status, 200, "{c}");
        c
    }

    async fn wait_state(&self, name: &str, token: Option<&str>, state: &str, run: &SynclineRun) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let c = self.component(name, token).await;
            if c["state"] == state {
                return;
            }
            if std::time::Instant::now() > deadline {
                support::panic_with_logs(
                    &format!("`{name}` never became {state}; its status: {c}"),
                    &[run],
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn pipeline_yaml(stack: &Stack, name: &str, source: &PgDb, target: &PgDb, api: &str) -> String {
    format!(
        r#"name: {name}
kafka:
  bootstrap_servers: {bootstrap}
registry:
  url: {registry}
sources:
  shop:
    type: sql_poll
    connection: {source}
    schedule: {{ interval_ms: 200 }}
    tables:
      - table: public.orders
        topic: shop.orders
        mode: timestamp
        timestamp_column: updated_at
        incrementing_column: id
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [shop.orders]
    tables: {{ shop.orders: orders }}
    batch_linger_ms: 20
{api}"#,
        bootstrap = stack.bootstrap(),
        registry = stack.registry_url(),
        source = source.url(),
        target = target.url(),
    )
}

const SOURCE_DDL: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, qty int NOT NULL, \
     updated_at timestamptz NOT NULL DEFAULT clock_timestamp())";

async fn count(db: &PgDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

/// Rows as `id:qty`, in key order.
async fn rows(db: &PgDb) -> Vec<String> {
    db.client()
        .await
        .query("SELECT id, qty FROM orders ORDER BY id", &[])
        .await
        .map(|rs| {
            rs.iter()
                .map(|r| format!("{}:{}", r.get::<_, i64>(0), r.get::<_, i32>(1)))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_rows_equal(source: &PgDb, target: &PgDb, what: &str, run: &SynclineRun) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (s, t) = (rows(source).await, rows(target).await);
        if s == t {
            return;
        }
        if std::time::Instant::now() > deadline {
            support::panic_with_logs(
                &format!("{what}: target never equalled source\nsource {s:?}\ntarget {t:?}"),
                &[run],
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

use support::syncline_cli as syncline;

/// A broker and registry, a source and a target database, and a pipeline
/// file `name` between them: the source's `orders` made by `source_sql`,
/// the file's `api:` section `api`.
struct Setup {
    _stack: Stack,
    source: PgDb,
    target: PgDb,
    dir: TempDir,
    file: std::path::PathBuf,
}

async fn setup(name: &str, source_sql: &str, api: &str) -> Setup {
    let stack = Stack::start();
    let prefix = name.replace('-', "_");
    let (source, target) = (
        PgDb::create(&format!("{prefix}_src")).await,
        PgDb::create(&format!("{prefix}_dst")).await,
    );
    source
        .client()
        .await
        .batch_execute(source_sql)
        .await
        .unwrap();
    let dir = TempDir::new(name);
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, pipeline_yaml(&stack, name, &source, &target, api)).unwrap();
    Setup {
        _stack: stack,
        source,
        target,
        dir,
        file,
    }
}

/// `syncline run FILE ARGS`, once its API answers.
async fn run_with_api(file: &std::path::Path, args: &[&str]) -> (SynclineRun, Api) {
    let run = SynclineRun::start_with_args(file, args);
    let api = Api::of(&run);
    wait_until(Duration::from_secs(60), "the API listens", || async {
        reqwest::get(format!("{}/healthz", api.url)).await.is_ok()
    })
    .await;
    (run, api)
}

/// `orders` with `n` rows.
fn orders_with(n: i64) -> String {
    format!("{SOURCE_DDL}; INSERT INTO orders (id, qty) SELECT g, g FROM generate_series(1, {n}) g")
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_pause_resume_and_replay_dead_letters_exactly_once() {
    let api = format!(
        "api:\n  tokens:\n    - {{ name: grafana, role: read, token: \"{READ_TOKEN}\" }}\n    - {{ name: oncall, role: operator, token: \"${{SYNCLINE_TEST_OPERATOR_TOKEN:-{OPERATOR_TOKEN}}}\" }}\n"
    );
    let Setup {
        source,
        target,
        file,
        ..
    } = &setup("api-ops", &orders_with(50), &api).await;
    let src = source.client().await;
    let (code, _, err) = syncline(&["validate", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let (run, api) = run_with_api(file, &[]).await;
    wait_rows_equal(source, target, "the first 50 rows", &run).await;
    api.wait_state("warehouse", Some(READ_TOKEN), "running", &run)
        .await;
    api.wait_state("shop", Some(READ_TOKEN), "running", &run)
        .await;

    // Who may do what.
    let (status, body) = api.get("/api/v1/components", None).await;
    assert_eq!(status, 401, "no token: {body}");
    let (status, _) = api
        .get("/api/v1/components", Some("not-a-token-at-all-xx"))
        .await;
    assert_eq!(status, 401, "an unknown token");
    let (status, list) = api.get("/api/v1/components", Some(READ_TOKEN)).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop", "warehouse"]);
    let (status, body) = api
        .post(
            "/api/v1/components/warehouse/pause",
            Some(READ_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 403, "a read token may not pause: {body}");
    let r = api
        .http
        .post(format!("{}/api/v1/components/warehouse/pause", api.url))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415, "a POST that is not JSON");
    let (status, _) = api.get("/readyz", None).await;
    assert_eq!(status, 200, "everything runs");

    // The sink's status: its lag is known per partition, its rates count.
    let sink = api.component("warehouse", Some(READ_TOKEN)).await;
    assert_eq!(sink["counts"]["records_out"], 50, "{sink}");
    assert_eq!(sink["role"], "sink");
    let shop = api.component("shop", Some(READ_TOKEN)).await;
    assert!(
        shop["lag"]["cursor"]["value"].as_str().is_some(),
        "a polling source shows its cursor: {shop}"
    );

    // Pause the sink: changes wait in Kafka; resume: they land.
    let (status, body) = api
        .post(
            "/api/v1/components/warehouse/pause",
            Some(OPERATOR_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.wait_state("warehouse", Some(READ_TOKEN), "paused", &run)
        .await;
    let (status, ready) = api.get("/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["not_running"][0]["name"], "warehouse", "{ready}");
    src.batch_execute("INSERT INTO orders (id, qty) SELECT g, g FROM generate_series(51, 80) g")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the source publishes 80 rows",
        || async { api.component("shop", Some(READ_TOKEN)).await["counts"]["records_out"] == 80 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(target, "SELECT count(*) FROM orders").await,
        50,
        "a paused sink writes nothing"
    );
    let (status, _) = api
        .post(
            "/api/v1/components/warehouse/resume",
            Some(OPERATOR_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    wait_rows_equal(source, target, "after resuming", &run).await;
    api.wait_state("warehouse", Some(READ_TOKEN), "running", &run)
        .await;

    // `syncline status`: a table, exit 0 when all run.
    let (code, out, err) = syncline(
        &["status", file.to_str().unwrap(), "--api-url", &api.url],
        &[("SYNCLINE_API_TOKEN", READ_TOKEN)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warehouse") && l.contains("postgres") && l.contains("running")),
        "{out}"
    );
    let (code, _, err) = syncline(
        &["status", file.to_str().unwrap(), "--api-url", &api.url],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("needs a token"), "{err}");

    // A row the target refuses goes to the dead-letter topic; the rest lands.
    target
        .client()
        .await
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT qty_not_negative CHECK (qty >= 0)")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO orders (id, qty) VALUES (81, -5), (82, 82)")
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "row 82 lands", || async {
        count(target, "SELECT count(*) FROM orders WHERE id = 82").await == 1
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "the sink counts its dead letter",
        || async {
            api.component("warehouse", Some(READ_TOKEN)).await["counts"]["dead_lettered"] == 1
        },
    )
    .await;
    let (status, listed) = api
        .get("/api/v1/dead-letters?component=warehouse", Some(READ_TOKEN))
        .await;
    assert_eq!(status, 200, "{listed}");
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed}");
    let letter = &letters[0];
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("qty_not_negative"),
        "{letter}"
    );
    assert_eq!(letter["origin"]["topic"], "shop.orders");
    assert_eq!(letter["key"], json!({ "id": 81 }), "the key, decoded");
    assert_eq!(letter["replayable"], true);
    assert_eq!(letter["replayed"], Value::Null);
    let (partition, offset) = (
        letter["partition"].as_i64().unwrap(),
        letter["offset"].as_i64().unwrap(),
    );
    let (status, none) = api
        .get(
            "/api/v1/dead-letters?component=warehouse&reason=no-such-reason",
            Some(READ_TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(none["dead_letters"], json!([]), "the reason filter");
    let (status, bad) = api
        .get("/api/v1/dead-letters?since=yesterday", Some(READ_TOKEN))
        .await;
    assert_eq!(status, 400, "{bad}");

    // `syncline dlq list` reads the same from Kafka.
    let (code, out, err) = syncline(
        &[
            "dlq",
            "list",
            file.to_str().unwrap(),
            "--component",
            "warehouse",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let line: Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(
        (line["partition"].as_i64(), line["offset"].as_i64()),
        (Some(partition), Some(offset))
    );

    // A dry run sends nothing; a read token may not replay.
    let selection = json!({ "component": "warehouse", "partition": partition, "from_offset": offset, "to_offset": offset });
    let mut dry = selection.clone();
    dry["dry_run"] = json!(true);
    let (status, _) = api
        .post("/api/v1/dead-letters/replay", Some(READ_TOKEN), dry.clone())
        .await;
    assert_eq!(status, 403);
    let (status, out) = api
        .post("/api/v1/dead-letters/replay", Some(OPERATOR_TOKEN), dry)
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["dry_run"].as_bool(), out["replayed"].as_u64()),
        (Some(true), Some(1)),
        "{out}"
    );
    // `syncline dlq replay --dry-run`, chosen by the topic the record was for.
    let dry_cli = |topic: &str| {
        syncline(
            &[
                "dlq",
                "replay",
                file.to_str().unwrap(),
                "--component",
                "warehouse",
                "--topic",
                topic,
                "--dry-run",
            ],
            &[],
        )
    };
    let (code, out, err) = dry_cli("shop.orders");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would replay 1 dead letter(s)"), "{out}");
    let (_, out, _) = dry_cli("another.topic");
    assert!(out.contains("would replay 0 dead letter(s)"), "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(target, "SELECT count(*) FROM orders WHERE id = 81").await,
        0
    );

    // Fixed at the target, replayed: the row lands, once.
    target
        .client()
        .await
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT qty_not_negative")
        .await
        .unwrap();
    let (status, out) = api
        .post(
            "/api/v1/dead-letters/replay",
            Some(OPERATOR_TOKEN),
            selection.clone(),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["replayed"], 1, "{out}");
    wait_rows_equal(source, target, "after the replay", &run).await;
    let (_, listed) = api
        .get("/api/v1/dead-letters?component=warehouse", Some(READ_TOKEN))
        .await;
    assert!(
        listed["dead_letters"][0]["replayed"]["offset"].is_i64(),
        "{listed}"
    );

    // Again: skipped as replayed; forced: sent, and still one row.
    let (_, out) = api
        .post(
            "/api/v1/dead-letters/replay",
            Some(OPERATOR_TOKEN),
            selection.clone(),
        )
        .await;
    assert_eq!(
        (out["replayed"].as_u64(), out["already_replayed"].as_u64()),
        (Some(0), Some(1)),
        "{out}"
    );
    let (code, out, err) = syncline(
        &[
            "dlq",
            "replay",
            file.to_str().unwrap(),
            "--component",
            "warehouse",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replayed 0 dead letter(s); 1 skipped as replayed before"),
        "the command line sees the API's replay: {out}"
    );
    let mut forced = selection.clone();
    forced["force"] = json!(true);
    let before = api.component("warehouse", Some(READ_TOKEN)).await["counts"]["records_in"]
        .as_u64()
        .unwrap();
    let (_, out) = api
        .post("/api/v1/dead-letters/replay", Some(OPERATOR_TOKEN), forced)
        .await;
    assert_eq!(out["replayed"], 1, "{out}");
    // The forced copy is consumed and changes nothing.
    wait_until(
        Duration::from_secs(30),
        "the sink reads the forced replay",
        || async {
            api.component("warehouse", Some(READ_TOKEN)).await["counts"]["records_in"]
                .as_u64()
                .unwrap()
                > before
        },
    )
    .await;
    assert_eq!(
        count(target, "SELECT count(*) FROM orders WHERE id = 81").await,
        1
    );
    wait_rows_equal(source, target, "after a forced second replay", &run).await;

    // An operator's restart: counted, and it runs again.
    let (status, _) = api
        .post(
            "/api/v1/components/warehouse/restart",
            Some(OPERATOR_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    wait_until(
        Duration::from_secs(30),
        "the restart is counted",
        || async { api.component("warehouse", Some(READ_TOKEN)).await["restarts"] == 1 },
    )
    .await;
    api.wait_state("warehouse", Some(READ_TOKEN), "running", &run)
        .await;
    src.batch_execute(
        "UPDATE orders SET qty = qty + 1000, updated_at = clock_timestamp() WHERE id <= 10",
    )
    .await
    .unwrap();
    wait_rows_equal(source, target, "after the restart", &run).await;
    let (status, body) = api
        .post(
            "/api/v1/components/nobody/restart",
            Some(OPERATOR_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .post(
            "/api/v1/components/shop/snapshot",
            Some(OPERATOR_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "sql_poll has no snapshot to ask for: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_component_shows_why_and_an_operator_restart_runs_it_again() {
    // No `updated_at` yet: the source cannot poll by it and stops.
    let Setup {
        source,
        target,
        dir,
        file,
        ..
    } = &setup(
        "api-stop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, qty int NOT NULL); INSERT INTO orders VALUES (1, 1), (2, 2)",
        "",
    )
    .await;
    let src = source.client().await;
    let state_dir = dir.path().join("state");
    let (run, api) = run_with_api(file, &["--state-dir", state_dir.to_str().unwrap()]).await;
    api.wait_state("shop", None, "stopped", &run).await;
    let shop = api.component("shop", None).await;
    let error = shop["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("updated_at"),
        "the error names the column: {shop}"
    );
    api.wait_state("warehouse", None, "running", &run).await;

    // `syncline status` finds the API through the state directory, shows
    // the stopped source with its error, and exits 1.
    let (code, out, err) = syncline(
        &[
            "status",
            file.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("shop"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("stopped") && line.contains("updated_at"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("warehouse") && l.contains("running")),
        "{out}"
    );

    // Without tokens the API is for this machine only: another Host is refused.
    let r = api
        .http
        .get(format!("{}/api/v1/components", api.url))
        .header("host", "rebound.example:9470")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Fixed, then restarted by an operator: it runs and the rows land.
    src.batch_execute(
        "ALTER TABLE orders ADD COLUMN updated_at timestamptz NOT NULL DEFAULT clock_timestamp()",
    )
    .await
    .unwrap();
    let (status, body) = api
        .post("/api/v1/components/shop/restart", None, json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    api.wait_state("shop", None, "running", &run).await;
    wait_rows_equal(source, target, "after the restart", &run).await;
    let (code, out, _) = syncline(
        &[
            "status",
            file.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
}

/// docs/openapi.yaml against the live server: schemathesis sends generated
/// requests to every operation (with an operator token) and checks each
/// answer's status and body against the file; no answer may be a 5xx.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_as_its_openapi_file_says() {
    let python = std::env::var("SYNCLINE_PYTHON").unwrap_or_else(|_| "python3".into());
    let api = format!(
        "api:\n  tokens:\n    - {{ name: schemathesis, role: operator, token: \"{OPERATOR_TOKEN}\" }}\n"
    );
    let Setup { dir, file, .. } = &setup("api-contract", SOURCE_DDL, &api).await;
    let (run, api) = run_with_api(file, &[]).await;
    let url = api.url;
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let out = Command::new(&python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(&spec)
        .args([
            "--url",
            &url,
            "--header",
            &format!("Authorization: Bearer {OPERATOR_TOKEN}"),
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--request-timeout",
            "60",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs (make tools installs it)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        support::panic_with_logs(
            &format!("schemathesis found the API unlike its file:\n{text}"),
            &[&run],
        );
    }
}

/// `tests/dashboard/e2e.mjs` with `step` and `vars`, in headless Chromium
/// (Debian's, driven by playwright-core: `make tools` installs both); a
/// failure keeps its screenshot beside the test's pipeline file.
fn dashboard_step(
    step: &str,
    url: &str,
    vars: &[(&str, &str)],
    dir: &std::path::Path,
    run: &SynclineRun,
) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = std::env::var("SYNCLINE_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/syncline/node/node_modules",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let screenshot = std::env::temp_dir().join(format!(
        "syncline-dashboard-{step}-{}.png",
        std::process::id()
    ));
    let out = Command::new("node")
        .arg(root.join("tests/dashboard/e2e.mjs"))
        .env("STEP", step)
        .env("DASHBOARD_URL", format!("{url}/"))
        .env("PLAYWRIGHT_CORE", format!("{modules}/playwright-core"))
        .env("SCREENSHOT", &screenshot)
        .envs(vars.iter().copied())
        .current_dir(dir)
        .output()
        .expect("node runs the dashboard test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        support::panic_with_logs(
            &format!(
                "the dashboard's `{step}` check failed (screenshot: {}):\n{text}",
                screenshot.display()
            ),
            &[run],
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_pipeline_and_a_click_replays_a_dead_letter_once() {
    let api = format!(
        "api:\n  tokens:\n    - {{ name: oncall, role: operator, token: \"{OPERATOR_TOKEN}\" }}\n"
    );
    let Setup {
        source,
        target,
        dir,
        file,
        ..
    } = &setup("dashboard", &orders_with(20), &api).await;
    let src = source.client().await;
    let (run, api) = run_with_api(file, &[]).await;
    wait_rows_equal(source, target, "the first rows", &run).await;
    target
        .client()
        .await
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT qty_not_negative CHECK (qty >= 0)")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO orders (id, qty) VALUES (21, -1)")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the sink dead-letters row 21",
        || async {
            api.component("warehouse", Some(OPERATOR_TOKEN)).await["counts"]["dead_lettered"] == 1
        },
    )
    .await;
    let (_, listed) = api
        .get(
            "/api/v1/dead-letters?component=warehouse",
            Some(OPERATOR_TOKEN),
        )
        .await;
    let letter = &listed["dead_letters"][0];
    let at = format!("{}-{}", letter["partition"], letter["offset"]);
    api.wait_state("shop", Some(OPERATOR_TOKEN), "running", &run)
        .await;
    api.wait_state("warehouse", Some(OPERATOR_TOKEN), "running", &run)
        .await;

    dashboard_step(
        "overview",
        &api.url,
        &[
            ("EXPECT_COMPONENTS", "shop,warehouse"),
            ("DASHBOARD_TOKEN", OPERATOR_TOKEN),
        ],
        dir.path(),
        &run,
    );
    target
        .client()
        .await
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT qty_not_negative")
        .await
        .unwrap();
    dashboard_step(
        "replay",
        &api.url,
        &[
            ("EXPECT_DEAD_LETTER", at.as_str()),
            ("EXPECT_DEAD_LETTER_COMPONENT", "warehouse"),
            ("DASHBOARD_TOKEN", OPERATOR_TOKEN),
        ],
        dir.path(),
        &run,
    );
    wait_rows_equal(source, target, "after the click on replay", &run).await;
    assert_eq!(
        count(target, "SELECT count(*) FROM orders WHERE id = 21").await,
        1
    );
    let (_, listed) = api
        .get(
            "/api/v1/dead-letters?component=warehouse",
            Some(OPERATOR_TOKEN),
        )
        .await;
    assert!(
        listed["dead_letters"][0]["replayed"].is_object(),
        "{listed}"
    );
}

/// A `postgres_cdc` source and its sink through the API: the snapshot's
/// progress per table, then the slot's lag and the sink's consumer lag
/// once streaming, and the history the charts draw.
#[tokio::test(flavor = "multi_thread")]
async fn a_cdc_source_shows_its_snapshot_its_slot_lag_and_the_sink_its_consumer_lag() {
    let stack = Stack::start();
    let pg = support::pg_server::PgServer::start(&[]);
    let source = pg.create_db("crm").await;
    let target = PgDb::create("api_cdc_dst").await;
    let src = support::pg_connect(&source).await;
    src.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text); \
         INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 3000) g; ANALYZE customers",
    )
    .await
    .unwrap();
    let dir = TempDir::new("api-cdc");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: api-cdc
kafka:
  bootstrap_servers: {bootstrap}
registry:
  url: {registry}
sources:
  crm:
    type: postgres_cdc
    connection: {source}
    tables:
      - {{ table: public.customers, topic: crm.customers }}
sinks:
  warehouse:
    type: postgres
    connection: {target}
    topics: [crm.customers]
    tables: {{ crm.customers: customers }}
"#,
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
            target = target.url(),
        ),
    )
    .unwrap();
    let (run, api) = run_with_api(&file, &[]).await;
    let target_rows = |n: i64| {
        let target = &target;
        async move { count(target, "SELECT count(*) FROM customers").await == n }
    };
    wait_until(Duration::from_secs(120), "the snapshot lands", || {
        target_rows(3000)
    })
    .await;
    let crm = api.component("crm", None).await;
    let table = &crm["snapshot"]["tables"][0];
    assert_eq!(table["table"], "public.customers", "{crm}");
    assert_eq!(
        (table["rows"].as_u64(), table["done"].as_bool()),
        (Some(3000), Some(true)),
        "{crm}"
    );
    assert_eq!(
        table["rows_estimated"], 3000,
        "ANALYZE made the estimate exact: {crm}"
    );

    src.batch_execute("INSERT INTO customers SELECT g, 'late' FROM generate_series(3001, 3010) g")
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "the streamed rows land", || {
        target_rows(3010)
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "the slot's lag is measured",
        || async {
            let crm = api.component("crm", None).await;
            crm["lag"]["source"]["position"].is_string() && crm["lag"]["source"]["bytes"].is_u64()
        },
    )
    .await;
    assert_eq!(
        api.component("crm", None).await["snapshot"]["running"],
        false
    );
    wait_until(
        Duration::from_secs(30),
        "the sink's partitions show no lag",
        || async {
            let sink = api.component("warehouse", None).await;
            sink["lag"]["records"] == 0 && !sink["lag"]["partitions"].as_array().unwrap().is_empty()
        },
    )
    .await;
    let sink = api.component("warehouse", None).await;
    assert_eq!(sink["counts"]["records_out"], 3010, "{sink}");

    // A re-snapshot asked for through the API reads the table again and
    // shows its progress; the target keeps one row per key.
    let (status, asked) = api
        .post(
            "/api/v1/components/crm/snapshot",
            None,
            json!({ "tables": ["public.customers"] }),
        )
        .await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["tables"], json!(["public.customers"]));
    let (status, refused) = api
        .post(
            "/api/v1/components/crm/snapshot",
            None,
            json!({ "tables": ["public.nothing"] }),
        )
        .await;
    assert_eq!(status, 422, "an unknown table: {refused}");
    wait_until(
        Duration::from_secs(60),
        "the re-snapshot reads every row again",
        || async {
            let crm = api.component("crm", None).await;
            crm["counts"]["records_out"].as_u64() >= Some(3010 + 3010)
                && crm["snapshot"]["tables"][0]["done"] == true
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the sink has read them",
        || async {
            api.component("warehouse", None).await["counts"]["records_in"].as_u64() >= Some(6020)
        },
    )
    .await;
    assert_eq!(count(&target, "SELECT count(*) FROM customers").await, 3010);
    let sink = api.component("warehouse", None).await;
    assert!(sink["latency"]["batch_p99_ms"].is_f64(), "{sink}");
    let (status, history) = api.get("/api/v1/components/warehouse/history", None).await;
    assert_eq!(status, 200);
    let written: f64 = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["records_out_per_s"].as_f64().unwrap() * history["interval_seconds"].as_f64().unwrap()
        })
        .sum();
    assert!(written > 0.0, "the history saw the rows go out: {history}");
    drop(run);
}
