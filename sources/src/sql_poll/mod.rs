//! The `sql_poll` source: polls tables (or queries) of Postgres or SQLite
//! and publishes every new or changed row as a change event.
//!
//! How it runs, per table, at every tick of its schedule:
//! 1. read up to `batch_size` rows above the table's cursor, ordered by
//!    cursor (Postgres: only rows the snapshot fence has released, see
//!    [`fence`]);
//! 2. publish them (op `UPSERT`, position = cursor + key, see [`cursor`])
//!    and wait until the broker has acknowledged every one;
//! 3. store the cursor of the last row in `_syncline_cursors`; repeat until
//!    caught up;
//! 4. with `detect_deletes`, every `delete_scan_interval_ms`, publish a
//!    `DELETE` for every published key that is gone (see [`delete_detection`]).
//!
//! The guarantee: every committed row state that the cursor can see is
//! published at least once, with an identity (source, position) that is the
//! same every time it is published; syncline sinks apply a change only if
//! it is newer than the row they hold, so the effect is exactly once.

pub mod config;
pub(crate) mod connection;
pub(crate) mod cursor;
mod delete_detection;
mod fence;
pub(crate) mod pg_time;
pub(crate) mod plan;
pub(crate) mod postgres;
pub(crate) mod schedule;
mod sqlite;

pub use config::{Mode, ScheduleConfig, SqlPollConfig, TableConfig};

use connection::Connection;
use cursor::{
    delete_position, encode_key, key_text, row_position, Cursor, CursorPart, CursorStore,
    StoredCursor,
};
use delete_detection::PublishedKeys;
use plan::{SourceRow, TablePlan};
use postgres::PgSource;
use schedule::Schedule;
use sqlite::SqliteSource;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use syncline_core::codec::Encoder;
use syncline_core::kafka::KafkaConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::{ChangeEvent, Column, ColumnType, Error, Op, Result, SourceInfo};
use syncline_runtime::publish::Publisher;

enum Database {
    Postgres(Box<PgSource>),
    Sqlite(SqliteSource),
}

impl Database {
    async fn open(connection: &Connection, source: &str) -> Result<Database> {
        Ok(match connection {
            Connection::Postgres(url) => Database::Postgres(Box::new(
                PgSource::connect(url, &connection.display(), source).await?,
            )),
            Connection::Sqlite(path) => Database::Sqlite(SqliteSource::open(path).await?),
        })
    }

    fn name(&self) -> String {
        match self {
            Database::Postgres(pg) => pg.db_name.clone(),
            Database::Sqlite(s) => s.db_name(),
        }
    }

    async fn introspect(&mut self, tc: &TableConfig) -> Result<(Vec<Column>, Vec<String>)> {
        match self {
            Database::Postgres(pg) => pg.introspect(tc).await,
            Database::Sqlite(s) => s.introspect(tc).await,
        }
    }

    fn cursor_type_ok(&self) -> fn(bool, &ColumnType) -> bool {
        match self {
            Database::Postgres(_) => postgres::cursor_type_ok,
            Database::Sqlite(_) => sqlite::cursor_type_ok,
        }
    }

    fn add_table(&mut self, tc: &TableConfig, plan: &TablePlan) {
        match self {
            Database::Postgres(pg) => pg.add_table(tc, plan),
            Database::Sqlite(s) => s.add_table(tc, plan),
        }
    }
}

struct TableState {
    plan: TablePlan,
    /// The cursor of the last acknowledged batch.
    cursor: Option<Cursor>,
    /// With `detect_deletes`: keys published and not deleted.
    published: Option<PublishedKeys>,
    last_scan: Option<Instant>,
    /// Since when the fence holds rows back (Postgres), for the warning.
    held_since: Option<Instant>,
    last_warning: Option<Instant>,
}

/// A built sql_poll source; [`SqlPollSource::run`] polls until shutdown.
pub struct SqlPollSource {
    name: String,
    connection: Connection,
    db: Database,
    db_name: String,
    tables: Vec<TableState>,
    /// Encodes and produces every change (the runtime's publisher); its
    /// producer also writes the cursors.
    publisher: Publisher,
    kafka: KafkaConfig,
    cursors: CursorStore,
    schedule: Schedule,
    batch_size: usize,
    /// The live status: polls, cursor, retries.
    status: syncline_core::status::Status,
}

