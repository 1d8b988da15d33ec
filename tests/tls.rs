//! TLS to every database: Postgres (the `postgres` sink, `sql_poll`,
//! `postgres_cdc` and its replication connection through libpq) and
//! MariaDB (the `mysql` sink), against throwaway servers with a certificate
//! the test creates (`support::certs`: a CA, a server certificate for
//! `localhost` only, an unrelated CA).
//!
//! The servers let syncline's user in over TLS only (Postgres `hostssl` and
//! `hostnossl ... reject`; MariaDB `REQUIRE SSL`), so a pipeline that syncs
//! proves every one of its connections was encrypted; the modes are then
//! checked one by one: what each verifies, what each refuses, and that
//! `require` and stronger never fall back to plain TCP on a server without
//! TLS (a second throwaway server, TLS off).

mod support;

use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::time::Duration;
use support::certs::Certs;
use support::changes::{expected, items_table, workload, Producer};
use support::my_server::MyServer;
use support::pg_server::PgServer;
use support::{pg_connect, wait_until, Stack, SynclineRun, TempDir};
use syncline_core::connect::mysql::Mysql;
use syncline_core::connect::postgres::Postgres;
use syncline_core::kafka::KafkaConfig;
use syncline_core::registry::RegistryConfig;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_runtime::Component;
use syncline_sinks::mysql::MysqlSinkConfig;

/// A Postgres server with TLS on, where role `app` (superuser, replication)
/// may connect over TLS only and `postgres` over anything.
async fn pg_tls_only(certs: &Certs) -> PgServer {
    let key = certs.key_for("postgres");
    let pg = PgServer::start(&[
        "ssl=on",
        &format!("ssl_cert_file='{}'", certs.cert.display()),
        &format!("ssl_key_file='{}'", key.display()),
    ]);
    let admin = pg_connect(&pg.url("postgres")).await;
    admin
        .batch_execute("CREATE ROLE app LOGIN SUPERUSER REPLICATION")
        .await
        .unwrap();
    std::fs::write(
        pg.dir().join("data/pg_hba.conf"),
        "local all all trust
local replication all trust
hostssl all app 127.0.0.1/32 trust
hostssl replication app 127.0.0.1/32 trust
hostnossl all app 127.0.0.1/32 reject
hostnossl replication app 127.0.0.1/32 reject
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
",
    )
    .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let plain = format!(
        "postgres://app@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    wait_until(Duration::from_secs(10), "plain TCP refused to app", || {
        let plain = plain.clone();
        async move { connect_pg(&plain).await.is_err() }
    })
    .await;
    pg
}

async fn connect_pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let pg = Postgres::parse(url)?;
    pg.connect("the test server")
        .await
        .map_err(|e| e.to_string())
}

/// Whether this session is encrypted, by the server's own account.
async fn pg_session_is_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn pg_rows(url: &str, table: &str) -> BTreeMap<i64, String> {
    pg_connect(url)
        .await
        .query(&format!("SELECT id, v FROM {table}"), &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// One pipeline with a `postgres_cdc` source (verify-full by host name),
/// a `sql_poll` source (verify-ca by IP address: the chain is checked, the
/// name is not) and a `postgres` sink (verify-full), against a server that
/// lets them in over TLS only: both tables land complete, and every session
/// of the pipeline, the walsender's included, is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_connector_syncs_through_a_server_that_only_takes_verified_tls() {
    let stack = Stack::start();
    let certs = Certs::create();
    let pg = pg_tls_only(&certs).await;
    let src = pg.create_db("tls_src").await;
    let dst = pg.create_db("tls_dst").await;
    pg_connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);
             INSERT INTO items SELECT g, 'snapshot ' || g FROM generate_series(1, 500) g;
             CREATE TABLE polled (id bigint PRIMARY KEY, v text NOT NULL);
             INSERT INTO polled SELECT g, 'polled ' || g FROM generate_series(1, 300) g;",
        )
        .await
        .unwrap();
    let ca = certs.ca.display();
    let port = pg.port();
    let dir = TempDir::new("tls-pg");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "name: tls
kafka:
  bootstrap_servers: {bootstrap}
registry:
  url: {registry}
