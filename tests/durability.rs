//! What the service leaves on disk: no trace of a request's secrets once it ended, and no
//! request data past `IIB_REQUEST_DATA_DAYS_TO_LIVE` (nor idempotency keys past their lifetime).

mod support;

use iib::background::{purge_request_data, Purged, Retention};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use support::server::Server;

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_requests_token_leaves_no_trace_in_the_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("robot:t0ken-{}-{nanos}", std::process::id());
    let mut settings = BTreeMap::new();
    for (key, value) in [
        ("IIB_QUEUE_ACTORS", "true"),
        ("IIB_TOTAL_ATTEMPTS", "1"),
        ("IIB_RETRY_DELAY", "0"),
        ("IIB_RETRY_JITTER", "0"),
    ] {
        settings.insert(key.to_string(), value.to_string());
    }
    settings.insert(
        "IIB_REQUEST_LOGS_DIR".into(),
        data.path().join("logs").display().to_string(),
    );
    let server = Server::start_in(data.path(), &settings, false).await;
    let client = reqwest::Client::new();
    // Nothing listens on port 1: the request fails at its first registry call.
    let created: Value = client
        .post(server.url("/api/v1/builds/add"))
        .header("X-Remote-User", "bob@EXAMPLE.COM")
        .json(&json!({
            "bundles": ["127.0.0.1:1/op/bundle:1.0"],
            "from_index": "127.0.0.1:1/index:v4.18",
            "binary_image": "127.0.0.1:1/opm:v4.18",
            "overwrite_from_index": true,
            "overwrite_from_index_token": token,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        let request: Value = client
            .get(server.url(&format!("/api/v1/builds/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if request["state"] == "failed" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the request did not fail: {request}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The secret was deleted with the request's end; its bytes go from the files soon after.
    let started = Instant::now();
    loop {
        let found = files_containing(data.path(), token.as_bytes());
        if found.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the token is still in {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets a file's modification time `days` days back.
fn age(path: &Path, days: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_files_and_idempotency_keys_past_their_lifetime_are_purged() {
    let db = support::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (logs, related, nested) = (
        dir.path().join("logs"),
        dir.path().join("related"),
        dir.path().join("nested"),
    );
    for d in [&logs, &related, &nested] {
        std::fs::create_dir_all(d).unwrap();
    }
    let files = [
        logs.join("5.log"),
        related.join("5_related_bundles.json"),
        nested.join("5_recursive_related_bundles.json"),
        logs.join("6.log"),
        // Not iib's: never touched, however old.
        logs.join("notes.txt"),
        logs.join("x.log"),
    ];
    for file in &files {
        std::fs::write(file, b"data").unwrap();
        age(file, 4);
    }
    std::fs::write(logs.join("6.log"), b"still being written").unwrap();
    let retention = Retention {
        days_to_live: 3,
        dirs: vec![
            (logs.clone(), ".log"),
            (related.clone(), "_related_bundles.json"),
            (nested.clone(), "_recursive_related_bundles.json"),
        ],
    };
    let now = chrono::Utc::now();
    let key = iib::store::IdempotencyKey {
        user: "bob".into(),
        key: "key-1".into(),
        body_sha256: "sha".into(),
        not_before: now - chrono::Duration::hours(24),
    };
    let bus = iib::command_bus::CommandBus::new(db.store.clone(), chrono::Duration::hours(1));
    let rm = || iib::command_bus::Submission {
        user: Some("bob".into()),
        annotations: None,
        requests: vec![iib::command_bus::RequestSubmission {
            params: iib_aggregates::RequestParams::Rm(iib_aggregates::params::RmParams {
                operators: vec!["op".into()],
                from_index: Some("r/index:v4.18".into()),
                ..Default::default()
            }),
            secrets: vec![],
            queue: None,
        }],
    };
    bus.submit_keyed(rm(), &Default::default(), Some(key.clone()))
        .await
        .unwrap();

    let purged = purge_request_data(&db.store, &retention, now)
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            files: 3,
            idempotency_keys: 0
        }
    );
    let left: Vec<bool> = files.iter().map(|f| f.exists()).collect();
    assert_eq!(left, [false, false, false, true, true, true]);

    // A day later the key is past its lifetime; 6.log is not yet past three days.
    let purged = purge_request_data(&db.store, &retention, now + chrono::Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            files: 0,
            idempotency_keys: 1
        }
    );
    // Even with no days to live, a log written in the last hour stays: its request may run.
    let none_to_live = Retention {
        days_to_live: 0,
        ..retention.clone()
    };
    let purged = purge_request_data(&db.store, &none_to_live, now)
        .await
        .unwrap();
    assert_eq!(purged.files, 0);
    assert!(logs.join("6.log").exists());
    assert_eq!(
        db.store
            .idempotency_key("bob", "key-1", key.not_before)
            .await
            .unwrap(),
        None,
        "the key was purged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iib_serve_purges_request_logs_older_than_the_days_to_live() {
    let data = tempfile::tempdir().unwrap();
    let logs = data.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("1.log"), b"old").unwrap();
    age(&logs.join("1.log"), 10);
    std::fs::write(logs.join("2.log"), b"recent").unwrap();
    age(&logs.join("2.log"), 2);
    let mut settings = BTreeMap::new();
    settings.insert("IIB_REQUEST_LOGS_DIR".into(), logs.display().to_string());
    settings.insert("IIB_REQUEST_DATA_DAYS_TO_LIVE".into(), "3".into());
    let _server = Server::start_in(data.path(), &settings, false).await;
    let started = Instant::now();
    while logs.join("1.log").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the expired log was not purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logs.join("2.log").exists(),
        "a log within its lifetime stays"
    );
}

/// The stored text of every secret of request `id`, read past the store.
async fn raw_secrets(db: &support::TestDb, id: u64) -> Vec<String> {
    use sqlx::Connection;
    let sql = "SELECT value FROM request_secrets WHERE request_id = $1";
    if db.url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(id as i64)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(id as i64)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

async fn secrets_are_encrypted_at_rest_with_iib_secret_key(db: support::TestDb) {
    use iib::command_bus::{CommandBus, CommandContext, RequestSubmission, Submission};
    use iib::store::SecretKey;
    use iib_aggregates::params::RmParams;
    use iib_aggregates::{RequestParams, SecretKind};
    let key = SecretKey::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    let store = db.store.clone().with_secret_key(Some(key));
    let bus = CommandBus::new(store.clone(), chrono::Duration::hours(1));
    let token = "robot:pl41n-t0ken";
    let submitted = bus
        .submit(
            Submission {
                user: None,
                annotations: None,
                requests: vec![RequestSubmission {
                    params: RequestParams::Rm(RmParams {
                        operators: vec!["op".into()],
                        from_index: Some("r/index:v4.18".into()),
                        ..Default::default()
                    }),
                    secrets: vec![(SecretKind::OverwriteFromIndexToken, token.into())],
                    queue: None,
                }],
            },
            &CommandContext::default(),
        )
        .await
        .unwrap();
    let id = submitted.requests[0].get();
    let raw = raw_secrets(&db, id).await;
    assert_eq!(raw.len(), 1);
    assert!(raw[0].starts_with("enc:v1:"), "{}", raw[0]);
    assert!(
        !raw[0].contains("t0ken"),
        "the database never sees the token"
    );
    let now = chrono::Utc::now();
    let read = store.secrets(id, now).await.unwrap();
    assert_eq!(read[0].value, token, "the worker reads it back");

    let err = db.store.secrets(id, now).await.unwrap_err().to_string();
    assert!(err.contains("set IIB_SECRET_KEY"), "{err}");
    let other = SecretKey::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
    let err = db
        .store
        .clone()
        .with_secret_key(Some(other))
        .secrets(id, now)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the key it was written with"), "{err}");
    assert!(
        SecretKey::from_base64("c2hvcnQ=").is_err(),
        "a key must be 32 bytes"
    );
}
on_both_backends!(secrets_are_encrypted_at_rest_with_iib_secret_key);
