//! `syncline validate` on good and bad pipeline files: every kind of mistake
//! is reported with the file, line, column, key and what would be valid, all
//! mistakes at once, exit code 2; a good file prints its summary, exit 0.

mod support;

use support::{validate, TempDir};

const GOOD: &str = r#"name: shop-sync
kafka:
  bootstrap_servers: 127.0.0.1:9092
registry:
  url: http://127.0.0.1:8081
sources:
  shop:
    type: sql_poll
    connection: postgres://postgres@127.0.0.1:5432/shop
    schedule:
      interval_ms: 1000
    tables:
      - table: public.orders
        topic: shop.orders
        mode: timestamp
        timestamp_column: updated_at
        incrementing_column: id
sinks:
  warehouse:
    type: postgres
    connection: postgres://postgres@127.0.0.1:5432/warehouse
    topics: [shop.orders]
"#;

/// Write `text` to a pipeline file and validate it.
fn check(dir: &TempDir, text: &str) -> (i32, String, String, String) {
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = validate(&path);
    (code, out, err, path.display().to_string())
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in file"))
        + 1
}

fn assert_error(err: &str, file: &str, line: usize, fragments: &[&str]) {
    let wanted = format!("error: {file}:{line}:");
    let hit = err.lines().find(|l| l.starts_with(&wanted));
    let hit = hit.unwrap_or_else(|| panic!("no error at {wanted} in:\n{err}"));
    for f in fragments {
        assert!(
            hit.contains(f),
            "error line lacks `{f}`:\n{hit}\nall output:\n{err}"
        );
    }
}

#[test]
fn a_good_file_prints_sources_topics_and_sinks() {
    let dir = TempDir::new("validate");
    let (code, out, err, _) = check(&dir, GOOD);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("pipeline `shop-sync`"), "{out}");
    assert!(
        out.contains("source shop (sql_poll) -> shop.orders"),
        "{out}"
    );
    assert!(
        out.contains("sink warehouse (postgres) <- shop.orders"),
        "{out}"
    );
}

#[test]
fn an_unknown_key_names_the_line_and_the_likely_key() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace(
        "      - table: public.orders",
        "      - tabel: public.orders",
    );
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "tabel:"),
        &[
            "sources.shop.tables[0].tabel",
            "unknown key `tabel`",
            "did you mean `table`?",
        ],
    );
}

#[test]
fn a_missing_section_is_named() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("registry:\n  url: http://127.0.0.1:8081\n", "");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("error: {file}:1:1: missing key `registry`")),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_the_key_and_the_expected_type() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("      interval_ms: 1000", "      interval_ms: soon");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "interval_ms"),
        &[
            "sources.shop.schedule.interval_ms",
            "invalid type",
            "expected u64",
        ],
    );
}

#[test]
fn a_bad_value_lists_the_valid_ones() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("mode: timestamp", "mode: timestmp");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "mode:"),
        &[
            "`timestmp` is not valid here",
            "incrementing",
            "did you mean `timestamp`?",
        ],
    );
}

#[test]
fn an_unknown_component_type_lists_the_types() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("type: sql_poll", "type: sqlpoll");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "type: sqlpoll"),
        &[
            "unknown type `sqlpoll`",
            "valid types: sql_poll",
            "did you mean `sql_poll`?",
        ],
    );
}

#[test]
fn a_sink_reading_a_topic_nobody_writes_is_an_error() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("topics: [shop.orders]", "topics: [shop.order]");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "topics: [shop.order]"),
        &[
            "sinks.warehouse.topics[0]",
            "`shop.order`",
            "did you mean `shop.orders`?",
        ],
    );
    // Declared as written elsewhere, the same file is valid.
    let text = format!("{text}external_topics: [shop.order]\n");
    let (code, _, err, _) = check(&dir, &text);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_component_rule_is_checked_with_its_key() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("        timestamp_column: updated_at\n", "");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("error: {file}:")) && err.contains("timestamp_column"),
        "{err}"
    );
}

