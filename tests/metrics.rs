//! Prometheus metrics and probes, against real processes: `/metrics` of `iib serve`, `iib api`,
//! `iib worker` and `iib relay` passes `promtool check metrics`; the counters move by exactly
//! what a test drives (HTTP calls, submissions, builds against a real registry, the worker's
//! catalog cache); the Grafana dashboard queries only series the service exports; and
//! `/readyz` follows a private PostgreSQL server as it stops and starts again.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::registry::Registry;
use support::server::{free_port, Server};
use support::world::world;

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an exposition (comments skipped; label values unescaped).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("not a sample: {line}"),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = None;
            loop {
                // key="value", ... }
                let mut key = String::new();
                for (i, c) in chars.by_ref() {
                    if c == '}' {
                        end = Some(i);
                        break;
                    }
                    if c == '=' {
                        break;
                    }
                    if c != ',' {
                        key.push(c);
                    }
                }
                if end.is_some() {
                    break;
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (true, 'n') => {
                            value.push('\n');
                            escaped = false
                        }
                        (true, c) => {
                            value.push(c);
                            escaped = false
                        }
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        (false, c) => value.push(c),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            }
            &body[end.expect("labels end with }") + 1..]
        } else {
            rest
        };
        let value = value_text.split_whitespace().next().unwrap();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            },
        });
    }
    out
}

