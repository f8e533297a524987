//! Many processes on one PostgreSQL database, as a fleet runs: several `iib api`, several
//! `iib worker` (each serving some queues) and several `iib relay`, all real processes against
//! a real registry and a real Kafka-compatible broker (tansu; that part is skipped when its
//! binary is missing).
//!
//! - Projections are applied by whichever process commits, idempotent by position: the read
//!   model equals a rebuild.
//! - One relay publishes at a time; killing it (SIGKILL) passes the role on, and every state
//!   change reaches Kafka exactly once, in order per request.
//! - A serial queue runs one request at a time across workers, and writers of one index run in
//!   submission order across workers.

mod support;

use iib::projector::Projector;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::kafka::Broker;
use support::server::Server;
use support::world::world;

const API_READY: &str = "iib: API listening on ";
const OPS_READY: &str = "iib: metrics and probes on ";

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The database URL naming the process in `pg_stat_activity`.
fn named(url: &str, name: &str) -> String {
    format!("{url}?application_name={name}")
}

async fn api(url: &str, name: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = settings(&[
        ("IIB_DATABASE_URL", &named(url, name)),
        ("IIB_LISTEN_ADDR", "127.0.0.1:0"),
        ("LOGIN_DISABLED", "true"),
    ]);
    env.extend(settings(extra));
    Server::start_command(&["api"], &env, API_READY).await
}

/// `iib <args>` without the API, ready once its metrics listener is up.
async fn background(args: &[&str], url: &str, name: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = settings(&[
        ("IIB_DATABASE_URL", &named(url, name)),
        ("IIB_METRICS_ADDR", "127.0.0.1:0"),
        ("LOGIN_DISABLED", "true"),
    ]);
    env.extend(settings(extra));
    Server::start_command(args, &env, OPS_READY).await
}

fn tansu_available() -> bool {
    std::env::var_os("TANSU")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/iib/tansu/bin/tansu")
        })
        .exists()
}

/// Which process (by `application_name`) holds the relay's lock now.
async fn relay_holder(admin: &sqlx::PgPool, database: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.objid::bigint = $1 AND l.objsubid = 1 AND l.granted \
         AND a.datname = $2",
    )
    .bind(iib::streaming::relay::RELAY_LOCK)
    .bind(database)
    .fetch_optional(admin)
    .await
    .unwrap()
}

async fn post(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> u64 {
    post_as(client, server, path, None, body).await
}

async fn post_as(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    user: Option<&str>,
    body: Value,
) -> u64 {
    let mut call = client.post(server.url(path)).json(&body);
    if let Some(user) = user {
        call = call.header("X-Remote-User", user);
    }
    let answer = call.send().await.unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body["id"].as_u64().unwrap()
}

async fn patch(client: &reqwest::Client, server: &Server, id: u64, body: Value) {
    let answer = client
        .patch(server.url(&format!("/api/v1/builds/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert_eq!(status.as_u16(), 200, "{}", answer.text().await.unwrap());
}

/// `(request id, position)` of every event that makes a build.state message, in global order.
async fn state_changes(store: &iib::store::Store) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_after(after, 1000).await.unwrap();
        let Some(last) = page.last().map(|e| e.position) else {
            return out;
        };
        for event in page {
            if event.aggregate_type == "BuildRequest"
                && matches!(
                    event.event_type.as_str(),
                    "RequestSubmitted" | "ProgressRecorded" | "RequestCompleted" | "RequestFailed"
                )
            {
                out.push((event.aggregate_id.clone(), event.position));
            }
        }
        after = last;
    }
}

/// Every build.state message on the broker: `(key, position of its correlation_id)`, in the
/// order each partition holds them. Reads until `count` arrived and nothing more came for 3 s.
async fn build_state_messages(broker: &Broker, count: usize) -> Vec<(String, i64)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.address)
        .set("group.id", format!("fleet-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&["iib.build.state"]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let quiet = if out.len() >= count {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(Ok(message)) => {
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let id = message
                    .headers()
                    .unwrap()
                    .iter()
                    .find(|h| h.key == "correlation_id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap();
                let position: i64 = id.split('-').nth(1).unwrap().parse().unwrap();
                out.push((key, position));
            }
            Ok(Err(e)) => panic!("consuming failed: {e}"),
            Err(_) if out.len() >= count => return out,
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages arrived",
            out.len()
        );
    }
}

