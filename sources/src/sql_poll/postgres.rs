//! The Postgres side of sql_poll: introspection (type mapping in
//! [`column_type`]), batch reads behind the snapshot fence (see
//! [`super::fence`]), and key scans for delete detection.

use super::config::TableConfig;
use super::cursor::{Cursor, CursorPart};
use super::fence::{FenceDecision, FenceState, Running};
use super::pg_time::{PgDate, PgTime, PgTimestamp};
use super::plan::{plain_query, quote_ident, quote_table, subquery, SourceRow, TablePlan};
use apache_avro::types::Value;
use futures::{pin_mut, TryStreamExt};
use std::time::Instant;
use syncline_core::connect::postgres::Postgres;
use syncline_core::error::postgres::pg_error;
use syncline_core::schema::nullable_value;
use syncline_core::value::decimal_value;
use syncline_core::{Column, ColumnType, Error, Result};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, IsolationLevel, Row};

/// Map a Postgres type to a column type. `base` is the type name after
/// resolving a domain, `elem` the element type name of an array.
///
/// int2/int4 -> Int, int8 -> Long, numeric(p,s) -> Decimal (numeric without
/// precision, or with a negative scale -> NumericText), float4/float8 ->
/// Float/Double, bool, date, time, timestamp, timestamptz, uuid,
/// json/jsonb -> Json, bytea -> Bytes, arrays -> Array of the element's
/// type; everything else (text, varchar, char, enums, interval, inet, timetz, …)
/// -> Text, read with `::text`.
pub fn column_type(base: &str, typmod: i32, elem: Option<&str>) -> ColumnType {
    if let Some(elem) = elem {
        return ColumnType::Array(Box::new(column_type(elem, typmod, None)));
    }
    match base {
        "int2" | "int4" => ColumnType::Int,
        "int8" => ColumnType::Long,
        "float4" => ColumnType::Float,
        "float8" => ColumnType::Double,
        "bool" => ColumnType::Bool,
        "numeric" => numeric_type(typmod),
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "timestamp" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        "uuid" => ColumnType::Uuid,
        "json" | "jsonb" => ColumnType::Json,
        "bytea" => ColumnType::Bytes,
        _ => ColumnType::Text,
    }
}

/// numeric's typmod is `((precision << 16) | (scale & 0x7ff)) + 4`, scale
/// sign-extended from 11 bits (Postgres 15 allows negative scales).
fn numeric_type(typmod: i32) -> ColumnType {
    if typmod < 4 {
        return ColumnType::NumericText;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let raw = t & 0x7ff;
    let scale = if raw & 0x400 != 0 { raw - 0x800 } else { raw };
    if scale < 0 || scale > precision || precision == 0 {
        return ColumnType::NumericText;
    }
    ColumnType::Decimal {
        precision: precision as u32,
        scale: scale as u32,
    }
}

/// The Postgres type a column is read as (the SELECT casts to it). A
/// `char(n)` is read as itself, not as text: its cast to text drops the
/// trailing blanks, which the value holds (and `postgres_cdc` carries).
fn read_type(col: &Column) -> String {
    let bpchar = is_bpchar(&col.sql_type);
    match &col.ty {
        ColumnType::Text if bpchar => "bpchar".into(),
        ColumnType::Array(item) if bpchar && **item == ColumnType::Text => "bpchar[]".into(),
        ty => cast_type(ty),
    }
}

/// `character(n)` (`format_type` of a `char(n)`), or an array of it.
pub fn is_bpchar(sql_type: &str) -> bool {
    sql_type.starts_with("character") && !sql_type.starts_with("character varying")
}

fn cast_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => "int4".into(),
        ColumnType::Long => "int8".into(),
        ColumnType::Float => "float4".into(),
        ColumnType::Double => "float8".into(),
        ColumnType::Bool => "bool".into(),
        ColumnType::Text
        | ColumnType::NumericText
        | ColumnType::Decimal { .. }
        | ColumnType::Json => "text".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Array(item) => format!("{}[]", cast_type(item)),
    }
}