/// TLS settings that cannot be what the user meant are refused at the
/// `connection` line with the fix: a CA file that is missing, a CA file
/// with a mode that would ignore it, an unknown mode, a client certificate.
#[test]
fn tls_settings_are_checked_with_the_fix() {
    let dir = TempDir::new("validate");
    let text = GOOD
        .replace(
            "127.0.0.1:5432/shop",
            "127.0.0.1:5432/shop?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .replace(
            "127.0.0.1:5432/warehouse",
            "127.0.0.1:5432/warehouse?sslmode=prefer&sslrootcert=/nonexistent/ca.pem",
        );
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2, "{err}");
    assert_error(
        &err,
        &file,
        line_of(&text, "5432/shop?"),
        &["connection", "cannot read the CA file /nonexistent/ca.pem"],
    );
    assert_error(
        &err,
        &file,
        line_of(&text, "5432/warehouse?"),
        &["connection", "sslmode=verify-full"],
    );
    for (q, fragment) in [
        ("sslmode=verify", "not a TLS mode"),
        ("sslmode=require&sslcert=/c.pem", "not supported yet"),
    ] {
        let text = GOOD.replace(
            "127.0.0.1:5432/warehouse",
            &format!("127.0.0.1:5432/warehouse?{q}"),
        );
        let (code, _, err, file) = check(&dir, &text);
        assert_eq!(code, 2, "{q}: {err}");
        assert_error(
            &err,
            &file,
            line_of(&text, "5432/warehouse?"),
            &["connection", fragment],
        );
    }
    let text = GOOD.replace(
        "127.0.0.1:5432/warehouse",
        "127.0.0.1:5432/warehouse?sslmode=require",
    );
    let (code, _, err, _) = check(&dir, &text);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unset_variables_are_errors_and_defaults_apply() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("http://127.0.0.1:8081", "${SYNCLINE_TEST_UNSET_REGISTRY}");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "SYNCLINE_TEST_UNSET_REGISTRY"),
        &["environment variable `SYNCLINE_TEST_UNSET_REGISTRY` is not set"],
    );
    let text = GOOD.replace(
        "http://127.0.0.1:8081",
        "${SYNCLINE_TEST_UNSET_REGISTRY:-http://127.0.0.1:8081}",
    );
    let (code, _, err, _) = check(&dir, &text);
    assert_eq!(code, 0, "{err}");
}

/// `syncline validate` on `text` with `SYNCLINE_TEST_SECRET` set: its
/// output and stderr.
fn validate_with_secret(text: &str) -> (std::process::Output, String) {
    let dir = TempDir::new("validate");
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(support::syncline_bin())
        .arg("validate")
        .arg(&path)
        .env("SYNCLINE_TEST_SECRET", "hunter2-very-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn secrets_from_the_environment_never_appear_in_errors() {
    let text = GOOD.replace(
        "      interval_ms: 1000",
        "      interval_ms: ${SYNCLINE_TEST_SECRET}",
    );
    let (out, err) = validate_with_secret(&text);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("interval_ms"), "{err}");
    assert!(!err.contains("hunter2"), "secret leaked: {err}");
}

/// Found by `make fuzz` (pipeline_load): a `${VAR}` inside an unknown key
/// showed its value in the diagnostic's path, though the message hid it.
#[test]
fn a_secret_in_a_key_never_appears_in_errors() {
    let text = GOOD.replace(
        "name: shop-sync",
        "name: shop-sync\n\"postgres://u:${SYNCLINE_TEST_SECRET}@127.0.0.1/db\": 1",
    );
    let (out, err) = validate_with_secret(&text);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key"), "{err}");
    assert!(!err.contains("hunter2"), "secret leaked: {err}");
}

#[test]
fn every_error_is_reported_at_once() {
    let dir = TempDir::new("validate");
    let text = GOOD
        .replace("mode: timestamp", "mode: timestmp")
        .replace("type: postgres", "type: postgress")
        .replace("name: shop-sync", "name: shop-sync\nkafak: {}");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "kafak"),
        &["unknown key `kafak`", "did you mean `kafka`?"],
    );
    assert_error(&err, &file, line_of(&text, "timestmp"), &["timestmp"]);
    assert_error(
        &err,
        &file,
        line_of(&text, "postgress"),
        &["unknown type `postgress`"],
    );
    assert!(err.contains("3 error(s)"), "{err}");
}

#[test]
fn broken_yaml_names_the_line() {
    let dir = TempDir::new("validate");
    let text = GOOD.replace("    topics: [shop.orders]", "    topics: [shop.orders");
    let (code, _, err, _) = check(&dir, &text);
    assert_eq!(code, 2);
    assert!(err.contains("not valid YAML"), "{err}");
}