/// How long a fence may hold rows back before the source warns about it.
const HELD_WARNING: Duration = Duration::from_secs(60);

impl SqlPollSource {
    async fn build(cfg: &SqlPollConfig, ctx: ComponentContext) -> Result<SqlPollSource> {
        let connection = Connection::parse(&cfg.connection)?;
        let mut db = Database::open(&connection, &ctx.component).await?;
        let mut plans = Vec::new();
        for tc in &cfg.tables {
            let (columns, pk) = db.introspect(tc).await?;
            let plan = TablePlan::resolve(&ctx.component, tc, columns, pk, db.cursor_type_ok())?;
            db.add_table(tc, &plan);
            plans.push(plan);
        }
        let encoder = Encoder::new(&ctx.registry)?;
        for plan in &plans {
            ctx.kafka
                .ensure_topic(&plan.topic, ctx.kafka.partitions, false)
                .await?;
            encoder.prepare(&plan.topic, &plan.schema).await?;
        }
        let producer = ctx.kafka.producer()?;
        let publisher = Publisher::for_source(
            &ctx,
            "sql_poll",
            encoder,
            producer.clone(),
            cfg.dead_letter_topic.as_deref(),
        )
        .await?;
        let cursors = CursorStore::new(ctx.kafka.clone(), &ctx.pipeline, &ctx.component);
        let mut stored = cursors.restore().await?;
        let mut tables = Vec::new();
        for plan in plans {
            let cursor = match stored.remove(&plan.name) {
                Some(s) if s.columns != plan.cursor_columns => {
                    return Err(Error::config(format!(
                        "the cursor stored for `{}` (topic `{}`, key `{}`) follows columns [{}], but the config now \
                         follows [{}]: restore the previous columns, or write a tombstone for that key to start over \
                         (every row is then published again)",
                        plan.name,
                        cursor::CURSOR_TOPIC,
                        cursors.key(&plan.name),
                        s.columns.join(", "),
                        plan.cursor_columns.join(", ")
                    )))
                }
                Some(s) => Some(s.cursor),
                None => None,
            };
            let published = if plan.detect_deletes {
                let started = Instant::now();
                let keys = delete_detection::rebuild(
                    &ctx.kafka,
                    &ctx.registry,
                    &plan.topic,
                    &ctx.component,
                    &plan.name,
                )
                .await?;
                tracing::info!(source = %ctx.component, table = %plan.name, keys = keys.len(), elapsed_ms = started.elapsed().as_millis() as u64,
                    "sql_poll: rebuilt the published keys for delete detection");
                Some(keys)
            } else {
                None
            };
            tracing::info!(source = %ctx.component, table = %plan.name, topic = %plan.topic,
                cursor = %cursor.as_ref().map(Cursor::text).unwrap_or_else(|| "none (from the start)".into()),
                "sql_poll: table ready");
            tables.push(TableState {
                plan,
                cursor,
                published,
                last_scan: None,
                held_since: None,
                last_warning: None,
            });
        }
        Ok(SqlPollSource {
            name: ctx.component,
            db_name: db.name(),
            connection,
            db,
            tables,
            publisher,
            kafka: ctx.kafka,
            cursors,
            schedule: cfg.schedule()?,
            batch_size: cfg.batch_size,
            status: ctx.status,
        })
    }

    /// Poll on the schedule until `shutdown`. Transient errors (database or
    /// broker away) are logged and retried with a growing delay, from the
    /// last stored cursor; other errors (a schema the registry refuses, a
    /// value that does not fit its column type, a table that is gone) stop
    /// the source and are returned.
    ///
    /// Stopping at any moment is safe: a batch whose cursor is not stored
    /// yet is published again on the next start, with the same identities.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        tracing::info!(source = %self.name, db = %self.connection.display(), tables = self.tables.len(), "sql_poll: running");
        loop {
            let started = chrono::Utc::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.poll() => r,
            };
            self.status.polled(result.is_ok());
            match result {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    self.status.running();
                }
                Err(e) if e.is_transient() => {
                    self.status.retrying(&e);
                    tracing::warn!(source = %self.name, db = %self.connection.display(), error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "sql_poll: poll failed; retrying from the last stored cursor");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    if let Err(e) = self.recover().await {
                        tracing::warn!(source = %self.name, error = %e, "sql_poll: cannot reconnect yet");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(source = %self.name, error = %e, "sql_poll: stopping");
                    return Err(e);
                }
            }
            let wait = self.schedule.wait_after(started, chrono::Utc::now());
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// After a transient error: a new database connection and a new producer
    /// (a producer may be left fenced or fatal by a broker failure).
    async fn recover(&mut self) -> Result<()> {
        if let Database::Postgres(pg) = &mut self.db {
            pg.reconnect(&self.connection.display()).await?;
        }
        self.publisher.replace_producer(self.kafka.producer()?);
        Ok(())
    }

