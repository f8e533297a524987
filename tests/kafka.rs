//! The relay against a real Kafka-compatible broker (tansu): messages arrive with IIB's
//! bodies, keys, headers and order; relaying again sends nothing new.

mod support;

use chrono::Duration;
use iib::command_bus::{CommandBus, CommandContext};
use iib::streaming::messages::Topics;
use iib::streaming::relay::{Relay, RelaySettings};
use iib_aggregates::{Actor, BuildRequestCommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::Value;
use support::kafka::Broker;

fn settings(broker: &Broker) -> RelaySettings {
    settings_for(&broker.address)
}

fn settings_for(address: &str) -> RelaySettings {
    RelaySettings {
        brokers: address.to_string(),
        topics: Topics {
            build_state: "iib.build.state".into(),
            batch_state: "iib.batch.state".into(),
            events: None,
        },
        partitions: 1,
        replication_factor: 1,
        properties: vec![],
    }
}

type Received = (String, String, Value, Vec<(String, String)>);

/// Reads `count` messages from the topics, from the beginning.
async fn consume(broker: &Broker, topics: &[&str], count: usize) -> Vec<Received> {
    consume_until(broker, topics, |got| got.len() >= count).await
}

/// Reads messages from the topics, from the beginning, until `done` says so.
async fn consume_until(
    broker: &Broker,
    topics: &[&str],
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.address)
        .set(
            "group.id",
            format!("test-{}-{}", std::process::id(), broker.address),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (key, value) in &broker.client {
        config.set(key, value);
    }
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(topics).unwrap();
    let mut out: Vec<Received> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done(&out) {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} messages arrived",
            out.len()
        );
        let Ok(Ok(message)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            message.topic().to_string(),
            String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            serde_json::from_slice(message.payload().unwrap_or_default()).unwrap(),
            headers,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_iibs_messages_to_a_real_broker() {
    let broker = Broker::start().await;
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    let submitted = support::submit_rm(&bus, Some("bob@EXAMPLE.COM"), "kube-green").await;
    bus.execute(
        submitted.requests[0],
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "done".into(),
        },
        &CommandContext::default(),
    )
    .await
    .unwrap();
    let relay = Relay::new(db.store.clone(), settings(&broker)).unwrap();
    relay.ensure_topics().await.unwrap();
    assert_eq!(relay.catch_up().await.unwrap(), 5);
    assert_eq!(
        relay.catch_up().await.unwrap(),
        0,
        "the checkpoint moved past what was sent"
    );

    let builds = consume(&broker, &["iib.build.state"], 2).await;
    let states: Vec<&str> = builds
        .iter()
        .map(|(_, _, body, _)| body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "complete"], "in order");
    let (_, key, body, headers) = &builds[1];
    assert_eq!(key, "1");
    assert_eq!(body["removed_operators"][0], "kube-green");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("state"), Some("complete"));
    assert_eq!(header("batch"), Some("1"));
    assert_eq!(header("user"), Some("bob@EXAMPLE.COM"));
    assert!(header("correlation_id").is_some());
    let batches = consume(&broker, &["iib.batch.state"], 2).await;
    let states: Vec<&str> = batches
        .iter()
        .map(|(_, _, body, _)| body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "complete"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_broker_is_down() {
    use iib::shutdown::Shutdown;
    let port = support::server::free_port();
    let address = format!("127.0.0.1:{port}");
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    let mut relay_settings = RelaySettings {
        brokers: address.clone(),
        ..settings_for(&address)
    };
    relay_settings.properties = vec![("message.timeout.ms".into(), "300000".into())];
    let relay = Relay::new(db.store.clone(), relay_settings).unwrap();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.run(bus.committed(), shutdown.clone()));
    // The broker is down: requests go on regardless.
    let requests = 100;
    for _ in 0..requests {
        complete_rm(&bus).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // The broker comes up on the same address.
    let broker = Broker::start_at(&address).await;
    let builds = consume(&broker, &["iib.build.state"], requests * 2).await;
    for id in 1..=requests {
        let states: Vec<&str> = builds
            .iter()
            .filter(|(_, key, _, _)| key == &id.to_string())
            .map(|(_, _, body, _)| body["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            ["in_progress", "complete"],
            "request {id}: every message, in order"
        );
    }
    shutdown.trigger();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing_and_repeats_nothing_when_it_restarts() {
    use std::collections::BTreeSet;
    use std::process::{Command, Stdio};
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let requests = 300;
    let seeded = Command::new(env!("CARGO_BIN_EXE_iib"))
        .args(["bench", "seed", "--requests", &requests.to_string()])
        .env_clear()
        .env("IIB_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let relay = || {
        Command::new(env!("CARGO_BIN_EXE_iib"))
            .arg("relay")
            .env_clear()
            .env("IIB_DATA_DIR", dir.path())
            .env("IIB_KAFKA_BROKERS", &broker.address)
            .env("IIB_KAFKA_PARTITIONS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Each seeded request: 7 build.state messages (submitted, 5 progress, completed).
    let expected = requests * 7;
    let mut first = relay();
    let seen_before_kill = consume(&broker, &["iib.build.state"], 50).await;
    assert_eq!(seen_before_kill.len(), 50);
    first.kill().unwrap(); // SIGKILL: no chance to finish its page or checkpoint
    first.wait().unwrap();
    let mut second = relay();
    let id = |m: &Received| {
        m.3.iter()
            .find(|(k, _)| k == "correlation_id")
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // Everything arrives, once: the second relay reads the topic's tail and skips what the
    // first delivered without moving its checkpoint.
    let more = consume_until(&broker, &["iib.build.state"], |got| {
        got.iter().map(id).collect::<BTreeSet<_>>().len() >= expected
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let distinct: BTreeSet<String> = more.iter().map(id).collect();
    assert_eq!(
        distinct.len(),
        expected,
        "every message arrived, none extra"
    );
    assert_eq!(more.len(), expected, "no message arrived twice");
    // Per request, the states arrive in order.
    for request in [1, requests / 2, requests] {
        let mut states: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for m in more.iter().filter(|m| m.1 == request.to_string()) {
            if seen.insert(id(m)) {
                states.push(m.2["state"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(states.len(), 7);
        assert_eq!(states.last().map(String::as_str), Some("complete"));
    }
}

async fn complete_rm(bus: &CommandBus) {
    let id = support::submit_rm(bus, None, "op").await.requests[0];
    bus.execute(
        id,
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "done".into(),
        },
        &CommandContext::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_over_tls_with_the_configured_client_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = support::tls::certificates(dir.path());
    let broker = Broker::start_tls(&cert, &key, &ca).await;
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    complete_rm(&bus).await;
    // Settings as IIB_KAFKA_PROPERTIES gives them.
    let mut relay_settings = settings(&broker);
    relay_settings.properties = broker.client.clone();
    let relay = Relay::new(db.store.clone(), relay_settings).unwrap();
    relay.ensure_topics().await.unwrap();
    relay.catch_up().await.unwrap();
    let builds = consume(&broker, &["iib.build.state"], 2).await;
    let states: Vec<&str> = builds
        .iter()
        .map(|(_, _, body, _)| body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "complete"]);
    // Without the TLS settings nothing is delivered: the checkpoint stays where it was.
    let db2 = support::sqlite().await;
    let bus2 = CommandBus::new(db2.store.clone(), Duration::hours(1));
    complete_rm(&bus2).await;
    let mut plain = settings(&broker);
    plain.properties = vec![("message.timeout.ms".into(), "3000".into())];
    let relay = Relay::new(db2.store.clone(), plain).unwrap();
    assert!(
        relay.catch_up().await.is_err(),
        "a plain client must not get through a TLS listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_on_durable_storage_keeps_and_receives_everything() {
    use iib::shutdown::Shutdown;
    use support::kafka::BrokerOptions;
    // tansu's S3 storage engine on a real S3-compatible server (moto) survives the broker.
    let s3 = support::s3::S3Server::start().await;
    s3.create_bucket("tansu").await;
    let options = BrokerOptions {
        storage: Some("s3://tansu/".into()),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT".into(), s3.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ],
    };
    let address = format!("127.0.0.1:{}", support::server::free_port());
    let mut broker = Broker::start_with(&address, &options).await;
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    let mut relay_settings = settings_for(&address);
    relay_settings.properties = vec![("message.timeout.ms".into(), "300000".into())];
    let relay = Relay::new(db.store.clone(), relay_settings).unwrap();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.run(bus.committed(), shutdown.clone()));
    for _ in 0..10 {
        complete_rm(&bus).await;
    }
    assert_eq!(consume(&broker, &["iib.build.state"], 20).await.len(), 20);
    // The broker dies; requests go on; it comes back on the same storage.
    broker.kill();
    for _ in 0..10 {
        complete_rm(&bus).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let broker = Broker::start_with(&address, &options).await;
    let builds = consume(&broker, &["iib.build.state"], 40).await;
    for id in 1..=20 {
        let states: Vec<&str> = builds
            .iter()
            .filter(|(_, key, _, _)| key == &id.to_string())
            .map(|(_, _, body, _)| body["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            ["in_progress", "complete"],
            "request {id}: every message, in order"
        );
    }
    shutdown.trigger();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iib_serve_relays_to_the_brokers_it_is_given() {
    let broker = Broker::start().await;
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("IIB_KAFKA_BROKERS".to_string(), broker.address.clone());
    settings.insert("IIB_KAFKA_PARTITIONS".to_string(), "1".to_string());
    let server = support::server::Server::start(&settings).await;
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/builds/rm"))
        .header("X-Remote-User", "bob@EXAMPLE.COM")
        .json(&serde_json::json!({
            "operators": ["kube-green"],
            "from_index": "registry.example.com/index:v4.18",
            "binary_image": "registry.example.com/opm:v4.18",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let builds = consume(&broker, &["iib.build.state"], 1).await;
    let (_, key, body, _) = &builds[0];
    assert_eq!(key, "1");
    assert_eq!(body["state"], "in_progress");
    assert_eq!(body["removed_operators"][0], "kube-green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_for_good_is_dead_lettered_and_later_ones_still_arrive() {
    use iib::command_bus::{RequestSubmission, Submission};
    use iib_aggregates::params::RmParams;
    use iib_aggregates::RequestParams;
    let broker = Broker::start().await;
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    // Batch 1's annotations make its batch.state messages larger than the producer may send.
    let mut annotations = serde_json::Map::new();
    annotations.insert("notes".into(), Value::String("x".repeat(20_000)));
    let big = bus
        .submit(
            Submission {
                user: None,
                annotations: Some(annotations),
                requests: vec![RequestSubmission {
                    params: RequestParams::Rm(RmParams {
                        operators: vec!["op".into()],
                        from_index: Some("r/index:v4.18".into()),
                        ..Default::default()
                    }),
                    secrets: vec![],
                    queue: None,
                }],
            },
            &CommandContext::default(),
        )
        .await
        .unwrap();
    bus.execute(
        big.requests[0],
        BuildRequestCommand::Complete {
            actor: Actor::System,
            state_reason: "done".into(),
        },
        &CommandContext::default(),
    )
    .await
    .unwrap();
    complete_rm(&bus).await; // batch 2, small
    let mut relay_settings = settings(&broker);
    relay_settings.properties = vec![("message.max.bytes".into(), "10000".into())];
    let relay = Relay::new(db.store.clone(), relay_settings).unwrap();
    relay.ensure_topics().await.unwrap();
    relay
        .catch_up()
        .await
        .expect("a refused message does not stop the relay");
    assert_eq!(
        relay.catch_up().await.unwrap(),
        0,
        "the checkpoint moved on"
    );

    let batches = consume(&broker, &["iib.batch.state"], 2).await;
    let keys: Vec<&str> = batches.iter().map(|(_, key, _, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        ["2", "2"],
        "batch 2's messages arrived after batch 1's were refused"
    );
    let builds = consume(&broker, &["iib.build.state"], 4).await;
    assert_eq!(
        builds.len(),
        4,
        "build.state messages (no annotations) were all sent"
    );

    let letters = db.store.dead_letters().await.unwrap();
    let refused: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l.topic.as_str(), l.key.as_str()))
        .collect();
    assert_eq!(
        refused,
        [("iib.batch.state", "1"), ("iib.batch.state", "1")],
        "batch 1 created and finished"
    );
    assert!(letters.iter().all(|l| l.size > 20_000), "{letters:?}");
    assert!(
        letters[0].error.contains("too large"),
        "the broker's reason is kept: {}",
        letters[0].error
    );
    assert!(letters[0].position < letters[1].position);
    // A relay that sends the page again (a crash before the checkpoint moved, say) records
    // nothing twice.
    relay.replay(0).await.unwrap();
    assert_eq!(db.store.dead_letter_count().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_taking_over_skips_what_its_predecessor_delivered_past_the_checkpoint() {
    let broker = Broker::start().await;
    let db = support::sqlite().await;
    let bus = CommandBus::new(db.store.clone(), Duration::hours(1));
    for _ in 0..5 {
        complete_rm(&bus).await;
    }
    let mut three = settings(&broker);
    three.partitions = 3;
    let first = Relay::new(db.store.clone(), three.clone()).unwrap();
    first.ensure_topics().await.unwrap();
    first.catch_up().await.unwrap();
    // The first relay died after the broker had its page but before the checkpoint moved.
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE name = 'kafka_relay'")
        .execute(&pool)
        .await
        .unwrap();
    complete_rm(&bus).await;
    let second = Relay::new(db.store.clone(), three).unwrap();
    // 5 requests × (build.state in_progress, complete) + 5 batch.state (new, finished) × 2.
    assert_eq!(second.learn_delivered().await.unwrap(), 20);
    second.catch_up().await.unwrap();
    // Everything once: the 6 requests' two build.state messages each, and nothing more
    // (read until the topic stays quiet for 3 s).
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.address)
        .set("group.id", format!("takeover-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&["iib.build.state"]).unwrap();
    let mut ids = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let quiet = std::time::Duration::from_secs(if ids.len() >= 12 { 3 } else { 10 });
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(Ok(message)) => ids.push(message.offset()),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) if ids.len() >= 12 => break,
            Err(_) => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} arrived",
            ids.len()
        );
    }
    assert_eq!(ids.len(), 12, "nothing was sent twice");
}
