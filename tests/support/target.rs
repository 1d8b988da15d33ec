//! A database sink's target, as the shared sink scenarios see it: how to
//! name it in a pipeline file, and how to read back what the sink wrote
//! (the `items` rows, the committed offsets, the tombstones). One kind per
//! database sink; a scenario runs against each.

use super::{PgDb, TempDir};
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub enum Target {
    Postgres {
        db: PgDb,
        client: tokio::sync::OnceCell<tokio_postgres::Client>,
    },
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    Mysql(MyDb),
}

/// The machine's MariaDB (127.0.0.1:3306, root without a password), or
/// `$SYNCLINE_TEST_MYSQL`.
pub fn mysql_admin_url() -> String {
    std::env::var("SYNCLINE_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A throwaway MySQL database with a unique name, dropped on drop.
pub struct MyDb {
    name: String,
}

impl MyDb {
    pub async fn create(prefix: &str) -> MyDb {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "syncline_{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut c = mysql_async::Conn::from_url(mysql_admin_url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to MySQL at {}: {e}", mysql_admin_url()));
        c.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .unwrap();
        let _ = c.disconnect().await;
        MyDb { name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", mysql_admin_url(), self.name)
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(self.url()).await.unwrap()
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = mysql_async::Conn::from_url(mysql_admin_url()).await {
                    let _ = c
                        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await;
                    let _ = c.disconnect().await;
                }
            })
        })
        .join();
    }
}

impl Target {
    pub async fn postgres(name: &str) -> Target {
        Target::Postgres {
            db: PgDb::create(name).await,
            client: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn mysql(name: &str) -> Target {
        Target::Mysql(MyDb::create(name).await)
    }

    pub fn sqlite(name: &str) -> Target {
        let dir = TempDir::new(&format!("sqlite-{name}"));
        let path = dir.path().join("target.db");
        Target::Sqlite { _dir: dir, path }
    }

    /// How the sink reaches the target, as YAML lines (each followed by a
    /// newline, indented by `indent`).
    pub fn reach_lines(&self, indent: &str) -> String {
        match self {
            Target::Postgres { db, .. } => format!("{indent}connection: {}\n", db.url()),
            Target::Sqlite { path, .. } => format!("{indent}path: {}\n", path.display()),
            Target::Mysql(db) => format!("{indent}connection: {}\n", db.url()),
        }
    }

    /// [`Self::reach_lines`] after the sink's `type`.
    pub fn sink_lines(&self, indent: &str) -> String {
        format!(
            "{indent}type: {}\n{}",
            self.kind(),
            self.reach_lines(indent)
        )
    }

    async fn pg(&self) -> &tokio_postgres::Client {
        let Target::Postgres { db, client } = self else {
            unreachable!("not a Postgres target")
        };
        client.get_or_init(|| db.client()).await
    }

    /// The kind of sink, as in `type:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Postgres { .. } => "postgres",
            Target::Sqlite { .. } => "sqlite",
            Target::Mysql(_) => "mysql",
        }
    }

    fn sqlite_read(&self) -> Option<rusqlite::Connection> {
        let Target::Sqlite { path, .. } = self else {
            return None;
        };
        // Before the sink made the file there is nothing to read.
        let c =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        Some(c)
    }

    /// Records whose effect is committed: the sum of the stored next offsets.
    pub async fn consumed(&self, group: &str) -> i64 {
        const SUM: &str = "SELECT coalesce(sum(next_offset), 0)";
        match self {
            Target::Postgres { .. } => self
                .pg()
                .await
                .query_one(
                    &format!("{SUM}::bigint FROM syncline_offsets WHERE group_id = $1"),
                    &[&group],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0),
            Target::Sqlite { .. } => self
                .sqlite_read()
                .and_then(|c| {
                    c.query_row(
                        &format!("{SUM} FROM syncline_offsets WHERE group_id = ?1"),
                        [group],
                        |r| r.get(0),
                    )
                    .ok()
                })
                .unwrap_or(0),
            Target::Mysql(db) => {
                let Ok(mut c) = mysql_async::Conn::from_url(db.url()).await else {
                    return 0;
                };
                let n: Option<i64> = c
                    .exec_first(
                        "SELECT CAST(coalesce(sum(next_offset), 0) AS SIGNED) FROM syncline_offsets WHERE group_id = ?",
                        (group,),
                    )
                    .await
                    .ok()
                    .flatten();
                let _ = c.disconnect().await;
                n.unwrap_or(0)
            }
        }
    }

