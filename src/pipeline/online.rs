//! `syncline validate FILE --registry`: checks that need the schema
//! registry the pipeline names. For each `rules` processor, the steps are
//! compiled against the latest registered schema of each input topic, and
//! the derived output schema is tested against the registry's compatibility
//! rules for each output subject (`POST /compatibility/...`), the same test
//! the registry applies when the processor registers it at run time. An
//! input with no schema yet cannot be checked: that is reported, not failed.

use super::config::{PipelineConfig, ProcessorConfig};
use schema_registry_converter::async_impl::schema_registry::get_schema_by_subject;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use syncline_core::schema::{avro_name, envelope_row_schema};
use syncline_core::TableSchema;
use syncline_processors::CompiledRules;

/// One finding: `ok` false fails the validation.
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

pub async fn check(p: &PipelineConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let settings = match p.registry.settings() {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding {
                ok: false,
                text: format!("registry: {e}"),
            }]
        }
    };
    let http = reqwest::Client::new();
    for (name, processor) in &p.processors {
        let ProcessorConfig::Rules(c) = processor else {
            continue;
        };
        for topic in &c.from {
            let latest = |suffix: &str| {
                let strategy =
                    SubjectNameStrategy::TopicNameStrategy(topic.clone(), suffix == "key");
                let settings = &settings;
                async move { get_schema_by_subject(settings, &strategy).await }
            };
            let (value, key) = match (latest("value").await, latest("key").await) {
                (Ok(v), Ok(k)) => (v, k),
                (Err(e), _) | (_, Err(e)) => {
                    out.push(Finding {
                        ok: true,
                        text: format!("processor {name}: input `{topic}` has no schema in the registry yet ({}); its steps are checked when the first record arrives", e.error),
                    });
                    continue;
                }
            };
            let parse = |text: &str| {
                apache_avro::Schema::parse_str(text)
                    .map_err(|e| syncline_core::Error::data(format!("not an Avro schema: {e}")))
            };
            let columns = parse(&value.schema)
                .and_then(|s| envelope_row_schema(&s).and_then(TableSchema::columns_from_record));
            let key_columns = parse(&key.schema).and_then(|s| TableSchema::columns_from_record(&s));
            let (columns, key_columns) = match (columns, key_columns) {
                (Ok(c), Ok(k)) => (c, k.into_iter().map(|c| c.name).collect()),
                (Err(e), _) | (_, Err(e)) => {
                    out.push(Finding {
                        ok: false,
                        text: format!("processor {name}: the registered schema of `{topic}` is not a syncline change record: {e}"),
                    });
                    continue;
                }
            };
            let input = TableSchema {
                namespace: format!("syncline.{}", avro_name(name)),
                name: avro_name(topic),
                columns,
                primary_key: key_columns,
            };
            let rules = match CompiledRules::compile(&c.steps, &input) {
                Ok(r) => r,
                Err(issues) => {
                    for i in issues {
                        out.push(Finding {
                            ok: false,
                            text: format!("processor {name}: steps{}{}: {} (against the latest schema of `{topic}`, id {})", if i.path.is_empty() { "" } else { "." }, i.path, i.message, value.id),
                        });
                    }
                    continue;
                }
            };
            let schema = rules.output_schema();
            for output in c.topics_out() {
                out.push(compatible(&http, p, name, &output, schema).await);
            }
        }
    }
    out
}

/// Ask the registry whether `schema` may become the next value schema of
/// `topic`.
async fn compatible(
    http: &reqwest::Client,
    p: &PipelineConfig,
    name: &str,
    topic: &str,
    schema: &TableSchema,
) -> Finding {
    let url = format!(
        "{}/compatibility/subjects/{topic}-value/versions/latest",
        p.registry.url.trim_end_matches('/')
    );
    let body = serde_json::json!({ "schema": schema.value_schema_json().to_string() });
    let mut req = http
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .timeout(std::time::Duration::from_millis(p.registry.timeout_ms));
    if let Some(user) = &p.registry.username {
        req = req.basic_auth(user, p.registry.password.as_deref());
    }
    let subject = format!("{topic}-value");
    match req.send().await {
        Err(e) => Finding {
            ok: false,
            text: format!("processor {name}: cannot reach the registry to check `{subject}`: {}", e.without_url()),
        },
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Finding {
            ok: true,
            text: format!("processor {name}: `{subject}` is new; the derived schema will be its first version"),
        },
        Ok(r) => {
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            match v.get("is_compatible").and_then(|b| b.as_bool()) {
                Some(true) => Finding {
                    ok: true,
                    text: format!("processor {name}: output schema is compatible with `{subject}`"),
                },
                Some(false) => Finding {
                    ok: false,
                    text: format!(
                        "processor {name}: the output schema its steps derive is incompatible with the latest version of `{subject}` under the registry's compatibility level{}; change the steps, or the subject's compatibility level, or write to a new topic",
                        v.get("messages").map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                },
                None => Finding {
                    ok: false,
                    text: format!("processor {name}: the registry answered {status} to the compatibility check of `{subject}`: {v}"),
                },
            }
        }
    }
}
