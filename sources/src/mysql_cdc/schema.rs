//! Captured tables and their shapes, from `information_schema`: the
//! patterns of the file resolved to tables, each table's columns mapped to
//! [`ColumnType`]s (the mapping of docs/types.md), its key chosen.
//!
//! The snapshot and the stream share one [`Table`] per table, so a row read
//! by the snapshot and the same row streamed later have the same schema
//! version. After DDL the stream reads the shape again (see
//! [`super::stream`]): a changed shape is a new schema version.
//!
//! Nullability: every non-key column is nullable in the schema, whatever
//! the table says, as `postgres_cdc` does, so adding or dropping a `NOT
//! NULL` column later is a compatible change.

use super::config::MysqlTableConfig;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use syncline_core::error::mysql::mysql_error;
use syncline_core::schema::avro_name;
use syncline_core::{Column, ColumnType, Error, Result, TableSchema};

/// How a column's raw values are read, beyond its [`ColumnType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// `enum(...)`: the binlog carries the label's index (from 1).
    Enum(Vec<String>),
    /// `set(...)`: the binlog carries a bit mask of the labels.
    Set(Vec<String>),
    /// `binary(n)`: the binlog drops trailing zero bytes; put them back.
    FixedBinary(usize),
    /// `timestamp`: seconds since the epoch in the binlog; a UTC datetime
    /// in the snapshot (its session runs at `time_zone = '+00:00'`).
    Timestamp,
    /// `year`: one byte in the binlog, 0 for `0000` and else the year less
    /// 1900, which the reader turns into text by adding 1900 to both.
    Year,
}

/// A column of a captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyColumn {
    pub name: String,
    pub ty: ColumnType,
    pub kind: Kind,
    /// `COLUMN_TYPE`, e.g. `int(10) unsigned`, `varchar(40)`.
    pub sql_type: String,
    /// A text column in `latin1`: the binlog carries its bytes in that
    /// character set (the snapshot's session converts them to UTF-8).
    pub latin1: bool,
}

/// One captured table at run time.
pub struct Table {
    pub database: String,
    pub name: String,
    pub topic: String,
    pub key: Vec<String>,
    /// The file's `key`, if it names one (kept for reading the shape again).
    pub configured_key: Option<Vec<String>>,
    pub columns: Vec<MyColumn>,
    pub schema: TableSchema,
}

impl Table {
    /// `database.table`, as the progress and the logs name it.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.database, self.name)
    }

    /// `` `database`.`table` ``
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.database), quote(&self.name))
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// `` `name` `` with backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `*` patterns as `LIKE` patterns (`%` and `_` escaped).
fn like(pattern: &str) -> String {
    pattern
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
        .replace('*', "%")
}

/// The topic of a table from its entry's template.
fn topic_of(template: &str, database: &str, table: &str) -> String {
    template
        .replace("{database}", database)
        .replace("{table}", table)
}

/// Every table the entries name, each once (the first entry that names it
/// wins), with its columns, key and schema.
pub async fn resolve_tables(
    conn: &mut Conn,
    source: &str,
    entries: &[MysqlTableConfig],
) -> Result<Vec<Table>> {
    let mut out: Vec<Table> = Vec::new();
    for entry in entries {
        let (db, name) = entry
            .table
            .split_once('.')
            .ok_or_else(|| Error::config(format!("`{}` is not `database.table`", entry.table)))?;
        let found: Vec<(String, String)> = conn
            .exec(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA LIKE ? AND TABLE_NAME LIKE ? AND TABLE_TYPE = 'BASE TABLE' \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME",
                (like(db), like(name)),
            )
            .await
            .map_err(|e| mysql_error(e, "cannot list the tables to capture"))?;
        if found.is_empty() {
            return Err(Error::config(format!(
                "no table matches `{}` (check the name and that the user may SELECT it)",
                entry.table
            )));
        }
        for (database, table) in found {
            if out
                .iter()
                .any(|t| t.database == database && t.name == table)
            {
                continue;
            }
            let topic = topic_of(&entry.topic, &database, &table);
            let t =
                read_table(conn, source, &database, &table, entry.key.as_deref(), topic).await?;
            out.push(t);
        }
    }
    Ok(out)
}