    async fn poll(&mut self) -> Result<()> {
        for t in 0..self.tables.len() {
            self.poll_table(t).await?;
            let table = &self.tables[t];
            if table.published.is_some()
                && table
                    .last_scan
                    .is_none_or(|s| s.elapsed() >= table.plan.delete_scan_interval)
            {
                self.detect_deletes(t).await?;
                self.tables[t].last_scan = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Read and publish batches of table `t` until caught up.
    async fn poll_table(&mut self, t: usize) -> Result<()> {
        let mut fence_retry = true;
        loop {
            let after = self.tables[t].cursor.clone();
            let (rows, held_back) = match &mut self.db {
                Database::Sqlite(s) => (
                    s.read_batch(t, after.as_ref(), self.batch_size).await?,
                    false,
                ),
                Database::Postgres(pg) => {
                    let b = pg.read_batch(t, after.as_ref(), self.batch_size).await?;
                    // rows exist above both the published cursor and W
                    let released = b.watermark.as_ref().max(after.as_ref());
                    let held = b.high_water.is_some() && released < b.high_water.as_ref();
                    let table = &mut self.tables[t];
                    if held {
                        let since = *table.held_since.get_or_insert_with(Instant::now);
                        tracing::debug!(source = %self.name, table = %table.plan.name,
                            high_water = %b.high_water.as_ref().map(Cursor::text).unwrap_or_default(),
                            watermark = %b.watermark.as_ref().map(Cursor::text).unwrap_or_default(),
                            waiting = ?b.waiting, pending_fences = b.pending_fences, "sql_poll: fence holds rows back until older transactions end");
                        if since.elapsed() >= HELD_WARNING
                            && table
                                .last_warning
                                .is_none_or(|w| w.elapsed() >= HELD_WARNING)
                        {
                            table.last_warning = Some(Instant::now());
                            tracing::warn!(source = %self.name, table = %table.plan.name, held_s = since.elapsed().as_secs(), waiting = ?b.waiting,
                                "sql_poll: rows are held back by transactions that stay open; they are published when those end");
                        }
                    } else {
                        table.held_since = None;
                    }
                    (b.rows, held)
                }
            };
            let n = rows.len();
            if n > 0 {
                self.publish_rows(t, rows).await?;
            }
            if n >= self.batch_size {
                continue;
            }
            // A fence recorded by this round may be cleared right away.
            if held_back && fence_retry {
                fence_retry = false;
                continue;
            }
            return Ok(());
        }
    }

    /// Publish, wait for every acknowledgement, then store the cursor.
    async fn publish_rows(&mut self, t: usize, rows: Vec<SourceRow>) -> Result<()> {
        let plan = &self.tables[t].plan;
        let now_us = chrono::Utc::now().timestamp_micros();
        let last_cursor = rows
            .last()
            .map(|r| r.cursor.clone())
            .expect("publish_rows gets rows");
        let events: Vec<ChangeEvent> = rows
            .into_iter()
            .map(|row| {
                let key = plan.key_of(&row.values);
                let position = row_position(&row.cursor, &key);
                let position_text = format!(
                    "{}={} {}",
                    plan.cursor_columns.join(","),
                    row.cursor.text(),
                    key_text(&key)
                );
                ChangeEvent {
                    op: Op::Upsert,
                    key,
                    before: None,
                    after: Some(row.values),
                    source: self.source_info(plan, position, position_text, now_us),
                    unchanged: Vec::new(),
                }
            })
            .collect();
        // Every record acknowledged first, then the cursor: a crash in between
        // republishes this batch with the same identities, never skips it.
        self.send_all(plan, &events).await?;
        let stored = StoredCursor {
            columns: plan.cursor_columns.clone(),
            cursor: last_cursor.clone(),
        };
        self.cursors
            .store(self.publisher.producer(), &plan.name, &stored)
            .await?;
        let lag_ms = self.lag_ms(plan, &last_cursor);
        self.status
            .cursor(format!("{}: {}", plan.name, last_cursor.text()));
        let table = &mut self.tables[t];
        tracing::info!(source = %self.name, table = %table.plan.name, rows = events.len(), cursor = %last_cursor.text(), lag_ms,
            "sql_poll: published a batch");
        table.cursor = Some(last_cursor);
        if let Some(published) = &mut table.published {
            for ev in events {
                published.published(ev.key, ev.source.position);
            }
        }
        Ok(())
    }

    /// How far behind the database clock the cursor is, for timestamp cursors.
    fn lag_ms(&self, plan: &TablePlan, cursor: &Cursor) -> Option<i64> {
        let first = plan.column(plan.cursor_columns.first()?)?;
        match (&first.ty, cursor.0.first()?) {
            (ColumnType::Timestamp | ColumnType::TimestampTz, CursorPart::Int(us))
                if matches!(self.db, Database::Postgres(_)) =>
            {
                Some((chrono::Utc::now().timestamp_micros() - us) / 1_000)
            }
            _ => None,
        }
    }

    fn source_info(
        &self,
        plan: &TablePlan,
        position: syncline_core::Position,
        position_text: String,
        ts_us: i64,
    ) -> SourceInfo {
        SourceInfo {
            connector: "sql_poll".into(),
            name: self.name.clone(),
            db: self.db_name.clone(),
            table: plan.name.clone(),
            position,
            position_text,
            ts_us,
        }
    }

    /// Encode and produce `events`, then wait for every acknowledgement.
    async fn send_all(&self, plan: &TablePlan, events: &[ChangeEvent]) -> Result<()> {
        let mut pending = Vec::with_capacity(events.len());
        for ev in events {
            pending.push(
                self.publisher
                    .publish(&plan.topic, &plan.schema, ev)
                    .await?,
            );
        }
        syncline_runtime::publish::all(pending).await.map_err(|e| {
            Error::new(e.kind(), format!("publishing to `{}` failed", plan.topic)).with_source(e)
        })?;
        Ok(())
    }

    /// Scan the keys of table `t` and publish a `DELETE` for each published key that is gone.
    async fn detect_deletes(&mut self, t: usize) -> Result<()> {
        let started = Instant::now();
        let Some(published) = self.tables[t].published.as_ref() else {
            return Ok(());
        };
        let mut present: HashSet<Vec<u8>> = HashSet::new();
        match &mut self.db {
            Database::Postgres(pg) => {
                pg.scan_keys(t, |key| {
                    let encoded = encode_key(&key);
                    if published.contains(&encoded) {
                        present.insert(encoded);
                    }
                })
                .await?
            }
            Database::Sqlite(s) => {
                for key in s.scan_keys(t).await? {
                    let encoded = encode_key(&key);
                    if published.contains(&encoded) {
                        present.insert(encoded);
                    }
                }
            }
        }
        let gone = published.vanished(&present);
        let plan = &self.tables[t].plan;
        tracing::debug!(source = %self.name, table = %plan.name, published = published.len(), gone = gone.len(),
            elapsed_ms = started.elapsed().as_millis() as u64, "sql_poll: scanned keys for deletes");
        if gone.is_empty() {
            return Ok(());
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        let events: Vec<ChangeEvent> = gone
            .iter()
            .map(|(_, p)| {
                let position = delete_position(&p.position);
                let text = format!(
                    "delete {} after position {}",
                    key_text(&p.key),
                    hex_of(p.position.as_bytes())
                );
                ChangeEvent {
                    op: Op::Delete,
                    key: p.key.clone(),
                    before: None,
                    after: None,
                    source: self.source_info(plan, position, text, now_us),
                    unchanged: Vec::new(),
                }
            })
            .collect();
        self.send_all(plan, &events).await?;
        tracing::info!(source = %self.name, table = %plan.name, deleted = events.len(), "sql_poll: published deletes");
        let published = self.tables[t].published.as_mut().expect("checked above");
        for (encoded, _) in &gone {
            published.deleted(encoded);
        }
        Ok(())
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
