//! Runs every component of a pipeline and decides, by error kind, what
//! happens when one fails:
//! - a transient error restarts that component after a backoff (the
//!   runtime's policy, with jitter; reset once the component ran well for a
//!   minute). It resumes from its stored position, so nothing is lost or
//!   duplicated;
//! - any other error means the component needs an operator: that component
//!   stops, and says so (an error log line naming it and the fix, the metric
//!   `syncline_component_stopped`), while the others go on. When every
//!   component has ended, `syncline run` exits with an error naming each
//!   stopped one. With `fail_fast: true` in the pipeline file, the first such
//!   error stops the whole pipeline instead; so does a schema the registry
//!   refuses (`Error::stops_pipeline`), whatever `fail_fast` says.
use super::config::{PipelineConfig, ProcessorConfig, SinkConfig, SourceConfig};
use super::RunOptions;
use std::time::{Duration, Instant};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use syncline_runtime::Backoff;
use tokio::task::JoinSet;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A component that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Component {
    Source(SourceConfig),
    Processor(ProcessorConfig),
    Sink(SinkConfig),
}

impl Component {
    async fn run_once(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        match self {
            Component::Source(c) => c.run(ctx, shutdown).await,
            Component::Processor(c) => c.run(ctx, shutdown).await,
            Component::Sink(c) => c.run(ctx, shutdown).await,
        }
    }
}

/// What to do after a component returned.
#[derive(Debug, PartialEq)]
enum Next {
    Done,
    RetryAfter(Duration),
    Stop,
}

fn decide(result: &Result<()>, shutting_down: bool, backoff: &mut Backoff) -> Next {
    match result {
        _ if shutting_down => Next::Done,
        Ok(()) => Next::Done,
        Err(e) if e.is_transient() => Next::RetryAfter(backoff.next_delay()),
        Err(_) => Next::Stop,
    }
}

pub async fn run(pipeline: PipelineConfig, options: &RunOptions, shutdown: Shutdown) -> Result<()> {
    let only = &options.only;
    let mut components: Vec<(String, Component)> = Vec::new();
    components.extend(
        pipeline
            .sources
            .iter()
            .map(|(n, c)| (n.clone(), Component::Source(c.clone()))),
    );
    components.extend(
        pipeline
            .processors
            .iter()
            .map(|(n, c)| (n.clone(), Component::Processor(c.clone()))),
    );
    components.extend(
        pipeline
            .sinks
            .iter()
            .map(|(n, c)| (n.clone(), Component::Sink(c.clone()))),
    );
    components.retain(|(n, _)| only.is_empty() || only.contains(n));

    let mut tasks = JoinSet::new();
    for (name, component) in components {
        let ctx = ComponentContext {
            pipeline: pipeline.name.clone(),
            component: name.clone(),
            kafka: pipeline.kafka.clone(),
            registry: pipeline.registry.clone(),
            state_dir: options.state_dir.clone(),
            limits: pipeline.limits.clone(),
        };
        let shutdown = shutdown.clone();
        let fail_fast = pipeline.fail_fast;
        let labels = [
            ("pipeline", pipeline.name.clone()),
            ("component", name.clone()),
        ];
        tasks.spawn(async move {
            let stopped = metrics::gauge!("syncline_component_stopped", &labels);
            let restarts = metrics::counter!("syncline_component_restarts_total", &labels);
            stopped.set(0.0);
            let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
            loop {
                let started = Instant::now();
                let result = component.run_once(ctx.clone(), shutdown.clone()).await;
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                match decide(&result, shutdown.is_cancelled(), &mut backoff) {
                    Next::Done => return Ok(()),
                    Next::RetryAfter(d) => {
                        let e = result.expect_err("retry only follows an error");
                        restarts.increment(1);
                        tracing::warn!(component = %name, error = %e, retry_in_ms = d.as_millis() as u64, "component failed; restarting");
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = shutdown.cancelled() => return Ok(()),
                        }
                    }
                    Next::Stop => {
                        let e = result.expect_err("stop only follows an error");
                        stopped.set(1.0);
                        if fail_fast || e.stops_pipeline() {
                            tracing::error!(component = %name, error = %e, "component stopped; stopping the pipeline");
                            shutdown.cancel();
                        } else {
                            tracing::error!(component = %name, error = %e, "component stopped; it needs an operator (the other components go on)");
                        }
                        return Err(Error::new(e.kind(), format!("{name}: {e}")));
                    }
                }
            }
        });
    }
    let mut errors: Vec<Error> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .unwrap_or_else(|e| Err(Error::internal(format!("component task panicked: {e}"))));
        if let Err(e) = result {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            let kind = errors[0].kind();
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Err(Error::new(
                kind,
                format!("{n} components stopped: {}", text.join("; ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_others_stop_shutdown_wins() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert!(matches!(
            decide(&Err(Error::transient("broker away")), false, &mut b),
            Next::RetryAfter(d) if d <= Duration::from_secs(1)
        ));
        assert_eq!(
            decide(&Err(Error::data("incompatible schema")), false, &mut b),
            Next::Stop
        );
        assert_eq!(
            decide(&Err(Error::config("bad")), false, &mut b),
            Next::Stop
        );
        assert_eq!(decide(&Err(Error::data("x")), true, &mut b), Next::Done);
        assert_eq!(decide(&Ok(()), false, &mut b), Next::Done);
    }
}
