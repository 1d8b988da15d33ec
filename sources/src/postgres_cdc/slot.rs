//! The database side of the source: connections, which tables are captured,
//! the publication, and the replication slot (its health and its creation
//! with an exported snapshot).
//!
//! # Slot safety
//! - The slot is created only when missing, and the stream is started with
//!   `existing_slot_required`, so a slot that vanished is never silently
//!   replaced by a new one (which would skip every change in between).
//! - A slot Postgres invalidated (`wal_status = lost`, WAL removed under
//!   `max_slot_wal_keep_size`) stops the source with [`lost_slot_error`],
//!   a `Config` error: the supervisor stops the pipeline instead of retrying,
//!   and nothing is skipped silently.

use super::config::CdcTableConfig;
use super::decode::{RawColumn, TypeInfo, SESSION_OPTIONS, TYPE_SQL};
use crate::sql_poll::connection::redact;
use crate::sql_poll::plan::{quote_ident, quote_table};
use pg_walstream::PgReplicationConnection;
use std::collections::HashMap;
use syncline_core::connect::postgres::Postgres;
use syncline_core::{Error, ErrorKind, Result};
use tokio_postgres::Client;

pub(crate) use syncline_core::error::postgres::pg_error;

/// A plain connection with the session settings of [`SESSION_OPTIONS`].
pub async fn connect(url: &str, source: &str) -> Result<Client> {
    let mut pg = parse(url)?;
    let config = pg.config_mut();
    config.options(SESSION_OPTIONS);
    if config.get_application_name().is_none() {
        config.application_name(format!("syncline postgres_cdc {source}"));
    }
    pg.connect(&redact(url)).await
}

/// The connection string as a [`Postgres`] (TLS settings taken out).
fn parse(url: &str) -> Result<Postgres> {
    Postgres::parse(url).map_err(|e| {
        Error::config(format!(
            "{} is not a valid Postgres connection string: {e}",
            redact(url)
        ))
    })
}

/// The libpq connection string of a replication connection to the same
/// database, with the same TLS settings made explicit.
pub fn replication_conninfo(url: &str) -> Result<String> {
    parse(url)?.libpq(&[("replication", "database"), ("options", SESSION_OPTIONS)])
}

/// A captured table as resolved at start.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub schema: String,
    pub table: String,
    pub oid: u32,
    pub topic: String,
    pub key: Vec<String>,
    pub columns: Vec<RawColumn>,
    /// `d` default, `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
}

impl Resolved {
    /// `schema.table`
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// A table name or pattern as `schema.table` (`public` when no schema is given).
pub fn qualified_pattern(table: &str) -> String {
    let t = if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    };
    t.replace('"', "")
}

/// Whether the table name or pattern `pattern` names `table`.
pub fn table_matches(pattern: &str, table: &Resolved) -> bool {
    glob(&qualified_pattern(pattern), &table.name())
}

/// `*` matches any characters; everything else itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

const TABLES_SQL: &str = "SELECT n.nspname::text, c.relname::text, c.oid, c.relreplident::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2";

const COLUMNS_SQL: &str = "SELECT a.attname::text, a.atttypid, a.atttypmod FROM pg_attribute a \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const PRIMARY_KEY_SQL: &str = "SELECT a.attname::text FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord";

const IDENTITY_INDEX_SQL: &str = "SELECT a.attname::text FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = $1 AND i.indisreplident ORDER BY k.ord";

/// The first column of `sql` (with `$1` = the table's oid) as strings.
async fn names(client: &Client, sql: &str, oid: u32, table: &str) -> Result<Vec<String>> {
    client
        .query(sql, &[&oid])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .map_err(|e| pg_error(e, format!("cannot read the keys of {table}")))
}

