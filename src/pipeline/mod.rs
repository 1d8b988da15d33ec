//! `syncline validate` and `syncline run`: the pipeline file in, running
//! components out. The only place that sees the user's words; every
//! component receives its typed config.

pub mod config;
mod interpolate;
pub mod load;
mod online;
mod position;
pub mod reference;
pub mod registry;
mod supervise;

use config::PipelineConfig;
use std::path::Path;
use std::process::ExitCode;
use syncline_core::runtime::Shutdown;

/// Exit code for an invalid pipeline file (as `syncline validate` documents).
const EXIT_INVALID: u8 = 2;

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

/// `syncline snapshot FILE --source NAME [--table T]... [--from-scratch]`:
/// ask a `postgres_cdc` or `mysql_cdc` source for a re-snapshot while it runs.
pub async fn snapshot_command(
    file: &Path,
    source: &str,
    tables: &[String],
    from_scratch: bool,
) -> ExitCode {
    let pipeline = match load::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let fail = |e: syncline_core::Error| {
        eprintln!("error: {}: source `{source}`: {e}", file.display());
        ExitCode::FAILURE
    };
    match pipeline.sources.get(source) {
        Some(config::SourceConfig::PostgresCdc(_)) if from_scratch => {
            eprintln!(
                "error: {}: `--from-scratch` is for mysql_cdc sources; a postgres_cdc source starts from scratch when its slot is dropped",
                file.display()
            );
            ExitCode::from(EXIT_INVALID)
        }
        Some(config::SourceConfig::PostgresCdc(cdc)) => {
            match syncline_sources::postgres_cdc::request_resnapshot(
                cdc,
                &pipeline.name,
                source,
                tables,
            )
            .await
            {
                Ok((names, lsn)) => {
                    println!(
                        "re-snapshot of {} requested at {lsn}: source `{source}` reads {} again once its stream reaches the request \
                         (streaming of the source pauses meanwhile)",
                        names.join(", "),
                        if names.len() == 1 { "it" } else { "them" }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some(config::SourceConfig::MysqlCdc(cdc)) => {
            match syncline_sources::mysql_cdc::request_resnapshot(
                cdc,
                pipeline.kafka.clone(),
                &pipeline.name,
                source,
                tables,
                from_scratch,
            )
            .await
            {
                Ok(names) if from_scratch => {
                    println!(
                        "source `{source}` forgot its binlog position and snapshot progress: its next start snapshots {} and streams from there",
                        names.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Ok(names) => {
                    println!(
                        "re-snapshot of {} requested: source `{source}` reads {} again within seconds \
                         (streaming of the source pauses meanwhile), or at its next start",
                        names.join(", "),
                        if names.len() == 1 { "it" } else { "them" }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
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
            eprintln!(
                "error: {}: `{source}` is not a postgres_cdc or mysql_cdc source; those sources: {}",
                file.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            ExitCode::from(EXIT_INVALID)
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
}

pub async fn run_command(file: &Path, options: &RunOptions) -> ExitCode {
    let only = &options.only;
    let pipeline = match load::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    for name in only {
        if !pipeline.sources.contains_key(name)
            && !pipeline.processors.contains_key(name)
            && !pipeline.sinks.contains_key(name)
        {
            let names: Vec<&str> = pipeline
                .sources
                .keys()
                .chain(pipeline.processors.keys())
                .chain(pipeline.sinks.keys())
                .map(String::as_str)
                .collect();
            eprintln!(
                "error: --component `{name}` is not a source, processor or sink of {}; components: {}",
                file.display(),
                names.join(", ")
            );
            return ExitCode::from(EXIT_INVALID);
        }
    }
    if let Some(addr) = options.metrics_addr {
        if let Err(e) = crate::telemetry::serve_metrics(addr) {
            eprintln!("error: --metrics-addr {addr}: {e}");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(pipeline = %pipeline.name, file = %file.display(), "starting pipeline");
    match supervise::run(pipeline, options, shutdown_on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pipeline stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
