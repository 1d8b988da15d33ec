//! A throwaway MariaDB server: `mariadb-install-db` into a fresh directory,
//! `mariadbd` on its own port with the options a test gives (TLS
//! certificates, binlog settings), killed and removed on drop. The
//! machine's server (scripts/services.sh) stays untouched.
//!
//! `mariadbd` refuses to run as root: when the tests run as root, it runs
//! as the `mysql` user, in a directory that user owns.

use super::pg_server::{is_root, server_dir};
use mysql_async::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MyServer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl MyServer {
    /// Start a server; `extra` are more `--name=value` options.
    pub async fn start(extra: &[String]) -> MyServer {
        let user = if is_root() {
            "mysql".to_string()
        } else {
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_string()
        };
        let dir = server_dir("my", &user);
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("cannot run mariadb-install-db (make tools)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args([
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-size=64M",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mariadbd");
        let mut server = MyServer { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) = mysql_async::Conn::from_url(server.root_url()).await {
                let _ = c.disconnect().await;
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("mariadbd exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not come up in 60 s:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server
    }

    /// `mysql://root@127.0.0.1:PORT` (no password, plain TCP).
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run statements as root.
    pub async fn exec(&self, sql: &str) {
        let mut c = mysql_async::Conn::from_url(self.root_url()).await.unwrap();
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.disconnect().await;
    }

    /// `kill -STOP` (`true`) or `kill -CONT` (`false`): the server stops
    /// answering while its connections stay open, as behind a half-open
    /// connection.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for MyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
