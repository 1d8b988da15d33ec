//! `syncline registry` end to end: the real binary on a real Kafka-protocol
//! broker (Apache Kafka), driven over HTTP like any Confluent client would.

mod support;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{wait_until, Broker, RegistryProcess};

/// A record schema named `r` with the given fields (JSON text).
fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"r","fields":[{fields}]}}"#)
}

const A: &str = r#"{"name":"a","type":"int"}"#;
const B_STRING: &str = r#"{"name":"b","type":"string"}"#;
const B_STRING_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;
const B_INT_DEFAULT: &str = r#"{"name":"b","type":"int","default":0}"#;
const C_LONG: &str = r#"{"name":"c","type":"long"}"#;
const C_LONG_DEFAULT: &str = r#"{"name":"c","type":"long","default":0}"#;

/// A thin HTTP client that returns (status, JSON body) and checks the content type.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            content_type.as_deref(),
            Some("application/vnd.schemaregistry.v1+json"),
            "{method} {path}"
        );
        let text = resp.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (status, value)
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Register `schema` under `subject`; the id, or the error (status, body).
    async fn register(&self, subject: &str, schema: &str) -> Result<u64, (StatusCode, Value)> {
        match self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema }),
            )
            .await
        {
            (StatusCode::OK, body) => Ok(body["id"].as_u64().expect("id")),
            other => Err(other),
        }
    }
    async fn must_register(&self, subject: &str, schema: &str) -> u64 {
        self.register(subject, schema)
            .await
            .unwrap_or_else(|e| panic!("register {subject}: {e:?}"))
    }
    async fn set_level(&self, subject: &str, level: &str) {
        let (status, body) = self
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": level }),
            )
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({ "compatibility": level }))
        );
    }
}

/// Assert an error answer: HTTP status and Confluent error code.
fn assert_error(answer: (StatusCode, Value), status: StatusCode, code: u64) -> String {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["error_code"], json!(code), "{answer:?}");
    answer.1["message"].as_str().expect("message").to_string()
}

fn start(broker: &Broker) -> (RegistryProcess, Api) {
    let registry = RegistryProcess::start(broker);
    let api = Api::new(registry.url());
    (registry, api)
}