/// The current shape of one table. `key`: the file's key columns, else the
/// primary key; a table with neither is refused with the fix.
pub async fn read_table(
    conn: &mut Conn,
    source: &str,
    database: &str,
    table: &str,
    key: Option<&[String]>,
    topic: String,
) -> Result<Table> {
    let name = format!("{database}.{table}");
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_OCTET_LENGTH, \
             LOWER(CHARACTER_SET_NAME) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|e| mysql_error(e, format!("cannot read the columns of `{name}`")))?;
    let mut columns = Vec::with_capacity(rows.len());
    for mut r in rows {
        let col: String = r.take(0).unwrap_or_default();
        let data_type: String = r.take(1).unwrap_or_default();
        let column_type: String = r.take(2).unwrap_or_default();
        let (precision, scale, octets): (Option<u64>, Option<u64>, Option<u64>) = (
            r.take(3).flatten(),
            r.take(4).flatten(),
            r.take(5).flatten(),
        );
        let charset: Option<String> = r.take(6).flatten();
        let (ty, kind) = column_type_of(&data_type, &column_type, precision, scale, octets)
            .map_err(|why| Error::config(format!("column `{col}` of `{name}`: {why}")))?;
        let latin1 = match charset.as_deref() {
            None | Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "binary") => false,
            Some("latin1") => true,
            Some(other) => {
                return Err(Error::config(format!(
                    "column `{col}` of `{name}` is in character set `{other}`, which mysql_cdc cannot read from the binlog: \
                     convert it (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4); utf8mb4, utf8mb3, ascii and latin1 are read"
                )))
            }
        };
        columns.push(MyColumn {
            name: col,
            ty,
            kind,
            sql_type: column_type,
            latin1,
        });
    }
    let key_given = key.map(<[String]>::to_vec);
    let key = match key {
        Some(k) => k.to_vec(),
        None => {
            let pk: Vec<String> = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                    (database, table),
                )
                .await
                .map_err(|e| mysql_error(e, format!("cannot read the primary key of `{name}`")))?;
            if pk.is_empty() {
                return Err(Error::config(format!(
                    "`{name}` has no primary key: give the entry `key: [columns]` that identify a row (a UNIQUE index on NOT NULL columns)"
                )));
            }
            pk
        }
    };
    for k in &key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(Error::config(format!(
                "key column `{k}` is not a column of `{name}`"
            )));
        }
    }
    let schema = TableSchema {
        namespace: format!("syncline.{}", avro_name(source)),
        name: avro_name(table),
        columns: columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                ty: c.ty.clone(),
                nullable: !key.contains(&c.name),
                sql_type: c.sql_type.clone(),
            })
            .collect(),
        primary_key: key.clone(),
    };
    Ok(Table {
        database: database.to_string(),
        name: table.to_string(),
        topic,
        key,
        configured_key: key_given,
        columns,
        schema,
    })
}

