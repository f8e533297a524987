//! Hostile input against a real `iib serve`: malformed and abusive bodies, headers and query
//! strings. After each one the service must still answer its health check and accept and show
//! a well-formed request; no answer may be a 5xx; at the end every request has ended (the
//! queue actors fail them: their registry does not exist) and the read model rebuilt from the
//! events equals the live one. Also: slow clients, killed submissions with an idempotency key,
//! and generated bodies whose accepted ones must survive the whole round trip.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::server::{free_port, Server};

const USER: &str = "tbrady@DOMAIN.LOCAL";
const WORKER: &str = "worker@DOMAIN.LOCAL";

/// A loopback port nothing listens on: every registry call fails at once.
fn dead_registry() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn settings(registry: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert("IIB_WORKER_USERNAMES".into(), format!(r#"["{WORKER}"]"#));
    s.insert("IIB_QUEUE_ACTORS".into(), "true".into());
    s.insert("IIB_REGISTRY".into(), registry.into());
    s.insert("IIB_TOTAL_ATTEMPTS".into(), "1".into());
    s.insert("IIB_RETRY_DELAY".into(), "0".into());
    s.insert("IIB_RETRY_JITTER".into(), "0".into());
    s.insert(
        "IIB_BINARY_IMAGE_CONFIG".into(),
        format!(r#"{{"prod": {{"v4.18": "{registry}/opm:v4.18"}}}}"#),
    );
    for (k, v) in extra {
        s.insert(k.to_string(), v.to_string());
    }
    s
}

fn nested_arrays(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// One hostile call: what is sent.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// The status it must get.
    expect: u16,
}

fn post(name: &'static str, path: &str, body: impl Into<Vec<u8>>, expect: u16) -> Case {
    Case {
        name,
        method: "POST",
        path: path.to_string(),
        headers: vec![("Content-Type", "application/json".into())],
        body: Some(body.into()),
        expect,
    }
}

fn get(name: &'static str, path: &str, expect: u16) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_string(),
        headers: vec![],
        body: None,
        expect,
    }
}

fn cases(registry: &str) -> Vec<Case> {
    let add = "/api/v1/builds/add";
    let batch = "/api/v1/builds/add-rm-batch";
    let bundle = format!("{registry}/ns/bundle:1.0");
    let index = format!("{registry}/ns/index:v4.18");
    let add_body = |extra: &str| {
        format!(r#"{{"bundles": ["{bundle}"], "from_index": "{index}"{extra}}}"#).into_bytes()
    };
    let batch_body = |annotations: &str| {
        format!(
            r#"{{"annotations": {annotations}, "build_requests": [{{"bundles": ["{bundle}"], "from_index": "{index}"}}]}}"#
        )
        .into_bytes()
    };
    let many_bundles: Vec<String> = (0..20_000).map(|i| format!("{registry}/b:{i}")).collect();
    let many_requests: Vec<Value> = (0..5_000)
        .map(|_| json!({"bundles": [bundle], "from_index": index}))
        .collect();
    let mut annotations_1001 = serde_json::Map::new();
    for i in 0..1001 {
        annotations_1001.insert(format!("k{i}"), json!(i));
    }
    let mut cases = vec![
        // Deep nesting in every field that takes arrays or objects.
        post("annotations 125 arrays deep", batch, batch_body(&format!(r#"{{"a": {}}}"#, nested_arrays(125))), 400),
        post("annotations 40 objects deep", batch, batch_body(&nested_objects(40)), 400),
        post("bundles nested 60 deep", add, format!(r#"{{"bundles": {}, "from_index": "{index}"}}"#, nested_arrays(60)), 400),
        post("from_index an object 50 deep", add, format!(r#"{{"bundles": ["{bundle}"], "from_index": {}}}"#, nested_objects(50)), 400),
        post("build_tags nested 50 deep", add, add_body(&format!(r#", "build_tags": {}"#, nested_arrays(50))), 400),
        post("deprecation_list nested", add, add_body(&format!(r#", "deprecation_list": {}"#, nested_arrays(50))), 400),
        post("add_arches nested", add, add_body(&format!(r#", "add_arches": {}"#, nested_arrays(50))), 400),
        post("body 300 arrays deep", add, nested_arrays(300), 400),
        post("build_requests nested", batch, format!(r#"{{"build_requests": {}}}"#, nested_arrays(60)), 400),
        post("regenerate registry_auths nested", "/api/v1/builds/regenerate-bundle", format!(r#"{{"from_bundle_image": "{bundle}", "registry_auths": {{"auths": {}}}}}"#, nested_objects(50)), 400),
        post("regenerate batch annotations nested", "/api/v1/builds/regenerate-bundle-batch", format!(r#"{{"annotations": {}, "build_requests": [{{"from_bundle_image": "{bundle}"}}]}}"#, nested_objects(45)), 400),
        post("create-empty-index labels nested", "/api/v1/builds/create-empty-index", format!(r#"{{"from_index": "{index}", "labels": {}}}"#, nested_objects(50)), 400),
        post("fbc-operations fragments nested", "/api/v1/builds/fbc-operations", format!(r#"{{"from_index": "{index}", "fbc_fragments": {}}}"#, nested_arrays(50)), 400),
        post("merge-index-image deprecation_list nested", "/api/v1/builds/merge-index-image", format!(r#"{{"source_from_index": "{index}", "deprecation_list": {}}}"#, nested_arrays(50)), 400),
        // NUL and other control characters, lone surrogates, invalid UTF-8.
        post("NUL in a bundle", add, format!(r#"{{"bundles": ["{bundle}\u0000"], "from_index": "{index}"}}"#), 400),
        post("NUL in from_index", add, format!(r#"{{"bundles": ["{bundle}"], "from_index": "{index}\u0000"}}"#), 400),
        post("control character in binary_image", add, add_body(r#", "binary_image": "quay.io/x/opm\u0001:1""#), 400),
        post("newline in from_index", add, format!(r#"{{"bundles": ["{bundle}"], "from_index": "{index}\nx"}}"#), 400),
        post("NUL in an annotation key", batch, batch_body(r#"{"k\u0000": "v"}"#), 400),
        post("NUL in an annotation value", batch, batch_body(r#"{"k": "v\u0000"}"#), 400),
        post("NUL in a token", add, add_body(r#", "overwrite_from_index": true, "overwrite_from_index_token": "u:t\u0000""#), 400),
        post("NUL in an rm operator", "/api/v1/builds/rm", format!(r#"{{"operators": ["op\u0000"], "from_index": "{index}"}}"#), 400),
        post("DEL in a build tag", add, add_body(r#", "build_tags": ["t\u007f"]"#), 400),
        post("C1 control in organization", add, add_body(r#", "organization": "o\u0085""#), 400),
        post("lone surrogate in a bundle", add, format!(r#"{{"bundles": ["{bundle}\ud800"], "from_index": "{index}"}}"#), 400),
        post("invalid UTF-8 body", add, { let mut b = add_body(""); b.insert(3, 0xff); b }, 400),
        post("invalid UTF-8 in a string", add, { let mut b = b"{\"bundles\": [\"a:\xc3\x28\"]}".to_vec(); b.push(b'\n'); b }, 400),
        // Huge lists, strings and batches.
        post("20,000 bundles", add, json!({"bundles": many_bundles, "from_index": index}).to_string(), 400),
        post("a 1 MB from_index", add, json!({"bundles": [bundle], "from_index": format!("{}:1", "a".repeat(1 << 20))}).to_string(), 400),
        post("5,000 build requests", batch, json!({"build_requests": many_requests}).to_string(), 400),
        post("1,001 annotation keys", batch, json!({"annotations": annotations_1001, "build_requests": [{"bundles": [bundle], "from_index": index}]}).to_string(), 400),
        post("a 100 kB deprecation schema", "/api/v1/builds/add-deprecations", json!({"from_index": index, "operator_package": "op", "deprecation_schema": "x".repeat(100_000)}).to_string(), 400),
        // Other malformed bodies.
        post("empty body", add, Vec::new(), 400),
        post("null body", add, "null", 400),
        post("array body", add, "[1,2]", 400),
        post("number out of range", add, r#"{"bundles": [1e999]}"#, 400),
        post("duplicate keys", add, format!(r#"{{"bundles": ["{bundle}"], "bundles": 7, "from_index": "{index}"}}"#), 400),
        // Query strings and ids.
        get("page overflowing i64", "/api/v1/builds?page=99999999999999999999", 404),
        get("negative per_page", "/api/v1/builds?per_page=-1", 404),
        get("huge per_page", "/api/v1/builds?per_page=18446744073709551616", 404),
        get("id overflowing u64", "/api/v1/builds/99999999999999999999", 404),
        get("negative id", "/api/v1/builds/-1", 404),
        get("batch filter out of range", "/api/v1/builds?batch=1e400", 400),
        get("NUL in a state filter", "/api/v1/builds?state=%00", 400),
        get("NUL in a from_index filter", "/api/v1/builds?from_index=%00", 400),
        get("NUL in a user filter", "/api/v1/builds?user=a%00b", 400),
        get("events of an overflowing id", "/api/v1/builds/18446744073709551616/events", 404),
        get("logs of an overflowing id", "/api/v1/builds/99999999999999999999/logs", 404),
        get("a 6 kB query string", &format!("/api/v1/builds?user={}", "u".repeat(6000)), 200),
    ];
    // Headers.
    let mut with = |name, header: &'static str, value: String, expect| {
        let mut case = post(name, add, add_body(""), expect);
        case.headers.push((header, value));
        cases.push(case);
    };
    with(
        "a 300-character Idempotency-Key",
        "Idempotency-Key",
        "k".repeat(300),
        400,
    );
    with(
        "a 10 kB user header",
        "X-Remote-User",
        "u".repeat(10_000),
        400,
    );
    with(
        "a user header with a control-free but odd name",
        "X-Remote-User",
        "   ".into(),
        401,
    );
    with(
        "a 20 kB request id",
        "X-Request-Id",
        "r".repeat(20_000),
        201,
    );
    with(
        "Content-Type with an odd charset",
        "Content-Type",
        "application/json; charset=latin-1".into(),
        201,
    );
    let mut many_headers = post("200 headers", add, add_body(""), 431);
    for i in 0..200 {
        many_headers.headers.push(("X-Filler", format!("{i}")));
    }
    cases.push(many_headers);
    let mut patch = post(
        "PATCH with a NUL state_reason",
        "/api/v1/builds/1",
        r#"{"state_reason": "a\u0000"}"#,
        400,
    );
    patch.method = "PATCH";
    patch.headers.push(("X-Remote-User", WORKER.into()));
    cases.push(patch);
    let mut patch = post(
        "PATCH nested 60 deep",
        "/api/v1/builds/1",
        format!(r#"{{"arches": {}}}"#, nested_arrays(60)),
        400,
    );
    patch.method = "PATCH";
    patch.headers.push(("X-Remote-User", WORKER.into()));
    cases.push(patch);
    cases
}

async fn send(client: &reqwest::Client, base: &str, case: &Case) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{base}{}", case.path));
    let mut has_user = false;
    for (name, value) in &case.headers {
        has_user |= name.eq_ignore_ascii_case("X-Remote-User");
        request = request.header(*name, value.as_str());
    }
    if !has_user {
        request = request.header("X-Remote-User", USER);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            Ok((status, response.text().await.unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The service still works: health check, and a new add shows up in GET at once.
async fn still_serves(client: &reqwest::Client, base: &str, registry: &str, after: &str) -> u64 {
    let health = client
        .get(format!("{base}/api/v1/healthcheck"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {after}: the health check failed: {e}"));
    assert_eq!(health.status(), 200, "after {after}");
    let response = client
        .post(format!("{base}/api/v1/builds/add"))
        .header("X-Remote-User", USER)
        .json(&json!({"bundles": [format!("{registry}/ns/bundle:1.0")], "from_index": format!("{registry}/ns/index:v4.18")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "after {after}");
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shown = client
            .get(format!("{base}/api/v1/builds/{id}"))
            .send()
            .await
            .unwrap();
        if shown.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}: request {id} is not shown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    id
}

async fn wait_all_ended(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            let body: Value = client
                .get(format!("{base}/api/v1/builds?per_page=100&page={page}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = body["items"].as_array().unwrap().clone();
            all.extend(items);
            if body["meta"]["next"].is_null() {
                break;
            }
            page += 1;
        }
        let open = all.iter().filter(|r| r["state"] == "in_progress").count();
        if open == 0 {
            return all;
        }
        assert!(Instant::now() < deadline, "{open} requests never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_never_stop_the_service() {
    let registry = dead_registry();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &settings(&registry, &[]), false).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let cases = cases(&registry);
    assert!(cases.len() + 1 >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        match send(&client, &server.base, case).await {
            Ok((status, body)) => {
                assert!(status < 500, "{}: answered {status}: {body}", case.name);
                if status != case.expect {
                    wrong.push(format!(
                        "{}: {status} (not {}): {body}",
                        case.name, case.expect
                    ));
                }
            }
            // A client-side refusal (reqwest will not send some headers) is no server fault,
            // but the service must still serve afterwards.
            Err(e) => wrong.push(format!("{}: not sent: {e}", case.name)),
        }
        still_serves(&client, &server.base, &registry, case.name).await;
    }
    // A 17 MiB body is refused from its Content-Length, before the body is read: the answer
    // comes although only its first bytes were sent.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = server.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /api/v1/builds/add HTTP/1.1\r\nHost: x\r\nX-Remote-User: {USER}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"bundles\": [",
            17 << 20
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("an answer before the body is sent")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        still_serves(&client, &server.base, &registry, "a 17 MiB body").await;
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
    let all = wait_all_ended(&client, &server.base).await;
    assert!(all.len() >= cases.len(), "{} requests", all.len());
    assert!(all
        .iter()
        .all(|r| r["state"] == "failed" || r["state"] == "complete"));
    server.terminate();
    // The read model rebuilt from the events equals the live one.
    let store = iib::store::Store::connect(&iib::store::Store::sqlite_url_in(dir.path()))
        .await
        .unwrap();
    let live = (
        store.dump_read_model().await.unwrap(),
        store.dump_batches().await.unwrap(),
    );
    iib::projector::Projector::new(store.clone())
        .rebuild(|_, _| {})
        .await
        .unwrap();
    let rebuilt = (
        store.dump_read_model().await.unwrap(),
        store.dump_batches().await.unwrap(),
    );
    assert_eq!(live, rebuilt);
    assert!(store.set_aside_events().await.unwrap().is_empty());
}

/// A NUL in a pull spec used to be accepted, then refused by PostgreSQL's `text` columns when
/// projected, which stopped the read model for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_pull_spec_is_refused_on_postgresql_and_the_service_goes_on() {
    let db = support::postgres().await;
    let registry = dead_registry();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        dir.path(),
        &settings(&registry, &[("IIB_DATABASE_URL", db.url.as_str())]),
        false,
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/api/v1/builds/add"))
        .header("X-Remote-User", USER)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"bundles": ["{registry}/ns/bundle:1.0\u0000"], "from_index": "{registry}/ns/index:v4.18"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "The \"bundles\" value contains the control character U+0000; remove it"
    );
    still_serves(&client, &server.base, &registry, "the NUL pull spec").await;
    // Filters with a NUL are refused too (PostgreSQL cannot compare them).
    let response = client
        .get(server.url("/api/v1/builds?from_index=a%00b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// The nested-annotations batch that used to stop the whole service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_annotations_are_refused_with_a_clear_message() {
    let registry = dead_registry();
    let server = Server::start(&settings(&registry, &[])).await;
    let client = reqwest::Client::new();
    let body = format!(
        r#"{{"annotations": {{"a": {}}}, "build_requests": [{{"bundles": ["{registry}/b:1"], "from_index": "{registry}/i:1"}}]}}"#,
        nested_arrays(125)
    );
    let response = client
        .post(server.url("/api/v1/builds/add-rm-batch"))
        .header("X-Remote-User", USER)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "The \"annotations.a\" value nests arrays and objects deeper than 32 levels (IIB_MAX_JSON_DEPTH)"
    );
    // Nesting within the limit is stored and answered as sent.
    let annotations = json!({"a": serde_json::from_str::<Value>(&nested_arrays(28)).unwrap()});
    let response = client
        .post(server.url("/api/v1/builds/add-rm-batch"))
        .header("X-Remote-User", USER)
        .json(&json!({"annotations": annotations, "build_requests": [{"bundles": [format!("{registry}/b:1")], "from_index": format!("{registry}/i:1")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created[0]["batch_annotations"], annotations);
    still_serves(&client, &server.base, &registry, "nested annotations").await;
}

/// Clients that trickle their headers (slowloris) are cut off after the header timeout and
/// never keep others from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_stop_the_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registry = dead_registry();
    let server = Server::start(&settings(
        &registry,
        &[("IIB_HTTP_HEADER_TIMEOUT_SECONDS", "2")],
    ))
    .await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..10 {
        let health = client
            .get(server.url("/api/v1/healthcheck"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "others waited {:?}",
        started.elapsed()
    );
    // Keep trickling: the server closes each slow connection after the header timeout.
    let started = Instant::now();
    for stream in &mut slow {
        let _ = stream.write_all(b"X-Slow: 1\r\n").await;
    }
    for stream in &mut slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(_)) | Ok(Err(_)) => {} // an answer (408) or the connection closed
            Err(_) => panic!(
                "a slow connection was still open after {:?}",
                started.elapsed()
            ),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// A submission killed in flight never jams its idempotency key: a retry gets the request the
/// first call created, or creates it, and never a 409 or a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_submissions_idempotency_key_still_works() {
    let registry = dead_registry();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&registry, &[("IIB_QUEUE_ACTORS", "false")]);
    let body = json!({"bundles": [format!("{registry}/ns/bundle:1.0")], "from_index": format!("{registry}/ns/index:v4.18")});
    let client = reqwest::Client::new();
    for (round, delay_ms) in [0u64, 1, 2, 4, 8].into_iter().enumerate() {
        let key = format!("release-{round}");
        let mut server = Server::start_in(dir.path(), &settings, false).await;
        let sent = client
            .post(server.url("/api/v1/builds/add"))
            .header("X-Remote-User", USER)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send();
        let sent = tokio::spawn(sent);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill9();
        let _ = sent.await;
        let server = Server::start_in(dir.path(), &settings, false).await;
        let retry = client
            .post(server.url("/api/v1/builds/add"))
            .header("X-Remote-User", USER)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(retry.status(), 201, "round {round}");
        let again = client
            .post(server.url("/api/v1/builds/add"))
            .header("X-Remote-User", USER)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 201);
        let (a, b): (Value, Value) = (retry.json().await.unwrap(), again.json().await.unwrap());
        assert_eq!(a["id"], b["id"], "round {round}: one request per key");
        let page: Value = client
            .get(server.url("/api/v1/builds?per_page=100"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["meta"]["total"], round as u64 + 1, "round {round}");
        drop(server);
    }
}

/// A small deterministic generator (xorshift), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Mostly printable text (any Unicode, quotes, escapes); now and then a refused control
    /// character or a string past IIB_MAX_STRING_BYTES.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            " ",
            "é",
            "😀",
            "\n",
            "\t",
            "\u{2028}",
            "\u{feff}",
            "\"",
            "\\",
            "/",
            ":",
            "@",
            "{",
            "}",
            "%00",
            "\u{10ffff}",
        ];
        const REFUSED: &[&str] = &["\u{0}", "\u{1}", "\u{7f}", "\u{85}"];
        let len = match self.below(400) {
            0 => 60_000 + self.below(10_000) as usize,
            _ => self.below(12) as usize,
        };
        let mut s = String::new();
        while s.len() < len {
            s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
        }
        if self.below(150) == 0 {
            s.push_str(REFUSED[self.below(REFUSED.len() as u64) as usize]);
        }
        s
    }

    /// A JSON value at most `depth` deep, of at most `budget` nodes; one container in twenty
    /// is wide (up to 1,100 items, past IIB_MAX_LIST_ITEMS).
    fn value(&mut self, depth: usize, budget: &mut usize) -> Value {
        *budget = budget.saturating_sub(1);
        let leaf = depth == 0 || *budget == 0 || self.below(4) == 0;
        if leaf {
            return match self.below(6) {
                0 => Value::Null,
                1 => json!(self.below(2) == 0),
                2 => json!(self.next() as i64),
                3 => json!((self.next() as f64) / 7.0),
                _ => json!(self.text()),
            };
        }
        let width = match self.below(20) {
            0 => self.below(1_100) as usize,
            _ => 1 + self.below(2) as usize,
        };
        if self.below(2) == 0 {
            Value::Array((0..width).map(|_| self.value(depth - 1, budget)).collect())
        } else {
            let mut map = serde_json::Map::new();
            for _ in 0..width {
                let key = self.text();
                map.insert(key, self.value(depth - 1, budget));
            }
            Value::Object(map)
        }
    }
}

/// Generated bodies: whatever the API accepts is stored, answered as sent, shown in the
/// request's history and survives a rebuild of the read model, on SQLite and PostgreSQL.
async fn generated_bodies_round_trip(database_url: Option<String>) {
    let registry = dead_registry();
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec![("IIB_QUEUE_ACTORS", "false")];
    if let Some(url) = &database_url {
        extra.push(("IIB_DATABASE_URL", url.as_str()));
    }
    let mut server = Server::start_in(dir.path(), &settings(&registry, &extra), false).await;
    let client = reqwest::Client::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..120 {
        let depth = 20 + rng.below(20) as usize;
        let annotations = match rng.value(depth, &mut 3_000) {
            Value::Object(map) => Value::Object(map),
            other => json!({ "generated": other }),
        };
        let bundle = format!("{registry}/ns/{}:1", rng.text());
        let body = json!({
            "annotations": annotations,
            "build_requests": [{"bundles": [bundle], "from_index": format!("{registry}/i:1"), "build_tags": [rng.text()]}],
        });
        let response = client
            .post(server.url("/api/v1/builds/add-rm-batch"))
            .header("X-Remote-User", USER)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert!(
            status == 201 || status == 400,
            "round {round}: {status} {answer}"
        );
        if status == 400 {
            refused += 1;
            continue;
        }
        accepted += 1;
        let id = answer[0]["id"].as_u64().unwrap();
        let shown: Value = client
            .get(server.url(&format!("/api/v1/builds/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            shown["batch_annotations"], body["annotations"],
            "round {round}"
        );
        assert_eq!(shown["bundles"], body["build_requests"][0]["bundles"]);
        let history = client
            .get(server.url(&format!("/api/v1/builds/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(history.status(), 200, "round {round}");
    }
    assert!(
        accepted >= 20 && refused >= 20,
        "accepted {accepted}, refused {refused}"
    );
    still_serves(&client, &server.base, &registry, "generated bodies").await;
    server.terminate();
    let url = database_url.unwrap_or_else(|| iib::store::Store::sqlite_url_in(dir.path()));
    let store = iib::store::Store::connect(&url).await.unwrap();
    let live = store.dump_read_model().await.unwrap();
    iib::projector::Projector::new(store.clone())
        .rebuild(|_, _| {})
        .await
        .unwrap();
    assert_eq!(store.dump_read_model().await.unwrap(), live);
    assert!(store.set_aside_events().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_round_trip_on_sqlite() {
    generated_bodies_round_trip(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_round_trip_on_postgresql() {
    let db = support::postgres().await;
    generated_bodies_round_trip(Some(db.url.clone())).await;
}

/// A request whose history cannot be read back (an event an older iib let through) is passed
/// over: the read model sets that event aside and a serial queue goes on to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_request_never_holds_its_serial_queue() {
    let registry = dead_registry();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = iib::store::Store::connect(&iib::store::Store::sqlite_url_in(dir.path()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let bus = iib::command_bus::CommandBus::new(store.clone(), chrono::Duration::hours(1));
        let first = support::submit_rm(&bus, Some(USER), "first").await;
        store
            .append(
                &[iib::store::NewEvent {
                    aggregate_type: "BuildRequest".into(),
                    aggregate_id: first.requests[0].to_string(),
                    sequence: 2,
                    event_type: "Bogus".into(),
                    event_version: iib_aggregates::EVENT_VERSION.into(),
                    payload: json!({"Bogus": {}}),
                    metadata: json!({}),
                    recorded_at: chrono::Utc::now(),
                }],
                &[],
            )
            .await
            .unwrap();
        support::submit_rm(&bus, Some(USER), "second").await;
        store.close().await;
    }
    let server = Server::start_in(
        dir.path(),
        &settings(
            &registry,
            &[("IIB_QUEUES", r#"{"default": {"concurrency": 1}}"#)],
        ),
        false,
    )
    .await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let second: Value = client
            .get(server.url("/api/v1/builds/2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if second["state"] == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the serial queue is stuck behind the unreadable request: {second}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("iib_events_set_aside_total{reader=\"read_model\"} 1\n"),
        "{metrics}"
    );
    let first: Value = client
        .get(server.url("/api/v1/builds/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["state"], "in_progress");
}
