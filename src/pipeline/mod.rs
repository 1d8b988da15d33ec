//! `syncline validate` and `syncline run`: the pipeline file in, running
//! components out. The only place that sees the user's words; every
//! component receives its typed config.

pub mod api_config;
pub mod config;
mod interpolate;
pub mod load;
mod online;
mod position;
pub mod reference;
pub mod registry;
pub mod supervise;

use config::PipelineConfig;
use std::path::Path;
use std::process::ExitCode;
use syncline_core::runtime::Shutdown;

/// Exit code for an invalid pipeline file or argument (as `syncline
/// validate` documents); every command uses it.
pub const EXIT_INVALID: u8 = 2;

/// The pipeline file, or the exit of a command that cannot use it (every
/// problem printed).
pub fn load_or_exit(file: &Path) -> Result<PipelineConfig, ExitCode> {
    load::load(file).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_INVALID)
    })
}

/// `syncline validate FILE [--registry]`.
pub async fn validate_command(file: &Path, registry: bool) -> ExitCode {
    match load::load(file) {
        Ok(p) => {
            println!("{}", summary(file, &p));
            if !registry {
                return ExitCode::SUCCESS;
            }
            let findings = online::check(&p).await;
            let mut failed = false;
            for f in &findings {
                if f.ok {
                    println!("  ok: {}", f.text);
                } else {
                    failed = true;
                    eprintln!("error: {}: {}", file.display(), f.text);
                }
            }
            if failed {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// A re-snapshot asked for: the tables it covers and what happens next.
pub struct SnapshotAnswer {
    pub tables: Vec<String>,
    pub message: String,
}

/// Why a re-snapshot was not asked for.
pub enum SnapshotRefusal {
    /// The request does not fit the component (not a CDC source, a setting
    /// for the other kind).
    NotCdc(String),
    /// The source's database or Kafka refused or did not answer.
    Failed(syncline_core::Error),
}

/// Ask source `source` of `pipeline` to read `tables` (all when empty)
/// again; with `from_scratch` (mysql_cdc, pipeline stopped), forget its
/// binlog position and snapshot progress instead. For `syncline snapshot`
/// and the management API alike.
pub async fn request_snapshot(
    pipeline: &PipelineConfig,
    source: &str,
    tables: &[String],
    from_scratch: bool,
) -> Result<SnapshotAnswer, SnapshotRefusal> {
    let plural = |names: &[String]| if names.len() == 1 { "it" } else { "them" };
    match pipeline.sources.get(source) {
        Some(config::SourceConfig::PostgresCdc(_)) if from_scratch => Err(SnapshotRefusal::NotCdc(
            "`--from-scratch` is for mysql_cdc sources; a postgres_cdc source starts from scratch when its slot is dropped".into(),
        )),
        Some(config::SourceConfig::PostgresCdc(cdc)) => {
            let (names, lsn) =
                syncline_sources::postgres_cdc::request_resnapshot(cdc, &pipeline.name, source, tables)
                    .await
                    .map_err(SnapshotRefusal::Failed)?;
            let message = format!(
                "re-snapshot of {} requested at {lsn}: source `{source}` reads {} again once its stream reaches the request \
                 (streaming of the source pauses meanwhile)",
                names.join(", "),
                plural(&names)
            );
            Ok(SnapshotAnswer { tables: names, message })
        }
        Some(config::SourceConfig::MysqlCdc(cdc)) => {
            let names = syncline_sources::mysql_cdc::request_resnapshot(
                cdc,
                pipeline.kafka.clone(),
                &pipeline.name,
                source,
                tables,
                from_scratch,
            )
            .await
            .map_err(SnapshotRefusal::Failed)?;
            let message = if from_scratch {
                format!(
                    "source `{source}` forgot its binlog position and snapshot progress: its next start snapshots {} and streams from there",
                    names.join(", ")
                )
            } else {
                format!(
                    "re-snapshot of {} requested: source `{source}` reads {} again within seconds \
                     (streaming of the source pauses meanwhile), or at its next start",
                    names.join(", "),
                    plural(&names)
                )
            };
            Ok(SnapshotAnswer { tables: names, message })
        }
        _ => {
            let names: Vec<&str> = pipeline
                .sources
                .iter()
                .filter(|(_, s)| {
                    matches!(
                        s,
                        config::SourceConfig::PostgresCdc(_) | config::SourceConfig::MysqlCdc(_)
                    )
                })
                .map(|(n, _)| n.as_str())
                .collect();
            Err(SnapshotRefusal::NotCdc(format!(
                "`{source}` is not a postgres_cdc or mysql_cdc source; those sources: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
    }
}

/// `sources -> topics -> processors -> topics -> sinks`, one line per component.
pub fn summary(file: &Path, p: &PipelineConfig) -> String {
    let mut out = format!("pipeline `{}` ({}) is valid", p.name, file.display());
    for (name, s) in &p.sources {
        out.push_str(&format!(
            "\n  source {name} ({}) -> {}",
            s.type_name(),
            s.topics_out().join(", ")
        ));
    }
    for (name, c) in &p.processors {
        out.push_str(&format!(
            "\n  processor {name} ({}) {} -> {}",
            c.type_name(),
            c.topics_in().join(", "),
            c.topics_out().join(", ")
        ));
    }
    for (name, s) in &p.sinks {
        out.push_str(&format!(
            "\n  sink {name} ({}) <- {}",
            s.type_name(),
            s.topics_in().join(", ")
        ));
    }
    out
}

/// How `syncline run` runs a pipeline (its command-line options).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only these components (all when empty).
    pub only: Vec<String>,
    /// Base directory of stateful components' local state.
    pub state_dir: std::path::PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where to serve the management API (`--api-addr`).
    pub api_addr: ApiAddr,
}

/// `--api-addr`: where the management API listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApiAddr {
    /// The pipeline file's `api.listen`, else 127.0.0.1:9470; if that
    /// default is taken (another syncline on the machine), run without the
    /// API and say so.
    #[default]
    Default,
    /// This address; taken, `syncline run` refuses to start.
    At(std::net::SocketAddr),
    Off,
}

/// Where `syncline run` leaves its API's address for `syncline status`.
pub fn api_discovery_file(state_dir: &Path, pipeline: &str) -> std::path::PathBuf {
    state_dir.join(pipeline).join("api.json")
}

/// A shutdown signal that fires on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> Shutdown {
    let token = Shutdown::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