/// Which column types a cursor can use: integers; timestamps for the timestamp.
pub fn cursor_type_ok(is_timestamp: bool, ty: &ColumnType) -> bool {
    if is_timestamp {
        matches!(ty, ColumnType::Timestamp | ColumnType::TimestampTz)
    } else {
        matches!(ty, ColumnType::Int | ColumnType::Long)
    }
}

#[derive(Debug, Clone, Copy)]
enum CursorKind {
    Int,
    Timestamp,
    TimestampTz,
}

struct PgTable {
    name: String,
    /// `"schema"."table"` or `(query)`, aliased `t` in every statement.
    from: String,
    columns: Vec<Column>,
    cursor: Vec<(String, CursorKind)>,
    key: Vec<Column>,
    fences: FenceState,
    commit_delay_ms: u64,
}

/// A batch read behind the fence, with what the fence decided (for logs).
pub struct PgBatch {
    pub rows: Vec<SourceRow>,
    /// The greatest cursor visible now.
    pub high_water: Option<Cursor>,
    /// The greatest cursor that may be published.
    pub watermark: Option<Cursor>,
    /// Why the oldest pending fence still waits, if one does.
    pub waiting: Option<FenceDecision>,
    /// Fences not cleared yet.
    pub pending_fences: usize,
}

pub struct PgSource {
    config: Postgres,
    client: Option<Client>,
    pub db_name: String,
    tables: Vec<PgTable>,
    clock: Instant,
}

/// Transactions running in this database (virtual transaction ids), except
/// this session and autovacuum, which never write rows.
const RUNNING_SQL: &str =
    "SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.granted \
       AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND l.pid <> pg_backend_pid() AND a.backend_type <> 'autovacuum worker'";

const SNAPSHOT_SQL: &str =
    "SELECT pg_snapshot_xmin(s)::text::int8, pg_snapshot_xmax(s)::text::int8 FROM pg_current_snapshot() AS s";

const ATTRIBUTES_SQL: &str = "SELECT a.attname::text, \
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE format_type(a.atttypid, a.atttypmod) END, \
       bt.typname::text, \
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, \
       et.typname::text, a.attnotnull \
     FROM pg_attribute a \
     JOIN pg_type t ON t.oid = a.atttypid \
     JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
     LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const PRIMARY_KEY_SQL: &str = "SELECT a.attname::text FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord";

