//! Runs every component of a pipeline and decides, by error kind and by
//! the operator's commands, what happens next:
//! - a transient error restarts that component after a backoff (the
//!   runtime's policy, with jitter; reset once the component ran well for a
//!   minute). It resumes from its stored position, so nothing is lost or
//!   duplicated;
//! - any other error means the component needs an operator: that component
//!   stops, and says so (an error log line naming it and the fix, the metric
//!   `syncline_component_stopped`, its status `stopped` with the error),
//!   while the others go on. An operator's restart (management API) starts
//!   it again. Once every component has stopped or ended, `syncline run`
//!   exits with an error naming each stopped one. With `fail_fast: true` in
//!   the pipeline file, the first such error stops the whole pipeline
//!   instead; so does a schema the registry refuses (`Error::stops_pipeline`),
//!   whatever `fail_fast` says;
//! - an operator's pause stops the component (as a shutdown does: what it
//!   had not stored is read again) until resumed; a restart stops it and
//!   starts it again at once, whatever its state.
use super::config::{PipelineConfig, ProcessorConfig, SinkConfig, SourceConfig};
use super::RunOptions;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::status::{State, Status};
use syncline_core::{Error, Result};
use syncline_runtime::Backoff;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A component that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Component {
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

    pub fn role(&self) -> &'static str {
        match self {
            Component::Source(_) => "source",
            Component::Processor(_) => "processor",
            Component::Sink(_) => "sink",
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Component::Source(c) => c.type_name(),
            Component::Processor(c) => c.type_name(),
            Component::Sink(c) => c.type_name(),
        }
    }

    pub fn topics_in(&self) -> Vec<String> {
        match self {
            Component::Source(c) => c.topics_in(),
            Component::Processor(c) => c.topics_in(),
            Component::Sink(c) => c.topics_in(),
        }
    }

    pub fn topics_out(&self) -> Vec<String> {
        match self {
            Component::Source(c) => c.topics_out(),
            Component::Processor(c) => c.topics_out(),
            Component::Sink(c) => c.topics_out(),
        }
    }

    pub fn dead_letter_topic(&self, pipeline: &str, name: &str) -> String {
        match self {
            Component::Source(c) => c.dead_letter_topic(pipeline, name),
            Component::Processor(c) => c.dead_letter_topic(pipeline, name),
            Component::Sink(c) => c.dead_letter_topic(pipeline, name),
        }
    }
}

/// Every component of `pipeline`, in file order: sources, processors, sinks.
pub fn components(pipeline: &PipelineConfig) -> Vec<(String, Component)> {
    let sources = pipeline
        .sources
        .iter()
        .map(|(n, c)| (n.clone(), Component::Source(c.clone())));
    let processors = pipeline
        .processors
        .iter()
        .map(|(n, c)| (n.clone(), Component::Processor(c.clone())));
    let sinks = pipeline
        .sinks
        .iter()
        .map(|(n, c)| (n.clone(), Component::Sink(c.clone())));
    sources.chain(processors).chain(sinks).collect()
}

/// An operator's command to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Restart,
}

/// One component as the supervisor runs it: what the management API shows
/// and commands.
#[derive(Clone)]
pub struct Handle {
    pub name: String,
    pub component: Component,
    /// This process runs it (`--component` may leave it to another).
    pub local: bool,
    pub status: Status,
    control: Option<mpsc::UnboundedSender<Control>>,
}

impl Handle {
    /// Hand `c` to the component's supervisor; `false` if it does not run here.
    pub fn send(&self, c: Control) -> bool {
        self.control.as_ref().is_some_and(|tx| tx.send(c).is_ok())
    }
}

/// What to do after a component returned.
#[derive(Debug, PartialEq)]
enum Next {
    Done,
    RetryAfter(Duration),
    Stop,
    Pause,
    Restart,
}

fn decide(
    result: &Result<()>,
    shutting_down: bool,
    command: Option<Control>,
    backoff: &mut Backoff,
) -> Next {
    match (result, command) {
        _ if shutting_down => Next::Done,
        (_, Some(Control::Pause)) => Next::Pause,
        (_, Some(Control::Restart)) => Next::Restart,
        (Ok(()), _) => Next::Done,
        (Err(e), _) if e.is_transient() => Next::RetryAfter(backoff.next_delay()),
        (Err(_), _) => Next::Stop,
    }
}

/// What one component's task tells the supervisor's loop.
enum Report {
    /// Stopped (waiting for an operator) or ended.
    Ended(String),
    /// Started again by an operator after stopping.
    Started(String),
}