/// The sum of `name`'s samples whose labels include `labels` (0 when there is none).
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether `name` has a sample with `labels` at all.
fn has(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    samples(text).iter().any(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// `promtool check metrics` (Debian's prometheus package) on an exposition: no error, no lint.
fn promtool_check(text: &str, process: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is needed: tests/run-all.sh installs it");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics of {process}: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `iib <command>` with exactly `settings` as its environment, found at the URL it prints on
/// stdout after `announces`; killed when dropped.
async fn start(command: &str, settings: &[(&str, String)], announces: &str) -> Server {
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Server::start_command(&[command], &settings, announces).await
}

const API: &str = support::server::API_LISTENING;
const OPS: &str = support::server::OPS_LISTENING;

async fn post_add(base: &str, from_index: &str, bundles: &[&str], binary: &str) -> u64 {
    let answer = reqwest::Client::new()
        .post(format!("{base}/api/v1/builds/add"))
        .json(&json!({"bundles": bundles, "from_index": from_index, "binary_image": binary}))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_kind_serves_metrics_promtool_accepts_and_http_calls_are_counted_by_route() {
    // `iib api`, `iib worker` and `iib relay` on one database, as a deployment runs them.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let dead_broker = format!("127.0.0.1:{}", free_port());
    let settings = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        [
            ("IIB_DATA_DIR", dir),
            ("LOGIN_DISABLED", "true"),
            ("IIB_QUEUE_ACTORS", "false"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (*k, v.to_string()))
        .collect()
    };
    // The worker migrates the database first; the others start on it.
    let worker = start(
        "worker",
        &settings(&[("IIB_METRICS_ADDR", "127.0.0.1:0")]),
        OPS,
    )
    .await;
    let api = start("api", &settings(&[("IIB_LISTEN_ADDR", "127.0.0.1:0")]), API).await;
    let relay = start(
        "relay",
        &settings(&[
            ("IIB_METRICS_ADDR", "127.0.0.1:0"),
            ("IIB_KAFKA_BROKERS", dead_broker.as_str()),
        ]),
        OPS,
    )
    .await;
    let serve = Server::start(
        &[("LOGIN_DISABLED", "true"), ("IIB_QUEUE_ACTORS", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .await;

    // Calls the API counts by route template, never by raw path.
    let binary = "registry.example.com/opm:v4.18";
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            post_add(
                &api.base,
                "registry.example.com/index:v4.18",
                &["registry.example.com/op/bundle:1.0"],
                binary,
            )
            .await,
        );
    }
    for id in &ids {
        let (status, _) = get_text(&api.url(&format!("/api/v1/builds/{id}"))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = get_text(&api.url("/no/such/path")).await;
    assert_eq!(status, 404);
    let (status, _) = get_text(&api.url("/api/v1/builds/999999")).await;
    assert_eq!(status, 404);

    let (status, text) = get_text(&api.url("/metrics")).await;
    assert_eq!(status, 200);
    promtool_check(&text, "iib api");
    let http = |method: &str, route: &str, status: &str| {
        sum(
            &text,
            "iib_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(http("POST", "/api/v1/builds/add", "201"), 2.0, "{text}");
    assert_eq!(http("GET", "/api/v1/builds/{id}", "200"), 2.0, "{text}");
    assert_eq!(http("GET", "/api/v1/builds/{id}", "404"), 1.0, "{text}");
    assert_eq!(http("GET", "unmatched", "404"), 1.0, "{text}");
    for sample in samples(&text) {
        for value in sample.labels.values() {
            assert!(
                !value.contains("/no/such/path") && !value.contains("999999"),
                "raw paths must not become labels: {sample:?}"
            );
        }
    }
    assert_eq!(
        sum(
            &text,
            "iib_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/v1/builds/add")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &text,
            "iib_requests_submitted_total",
            &[("type", "add"), ("queue", "default")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(sum(&text, "iib_database_up", &[]), 1.0);
    assert_eq!(
        sum(&text, "iib_events_total", &[]),
        4.0,
        "two batches, two requests"
    );
    // Nobody runs the requests (queue actors off): both wait in the default queue.
    assert_eq!(
        sum(
            &text,
            "iib_queue_depth",
            &[("queue", "default"), ("state", "waiting")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "iib_relay_lag_events", &[]),
        0.0,
        "the API process has no IIB_KAFKA_BROKERS: no relay lag"
    );

    // The worker and the relay report the same database values, and their own calls.
    for (process, url) in [
        ("iib worker", worker.url("/metrics")),
        ("iib relay", relay.url("/metrics")),
        ("iib serve", serve.url("/metrics")),
    ] {
        // The second scrape counts the first: the listener's own calls are counted too.
        let _ = get_text(&url).await;
        let (status, text) = get_text(&url).await;
        assert_eq!(status, 200, "{process}");
        promtool_check(&text, process);
        assert!(has(&text, "iib_build_info", &[]), "{process}: {text}");
        assert!(
            sum(
                &text,
                "iib_http_requests_total",
                &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
            ) >= 1.0,
            "{process}: {text}"
        );
        if process != "iib serve" {
            assert_eq!(sum(&text, "iib_events_total", &[]), 4.0, "{process}");
            assert_eq!(
                sum(&text, "iib_requests_submitted_total", &[]),
                0.0,
                "{process} submitted nothing itself"
            );
        }
    }
    // The relay is on but its broker never answers: every event is behind.
    let (_, text) = get_text(&relay.url("/metrics")).await;
    assert_eq!(sum(&text, "iib_relay_lag_events", &[]), 4.0, "{text}");
}

async fn finished(server: &Server, id: u64) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = get_text(&server.url(&format!("/api/v1/builds/{id}"))).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        if body["state"] != "in_progress" {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "request {id} still in progress: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_requests_are_built_against_a_real_registry() {
    let world = world(8).await;
    let logs = tempfile::tempdir().unwrap();
    let settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "true"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REGISTRY", world.registry.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
        ("IIB_TOTAL_ATTEMPTS", "2"),
        ("IIB_RETRY_DELAY", "0"),
        ("IIB_RETRY_JITTER", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let server = Server::start(&settings).await;

    // Two adds on one index, one after the other: the second finds its catalog cached.
    let first = [world.bundles[8].as_str()];
    let second = [world.bundles[8].as_str(), world.bundles[9].as_str()];
    for bundles in [&first[..], &second[..]] {
        let id = post_add(&server.base, &world.index, bundles, &world.binary).await;
        let done = finished(&server, id).await;
        assert_eq!(done["state"], "complete", "{done}");
    }
    // A request that fails: its from_index does not exist.
    let missing = format!("{}/no-such-index:v4.18", world.registry.host);
    let id = post_add(&server.base, &missing, &[&world.bundles[9]], &world.binary).await;
    assert_eq!(finished(&server, id).await["state"], "failed");

    let (status, text) = get_text(&server.url("/metrics")).await;
    assert_eq!(status, 200);
    promtool_check(&text, "iib serve with workers");
    let add = [("type", "add"), ("queue", "default")];
    assert_eq!(
        sum(&text, "iib_requests_submitted_total", &add),
        3.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "iib_requests_started_total", &add),
        3.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "iib_requests_completed_total", &add),
        2.0,
        "{text}"
    );
    assert_eq!(sum(&text, "iib_requests_failed_total", &add), 1.0, "{text}");
    assert_eq!(
        sum(
            &text,
            "iib_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/builds/add"),
                ("status", "201")
            ]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "iib_build_duration_seconds_count",
            &[("type", "add"), ("state", "complete")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "iib_build_duration_seconds_count",
            &[("type", "add"), ("state", "failed")]
        ),
        1.0
    );
    // Every build took longer than the smallest bucket and fits the largest.
    assert_eq!(
        sum(
            &text,
            "iib_build_duration_seconds_bucket",
            &[("type", "add"), ("state", "complete"), ("le", "+Inf")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &text,
            "iib_queue_wait_seconds_count",
            &[("queue", "default")]
        ),
        3.0,
        "{text}"
    );
    assert!(sum(&text, "iib_queue_wait_seconds_sum", &[("queue", "default")]) > 0.0);
    // Every request ended: nothing waits or runs.
    assert_eq!(sum(&text, "iib_queue_depth", &[("queue", "default")]), 0.0);

    // The worker read the index once and found it in its cache the second time.
    assert!(
        sum(&text, "iib_catalog_cache_hits_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(sum(&text, "iib_catalog_cache_misses_total", &[]) >= 1.0);
    assert!(sum(&text, "iib_catalog_cache_bytes", &[]) > 0.0);

    // Registry calls by the registry's host: pulls and pushes, bytes both ways, a 404 for the
    // missing index, no retries (the registry never failed).
    let host = world.registry.host.as_str();
    let registry = [("registry", host)];
    assert!(
        sum(&text, "iib_registry_requests_total", &registry) > 10.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "iib_registry_requests_total",
            &[("registry", host), ("method", "PUT"), ("status", "201")]
        ) >= 2.0,
        "the index images' manifests were pushed: {text}"
    );
    assert!(
        sum(
            &text,
            "iib_registry_requests_total",
            &[("registry", host), ("method", "GET"), ("status", "404")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "iib_registry_bytes_total",
            &[("registry", host), ("direction", "received")]
        ) > 1000.0
    );
    assert!(
        sum(
            &text,
            "iib_registry_bytes_total",
            &[("registry", host), ("direction", "sent")]
        ) > 1000.0
    );
    assert_eq!(sum(&text, "iib_registry_retries_total", &[]), 0.0);
    assert_eq!(
        sum(
            &text,
            "iib_registry_request_duration_seconds_count",
            &registry
        ),
        sum(&text, "iib_registry_requests_total", &registry),
        "every call is timed"
    );
    // Labels name registries and routes, never images or requests.
    for sample in samples(&text) {
        for value in sample.labels.values() {
            assert!(
                !value.contains("kube-green") && !value.contains("no-such-index"),
                "{sample:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_retries_are_counted() {
    // A registry behind a proxy that answers its first two calls 503.
    let registry = Registry::start().await;
    let faults = support::faults::FaultProxy::start(&registry.host, 2).await;
    let logs = tempfile::tempdir().unwrap();
    let settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "true"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
        ("IIB_TOTAL_ATTEMPTS", "3"),
        ("IIB_RETRY_DELAY", "0"),
        ("IIB_RETRY_JITTER", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let server = Server::start(&settings).await;
    let index = format!("{}/index:v4.18", faults.host);
    let id = post_add(
        &server.base,
        &index,
        &[&format!("{}/bundle:1", faults.host)],
        &format!("{}/opm:v4.18", faults.host),
    )
    .await;
    // Nothing is there: the request fails after the retried 503s end in a 404.
    assert_eq!(finished(&server, id).await["state"], "failed");
    let (_, text) = get_text(&server.url("/metrics")).await;
    let host = [("registry", faults.host.as_str())];
    assert_eq!(
        sum(&text, "iib_registry_retries_total", &host),
        2.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "iib_registry_requests_total",
            &[("registry", faults.host.as_str()), ("status", "503")]
        ),
        2.0,
        "{text}"
    );
}

/// Every metric name the Grafana dashboard's queries use is one the service exports, and
/// every query is valid PromQL (`promtool check rules`), so the dashboard cannot rot.
#[test]
fn the_grafana_dashboard_queries_only_exported_series() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(value: &Value, exprs: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(e)) => exprs.push(e.clone()),
                        _ => walk(v, exprs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let exported = iib::metrics::series_names();
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        let bytes = expr.as_bytes();
        let mut at = 0;
        while let Some(found) = expr[at..].find("iib_") {
            let start = at + found;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |e| start + e);
            if boundary {
                let name = &expr[start..end];
                assert!(
                    exported.iter().any(|n| n == name),
                    "the dashboard queries {name}, which the service does not export: {expr}"
                );
                used.insert(name.to_string());
            }
            at = end;
        }
    }
    // What the dashboard is for: queue depth, request rate by state, build time, registry
    // errors, lag.
    for needed in [
        "iib_queue_depth",
        "iib_requests_completed_total",
        "iib_requests_failed_total",
        "iib_build_duration_seconds_bucket",
        "iib_step_duration_seconds_bucket",
        "iib_registry_requests_total",
        "iib_read_model_lag_seconds",
        "iib_relay_lag_seconds",
        "iib_events_set_aside_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }

    // Valid PromQL: promtool parses each query as a recording rule (Grafana's interval
    // variable replaced by a duration).
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let mut text = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        text.push_str(&format!(
            "  - record: dashboard:query{i}\n    expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package) is needed: tests/run-all.sh installs it");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PostgreSQL server of the test's own (Debian's binaries) on a free port in a temporary
/// directory, so stopping it disturbs nobody. Run as the `postgres` user when we are root
/// (initdb refuses root).
struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `None` (with a message) when PostgreSQL's server binaries are not installed.
    fn init() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .max()?;
        let dir = tempfile::tempdir().unwrap();
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown to the postgres user");
        }
        let server = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres: root,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.as_str(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

/// Polls `path` until it answers `status`, within `limit`.
async fn until_status(process: &Server, path: &str, status: u16, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let (got, body) = get_text(&process.url(path)).await;
        if got == status {
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "{path} still answers {got}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgresql_going_away_and_coming_back_while_livez_stays_up() {
    let Some(postgres) = PrivatePostgres::init() else {
        eprintln!(
            "SKIPPED: PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl) are \
             not installed; apt-get install postgresql"
        );
        return;
    };
    postgres.start();
    let data = tempfile::tempdir().unwrap();
    let worker = start(
        "worker",
        &[
            ("IIB_DATABASE_URL", postgres.url()),
            ("IIB_DATA_DIR", data.path().display().to_string()),
            ("IIB_METRICS_ADDR", "127.0.0.1:0".into()),
            ("IIB_QUEUE_ACTORS", "false".into()),
        ],
        OPS,
    )
    .await;
    let ready = until_status(&worker, "/readyz", 200, Duration::from_secs(30)).await;
    assert!(ready.contains("\"database\":\"ok\""), "{ready}");
    let (_, text) = get_text(&worker.url("/metrics")).await;
    assert_eq!(sum(&text, "iib_database_up", &[]), 1.0, "{text}");

    postgres.stop();
    let unready = until_status(&worker, "/readyz", 503, Duration::from_secs(60)).await;
    let unready: Value = serde_json::from_str(&unready).unwrap();
    assert_eq!(unready["status"], "not ready");
    assert!(
        unready["checks"]["database"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{unready}"
    );
    assert_eq!(get_text(&worker.url("/livez")).await.0, 200);
    // The scrape still answers, and says the database is away.
    let (status, text) = get_text(&worker.url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(sum(&text, "iib_database_up", &[]), 0.0, "{text}");
    promtool_check(&text, "iib worker without its database");

    postgres.start();
    until_status(&worker, "/readyz", 200, Duration::from_secs(60)).await;
    assert_eq!(get_text(&worker.url("/livez")).await.0, 200);
    let (_, text) = get_text(&worker.url("/metrics")).await;
    assert_eq!(sum(&text, "iib_database_up", &[]), 1.0);
}
