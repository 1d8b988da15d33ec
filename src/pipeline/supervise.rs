//! Runs every component of a pipeline and decides, by error kind, what
//! happens when one fails: a transient error restarts that component after a
//! backoff (it resumes from its stored position, so nothing is lost or
//! duplicated); any other error stops the whole pipeline with its message.

use super::config::{PipelineConfig, ProcessorConfig, SinkConfig, SourceConfig};
use super::RunOptions;
use std::time::Duration;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{Error, Result};
use tokio::task::JoinSet;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Component {
    Source(SourceConfig),
    Processor(ProcessorConfig),
    Sink(SinkConfig),
}

impl Component {
    async fn run_once(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
        match self {
            Component::Source(SourceConfig::SqlPoll(c)) => c.build(ctx).await?.run(shutdown).await,
            Component::Source(SourceConfig::PostgresCdc(c)) => {
                c.build(ctx).await?.run(shutdown).await
            }
            Component::Processor(ProcessorConfig::Rules(c)) => {
                c.build(ctx).await?.run(shutdown).await
            }
            Component::Processor(ProcessorConfig::Dedup(c)) => {
                c.build(ctx).await?.run(shutdown).await
            }
            Component::Sink(SinkConfig::Postgres(c)) => c.build(ctx).await?.run(shutdown).await,
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

fn decide(result: &Result<()>, shutting_down: bool, backoff: Duration) -> Next {
    match result {
        _ if shutting_down => Next::Done,
        Ok(()) => Next::Done,
        Err(e) if e.is_transient() => Next::RetryAfter(backoff),
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
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let result = component.run_once(ctx.clone(), shutdown.clone()).await;
                match decide(&result, shutdown.is_cancelled(), backoff) {
                    Next::Done => return Ok(()),
                    Next::RetryAfter(d) => {
                        let e = result.expect_err("retry only follows an error");
                        tracing::warn!(component = %name, error = %e, retry_in_ms = d.as_millis() as u64, "component failed; restarting");
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = shutdown.cancelled() => return Ok(()),
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Next::Stop => {
                        let e = result.expect_err("stop only follows an error");
                        return Err(Error::new(e.kind(), format!("{name}: {e}")));
                    }
                }
            }
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .unwrap_or_else(|e| Err(Error::internal(format!("component task panicked: {e}"))));
        if let Err(e) = result {
            if first_error.is_none() {
                shutdown.cancel();
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_others_stop_shutdown_wins() {
        let b = Duration::from_secs(1);
        assert_eq!(
            decide(&Err(Error::transient("broker away")), false, b),
            Next::RetryAfter(b)
        );
        assert_eq!(
            decide(&Err(Error::data("incompatible schema")), false, b),
            Next::Stop
        );
        assert_eq!(decide(&Err(Error::config("bad")), false, b), Next::Stop);
        assert_eq!(decide(&Err(Error::data("x")), true, b), Next::Done);
        assert_eq!(decide(&Ok(()), false, b), Next::Done);
    }
}