pub struct Supervisor {
    pipeline: PipelineConfig,
    handles: Vec<Handle>,
    receivers: Vec<Option<mpsc::UnboundedReceiver<Control>>>,
    state_dir: std::path::PathBuf,
}

impl Supervisor {
    pub fn new(pipeline: PipelineConfig, options: &RunOptions) -> Self {
        let only = &options.only;
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for (name, component) in components(&pipeline) {
            let local = only.is_empty() || only.contains(&name);
            let (control, rx) = if local {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            handles.push(Handle {
                name,
                component,
                local,
                status: Status::default(),
                control,
            });
            receivers.push(rx);
        }
        Self {
            pipeline,
            handles,
            receivers,
            state_dir: options.state_dir.clone(),
        }
    }

    pub fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let pipeline = self.pipeline;
        let (report_tx, mut reports) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let mut local = 0usize;
        for (handle, commands) in self.handles.into_iter().zip(self.receivers) {
            let Some(commands) = commands else { continue };
            local += 1;
            let ctx = ComponentContext {
                pipeline: pipeline.name.clone(),
                component: handle.name.clone(),
                kafka: pipeline.kafka.clone(),
                registry: pipeline.registry.clone(),
                state_dir: self.state_dir.clone(),
                limits: pipeline.limits.clone(),
                status: handle.status.clone(),
            };
            let task = ComponentTask {
                name: handle.name,
                component: handle.component,
                ctx,
                commands,
                reports: report_tx.clone(),
                fail_fast: pipeline.fail_fast,
            };
            tasks.spawn(task.run(shutdown.clone()));
        }
        drop(report_tx);
        // Once every component has stopped or ended, end the pipeline (a
        // stopped component waits for an operator's restart only while
        // something else still runs).
        let watch_shutdown = shutdown.clone();
        let watcher = tokio::spawn(async move {
            let mut ended = BTreeSet::new();
            while let Some(r) = reports.recv().await {
                match r {
                    Report::Ended(n) => {
                        ended.insert(n);
                    }
                    Report::Started(n) => {
                        ended.remove(&n);
                    }
                }
                if ended.len() >= local {
                    watch_shutdown.cancel();
                }
            }
        });
        let mut errors: Vec<Error> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let result = joined
                .unwrap_or_else(|e| Err(Error::internal(format!("component task panicked: {e}"))));
            if let Err(e) = result {
                errors.push(e);
            }
        }
        watcher.abort();
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
}

/// One component's life under the supervisor.
struct ComponentTask {
    name: String,
    component: Component,
    ctx: ComponentContext,
    commands: mpsc::UnboundedReceiver<Control>,
    reports: mpsc::UnboundedSender<Report>,
    fail_fast: bool,
}