impl PgSource {
    /// Connect as `application_name = syncline sql_poll <source>` unless the
    /// connection string sets one, so operators can find the poller in
    /// `pg_stat_activity`.
    pub async fn connect(url: &str, display: &str, source: &str) -> Result<PgSource> {
        let mut config = Postgres::parse(url).map_err(|e| {
            Error::config(format!(
                "{display} is not a valid Postgres connection string: {e}"
            ))
        })?;
        if config.config().get_application_name().is_none() {
            config
                .config_mut()
                .application_name(format!("syncline sql_poll {source}"));
        }
        let mut s = PgSource {
            config,
            client: None,
            db_name: String::new(),
            tables: Vec::new(),
            clock: Instant::now(),
        };
        s.reconnect(display).await?;
        let db: String = s
            .client()?
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| pg_error(e, format!("cannot query {display}")))?
            .get(0);
        s.db_name = db;
        Ok(s)
    }

    /// (Re)open the connection; pending fences stay valid (they describe
    /// the server's transactions, not this session).
    pub async fn reconnect(&mut self, display: &str) -> Result<()> {
        self.client = Some(self.config.connect(display).await?);
        Ok(())
    }

    fn client(&mut self) -> Result<&mut Client> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::transient("not connected to Postgres"))
    }

    /// Columns and primary key of a table, or of a query (through a
    /// temporary view created and rolled back; query columns are nullable).
    pub async fn introspect(&mut self, tc: &TableConfig) -> Result<(Vec<Column>, Vec<String>)> {
        let name = tc.entry_name();
        let db_name = self.db_name.clone();
        let client = self.client()?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error(e, "cannot start a transaction"))?;
        let relation = match (&tc.table, &tc.query) {
            (Some(table), _) => quote_table(table),
            (None, Some(query)) => {
                let view = "pg_temp.syncline_introspect";
                tx.batch_execute(&format!(
                    "CREATE TEMP VIEW syncline_introspect AS {}",
                    plain_query(query)
                ))
                .await
                .map_err(|e| pg_error(e, format!("the query of `{name}` is not a valid SELECT")))?;
                view.to_string()
            }
            (None, None) => return Err(Error::config(format!("`{name}`: set `table` or `query`"))),
        };
        let oid: Option<u32> = tx
            .query_one("SELECT to_regclass($1::text)::oid", &[&relation])
            .await
            .map_err(|e| pg_error(e, format!("cannot look up `{relation}`")))?
            .get(0);
        let oid = oid.ok_or_else(|| {
            Error::config(format!("table `{relation}` does not exist in database `{db_name}` (or is not visible to this user)"))
        })?;
        let attrs = tx
            .query(ATTRIBUTES_SQL, &[&oid])
            .await
            .map_err(|e| pg_error(e, format!("cannot read the columns of `{name}`")))?;
        let columns = attrs
            .iter()
            .map(|r| {
                let base: String = r.get(2);
                let elem: Option<String> = r.get(4);
                Column {
                    name: r.get(0),
                    sql_type: r.get(1),
                    ty: column_type(&base, r.get(3), elem.as_deref()),
                    nullable: tc.query.is_some() || !r.get::<_, bool>(5),
                }
            })
            .collect();
        let pk = tx
            .query(PRIMARY_KEY_SQL, &[&oid])
            .await
            .map_err(|e| pg_error(e, format!("cannot read the primary key of `{name}`")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.rollback()
            .await
            .map_err(|e| pg_error(e, "cannot end a transaction"))?;
        Ok((columns, pk))
    }

    /// Prepare reads for `plan` (table index = order of calls).
    pub fn add_table(&mut self, tc: &TableConfig, plan: &TablePlan) {
        let cursor = plan
            .cursor_columns
            .iter()
            .map(|c| {
                let kind = match plan.column(c).map(|c| &c.ty) {
                    Some(ColumnType::Timestamp) => CursorKind::Timestamp,
                    Some(ColumnType::TimestampTz) => CursorKind::TimestampTz,
                    _ => CursorKind::Int,
                };
                (c.clone(), kind)
            })
            .collect();
        self.tables.push(PgTable {
            name: plan.name.clone(),
            from: match (&tc.table, &tc.query) {
                (Some(t), _) => quote_table(t),
                (None, Some(q)) => subquery(q),
                (None, None) => unreachable!("config check requires table or query"),
            },
            columns: plan.schema.columns.clone(),
            cursor,
            key: plan.key_columns().into_iter().cloned().collect(),
            fences: FenceState::default(),
            commit_delay_ms: plan.commit_delay_ms,
        });
    }

    async fn running(client: &impl tokio_postgres::GenericClient) -> Result<Running> {
        Ok(client
            .query(RUNNING_SQL, &[])
            .await
            .map_err(|e| pg_error(e, "cannot list running transactions (pg_locks)"))?
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    /// One poll round of table `t`: update the fence, then read up to
    /// `limit` rows with `after < cursor <= W`, ordered by cursor.
    pub async fn read_batch(
        &mut self,
        t: usize,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<PgBatch> {
        let now_ms = self.clock.elapsed().as_millis() as u64;
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| Error::transient("not connected to Postgres"))?;
        let table = &mut self.tables[t];
        // Listed before the snapshot: a fence whose transactions are all
        // absent here finished before the snapshot, so their rows are in it.
        let before = Self::running(&*client).await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| pg_error(e, "cannot start a poll transaction"))?;
        let snap = tx
            .query_one(SNAPSHOT_SQL, &[])
            .await
            .map_err(|e| pg_error(e, "cannot read the snapshot"))?;
        let (xmin, xmax) = (snap.get::<_, i64>(0) as u64, snap.get::<_, i64>(1) as u64);
        // Listed after the snapshot: every transaction that could still
        // write a row at or below this snapshot's high water.
        let after_snapshot = Self::running(&tx).await?;
        let cursor_list = table
            .cursor
            .iter()
            .map(|(c, k)| cursor_expr(c, *k))
            .collect::<Vec<_>>()
            .join(", ");
        let not_null = table
            .cursor
            .iter()
            .map(|(c, _)| format!("t.{} IS NOT NULL", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let desc = table
            .cursor
            .iter()
            .map(|(c, _)| format!("t.{} DESC", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let hw_sql = format!(
            "SELECT {cursor_list} FROM {} AS t WHERE {not_null} ORDER BY {desc} LIMIT 1",
            table.from
        );
        let high_water = match tx.query_opt(&hw_sql, &[]).await.map_err(|e| {
            pg_error(e, {
                format!("cannot read the high water of `{}`", table.name)
            })
        })? {
            Some(row) => Some(read_cursor(&row, 0, &table.cursor)?),
            None => None,
        };

        let waiting = table.fences.clear(xmin, &before);
        if let Some(h) = &high_water {
            table.fences.push(xmax, h.clone(), now_ms);
        }
        table
            .fences
            .arm(&after_snapshot, now_ms, table.commit_delay_ms);
        let watermark = table.fences.watermark().cloned();

        let mut rows = Vec::new();
        if let Some(w) = &watermark {
            if after.is_none_or(|a| a < w) {
                let cols = table
                    .columns
                    .iter()
                    .map(|c| format!("t.{}::{}", quote_ident(&c.name), read_type(c)))
                    .collect::<Vec<_>>();
                let tuple = |offset: usize| {
                    let ps = table
                        .cursor
                        .iter()
                        .enumerate()
                        .map(|(i, (_, k))| format!("${}::{}", offset + i + 1, param_type(*k)));
                    format!("({})", ps.collect::<Vec<_>>().join(", "))
                };
                let cursor_cols = format!(
                    "({})",
                    table
                        .cursor
                        .iter()
                        .map(|(c, _)| format!("t.{}", quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let order = table
                    .cursor
                    .iter()
                    .map(|(c, _)| format!("t.{}", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
                let mut filter = format!("{cursor_cols} <= {}", tuple(0));
                params.extend(bind(w, &table.cursor)?);
                if let Some(a) = after {
                    filter.push_str(&format!(
                        " AND {cursor_cols} > {}",
                        tuple(table.cursor.len())
                    ));
                    params.extend(bind(a, &table.cursor)?);
                }
                let sql = format!(
                    "SELECT {}, {cursor_list} FROM {} AS t WHERE {filter} ORDER BY {order} LIMIT {limit}",
                    cols.join(", "),
                    table.from
                );
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let result = tx
                    .query(&sql, &refs)
                    .await
                    .map_err(|e| pg_error(e, format!("cannot read `{}`", table.name)))?;
                for row in &result {
                    let mut values = Vec::with_capacity(table.columns.len());
                    for (i, c) in table.columns.iter().enumerate() {
                        values.push((
                            c.name.clone(),
                            read_value(row, i, &c.ty)
                                .map_err(|e| column_error(e, &table.name, &c.name))?,
                        ));
                    }
                    rows.push(SourceRow {
                        cursor: read_cursor(row, table.columns.len(), &table.cursor)?,
                        values,
                    });
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| pg_error(e, "cannot end the poll transaction"))?;
        Ok(PgBatch {
            rows,
            high_water,
            watermark,
            waiting,
            pending_fences: table.fences.pending(),
        })
    }

    /// Call `f` with the key values of every row of table `t`, streaming.
    pub async fn scan_keys(
        &mut self,
        t: usize,
        mut f: impl FnMut(Vec<(String, Value)>),
    ) -> Result<()> {
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| Error::transient("not connected to Postgres"))?;
        let table = &self.tables[t];
        let cols = table
            .key
            .iter()
            .map(|c| format!("t.{}::{}", quote_ident(&c.name), read_type(c)))
            .collect::<Vec<_>>();
        let sql = format!("SELECT {} FROM {} AS t", cols.join(", "), table.from);
        let stream = client
            .query_raw(&sql, Vec::<String>::new())
            .await
            .map_err(|e| pg_error(e, format!("cannot scan the keys of `{}`", table.name)))?;
        pin_mut!(stream);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| pg_error(e, format!("cannot scan the keys of `{}`", table.name)))?
        {
            let mut key = Vec::with_capacity(table.key.len());
            for (i, c) in table.key.iter().enumerate() {
                key.push((
                    c.name.clone(),
                    read_value(&row, i, &c.ty)
                        .map_err(|e| column_error(e, &table.name, &c.name))?,
                ));
            }
            f(key);
        }
        Ok(())
    }
}

fn column_error(e: Error, table: &str, column: &str) -> Error {
    Error::new(e.kind(), format!("`{table}`.`{column}`: {e}"))
}

fn cursor_expr(col: &str, kind: CursorKind) -> String {
    format!("t.{}::{}", quote_ident(col), param_type(kind))
}

fn param_type(kind: CursorKind) -> &'static str {
    match kind {
        CursorKind::Int => "int8",
        CursorKind::Timestamp => "timestamp",
        CursorKind::TimestampTz => "timestamptz",
    }
}

/// Cursor values are integers: ids, or timestamps in microseconds since the epoch.
fn read_cursor(row: &Row, offset: usize, kinds: &[(String, CursorKind)]) -> Result<Cursor> {
    let mut parts = Vec::with_capacity(kinds.len());
    for (i, (name, kind)) in kinds.iter().enumerate() {
        let bad = |e: tokio_postgres::Error| {
            Error::data(format!("cursor column `{name}` cannot be read")).with_source(e)
        };
        parts.push(CursorPart::Int(match kind {
            CursorKind::Int => row.try_get::<_, i64>(offset + i).map_err(bad)?,
            CursorKind::Timestamp | CursorKind::TimestampTz => {
                row.try_get::<_, PgTimestamp>(offset + i).map_err(bad)?.0
            }
        }));
    }
    Ok(Cursor(parts))
}

fn bind(
    cursor: &Cursor,
    kinds: &[(String, CursorKind)],
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>> {
    cursor
        .0
        .iter()
        .zip(kinds)
        .map(|(part, (name, kind))| {
            let CursorPart::Int(v) = part else {
                return Err(Error::data(format!(
                    "stored cursor value {part:?} of `{name}` is not an integer"
                )));
            };
            Ok(match kind {
                CursorKind::Int => Box::new(*v) as Box<dyn ToSql + Sync + Send>,
                CursorKind::Timestamp | CursorKind::TimestampTz => Box::new(PgTimestamp(*v)),
            })
        })
        .collect()
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<Option<T>> {
    row.try_get::<_, Option<T>>(i)
        .map_err(|e| Error::data("cannot read the value").with_source(e))
}

/// One value as the Avro value of its column type (`Value::Null` for NULL).
pub fn read_value(row: &Row, i: usize, ty: &ColumnType) -> Result<Value> {
    fn scalar<'a, T: FromSql<'a>>(
        row: &'a Row,
        i: usize,
        f: impl Fn(T) -> Result<Value>,
    ) -> Result<Value> {
        get::<T>(row, i)?.map(f).unwrap_or(Ok(Value::Null))
    }
    fn array<'a, T: FromSql<'a>>(
        row: &'a Row,
        i: usize,
        f: impl Fn(T) -> Result<Value>,
    ) -> Result<Value> {
        match get::<Vec<Option<T>>>(row, i)? {
            None => Ok(Value::Null),
            Some(items) => Ok(Value::Array(
                items
                    .into_iter()
                    .map(|x| x.map(&f).transpose().map(nullable_value))
                    .collect::<Result<_>>()?,
            )),
        }
    }
    macro_rules! both {
        ($reader:ident, $item:expr) => {
            match $item {
                ColumnType::Int => $reader::<i32>(row, i, |v| Ok(Value::Int(v))),
                ColumnType::Long => $reader::<i64>(row, i, |v| Ok(Value::Long(v))),
                ColumnType::Float => $reader::<f32>(row, i, |v| Ok(Value::Float(v))),
                ColumnType::Double => $reader::<f64>(row, i, |v| Ok(Value::Double(v))),
                ColumnType::Bool => $reader::<bool>(row, i, |v| Ok(Value::Boolean(v))),
                ColumnType::Text | ColumnType::NumericText | ColumnType::Json => {
                    $reader::<String>(row, i, |v| Ok(Value::String(v)))
                }
                ColumnType::Decimal { precision, scale } => {
                    $reader::<String>(row, i, |v| decimal_value(&v, *precision, *scale))
                }
                ColumnType::Date => $reader::<PgDate>(row, i, |v| Ok(Value::Date(v.0))),
                ColumnType::Time => $reader::<PgTime>(row, i, |v| Ok(Value::TimeMicros(v.0))),
                ColumnType::Timestamp => {
                    $reader::<PgTimestamp>(row, i, |v| Ok(Value::LocalTimestampMicros(v.0)))
                }
                ColumnType::TimestampTz => {
                    $reader::<PgTimestamp>(row, i, |v| Ok(Value::TimestampMicros(v.0)))
                }
                ColumnType::Uuid => $reader::<uuid::Uuid>(row, i, |v| Ok(Value::Uuid(v))),
                ColumnType::Bytes => $reader::<Vec<u8>>(row, i, |v| Ok(Value::Bytes(v))),
                ColumnType::Array(_) => Err(Error::data("arrays of arrays are not supported")),
            }
        };
    }
    match ty {
        ColumnType::Array(item) => both!(array, item.as_ref()),
        other => both!(scalar, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_postgres_types() {
        assert_eq!(column_type("int2", -1, None), ColumnType::Int);
        assert_eq!(column_type("int8", -1, None), ColumnType::Long);
        assert_eq!(
            column_type("numeric", ((12 << 16) | 2) + 4, None),
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(column_type("numeric", -1, None), ColumnType::NumericText);
        // numeric(3,-2): negative scale, carried as text
        assert_eq!(
            column_type("numeric", ((3 << 16) | (0x800 - 2)) + 4, None),
            ColumnType::NumericText
        );
        assert_eq!(
            column_type("_int4", -1, Some("int4")),
            ColumnType::Array(Box::new(ColumnType::Int))
        );
        assert_eq!(
            column_type("_text", -1, Some("text")),
            ColumnType::Array(Box::new(ColumnType::Text))
        );
        assert_eq!(column_type("jsonb", -1, None), ColumnType::Json);
        assert_eq!(column_type("interval", -1, None), ColumnType::Text);
        assert_eq!(
            cast_type(&ColumnType::Array(Box::new(ColumnType::Decimal {
                precision: 5,
                scale: 1
            }))),
            "text[]"
        );
        let col = |sql_type: &str, ty: ColumnType| Column {
            name: "c".into(),
            ty,
            nullable: true,
            sql_type: sql_type.into(),
        };
        assert_eq!(read_type(&col("character(5)", ColumnType::Text)), "bpchar");
        assert_eq!(
            read_type(&col(
                "character(2)[]",
                ColumnType::Array(Box::new(ColumnType::Text))
            )),
            "bpchar[]"
        );
        assert_eq!(
            read_type(&col("character varying(5)", ColumnType::Text)),
            "text"
        );
    }

    #[test]
    fn cursor_columns_are_integers_or_timestamps() {
        assert!(cursor_type_ok(true, &ColumnType::TimestampTz));
        assert!(!cursor_type_ok(true, &ColumnType::Date));
        assert!(cursor_type_ok(false, &ColumnType::Int));
        assert!(!cursor_type_ok(false, &ColumnType::Text));
    }
}