/// Resolve the configured tables (and patterns) to the database's tables.
pub async fn resolve_tables(client: &Client, entries: &[CdcTableConfig]) -> Result<Vec<Resolved>> {
    let all = client
        .query(TABLES_SQL, &[])
        .await
        .map_err(|e| pg_error(e, "cannot list tables"))?;
    let mut out: Vec<Resolved> = Vec::new();
    for entry in entries {
        let pattern = qualified_pattern(&entry.table);
        let mut matched = 0;
        for row in &all {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            if !glob(&pattern, &format!("{schema}.{table}")) {
                continue;
            }
            matched += 1;
            if out.iter().any(|r| r.schema == schema && r.table == table) {
                continue; // the first entry that names a table wins
            }
            let oid: u32 = row.get(2);
            let ident: String = row.get(3);
            let replica_identity = ident.chars().next().unwrap_or('d');
            let columns: Vec<RawColumn> = client
                .query(COLUMNS_SQL, &[&oid])
                .await
                .map_err(|e| pg_error(e, format!("cannot read the columns of {schema}.{table}")))?
                .iter()
                .map(|r| RawColumn {
                    name: r.get(0),
                    type_oid: r.get(1),
                    typmod: r.get(2),
                })
                .collect();
            let full = format!("{schema}.{table}");
            let pk = names(client, PRIMARY_KEY_SQL, oid, &full).await?;
            let key = match (&entry.key, pk.is_empty(), replica_identity) {
                (_, _, 'n') => {
                    return Err(Error::config(format!(
                        "`{schema}.{table}` has REPLICA IDENTITY NOTHING: its updates and deletes carry no key. \
                         Run `ALTER TABLE {} REPLICA IDENTITY DEFAULT` (with a primary key) or `... REPLICA IDENTITY FULL`",
                        quote_table(&format!("{schema}.{table}"))
                    )))
                }
                (Some(k), _, 'f') => k.clone(),
                (Some(k), _, 'i') => {
                    let idx = names(client, IDENTITY_INDEX_SQL, oid, &full).await?;
                    if !k.iter().all(|c| idx.contains(c)) {
                        return Err(Error::config(format!(
                            "`{schema}.{table}`: key [{}] is not covered by its replica identity index [{}]; \
                             use those columns or `ALTER TABLE ... REPLICA IDENTITY FULL`",
                            k.join(", "),
                            idx.join(", ")
                        )));
                    }
                    k.clone()
                }
                (Some(k), false, 'd') if *k == pk => k.clone(),
                (Some(k), _, _) => {
                    return Err(Error::config(format!(
                        "`{schema}.{table}`: key [{}] is not its primary key, so updates and deletes would not carry it. \
                         Run `ALTER TABLE {} REPLICA IDENTITY FULL`, or remove `key`",
                        k.join(", "),
                        quote_table(&format!("{schema}.{table}"))
                    )))
                }
                (None, false, _) => pk,
                (None, true, 'i') => names(client, IDENTITY_INDEX_SQL, oid, &full).await?,
                (None, true, _) => {
                    return Err(Error::config(format!(
                        "`{schema}.{table}` has no primary key: set `key` to columns that identify a row \
                         and run `ALTER TABLE {} REPLICA IDENTITY FULL` (see postgres_cdc README, tables without a primary key)",
                        quote_table(&format!("{schema}.{table}"))
                    )))
                }
            };
            for k in &key {
                if !columns.iter().any(|c| &c.name == k) {
                    return Err(Error::config(format!(
                        "key column `{k}` is not a column of `{schema}.{table}`"
                    )));
                }
            }
            let topic = entry
                .topic
                .replace("{schema}", &schema)
                .replace("{table}", &table);
            out.push(Resolved {
                schema,
                table,
                oid,
                topic,
                key,
                columns,
                replica_identity,
            });
        }
        if matched == 0 {
            return Err(Error::config(format!(
                "no table matches `{}` (or it is not visible to this user)",
                entry.table
            )));
        }
    }
    Ok(out)
}

/// Resolve every (type oid, modifier) of `columns` missing from `types`.
pub async fn resolve_types(
    client: &Client,
    columns: &[RawColumn],
    types: &mut HashMap<(u32, i32), TypeInfo>,
) -> Result<()> {
    for c in columns {
        if types.contains_key(&(c.type_oid, c.typmod)) {
            continue;
        }
        let row = client
            .query_one(TYPE_SQL, &[&c.type_oid, &c.typmod])
            .await
            .map_err(|e| pg_error(e, format!("cannot resolve type oid {}", c.type_oid)))?;
        types.insert(
            (c.type_oid, c.typmod),
            TypeInfo {
                sql_type: row.get(0),
                base: row.get(1),
                typmod: row.get(2),
                elem: row.get(3),
            },
        );
    }
    Ok(())
}

/// Create the publication when missing; add captured tables it lacks.
pub async fn ensure_publication(client: &Client, name: &str, tables: &[Resolved]) -> Result<()> {
    let existing = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| pg_error(e, format!("cannot look up publication `{name}`")))?;
    let list = |ts: &[&Resolved]| ts.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    match existing {
        None => {
            let all: Vec<&Resolved> = tables.iter().collect();
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(name),
                    list(&all)
                ))
                .await
                .map_err(|e| pg_error(e, format!("cannot create publication `{name}`")))?;
            tracing::info!(
                publication = name,
                tables = all.len(),
                "postgres_cdc: created the publication"
            );
        }
        Some(row) if row.get::<_, bool>(0) => {}
        Some(_) => {
            let published: Vec<(String, String)> = client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                    &[&name],
                )
                .await
                .map_err(|e| pg_error(e, format!("cannot read publication `{name}`")))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let missing: Vec<&Resolved> = tables
                .iter()
                .filter(|t| !published.contains(&(t.schema.clone(), t.table.clone())))
                .collect();
            if !missing.is_empty() {
                client
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE {}",
                        quote_ident(name),
                        list(&missing)
                    ))
                    .await
                    .map_err(|e| {
                        pg_error(e, {
                            format!("cannot add tables to publication `{name}` (add them, or let syncline own it)")
                        })
                    })?;
                tracing::info!(
                    publication = name,
                    added = missing.len(),
                    "postgres_cdc: added tables to the publication"
                );
            }
        }
    }
    Ok(())
}

/// What `pg_replication_slots` says about the slot.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    pub wal_status: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<String>,
}