impl ComponentTask {
    async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let name = self.name.clone();
        let labels = [
            ("pipeline", self.ctx.pipeline.clone()),
            ("component", name.clone()),
        ];
        let stopped = metrics::gauge!("syncline_component_stopped", &labels);
        let restarts = metrics::counter!("syncline_component_restarts_total", &labels);
        let status = self.ctx.status.clone();
        stopped.set(0.0);
        let count_restart = || {
            status.restarted();
            restarts.increment(1);
        };
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            status.set_state(State::Starting);
            let started = Instant::now();
            let (result, command) = self.run_until_commanded(&shutdown).await;
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            let wait = match decide(&result, shutdown.is_cancelled(), command, &mut backoff) {
                Next::Done => {
                    status.set_state(State::Done);
                    let _ = self.reports.send(Report::Ended(name.clone()));
                    return Ok(());
                }
                Next::Restart => {
                    tracing::info!(component = %name, "restarted by an operator");
                    count_restart();
                    backoff.reset();
                    continue;
                }
                Next::Pause => {
                    tracing::info!(component = %name, "paused by an operator");
                    None
                }
                Next::RetryAfter(d) => {
                    let e = result.expect_err("retry only follows an error");
                    status.failed(State::Retrying, &e);
                    count_restart();
                    tracing::warn!(component = %name, error = %e, retry_in_ms = d.as_millis() as u64, "component failed; restarting");
                    Some(d)
                }
                Next::Stop => {
                    let e = result.expect_err("stop only follows an error");
                    stopped.set(1.0);
                    status.failed(State::Stopped, &e);
                    if self.fail_fast || e.stops_pipeline() {
                        tracing::error!(component = %name, error = %e, "component stopped; stopping the pipeline");
                        shutdown.cancel();
                        status.set_state(State::Stopped);
                        return Err(Error::new(e.kind(), format!("{name}: {e}")));
                    }
                    tracing::error!(component = %name, error = %e, "component stopped; it needs an operator (the other components go on; a restart through the management API starts it again)");
                    let _ = self.reports.send(Report::Ended(name.clone()));
                    match self.wait_for(&shutdown, &[Control::Restart]).await {
                        Some(_) => {
                            tracing::info!(component = %name, "restarted by an operator");
                            let _ = self.reports.send(Report::Started(name.clone()));
                            stopped.set(0.0);
                            count_restart();
                            backoff.reset();
                            continue;
                        }
                        None => return Err(Error::new(e.kind(), format!("{name}: {e}"))),
                    }
                }
            };
            match wait {
                None => {
                    if !self.paused(&shutdown).await {
                        return Ok(());
                    }
                }
                // Retrying: the backoff, cut short by a restart; a pause
                // turns it into a pause.
                Some(d) => {
                    let sleep = tokio::time::sleep(d);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = shutdown.cancelled() => {
                                status.set_state(State::Done);
                                return Ok(());
                            }
                            c = self.commands.recv() => match c {
                                Some(Control::Restart) | None => break,
                                Some(Control::Resume) => {}
                                Some(Control::Pause) => {
                                    if !self.paused(&shutdown).await {
                                        return Ok(());
                                    }
                                    break;
                                }
                            },
                        }
                    }
                }
            }
        }
    }

    /// Run the component once, until it returns; a pause or restart stops
    /// it (as a shutdown does) and is returned with its result.
    async fn run_until_commanded(&mut self, shutdown: &Shutdown) -> (Result<()>, Option<Control>) {
        let token = shutdown.child_token();
        let run = self.component.run_once(self.ctx.clone(), token.clone());
        tokio::pin!(run);
        let mut command = None;
        let mut open = true;
        loop {
            tokio::select! {
                r = &mut run => return (r, command),
                c = self.commands.recv(), if open => match c {
                    Some(c @ (Control::Pause | Control::Restart)) => {
                        command = Some(c);
                        token.cancel();
                    }
                    Some(Control::Resume) => {}
                    None => open = false,
                },
            }
        }
    }

    /// Paused until an operator resumes or restarts it. `false`: shutdown
    /// came first, and the component is done.
    async fn paused(&mut self, shutdown: &Shutdown) -> bool {
        let status = self.ctx.status.clone();
        status.set_state(State::Paused);
        let resumed = self
            .wait_for(shutdown, &[Control::Resume, Control::Restart])
            .await
            .is_some();
        if resumed {
            tracing::info!(component = %self.name, "resumed by an operator");
        } else {
            status.set_state(State::Done);
        }
        resumed
    }

    /// Wait for one of `wanted` (others are ignored). `None`: shutdown.
    async fn wait_for(&mut self, shutdown: &Shutdown, wanted: &[Control]) -> Option<Control> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                c = self.commands.recv() => match c {
                    Some(c) if wanted.contains(&c) => return Some(c),
                    Some(_) => {}
                    None => {
                        shutdown.cancelled().await;
                        return None;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_others_stop_commands_and_shutdown_win() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert!(matches!(
            decide(&Err(Error::transient("broker away")), false, None, &mut b),
            Next::RetryAfter(d) if d <= Duration::from_secs(1)
        ));
        assert_eq!(
            decide(
                &Err(Error::data("incompatible schema")),
                false,
                None,
                &mut b
            ),
            Next::Stop
        );
        assert_eq!(
            decide(&Err(Error::config("bad")), false, None, &mut b),
            Next::Stop
        );
        assert_eq!(
            decide(&Err(Error::data("x")), true, None, &mut b),
            Next::Done
        );
        assert_eq!(decide(&Ok(()), false, None, &mut b), Next::Done);
        assert_eq!(
            decide(&Ok(()), false, Some(Control::Pause), &mut b),
            Next::Pause,
            "a component that ended because it was paused is paused"
        );
        assert_eq!(
            decide(
                &Err(Error::config("bad")),
                false,
                Some(Control::Restart),
                &mut b
            ),
            Next::Restart
        );
        assert_eq!(
            decide(&Ok(()), true, Some(Control::Restart), &mut b),
            Next::Done,
            "shutdown wins over a command"
        );
    }
}
