//! The `mysql_cdc` source: change-data-capture from MariaDB (and MySQL 8)
//! through the binlog, after a snapshot consistent with a binlog position.
//!
//! ```text
//! config.rs    the pipeline entry (tables, patterns, server id, snapshot)
//! schema.rs    information_schema -> captured tables, column types, keys
//! value.rs     binlog and snapshot values -> Avro
//! position.rs  binlog positions, change positions, MariaDB's GTID event
//! snapshot.rs  the initial snapshot by key chunks, in a consistent snapshot
//! stream.rs    the binlog -> change events; the stored position
//! ```
//!
//! How it runs ([`MysqlCdcSource::run`]):
//! 1. check the server's binlog settings (clear errors naming them);
//! 2. read the stored binlog position; none yet: forget stored snapshot
//!    progress, open a consistent snapshot and store its binlog position as
//!    where streaming starts, before any row is read (with `snapshot:
//!    never`: the binlog's end);
//! 3. snapshot every table whose snapshot is not finished
//!    ([`snapshot`]); a stored position whose binlog file was purged stops
//!    the source with the way to recover;
//! 4. stream from the stored position ([`stream`]); a re-snapshot asked for
//!    with `syncline snapshot` ends the stream at a transaction boundary,
//!    and the source goes back to 3.
//!
//! # The guarantee (exactly-once effects)
//! Every committed change of a captured table is published at least once,
//! with an identity (source name, table, key, position) that is the same
//! on every replay, and positions order the changes of a key:
//! - a streamed change has position `(epoch, binlog file number, end offset
//!   of its transaction's first event, 1 + index in the transaction)`, all
//!   read from the binlog, so a replay has the same position;
//! - a snapshot row has position `(epoch, file number, offset, 0)` of the
//!   binlog position its consistent snapshot reports, which sorts after
//!   every transaction the snapshot contains and before every later one;
//! - the epoch is stored with the source's state and grows whenever the
//!   source starts without a stored position (first start, after
//!   `--from-scratch`), so positions of a new binlog lineage (file numbers
//!   start again after `RESET MASTER` or on another server) sort above
//!   every earlier one ([`position::change_position`]);
//! - the stored position moves past a transaction only once the broker has
//!   acknowledged every record of it and of every earlier one
//!   ([`stream`]), so a restart (kill -9 included) replays from at or
//!   before the first unacknowledged record, never after it.
//!
//! syncline sinks apply a change only if its position is greater than the
//! one the row holds, so replays are dropped and the effect is exactly once.

pub mod config;
mod position;
mod schema;
mod snapshot;
mod stream;
mod value;

pub use config::{MysqlCdcConfig, MysqlTableConfig};
pub use position::BinlogPosition;

use crate::snapshot_progress::ProgressStore;
use crate::state::JsonState;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use schema::Table;
use syncline_core::codec::Encoder;
use syncline_core::connect::mysql::Mysql;
use syncline_core::error::mysql::mysql_error;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ChangeEvent, Error, Op, Position, Result, SourceInfo};
use syncline_runtime::publish::{Pending, Publisher};

/// The name of the stored stream position (key `<pipeline>/<source>/binlog/position`).
const POSITION: &str = "position";
/// The name of the stored epoch (key `<pipeline>/<source>/epoch/binlog`):
/// the binlog lineage positions are built in ([`position::change_position`]).
const EPOCH: &str = "binlog";

/// The stored epoch of source `source` of `pipeline`.
fn epoch_state(
    kafka: syncline_core::kafka::KafkaConfig,
    pipeline: &str,
    source: &str,
) -> JsonState<u64> {
    JsonState::new(kafka, format!("{pipeline}/{source}/epoch/"), "binlog epoch")
}

/// A built mysql_cdc source; [`MysqlCdcSource::run`] captures until shutdown.
pub struct MysqlCdcSource {
    name: String,
    mysql: Mysql,
    display: String,
    server_id: u32,
    cfg: MysqlCdcConfig,
    tables: Vec<Table>,
    /// Encodes and produces every change (the runtime's publisher); its
    /// producer also writes the snapshot progress and the position.
    publisher: Publisher,
    progress: ProgressStore,
    position: JsonState<BinlogPosition>,
    epochs: JsonState<u64>,
    /// The epoch of this run's positions (read in [`MysqlCdcSource::run`]).
    epoch: u64,
    /// The live status: binlog lag, snapshot progress.
    status: syncline_core::status::Status,
}