sources:
  cdc:
    type: postgres_cdc
    connection: postgres://app@localhost:{port}/tls_src?sslmode=verify-full&sslrootcert={ca}
    heartbeat_interval_ms: 500
    tables:
      - {{ table: public.items, topic: tls.items }}
  poll:
    type: sql_poll
    connection: postgres://app@127.0.0.1:{port}/tls_src?sslmode=verify-ca&sslrootcert={ca}
    schedule: {{ interval_ms: 200 }}
    tables:
      - {{ table: polled, topic: tls.polled, mode: incrementing }}
sinks:
  target:
    type: postgres
    connection: postgres://app@localhost:{port}/tls_dst?sslmode=verify-full&sslrootcert={ca}
    topics: [tls.items, tls.polled]
    tables: {{ tls.items: items, tls.polled: polled }}
",
            bootstrap = stack.bootstrap(),
            registry = stack.registry_url(),
        ),
    )
    .unwrap();
    let (code, out, err) = support::validate(&file);
    assert_eq!(code, 0, "validate: {out}{err}");
    let mut run = SynclineRun::start(&file);
    // Changes after the snapshot come through the replication stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg_connect(&src)
        .await
        .batch_execute(
            "INSERT INTO items SELECT g, 'streamed ' || g FROM generate_series(501, 700) g;
             UPDATE items SET v = v || ' updated' WHERE id % 10 = 0;
             DELETE FROM items WHERE id % 7 = 0;
             INSERT INTO polled SELECT g, 'polled ' || g FROM generate_series(301, 400) g;",
        )
        .await
        .unwrap();
    for table in ["items", "polled"] {
        let want = pg_rows(&src, table).await;
        assert!(!want.is_empty());
        wait_until(Duration::from_secs(120), &format!("{table} synced"), || {
            let (dst, want) = (dst.clone(), want.clone());
            async move { pg_rows(&dst, table).await == want }
        })
        .await;
        assert!(run.exit_code().is_none(), "syncline exited:\n{}", run.log());
    }
    let admin = pg_connect(&pg.url("postgres")).await;
    let sessions: Vec<(String, bool)> = admin
        .query(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.usename = 'app'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        sessions.iter().all(|(_, ssl)| *ssl),
        "a plain session: {sessions:?}"
    );
    assert!(
        sessions.iter().any(|(t, _)| t == "walsender"),
        "the replication connection is among them: {sessions:?}"
    );
    assert!(
        sessions.len() >= 3,
        "source, poller and sink sessions: {sessions:?}"
    );
    run.kill9();
}

