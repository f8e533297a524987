//! The queue actors end to end: requests submitted over HTTP to a real `iib serve` are built
//! against a real registry, and the pushed images are checked with skopeo and umoci.

mod support;

use iib::catalog_cli::Sources;
use iib_fbc::add::{add_bundles, AddOptions};
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::render::ObjectsAs;
use iib_oci::{ClientOptions, Reference, RegistryClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::bundles::{community_packages, push_binary_image, push_bundle, push_index_image};
use support::registry::Registry;
use support::server::Server;
use support::world::{world, World};

async fn serve(world: &World, logs: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "true"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REGISTRY", world.registry.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.to_str().unwrap()),
        ("IIB_TOTAL_ATTEMPTS", "2"),
        ("IIB_RETRY_DELAY", "0"),
        ("IIB_RETRY_JITTER", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        settings.insert(k.to_string(), v.to_string());
    }
    Server::start(&settings).await
}

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body
}

/// Polls a request until it is no longer in progress.
async fn finished(server: &Server, id: u64) -> Value {
    let started = Instant::now();
    loop {
        let body: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["state"] != "in_progress" {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "request {id} still in progress: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("skopeo and umoci are installed by tests/run-all.sh")
}

fn skopeo_inspect(image: &str, arch: &str) -> Option<Value> {
    let out = run(&[
        "skopeo",
        "--insecure-policy",
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        arch,
        &format!("docker://{image}"),
    ]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The files under `/configs` of an image's `arch`, unpacked with umoci.
fn unpacked_configs(image: &str, arch: &str) -> BTreeMap<String, String> {
    unpacked_configs_as(image, arch, None)
}

/// `unpacked_configs`, reading the image with `user:password`.
fn unpacked_configs_with(image: &str, arch: &str, creds: &str) -> BTreeMap<String, String> {
    unpacked_configs_as(image, arch, Some(creds))
}

fn unpacked_configs_as(image: &str, arch: &str, creds: Option<&str>) -> BTreeMap<String, String> {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let source = format!("docker://{image}");
    let destination = format!("oci:{}:built", layout.display());
    let mut args = vec![
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
    ];
    let creds_arg;
    if let Some(creds) = creds {
        creds_arg = format!("--src-creds={creds}");
        args.push(&creds_arg);
    }
    args.extend([source.as_str(), destination.as_str()]);
    let copied = run(&args);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let bundle = work.path().join("bundle");
    let unpacked = run(&[
        "umoci",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:built", layout.display()),
        &bundle.display().to_string(),
    ]);
    assert!(
        unpacked.status.success(),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    let root = bundle.join("rootfs/configs");
    let mut files = BTreeMap::new();
    for entry in walk(&root) {
        let relative = entry.strip_prefix(&root).unwrap().display().to_string();
        files.insert(relative, std::fs::read_to_string(&entry).unwrap());
    }
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn bundle_names(catalog_json: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(catalog_json)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .filter(|b| b["schema"] == "olm.bundle")
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_request_builds_and_pushes_the_new_index() {
    let world = world(8).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    let submitted = post(
        &server,
        "/api/v1/builds/add",
        json!({
            "bundles": [world.bundles[8], world.bundles[9]],
            "from_index": world.index,
            "binary_image": world.binary,
            "build_tags": ["extra-tag"],
        }),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let done = finished(&server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        done["state_reason"],
        "The operator bundle(s) were successfully added to the index image"
    );
    let pushed = format!("{}/iib-build:{id}", world.registry.host);
    assert_eq!(done["index_image"], pushed.as_str());
    assert!(done["index_image_resolved"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/iib-build@sha256:", world.registry.host)));
    assert_eq!(done["arches"], json!(["amd64", "arm64"]));
    assert_eq!(
        done["bundle_mapping"]["kube-green"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{done}"
    );

    // Third-party tools see the image IIB would have pushed.
    for arch in ["amd64", "arm64"] {
        let inspected = skopeo_inspect(&pushed, arch).expect("the index image is pushed");
        assert_eq!(inspected["Architecture"], arch);
        assert_eq!(
            inspected["Labels"]["operators.operatorframework.io.index.configs.v1"],
            "/configs"
        );
        assert_eq!(
            inspected["Labels"]["com.redhat.index.delivery.version"],
            "v4.18"
        );
    }
    assert!(skopeo_inspect(
        &format!("{}/iib-build:extra-tag", world.registry.host),
        "amd64"
    )
    .is_some());
    let configs = unpacked_configs(&pushed, "arm64");
    let catalog = &configs["kube-green/catalog.json"];
    let names = bundle_names(catalog);
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(names.contains(&"kube-green.v0.7.1".to_string()));
    assert!(
        configs.keys().all(|k| k.starts_with("kube-green/")),
        "{configs:?}"
    );

    // The request's log.
    let log = reqwest::get(server.url(&format!("/api/v1/builds/{id}/logs")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("Resolving the bundles"), "{log}");
    assert!(log.contains("Pushed the index image"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_the_request_with_a_reason_and_push_nothing() {
    let world = world(3).await;
    let logs = tempfile::tempdir().unwrap();
    // An organization whose pull specs must carry a label none of them has.
    let server = serve(
        &world,
        logs.path(),
        &[(
            "IIB_ORGANIZATION_CUSTOMIZATIONS",
            r#"{"strict": [{"type": "image_name_from_labels", "template": "{com.example.team}/{name}"}]}"#,
        )],
    )
    .await;
    // A bundle that does not exist.
    let missing = post(
        &server,
        "/api/v1/builds/add",
        json!({
            "bundles": [format!("{}/kube-green-bundle:9.9.9", world.registry.host)],
            "from_index": world.index,
            "binary_image": world.binary,
        }),
    )
    .await;
    // A binary image without the index's arches.
    let amd64_only = format!("{}/opm:amd64-only", world.registry.host);
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    push_binary_image(&client, &amd64_only.parse().unwrap(), &["amd64"]).await;
    let arches = post(
        &server,
        "/api/v1/builds/add",
        json!({
            "bundles": [world.bundles[3]],
            "from_index": world.index,
            "binary_image": amd64_only,
        }),
    )
    .await;
    // A bundle whose replaces is not in the index.
    let gap = post(
        &server,
        "/api/v1/builds/add",
        json!({
            "bundles": [world.bundles[6]],
            "from_index": world.index,
            "binary_image": world.binary,
        }),
    )
    .await;
    // A registry nothing listens on.
    let unreachable = post(
        &server,
        "/api/v1/builds/add",
        json!({
            "bundles": ["127.0.0.1:9/kube-green-bundle:0.1.0"],
            "from_index": world.index,
            "binary_image": world.binary,
        }),
    )
    .await;
    let (bundle, _) = bundle_with_references(&world.registry.host).await;
    let strict = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        json!({"from_bundle_image": bundle, "organization": "strict"}),
    )
    .await;
    for (submitted, reason) in [
        (
            &unreachable,
            "Failed to resolve the container image 127.0.0.1:9/kube-green-bundle:0.1.0",
        ),
        (
            &strict,
            "is missing one or more label(s) required in the image_name_from_labels {com.example.team}/{name}",
        ),
        (&missing, "kube-green-bundle:9.9.9"),
        (
            &arches,
            "The binary image is not available for the following arches: arm64",
        ),
        (&gap, "replaces nonexistent bundle"),
    ] {
        let id = submitted["id"].as_u64().unwrap();
        let done = finished(&server, id).await;
        assert_eq!(done["state"], "failed", "{done}");
        let state_reason = done["state_reason"].as_str().unwrap();
        assert!(state_reason.contains(reason), "{state_reason}");
        assert!(
            skopeo_inspect(&format!("{}/iib-build:{id}", world.registry.host), "amd64").is_none(),
            "request {id} failed but pushed an image"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_and_create_empty_index_requests() {
    let world = world(4).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    let rm = post(
        &server,
        "/api/v1/builds/rm",
        json!({"operators": ["kube-green"], "from_index": world.index, "binary_image": world.binary}),
    )
    .await;
    let empty = post(
        &server,
        "/api/v1/builds/create-empty-index",
        json!({"from_index": world.index, "binary_image": world.binary, "labels": {"version": "v1"}}),
    )
    .await;
    for submitted in [&rm, &empty] {
        let id = submitted["id"].as_u64().unwrap();
        let done = finished(&server, id).await;
        assert_eq!(done["state"], "complete", "{done}");
        let pushed = format!("{}/iib-build:{id}", world.registry.host);
        let configs = unpacked_configs(&pushed, "amd64");
        assert!(configs.is_empty(), "{configs:?}");
    }
    let empty_id = empty["id"].as_u64().unwrap();
    let inspected = skopeo_inspect(
        &format!("{}/iib-build:{empty_id}", world.registry.host),
        "amd64",
    )
    .unwrap();
    assert_eq!(inspected["Labels"]["version"], "v1");
}

/// An index image of `bundles` (pull specs, pinned here) at `target`, on the world's binary.
async fn index_of(world: &World, bundles: &[String], target: &str) {
    index_for(world, bundles, target, "v4.18").await;
}

/// `index_of` for the OpenShift version `ocp` (its delivery label).
async fn index_for(world: &World, bundles: &[String], target: &str, ocp: &str) {
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let mut sources = Sources::new(ClientOptions::default());
    let mut rendered = Vec::new();
    for spec in bundles {
        let reference: Reference = spec.parse().unwrap();
        let digest = client.resolve(&reference).await.unwrap();
        rendered.push(
            sources
                .render_bundle(
                    &reference.with_digest(digest).to_string(),
                    None,
                    ObjectsAs::CsvMetadata,
                )
                .await
                .unwrap(),
        );
    }
    let mut catalog = DeclarativeConfig::default();
    add_bundles(&mut catalog, rendered, &AddOptions::default()).unwrap();
    push_index_image(
        &client,
        &world.binary.parse().unwrap(),
        &target.parse().unwrap(),
        &["amd64", "arm64"],
        &catalog,
        ocp,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_deprecations_and_merges_build_as_iib_does() {
    let world = world(6).await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    // A fragment: an index holding libredb-studio-operator.
    let libredb = community_packages()
        .into_iter()
        .find(|p| p.name == "libredb-studio-operator")
        .unwrap();
    let libredb_bundle = format!("{}/libredb-bundle:0.9.59", world.registry.host);
    push_bundle(
        &client,
        &libredb_bundle.parse().unwrap(),
        &libredb.bundles[0].1,
    )
    .await;
    let fragment = format!("{}/fragment:1", world.registry.host);
    index_of(&world, &[libredb_bundle], &fragment).await;
    // Merge targets holding two more kube-green bundles than the index, for OpenShift 4.17
    // (which 0.6.0's com.redhat.openshift.versions 4.10-4.17 admits) and 4.18 (which it does
    // not). The other bundles carry no such label: the allow list lets them through.
    let target = format!("{}/target-index:v4.17", world.registry.host);
    index_for(&world, &world.bundles[..8], &target, "v4.17").await;
    let newer_target = format!("{}/target-index:v4.18", world.registry.host);
    index_for(&world, &world.bundles[..8], &newer_target, "v4.18").await;
    let allow = format!(r#"["{}"]"#, world.registry.host);

    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_NO_OCP_LABEL_ALLOW_LIST", allow.as_str())],
    )
    .await;
    let fbc = post(
        &server,
        "/api/v1/builds/fbc-operations",
        json!({"from_index": world.index, "binary_image": world.binary, "fbc_fragments": [fragment]}),
    )
    .await;
    let schema = json!({"schema": "olm.deprecations", "package": "kube-green", "entries": [
        {"reference": {"schema": "olm.bundle", "name": "kube-green.v0.3.0"}, "message": "kube-green.v0.3.0 is deprecated"}]});
    let deprecations = post(
        &server,
        "/api/v1/builds/add-deprecations",
        json!({"from_index": world.index, "binary_image": world.binary, "operator_package": "kube-green",
               "deprecation_schema": schema.to_string()}),
    )
    .await;
    let merge = post(
        &server,
        "/api/v1/builds/merge-index-image",
        json!({"source_from_index": world.index, "target_index": target, "binary_image": world.binary,
               "ignore_bundle_ocp_version": true}),
    )
    .await;
    let newer_merge = post(
        &server,
        "/api/v1/builds/merge-index-image",
        json!({"source_from_index": world.index, "target_index": newer_target, "binary_image": world.binary,
               "ignore_bundle_ocp_version": true}),
    )
    .await;

    let done = finished(&server, fbc["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        done["state_reason"],
        "The 1 FBC fragment(s) were successfully added in the index image"
    );
    let configs = unpacked_configs(done["index_image"].as_str().unwrap(), "amd64");
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 6);
    assert_eq!(
        bundle_names(&configs["libredb-studio-operator/catalog.json"]),
        vec!["libredb-studio-operator.v0.9.59"]
    );
    assert_eq!(done["fbc_fragments_resolved"].as_array().unwrap().len(), 1);

    let done = finished(&server, deprecations["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        done["state_reason"],
        "The deprecation schema was successfully added to the index image"
    );
    let configs = unpacked_configs(done["index_image"].as_str().unwrap(), "amd64");
    let blobs: Vec<Value> = serde_json::Deserializer::from_str(&configs["kube-green/catalog.json"])
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let deprecation = blobs
        .iter()
        .find(|b| b["schema"] == "olm.deprecations")
        .expect("a deprecations blob");
    assert_eq!(
        deprecation["entries"][0]["message"],
        "kube-green.v0.3.0 is deprecated"
    );

    let done = finished(&server, merge["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        done["state_reason"],
        "The index image was successfully cleaned and updated."
    );
    let configs = unpacked_configs(done["index_image"].as_str().unwrap(), "arm64");
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 8);
    assert!(done["target_index_resolved"]
        .as_str()
        .unwrap()
        .contains("@sha256:"));
    // For 4.18, 0.6.0 is deprecated as IIB does (the newest such bundle of its package); it
    // heads the default channel and every channel, so the package goes.
    let done = finished(&server, newer_merge["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
    let configs = unpacked_configs(done["index_image"].as_str().unwrap(), "amd64");
    assert!(
        !configs.contains_key("kube-green/catalog.json"),
        "{configs:?}"
    );
}

/// How the Greenwave stand-in answers.
#[derive(Clone, Copy, PartialEq)]
enum Decision {
    Satisfied,
    Unsatisfied,
    /// A 2 MiB answer: more than iib reads of one.
    Huge,
}

/// A stand-in for Greenwave (an external service): answers every decision as `decision` says.
async fn greenwave(decision: Decision) -> String {
    use axum::{routing::post, Json, Router};
    let app = Router::new().route(
        "/decision",
        post(move |Json(body): Json<Value>| async move {
            assert_eq!(body["decision_context"], "iib_test");
            assert_eq!(body["subject_type"], "koji_build");
            assert!(body["subject_identifier"]
                .as_str()
                .unwrap()
                .starts_with("kube-green-bundle-container-0.7"));
            Json(match decision {
                Decision::Satisfied => json!({"policies_satisfied": true}),
                Decision::Unsatisfied => {
                    json!({"policies_satisfied": false, "unsatisfied_requirements": [
                    {"testcase": "test.a"}, {"testcase": "test.b"}]})
                }
                Decision::Huge => {
                    json!({"policies_satisfied": true, "padding": "x".repeat(2 << 20)})
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greenwave_gates_add_requests() {
    let world = world(8).await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let package = community_packages()
        .into_iter()
        .find(|p| p.name == "kube-green")
        .unwrap();
    let labels = BTreeMap::from([
        (
            "com.redhat.component".to_string(),
            "kube-green-bundle-container".to_string(),
        ),
        ("version".to_string(), "0.7".to_string()),
        ("release".to_string(), "1".to_string()),
    ]);
    let gated = format!("{}/kube-green-bundle:gated", world.registry.host);
    support::bundles::push_bundle_with_labels(
        &client,
        &gated.parse().unwrap(),
        &package.bundles[8].1,
        &labels,
    )
    .await;
    let config = json!({"null": {"decision_context": "iib_test", "product_version": "cvp", "subject_type": "koji_build"}})
        .to_string();
    for decision in [Decision::Unsatisfied, Decision::Satisfied, Decision::Huge] {
        let url = greenwave(decision).await;
        let logs = tempfile::tempdir().unwrap();
        let server = serve(
            &world,
            logs.path(),
            &[
                ("IIB_GREENWAVE_URL", url.as_str()),
                ("IIB_GREENWAVE_CONFIG", config.as_str()),
            ],
        )
        .await;
        let submitted = post(
            &server,
            "/api/v1/builds/add",
            json!({"bundles": [gated], "from_index": world.index, "binary_image": world.binary}),
        )
        .await;
        let done = finished(&server, submitted["id"].as_u64().unwrap()).await;
        if decision == Decision::Satisfied {
            assert_eq!(done["state"], "complete", "{done}");
        } else if decision == Decision::Huge {
            assert_eq!(done["state"], "failed", "{done}");
            let reason = done["state_reason"].as_str().unwrap();
            assert!(
                reason.starts_with("Gating check failed for ")
                    && reason.ends_with("the answer is larger than 1048576 bytes"),
                "{reason}"
            );
        } else {
            assert_eq!(done["state"], "failed", "{done}");
            let reason = done["state_reason"].as_str().unwrap();
            assert!(
                reason.starts_with("Unsatisfied Greenwave policy for "),
                "{reason}"
            );
            assert!(
                reason.ends_with(
                    "with decision_context: iib_test, product_version: cvp, subject_type: koji_build and test cases: test.a, test.b"
                ),
                "{reason}"
            );
        }
    }
}

/// The request's events, as the audit endpoint serves them.
async fn events(server: &Server, id: u64) -> Vec<Value> {
    reqwest::get(server.url(&format!("/api/v1/builds/{id}/events")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_queue_runs_one_request_at_a_time_in_submission_order() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_QUEUES", r#"{"default": {"concurrency": 1}}"#)],
    )
    .await;
    let mut ids = Vec::new();
    for bundle in &world.bundles[6..10] {
        let submitted = post(
            &server,
            "/api/v1/builds/add",
            json!({"bundles": [bundle], "from_index": world.index, "binary_image": world.binary}),
        )
        .await;
        ids.push(submitted["id"].as_u64().unwrap());
    }
    // From the event history: each request's span from its claim to its end, in global order.
    let mut spans = Vec::new();
    for id in &ids {
        // (0.5.2 replaces 0.5.1, in the index, and completes; the later ones replace bundles
        // the index lacks and fail: both end the request, which is what is timed here.)
        finished(&server, *id).await;
        spans.push(span(&events(&server, *id).await));
    }
    assert_one_after_another(&spans, "requests on a serial queue");
}

/// A request's span in the global event order: from its claim to its end.
fn span(history: &[Value]) -> (i64, i64) {
    let position = |names: &[&str]| {
        history
            .iter()
            .find(|e| names.iter().any(|n| e["event"] == *n))
            .map(|e| e["position"].as_i64().unwrap())
            .unwrap_or_else(|| panic!("no {names:?} in {history:?}"))
    };
    (
        position(&["RequestClaimed"]),
        position(&["RequestCompleted", "RequestFailed"]),
    )
}

/// Each span ends before the next one starts.
fn assert_one_after_another(spans: &[(i64, i64)], what: &str) {
    for pair in spans.windows(2) {
        assert!(pair[0].1 < pair[1].0, "{what} overlapped: {spans:?}");
    }
}

/// An add request caught mid-build: every registry call goes through a proxy that answers
/// 100 ms late, and `iib serve` (on a data directory that outlives it) has started the request.
struct MidBuild {
    _slow: support::faults::FaultProxy,
    _logs: tempfile::TempDir,
    data: tempfile::TempDir,
    settings: BTreeMap<String, String>,
    server: Server,
    id: u64,
}

async fn mid_build(world: &World, extra: &[(&str, &str)]) -> MidBuild {
    let slow = support::faults::FaultProxy::start_with(
        &world.registry.host,
        0,
        Duration::from_millis(100),
    )
    .await;
    let via = |spec: &str| spec.replacen(&world.registry.host, &slow.host, 1);
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "true"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REGISTRY", slow.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        settings.insert(k.to_string(), v.to_string());
    }
    let server = Server::start_in(data.path(), &settings, false).await;
    let submitted = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [via(&world.bundles[8])], "from_index": via(&world.index), "binary_image": via(&world.binary)}),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        let body: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["state_reason"] != "The request was initiated" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker never started: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    MidBuild {
        _slow: slow,
        _logs: logs,
        data,
        settings,
        server,
        id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_survives_a_kill_9_of_its_worker() {
    let world = world(8).await;
    let mut run = mid_build(&world, &[("IIB_WORKER_LEASE_SECONDS", "5")]).await;
    run.server.kill9();
    let killed_at = Instant::now();
    let server = Server::start_in(run.data.path(), &run.settings, false).await;
    let done = finished(&server, run.id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(90),
        "took {:?}",
        killed_at.elapsed()
    );
    let history = events(&server, run.id).await;
    let claims: Vec<&Value> = history
        .iter()
        .filter(|e| e["event"] == "RequestClaimed")
        .collect();
    assert_eq!(claims.len(), 2, "{history:?}");
    assert_eq!(
        claims[1]["payload"]["RequestClaimed"]["attempt"], 2,
        "{:?}",
        claims[1]
    );
}

/// A copy of the bundle in `dir` with `replacements` made in its CSV, and `related` (if any)
/// listed in its `spec.relatedImages`.
fn rewritten_bundle(
    dir: &std::path::Path,
    replacements: &[(&str, &str)],
    related: Option<&str>,
) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    for sub in ["manifests", "metadata"] {
        std::fs::create_dir_all(work.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if text.contains("kind: ClusterServiceVersion") {
                for (old, new) in replacements {
                    text = text.replace(old, new);
                }
                if let Some(related) = related {
                    text = text.replace(
                        "\nspec:\n",
                        &format!(
                            "\nspec:\n  relatedImages:\n  - name: related\n    image: {related}\n"
                        ),
                    );
                }
            }
            std::fs::write(work.path().join(sub).join(path.file_name().unwrap()), text).unwrap();
        }
    }
    work
}

/// A bundle made from kube-green 0.7.1 whose CSV points at images in `host` (an operator image
/// by tag, and a related bundle made from kube-green 0.3.0 the same way), pushed with those
/// images. Returns the bundle's pull spec and the related bundle's.
async fn bundle_with_references(host: &str) -> (String, String) {
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let package = community_packages()
        .into_iter()
        .find(|p| p.name == "kube-green")
        .unwrap();
    let operator = format!("{host}/kubegreen/kube-green:0.7.1");
    push_binary_image(&client, &operator.parse().unwrap(), &["amd64"]).await;
    let local = [
        ("docker.io/kubegreen/kube-green:0.7.1", operator.as_str()),
        (
            "gcr.io/kubebuilder/kube-rbac-proxy:v0.5.0",
            operator.as_str(),
        ),
        ("kubegreen/kube-green:0.3.0", operator.as_str()),
    ];
    let related = format!("{host}/related-bundle:1");
    let related_dir = rewritten_bundle(&package.bundles[0].1, &local, None);
    let bundle_label = BTreeMap::from([(
        "com.redhat.delivery.operator.bundle".to_string(),
        "true".to_string(),
    )]);
    support::bundles::push_bundle_with_labels(
        &client,
        &related.parse().unwrap(),
        related_dir.path(),
        &bundle_label,
    )
    .await;
    let bundle_dir = rewritten_bundle(&package.bundles[9].1, &local, Some(&related));
    let bundle = format!("{host}/kube-green-bundle:regenerate");
    push_bundle(&client, &bundle.parse().unwrap(), bundle_dir.path()).await;
    (bundle, related)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_bundle_applies_the_organizations_customizations() {
    let world = world(1).await;
    let host = world.registry.host.clone();
    let (bundle, related) = bundle_with_references(&host).await;
    let customizations = json!({"acme": [
        {"type": "related_bundles"},
        {"type": "resolve_image_pullspecs"},
        {"type": "package_name_suffix", "suffix": "-acme"},
        {"type": "csv_annotations", "annotations": {"marketplace.example/remote-workflow": "https://example.com/{package_name}/pricing"}},
        {"type": "registry_replacements", "replacements": {host.clone(): "registry.acme.example"}},
    ]})
    .to_string();
    let logs = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let related_dir = artifacts.path().join("related");
    let nested_dir = artifacts.path().join("nested");
    let server = serve(
        &world,
        logs.path(),
        &[
            ("IIB_ORGANIZATION_CUSTOMIZATIONS", customizations.as_str()),
            (
                "IIB_REQUEST_RELATED_BUNDLES_DIR",
                related_dir.to_str().unwrap(),
            ),
            (
                "IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR",
                nested_dir.to_str().unwrap(),
            ),
        ],
    )
    .await;
    let submitted = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        json!({"from_bundle_image": bundle, "organization": "acme"}),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let done = finished(&server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["state_reason"], "The request completed successfully");
    let pushed = format!("{host}/iib-build:{id}");
    assert_eq!(done["bundle_image"], pushed.as_str());
    assert!(done["from_bundle_image_resolved"]
        .as_str()
        .unwrap()
        .contains("@sha256:"));

    let inspected = skopeo_inspect(&pushed, "amd64").unwrap();
    assert_eq!(inspected["Labels"]["com.redhat.iib.pinned"], "true");
    assert_eq!(
        inspected["Labels"]["operators.operatorframework.io.bundle.package.v1"],
        "kube-green-acme"
    );
    // The CSV names the operator by digest, in the organization's registry.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    assert!(run(&[
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{pushed}"),
        &format!("oci:{}:b", layout.display())
    ])
    .status
    .success());
    let unpacked = work.path().join("bundle");
    assert!(run(&[
        "umoci",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:b", layout.display()),
        unpacked.to_str().unwrap()
    ])
    .status
    .success());
    let manifests = unpacked.join("rootfs/manifests");
    let csv_path = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("clusterserviceversion"))
        .unwrap();
    let csv: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(csv_path).unwrap()).unwrap();
    let image = csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]
        ["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["image"].as_str().filter(|i| i.contains("kube-green@")))
        .expect("the operator image is pinned");
    assert!(
        image.starts_with("registry.acme.example/kubegreen/kube-green@sha256:"),
        "{image}"
    );
    assert_eq!(
        csv["metadata"]["annotations"]["marketplace.example/remote-workflow"],
        "https://example.com/kube-green-acme/pricing"
    );
    let annotations =
        std::fs::read_to_string(unpacked.join("rootfs/metadata/annotations.yaml")).unwrap();
    assert!(annotations.contains("kube-green-acme"), "{annotations}");
    // The related bundles artifact, served as IIB serves it.
    let served: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}/related_bundles")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, json!([related]));

    // Recursive related bundles from the same bundle: the related one, then the parent.
    let submitted = post(
        &server,
        "/api/v1/builds/recursive-related-bundles",
        json!({"parent_bundle_image": bundle}),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let done = finished(&server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    let nested: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}/nested-bundles")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nested = nested.as_array().unwrap();
    assert_eq!(nested.len(), 2, "{nested:?}");
    assert_eq!(nested[0], related.as_str());
    assert!(nested[1]
        .as_str()
        .unwrap()
        .starts_with(&format!("{host}/kube-green-bundle@sha256:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_to_s3_and_are_served_from_there() {
    let s3 = support::s3::S3Server::start().await;
    s3.create_bucket("iib-artifacts").await;
    let world = world(1).await;
    let host = world.registry.host.clone();
    let (bundle, related) = bundle_with_references(&host).await;
    let customizations = json!({"acme": [{"type": "related_bundles"}]}).to_string();
    let logs = tempfile::tempdir().unwrap();
    let mut extra: Vec<(String, String)> = s3.env();
    extra.push(("IIB_AWS_S3_BUCKET_NAME".into(), "iib-artifacts".into()));
    extra.push(("IIB_ORGANIZATION_CUSTOMIZATIONS".into(), customizations));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let server = serve(&world, logs.path(), &extra).await;
    let submitted = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        json!({"from_bundle_image": bundle, "organization": "acme"}),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let done = finished(&server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    // The objects under IIB's keys.
    use iib::artifacts::Artifact;
    let bucket = s3.bucket("iib-artifacts");
    assert_eq!(
        Artifact::RelatedBundles.key(id),
        format!("related_bundles/{id}_related_bundles.json")
    );
    assert_eq!(Artifact::Logs.key(id), format!("request_logs/{id}.log"));
    let related_object = bucket
        .get(Artifact::RelatedBundles, id)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the related bundles are not in S3; the bucket holds: {}",
                String::from_utf8_lossy(&s3.listing("iib-artifacts"))
            )
        });
    assert_eq!(
        String::from_utf8(related_object).unwrap(),
        format!("[\"{related}\"]")
    );
    // The log is uploaded once the request ended.
    let started = Instant::now();
    let log = loop {
        if let Some(log) = bucket.get(Artifact::Logs, id).await {
            break String::from_utf8(log).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the log never reached S3"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(log.contains("Regenerating the bundle image"), "{log}");
    // The API serves them from S3.
    let served = reqwest::get(server.url(&format!("/api/v1/builds/{id}/logs")))
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.unwrap(), log);
    let served: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}/related_bundles")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, json!([related]));
    // What S3 does not have is 404 (or 410 once expired), as IIB answers.
    let missing = reqwest::get(server.url("/api/v1/builds/99/logs"))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_overwriting_one_index_run_in_order_each_on_its_predecessors_index() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    // A parallel queue: the order comes from the index they share, not from the queue.
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_QUEUES", r#"{"default": {"concurrency": 3}}"#)],
    )
    .await;
    let mut ids = Vec::new();
    // 0.5.2 replaces 0.5.1 (in the index); 0.6.0 replaces 0.5.2 and 0.7.0 replaces 0.6.0, which
    // only the requests before them add.
    for bundle in &world.bundles[6..9] {
        let submitted = post(
            &server,
            "/api/v1/builds/add",
            json!({
                "bundles": [bundle],
                "from_index": world.index,
                "binary_image": world.binary,
                "overwrite_from_index": true,
                "overwrite_from_index_token": "user:secret",
            }),
        )
        .await;
        ids.push(submitted["id"].as_u64().unwrap());
    }
    let mut spans = Vec::new();
    for id in &ids {
        let done = finished(&server, *id).await;
        assert_eq!(done["state"], "complete", "{done}");
        assert_eq!(done["index_image"], world.index.as_str());
        let history = events(&server, *id).await;
        spans.push(span(&history));
        // The token never shows in the request's history.
        assert!(!serde_json::to_string(&history)
            .unwrap()
            .contains("user:secret"));
    }
    assert_one_after_another(&spans, "writers of one index");
    // The index now holds the bundles of all three requests.
    let configs = unpacked_configs(&world.index, "amd64");
    let names = bundle_names(&configs["kube-green/catalog.json"]);
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains(&"kube-green.v0.7.0".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_time_limit_fails_the_request_with_a_reason() {
    let world = world(8).await;
    let slow = support::faults::FaultProxy::start_with(
        &world.registry.host,
        0,
        Duration::from_millis(300),
    )
    .await;
    let via = |spec: &str| spec.replacen(&world.registry.host, &slow.host, 1);
    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_QUEUES", r#"{"default": {"time_limit_seconds": 1}}"#)],
    )
    .await;
    let submitted = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [via(&world.bundles[8])], "from_index": via(&world.index), "binary_image": via(&world.binary)}),
    )
    .await;
    let done = finished(&server, submitted["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(
        done["state_reason"],
        "The request exceeded the time limit of 1 seconds of the default queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_images_are_checked_when_asked() {
    let world = world(9).await;
    let host = world.registry.host.clone();
    let (local_bundle, _) = bundle_with_references(&host).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    // kube-green's own CSV names images on docker.io and gcr.io, which this machine cannot reach.
    let unreachable = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [world.bundles[9]], "from_index": world.index, "binary_image": world.binary,
               "check_related_images": true}),
    )
    .await;
    let done = finished(&server, unreachable["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    let reason = done["state_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("IIB cannot access the following related images ['docker.io/kubegreen/kube-green:0.7.1'"),
        "{reason}"
    );
    // The same check passes when every image is in reach.
    let reachable = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [local_bundle], "from_index": world.index, "binary_image": world.binary,
               "check_related_images": true}),
    )
    .await;
    let done = finished(&server, reachable["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_its_requests_and_settles() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    let answer = reqwest::Client::new()
        .post(server.url("/api/v1/builds/add-rm-batch"))
        .json(&json!({
            "annotations": {"msg": "release 1"},
            "build_requests": [
                {"bundles": [world.bundles[6]], "from_index": world.index, "binary_image": world.binary},
                {"operators": ["kube-green"], "from_index": world.index, "binary_image": world.binary},
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    let requests: Vec<Value> = answer.json().await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let done = finished(&server, request["id"].as_u64().unwrap()).await;
        assert_eq!(done["state"], "complete", "{done}");
        assert_eq!(done["batch_annotations"], json!({"msg": "release 1"}));
    }
    let add = finished(&server, requests[0]["id"].as_u64().unwrap()).await;
    assert_eq!(
        bundle_names(
            &unpacked_configs(add["index_image"].as_str().unwrap(), "amd64")
                ["kube-green/catalog.json"]
        )
        .len(),
        7
    );
    let rm = finished(&server, requests[1]["id"].as_u64().unwrap()).await;
    assert!(unpacked_configs(rm["index_image"].as_str().unwrap(), "amd64").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_request_back_and_the_next_worker_finishes_it() {
    let world = world(8).await;
    let mut run = mid_build(&world, &[]).await;
    let status = run.server.terminate();
    assert!(status.success(), "iib serve stopped with {status}");
    // A new process takes it at once: the claim was handed back, no lease to wait for.
    let server = Server::start_in(run.data.path(), &run.settings, false).await;
    let restarted = Instant::now();
    let done = finished(&server, run.id).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(restarted.elapsed() < Duration::from_secs(50));
    let history = events(&server, run.id).await;
    assert!(
        history.iter().any(|e| e["event"] == "ClaimReleased"),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binaryless_index_holds_only_the_catalog() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    let submitted = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [world.bundles[6]], "from_index": world.index, "binary_image": "scratch"}),
    )
    .await;
    let done = finished(&server, submitted["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["binary_image_resolved"], "scratch");
    assert_eq!(done["arches"], json!(["amd64"]));
    let pushed = done["index_image"].as_str().unwrap();
    let inspected = skopeo_inspect(pushed, "amd64").unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        inspected["Labels"]["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );
    let configs = unpacked_configs(pushed, "amd64");
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 7);
}

/// The paths in the top layer of an image's `arch`.
async fn top_layer_paths(image: &str, arch: &str) -> Vec<String> {
    use std::io::Read;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let reference: Reference = image.parse().unwrap();
    let manifest = client.arch_image(&reference, Some(arch)).await.unwrap();
    let top = manifest.manifest.layers.last().unwrap();
    let blob = client.blob(&reference, &top.digest).await.unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn layer_count(image: &str, arch: &str) -> usize {
    skopeo_inspect(image, arch).expect("the image is pushed")["Layers"]
        .as_array()
        .unwrap()
        .len()
}

async fn completed(server: &Server, path: &str, body: Value) -> (u64, Value) {
    let id = post(server, path, body).await["id"].as_u64().unwrap();
    let done = finished(server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    (id, done)
}

async fn request_log(server: &Server, id: u64) -> String {
    reqwest::get(server.url(&format!("/api/v1/builds/{id}/logs")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_some_packages_adds_one_layer_holding_only_them() {
    let world = world(3).await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let libredb = community_packages()
        .into_iter()
        .find(|p| p.name == "libredb-studio-operator")
        .unwrap();
    let (_, dir) = &libredb.bundles[0];
    let libredb_bundle = format!("{}/libredb-bundle:1", world.registry.host);
    push_bundle(&client, &libredb_bundle.parse().unwrap(), dir).await;
    let logs = tempfile::tempdir().unwrap();
    let layered = serve(&world, logs.path(), &[]).await;
    let whole = serve(
        &world,
        logs.path(),
        &[
            ("IIB_INDEX_MAX_CATALOG_LAYERS", "0"),
            (
                "IIB_IMAGE_PUSH_TEMPLATE",
                "{registry}/iib-whole:{request_id}",
            ),
        ],
    )
    .await;
    let pushed = |id: u64| format!("{}/iib-build:{id}", world.registry.host);
    // The world's index: the binary image's layer and one layer of the catalog.
    assert_eq!(layer_count(&world.index, "arm64"), 2);

    // A new package: one more layer, holding that package alone.
    let (first, _) = completed(
        &layered,
        "/api/v1/builds/add",
        json!({"bundles": [libredb_bundle], "from_index": world.index, "binary_image": world.binary}),
    )
    .await;
    let first_image = pushed(first);
    for arch in ["amd64", "arm64"] {
        assert_eq!(layer_count(&first_image, arch), 3);
        assert_eq!(
            top_layer_paths(&first_image, arch).await,
            [
                "configs/",
                "configs/libredb-studio-operator/",
                "configs/libredb-studio-operator/catalog.json"
            ]
        );
    }
    let configs = unpacked_configs(&first_image, "arm64");
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        [
            "kube-green/catalog.json",
            "libredb-studio-operator/catalog.json"
        ]
    );
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 3);

    // A new bundle of kube-green on that image: the worker knows its catalog already, and the
    // new layer holds kube-green alone. The image equals one built whole.
    let add = json!({"bundles": [world.bundles[3]], "from_index": first_image, "binary_image": world.binary});
    let (second, _) = completed(&layered, "/api/v1/builds/add", add.clone()).await;
    let second_image = pushed(second);
    assert_eq!(layer_count(&second_image, "amd64"), 4);
    assert_eq!(
        top_layer_paths(&second_image, "amd64").await,
        [
            "configs/",
            "configs/kube-green/",
            "configs/kube-green/catalog.json"
        ]
    );
    let log = request_log(&layered, second).await;
    assert!(log.contains("was read before; using it"), "{log}");
    assert!(
        log.contains("with one layer of the changed package(s) kube-green"),
        "{log}"
    );
    let (whole_id, _) = completed(&whole, "/api/v1/builds/add", add).await;
    let whole_image = format!("{}/iib-whole:{whole_id}", world.registry.host);
    assert_eq!(layer_count(&whole_image, "amd64"), 2);
    let second_configs = unpacked_configs(&second_image, "arm64");
    assert_eq!(second_configs, unpacked_configs(&whole_image, "arm64"));
    assert_eq!(
        bundle_names(&second_configs["kube-green/catalog.json"]).len(),
        4
    );
    for arch in ["amd64", "arm64"] {
        let (layered_labels, whole_labels) = (
            skopeo_inspect(&second_image, arch).unwrap()["Labels"].clone(),
            skopeo_inspect(&whole_image, arch).unwrap()["Labels"].clone(),
        );
        assert_eq!(layered_labels, whole_labels);
    }

    // Removing a package whites its directory out.
    let (third, _) = completed(
        &layered,
        "/api/v1/builds/rm",
        json!({"operators": ["libredb-studio-operator"], "from_index": second_image, "binary_image": world.binary}),
    )
    .await;
    let third_image = pushed(third);
    assert_eq!(layer_count(&third_image, "amd64"), 5);
    assert_eq!(
        top_layer_paths(&third_image, "amd64").await,
        ["configs/", "configs/.wh.libredb-studio-operator"]
    );
    let configs = unpacked_configs(&third_image, "amd64");
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        ["kube-green/catalog.json"]
    );
    assert_eq!(
        configs["kube-green/catalog.json"],
        second_configs["kube-green/catalog.json"]
    );

    // Past IIB_INDEX_MAX_CATALOG_LAYERS, the catalog is written whole again in one layer.
    let capped = serve(
        &world,
        logs.path(),
        &[
            ("IIB_INDEX_MAX_CATALOG_LAYERS", "4"),
            (
                "IIB_IMAGE_PUSH_TEMPLATE",
                "{registry}/iib-capped:{request_id}",
            ),
        ],
    )
    .await;
    let (fourth, _) = completed(
        &capped,
        "/api/v1/builds/add",
        json!({"bundles": [world.bundles[4]], "from_index": third_image, "binary_image": world.binary}),
    )
    .await;
    let fourth_image = format!("{}/iib-capped:{fourth}", world.registry.host);
    assert_eq!(layer_count(&fourth_image, "arm64"), 2);
    let configs = unpacked_configs(&fourth_image, "arm64");
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        ["kube-green/catalog.json"]
    );
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_bundle_reads_a_private_bundle_with_the_registry_auths_it_was_sent() {
    use base64::Engine as _;
    let world = world(1).await;
    let private = Registry::start_with_auth(Some(("robot", "pr1vate-s3cret"))).await;
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:pr1vate-s3cret");
    let auths = json!({"auths": {private.host.clone(): {"auth": auth}}});
    // The bundle lives in the private registry; the images it names in the public one.
    let package = community_packages()
        .into_iter()
        .find(|p| p.name == "kube-green")
        .unwrap();
    let public = RegistryClient::new(ClientOptions::default()).unwrap();
    let operator = format!("{}/kubegreen/kube-green:0.7.1", world.registry.host);
    push_binary_image(&public, &operator.parse().unwrap(), &["amd64"]).await;
    let local = [
        ("docker.io/kubegreen/kube-green:0.7.1", operator.as_str()),
        (
            "gcr.io/kubebuilder/kube-rbac-proxy:v0.5.0",
            operator.as_str(),
        ),
        ("kubegreen/kube-green:0.3.0", operator.as_str()),
    ];
    let dir = rewritten_bundle(&package.bundles[9].1, &local, None);
    let credentialed = RegistryClient::new(ClientOptions {
        credentials: iib_oci::auth::CredentialStore::from_docker_config(&auths.to_string())
            .unwrap(),
        ..ClientOptions::default()
    })
    .unwrap();
    let bundle = format!("{}/team/kube-green-bundle:private", private.host);
    push_bundle(&credentialed, &bundle.parse().unwrap(), dir.path()).await;

    let logs = tempfile::tempdir().unwrap();
    let related = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[(
            "IIB_REQUEST_RELATED_BUNDLES_DIR",
            related.path().to_str().unwrap(),
        )],
    )
    .await;
    // Without credentials the service cannot read it.
    let refused = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        json!({"from_bundle_image": bundle}),
    )
    .await;
    let refused = finished(&server, refused["id"].as_u64().unwrap()).await;
    assert_eq!(refused["state"], "failed", "{refused}");
    let reason = refused["state_reason"].as_str().unwrap();
    assert!(reason.contains(&bundle), "{reason}");

    // With them, this request can; they stay out of its answers, history and log.
    let submitted = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        json!({"from_bundle_image": bundle, "registry_auths": auths}),
    )
    .await;
    let id = submitted["id"].as_u64().unwrap();
    let done = finished(&server, id).await;
    assert_eq!(done["state"], "complete", "{done}");
    let pushed = format!("{}/iib-build:{id}", world.registry.host);
    assert_eq!(done["bundle_image"], pushed.as_str());
    let inspected = skopeo_inspect(&pushed, "amd64").expect("the bundle is pushed");
    assert_eq!(inspected["Labels"]["com.redhat.iib.pinned"], "true");
    let history = events(&server, id).await;
    let log = request_log(&server, id).await;
    for text in [
        submitted.to_string(),
        done.to_string(),
        serde_json::to_string(&history).unwrap(),
        log,
    ] {
        assert!(!text.contains("pr1vate-s3cret"), "{text}");
        assert!(!text.contains(&auth), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_from_index_pushes_with_each_requests_own_token() {
    use base64::Engine as _;
    use iib_oci::auth::{CredentialStore, Credentials};
    use support::token_issuer::TokenIssuer;
    let world = world(3).await;
    // A registry whose token service lets the reader pull and the writer push.
    let issuer = TokenIssuer::start_with_users(&[
        ("reader", "r3ad-only", Some(&["pull"])),
        ("writer", "wr1te-s3cret", None),
    ])
    .await;
    let private = Registry::start_with_auth_config(&issuer.registry_auth_config()).await;
    let mut credentials = CredentialStore::default();
    credentials.insert(
        &private.host,
        Credentials::from_user_colon_secret("writer:wr1te-s3cret").unwrap(),
    );
    let writer = RegistryClient::new(ClientOptions {
        credentials,
        ..ClientOptions::default()
    })
    .unwrap();
    let index = format!("{}/team/index:v4.18", private.host);
    writer
        .copy(&world.index.parse().unwrap(), &index.parse().unwrap(), None)
        .await
        .unwrap();
    // The service itself only reads there.
    let config = tempfile::NamedTempFile::new().unwrap();
    let reader_auth = base64::engine::general_purpose::STANDARD.encode("reader:r3ad-only");
    std::fs::write(
        config.path(),
        json!({"auths": {private.host.clone(): {"auth": reader_auth}}}).to_string(),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[(
            "IIB_DOCKER_CONFIG_TEMPLATE",
            config.path().to_str().unwrap(),
        )],
    )
    .await;
    let add = |bundle: &str, token: &str| {
        json!({
            "bundles": [bundle],
            "from_index": index,
            "binary_image": world.binary,
            "overwrite_from_index": true,
            "overwrite_from_index_token": token,
        })
    };
    // The writer's token overwrites the index.
    let (id, done) = completed(
        &server,
        "/api/v1/builds/add",
        add(&world.bundles[3], "writer:wr1te-s3cret"),
    )
    .await;
    assert_eq!(done["index_image"], index.as_str());
    let configs = unpacked_configs_with(&index, "amd64", "writer:wr1te-s3cret");
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 4);
    // A request sent with the reader's token cannot push, even right after the writer's.
    let refused = post(
        &server,
        "/api/v1/builds/add",
        add(&world.bundles[4], "reader:r3ad-only"),
    )
    .await;
    let refused = finished(&server, refused["id"].as_u64().unwrap()).await;
    assert_eq!(refused["state"], "failed", "{refused}");
    let reason = refused["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("Failed to overwrite the input from_index container image"),
        "{reason}"
    );
    let configs = unpacked_configs_with(&index, "amd64", "writer:wr1te-s3cret");
    assert_eq!(bundle_names(&configs["kube-green/catalog.json"]).len(), 4);
    // Tokens stay out of the history.
    let history = serde_json::to_string(&events(&server, id).await).unwrap();
    assert!(!history.contains("wr1te-s3cret"), "{history}");
}

/// Polls a request until it is no longer in progress, failing the test after `limit`.
async fn finished_within(server: &Server, id: u64, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let body: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["state"] != "in_progress" {
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "request {id} still in progress after {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the request's log file in `logs` (the API serves it only once the request
/// ended) holds `text`.
async fn log_shows(logs: &std::path::Path, id: u64, text: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(logs.join(format!("{id}.log"))).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the log of request {id} never showed {text:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_name_from_labels_copies_label_values_once_and_caps_the_name() {
    let world = world(1).await;
    let host = world.registry.host.clone();
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    // The image the bundle's CSV names, with labels that refer to themselves.
    let operator = format!("{host}/labelled/operator:1");
    let labels = BTreeMap::from([
        ("name".to_string(), "{name}".to_string()),
        ("grow".to_string(), "x{grow}".to_string()),
        ("long".to_string(), "a".repeat(300)),
        ("component".to_string(), "team/renamed".to_string()),
    ]);
    let files = BTreeMap::from([("bin/operator".to_string(), b"#!/bin/sh\n".to_vec())]);
    let operator_ref: Reference = operator.parse().unwrap();
    let entry = client
        .push_layer_image(
            &operator_ref,
            "amd64",
            &iib_oci::build::layer(&files),
            &labels,
            "operator",
        )
        .await
        .unwrap();
    client
        .push_index(&operator_ref, "1", vec![entry], None)
        .await
        .unwrap();
    let package = community_packages()
        .into_iter()
        .find(|p| p.name == "kube-green")
        .unwrap();
    let local = [
        ("docker.io/kubegreen/kube-green:0.7.1", operator.as_str()),
        (
            "gcr.io/kubebuilder/kube-rbac-proxy:v0.5.0",
            operator.as_str(),
        ),
        ("kubegreen/kube-green:0.3.0", operator.as_str()),
    ];
    let dir = rewritten_bundle(&package.bundles[9].1, &local, None);
    let bundle = format!("{host}/kube-green-bundle:labelled");
    push_bundle(&client, &bundle.parse().unwrap(), dir.path()).await;
    let template =
        |template: &str| json!([{"type": "image_name_from_labels", "template": template}]);
    let customizations = json!({
        "self": template("{name}"),
        "growing": template("x{grow}"),
        "long": template("{long}"),
        "renamed": template("{component}"),
    })
    .to_string();
    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_ORGANIZATION_CUSTOMIZATIONS", customizations.as_str())],
    )
    .await;
    let regenerate =
        |organization: &str| json!({"from_bundle_image": bundle, "organization": organization});
    // Each ends, and soon: a value naming itself is copied as it is, not substituted again.
    for (organization, expected) in [
        ("self", format!("{host}/{{name}}:1")),
        ("growing", format!("{host}/xx{{grow}}:1")),
    ] {
        let id = post(
            &server,
            "/api/v1/builds/regenerate-bundle",
            regenerate(organization),
        )
        .await["id"]
            .as_u64()
            .unwrap();
        let done = finished_within(&server, id, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "failed", "{done}");
        let reason = done["state_reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("makes the pull spec {expected} out of {operator}")),
            "{reason}"
        );
    }
    let id = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        regenerate("long"),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    let done = finished_within(&server, id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["state_reason"]
            .as_str()
            .unwrap()
            .contains("is longer than 255 characters"),
        "{done}"
    );
    // An ordinary template still renames the image.
    let id = post(
        &server,
        "/api/v1/builds/regenerate-bundle",
        regenerate("renamed"),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    let done = finished_within(&server, id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "complete", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_its_request_and_its_serial_queue_goes_on() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    // 0.6.0's request panics (a hook only debug builds accept); 0.5.2's is ordinary.
    let server = serve(
        &world,
        logs.path(),
        &[
            ("IIB_QUEUES", r#"{"default": {"concurrency": 1}}"#),
            ("IIB_TEST_PANIC_ON", world.bundles[7].as_str()),
        ],
    )
    .await;
    let add = |bundle: &str| json!({"bundles": [bundle], "from_index": world.index, "binary_image": world.binary});
    let panicking = post(&server, "/api/v1/builds/add", add(&world.bundles[7])).await["id"]
        .as_u64()
        .unwrap();
    let ordinary = post(&server, "/api/v1/builds/add", add(&world.bundles[6])).await["id"]
        .as_u64()
        .unwrap();
    let failed = finished_within(&server, panicking, Duration::from_secs(60)).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["state_reason"],
        format!("The worker failed unexpectedly: IIB_TEST_PANIC_ON matched request {panicking}")
            .as_str()
    );
    // The next request of the serial queue runs.
    let done = finished_within(&server, ordinary, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "complete", "{done}");
    // The panicking request's heartbeat stopped with it: no renewal after its end.
    let history = events(&server, panicking).await;
    let last = history
        .iter()
        .rev()
        .find(|e| e["aggregate"] == format!("BuildRequest {panicking}").as_str())
        .unwrap();
    assert_eq!(last["event"], "RequestFailed", "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_renew_its_claim_stops_before_its_lease_runs_out() {
    let world = world(8).await;
    // Every registry call goes through a gate that holds the manifests pushed for the request.
    let gate = support::gate::GateProxy::start(
        &world.registry.host,
        reqwest::Method::PUT,
        "/iib-build/manifests/",
    )
    .await;
    let via = |spec: &str| spec.replacen(&world.registry.host, &gate.host, 1);
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "true"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REGISTRY", gate.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
        ("IIB_WORKER_LEASE_SECONDS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let server = Server::start_in(data.path(), &settings, false).await;
    let id = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [via(&world.bundles[8])], "from_index": via(&world.index), "binary_image": via(&world.binary)}),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    // The worker is pushing the new index when the database starts refusing renewals.
    let started = Instant::now();
    while gate.held() == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no push came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = support::db_faults::RefusedEvents::install(data.path(), &["ClaimRenewed"]).await;
    let refused_at = Instant::now();
    // It gives up the push before its 5 s lease runs out, and says why.
    while gate.abandoned() == 0 {
        assert!(
            refused_at.elapsed() < Duration::from_secs(7),
            "the worker kept pushing with a claim it could not renew"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log_shows(
        logs.path(),
        id,
        "stopped working on the request: its claim could not be renewed before its lease ran out",
        Duration::from_secs(5),
    )
    .await;
    let body: Value = reqwest::get(server.url(&format!("/api/v1/builds/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "in_progress", "{body}");
    // With the database back, the request is taken over once its lease expired, and ends.
    refused.remove().await;
    gate.open();
    let done = finished_within(&server, id, Duration::from_secs(90)).await;
    assert_eq!(done["state"], "complete", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_request_is_recorded_through_a_database_hiccup_without_running_it_again() {
    let world = world(6).await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(&world, logs.path(), &[]).await;
    let refused = support::db_faults::RefusedEvents::install(
        &server.data,
        &["RequestCompleted", "RequestFailed"],
    )
    .await;
    let add = |bundle: &str| json!({"bundles": [bundle], "from_index": world.index, "binary_image": world.binary});
    // 0.5.2 completes; 0.6.0 replaces a bundle the index lacks and fails.
    let completing = post(&server, "/api/v1/builds/add", add(&world.bundles[6])).await["id"]
        .as_u64()
        .unwrap();
    let failing = post(&server, "/api/v1/builds/add", add(&world.bundles[7])).await["id"]
        .as_u64()
        .unwrap();
    let limit = Duration::from_secs(60);
    log_shows(logs.path(), completing, "recording the end failed", limit).await;
    log_shows(logs.path(), failing, "recording the failure failed", limit).await;
    refused.remove().await;
    let back = Instant::now();
    let done = finished_within(&server, completing, Duration::from_secs(90)).await;
    assert_eq!(done["state"], "complete", "{done}");
    let failed = finished_within(&server, failing, Duration::from_secs(90)).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("Failed to add the bundles to the index image"),
        "{failed}"
    );
    // Recorded by the run that did the work, not by a second run after the lease expired.
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "{:?}",
        back.elapsed()
    );
    for id in [completing, failing] {
        let history = events(&server, id).await;
        let claims = history
            .iter()
            .filter(|e| e["event"] == "RequestClaimed")
            .count();
        let starts = history
            .iter()
            .filter(|e| {
                e["event"] == "ProgressRecorded"
                    && e["payload"]["ProgressRecorded"]["state_reason"] == "Resolving the bundles"
            })
            .count();
        assert_eq!((claims, starts), (1, 1), "{history:?}");
    }
}

/// A registry whose token service lets `writer` push, an index there holding the first 3
/// kube-green bundles, and a Docker config giving the service the writer's credentials.
struct PrivateIndex {
    _issuer: support::token_issuer::TokenIssuer,
    _registry: Registry,
    index: String,
    config: tempfile::NamedTempFile,
}

async fn private_index(world: &World) -> PrivateIndex {
    use base64::Engine as _;
    use iib_oci::auth::{CredentialStore, Credentials};
    let issuer =
        support::token_issuer::TokenIssuer::start_with_users(&[("writer", "wr1te-s3cret", None)])
            .await;
    let registry = Registry::start_with_auth_config(&issuer.registry_auth_config()).await;
    let mut credentials = CredentialStore::default();
    credentials.insert(
        &registry.host,
        Credentials::from_user_colon_secret("writer:wr1te-s3cret").unwrap(),
    );
    let writer = RegistryClient::new(ClientOptions {
        credentials,
        ..ClientOptions::default()
    })
    .unwrap();
    let index = format!("{}/team/index:v4.18", registry.host);
    writer
        .copy(&world.index.parse().unwrap(), &index.parse().unwrap(), None)
        .await
        .unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("writer:wr1te-s3cret");
    std::fs::write(
        config.path(),
        json!({"auths": {registry.host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    PrivateIndex {
        _issuer: issuer,
        _registry: registry,
        index,
        config,
    }
}

fn bundles_in(index: &str) -> usize {
    let configs = unpacked_configs_with(index, "amd64", "writer:wr1te-s3cret");
    bundle_names(&configs["kube-green/catalog.json"]).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_token_that_cannot_serve_fails_the_request_instead_of_using_the_services_credentials(
) {
    let world = world(3).await;
    let private = private_index(&world).await;
    let add = |bundle: &str, token: Option<&str>| {
        let mut body = json!({
            "bundles": [bundle],
            "from_index": private.index,
            "binary_image": world.binary,
            "overwrite_from_index": true,
        });
        if let Some(token) = token {
            body["overwrite_from_index_token"] = json!(token);
        }
        body
    };
    let logs = tempfile::tempdir().unwrap();
    let config = private.config.path().to_str().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_DOCKER_CONFIG_TEMPLATE", config)],
    )
    .await;
    // A token that is not "username:token" fails the request; the service's own push
    // credentials for that registry do not stand in for it.
    let malformed = post(
        &server,
        "/api/v1/builds/add",
        add(&world.bundles[3], Some("only-a-token")),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    let failed = finished(&server, malformed).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["state_reason"],
        "The overwrite_from_index_token is not in the format \"username:token\"; resubmit the request with a token of that form"
    );
    assert_eq!(bundles_in(&private.index), 3);
    // Without a token (allowed when login is off, as for IIB's privileged users) the service's
    // credentials serve, as before.
    let (_, done) = completed(&server, "/api/v1/builds/add", add(&world.bundles[3], None)).await;
    assert_eq!(done["index_image"], private.index.as_str());
    assert_eq!(bundles_in(&private.index), 4);
    drop(server);

    // A token that expired before its request ran: submitted while no worker runs.
    let data = tempfile::tempdir().unwrap();
    let mut settings: BTreeMap<String, String> = [
        ("IIB_QUEUE_ACTORS", "false"),
        ("LOGIN_DISABLED", "true"),
        ("IIB_REGISTRY", world.registry.host.as_str()),
        ("IIB_REQUEST_LOGS_DIR", logs.path().to_str().unwrap()),
        ("IIB_DOCKER_CONFIG_TEMPLATE", config),
        ("IIB_SECRET_LIFETIME_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut idle = Server::start_in(data.path(), &settings, false).await;
    let expiring = post(
        &idle,
        "/api/v1/builds/add",
        add(&world.bundles[4], Some("writer:wr1te-s3cret")),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(idle.terminate().success());
    settings.insert("IIB_QUEUE_ACTORS".into(), "true".into());
    let server = Server::start_in(data.path(), &settings, false).await;
    let failed = finished(&server, expiring).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["state_reason"],
        "The overwrite_from_index_token expired before the request ran (secrets are kept IIB_SECRET_LIFETIME_SECONDS); resubmit the request with it"
    );
    assert_eq!(bundles_in(&private.index), 4);
}

/// When `event` was recorded in a request's history.
fn recorded_at(history: &[Value], event: &str) -> chrono::DateTime<chrono::Utc> {
    let at = history
        .iter()
        .find(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {history:?}"))["recorded_at"]
        .as_str()
        .unwrap();
    at.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_fires_while_the_worker_reads_a_large_catalog() {
    let world = world(0).await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let index = format!("{}/big-index:v4.18", world.registry.host);
    support::big_catalog::push_filler_index(
        &client,
        &world.binary.parse().unwrap(),
        &index.parse().unwrap(),
        &["amd64", "arm64"],
        250_000,
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let server = serve(
        &world,
        logs.path(),
        &[("IIB_QUEUES", r#"{"default": {"time_limit_seconds": 1}}"#)],
    )
    .await;
    let id = post(
        &server,
        "/api/v1/builds/add",
        json!({"bundles": [world.bundles[0]], "from_index": index, "binary_image": world.binary}),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    let done = finished_within(&server, id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(
        done["state_reason"],
        "The request exceeded the time limit of 1 seconds of the default queue"
    );
    // Reading the catalog takes seconds (about 4 s in a debug build); it runs off the async
    // runtime, so the limit fires on time instead of when the reading is done.
    let history = events(&server, id).await;
    let ran = recorded_at(&history, "RequestFailed") - recorded_at(&history, "RequestClaimed");
    assert!(
        ran < chrono::Duration::milliseconds(2000),
        "the time limit fired {ran} after the claim"
    );
}