impl MysqlCdcSource {
    pub(super) async fn build(
        cfg: &MysqlCdcConfig,
        ctx: ComponentContext,
    ) -> Result<MysqlCdcSource> {
        let mysql = Mysql::parse(&cfg.connection).map_err(Error::config)?;
        let display = crate::sql_poll::connection::redact(cfg.connection.trim());
        let mut conn = mysql.connect(&display).await?;
        preflight(&mut conn, &display).await?;
        let tables = schema::resolve_tables(&mut conn, &ctx.component, &cfg.tables).await?;
        let _ = conn.disconnect().await;
        let encoder = Encoder::new(&ctx.registry)?;
        for t in &tables {
            ctx.kafka
                .ensure_topic(&t.topic, ctx.kafka.partitions, false)
                .await?;
            encoder.prepare(&t.topic, &t.schema).await?;
            tracing::info!(source = %ctx.component, table = %t.full_name(), topic = %t.topic, key = ?t.key,
                "mysql_cdc: table ready");
        }
        let publisher = Publisher::for_source(
            &ctx,
            "mysql_cdc",
            encoder,
            ctx.kafka.producer()?,
            cfg.dead_letter_topic.as_deref(),
        )
        .await?;
        Ok(MysqlCdcSource {
            publisher,
            progress: ProgressStore::new(ctx.kafka.clone(), &ctx.pipeline, &ctx.component),
            position: JsonState::new(
                ctx.kafka.clone(),
                format!("{}/{}/binlog/", ctx.pipeline, ctx.component),
                "binlog position",
            ),
            epochs: epoch_state(ctx.kafka.clone(), &ctx.pipeline, &ctx.component),
            epoch: 0,
            status: ctx.status.clone(),
            server_id: cfg
                .server_id
                .unwrap_or_else(|| config::default_server_id(&ctx.pipeline, &ctx.component)),
            name: ctx.component,
            mysql,
            display,
            cfg: cfg.clone(),
            tables,
        })
    }

