//! The REST API over HTTP against a real `iib serve`: reads, pagination, artifacts, errors,
//! idempotent submission, request ids, limits, and the database going away and coming back.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use support::server::Server;

const USER: &str = "tbrady@DOMAIN.LOCAL";
const WORKER: &str = "worker@DOMAIN.LOCAL";

fn base_settings(dir: &std::path::Path) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert("IIB_WORKER_USERNAMES".into(), format!(r#"["{WORKER}"]"#));
    s.insert(
        "IIB_REQUEST_LOGS_DIR".into(),
        dir.join("logs").display().to_string(),
    );
    s.insert(
        "IIB_REQUEST_RELATED_BUNDLES_DIR".into(),
        dir.join("related").display().to_string(),
    );
    s.insert(
        "IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR".into(),
        dir.join("nested").display().to_string(),
    );
    s.insert(
        "IIB_BINARY_IMAGE_CONFIG".into(),
        r#"{"prod": {"v4.18": "registry.example.com/opm:v4.18"}}"#.into(),
    );
    s
}

struct Api {
    server: Server,
    client: reqwest::Client,
}

impl Api {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let scratch = tempfile::tempdir().unwrap().keep();
        let mut settings = base_settings(&scratch);
        for (k, v) in extra {
            settings.insert(k.to_string(), v.to_string());
        }
        Self {
            server: Server::start(&settings).await,
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.server.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, user: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.server.url(path))
            .header("X-Remote-User", user)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn patch(&self, id: u64, body: Value) -> (u16, Value) {
        let response = self
            .client
            .patch(self.server.url(&format!("/api/v1/builds/{id}")))
            .header("X-Remote-User", WORKER)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn add(&self, from_index: &str) -> u64 {
        let (status, body) = self
            .post(
                "/api/v1/builds/add",
                USER,
                json!({"bundles": ["registry.example.com/op/bundle:1.0"], "from_index": from_index}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_u64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_and_pages_as_iib_does() {
    let api = Api::start(&[("IIB_MAX_PER_PAGE", "2")]).await;
    for i in 0..3 {
        api.add(&format!("registry.example.com/index:v4.1{i}"))
            .await;
    }
    let (status, _) = api
        .post(
            "/api/v1/builds/rm",
            "other@DOMAIN.LOCAL",
            json!({"operators": ["op"], "from_index": "registry.example.com/index:v4.10"}),
        )
        .await;
    assert_eq!(status, 201);
    api.patch(1, json!({"state": "failed", "state_reason": "boom"}))
        .await;

    let (status, page) = api.get("/api/v1/builds?per_page=50").await;
    assert_eq!(status, 200);
    let ids: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [4, 3], "newest first, capped at IIB_MAX_PER_PAGE");
    assert!(
        page["items"][0].get("state_history").is_none(),
        "non-verbose by default"
    );
    let base = api.server.url("/api/v1/builds");
    assert_eq!(
        page["meta"],
        json!({
            "first": format!("{base}?page=1&per_page=2"),
            "last": format!("{base}?page=2&per_page=2"),
            "next": format!("{base}?page=2&per_page=2"),
            "page": 1, "pages": 2, "per_page": 2, "previous": null, "total": 4,
        })
    );
    let (_, page) = api
        .get("/api/v1/builds?page=2&verbose=true&per_page=2")
        .await;
    assert_eq!(page["items"][1]["id"], 1);
    assert!(page["items"][1]["state_history"].is_array());
    assert_eq!(
        page["meta"]["previous"],
        format!("{base}?page=1&per_page=2"),
        "verbose is not echoed"
    );

    let (_, page) = api.get("/api/v1/builds?state=failed").await;
    assert_eq!(page["meta"]["total"], 1);
    assert_eq!(
        page["meta"]["first"],
        format!("{base}?page=1&per_page=2&state=failed")
    );
    let (_, page) = api
        .get("/api/v1/builds?request_type=rm&user=other@DOMAIN.LOCAL")
        .await;
    assert_eq!(page["meta"]["total"], 1);
    let (_, page) = api
        .get("/api/v1/builds?from_index=registry.example.com/index:v4.10")
        .await;
    assert_eq!(page["meta"]["total"], 2, "add and rm both name it");
    let (_, page) = api
        .get("/api/v1/builds?from_index_startswith=registry.example.com/index:v4.1")
        .await;
    assert_eq!(page["meta"]["total"], 4);
    let (_, page) = api.get("/api/v1/builds?batch=2").await;
    assert_eq!(page["items"][0]["id"], 2);

    for (query, status, error) in [
        ("state=done", 400, "done is not a valid build request state. Valid states are: complete, failed, in_progress"),
        ("batch=0", 400, "The batch must be a positive integer"),
        ("request_type=nope", 400, "nope is not a valid build request type. Valid request_types are: generic, add, rm, regenerate-bundle, merge-index-image, create-empty-index, recursive-related-bundles, fbc-operations, add-deprecations"),
        ("from_index=never:seen", 400, "from_index never:seen is not a valid index image"),
        ("from_index_startswith=nowhere", 400, "Can't find any from_index starting with nowhere"),
        ("index_image=never:seen", 400, "never:seen is not a valid index image"),
        ("page=0", 404, "The requested resource was not found"),
        ("page=9", 404, "The requested resource was not found"),
        ("per_page=x", 404, "The requested resource was not found"),
    ] {
        let (got_status, body) = api.get(&format!("/api/v1/builds?{query}")).await;
        assert_eq!((got_status, body["error"].as_str().unwrap()), (status, error), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_follow_iibs_rules() {
    let api = Api::start(&[]).await;
    let id = api.add("registry.example.com/index:v4.18").await;
    let (status, body) = api.get(&format!("/api/v1/builds/{id}/logs")).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, format!("The request {id} is not complete yet. logs will be available once the request is complete.").as_str())
    );
    let (status, body) = api
        .get(&format!("/api/v1/builds/{id}/related_bundles"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        format!("The request {id} is of type add. This endpoint is only valid for requests of type regenerate-bundle.")
    );
    let (status, _) = api
        .patch(id, json!({"state": "complete", "state_reason": "done"}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.get(&format!("/api/v1/builds/{id}/logs")).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            500,
            "IIB is done processing the request and could not find logs."
        )
    );

    let schema = r#"{"schema": "olm.deprecations",  "package": "kube-green"}"#;
    let (status, created) = api
        .post(
            "/api/v1/builds/add-deprecations",
            USER,
            json!({"operator_package": "kube-green", "deprecation_schema": schema, "from_index": "registry.example.com/index:v4.18"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let url = created["deprecation_schema_url"].as_str().unwrap();
    let text = api
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, schema, "served verbatim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_logs_are_gone() {
    let api = Api::start(&[("IIB_REQUEST_DATA_DAYS_TO_LIVE", "0")]).await;
    let id = api.add("registry.example.com/index:v4.18").await;
    api.patch(id, json!({"state": "failed", "state_reason": "boom"}))
        .await;
    let (status, body) = api.get(&format!("/api/v1/builds/{id}/logs")).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            410,
            format!("The logs for the build request {id} no longer exist").as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_iibs_errors_and_never_crash_the_server() {
    let api = Api::start(&[("IIB_MAX_BODY_BYTES", "4096")]).await;
    let url = api.server.url("/api/v1/builds/add");
    let send = |body: Vec<u8>, content_type: &'static str| {
        api.client
            .post(&url)
            .header("X-Remote-User", USER)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let r = send(b"{bad".to_vec(), "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "{\"error\":\"The browser (or proxy) sent a request that this server could not understand.\"}\n");
    let r = send(b"{}".to_vec(), "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);
    let r = send(vec![b' '; 10_000], "application/json").await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"error\":\"The data value transmitted exceeds the capacity limit.\"}\n"
    );
    let r = api.client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401, "anonymous writes need a user");
    let r = api
        .client
        .delete(api.server.url("/api/v1/builds"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"error\":\"The method is not allowed for the requested URL.\"}\n"
    );
    let (status, body) = api.get("/api/v1/nope").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (404, "The requested resource was not found")
    );
    let (status, _) = api.get("/api/v1/builds/abc").await;
    assert_eq!(status, 404);
    // A user header from an untrusted address is ignored (the test client is trusted: loopback).
    let (status, body) = api
        .patch(1, json!({"state": "complete", "state_reason": "x"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (404, "The requested resource was not found")
    );
    let r = api
        .client
        .patch(api.server.url("/api/v1/builds/1"))
        .header("X-Remote-User", USER)
        .json(&json!({"arches": ["amd64"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Every answer carries a request id; a sane incoming one is kept.
    let r = api
        .client
        .get(api.server.url("/api/v1/healthcheck"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = api
        .client
        .get(api.server.url("/api/v1/healthcheck"))
        .send()
        .await
        .unwrap();
    assert!(!r.headers()["x-request-id"].is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_with_the_first_request() {
    let api = Api::start(&[]).await;
    let post = |key: &'static str, body: Value| {
        api.client
            .post(api.server.url("/api/v1/builds/add"))
            .header("X-Remote-User", USER)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"bundles": ["registry.example.com/op/bundle:1.0"], "from_index": "registry.example.com/index:v4.18"});
    let first: Value = post("release-42", body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = post("release-42", body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"], "no second request");
    let other = post("release-42", json!({"bundles": ["registry.example.com/op/bundle:2.0"], "from_index": "registry.example.com/index:v4.18"})).await.unwrap();
    assert_eq!(other.status(), 409);
    let (_, page) = api.get("/api/v1/builds").await;
    assert_eq!(page["meta"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_annotations_and_answer_a_list() {
    let api = Api::start(&[]).await;
    let (status, body) = api
        .post(
            "/api/v1/builds/add-rm-batch",
            USER,
            json!({
                "annotations": {"errata": "RHBA-2026:1"},
                "build_requests": [
                    {"bundles": ["registry.example.com/op/bundle:1.0"], "from_index": "registry.example.com/index:v4.18"},
                    {"operators": ["op"], "from_index": "registry.example.com/index:v4.17"},
                ],
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["batch"], items[1]["batch"]);
    assert_eq!(
        items[1]["batch_annotations"],
        json!({"errata": "RHBA-2026:1"})
    );
    assert_eq!(items[1]["request_type"], "rm");
    let (status, body) = api
        .post(
            "/api/v1/builds/add-rm-batch",
            USER,
            json!({"build_requests": [{"bundles": ["registry.example.com/op/bundle:1.0"], "from_index": "registry.example.com/index:v4.18"}, {"foo": "bar"}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "Build request is not a valid Add/Rm request. This occurred on the build request in index 1.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_history_is_served_and_streamed_until_the_request_ends() {
    let api = Api::start(&[]).await;
    let (status, created) = api
        .post(
            "/api/v1/builds/add",
            USER,
            json!({"bundles": ["registry.example.com/op/bundle:1.0"], "from_index": "registry.example.com/index:v4.18",
                   "overwrite_from_index": true, "overwrite_from_index_token": "user:s3cr3t"}),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_u64().unwrap();
    let (status, history) = api.get(&format!("/api/v1/builds/{id}/events")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["BatchCreated", "RequestSubmitted"]);
    assert_eq!(history[1]["actor"], format!("user {USER}"));
    assert!(
        !history.to_string().contains("s3cr3t"),
        "the token is not in the audit trail"
    );
    assert!(!created.to_string().contains("s3cr3t"), "nor in the answer");

    let mut stream = api
        .client
        .get(api.server.url(&format!("/api/v1/builds/{id}/events")))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !seen.contains("event: RequestSubmitted") {
        seen.push_str(&String::from_utf8_lossy(
            &stream.chunk().await.unwrap().unwrap(),
        ));
    }
    api.patch(
        id,
        json!({"state": "in_progress", "state_reason": "Building"}),
    )
    .await;
    api.patch(id, json!({"state": "complete", "state_reason": "Done"}))
        .await;
    let read_all = async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    };
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), read_all)
        .await
        .expect("the stream ends when the request ends");
    let order: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        order,
        [
            "BatchCreated",
            "RequestSubmitted",
            "ProgressRecorded",
            "RequestCompleted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_requests_have_no_events() {
    let api = Api::start(&[]).await;
    let (status, _) = api.get("/api/v1/builds/77/events").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_away_calls_get_503_and_the_service_recovers() {
    use sqlx::Connection;
    let admin_url = support::postgres_admin_url();
    let name = format!("iib_test_outage_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let api = Api::start(&[("IIB_DATABASE_URL", url.as_str())]).await;
    let id = api.add("registry.example.com/index:v4.18").await;

    let set_allowed = |allowed: bool| {
        let name = name.clone();
        let admin_url = admin_url.clone();
        async move {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}"
            ))
            .execute(&mut admin)
            .await
            .unwrap();
            if !allowed {
                sqlx::query(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .execute(&mut admin)
                .await
                .unwrap();
            }
        }
    };
    set_allowed(false).await;
    let (status, body) = api.get(&format!("/api/v1/builds/{id}")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("retry"));
    let (status, body) = api.get("/api/v1/healthcheck").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (500, "Database health check failed.")
    );
    let (status, _) = api
        .post(
            "/api/v1/builds/add",
            USER,
            json!({"bundles": ["r/b:1"], "from_index": "r/i:1"}),
        )
        .await;
    assert_eq!(status, 503);

    set_allowed(true).await;
    let started = std::time::Instant::now();
    loop {
        let (status, body) = api.get(&format!("/api/v1/builds/{id}")).await;
        if status == 200 {
            assert_eq!(body["id"], id);
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "the service did not recover: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, _) = api.get("/api/v1/healthcheck").await;
    assert_eq!(status, 200);
    drop(api);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Every route the API serves, by method and path: IIB's API v1 as our document must list it.
const DOCUMENTED_ROUTES: [&str; 19] = [
    "GET /api/v1/healthcheck",
    "GET /api/v1/builds",
    "GET /api/v1/builds/{id}",
    "PATCH /api/v1/builds/{id}",
    "GET /api/v1/builds/{id}/events",
    "GET /api/v1/builds/{id}/logs",
    "GET /api/v1/builds/{id}/related_bundles",
    "GET /api/v1/builds/{id}/nested-bundles",
    "GET /api/v1/builds/{id}/deprecation-schema",
    "POST /api/v1/builds/add",
    "POST /api/v1/builds/rm",
    "POST /api/v1/builds/add-rm-batch",
    "POST /api/v1/builds/regenerate-bundle",
    "POST /api/v1/builds/regenerate-bundle-batch",
    "POST /api/v1/builds/merge-index-image",
    "POST /api/v1/builds/create-empty-index",
    "POST /api/v1/builds/recursive-related-bundles",
    "POST /api/v1/builds/fbc-operations",
    "POST /api/v1/builds/add-deprecations",
];

/// The routes served but left out of the document on purpose: the docs page, the document
/// itself, the Prometheus scrape target and the liveness and readiness probes.
const UNDOCUMENTED_ROUTES: [&str; 5] = [
    "GET /",
    "GET /api/v1/openapi.json",
    "GET /metrics",
    "GET /livez",
    "GET /readyz",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_the_docs_page_points_at_it() {
    let api = Api::start(&[]).await;
    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let mut expected: Vec<String> = DOCUMENTED_ROUTES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(routes, expected);
    assert_eq!(
        UNDOCUMENTED_ROUTES
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        iib::api::UNDOCUMENTED_ROUTES
            .iter()
            .map(|(method, path)| format!("{method} {path}"))
            .collect::<Vec<_>>(),
        "the router's undocumented routes are these and no others"
    );

    // The router serves each of these routes, and no other method on their paths: a route is
    // served when the router neither answers 404 (no such path) nor 405 (not that method).
    // `{id}` is a real (add) request, so the handlers behind it do not answer 404 either.
    let id = api
        .add("registry.example.com/index:v4.18")
        .await
        .to_string();
    let served: Vec<(&str, String)> = DOCUMENTED_ROUTES
        .iter()
        .chain(&UNDOCUMENTED_ROUTES)
        .map(|route| {
            let (method, path) = route.split_once(' ').unwrap();
            (method, path.replace("{id}", &id))
        })
        .collect();
    let paths: std::collections::BTreeSet<&String> = served.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let response = api
                .client
                .request(method.parse().unwrap(), api.server.url(path))
                .header("X-Remote-User", WORKER)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if served.iter().any(|(m, p)| *m == method && p == path) {
                assert!(
                    status != 404 && status != 405,
                    "{method} {path} is not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, body.as_str()),
                    (
                        405,
                        "{\"error\":\"The method is not allowed for the requested URL.\"}\n"
                    ),
                    "{method} {path} is served but not listed"
                );
            }
        }
    }

    let page = api.client.get(api.server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/api/v1/openapi.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kafka_broker_never_blocks_requests() {
    let dead = format!("127.0.0.1:{}", support::server::free_port());
    let api = Api::start(&[("IIB_KAFKA_BROKERS", dead.as_str())]).await;
    let started = std::time::Instant::now();
    let id = api.add("registry.example.com/index:v4.18").await;
    let (status, body) = api
        .patch(id, json!({"state": "complete", "state_reason": "done"}))
        .await;
    assert_eq!((status, body["state"].as_str().unwrap()), (200, "complete"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "requests did not wait for Kafka"
    );
}

/// `name`'s value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_how_far_the_relay_is_behind() {
    // A broker that never answers: the relay is on but delivers nothing.
    let dead = format!("127.0.0.1:{}", support::server::free_port());
    let api = Api::start(&[("IIB_KAFKA_BROKERS", dead.as_str())]).await;
    api.add("registry.example.com/index:v4.18").await;
    let text = api
        .client
        .get(api.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| metric(&text, name);
    assert_eq!(
        value("iib_events_total"),
        2.0,
        "BatchCreated and RequestSubmitted"
    );
    assert_eq!(value("iib_read_model_lag_events"), 0.0);
    assert_eq!(
        value("iib_relay_lag_events"),
        2.0,
        "the broker is unreachable: nothing relayed"
    );
    assert!(value("iib_relay_lag_seconds") >= 0.0);
    assert_eq!(value("iib_relay_dead_letters_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kafka_metrics_report_no_relay_lag() {
    let api = Api::start(&[]).await;
    api.add("registry.example.com/index:v4.18").await;
    let text = api
        .client
        .get(api.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text, "iib_events_total"), 2.0);
    assert_eq!(
        metric(&text, "iib_relay_lag_events"),
        0.0,
        "no relay runs: nothing is behind"
    );
    assert_eq!(metric(&text, "iib_relay_lag_seconds"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_say_live_and_whether_ready_naming_what_is_missing() {
    use sqlx::Connection;
    let data = tempfile::tempdir().unwrap();
    let settings = base_settings(data.path());
    let server = Server::start_in(data.path(), &settings, false).await;
    let get = |path: &'static str| {
        let url = server.url(path);
        async move {
            let response = reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/livez").await, (200, json!({"status": "live"})));
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "projector": "ok"}})
    );

    // A migration this iib knows but the database lacks: not ready, and the answer says which.
    let url = iib::store::Store::sqlite_url_in(data.path());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM schema_migrations WHERE name = 'set_aside_events'")
        .execute(&mut db)
        .await
        .unwrap();
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .starts_with("not applied: set_aside_events"),
        "{body}"
    );
    // Liveness does not depend on the database.
    assert_eq!(get("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtools_check() {
    let api = Api::start(&[]).await;
    api.add("registry.example.com/index:v4.18").await;
    let text = api
        .client
        .get(api.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is needed: tests/run-all.sh installs it");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
