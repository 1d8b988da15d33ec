//! A throwaway Postgres server with `wal_level = logical`, for the CDC
//! tests: initdb into a fresh directory, its own port, stopped and removed
//! on drop. The machine's server stays untouched (it runs with
//! `wal_level = replica`), and a test may set its own WAL limits (the
//! lost-slot test needs a tiny `max_slot_wal_keep_size`).
//!
//! Postgres refuses to run as root: when the tests run as root, initdb and
//! the server run as the `postgres` user (`runuser`), in a directory it owns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the Postgres binaries are: `$SYNCLINE_PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin that has initdb.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SYNCLINE_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: install the postgresql package (make tools)")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `bin args...`, as the postgres user when we are root.
fn pg_command(bin: &str, args: &[&str]) -> Command {
    let path = pg_bin().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path).args(args);
        c
    } else {
        let mut c = Command::new(path);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory for a throwaway server's files, `syncline-<prefix>-…`
/// under the system temp dir, owned by `user` when the tests run as root
/// (the servers refuse to run as root). The caller removes it.
pub fn server_dir(prefix: &str, user: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "syncline-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", &format!("{user}:{user}")]).arg(&dir);
                c
            },
            "chown",
        );
    }
    dir
}

pub struct PgServer {
    dir: PathBuf,
    port: u16,
}

impl PgServer {
    /// Start a server with logical replication on; `extra` are more
    /// `name=value` settings (they override the defaults here).
    pub fn start(extra: &[&str]) -> PgServer {
        let dir = server_dir("pg", "postgres");
        let data = dir.join("data");
        let data_s = data.to_str().unwrap();
        run(
            pg_command(
                "initdb",
                &[
                    "-D",
                    data_s,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            "initdb",
        );
        let port = super::free_port();
        let mut settings = vec![
            format!("port={port}"),
            "listen_addresses='127.0.0.1'".into(),
            format!("unix_socket_directories='{}'", dir.display()),
            "wal_level=logical".into(),
            "max_replication_slots=20".into(),
            "max_wal_senders=20".into(),
            "wal_sender_timeout=5s".into(),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "shared_buffers=32MB".into(),
            "max_wal_size=64MB".into(),
            "min_wal_size=32MB".into(),
            "max_connections=60".into(),
        ];
        settings.extend(extra.iter().map(|s| s.to_string()));
        let conf = settings.join("\n") + "\n";
        let conf_path = data.join("postgresql.auto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&conf_path);
                    c
                },
                "chown",
            );
        }
        let log = dir.join("server.log");
        run(
            pg_command(
                "pg_ctl",
                &[
                    "-D",
                    data_s,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ),
            "pg_ctl start",
        );
        PgServer { dir, port }
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create database `name` and return its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let admin = super::pg_connect(&self.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        self.url(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = pg_command(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
