//! The `iib` binary as an operator runs it: migrate, replay, rebuild, serve, bad settings.

/// Legacy SQLite index databases as opm writes them, shared with the catalog engine's tests.
#[path = "../fbc/tests/support/index_db.rs"]
mod index_db;
mod support;

use chrono::Duration;
use iib::command_bus::{CommandBus, CommandContext, RequestSubmission, Submission};
use iib::store::Store;
use iib_aggregates::params::RmParams;
use iib_aggregates::{Actor, BuildRequestCommand, RequestParams, SecretKind};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;
use support::bundles::fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn iib(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iib"))
        .args(args)
        .env_clear()
        .env("IIB_DATA_DIR", data_dir)
        .output()
        .expect("run iib")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes one finished rm request into the SQLite store under `data_dir`.
async fn seed(data_dir: &Path) {
    let store = Store::connect(&Store::sqlite_url_in(data_dir))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let bus = CommandBus::new(store.clone(), Duration::hours(1));
    let submitted = bus
        .submit(
            Submission {
                user: Some("carol@EXAMPLE.COM".into()),
                annotations: None,
                requests: vec![RequestSubmission {
                    params: RequestParams::Rm(RmParams {
                        operators: vec!["kube-green".into()],
                        from_index: Some("registry.example.com/index:v4.18".into()),
                        overwrite_from_index: true,
                        ..Default::default()
                    }),
                    secrets: vec![(SecretKind::OverwriteFromIndexToken, "carol:hunter2".into())],
                    queue: Some("iib_serial".into()),
                }],
            },
            &CommandContext::user(Some("carol@EXAMPLE.COM".into())),
        )
        .await
        .unwrap();
    bus.execute(
        submitted.requests[0],
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "The operator(s) were successfully removed from the index image".into(),
        },
        &CommandContext::default(),
    )
    .await
    .unwrap();
    store.close().await;
}

