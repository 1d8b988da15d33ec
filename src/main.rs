//! The `syncline` binary: wires the command line to the library crates.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use syncline::telemetry::LogFormat;
use syncline::{pipeline, telemetry};

/// mimalloc, not the system allocator: every record is decoded into and
/// encoded from small heap values (names, strings, vectors), and glibc's
/// malloc/free took a fifth of a stage's thread in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "syncline",
    version,
    about = "Keep data in many systems in sync through Kafka, exactly once."
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SYNCLINE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every source and sink of a pipeline file until interrupted.
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Run only this source or sink (repeatable). Lets sinks scale out as
        /// more instances in the same consumer group, apart from the sources.
        #[arg(long = "component", value_name = "NAME")]
        components: Vec<String>,
        /// Where stateful processors keep their local state (RocksDB), one
        /// directory per pipeline and processor below it. Give each instance
        /// on one machine its own. Lost state is restored from the changelog.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "syncline-state",
            env = "SYNCLINE_STATE_DIR"
        )]
        state_dir: PathBuf,
        /// Serve Prometheus metrics on this address (e.g. `127.0.0.1:9464`);
        /// names in docs/metrics.md. Off when not given.
        #[arg(long, value_name = "ADDR", env = "SYNCLINE_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Serve the management API and dashboard on this address (default:
        /// the file's `api.listen`, else 127.0.0.1:9470); `off` serves
        /// neither. docs/api.md.
        #[arg(long, value_name = "ADDR|off", env = "SYNCLINE_API_ADDR", value_parser = parse_api_addr)]
        api_addr: Option<pipeline::ApiAddr>,
    },
    /// Show the state, lag, rates and last error of each component of a
    /// running pipeline (asks its management API). Exit 0 when every
    /// component runs, 1 when one does not or the API cannot be reached.
    Status(syncline::operate::StatusArgs),
    /// List a pipeline's dead letters, or replay them into the topics they
    /// came from (reads and writes Kafka directly: the pipeline need not run).
    #[command(subcommand)]
    Dlq(syncline::operate::DlqCommand),
    /// Check a pipeline file: print every error (exit 2) or a summary (exit 0).
    Validate {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Also ask the pipeline's schema registry: compile each `rules`
        /// processor's steps against its inputs' latest schemas and test the
        /// derived output schemas against the registry's compatibility rules.
        #[arg(long)]
        registry: bool,
    },
    /// Ask a running `postgres_cdc` or `mysql_cdc` source to read tables
    /// again (a re-snapshot), e.g. to repair a target. For `postgres_cdc`
    /// the request goes through the database's WAL, so the source answers it
    /// in order with the changes; for `mysql_cdc` it is recorded in the
    /// source's snapshot progress, which the running source checks every
    /// 5 s. Either way a source that is not running answers at its next start.
    Snapshot {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The `postgres_cdc` or `mysql_cdc` source.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// A captured table (`schema.table` / `database.table`, patterns
        /// with `*`); repeatable. Default: every table of the source.
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// `mysql_cdc` only, with the pipeline stopped: forget the source's
        /// stored binlog position and snapshot progress, so its next start
        /// takes a new snapshot of every table (the way back from a purged
        /// binlog position).
        #[arg(long)]
        from_scratch: bool,
    },
    /// Serve the Confluent Schema Registry REST API, with its state in a Kafka topic.
    Registry(RegistryArgs),
    /// Print the pipeline file reference (Markdown, as in docs/reference.md).
    Reference,
}