/// A column's type (docs/types.md, "MySQL and MariaDB sources"). The error
/// says why a type cannot be captured.
pub fn column_type_of(
    data_type: &str,
    column_type: &str,
    precision: Option<u64>,
    scale: Option<u64>,
    octets: Option<u64>,
) -> std::result::Result<(ColumnType, Kind), String> {
    let unsigned = column_type.contains("unsigned");
    let plain = |t: ColumnType| Ok((t, Kind::Plain));
    // MariaDB's own temporal format of 5.3 (`/* mariadb-5.3 */`, tables
    // made with mysql56_temporal_format=OFF): with a fractional part its
    // binlog form has no metadata saying its length, and a reader that
    // does not know the column's precision misreads the rest of the row.
    if column_type.contains("mariadb-5.3") && column_type.contains('(') {
        return Err(format!(
            "`{column_type}` is in MariaDB 5.3's temporal format with fractional seconds, which the binlog carries without \
             its length: convert the table to the current format (SET GLOBAL mysql56_temporal_format = ON, then \
             ALTER TABLE ... FORCE)"
        ));
    }
    match data_type {
        "tinyint" | "smallint" | "mediumint" => plain(ColumnType::Int),
        "year" => Ok((ColumnType::Int, Kind::Year)),
        "int" | "integer" if unsigned => plain(ColumnType::Long),
        "int" | "integer" => plain(ColumnType::Int),
        "bigint" if unsigned => plain(ColumnType::Decimal {
            precision: 20,
            scale: 0,
        }),
        "bigint" => plain(ColumnType::Long),
        "decimal" | "numeric" => plain(ColumnType::Decimal {
            precision: precision.unwrap_or(10) as u32,
            scale: scale.unwrap_or(0) as u32,
        }),
        "float" => plain(ColumnType::Float),
        "double" | "real" => plain(ColumnType::Double),
        "bit" if column_type == "bit(1)" => plain(ColumnType::Bool),
        "bit" => plain(ColumnType::Bytes),
        "date" => plain(ColumnType::Date),
        "datetime" => plain(ColumnType::Timestamp),
        "timestamp" => Ok((ColumnType::TimestampTz, Kind::Timestamp)),
        "time" => plain(ColumnType::Time),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            plain(ColumnType::Text)
        }
        "json" => plain(ColumnType::Json),
        "enum" => Ok((ColumnType::Text, Kind::Enum(labels(column_type, "enum")?))),
        "set" => Ok((ColumnType::Text, Kind::Set(labels(column_type, "set")?))),
        "binary" => Ok((
            ColumnType::Bytes,
            Kind::FixedBinary(octets.unwrap_or(0) as usize),
        )),
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry" | "point"
        | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => plain(ColumnType::Bytes),
        other => Err(format!(
            "type `{other}` cannot be captured from the binlog yet (mysql_cdc reads numbers, text, enum, set, binary, bit, json, geometry, date and time types)"
        )),
    }
}

/// The labels of `enum('a','b''c')` / `set(...)`.
fn labels(column_type: &str, word: &str) -> std::result::Result<Vec<String>, String> {
    let inner = column_type
        .strip_prefix(word)
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.rsplit_once(')'))
        .map(|(s, _)| s)
        .ok_or_else(|| format!("cannot read the labels of `{column_type}`"))?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        match chars.next() {
            None => break,
            Some('\'') => {
                let mut label = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated label in `{column_type}`")),
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            label.push('\'');
                        }
                        Some('\'') => break,
                        Some('\\') => {
                            if let Some(c) = chars.next() {
                                label.push(c);
                            }
                        }
                        Some(c) => label.push(c),
                    }
                }
                out.push(label);
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_set_labels_are_read_with_their_quotes() {
        assert_eq!(
            labels("enum('a','b''c','d,e')", "enum").unwrap(),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(labels("set('x','y')", "set").unwrap(), vec!["x", "y"]);
        assert!(labels("enum('a", "enum").is_err());
    }

    #[test]
    fn types_map_by_range_not_by_name() {
        let t = |d: &str, c: &str| column_type_of(d, c, Some(10), Some(2), Some(16)).unwrap().0;
        assert_eq!(t("int", "int(11)"), ColumnType::Int);
        assert_eq!(t("int", "int(10) unsigned"), ColumnType::Long);
        assert_eq!(
            t("bigint", "bigint(20) unsigned"),
            ColumnType::Decimal {
                precision: 20,
                scale: 0
            }
        );
        assert_eq!(
            t("decimal", "decimal(10,2)"),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(t("bit", "bit(1)"), ColumnType::Bool);
        assert_eq!(t("bit", "bit(12)"), ColumnType::Bytes);
        assert_eq!(t("tinyint", "tinyint(1)"), ColumnType::Int);
        assert_eq!(t("timestamp", "timestamp(6)"), ColumnType::TimestampTz);
        assert!(column_type_of("uuid", "uuid", None, None, None)
            .unwrap_err()
            .contains("`uuid` cannot be captured"));
        // MariaDB 5.3's format: read without a fraction, refused with one
        assert_eq!(
            t("timestamp", "timestamp /* mariadb-5.3 */"),
            ColumnType::TimestampTz
        );
        assert!(column_type_of(
            "datetime",
            "datetime(3) /* mariadb-5.3 */",
            None,
            None,
            None
        )
        .unwrap_err()
        .contains("ALTER TABLE ... FORCE"));
    }

    #[test]
    fn like_patterns_escape_what_like_means() {
        assert_eq!(like("shop_1.*"), "shop\\_1.%");
        assert_eq!(like("a%b"), "a\\%b");
    }
}
