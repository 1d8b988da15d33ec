//! `syncline run`: load the pipeline file, start its components under the
//! supervisor, and serve the management API and dashboard beside them.

use crate::pipeline::config::PipelineConfig;
use crate::pipeline::{
    load_or_exit, shutdown_on_signal, supervise, ApiAddr, RunOptions, EXIT_INVALID,
};
use std::path::Path;
use std::process::ExitCode;
use syncline_core::runtime::Shutdown;

/// `syncline run FILE [--component NAME]... [--api-addr ADDR]`.
pub async fn run_command(file: &Path, options: &RunOptions) -> ExitCode {
    let only = &options.only;
    let pipeline = match load_or_exit(file) {
        Ok(p) => p,
        Err(code) => return code,
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
    let shutdown = shutdown_on_signal();
    let supervisor = supervise::Supervisor::new(pipeline.clone(), options);
    if let Err(code) = start_api(file, &pipeline, options, &supervisor, &shutdown).await {
        return code;
    }
    tracing::info!(pipeline = %pipeline.name, file = %file.display(), "starting pipeline");
    match supervisor.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pipeline stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serve the management API and dashboard, as `--api-addr` and the file's
/// `api:` say, and leave its address in `<state dir>/<pipeline>/api.json`
/// for `syncline status`. `Err`: `syncline run` must not start.
async fn start_api(
    file: &Path,
    pipeline: &PipelineConfig,
    options: &RunOptions,
    supervisor: &supervise::Supervisor,
    shutdown: &Shutdown,
) -> Result<(), ExitCode> {
    let (addr, explicit) = match options.api_addr {
        ApiAddr::Off => return Ok(()),
        ApiAddr::At(a) => (a, true),
        ApiAddr::Default => match pipeline.api.listen {
            Some(a) => (a, true),
            None => (
                crate::api::DEFAULT_LISTEN.parse().expect("a valid address"),
                false,
            ),
        },
    };
    if let Some(issue) = pipeline.api.exposure_issue(addr) {
        eprintln!("error: --api-addr {addr}: {issue}");
        return Err(ExitCode::from(EXIT_INVALID));
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if explicit => {
            eprintln!("error: cannot serve the management API on {addr}: {e} (choose another with --api-addr, or --api-addr off)");
            return Err(ExitCode::FAILURE);
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "the management API's default address is taken (another syncline on this machine?): running without it; give this one --api-addr");
            return Ok(());
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let state = crate::api::ApiState {
        pipeline: pipeline.clone(),
        file: file.to_path_buf(),
        handles: supervisor.handles(),
        history: Default::default(),
        keys: crate::dead_letters::key_decoder(pipeline),
    };
    let config = pipeline.api.clone();
    let serve_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::api::serve(listener, state, &config, serve_shutdown).await {
            tracing::error!(error = %e, "the management API stopped");
        }
    });
    tracing::info!(addr = %bound, dashboard = %format!("http://{bound}/"), "serving the management API and dashboard");
    let discovery = crate::pipeline::api_discovery_file(&options.state_dir, &pipeline.name);
    let written = discovery
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::write(
                &discovery,
                serde_json::json!({ "url": format!("http://{bound}"), "pid": std::process::id() })
                    .to_string(),
            )
        });
    if let Err(e) = written {
        tracing::warn!(file = %discovery.display(), error = %e, "cannot record the API's address for `syncline status`");
    }
    Ok(())
}
