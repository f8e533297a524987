//! OpenTelemetry traces end to end: `iib api` and `iib worker` as separate processes on one
//! PostgreSQL database export their spans over OTLP/HTTP to a receiver run here (decoding
//! `ExportTraceServiceRequest` with the published protobufs). One add request makes one
//! trace: the HTTP span continues the caller's `traceparent`, the worker's span links to it,
//! each step has its span and attributes, and (with tansu) the request's Kafka messages carry
//! its `traceparent`.

mod support;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::world::world;

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) keeping every span it is sent.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(
                        headers[axum::http::header::CONTENT_TYPE],
                        "application/x-protobuf"
                    );
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .as_ref()
                            .and_then(|r| attribute(&r.attributes, "service.name"))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                kept.push(Received {
                                    service: service.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { endpoint, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// A process of ours, stopped with SIGTERM (so it flushes its spans) or killed when dropped.
struct Process {
    child: Child,
    /// Its log lines (stderr) so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// `iib <command>` with `settings` as its whole environment; for `api`, waits for its
    /// address (port 0: it says which on stdout).
    async fn start(command: &str, settings: &BTreeMap<String, String>) -> (Self, Option<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_iib"))
            .arg(command)
            .env_clear()
            .envs(settings)
            // Only `api` says something on stdout that matters here: where it listens.
            .stdout(if command == "api" {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let kept = logs.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                kept.lock().unwrap().push(line);
            }
        });
        if command != "api" {
            return (Self { child, logs }, None);
        }
        let url =
            support::server::announced(&mut child, support::server::API_LISTENING, "api").await;
        (Self { child, logs }, Some(url))
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tansu binary, when this machine has it (`TANSU`, or where the test command builds it).
fn tansu() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("TANSU")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/iib/tansu/bin/tansu")
        });
    path.exists().then_some(path)
}

/// The caller's trace: the POST continues it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_add_request_is_one_trace_across_the_api_and_the_worker() {
    let receiver = Receiver::start().await;
    let world = world(1).await;
    let db = support::postgres().await;
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let broker = match tansu() {
        Some(_) => Some(support::kafka::Broker::start().await),
        None => {
            eprintln!("TANSU is not set and tansu is not built: the Kafka part is skipped");
            None
        }
    };
    let settings = |service: &str| -> BTreeMap<String, String> {
        let mut settings: BTreeMap<String, String> = [
            ("IIB_DATA_DIR", data.path().to_str().unwrap()),
            ("IIB_DATABASE_URL", db.url.as_str()),
            ("IIB_LISTEN_ADDR", "127.0.0.1:0"),
            // The access log line is at INFO; its JSON line carries the trace id.
            ("IIB_LOG_LEVEL", "INFO"),
            ("IIB_LOG_FORMAT", "json"),
            ("IIB_QUEUE_ACTORS", "true"),
            ("IIB_REGISTRY", world.registry.host.as_str()),
            ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
            ("IIB_OTEL_TRACING", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_SERVICE_NAME", service),
            // Exported within a fifth of a second rather than five.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(broker) = &broker {
            settings.insert("IIB_KAFKA_BROKERS".into(), broker.address.clone());
            settings.insert("IIB_KAFKA_PARTITIONS".into(), "1".into());
        }
        settings
    };
    let (mut api, base) = Process::start("api", &settings("iib-api")).await;
    let base = base.unwrap();
    let (mut worker, _) = Process::start("worker", &settings("iib-worker")).await;

    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{base}/api/v1/builds/add"))
        .header("X-Remote-User", "tbrady@DOMAIN.LOCAL")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({
            "bundles": [world.bundles[1]],
            "from_index": world.index,
            "binary_image": world.binary,
            "overwrite_from_index": true,
            "overwrite_from_index_token": "user:secret",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let submitted: Value = answer.json().await.unwrap();
    let id = submitted["id"].as_u64().unwrap();
    let started = Instant::now();
    let done = loop {
        let body: Value = http
            .get(format!("{base}/api/v1/builds/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["state"] != "in_progress" {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still in progress: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["state"], "complete", "{done}");
    // Stopping flushes what is still buffered.
    assert!(worker.terminate().success());
    assert!(api.terminate().success());

    let spans = receiver.spans();
    let of = |service: &str, name: &str| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.service == service && s.span.name == name)
            .cloned()
            .collect()
    };
    // The POST's span continues the caller's trace.
    let posts: Vec<Received> = of("iib-api", "http")
        .into_iter()
        .filter(|s| s.attribute("method").as_deref() == Some("POST"))
        .collect();
    assert_eq!(posts.len(), 1, "{spans:#?}");
    let post = &posts[0];
    assert_eq!(post.trace_id(), CALLER_TRACE);
    assert_eq!(post.parent_id(), CALLER_SPAN);
    assert_eq!(
        post.attribute("path").as_deref(),
        Some("/api/v1/builds/add")
    );
    assert_eq!(post.attribute("status").as_deref(), Some("201"));
    assert_eq!(post.attribute("trace_id").as_deref(), Some(CALLER_TRACE));
    // The POST's access log line (JSON) carries the trace id.
    let api_logs = api.logs.lock().unwrap().clone();
    let access: Vec<Value> = api_logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "iib::access" && line["span"]["method"] == "POST")
        .collect();
    assert_eq!(access.len(), 1, "{api_logs:#?}");
    assert_eq!(access[0]["span"]["trace_id"], CALLER_TRACE);
    assert_eq!(access[0]["fields"]["status"], 201);

    // The worker's span, in another process, links to the POST's and is in its trace.
    let runs = of("iib-worker", "iib.request");
    assert_eq!(runs.len(), 1, "{spans:#?}");
    let run = &runs[0];
    assert_eq!(run.trace_id(), CALLER_TRACE);
    assert_eq!(run.parent_id(), post.span_id());
    assert!(
        run.span
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == CALLER_TRACE && hex(&l.span_id) == post.span_id()),
        "{:?}",
        run.span.links
    );
    let id_text = id.to_string();
    assert_eq!(
        run.attribute("request_id").as_deref(),
        Some(id_text.as_str())
    );
    assert_eq!(run.attribute("request_type").as_deref(), Some("add"));
    assert_eq!(
        run.attribute("user").as_deref(),
        Some("tbrady@DOMAIN.LOCAL")
    );
    assert_eq!(
        run.attribute("from_index").as_deref(),
        Some(world.index.as_str())
    );
    assert_eq!(run.attribute("bundle_count").as_deref(), Some("1"));

    // One span a step, each under the worker's span (directly or through another step).
    let worker_spans: BTreeMap<String, &Received> = spans
        .iter()
        .filter(|s| s.service == "iib-worker")
        .map(|s| (s.span_id(), s))
        .collect();
    let under_run = |span: &Received| {
        let mut at = span;
        for _ in 0..10 {
            if at.parent_id() == run.span_id() {
                return true;
            }
            match worker_spans.get(&at.parent_id()) {
                Some(parent) => at = parent,
                None => return false,
            }
        }
        false
    };
    for step in [
        "resolve",
        "read_catalog",
        "change_catalog",
        "write_catalog",
        "build",
        "build_arch",
        "push_index",
        "overwrite",
    ] {
        let found = of("iib-worker", step);
        assert!(!found.is_empty(), "no {step} span in {spans:#?}");
        for span in &found {
            assert_eq!(span.trace_id(), CALLER_TRACE, "{step}");
            assert!(under_run(span), "{step} is not under the worker's span");
        }
    }
    let read = &of("iib-worker", "read_catalog")[0];
    // The index as resolved: what was read is pinned.
    let index_repository = world.index.trim_end_matches(":v4.18");
    assert!(
        read.attribute("image")
            .unwrap()
            .starts_with(&format!("{index_repository}@sha256:")),
        "{read:?}"
    );
    assert_eq!(read.attribute("request_type").as_deref(), Some("add"));
    let build = &of("iib-worker", "build")[0];
    let pushed: u64 = build.attribute("bytes_pushed").unwrap().parse().unwrap();
    assert!(pushed > 0, "{build:?}");
    assert_eq!(build.attribute("arches").as_deref(), Some("amd64,arm64"));
    let mut arches: Vec<String> = of("iib-worker", "build_arch")
        .iter()
        .map(|s| s.attribute("arch").unwrap())
        .collect();
    arches.sort();
    assert_eq!(arches, ["amd64", "arm64"]);
    let overwrite = &of("iib-worker", "overwrite")[0];
    assert_eq!(
        overwrite.attribute("image").as_deref(),
        Some(world.index.as_str())
    );

    // The request's Kafka messages carry its trace.
    if let Some(broker) = &broker {
        let messages = build_state_messages(broker, &id_text).await;
        assert!(messages.len() >= 3, "{messages:?}");
        for headers in &messages {
            let traceparent = headers
                .iter()
                .find(|(k, _)| k == "traceparent")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no traceparent in {headers:?}"));
            assert!(
                traceparent.starts_with(&format!("00-{CALLER_TRACE}-")),
                "{traceparent}"
            );
        }
    }
}

/// The headers of request `id`'s `build.state` messages, up to its completion.
async fn build_state_messages(
    broker: &support::kafka::Broker,
    id: &str,
) -> Vec<Vec<(String, String)>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message as _};
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.address)
        .set("group.id", format!("tracing-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&["iib.build.state"]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} messages arrived",
            out.len()
        );
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        if message.key() != Some(id.as_bytes()) {
            continue;
        }
        let headers: Vec<(String, String)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
        out.push(headers);
        if body["state"] == "complete" {
            return out;
        }
    }
}