    /// `id -> v` of a table of the `items` shape.
    pub async fn rows(&self, table: &str) -> BTreeMap<i64, String> {
        let sql = format!("SELECT id, v FROM \"{table}\"");
        match self {
            Target::Mysql(db) => {
                let mut c = db.conn().await;
                let rows: Vec<(i64, String)> = c
                    .query(format!("SELECT id, v FROM `{table}`"))
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                rows.into_iter().collect()
            }
            Target::Postgres { .. } => self
                .pg()
                .await
                .query(&sql, &[])
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            Target::Sqlite { .. } => {
                let c = self.sqlite_read().expect("the sink made the file");
                let mut stmt = c.prepare(&sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        }
    }

    /// Run `sql` (statements the three databases share) on the target.
    pub async fn exec(&self, sql: &str) {
        match self {
            Target::Mysql(db) => {
                let mut c = db.conn().await;
                c.query_drop(sql).await.unwrap();
                let _ = c.disconnect().await;
            }
            Target::Postgres { .. } => self.pg().await.batch_execute(sql).await.unwrap(),
            Target::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                c.execute_batch(sql).unwrap();
            }
        }
    }

    /// The declared type (lower case) of `table.column` and whether it
    /// takes NULL; `None` when there is no such column.
    pub async fn column(&self, table: &str, column: &str) -> Option<(String, bool)> {
        match self {
            Target::Mysql(db) => {
                let mut c = db.conn().await;
                let row: Option<(String, String)> = c
                    .exec_first(
                        "SELECT CAST(COLUMN_TYPE AS CHAR), IS_NULLABLE FROM information_schema.COLUMNS \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
                        (table, column),
                    )
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                row.map(|(t, n)| (t.to_lowercase(), n == "YES"))
            }
            Target::Postgres { .. } => self
                .pg()
                .await
                .query_opt(
                    "SELECT format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute \
                     WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped",
                    &[&table, &column],
                )
                .await
                .unwrap()
                .map(|r| (r.get::<_, String>(0).to_lowercase(), r.get(1))),
            Target::Sqlite { .. } => {
                let c = self.sqlite_read().expect("the sink made the file");
                c.query_row(
                    "SELECT type, \"notnull\" = 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| Ok((r.get::<_, String>(0)?.to_lowercase(), r.get(1)?)),
                )
                .ok()
            }
        }
    }

    /// The rows of `table` (ordered by `id`), each of `columns` as the
    /// database's text for it.
    pub async fn texts(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        match self {
            Target::Mysql(db) => {
                let list: Vec<String> = columns
                    .iter()
                    .map(|c| format!("CAST(`{c}` AS CHAR)"))
                    .collect();
                let mut c = db.conn().await;
                let rows: Vec<mysql_async::Row> = c
                    .query(format!(
                        "SELECT {} FROM `{table}` ORDER BY id",
                        list.join(", ")
                    ))
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                rows.into_iter()
                    .map(|r| (0..columns.len()).map(|i| r.get(i).unwrap()).collect())
                    .collect()
            }
            Target::Postgres { .. } => {
                let list: Vec<String> = columns.iter().map(|c| format!("\"{c}\"::text")).collect();
                self.pg()
                    .await
                    .query(
                        &format!("SELECT {} FROM \"{table}\" ORDER BY id", list.join(", ")),
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
            Target::Sqlite { .. } => {
                let list: Vec<String> = columns
                    .iter()
                    .map(|c| format!("CAST(\"{c}\" AS TEXT)"))
                    .collect();
                let c = self.sqlite_read().expect("the sink made the file");
                let mut stmt = c
                    .prepare(&format!(
                        "SELECT {} FROM \"{table}\" ORDER BY id",
                        list.join(", ")
                    ))
                    .unwrap();
                stmt.query_map([], |r| (0..columns.len()).map(|i| r.get(i)).collect())
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        }
    }

    /// The positions of the tombstones, in key order.
    pub async fn tombstones(&self) -> Vec<Vec<u8>> {
        let sql = "SELECT position FROM syncline_tombstones ORDER BY key";
        match self {
            Target::Mysql(db) => {
                let mut c = db.conn().await;
                let rows: Vec<Vec<u8>> = c
                    .query("SELECT position FROM syncline_tombstones ORDER BY `key`")
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                rows
            }
            Target::Postgres { .. } => self
                .pg()
                .await
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            Target::Sqlite { .. } => {
                let c = self.sqlite_read().expect("the sink made the file");
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        }
    }
}