#[tokio::test]
async fn migrate_replay_and_rebuild_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = iib(dir.path(), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "applied migrations: event_store, read_model, idempotency, work_queue, relay_dead_letters, set_aside_events\n"
    );
    let out = iib(dir.path(), &["migrate"]);
    assert_eq!(text(&out.stdout), "the database is up to date\n");

    let out = iib(dir.path(), &["replay", "--request", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "iib: request 1 does not exist\n");

    seed(dir.path()).await;
    let out = iib(dir.path(), &["replay", "--request", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let history = text(&out.stdout);
    for expected in [
        "BatchCreated",
        "RequestSubmitted",
        "by user carol@EXAMPLE.COM",
        "RequestCompleted",
        "BatchFinished",
        "overwrite_from_index_token",
    ] {
        assert!(
            history.contains(expected),
            "{expected} missing from:\n{history}"
        );
    }
    assert!(!history.contains("hunter2"), "a secret leaked:\n{history}");
    let out = iib(dir.path(), &["replay", "--request", "1", "--json"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[1]["event"], "RequestSubmitted");
    assert_eq!(lines[1]["actor"], "user carol@EXAMPLE.COM");

    let out = iib(dir.path(), &["replay", "--rebuild-projections"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.starts_with("rebuilt the read model: 5 events, 1 requests, 1 batches in "),
        "{report}"
    );
    assert!(report.trim_end().ends_with("events/s)"), "{report}");
}

#[test]
fn unknown_or_malformed_settings_stop_start_up_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("migrate")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_MAX_PER_PAEG", "5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown setting IIB_MAX_PER_PAEG"));
    let out = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("serve")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_USER_TO_QUEUE", "not json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("setting IIB_USER_TO_QUEUE must be a JSON object"));
}

#[test]
fn iib_config_prints_every_setting_its_value_and_origin_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("iib.toml");
    std::fs::write(
        &file,
        "IIB_MAX_PER_PAGE = 50\nIIB_REGISTRY = \"registry.example.com\"\n",
    )
    .unwrap();
    let config = |output: &str| {
        Command::new(env!("CARGO_BIN_EXE_iib"))
            .args([
                "--config",
                file.to_str().unwrap(),
                "config",
                "--output",
                output,
            ])
            .env_clear()
            .env("IIB_DATA_DIR", dir.path())
            .env("IIB_REGISTRY", "quay.example.com")
            .env(
                "IIB_SECRET_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            )
            .env(
                "IIB_DATABASE_URL",
                "postgres://iib:hunter2@db.example.com/iib",
            )
            .env(
                "IIB_KAFKA_PROPERTIES",
                r#"{"sasl.username": "iib", "sasl.password": "hunter3"}"#,
            )
            .env("IIB_OTEL_TRACING", "true")
            .env("OTEL_SERVICE_NAME", "iib-staging")
            .output()
            .unwrap()
    };

    let out = config("json");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter"), "a secret leaked:\n{stdout}");
    assert!(
        !stdout.contains("MDEyMzQ1"),
        "the secret key leaked:\n{stdout}"
    );
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for setting in iib::settings::SETTINGS {
        assert!(shown.get(setting.key).is_some(), "{} missing", setting.key);
    }
    let entry = |key: &str| {
        (
            shown[key]["value"].clone(),
            shown[key]["source"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(entry("IIB_MAX_PER_PAGE"), (50.into(), "file".into()));
    // The environment wins over the file.
    assert_eq!(
        entry("IIB_REGISTRY"),
        ("quay.example.com".into(), "environment".into())
    );
    assert_eq!(entry("IIB_TOTAL_ATTEMPTS"), (5.into(), "default".into()));
    assert_eq!(
        entry("IIB_KAFKA_BROKERS"),
        (serde_json::Value::Null, "default".into())
    );
    assert_eq!(
        entry("IIB_SECRET_KEY"),
        ("*****".into(), "environment".into())
    );
    assert_eq!(
        entry("IIB_DATABASE_URL").0,
        "postgres://iib:*****@db.example.com/iib"
    );
    assert_eq!(
        shown["IIB_KAFKA_PROPERTIES"]["value"],
        serde_json::json!({"sasl.username": "iib", "sasl.password": "*****"})
    );
    assert_eq!(shown["IIB_OTEL_TRACING"]["used"], true);
    assert_eq!(
        entry("OTEL_SERVICE_NAME"),
        ("iib-staging".into(), "environment".into())
    );
    assert_eq!(shown["IIB_SAC_QUEUES"]["used"], false);
    assert_eq!(shown["IIB_MAX_PER_PAGE"]["used"], true);

    let out = config("table");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(!table.contains("hunter"), "a secret leaked:\n{table}");
    assert!(table.starts_with("SETTING "), "{table}");
    let row = |key: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} row in:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("IIB_MAX_PER_PAGE"), "IIB_MAX_PER_PAGE 50 file");
    assert_eq!(row("IIB_TOTAL_ATTEMPTS"), "IIB_TOTAL_ATTEMPTS 5 default");
    assert_eq!(
        row("IIB_KAFKA_BROKERS"),
        "IIB_KAFKA_BROKERS (unset) default"
    );
    assert_eq!(row("IIB_OTEL_TRACING"), "IIB_OTEL_TRACING true environment");
}

#[test]
fn iib_config_exits_1_naming_a_setting_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("config")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_TOTAL_ATTEMPTS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "iib: setting IIB_TOTAL_ATTEMPTS must be at least 1, got 0\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_example_configuration_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/iib.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_iib"))
        .args(["--config", example, "config", "--output", "json"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["IIB_DATA_DIR"]["value"], "/var/lib/iib");
    assert_eq!(shown["IIB_DATA_DIR"]["source"], "file");
}

#[test]
fn settings_accepted_for_iib_compatibility_but_not_used_are_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("migrate")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_API_TIMEOUT", "60")
        .env("IIB_SAC_QUEUES", r#"["iib_sac"]"#)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&out.stderr);
    let named: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("accepted for IIB compatibility, not used"))
        .collect();
    assert_eq!(named.len(), 1, "{logs}");
    assert!(
        named[0]
            .ends_with("accepted for IIB compatibility, not used: IIB_API_TIMEOUT, IIB_SAC_QUEUES"),
        "{logs}"
    );
    let out = iib(dir.path(), &["migrate"]);
    assert!(
        !text(&out.stderr).contains("not used"),
        "{}",
        text(&out.stderr)
    );
}

async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[tokio::test]
async fn serve_runs_on_the_embedded_default_and_shuts_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("serve")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_LISTEN_ADDR", &addr)
        .env("IIB_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let health = loop {
        if let Some(answer) = http_get(&addr, "/api/v1/healthcheck").await {
            break answer;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "iib serve did not come up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        health,
        (200, "{\"status\":\"Health check OK\"}\n".to_string())
    );
    // The projector ran at start-up: the seeded request is served from the read model.
    let (status, body) = loop {
        let answer = http_get(&addr, "/api/v1/builds/1").await.unwrap();
        if answer.0 == 200 || started.elapsed().as_secs() > 10 {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{body}");
    let build: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(build["state"], "complete");
    assert_eq!(
        build["removed_operators"],
        serde_json::json!(["kube-green"])
    );
    let (status, body) = http_get(&addr, "/api/v1/builds/99").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            "{\"error\":\"The requested resource was not found\"}\n"
        )
    );

    // SIGTERM: a clean, prompt exit.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(!logs.contains("hunter2"), "a secret leaked into the logs");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).expect("IIB_LOG_FORMAT=json logs JSON lines"))
        .collect();
    // The access log, at the default level: one line a call, with its status and duration.
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "iib::access")
        .collect();
    assert!(
        access.iter().any(|l| l["fields"]["status"] == 404
            && l.to_string().contains("/api/v1/builds/99")
            && l["fields"]["duration_ms"].is_number()),
        "no access-log line for GET /api/v1/builds/99 in {logs}"
    );
    assert!(
        !access
            .iter()
            .any(|l| l.to_string().contains("/api/v1/healthcheck")),
        "health checks are not access-logged at the default level"
    );
}