#[test]
fn run_refuses_an_invalid_file_the_same_way() {
    let dir = TempDir::new("validate");
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, GOOD.replace("mode: timestamp", "mode: timestmp")).unwrap();
    let out = std::process::Command::new(support::syncline_bin())
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`timestmp` is not valid here"));
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, err) = validate(std::path::Path::new("/nonexistent/pipeline.yaml"));
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/pipeline.yaml") && err.contains("cannot read the file"),
        "{err}"
    );
}

/// GOOD with a rules processor between the source's topic and the sink.
fn with_processor(from: &str) -> String {
    GOOD.replace(
        "sinks:\n",
        &format!(
            "processors:\n  clean:\n    type: rules\n    from: [{from}]\n    to: shop.orders.clean\n    steps:\n      - filter: \"row.amount > 10\"\n      - route: [ {{ when: \"row.country == 'DE'\", topic: shop.orders.de }} ]\nsinks:\n"
        ),
    )
    .replace(
        "topics: [shop.orders]",
        "topics: [shop.orders.clean, shop.orders.de]",
    )
}

#[test]
fn a_processor_is_summarized_and_its_outputs_feed_sinks() {
    let dir = TempDir::new("validate");
    let (code, out, err, _) = check(&dir, &with_processor("shop.orders"));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains("processor clean (rules) shop.orders -> shop.orders.clean, shop.orders.de"),
        "{out}"
    );
    assert!(
        out.contains("sink warehouse (postgres) <- shop.orders.clean, shop.orders.de"),
        "{out}"
    );
}

#[test]
fn a_processor_reading_a_topic_nobody_writes_is_an_error() {
    let dir = TempDir::new("validate");
    let text = with_processor("shop.ordres");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "from: [shop.ordres]"),
        &[
            "processors.clean.from[0]",
            "processor `clean` reads topic `shop.ordres`",
            "did you mean `shop.orders`?",
        ],
    );
    // Declared as written elsewhere, the same file is valid.
    let text = format!("{text}external_topics: [shop.ordres]\n");
    let (code, _, err, _) = check(&dir, &text);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_processor_with_an_unknown_key_names_its_line() {
    let dir = TempDir::new("validate");
    let text = with_processor("shop.orders")
        .replace("    to: shop.orders.clean", "    too: shop.orders.clean");
    let (code, _, err, file) = check(&dir, &text);
    assert_eq!(code, 2);
    assert_error(
        &err,
        &file,
        line_of(&text, "too: shop.orders.clean"),
        &["processors.clean.too", "did you mean `to`?"],
    );
}

/// Every pipeline file under `examples/` is valid as shipped (with the
/// passwords its `${VAR}`s name set), so a user who copies one starts from
/// a file that loads.
#[test]
fn every_example_pipeline_validates() {
    fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    yaml_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut files,
    );
    assert!(files.len() >= 3, "examples found: {files:?}");
    // Every source, processor and sink type has an example.
    use syncline::pipeline::config::{ProcessorConfig, SinkConfig, SourceConfig};
    let shown: std::collections::BTreeSet<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            let mut kinds = Vec::new();
            for role in ["sources", "processors", "sinks"] {
                if let Some(m) = doc[role].as_mapping() {
                    for body in m.values() {
                        if let Some(t) = body["type"].as_str() {
                            kinds.push(format!("{}-{t}", &role[..role.len() - 1]));
                        }
                    }
                }
            }
            kinds
        })
        .collect();
    let types = SourceConfig::reference()
        .into_iter()
        .chain(ProcessorConfig::reference())
        .chain(SinkConfig::reference())
        .map(|(anchor, _, _)| anchor);
    for anchor in types {
        assert!(
            shown.contains(&anchor),
            "no example under examples/ shows `{anchor}`; examples show {shown:?}"
        );
    }
    for file in files {
        let out = std::process::Command::new(support::syncline_bin())
            .arg("validate")
            .arg(&file)
            .env("PG_PASSWORD", "pw")
            .env("API_TOKEN", "token")
            .env("GITHUB_WEBHOOK_SECRET", "secret")
            .env("INTERNAL_TOKEN", "token")
            .env("MYSQL_PASSWORD", "pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