#[derive(Args)]
struct RegistryArgs {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8081",
        env = "SYNCLINE_REGISTRY_LISTEN"
    )]
    listen: SocketAddr,
    /// Kafka bootstrap servers holding the registry's state topic.
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        env = "SYNCLINE_KAFKA_BOOTSTRAP"
    )]
    kafka_bootstrap: String,
    /// The compacted topic that holds every schema, subject and setting.
    #[arg(long, default_value = "_schemas", env = "SYNCLINE_REGISTRY_TOPIC")]
    topic: String,
    /// Extra librdkafka property, `key=value` (repeatable), e.g. security settings.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
    /// Credentials that may read: comma-separated `user:password` (HTTP
    /// Basic) or bare tokens of 16+ characters (Bearer). Give them through
    /// the environment, not the command line, where `ps` shows them.
    #[arg(
        long,
        env = "SYNCLINE_REGISTRY_READ_CREDENTIALS",
        hide_env_values = true
    )]
    read_credentials: Option<String>,
    /// Credentials that may also register, delete and set levels (same form).
    #[arg(
        long,
        env = "SYNCLINE_REGISTRY_WRITE_CREDENTIALS",
        hide_env_values = true
    )]
    write_credentials: Option<String>,
    /// Serve without credentials on an address other than loopback (refused otherwise).
    #[arg(long)]
    allow_anonymous: bool,
    /// The largest request body taken, in bytes (larger: 413).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_request_bytes: usize,
    /// Requests served at once (more: 429 with Retry-After).
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Milliseconds a request may take before it is answered 503.
    #[arg(long, default_value_t = 60_000)]
    request_timeout_ms: u64,
}

fn parse_api_addr(s: &str) -> Result<pipeline::ApiAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(pipeline::ApiAddr::Off);
    }
    s.parse()
        .map(pipeline::ApiAddr::At)
        .map_err(|_| format!("`{s}` is not an address such as 127.0.0.1:9470, or `off`"))
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Validate { pipeline, registry } => {
            runtime.block_on(pipeline::validate_command(&pipeline, registry))
        }
        Command::Snapshot {
            pipeline,
            source,
            tables,
            from_scratch,
        } => runtime.block_on(syncline::operate::snapshot_command(
            &pipeline,
            &source,
            &tables,
            from_scratch,
        )),
        Command::Reference => {
            print!("{}", pipeline::reference::generate());
            ExitCode::SUCCESS
        }
        Command::Run {
            pipeline,
            components,
            state_dir,
            metrics_addr,
            api_addr,
        } => {
            let options = pipeline::RunOptions {
                only: components,
                state_dir,
                metrics_addr,
                api_addr: api_addr.unwrap_or_default(),
            };
            runtime.block_on(syncline::run::run_command(&pipeline, &options))
        }
        Command::Status(args) => runtime.block_on(syncline::operate::status_command(&args)),
        Command::Dlq(command) => runtime.block_on(syncline::operate::dlq_command(&command)),
        Command::Registry(args) => {
            let mut kafka = syncline_core::kafka::KafkaConfig::new(args.kafka_bootstrap);
            kafka.properties.extend(args.kafka_properties);
            let auth = match syncline_registry::guard::Auth::parse(
                args.read_credentials.as_deref(),
                args.write_credentials.as_deref(),
            ) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: syncline registry: {e}");
                    return ExitCode::from(2);
                }
            };
            if auth.is_open() && !args.listen.ip().is_loopback() && !args.allow_anonymous {
                eprintln!(
                    "error: syncline registry: listening on {} without credentials would let anyone who reaches it register and delete schemas: \
                     set SYNCLINE_REGISTRY_WRITE_CREDENTIALS (and SYNCLINE_REGISTRY_READ_CREDENTIALS), or pass --allow-anonymous",
                    args.listen
                );
                return ExitCode::from(2);
            }
            let config = syncline_registry::ServerConfig {
                listen: args.listen,
                kafka,
                topic: args.topic,
                auth,
                limits: syncline_registry::guard::Limits {
                    max_request_bytes: args.max_request_bytes,
                    max_concurrent_requests: args.max_concurrent_requests,
                    request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
                },
            };
            let serve =
                async { syncline_registry::serve(config, pipeline::shutdown_on_signal()).await };
            match runtime.block_on(serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "schema registry stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