#[test]
fn catalog_validate_exits_1_with_opms_tree_of_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("catalog.json"),
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"stable"}
{"schema":"olm.channel","package":"demo","name":"stable","entries":[{"name":"a"},{"name":"b"}]}
{"schema":"olm.bundle","package":"demo","name":"a","image":"q/a:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"1.0.0"}}]}
{"schema":"olm.bundle","package":"demo","name":"b","image":"q/b:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"1.1.0"}}]}"#,
    )
    .unwrap();
    let out = iib(
        dir.path(),
        &["catalog", "validate", &dir.path().display().to_string()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "invalid index:\n└── invalid package \"demo\":\n    └── invalid channel \"stable\":\n        └── multiple channel heads found in graph: a, b\n"
    );
    std::fs::write(
        dir.path().join("catalog.json"),
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"stable"}
{"schema":"olm.channel","package":"demo","name":"stable","entries":[{"name":"a"},{"name":"b","replaces":"a"}]}
{"schema":"olm.bundle","package":"demo","name":"a","image":"q/a:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"1.0.0"}}]}
{"schema":"olm.bundle","package":"demo","name":"b","image":"q/b:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"1.1.0"}}]}"#,
    )
    .unwrap();
    let out = iib(
        dir.path(),
        &["catalog", "validate", &dir.path().display().to_string()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn iib_catalog_migrate_writes_the_catalog_and_refuses_a_full_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    index_db::build_index(&db, index_db::Variant::default()).await;
    let out = dir.path().join("catalog");
    let run = |out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_iib"))
            .args(["catalog", "migrate"])
            .arg(&db)
            .arg("--out")
            .arg(out)
            .env("IIB_LOG_LEVEL", "WARN")
            .output()
            .unwrap()
    };
    let done = run(&out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(listing(&out), vec!["kube-green", "toy-operator"]);
    assert!(out.join("kube-green/catalog.json").is_file());
    let written = iib_fbc::load::load_dir(&out).unwrap();
    let direct = iib_fbc::sqlite_index::migrate(&db, iib_fbc::render::ObjectsAs::CsvMetadata)
        .await
        .unwrap();
    assert_eq!(
        iib_fbc::write::to_string(&written, iib_fbc::write::Format::Json),
        iib_fbc::write::to_string(&direct, iib_fbc::write::Format::Json)
    );
    let again = run(&out);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("must be empty"));
}

/// The files in a directory, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_relay_needs_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let out = iib(dir.path(), &["relay"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "iib: set IIB_KAFKA_BROKERS to run the relay\n"
    );
}

/// `iib catalog render IMAGE` with a 1 MiB manifest limit (`IIB_REGISTRY_MAX_MANIFEST_BYTES`).
async fn render(image: &str) -> std::process::Output {
    let image = image.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_iib"))
            .args(["catalog", "render", &image])
            .env_clear()
            .env("IIB_TOTAL_ATTEMPTS", "1")
            .env("IIB_REGISTRY_MAX_MANIFEST_BYTES", "1048576")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iib_catalog_render_refuses_a_lying_bundle_with_a_clear_message() {
    let registry = support::hostile_registry::HostileRegistry::start().await;
    let output = render(&format!("{}/bundle:bundle", registry.host)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the registry sent more than 1000 bytes, the size its descriptor declares"),
        "{stderr}"
    );
    let output = render(&format!("{}/bundle:huge", registry.host)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("more than 1048576 bytes")
            && stderr.contains("IIB_REGISTRY_MAX_MANIFEST_BYTES"),
        "{stderr}"
    );
}

#[tokio::test]
async fn iib_worker_serves_metrics_and_probes_on_iib_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iib"))
        .arg("worker")
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .env("IIB_METRICS_ADDR", &addr)
        .env("IIB_QUEUE_ACTORS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let live = loop {
        if let Some(answer) = http_get(&addr, "/livez").await {
            break answer;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "iib worker did not open IIB_METRICS_ADDR"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(live, (200, "{\"status\":\"live\"}\n".to_string()));
    // The worker's projector applies the seeded request, so it becomes ready.
    let (status, body) = loop {
        let answer = http_get(&addr, "/readyz").await.unwrap();
        if answer.0 == 200 || started.elapsed().as_secs() > 10 {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["migrations"], "ok");
    let (status, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("iib_events_set_aside_total"), "{metrics}");
    // Only the operational routes: the API is not served here.
    let (status, _) = http_get(&addr, "/api/v1/builds/1").await.unwrap();
    assert_eq!(status, 404);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}
