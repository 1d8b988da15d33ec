//! `syncline status PIPELINE`: one line per component (state, lag, rates,
//! dead letters, last error) from the running pipeline's management API.

use super::{bytes, clip, load_or_exit, seconds, table};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The pipeline file (YAML).
    pipeline: PathBuf,
    /// The management API of the running pipeline (default: the address
    /// `syncline run` left in the state directory, else the file's
    /// `api.listen`, else http://127.0.0.1:9470).
    #[arg(long, value_name = "URL", env = "SYNCLINE_API_URL")]
    api_url: Option<String>,
    /// The state directory `syncline run` was given.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "syncline-state",
        env = "SYNCLINE_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// A token of the API's `api.tokens` (a `read` token is enough).
    #[arg(long, env = "SYNCLINE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Where the API of `pipeline` is, as [`StatusArgs::api_url`] says.
pub(super) fn api_url(
    given: Option<&str>,
    state_dir: &std::path::Path,
    pipeline: &crate::pipeline::config::PipelineConfig,
) -> String {
    if let Some(u) = given {
        return u.trim_end_matches('/').to_string();
    }
    let discovered = std::fs::read_to_string(crate::pipeline::api_discovery_file(
        state_dir,
        &pipeline.name,
    ))
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .and_then(|v| v["url"].as_str().map(str::to_string));
    discovered.unwrap_or_else(|| {
        format!(
            "http://{}",
            pipeline
                .api
                .listen
                .map_or(crate::api::DEFAULT_LISTEN.to_string(), |a| a.to_string())
        )
    })
}

/// A GET of the API, as JSON; the error says what to do.
pub(super) async fn get(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Value, String> {
    let mut request = client.get(format!("{url}{path}"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.map_err(|e| {
        format!("cannot reach the management API at {url} ({e}): is the pipeline running? (--api-url gives its address)")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{url}{path} did not answer JSON: {e}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "the management API at {url} needs a token: set SYNCLINE_API_TOKEN (or --token) to one of the file's `api.tokens`"
        ));
    }
    if !status.is_success() {
        return Err(format!(
            "{url}{path} answered {status}: {}",
            body["error"].as_str().unwrap_or("")
        ));
    }
    Ok(body)
}

pub async fn status_command(args: &StatusArgs) -> ExitCode {
    let pipeline = match load_or_exit(&args.pipeline) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let url = api_url(args.api_url.as_deref(), &args.state_dir, &pipeline);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let token = args.token.as_deref();
    let answers = async {
        let version = get(&client, &url, "/api/v1/version", token).await?;
        if version["pipeline"].as_str() != Some(pipeline.name.as_str()) {
            return Err(format!(
                "the management API at {url} runs pipeline `{}`, not `{}` of {}: give this one's address with --api-url",
                version["pipeline"].as_str().unwrap_or("?"),
                pipeline.name,
                args.pipeline.display()
            ));
        }
        let graph = get(&client, &url, "/api/v1/pipeline", token).await?;
        let components = get(&client, &url, "/api/v1/components", token).await?;
        Ok((graph, components))
    };
    let (graph, components) = match answers.await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = |name: &str| {
        graph["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"].as_str() == Some(name))
            .is_none_or(|c| c["local"].as_bool().unwrap_or(true))
    };
    let mut rows = vec![[
        "COMPONENT",
        "TYPE",
        "STATE",
        "LAG",
        "IN/S",
        "OUT/S",
        "DEAD",
        "RESTARTS",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    let mut healthy = true;
    let Some(list) = components.as_array() else {
        eprintln!("error: {url}/api/v1/components did not answer a list");
        return ExitCode::FAILURE;
    };
    for c in list {
        let name = c["name"].as_str().unwrap_or("?");
        let here = local(name);
        let state = if here {
            c["state"].as_str().unwrap_or("?").to_string()
        } else {
            "elsewhere".to_string()
        };
        if here && state != "running" {
            healthy = false;
        }
        let error = match state.as_str() {
            "running" | "elsewhere" => String::new(),
            _ => c["last_error"]["message"]
                .as_str()
                .map(|m| clip(m, 100))
                .unwrap_or_default(),
        };
        rows.push(vec![
            name.to_string(),
            c["type"].as_str().unwrap_or("?").to_string(),
            state,
            lag_text(&c["lag"]),
            format!(
                "{:.1}",
                c["rates"]["records_in_per_s"].as_f64().unwrap_or(0.0)
            ),
            format!(
                "{:.1}",
                c["rates"]["records_out_per_s"].as_f64().unwrap_or(0.0)
            ),
            c["counts"]["dead_lettered"]
                .as_u64()
                .unwrap_or(0)
                .to_string(),
            c["restarts"].as_u64().unwrap_or(0).to_string(),
            if error.is_empty() { "-".into() } else { error },
        ]);
    }
    println!("pipeline `{}` at {url}", pipeline.name);
    print!("{}", table(&rows));
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A component's lag in a few characters: records behind, a CDC source's
/// bytes and seconds, or a polling source's cursor age.
fn lag_text(lag: &Value) -> String {
    if let Some(n) = lag["records"].as_i64() {
        return format!("{n} records");
    }
    let source = &lag["source"];
    if source.is_object() {
        let mut parts = Vec::new();
        if let Some(b) = source["bytes"].as_u64() {
            parts.push(bytes(b));
        }
        if let Some(s) = source["seconds"].as_f64() {
            parts.push(seconds(s));
        }
        if !parts.is_empty() {
            return parts.join(" / ");
        }
    }
    if let Some(age) = lag["cursor"]["age_seconds"].as_f64() {
        return format!("cursor {}", seconds(age));
    }
    "-".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_reads_records_then_source_then_cursor() {
        let v: Value = serde_json::json!({"records": 12, "source": null, "cursor": null});
        assert_eq!(lag_text(&v), "12 records");
        let v: Value = serde_json::json!({"records": null, "source": {"bytes": 2048, "seconds": 1.5, "position": "0/1"}, "cursor": null});
        assert_eq!(lag_text(&v), "2.0 KiB / 1.5 s");
        let v: Value =
            serde_json::json!({"records": null, "source": null, "cursor": {"age_seconds": 300.0}});
        assert_eq!(lag_text(&v), "cursor 5 min");
        let v: Value = serde_json::json!({"records": null, "source": null, "cursor": null});
        assert_eq!(lag_text(&v), "-");
    }
}