pub async fn slot_status(client: &Client, slot: &str, db: &str) -> Result<Option<SlotStatus>> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, wal_status, active_pid, confirmed_flush_lsn::text, slot_type \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| pg_error(e, format!("cannot read replication slot `{slot}`")))?;
    let Some(row) = row else { return Ok(None) };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    if row.get::<_, String>(5) != "logical"
        || plugin.as_deref() != Some("pgoutput")
        || database.as_deref() != Some(db)
    {
        return Err(Error::config(format!(
            "replication slot `{slot}` exists but is not a logical pgoutput slot of database `{db}` \
             (plugin {plugin:?}, database {database:?}): choose another `slot` name"
        )));
    }
    let status = SlotStatus {
        wal_status: row.get(2),
        active_pid: row.get(3),
        confirmed_flush: row.get(4),
    };
    if status.wal_status.as_deref() == Some("lost") {
        return Err(lost_slot_error(slot));
    }
    Ok(Some(status))
}

/// Wait (up to 30 s) until no walsender holds `slot`: after this process
/// closed its replication connection, Postgres releases the slot shortly.
pub async fn wait_until_released(url: &str, slot: &str, db: &str) -> Result<()> {
    let client = connect(url, "postgres_cdc").await?;
    for _ in 0..300 {
        match slot_status(&client, slot, db).await? {
            Some(s) if s.active_pid.is_some() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            _ => return Ok(()),
        }
    }
    Err(Error::transient(format!(
        "replication slot `{slot}` is still in use 30 s after its stream was closed"
    )))
}

/// The error for an invalidated slot: what happened and how to recover.
pub fn lost_slot_error(slot: &str) -> Error {
    Error::config(format!(
        "replication slot `{slot}` is lost (pg_replication_slots.wal_status = 'lost'): Postgres removed WAL \
         the slot still needed (max_slot_wal_keep_size), so changes after the last acknowledged position \
         can no longer be read. syncline stops rather than skip them. To recover, re-snapshot: drop the slot \
         (SELECT pg_drop_replication_slot('{slot}')) and start the pipeline again; it creates the slot and \
         snapshots every table afresh. Rows deleted at the source meanwhile stay in targets: empty the \
         targets first for an exact copy. To avoid it, raise max_slot_wal_keep_size or keep the pipeline running."
    ))
}

/// A slot created with an exported snapshot. The snapshot can be imported
/// (`SET TRANSACTION SNAPSHOT`) only while `conn` stays open and idle.
pub struct Exported {
    /// Kept open (and idle) for the snapshot's life; closing it ends the
    /// export (and drops a temporary slot).
    _conn: PgReplicationConnection,
    /// The slot's consistent point: a transaction is in the snapshot iff
    /// it committed before it, and streamed iff it committed at or after it.
    pub lsn: u64,
    pub snapshot: String,
    pub slot: String,
}

/// `CREATE_REPLICATION_SLOT slot [TEMPORARY] LOGICAL pgoutput (SNAPSHOT 'export')`.
pub async fn create_slot(url: &str, slot: &str, temporary: bool) -> Result<Exported> {
    let display = redact(url);
    let mut conn = PgReplicationConnection::connect_async(&replication_conninfo(url)?)
        .await
        .map_err(|e| {
            Error::transient(format!("cannot open a replication connection to {display}"))
                .with_source(e)
        })?;
    let sql = format!(
        "CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput (SNAPSHOT 'export')",
        quote_ident(slot),
        if temporary { "TEMPORARY " } else { "" }
    );
    let res = conn.exec_async(&sql).await.map_err(|e| {
        let msg = e.to_string();
        let kind = if msg.contains("wal_level") || msg.contains("permission") || msg.contains("must be") {
            ErrorKind::Config
        } else {
            ErrorKind::Transient
        };
        Error::new(kind, format!("cannot create replication slot `{slot}` (needs wal_level = logical and a role with REPLICATION)"))
            .with_source(e)
    })?;
    let get = |col: i32| res.get_value(0, col).unwrap_or_default();
    let lsn = parse_lsn(&get(1)).ok_or_else(|| {
        Error::internal(format!(
            "CREATE_REPLICATION_SLOT returned no consistent point: {:?}",
            get(1)
        ))
    })?;
    Ok(Exported {
        lsn,
        snapshot: get(2),
        slot: slot.to_string(),
        _conn: conn,
    })
}

/// `16/B374D848` -> u64
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_lsns() {
        assert!(glob("public.*", "public.orders"));
        assert!(glob("public.order_*", "public.order_items"));
        assert!(!glob("public.order_*", "public.orders"));
        assert!(glob("*.a*b", "x.ab"));
        assert!(!glob("*.a*b", "x.ba"));
        assert!(glob("public.t", "public.t"));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(
            replication_conninfo("postgres://u@h/db").unwrap(),
            "postgres://u@h/db?sslmode=prefer&replication=database&options=-c%20DateStyle%3DISO%20-c%20TimeZone%3DUTC%20-c%20extra_float_digits%3D3%20-c%20bytea_output%3Dhex%20-c%20IntervalStyle%3Dpostgres"
        );
    }
}
