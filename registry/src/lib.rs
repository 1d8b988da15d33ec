//! `syncline registry`: a Confluent-compatible schema registry for Avro whose
//! only state is a command log in a Kafka topic, so any number of instances
//! agree on every id (see [`store`] for the design).
//!
//! - [`api`]: the REST routes and Confluent's error codes.
//! - [`store`]: the command log in Kafka and the loop that applies it.
//! - [`state`]: the pure state machine the log drives (ids, versions, deletes).
//! - [`compat`]: compatibility levels and the Avro check behind them.
//! - [`guard`]: credentials and roles, Content-Type, request limits.
//! - [`schema`]: a schema's text, identity and parsed form.

pub mod api;
pub mod compat;
pub mod guard;
pub mod schema;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;
use syncline_core::error::{Context, Error, ErrorKind, Result};
use syncline_core::kafka::KafkaConfig;
use tokio_util::sync::CancellationToken;

/// How long startup may take to read the whole log before giving up.
const STARTUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Read the whole log before serving. A broker that is away (one of a
/// cluster's brokers restarting, its partition's leadership moving) is a
/// transient error: retried until [`STARTUP_CATCH_UP_TIMEOUT`] has passed.
async fn catch_up_at_start(store: &store::Store) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_CATCH_UP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match store.catch_up(left).await {
            Err(e) if e.is_transient() && !left.is_zero() => {
                tracing::warn!(error = %e, "cannot read the schema log yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            r => return r,
        }
    }
}

/// What `syncline registry` needs to run.
#[derive(Clone)]
pub struct ServerConfig {
    /// The address the REST API listens on.
    pub listen: SocketAddr,
    /// The Kafka cluster holding the log.
    pub kafka: KafkaConfig,
    /// The topic holding the log: compacted, one partition, created if missing.
    pub topic: String,
    /// Who may read and write (empty: anyone who can reach `listen`).
    pub auth: guard::Auth,
    pub limits: guard::Limits,
}

/// Serve the REST API until `shutdown` is cancelled: read the whole log
/// first, then listen, then keep applying the log while serving.
pub async fn serve(config: ServerConfig, shutdown: CancellationToken) -> Result<()> {
    tracing::info!(topic = %config.topic, bootstrap = %config.kafka.bootstrap_servers, "opening the schema log");
    let store = store::Store::open(&config.kafka, &config.topic).await?;
    tracing::info!(topic = %config.topic, "reading the schema log");
    let applier_stop = CancellationToken::new();
    let mut applier = tokio::spawn({
        let (store, stop) = (store.clone(), applier_stop.clone());
        async move { store.run(stop).await }
    });
    let caught_up = tokio::select! {
        r = catch_up_at_start(&store) => r,
        _ = shutdown.cancelled() => {
            applier_stop.cancel();
            let _ = applier.await;
            return Ok(());
        }
    };
    if let Err(e) = caught_up {
        applier_stop.cancel();
        let _ = applier.await;
        return Err(e);
    }
    let subjects = store.read(|s| s.subjects(false).len());
    let (records_read, commands_applied, checkpoint) = store.startup_report();
    tracing::info!(topic = %config.topic, subjects, records_read, commands_applied,
        checkpoint_as_of = checkpoint, "schema log applied");
    store.checkpoint_if_due();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .context(ErrorKind::Config, || {
            format!("cannot listen on {}", config.listen)
        })?;
    tracing::info!(listen = %config.listen, "schema registry serving");
    if config.auth.is_open() {
        tracing::warn!(listen = %config.listen, "the schema registry needs no credentials: anyone who can reach it may register and delete schemas");
    }
    let guard = guard::Guard::new(config.auth.clone(), config.limits.clone());
    let server = axum::serve(listener, api::router(store.clone(), guard)).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    });
    let result = tokio::select! {
        r = server => r.context(ErrorKind::Transient, || "the HTTP server failed".into()),
        r = &mut applier => Err(match r {
            Ok(()) => Error::internal("the schema log applier stopped"),
            Err(e) => Error::internal("the schema log applier failed").with_source(e),
        }),
    };
    applier_stop.cancel();
    if !applier.is_finished() {
        let _ = applier.await;
    }
    tracing::info!("schema registry stopped");
    result
}