fn per_key(messages: &[(String, i64)]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (key, position) in messages {
        out.entry(key.clone()).or_default().push(*position);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apis_and_two_relays_share_one_database() {
    let db = support::postgres().await;
    let database = db.url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&support::postgres_admin_url())
        .await
        .unwrap();
    let broker = if tansu_available() {
        Some(Broker::start().await)
    } else {
        eprintln!("tansu is not built (TANSU): the Kafka part of this test is skipped");
        None
    };
    let kafka: Vec<(&str, &str)> = match &broker {
        Some(broker) => vec![
            ("IIB_KAFKA_BROKERS", broker.address.as_str()),
            ("IIB_KAFKA_PARTITIONS", "3"),
        ],
        None => vec![],
    };
    let apis = [
        api(&db.url, "api1", &[]).await,
        api(&db.url, "api2", &[]).await,
    ];
    let mut relays = Vec::new();
    if broker.is_some() {
        relays.push(background(&["relay"], &db.url, "relay1", &kafka).await);
        relays.push(background(&["relay"], &db.url, "relay2", &kafka).await);
    }

    // Requests go in through both APIs, and each is moved along through the other one.
    const REQUESTS: u64 = 60;
    let client = reqwest::Client::new();
    let apis = std::sync::Arc::new(apis);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    for lane in 0..4u64 {
        let (apis, client, done) = (apis.clone(), client.clone(), done.clone());
        submitters.spawn(async move {
            for n in (lane..REQUESTS).step_by(4) {
                let (here, there) = (&apis[(n % 2) as usize], &apis[(1 - n % 2) as usize]);
                let id = post(
                    &client,
                    here,
                    "/api/v1/builds/add",
                    json!({
                        "bundles": [format!("registry.example.com/op/bundle:{n}")],
                        "from_index": format!("registry.example.com/index-{}:v4.18", n % 3),
                        "binary_image": "registry.example.com/opm:v4.18",
                    }),
                )
                .await;
                patch(
                    &client,
                    there,
                    id,
                    json!({"state": "in_progress", "state_reason": "building"}),
                )
                .await;
                let end = if n % 5 == 0 { "failed" } else { "complete" };
                patch(
                    &client,
                    here,
                    id,
                    json!({"state": end, "state_reason": format!("{end} by the test")}),
                )
                .await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }

    if broker.is_some() {
        // One relay holds the role; kill it mid-stream and the other takes over.
        let started = Instant::now();
        let holder = loop {
            if let Some(holder) = relay_holder(&admin, &database).await {
                break holder;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no relay took the lock"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        while done.load(std::sync::atomic::Ordering::SeqCst) < REQUESTS / 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let index = if holder == "relay1" { 0 } else { 1 };
        relays[index].kill9();
        let killed_at = Instant::now();
        let next = loop {
            match relay_holder(&admin, &database).await {
                Some(next) if next != holder => break next,
                _ => {}
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(10),
                "the relay role did not pass on after {holder} was killed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(next, holder);
    }
    while let Some(finished) = submitters.join_next().await {
        finished.unwrap();
    }

    // The read model, applied by both APIs as they committed, equals a fresh rebuild.
    let store = &db.store;
    let head = store.head_position().await.unwrap();
    assert_eq!(store.read_model_position().await.unwrap(), head);
    let live = store.dump_read_model().await.unwrap();
    let live_batches = store.dump_batches().await.unwrap();
    assert_eq!(live.len() as u64, REQUESTS);
    Projector::new(store.clone())
        .rebuild(|_, _| {})
        .await
        .unwrap();
    assert_eq!(store.dump_read_model().await.unwrap(), live);
    assert_eq!(store.dump_batches().await.unwrap(), live_batches);

    // Every state change reached Kafka once, in order per request.
    if let Some(broker) = &broker {
        let expected = state_changes(store).await;
        let started = Instant::now();
        while store
            .checkpoint(iib::streaming::relay::CHECKPOINT)
            .await
            .unwrap()
            < head
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the relay did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let received = build_state_messages(broker, expected.len()).await;
        assert_eq!(per_key(&received), per_key(&expected));
        assert_eq!(received.len(), expected.len(), "no message twice");
    }
}

/// A request's history once it ended.
async fn finished_history(client: &reqwest::Client, server: &Server, id: u64) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let body: Value = client
            .get(server.url(&format!("/api/v1/builds/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["state"] != "in_progress" {
            return client
                .get(server.url(&format!("/api/v1/builds/{id}/events")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "request {id} still in progress: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// From a request's history: (first claim's position, end's position, the pid of the worker
/// that ran it to its end, its final event).
fn run_of(history: &[Value]) -> (i64, i64, u32, String) {
    let find = |names: &[&str]| {
        history
            .iter()
            .rfind(|e| names.iter().any(|n| e["event"] == *n))
            .unwrap_or_else(|| panic!("no {names:?} in {history:?}"))
    };
    let first_claim = history
        .iter()
        .find(|e| e["event"] == "RequestClaimed")
        .unwrap_or_else(|| panic!("never claimed: {history:?}"));
    let claim = find(&["RequestClaimed"]);
    let end = find(&["RequestCompleted", "RequestFailed"]);
    let worker = claim["payload"]["RequestClaimed"]["worker"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = worker.split(':').nth(1).unwrap().parse().unwrap();
    (
        first_claim["position"].as_i64().unwrap(),
        end["position"].as_i64().unwrap(),
        pid,
        end["event"].as_str().unwrap().to_string(),
    )
}

fn assert_one_after_another(runs: &[(i64, i64, u32, String)], what: &str) {
    for pair in runs.windows(2) {
        assert!(pair[0].1 < pair[1].0, "{what} overlapped: {runs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_keep_serial_queues_and_index_order() {
    let db = support::postgres().await;
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    let common = [
        ("IIB_REGISTRY", world.registry.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
        (
            "IIB_QUEUES",
            r#"{"default": {"concurrency": 3}, "iib_serial": {"concurrency": 1}}"#,
        ),
        ("IIB_USER_TO_QUEUE", r#"{"release-bot": "iib_serial"}"#),
        ("IIB_TOTAL_ATTEMPTS", "2"),
        ("IIB_RETRY_DELAY", "0"),
        ("IIB_RETRY_JITTER", "0"),
    ];
    let server = api(&db.url, "api", &common).await;
    // Each queue is served by two of the three workers: by --queues or IIB_WORKER_QUEUES.
    let w1 = background(
        &["worker", "--queues", "default,iib_serial"],
        &db.url,
        "w1",
        &common,
    )
    .await;
    let w2 = background(
        &["worker", "--queues", "iib_serial"],
        &db.url,
        "w2",
        &common,
    )
    .await;
    let mut w3_env = common.to_vec();
    w3_env.push(("IIB_WORKER_QUEUES", "default"));
    let w3 = background(&["worker"], &db.url, "w3", &w3_env).await;

    let client = reqwest::Client::new();
    let mut serial = Vec::new();
    let mut chained = Vec::new();
    for (n, bundle) in world.bundles[6..10].iter().enumerate() {
        // On the serial queue: adds without overwrite (0.5.2 completes, the later ones fail
        // on bundles the index lacks; both end the request, which is what is timed).
        serial.push(
            post_as(
                &client,
                &server,
                "/api/v1/builds/add",
                Some("release-bot"),
                json!({"bundles": [bundle], "from_index": world.index, "binary_image": world.binary}),
            )
            .await,
        );
        // On the parallel queue: each overwrites the index with the next version.
        if n < 3 {
            chained.push(
                post(
                    &client,
                    &server,
                    "/api/v1/builds/add",
                    json!({
                        "bundles": [world.bundles[6 + n]],
                        "from_index": world.index,
                        "binary_image": world.binary,
                        "overwrite_from_index": true,
                        "overwrite_from_index_token": "user:secret",
                    }),
                )
                .await,
            );
        }
    }
    let mut serial_runs = Vec::new();
    for id in &serial {
        serial_runs.push(run_of(&finished_history(&client, &server, *id).await));
    }
    let mut chained_runs = Vec::new();
    for id in &chained {
        chained_runs.push(run_of(&finished_history(&client, &server, *id).await));
    }
    assert_one_after_another(&serial_runs, "requests of a serial queue");
    assert_one_after_another(&chained_runs, "writers of one index");
    for run in &chained_runs {
        assert_eq!(run.3, "RequestCompleted", "{chained_runs:?}");
    }
    // Each queue ran only on the workers serving it.
    let serving_serial = BTreeSet::from([w1.pid(), w2.pid()]);
    let serving_default = BTreeSet::from([w1.pid(), w3.pid()]);
    for run in &serial_runs {
        assert!(serving_serial.contains(&run.2), "{serial_runs:?}");
    }
    for run in &chained_runs {
        assert!(serving_default.contains(&run.2), "{chained_runs:?}");
    }
    // The index holds the bundles of all three chained requests, each added on the last.
    let names = bundles_in_index(&world.index);
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains("kube-green.v0.7.0"), "{names:?}");
}

/// The bundle names in an index image's `configs/kube-green/catalog.json` (amd64), read with
/// skopeo and umoci.
fn bundles_in_index(image: &str) -> BTreeSet<String> {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        &format!("docker://{image}"),
        &format!("oci:{}:built", layout.display()),
    ]);
    let bundle = work.path().join("bundle");
    run(&[
        "umoci",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:built", layout.display()),
        &bundle.display().to_string(),
    ]);
    let catalog =
        std::fs::read_to_string(bundle.join("rootfs/configs/kube-green/catalog.json")).unwrap();
    serde_json::Deserializer::from_str(&catalog)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .filter(|b| b["schema"] == "olm.bundle")
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// Drops the wake-up a signal may hold already (`Notify` keeps one permit).
async fn drain(signal: &tokio::sync::Notify) {
    while tokio::time::timeout(Duration::from_millis(100), signal.notified())
        .await
        .is_ok()
    {}
}

async fn woken(signal: &tokio::sync::Notify) -> bool {
    tokio::time::timeout(Duration::from_secs(3), signal.notified())
        .await
        .is_ok()
}

async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_reach_another_process_and_survive_a_lost_listener() {
    use iib::command_bus::CommandBus;
    let db = support::postgres().await;
    // "Here" commits and projects; "there" (its own pool, as another process) listens.
    let here = db.store.clone().with_notifies(true);
    let there = iib::store::Store::connect(&named(&db.url, "listener"))
        .await
        .unwrap()
        .with_notifies(true);
    let bus_here = CommandBus::new(here.clone(), chrono::Duration::hours(1));
    let bus_there = CommandBus::new(there.clone(), chrono::Duration::hours(1));
    let wakeups = bus_there.wakeups().clone();
    let queue = wakeups.queue("default");
    let other_queue = wakeups.queue("iib_serial");
    let committed = wakeups.committed();
    assert!(!wakeups.listening());
    assert_eq!(
        wakeups.poll_every(Duration::from_millis(100)),
        Duration::from_millis(100)
    );
    let shutdown = iib::shutdown::Shutdown::new();
    tokio::spawn(wakeups.clone().listen(there.clone(), shutdown.clone()));
    until("listening", Duration::from_secs(5), || wakeups.listening()).await;
    assert_eq!(
        wakeups.poll_every(Duration::from_millis(100)),
        iib::wakeups::FALLBACK_POLL
    );

    for round in 0..2 {
        drain(&committed).await;
        drain(&queue).await;
        drain(&other_queue).await;
        // A commit elsewhere wakes the event readers; not yet the queue (not projected).
        support::submit_rm(&bus_here, None, &format!("op-{round}")).await;
        assert!(woken(&committed).await, "round {round}: no iib_events");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), queue.notified())
                .await
                .is_err(),
            "the queue was woken before the read model showed the request"
        );
        // Its projection wakes the queue it concerns, and only that one.
        Projector::new(here.clone()).catch_up().await.unwrap();
        assert!(woken(&queue).await, "round {round}: no iib_work");
        assert!(
            tokio::time::timeout(Duration::from_millis(500), other_queue.notified())
                .await
                .is_err(),
            "another queue was woken"
        );
        if round == 1 {
            break;
        }
        // The listener's connection is cut: pollers go back to their short period until it
        // is back, and then wake-ups arrive again.
        let admin = sqlx::PgPool::connect(&support::postgres_admin_url())
            .await
            .unwrap();
        let database = db.url.rsplit('/').next().unwrap().to_string();
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&database)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert_eq!(cut, [true], "one listener connection");
        until("the loss noticed", Duration::from_secs(5), || {
            !wakeups.listening()
        })
        .await;
        assert_eq!(
            wakeups.poll_every(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        until("listening again", Duration::from_secs(10), || {
            wakeups.listening()
        })
        .await;
    }
    shutdown.trigger();
    // Notifications off: nothing listens, pollers keep their period.
    let off = CommandBus::new(db.store.clone(), chrono::Duration::hours(1));
    assert!(!off.wakeups().listening());
}