    /// Snapshot what is not snapshotted yet, then stream until `shutdown`.
    /// Errors: transient ones (server or broker away) are returned for the
    /// supervisor to restart the source, which resumes from the stored
    /// position and snapshot progress; a purged binlog position, settings
    /// the binlog needs, or a schema the registry refuses stop the pipeline.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let stored = self.position.restore().await?.remove(POSITION);
        let stored_epoch = self.epochs.restore().await?.remove(EPOCH);
        let (epoch, new) = position::next_epoch(stored_epoch, stored.is_some());
        if new {
            // before any position of it is published or stored
            self.epochs
                .store(self.publisher.producer(), EPOCH, Some(&epoch))
                .await?;
            tracing::info!(source = %self.name, epoch, "mysql_cdc: no stored binlog position: a new epoch of positions");
        }
        self.epoch = epoch;
        let mut start = match stored {
            Some(p) => {
                self.check_not_purged(&p).await?;
                tracing::info!(source = %self.name, position = %p, "mysql_cdc: resuming from the stored binlog position");
                Some(p)
            }
            None => {
                let old = self.progress.restore().await?;
                self.progress
                    .reset(self.publisher.producer(), old.keys())
                    .await?;
                None
            }
        };
        loop {
            let start_at = self.snapshot(start.take(), &shutdown).await?;
            let Some(start_at) = start_at else {
                return Ok(());
            };
            match self.stream(start_at, &shutdown).await? {
                stream::StreamEnd::Shutdown => return Ok(()),
                stream::StreamEnd::Resnapshot(at) => start = Some(at),
            }
        }
    }

    async fn connect(&self) -> Result<Conn> {
        self.mysql.connect(&self.display).await
    }

    /// Store `at` as where the stream resumes; call only once the broker has
    /// every record before it.
    async fn store_position(&self, at: &BinlogPosition) -> Result<()> {
        self.position
            .store(self.publisher.producer(), POSITION, Some(at))
            .await
    }

    /// A stored position in a binlog file the server no longer has cannot be
    /// resumed: the changes in between are gone.
    async fn check_not_purged(&self, at: &BinlogPosition) -> Result<()> {
        let names = self.binlog_files().await?;
        if names.iter().any(|n| n == &at.file) {
            Ok(())
        } else {
            Err(self.purged(at, names.first().map(String::as_str)))
        }
    }

    /// The server's binlog files, oldest first (`SHOW BINARY LOGS`).
    async fn binlog_files(&self) -> Result<Vec<String>> {
        let mut conn = self.connect().await?;
        let files = self.binary_logs(&mut conn).await?;
        let _ = conn.disconnect().await;
        Ok(files.into_iter().map(|(name, _)| name).collect())
    }

    /// The server's binlog files and their sizes, oldest first, on `conn`.
    async fn binary_logs(&self, conn: &mut Conn) -> Result<Vec<(String, u64)>> {
        let files: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| {
            mysql_error(
                e,
                format!("cannot list the binlog files of {}", self.display),
            )
        })?;
        Ok(files
            .into_iter()
            .filter_map(|mut r| Some((r.take::<String, _>(0)?, r.take::<u64, _>(1)?)))
            .collect())
    }

    /// The error of a position the binlog no longer holds, with the way out.
    fn purged(&self, at: &BinlogPosition, oldest: Option<&str>) -> Error {
        Error::config(format!(
            "source `{}` stopped at binlog position {at}, which {} no longer holds (the oldest binlog file is {}): \
             the changes since are lost to the binlog. To recover, capture again from a new snapshot: \
             `syncline snapshot PIPELINE_FILE --source {} --from-scratch` forgets the stored position, \
             then start the pipeline; keep binlogs longer (`binlog_expire_logs_seconds`, `expire_logs_days`) \
             than the source may be stopped",
            self.name,
            self.display,
            oldest.unwrap_or("unknown"),
            self.name,
        ))
    }

    fn source_info(&self, t: usize, position: Position, text: String, ts_us: i64) -> SourceInfo {
        let table = &self.tables[t];
        SourceInfo {
            connector: "mysql_cdc".into(),
            name: self.name.clone(),
            db: table.database.clone(),
            table: table.name.clone(),
            position,
            position_text: text,
            ts_us,
        }
    }

    /// Hand one change of table `t` to the producer. A change that cannot
    /// be encoded for a reason of its own (a value too large for the broker)
    /// goes to the dead-letter topic ([`Publisher::send`]).
    async fn enqueue(&self, t: usize, event: &ChangeEvent) -> Result<Pending> {
        let table = &self.tables[t];
        self.publisher
            .publish(&table.topic, &table.schema, event)
            .await
    }

    /// A row of table `t` whose values cannot be read (`why`): to the
    /// dead-letter topic, with where it was read, so the stream moves on.
    fn dead_letter(&self, t: usize, op: Op, position_text: &str, why: &Error) -> Result<Pending> {
        let table = &self.tables[t];
        let value = serde_json::json!({
            "table": table.full_name(),
            "op": format!("{op:?}"),
            "position": position_text,
        });
        tracing::warn!(source = %self.name, table = %table.full_name(), position = %position_text, error = %why,
            "mysql_cdc: a change cannot be read; it goes to the dead-letter topic");
        self.publisher.dead_letter(
            &table.topic,
            None,
            value.to_string().as_bytes(),
            &why.to_string(),
        )
    }
}