#[tokio::test]
async fn every_compatibility_mode_accepts_a_compatible_change_and_rejects_an_incompatible_one() {
    let broker = Broker::start();
    let (_registry, api) = start(&broker);
    // (level, versions registered first, a compatible next, an incompatible next)
    let cases = [
        // BACKWARD: new reads old, so added fields need defaults.
        (
            "BACKWARD",
            vec![record(A)],
            record(&format!("{A},{B_STRING_DEFAULT}")),
            record(&format!("{A},{B_STRING}")),
        ),
        // FORWARD: old reads new, so added fields are fine, removed ones need old defaults.
        (
            "FORWARD",
            vec![record(A)],
            record(&format!("{A},{B_STRING}")),
            record(""),
        ),
        // FULL: both.
        (
            "FULL",
            vec![record(A)],
            record(&format!("{A},{B_STRING_DEFAULT}")),
            record(&format!("{A},{B_STRING}")),
        ),
        // Transitive: the incompatible change is fine next to the latest, not next to version 1.
        (
            "BACKWARD_TRANSITIVE",
            vec![record(&format!("{A},{B_STRING}")), record(A)],
            record(&format!("{A},{C_LONG_DEFAULT}")),
            record(&format!("{A},{B_INT_DEFAULT}")),
        ),
        (
            "FORWARD_TRANSITIVE",
            vec![
                record(&format!("{A},{B_STRING}")),
                record(&format!("{A},{B_STRING_DEFAULT}")),
            ],
            record(&format!("{A},{B_STRING_DEFAULT},{C_LONG}")),
            record(A),
        ),
        (
            "FULL_TRANSITIVE",
            vec![record(A), record(&format!("{A},{B_STRING_DEFAULT}"))],
            record(&format!("{A},{B_STRING_DEFAULT},{C_LONG_DEFAULT}")),
            record(&format!("{A},{B_STRING}")),
        ),
    ];
    for (level, first, compatible, incompatible) in cases {
        let subject = format!("mode-{}", level.to_lowercase());
        api.set_level(&subject, level).await;
        let (_, body) = api.get(&format!("/config/{subject}")).await;
        assert_eq!(body, json!({ "compatibilityLevel": level }));
        for schema in &first {
            api.must_register(&subject, schema).await;
        }
        // The test endpoint and registration agree.
        let check = format!("/compatibility/subjects/{subject}/versions?verbose=true");
        let (status, body) = api.post(&check, json!({ "schema": incompatible })).await;
        assert_eq!(
            (status, &body["is_compatible"]),
            (StatusCode::OK, &json!(false)),
            "{level}: {body}"
        );
        assert!(
            !body["messages"].as_array().unwrap().is_empty(),
            "{level}: {body}"
        );
        let message = assert_error(
            api.register(&subject, &incompatible).await.unwrap_err(),
            StatusCode::CONFLICT,
            409,
        );
        assert!(
            message.contains("incompatible") && message.contains(level),
            "{level}: {message}"
        );

        let (_, body) = api.post(&check, json!({ "schema": compatible })).await;
        assert_eq!(
            body,
            json!({ "is_compatible": true, "messages": [] }),
            "{level}"
        );
        api.must_register(&subject, &compatible).await;
        let (_, versions) = api.get(&format!("/subjects/{subject}/versions")).await;
        assert_eq!(
            versions.as_array().unwrap().len(),
            first.len() + 1,
            "{level}"
        );
    }

    // Non-transitive levels ignore older versions: the transitive rejection above passes BACKWARD.
    let subject = "mode-backward-plain";
    api.must_register(subject, &record(&format!("{A},{B_STRING}")))
        .await;
    api.must_register(subject, &record(A)).await;
    api.must_register(subject, &record(&format!("{A},{B_INT_DEFAULT}")))
        .await;

    // NONE accepts anything, even a different type.
    api.set_level("mode-none", "NONE").await;
    api.must_register("mode-none", &record(A)).await;
    api.must_register("mode-none", r#""string""#).await;

    // The global level applies to subjects without their own.
    let (status, _) = api
        .put("/config", json!({ "compatibility": "forward" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.get("/config").await.1,
        json!({ "compatibilityLevel": "FORWARD" })
    );
    api.must_register("global", &record(A)).await;
    api.must_register("global", &record(&format!("{A},{B_STRING}")))
        .await;
    let (_, body) = api.get("/config/global?defaultToGlobal=true").await;
    assert_eq!(body, json!({ "compatibilityLevel": "FORWARD" }));
    assert_error(
        api.get("/config/global").await,
        StatusCode::NOT_FOUND,
        40408,
    );
}

#[tokio::test]
async fn ids_versions_and_settings_survive_a_kill_9_restart() {
    let broker = Broker::start();
    let (mut registry, api) = start(&broker);
    let v1 = record(A);
    let v2 = record(&format!("{A},{B_STRING_DEFAULT}"));
    let other = r#"{"type":"enum","name":"e","symbols":["X","Y"]}"#;
    let id1 = api.must_register("orders-value", &v1).await;
    let id2 = api.must_register("orders-value", &v2).await;
    let id3 = api.must_register("other-value", other).await;
    // The same schema in another subject gets the same id.
    assert_eq!(api.must_register("copy-value", &v2).await, id2);
    api.set_level("orders-value", "FULL").await;
    assert_eq!(
        api.delete("/subjects/copy-value/versions/1").await,
        (StatusCode::OK, json!(1))
    );
    assert_eq!(BTreeSet::from([id1, id2, id3]).len(), 3);

    let before = snapshot(
        &api,
        &["orders-value", "other-value", "copy-value"],
        &[id1, id2, id3],
    )
    .await;
    registry.restart();
    // A fresh client: the old one's pooled connections died with the process.
    let api = Api::new(registry.url());
    let after = snapshot(
        &api,
        &["orders-value", "other-value", "copy-value"],
        &[id1, id2, id3],
    )
    .await;
    assert_eq!(before, after, "registry log:\n{}", registry.log());

    // Re-registering answers the old id without a new version; a new schema gets a new id.
    assert_eq!(
        api.must_register("orders-value", &format!(" {v1} ")).await,
        id1
    );
    let new = api
        .must_register(
            "orders-value",
            &record(&format!("{A},{B_STRING_DEFAULT},{C_LONG_DEFAULT}")),
        )
        .await;
    assert!(new > id3, "ids are never reused: {new}");
    assert_eq!(
        api.get("/subjects/orders-value/versions").await.1,
        json!([1, 2, 3])
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_a_kill_9_in_the_middle_of_writing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let broker = Broker::start();
    let (mut registry, api) = start(&broker);
    const LANES: usize = 4;
    const PER_LANE: usize = 25;
    let schema = |i: usize| format!(r#"{{"type":"fixed","name":"f{i}","size":{}}}"#, i + 1);
    let acked = Arc::new(AtomicUsize::new(0));
    // Lanes of sequential registrations, stopped by the kill: each write is
    // acknowledged (an id), or lost in flight (a transport error).
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let (api, acked) = (api.clone(), acked.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in (lane * PER_LANE)..((lane + 1) * PER_LANE) {
                    let url = format!("{}/subjects/k{i}/versions", api.base);
                    let body = json!({ "schema": schema(i) }).to_string();
                    let post = api
                        .http
                        .post(url)
                        .header("content-type", "application/vnd.schemaregistry.v1+json");
                    match post.body(body).send().await {
                        Ok(resp) => {
                            let body: Value = resp.json().await.unwrap();
                            answers.push((i, body["id"].as_u64().expect("an id")));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
                answers
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "some writes acknowledged", || {
        let acked = acked.clone();
        async move { acked.load(Ordering::SeqCst) >= 10 }
    })
    .await;
    registry.kill9();
    let acknowledged: Vec<(usize, u64)> = join_all(lanes)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert!(
        acknowledged.len() < LANES * PER_LANE,
        "the kill must interrupt the writes"
    );

    registry.restart();
    let api = Api::new(registry.url());
    // Every acknowledged write is there, with its id, as version 1.
    for &(i, id) in &acknowledged {
        let (_, body) = api.get(&format!("/subjects/k{i}/versions/latest")).await;
        assert_eq!(
            (body["id"].as_u64(), &body["version"]),
            (Some(id), &json!(1)),
            "k{i}"
        );
    }
    // Retrying every write (acknowledged, lost, or applied without an answer)
    // is safe: one version per subject, one id per schema, old ids unchanged.
    let mut ids = BTreeMap::new();
    for i in 0..LANES * PER_LANE {
        ids.insert(i, api.must_register(&format!("k{i}"), &schema(i)).await);
        assert_eq!(
            api.get(&format!("/subjects/k{i}/versions")).await.1,
            json!([1]),
            "k{i}"
        );
    }
    for &(i, id) in &acknowledged {
        assert_eq!(ids[&i], id, "k{i}");
    }
    assert_eq!(
        ids.values().collect::<BTreeSet<_>>().len(),
        LANES * PER_LANE,
        "distinct ids"
    );
}

/// Everything a client can see about some subjects and ids.
async fn snapshot(api: &Api, subjects: &[&str], ids: &[u64]) -> BTreeMap<String, Value> {
    let mut paths = vec![
        "/subjects".to_string(),
        "/subjects?deleted=true".into(),
        "/config".into(),
    ];
    for s in subjects {
        paths.push(format!("/subjects/{s}/versions?deleted=true"));
        paths.push(format!("/subjects/{s}/versions/latest"));
        paths.push(format!("/subjects/{s}/versions/1?deleted=true"));
        paths.push(format!("/config/{s}?defaultToGlobal=true"));
    }
    for id in ids {
        paths.push(format!("/schemas/ids/{id}"));
        paths.push(format!("/schemas/ids/{id}/versions?deleted=true"));
    }
    let mut seen = BTreeMap::new();
    for p in paths {
        let (status, body) = api.get(&p).await;
        seen.insert(p, json!([status.as_u16(), body]));
    }
    seen
}

#[tokio::test]
async fn two_instances_on_one_topic_agree_on_every_id() {
    let broker = Broker::start();
    let (_r1, one) = start(&broker);
    let (_r2, two) = start(&broker);
    const N: usize = 10;
    let schema = |i: usize| {
        format!(r#"{{"type":"record","name":"s{i}","fields":[{{"name":"f","type":"int"}}]}}"#)
    };
    // Different schemas through both instances at once, plus one schema
    // through both, in one subject each and in a shared subject.
    let mut writes = Vec::new();
    for i in 0..N {
        let api = if i % 2 == 0 { one.clone() } else { two.clone() };
        let (own, text) = (api.clone(), schema(i));
        writes.push(tokio::spawn(async move {
            (i, own.must_register(&format!("s{i}-value"), &text).await)
        }));
        let text = schema(100);
        writes.push(tokio::spawn(async move {
            (100, api.must_register(&format!("shared{i}"), &text).await)
        }));
    }
    let mut ids: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for w in join_all(writes).await {
        let (i, id) = w.unwrap();
        ids.entry(i).or_default().insert(id);
    }
    assert_eq!(
        ids[&100].len(),
        1,
        "one schema, one id whichever instance registered it: {ids:?}"
    );
    let all: BTreeSet<u64> = ids.values().flatten().copied().collect();
    assert_eq!(
        all.len(),
        N + 1,
        "different schemas get different ids: {ids:?}"
    );

    // Both instances answer every id with the same schema, whoever wrote it.
    for (&i, set) in &ids {
        let id = *set.first().unwrap();
        for api in [&one, &two] {
            let (status, body) = api.get(&format!("/schemas/ids/{id}")).await;
            assert_eq!(
                (status, body),
                (StatusCode::OK, json!({ "schema": schema(i) }))
            );
        }
    }
    // And the same subjects and versions, once both have applied the log.
    wait_until(
        Duration::from_secs(10),
        "both instances list the same subjects",
        || {
            let (one, two) = (one.clone(), two.clone());
            async move {
                one.get("/subjects").await.1.as_array().unwrap().len() == 2 * N
                    && one.get("/subjects").await == two.get("/subjects").await
            }
        },
    )
    .await;

    // Two conflicting registrations at once: each is compatible with version
    // 1, not with the other. The log orders them; the later one is rejected,
    // and both instances agree on the outcome.
    one.must_register("race", &record(A)).await;
    let x = record(&format!("{A},{B_STRING_DEFAULT}"));
    let y = record(&format!("{A},{B_INT_DEFAULT}"));
    let (rx, ry) = tokio::join!(one.register("race", &x), two.register("race", &y));
    let winner = match (&rx, &ry) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            assert_eq!(e.0, StatusCode::CONFLICT, "{e:?}");
            if rx.is_ok() {
                &x
            } else {
                &y
            }
        }
        other => panic!("exactly one of two conflicting schemas must win: {other:?}"),
    };
    for api in [&one, &two] {
        wait_until(
            Duration::from_secs(10),
            "both instances see the winner",
            || {
                let api = api.clone();
                async move {
                    api.get("/subjects/race/versions/latest").await.1["schema"] == json!(winner)
                }
            },
        )
        .await;
        assert_eq!(api.get("/subjects/race/versions").await.1, json!([1, 2]));
    }
}

#[tokio::test]
async fn soft_delete_hides_and_hard_delete_removes() {
    let broker = Broker::start();
    let (_registry, api) = start(&broker);
    let v1 = record(A);
    let v2 = record(&format!("{A},{B_STRING_DEFAULT}"));
    let id1 = api.must_register("s", &v1).await;
    api.must_register("s", &v2).await;

    // Versions: hard delete needs a soft delete first.
    assert_error(
        api.delete("/subjects/s/versions/1?permanent=true").await,
        StatusCode::NOT_FOUND,
        40407,
    );
    assert_eq!(
        api.delete("/subjects/s/versions/1").await,
        (StatusCode::OK, json!(1))
    );
    assert_error(
        api.delete("/subjects/s/versions/1").await,
        StatusCode::NOT_FOUND,
        40406,
    );
    assert_eq!(api.get("/subjects/s/versions").await.1, json!([2]));
    assert_eq!(
        api.get("/subjects/s/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_error(
        api.get("/subjects/s/versions/1").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_eq!(
        api.get("/subjects/s/versions/1?deleted=true").await.1["id"],
        json!(id1)
    );
    // A soft-deleted schema still decodes old records.
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}")).await.1,
        json!({ "schema": v1 })
    );
    assert_eq!(
        api.delete("/subjects/s/versions/1?permanent=true").await,
        (StatusCode::OK, json!(1))
    );
    assert_eq!(
        api.get("/subjects/s/versions?deleted=true").await.1,
        json!([2])
    );
    assert_error(
        api.get(&format!("/schemas/ids/{id1}")).await,
        StatusCode::NOT_FOUND,
        40403,
    );

    // Subjects likewise.
    assert_error(
        api.delete("/subjects/s?permanent=true").await,
        StatusCode::NOT_FOUND,
        40405,
    );
    assert_eq!(
        api.delete("/subjects/s").await,
        (StatusCode::OK, json!([2]))
    );
    assert_error(
        api.delete("/subjects/s").await,
        StatusCode::NOT_FOUND,
        40404,
    );
    assert_eq!(api.get("/subjects").await.1, json!([]));
    assert_eq!(api.get("/subjects?deleted=true").await.1, json!(["s"]));
    assert_error(
        api.get("/subjects/s/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(
        api.delete("/subjects/s?permanent=true").await,
        (StatusCode::OK, json!([2]))
    );
    assert_eq!(api.get("/subjects?deleted=true").await.1, json!([]));
    assert_error(
        api.delete("/subjects/s").await,
        StatusCode::NOT_FOUND,
        40401,
    );

    // Registering again keeps the schema's id and starts the subject over.
    assert_eq!(api.must_register("s", &v1).await, id1);
    assert_eq!(api.get("/subjects/s/versions").await.1, json!([1]));
}

#[tokio::test]
async fn errors_carry_confluent_codes() {
    let broker = Broker::start();
    let (_registry, api) = start(&broker);
    let v1 = record(A);
    let id = api.must_register("s", &v1).await;

    assert_error(
        api.get("/subjects/nope/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        api.get("/subjects/nope/versions/latest").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        api.get("/subjects/s/versions/7").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        api.get("/schemas/ids/4242").await,
        StatusCode::NOT_FOUND,
        40403,
    );
    let other = record(&format!("{A},{B_STRING_DEFAULT}"));
    assert_error(
        api.post("/subjects/s", json!({ "schema": other })).await,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_error(
        api.post("/subjects/nope", json!({ "schema": v1 })).await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        api.get("/subjects/s/versions/zero").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    assert_error(
        api.get("/subjects/s/versions/0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    for bad in [
        json!({ "schema": "{\"type\":\"record\"}" }),
        json!({ "schema": "not json" }),
        json!({}),
    ] {
        assert_error(
            api.post("/subjects/s/versions", bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        );
    }
    for other_type in ["PROTOBUF", "JSON"] {
        let body = json!({ "schema": "syntax = \"proto3\";", "schemaType": other_type });
        let message = assert_error(
            api.post("/subjects/s/versions", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        );
        assert!(message.contains(other_type), "{message}");
    }
    let message = assert_error(
        api.put("/config/s", json!({ "compatibility": "SIDEWAYS" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42203,
    );
    assert!(message.contains("backward_transitive"), "{message}");
    assert_error(
        api.register("s", &record(&format!("{A},{B_STRING}")))
            .await
            .unwrap_err(),
        StatusCode::CONFLICT,
        409,
    );
    assert_error(api.get("/no/such/route").await, StatusCode::NOT_FOUND, 404);

    // And the successful shapes clients parse.
    assert_eq!(api.get("/schemas/types").await.1, json!(["AVRO"]));
    assert_eq!(
        api.get("/subjects/s/versions/latest").await.1,
        json!({ "subject": "s", "version": 1, "id": id, "schema": v1 })
    );
    assert_eq!(
        api.post(
            "/subjects/s",
            json!({ "schema": format!("{v1}\n"), "schemaType": "AVRO" })
        )
        .await
        .1,
        json!({ "subject": "s", "version": 1, "id": id, "schema": v1 })
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id}/versions")).await.1,
        json!([{ "subject": "s", "version": 1 }])
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id}?subject=s")).await.1,
        json!({ "schema": v1 })
    );
    assert_eq!(
        api.get("/subjects/s/versions/1/schema").await.1,
        serde_json::from_str::<Value>(&v1).unwrap()
    );
    let check = "/compatibility/subjects/s/versions/latest";
    assert_eq!(
        api.post(check, json!({ "schema": v1 })).await.1,
        json!({ "is_compatible": true })
    );
}

#[tokio::test]
async fn schema_registry_converter_registers_and_fetches() {
    use apache_avro::types::Value as Avro;
    use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
    use schema_registry_converter::async_impl::schema_registry::{
        get_schema_by_subject, SrSettings,
    };
    use schema_registry_converter::schema_registry_common::{
        SchemaType, SubjectNameStrategy, SuppliedSchema,
    };

    let broker = Broker::start();
    let (_registry, api) = start(&broker);
    let settings = SrSettings::new(api.base.clone());
    let schema = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"note","type":"string"}]}"#;
    let supplied = SuppliedSchema::new(Some("shop.Order".into()), SchemaType::Avro, schema.into());
    let strategy =
        SubjectNameStrategy::TopicNameStrategyWithSchema("orders".into(), false, supplied);

    let encoder = AvroEncoder::new(settings.clone());
    let bytes = encoder
        .encode(
            vec![("id", Avro::Long(7)), ("note", Avro::String("hi".into()))],
            strategy.clone(),
        )
        .await
        .expect("encode registers the schema");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(
        api.get("/subjects/orders-value/versions/latest").await.1["id"],
        json!(id)
    );

    // A fresh decoder has nothing cached: it fetches the schema by id.
    let decoded = AvroDecoder::new(settings.clone())
        .decode(Some(&bytes))
        .await
        .expect("decode fetches by id");
    assert_eq!(
        decoded.value,
        Avro::Record(vec![
            ("id".into(), Avro::Long(7)),
            ("note".into(), Avro::String("hi".into()))
        ])
    );
    let by_subject = SubjectNameStrategy::TopicNameStrategy("orders".into(), false);
    let latest = get_schema_by_subject(&settings, &by_subject)
        .await
        .expect("latest by subject");
    assert_eq!((latest.id, latest.schema.as_str()), (id, schema));
}

/// A registry with a read and a write credential (Basic and Bearer) and a
/// small body limit refuses strangers, read-only writers, non-JSON bodies
/// and large bodies, each with its status and Confluent error code, and a
/// syncline pipeline with the write credential registers through it.
#[tokio::test]
async fn credentials_roles_content_type_and_limits_guard_the_registry() {
    let broker = Broker::start();
    let token = "reader-token-0123456789";
    let registry = RegistryProcess::start_with(
        &broker.bootstrap(),
        "_schemas_auth",
        &[
            (
                "SYNCLINE_REGISTRY_READ_CREDENTIALS",
                &format!("viewer:v-secret,{token}"),
            ),
            ("SYNCLINE_REGISTRY_WRITE_CREDENTIALS", "admin:a-secret"),
        ],
        &["--max-request-bytes", "4096"],
    );
    let url = registry.url();
    let http = reqwest::Client::new();
    let schema = json!({ "schema": record(A) }).to_string();
    let post = |path: &str| {
        http.post(format!("{url}{path}"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(schema.clone())
    };
    let code = |v: &Value| v["error_code"].as_u64().unwrap_or(0);

    // no credentials, wrong ones: 401 with a challenge
    for req in [
        http.get(format!("{url}/subjects")),
        http.get(format!("{url}/subjects"))
            .basic_auth("admin", Some("wrong")),
        http.get(format!("{url}/subjects"))
            .bearer_auth("not-a-known-token-at-all"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get("www-authenticate").is_some());
        assert_eq!(code(&r.json().await.unwrap()), 40101);
    }
    // a read credential reads and asks, but does not write
    let r = http
        .get(format!("{url}/subjects"))
        .basic_auth("viewer", Some("v-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post("/subjects/s-value/versions")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&r.json().await.unwrap()), 40301);
    // the write credential registers; the reader then looks it up (a POST that only asks)
    let r = post("/subjects/s-value/versions")
        .basic_auth("admin", Some("a-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post("/subjects/s-value")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a lookup is a read");
    // a body a web page could send without asking (text/plain, a form): 415
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = http
            .post(format!("{url}/subjects/t-value/versions"))
            .basic_auth("admin", Some("a-secret"))
            .header("content-type", ct)
            .body(schema.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
    // a body over the limit: 413, nothing registered
    let big =
        json!({ "schema": record(&format!(r#"{{"name":"{}","type":"int"}}"#, "x".repeat(5000))) });
    let r = http
        .post(format!("{url}/subjects/big-value/versions"))
        .basic_auth("admin", Some("a-secret"))
        .header("content-type", "application/json")
        .body(big.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let subjects: Value = http
        .get(format!("{url}/subjects"))
        .basic_auth("admin", Some("a-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subjects, json!(["s-value"]));
    // the secrets are not in the registry's log
    let log = registry.log();
    for secret in ["v-secret", "a-secret", token] {
        assert!(!log.contains(secret), "`{secret}` in the log:\n{log}");
    }

    // syncline's own client, with registry.username/password, registers through it
    let mut cfg = syncline_core::registry::RegistryConfig::new(url.clone());
    cfg.username = Some("admin".into());
    cfg.password = Some("a-secret".into());
    let encoder = syncline_core::codec::Encoder::new(&cfg).unwrap();
    let table = syncline_core::TableSchema {
        namespace: "syncline.t".into(),
        name: "items".into(),
        columns: vec![syncline_core::Column {
            name: "id".into(),
            ty: syncline_core::ColumnType::Long,
            nullable: false,
            sql_type: "bigint".into(),
        }],
        primary_key: vec!["id".into()],
    };
    encoder.prepare("auth.items", &table).await.unwrap();
    let mut reader = syncline_core::registry::RegistryConfig::new(url.clone());
    reader.username = Some("viewer".into());
    reader.password = Some("v-secret".into());
    let e = syncline_core::codec::Encoder::new(&reader)
        .unwrap()
        .prepare("auth.other", &table)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("403") || e.to_string().to_lowercase().contains("forbidden"),
        "{e}"
    );
}

/// On an address other than loopback, `syncline registry` without
/// credentials refuses to start, saying how to give them.
#[test]
fn an_open_registry_off_loopback_refuses_to_start() {
    let out = std::process::Command::new(support::syncline_bin())
        .args([
            "registry",
            "--listen",
            "0.0.0.0:0",
            "--kafka-bootstrap",
            "127.0.0.1:1",
        ])
        .env_remove("SYNCLINE_REGISTRY_WRITE_CREDENTIALS")
        .env_remove("SYNCLINE_REGISTRY_READ_CREDENTIALS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SYNCLINE_REGISTRY_WRITE_CREDENTIALS") && err.contains("--allow-anonymous"),
        "{err}"
    );
}

/// Every record in `topic` now (tombstones included), read from the start.
fn records_in(bootstrap: &str, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "count")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (lo, hi) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(lo))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                n += 1;
                if rdkafka::Message::offset(&m) + 1 >= hi {
                    return n;
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if lo >= hi => return 0,
            None => {}
        }
    }
    panic!("could not read {topic} to its end");
}

/// The `records_read` of the last "schema log applied" line of `log`.
fn records_read_at_start(log: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("schema log applied"))
        .unwrap_or_else(|| panic!("no start-up line in:\n{log}"));
    line.split("records_read=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records_read in {line}"))
}

#[tokio::test]
async fn checkpoints_let_a_start_read_the_live_schemas_not_the_history() {
    // The broker's cleaner looks every half second, and the test's log topic
    // rolls its segments at once: compaction runs within seconds, not hours.
    let broker = Broker::start_with(&["log.cleaner.backoff.ms=500"]);
    let topic = "_schemas_compacted";
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", broker.bootstrap())
                .create()
                .unwrap();
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.ms", "100")
            .set("min.cleanable.dirty.ratio", "0.01")
            .set("min.compaction.lag.ms", "0")
            .set("delete.retention.ms", "100");
        admin
            .create_topics([&new], &AdminOptions::new())
            .await
            .unwrap()
            .into_iter()
            .for_each(|r| {
                r.unwrap();
            });
    }
    let mut registry = RegistryProcess::start_on_topic(&broker, topic);
    let api = Api::new(registry.url());
    let v1 = record(A);
    let v2 = record(&format!("{A},{B_STRING_DEFAULT}"));
    let id1 = api.must_register("orders-value", &v1).await;
    let id2 = api.must_register("orders-value", &v2).await;
    let id3 = api
        .must_register(
            "other-value",
            r#"{"type":"enum","name":"e","symbols":["X"]}"#,
        )
        .await;
    // History that leaves little behind: 1,500 level changes, and a
    // scratch subject registered, soft- and hard-deleted 100 times.
    for i in 0..1500 {
        api.set_level("orders-value", if i % 2 == 0 { "FULL" } else { "BACKWARD" })
            .await;
    }
    let mut scratch_ids = BTreeSet::new();
    for i in 0..100 {
        let id = api
            .must_register(
                "scratch-value",
                &record(&format!(r#"{{"name":"f{i}","type":"int"}}"#)),
            )
            .await;
        scratch_ids.insert(id);
        assert_eq!(
            api.delete("/subjects/scratch-value").await.0,
            StatusCode::OK
        );
        assert_eq!(
            api.delete("/subjects/scratch-value?permanent=true").await.0,
            StatusCode::OK
        );
    }
    let commands = 3 + 1500 + 300;
    let subjects = ["orders-value", "other-value", "scratch-value"];
    let ids = [id1, id2, id3];
    let before = snapshot(&api, &subjects, &ids).await;
    wait_until(
        Duration::from_secs(60),
        "a checkpoint is written",
        || async {
            registry
                .log()
                .matches("schema log checkpoint written")
                .count()
                >= 3
        },
    )
    .await;
    wait_until(
        Duration::from_secs(120),
        "compaction removes what the checkpoints replace",
        || async { records_in(&broker.bootstrap(), topic) < CHECKPOINT_LEFTOVER },
    )
    .await;

    registry.restart();
    let api = Api::new(registry.url());
    let after = snapshot(&api, &subjects, &ids).await;
    assert_eq!(before, after, "registry log:\n{}", registry.log());
    let read = records_read_at_start(&registry.log());
    eprintln!("a start after {commands} commands read {read} records");
    assert!(
        read < CHECKPOINT_LEFTOVER as u64,
        "a start read {read} records of a history of {commands} commands"
    );
    // Ids go on from the highest ever given, after the hard deletes.
    let next = api
        .must_register("orders-value", &record(&format!("{A},{C_LONG_DEFAULT}")))
        .await;
    assert!(
        next > *scratch_ids.iter().max().unwrap(),
        "ids are never reused: {next}"
    );
}

/// What may stay in the log after compaction: the last checkpoint (one
/// chunk and its marker), the commands since it (fewer than 500), the
/// tombstones not yet removed and the active segment.
const CHECKPOINT_LEFTOVER: usize = 700;
