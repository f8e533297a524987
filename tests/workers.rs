//! The queue actors end to end: requests submitted over HTTP to a real `iib serve` are built
//! against a real registry, and the pushed images are checked with skopeo and umoci.

mod support;

use iib::catalog::add::{add_bundles, AddOptions};
use iib::catalog::declcfg::DeclarativeConfig;
use iib::catalog::render::ObjectsAs;
use iib::catalog_cli::Sources;
use iib::registry::{ClientOptions, Reference, RegistryClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::bundles::{community_packages, push_binary_image, push_bundle, push_index_image};
use support::registry::Registry;
use support::server::Server;

/// A registry with the kube-green bundles, a two-arch binary image and an index holding the
/// first `in_index` kube-green bundles.
struct World {
    registry: Registry,
    bundles: Vec<String>,
    binary: String,
    index: String,
}

async fn world(in_index: usize) -> World {
    let registry = Registry::start().await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let package = community_packages()
        .into_iter()
        .find(|p| p.name == "kube-green")
        .unwrap();
    let mut bundles = Vec::new();
    for (_, dir) in &package.bundles {
        let version = dir.file_name().unwrap().to_string_lossy();
        let spec = format!("{}/kube-green-bundle:{version}", registry.host);
        push_bundle(&client, &spec.parse().unwrap(), dir).await;
        bundles.push(spec);
    }
    let binary = format!("{}/opm:v4.18", registry.host);
    let binary_ref: Reference = binary.parse().unwrap();
    push_binary_image(&client, &binary_ref, &["amd64", "arm64"]).await;
    // The index's bundles are pinned to digests, as IIB's are.
    let mut sources = Sources::new(ClientOptions::default());
    let mut rendered = Vec::new();
    for spec in &bundles[..in_index] {
        let reference: Reference = spec.parse().unwrap();
        let digest = client.resolve(&reference).await.unwrap();
        let pinned = reference.with_digest(digest).to_string();
        rendered.push(
            sources
                .render_bundle(&pinned, None, ObjectsAs::CsvMetadata)
                .await
                .unwrap(),
        );
    }
    let mut catalog = DeclarativeConfig::default();
    add_bundles(&mut catalog, rendered, &AddOptions::default()).unwrap();
    let index = format!("{}/index:v4.18", registry.host);
    push_index_image(
        &client,
        &binary_ref,
        &index.parse().unwrap(),
        &["amd64", "arm64"],
        &catalog,
        "v4.18",
    )
    .await;
    World {
        registry,
        bundles,
        binary,
        index,
    }
}

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
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let copied = run(&[
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
        &format!("docker://{image}"),
        &format!("oci:{}:built", layout.display()),
    ]);
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
    let server = serve(&world, logs.path(), &[]).await;
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
    for (submitted, reason) in [
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