/// The server settings the binlog must have, each checked with the fix.
async fn preflight(conn: &mut Conn, display: &str) -> Result<()> {
    let mut row: mysql_async::Row = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .map_err(|e| mysql_error(e, format!("cannot read the binlog settings of {display}")))?
        .ok_or_else(|| Error::internal("SELECT @@log_bin returned no row"))?;
    let mut setting = |i: usize| -> Option<String> { row.take::<Option<String>, _>(i).flatten() };
    let (log_bin, format, image, metadata) = (setting(0), setting(1), setting(2), setting(3));
    let want = |what: &str, have: Option<String>, ok: &[&str], fix: &str| -> Result<()> {
        let have = have.unwrap_or_default().to_ascii_uppercase();
        if ok.contains(&have.as_str()) {
            Ok(())
        } else {
            Err(Error::config(format!(
                "{display} has {what} = {have}; mysql_cdc needs {}: {fix}",
                ok[0]
            )))
        }
    };
    want(
        "log_bin",
        log_bin,
        &["1", "ON"],
        "start the server with --log-bin",
    )?;
    want(
        "binlog_format",
        format,
        &["ROW"],
        "SET GLOBAL binlog_format = 'ROW' (and in the server's configuration)",
    )?;
    want(
        "binlog_row_image",
        image,
        &["FULL"],
        "SET GLOBAL binlog_row_image = 'FULL' (and in the server's configuration)",
    )?;
    want(
        "binlog_row_metadata",
        metadata,
        &["FULL"],
        "SET GLOBAL binlog_row_metadata = 'FULL' (MariaDB 10.5+, MySQL 8.0.1+; column names travel with each row)",
    )?;
    // MariaDB only: compressed events are sent as stored, and no reader here decodes them
    let compressed: Option<Option<String>> = conn
        .query_first("SELECT @@log_bin_compress")
        .await
        .unwrap_or(None);
    if let Some(Some(c)) = compressed {
        if c == "1" || c.eq_ignore_ascii_case("ON") {
            return Err(Error::config(format!(
                "{display} has log_bin_compress = ON; mysql_cdc cannot read compressed binlog events: SET GLOBAL log_bin_compress = OFF"
            )));
        }
    }
    Ok(())
}

/// Ask the running (or next) `mysql_cdc` source `source` of `pipeline` for
/// a re-snapshot of the captured tables named by `tables` (names or
/// patterns with `*`; empty: every captured table): each is recorded as
/// "snapshot pending" in the source's snapshot progress, which the running
/// source looks for every 5 s ([`stream`]). Returns the tables' names.
///
/// `from_scratch`: forget the stored binlog position and the progress of
/// every table instead, so that the next start takes a new snapshot of
/// everything and streams from its position, in a new epoch whose
/// positions sort above every earlier one (after `RESET MASTER` or a
/// failover, file numbers start again): the way back from a purged binlog
/// position. Run it while the pipeline is stopped.
pub async fn request_resnapshot(
    cfg: &MysqlCdcConfig,
    kafka: syncline_core::kafka::KafkaConfig,
    pipeline: &str,
    source: &str,
    tables: &[String],
    from_scratch: bool,
) -> Result<Vec<String>> {
    let mysql = Mysql::parse(&cfg.connection).map_err(Error::config)?;
    let display = crate::sql_poll::connection::redact(cfg.connection.trim());
    let mut conn = mysql.connect(&display).await?;
    let captured: Vec<String> = schema::resolve_tables(&mut conn, source, &cfg.tables)
        .await?
        .iter()
        .map(Table::full_name)
        .collect();
    let _ = conn.disconnect().await;
    let mut names = Vec::new();
    for pattern in tables {
        let matched: Vec<String> = captured
            .iter()
            .filter(|t| glob(pattern, t))
            .cloned()
            .collect();
        if matched.is_empty() {
            return Err(Error::config(format!(
                "`{pattern}` is not a table captured by source `{source}`; it captures: {}",
                captured.join(", ")
            )));
        }
        names.extend(matched);
    }
    if tables.is_empty() || from_scratch {
        names = captured;
    }
    names.sort();
    names.dedup();
    let progress = ProgressStore::new(kafka.clone(), pipeline, source);
    let producer = kafka.producer()?;
    if from_scratch {
        let position: JsonState<BinlogPosition> = JsonState::new(
            kafka,
            format!("{pipeline}/{source}/binlog/"),
            "binlog position",
        );
        position.store(&producer, POSITION, None).await?;
        let stored = progress.restore().await?;
        progress.reset(&producer, stored.keys()).await?;
    } else {
        for t in &names {
            progress.request(&producer, t, 0).await?;
        }
    }
    Ok(names)
}

/// `*` matches any characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_patterns_match_with_stars() {
        assert!(super::glob("shop.*", "shop.orders"));
        assert!(super::glob("shop.order_*", "shop.order_lines"));
        assert!(!super::glob("shop.order_*", "shop.orders"));
        assert!(super::glob("*.orders", "a.orders"));
        assert!(super::glob("shop.orders", "shop.orders"));
        assert!(!super::glob("shop.orders", "shop.orders2"));
    }
}