/// Mode by mode against the TLS server and a plain one: what each checks
/// (chain, host name), what each refuses, and that nothing stronger than
/// `prefer` falls back to plain TCP, through tokio-postgres and through
/// libpq (the replication connection) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_modes_check_what_they_say_and_never_fall_back() {
    let certs = Certs::create();
    let tls = pg_tls_only(&certs).await;
    let plain = PgServer::start(&[]);
    let (ca, other) = (certs.ca.display(), certs.other_ca.display());
    let at = |host: &str, port: u16, user: &str, q: &str| {
        format!("postgres://{user}@{host}:{port}/postgres?{q}")
    };
    let t = tls.port();

    // What connects, and is encrypted.
    for q in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=require&sslrootcert={ca}"), // = verify-ca
        "sslmode=require".to_string(),
        "sslmode=prefer".to_string(),
        String::new(), // prefer, libpq's default
    ] {
        let c = connect_pg(&at("localhost", t, "app", &q))
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(pg_session_is_tls(&c).await, "{q}");
    }
    let c = connect_pg(&at(
        "127.0.0.1",
        t,
        "app",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-ca does not check the host name");
    assert!(pg_session_is_tls(&c).await);

    // What is refused, and why.
    let e = connect_pg(&at(
        "127.0.0.1",
        t,
        "app",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("the certificate names localhost, not 127.0.0.1");
    assert!(
        e.contains("sslmode=verify-full") && e.contains("certificate verify failed"),
        "{e}"
    );
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = connect_pg(&at(
            "localhost",
            t,
            "app",
            &format!("sslmode={mode}&sslrootcert={other}"),
        ))
        .await
        .expect_err("a CA that did not sign the server's certificate");
        assert!(e.contains("certificate verify failed"), "{mode}: {e}");
    }
    let e = connect_pg(&at("127.0.0.1", t, "app", "sslmode=disable"))
        .await
        .expect_err("the server takes app over TLS only");
    assert!(e.contains("no encryption"), "{e}");
    let c = connect_pg(&at("127.0.0.1", t, "postgres", "sslmode=disable"))
        .await
        .unwrap();
    assert!(!pg_session_is_tls(&c).await, "disable never starts TLS");

    // A server without TLS: require and stronger refuse, prefer goes plain.
    let p = plain.port();
    for q in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let e = connect_pg(&at("localhost", p, "postgres", &q))
            .await
            .expect_err("no fall-back to plain TCP");
        assert!(e.contains("server does not support TLS"), "{q}: {e}");
    }
    let c = connect_pg(&at("localhost", p, "postgres", "sslmode=prefer"))
        .await
        .unwrap();
    assert!(!pg_session_is_tls(&c).await);

    // libpq, the replication connection of postgres_cdc, is given the same
    // settings and keeps them.
    let replication = |url: &str| {
        Postgres::parse(url)
            .unwrap()
            .libpq(&[("replication", "database")])
            .unwrap()
    };
    let ok = replication(&at(
        "localhost",
        t,
        "app",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    pg_walstream::PgReplicationConnection::connect_async(&ok)
        .await
        .unwrap_or_else(|e| panic!("libpq verify-full: {e}"));
    for (url, why) in [
        (
            at(
                "127.0.0.1",
                t,
                "app",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "host name",
        ),
        (
            at(
                "localhost",
                t,
                "app",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
            "CA",
        ),
        (at("localhost", p, "postgres", "sslmode=require"), "no TLS"),
    ] {
        let r = pg_walstream::PgReplicationConnection::connect_async(&replication(&url)).await;
        assert!(r.is_err(), "libpq connected despite the {why}: {url}");
    }
}

/// A MariaDB server with TLS on, where user `app` must use TLS.
async fn my_tls_only(certs: &Certs) -> MyServer {
    let my = MyServer::start(&[
        format!("--ssl-cert={}", certs.cert.display()),
        format!("--ssl-key={}", certs.key.display()),
        format!("--ssl-ca={}", certs.ca.display()),
    ])
    .await;
    my.exec(
        "CREATE DATABASE tls_dst;
         CREATE USER 'app'@'localhost' REQUIRE SSL;
         CREATE USER 'app'@'127.0.0.1' REQUIRE SSL;
         GRANT ALL ON *.* TO 'app'@'localhost';
         GRANT ALL ON *.* TO 'app'@'127.0.0.1';",
    )
    .await;
    my
}

async fn connect_my(url: &str) -> Result<mysql_async::Conn, String> {
    Mysql::parse(url)?
        .connect("the test server")
        .await
        .map_err(|e| e.to_string())
}

/// The session's TLS cipher, empty when plain.
async fn my_cipher(c: &mut mysql_async::Conn) -> String {
    let row: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    row.map(|(_, v)| v).unwrap_or_default()
}

/// The `mysql` sink writes a workload (with replays) through VERIFY_IDENTITY
/// into a server that takes its user over TLS only: the target equals the
/// expected rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mysql_sink_writes_through_a_server_that_only_takes_verified_tls() {
    let stack = Stack::start();
    let certs = Certs::create();
    let my = my_tls_only(&certs).await;
    let p = Producer::new(&stack);
    p.topic("tls.items", 3).await;
    let events = workload(3000, 200);
    p.send("tls.items", &items_table(), &events).await;
    let want = expected(&events);
    let yaml = format!(
        "connection: mysql://app@localhost:{}/tls_dst?ssl-mode=VERIFY_IDENTITY&ssl-ca={}\ntopics: [tls.items]\ntables: {{ tls.items: items }}\n",
        my.port(),
        certs.ca.display()
    );
    let cfg: MysqlSinkConfig = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(cfg.check(), []);
    let ctx = ComponentContext {
        pipeline: "tls".into(),
        component: "target".into(),
        kafka: KafkaConfig::new(stack.bootstrap()),
        registry: RegistryConfig::new(stack.registry_url()),
        state_dir: std::env::temp_dir(),
        limits: Default::default(),
        status: Default::default(),
    };
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move { cfg.run(ctx, s).await });
    let root = format!("{}/tls_dst", my.root_url());
    wait_until(
        Duration::from_secs(120),
        "the target equals the source",
        || {
            let (root, want) = (root.clone(), want.clone());
            async move {
                let Ok(mut c) = mysql_async::Conn::from_url(root).await else {
                    return false;
                };
                let have: Vec<(i64, String)> =
                    c.query("SELECT id, v FROM items").await.unwrap_or_default();
                let _ = c.disconnect().await;
                have.into_iter().collect::<BTreeMap<_, _>>() == want
            }
        },
    )
    .await;
    assert!(!task.is_finished(), "the sink stopped early");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Mode by mode against the MariaDB TLS server and a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_tls_modes_check_what_they_say_and_never_fall_back() {
    let certs = Certs::create();
    let tls = my_tls_only(&certs).await;
    let plain = MyServer::start(&[]).await;
    let (ca, other) = (certs.ca.display(), certs.other_ca.display());
    let at = |host: &str, port: u16, user: &str, q: &str| {
        format!("mysql://{user}@{host}:{port}/mysql?{q}")
    };
    let t = tls.port();

    for q in [
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
        format!("ssl-mode=verify-full&ssl-ca={ca}"),
        format!("ssl-mode=REQUIRED&ssl-ca={ca}"), // = VERIFY_CA
        "ssl-mode=REQUIRED".to_string(),
        "ssl-mode=PREFERRED".to_string(),
        String::new(), // PREFERRED, the mysql client's default
    ] {
        let mut c = connect_my(&at("localhost", t, "app", &q))
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(!my_cipher(&mut c).await.is_empty(), "{q}: encrypted");
    }
    // root may use the Unix socket, where the driver would skip TLS: a
    // connection that asked for TLS stays on TCP.
    let mut c = connect_my(&at("localhost", t, "root", "ssl-mode=REQUIRED"))
        .await
        .unwrap();
    assert!(
        !my_cipher(&mut c).await.is_empty(),
        "REQUIRED stays encrypted for root"
    );
    let mut c = connect_my(&at(
        "127.0.0.1",
        t,
        "app",
        &format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"),
    ))
    .await
    .expect("VERIFY_CA does not check the host name");
    assert!(!my_cipher(&mut c).await.is_empty());

    let e = connect_my(&at(
        "127.0.0.1",
        t,
        "app",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    ))
    .await
    .expect_err("the certificate names localhost, not 127.0.0.1");
    assert!(
        e.contains("ssl-mode=verify-full") && e.contains("certificate verify failed"),
        "{e}"
    );
    for mode in ["VERIFY_IDENTITY", "VERIFY_CA", "REQUIRED"] {
        let e = connect_my(&at(
            "localhost",
            t,
            "app",
            &format!("ssl-mode={mode}&ssl-ca={other}"),
        ))
        .await
        .expect_err("a CA that did not sign the server's certificate");
        assert!(e.contains("certificate verify failed"), "{mode}: {e}");
    }
    let e = connect_my(&at("127.0.0.1", t, "app", "ssl-mode=DISABLED"))
        .await
        .expect_err("the server takes app over TLS only");
    assert!(e.contains("Access denied"), "{e}");
    let mut c = connect_my(&at("127.0.0.1", t, "root", "ssl-mode=DISABLED"))
        .await
        .unwrap();
    assert!(
        my_cipher(&mut c).await.is_empty(),
        "DISABLED never starts TLS"
    );

    let p = plain.port();
    for q in [
        "ssl-mode=REQUIRED".to_string(),
        format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"),
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    ] {
        let e = connect_my(&at("localhost", p, "root", &q))
            .await
            .expect_err("no fall-back to plain TCP or the socket");
        assert!(e.contains("never falls back to plain TCP"), "{q}: {e}");
    }
    let mut c = connect_my(&at("localhost", p, "root", "ssl-mode=PREFERRED"))
        .await
        .unwrap();
    assert!(my_cipher(&mut c).await.is_empty());
}
