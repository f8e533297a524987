//! `iib bench`: benchmarks that print figures (speed goals live here, not in timed tests).

mod fleet;
pub use fleet::run as fleet;

use crate::projector::Projector;
use crate::store::{NewEvent, Store};
use anyhow::Result;
use chrono::{Duration, SubsecRound, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use iib_aggregates::params::AddParams;
use iib_aggregates::{
    Batch, BatchEvent, BatchId, BatchMember, BuildFacts, BuildRequest, BuildRequestEvent,
    RequestId, RequestParams, RequestState, RequestType, WorkerId,
};
use serde_json::json;
use std::time::Instant;

/// The events of one add request's life: 12 events, as a worker would record them.
fn request_life(n: u64) -> Vec<(bool, u64, serde_json::Value, String)> {
    let rid = RequestId::new(n).expect("n > 0");
    let bid = BatchId::new(n).expect("n > 0");
    let worker = WorkerId::new("bench:1:default");
    let mut out = Vec::new();
    let mut batch =
        |e: BatchEvent| out.push((false, n, serde_json::to_value(&e).unwrap(), e.event_type()));
    batch(BatchEvent::BatchCreated {
        batch_id: bid,
        user: Some("bench@EXAMPLE.COM".into()),
        annotations: None,
        members: vec![BatchMember {
            id: rid,
            request_type: RequestType::Add,
            organization: None,
        }],
    });
    let mut request = Vec::new();
    request.push(BuildRequestEvent::RequestSubmitted {
        request_id: rid,
        batch_id: bid,
        user: Some("bench@EXAMPLE.COM".into()),
        params: RequestParams::Add(AddParams {
            bundles: vec![format!("registry.example.com/op/bundle:{n}")],
            from_index: Some("registry.example.com/index:v4.18".into()),
            ..Default::default()
        }),
        secrets_given: vec![],
        queue: None,
        state_reason: "The request was initiated".into(),
    });
    request.push(BuildRequestEvent::RequestClaimed {
        worker: worker.clone(),
        lease_until: Utc::now().trunc_subsecs(6) + Duration::minutes(5),
        attempt: 1,
        taken_over_from: None,
    });
    for step in [
        "Resolving the bundles",
        "Resolving the container images",
        "Checking that the bundles are allowed",
        "Building the index image for the following arches: amd64, s390x",
        "Pushing the index image",
    ] {
        request.push(BuildRequestEvent::ProgressRecorded {
            state_reason: step.into(),
        });
    }
    request.push(BuildRequestEvent::FactsRecorded {
        facts: BuildFacts {
            arches: ["amd64".to_string(), "s390x".to_string()].into(),
            index_image: Some(format!("registry.example.com/iib-build:{n}")),
            ..Default::default()
        },
    });
    request.push(BuildRequestEvent::RequestCompleted {
        state_reason: "The operator bundle(s) were successfully added to the index image".into(),
    });
    for e in request {
        out.push((true, n, serde_json::to_value(&e).unwrap(), e.event_type()));
    }
    for e in [
        BatchEvent::BatchRequestSettled {
            request_id: rid,
            state: RequestState::Complete,
        },
        BatchEvent::BatchFinished {
            state: RequestState::Complete,
        },
    ] {
        out.push((false, n, serde_json::to_value(&e).unwrap(), e.event_type()));
    }
    out
}

/// Writes `requests` finished add requests (12 events each) to an empty store.
async fn fill(store: &Store, requests: u64) -> Result<()> {
    if store.head_position().await? > 0 {
        anyhow::bail!("the bench database must be empty: give a fresh database");
    }
    let at = Utc::now().trunc_subsecs(6);
    let metadata =
        json!({"recorded_at": crate::store::format_time(&at), "user": "bench@EXAMPLE.COM"});
    let mut chunk = Vec::new();
    for n in 1..=requests {
        let mut sequences = (0i64, 0i64);
        for (is_request, id, payload, event_type) in request_life(n) {
            let (aggregate_type, sequence) = if is_request {
                sequences.0 += 1;
                (BuildRequest::TYPE, sequences.0)
            } else {
                sequences.1 += 1;
                (Batch::TYPE, sequences.1)
            };
            chunk.push(NewEvent {
                aggregate_type: aggregate_type.into(),
                aggregate_id: id.to_string(),
                sequence,
                event_type,
                event_version: iib_aggregates::EVENT_VERSION.into(),
                payload,
                metadata: metadata.clone(),
                recorded_at: at,
            });
        }
        if chunk.len() >= 6_000 || n == requests {
            store.append(&chunk, &[]).await?;
            chunk.clear();
        }
    }
    // As a store that has been running: the log folded into the database file.
    store.checkpoint_wal().await?;
    Ok(())
}

/// Fills a store with about `events` events and times a full projection rebuild.
pub async fn rebuild(events: u64, database_url: Option<String>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = database_url.unwrap_or_else(|| Store::sqlite_url_in(dir.path()));
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let requests = (events / 12).max(1);
    eprintln!(
        "writing {} events ({requests} add requests) to {url}",
        requests * 12
    );
    let started = Instant::now();
    fill(&store, requests).await?;
    eprintln!("  written in {:.1} s", started.elapsed().as_secs_f64());
    let report = Projector::new(store.clone()).rebuild(|_, _| {}).await?;
    println!(
        "rebuild: {} events, {} requests in {:.3} s = {:.0} events/s ({})",
        report.events,
        report.requests,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        if url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        },
    );
    store.close().await;
    Ok(())
}

/// Fills the store at `url` with `requests` finished requests and projects them, for API
/// benchmarks (`deploy/bench-api.sh`).
pub async fn seed(url: &str, requests: u64) -> Result<()> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let started = Instant::now();
    fill(&store, requests).await?;
    // The request ids were written directly: move the sequences past them.
    store.next_ids("request", requests as i64).await?;
    store.next_ids("batch", requests as i64).await?;
    Projector::new(store.clone()).catch_up().await?;
    println!(
        "seeded {requests} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}

/// Incompressible bytes, the same for the same seed.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        block = Sha256::digest(block);
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// Registry figures against the registry at `host` (plain HTTP on loopback): push a 3-arch
/// base of `base_mb` MB per arch, copy it to another repository (blobs mounted), and build a
/// 3-arch image with one new `layer_mb` MB layer on it.
pub async fn registry(host: &str, base_mb: usize, layer_mb: usize) -> Result<()> {
    use iib_oci::build::{layer, ConfigChanges};
    use iib_oci::manifest::Platform;
    use iib_oci::{ClientOptions, Reference, RegistryClient};
    use std::collections::BTreeMap;
    let client = RegistryClient::new(ClientOptions::default())?;
    let run = format!("{:x}", Utc::now().timestamp_micros());
    let base: Reference = format!("{host}/bench/base-{run}:1").parse()?;
    let arches = ["amd64", "ppc64le", "s390x"];
    eprintln!(
        "making a {}-arch base of {base_mb} MB per arch",
        arches.len()
    );
    let started = Instant::now();
    let mut entries = Vec::new();
    let mut pushed = 0u64;
    for arch in arches {
        let l = layer(&BTreeMap::from([(
            "bin/opm".to_string(),
            noise(&format!("{run}{arch}"), base_mb << 20),
        )]));
        pushed += client
            .push_blob(&base, &l.digest, l.blob.clone(), None)
            .await?;
        let config = json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id]},
        });
        let platform = Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        };
        let (entry, sent) = client
            .push_arch_image(&base, platform, &config, vec![l.descriptor()], None)
            .await?;
        pushed += sent;
        entries.push(entry);
    }
    client.push_index(&base, "1", entries, None).await?;
    println!(
        "push base:  {:.2} s, {:.1} MB uploaded (3 arches x {base_mb} MB, gzip of random data)",
        started.elapsed().as_secs_f64(),
        pushed as f64 / 1e6
    );

    let copy: Reference = format!("{host}/bench/copy-{run}:1").parse()?;
    let started = Instant::now();
    let (_, uploaded) = client.copy(&base, &copy, None).await?;
    println!(
        "copy:       {:.2} s, {uploaded} bytes uploaded (blobs mounted across repositories)",
        started.elapsed().as_secs_f64()
    );

    let built: Reference = format!("{host}/bench/built-{run}:1").parse()?;
    let new_layer = layer(&BTreeMap::from([(
        "configs/catalog.json".to_string(),
        noise(&format!("{run}-layer"), layer_mb << 20),
    )]));
    let changes = ConfigChanges {
        labels: BTreeMap::from([(
            "operators.operatorframework.io.index.configs.v1".to_string(),
            "/configs".to_string(),
        )]),
        created_by: "iib bench".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let result = client
        .build(
            &base,
            &built,
            &arches.map(String::from),
            std::slice::from_ref(&new_layer),
            &changes,
            None,
        )
        .await?;
    println!(
        "build+push: {:.2} s, {:.2} MB uploaded (new layer {:.2} MB, configs included; base layers mounted)",
        started.elapsed().as_secs_f64(),
        result.uploaded as f64 / 1e6,
        new_layer.blob.len() as f64 / 1e6
    );
    Ok(())
}

/// A synthetic bundle's files: a CSV of realistic size (description, owned CRD with
/// descriptors, install strategy, related images) and its CRD and annotations.
fn synthetic_bundle(
    package: &str,
    version: &str,
    replaces: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
    let description = "An operator that manages a fleet of widgets across namespaces. ".repeat(40);
    let descriptors: Vec<serde_json::Value> = (0..20)
        .map(|i| json!({"path": format!("spec.field{i}"), "displayName": format!("Field {i}"), "description": "A field of the widget spec.", "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:text"]}))
        .collect();
    let csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{package}.v{version}"),
            "annotations": {"capabilities": "Basic Install", "categories": "Developer Tools", "containerImage": format!("quay.io/example/{package}:{version}"), "alm-examples": "[{\"apiVersion\":\"example.com/v1\",\"kind\":\"Widget\",\"metadata\":{\"name\":\"w\"}}]"},
        },
        "spec": {
            "version": version,
            "replaces": replaces,
            "displayName": package,
            "description": description,
            "keywords": ["widgets", "fleet"],
            "maintainers": [{"name": "Bench", "email": "bench@example.com"}],
            "provider": {"name": "Example"},
            "links": [{"name": "Docs", "url": "https://example.com"}],
            "installModes": [{"type": "OwnNamespace", "supported": true}, {"type": "AllNamespaces", "supported": true}],
            "customresourcedefinitions": {"owned": [{"name": format!("widgets.{package}.example.com"), "version": "v1", "kind": "Widget", "displayName": "Widget", "description": "A widget.", "specDescriptors": descriptors}]},
            "relatedImages": [{"name": "operator", "image": format!("quay.io/example/{package}@sha256:{}", "a".repeat(64))}],
            "install": {"strategy": "deployment", "spec": {"deployments": [{"name": "manager", "spec": {"template": {"spec": {"containers": [{"name": "manager", "image": format!("quay.io/example/{package}:{version}")}]}}}}]}},
        }
    });
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{package}.example.com")},
        "spec": {"group": format!("{package}.example.com"), "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true}]}
    });
    let annotations = format!(
        "annotations:\n  operators.operatorframework.io.bundle.package.v1: {package}\n  operators.operatorframework.io.bundle.channels.v1: stable\n  operators.operatorframework.io.bundle.channel.default.v1: stable\n"
    );
    vec![
        (
            "manifests/csv.json".into(),
            serde_json::to_vec(&csv).expect("json"),
        ),
        (
            "manifests/crd.json".into(),
            serde_json::to_vec(&crd).expect("json"),
        ),
        ("metadata/annotations.yaml".into(), annotations.into_bytes()),
    ]
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// `iib bench catalog`: builds a catalog of `packages` × `bundles` (replaces chains), then
/// times loading, validating and writing it, and adding one bundle to it.
pub fn catalog(
    packages: usize,
    bundles: usize,
    fixtures: Option<std::path::PathBuf>,
) -> Result<()> {
    use iib_fbc::add::{add_bundles, AddOptions};
    use iib_fbc::declcfg::DeclarativeConfig;
    use iib_fbc::render::{render_bundle, ObjectsAs};
    use iib_fbc::write::{write_dir, Format};
    use iib_fbc::{load::load_dir, model::validate};

    let render = |package: &str, i: usize| {
        let version = format!("1.{i}.0");
        let replaces = (i > 0).then(|| format!("{package}.v1.{}.0", i - 1));
        let files = synthetic_bundle(package, &version, replaces.as_deref());
        render_bundle(
            files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
            &format!("quay.io/example/{package}-bundle:{version}"),
            ObjectsAs::CsvMetadata,
        )
    };
    let started = Instant::now();
    let mut config = DeclarativeConfig::default();
    for p in 0..packages {
        let package = format!("package-{p:03}");
        let rendered = (0..bundles)
            .map(|i| render(&package, i))
            .collect::<Result<Vec<_>, _>>()?;
        add_bundles(&mut config, rendered, &AddOptions::default())?;
    }
    let built = started.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("catalog");
    write_dir(&config, &source, Format::Yaml)?;
    let size: u64 = walk_size(&source);
    println!(
        "catalog: {} packages, {} bundles, {:.1} MB of YAML; rendered and added from scratch in {:.0} ms",
        packages,
        config.bundles.len(),
        size as f64 / 1e6,
        built * 1e3
    );

    let mut cycle = Vec::new();
    let mut phases = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..5 {
        let out = dir.path().join(format!("out-{run}"));
        let t0 = Instant::now();
        let loaded = load_dir(&source)?;
        let t1 = Instant::now();
        validate(&loaded).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t2 = Instant::now();
        write_dir(&loaded, &out, Format::Yaml)?;
        let t3 = Instant::now();
        phases.0.push((t1 - t0).as_secs_f64() * 1e3);
        phases.1.push((t2 - t1).as_secs_f64() * 1e3);
        phases.2.push((t3 - t2).as_secs_f64() * 1e3);
        cycle.push((t3 - t0).as_secs_f64() * 1e3);
    }
    println!(
        "load + validate + write (YAML): median {:.0} ms (load {:.0}, validate {:.0}, write {:.0}; goal < 500 ms)",
        median(cycle),
        median(phases.0),
        median(phases.1),
        median(phases.2)
    );

    let loaded = load_dir(&source)?;
    let mut adds = Vec::new();
    let mut with_validate = Vec::new();
    let package = format!("package-{:03}", packages / 2);
    for _ in 0..20 {
        let mut copy = loaded.clone();
        let t0 = Instant::now();
        let rendered = render(&package, bundles)?;
        add_bundles(&mut copy, vec![rendered], &AddOptions::default())?;
        let t1 = Instant::now();
        validate(&copy).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t2 = Instant::now();
        adds.push((t1 - t0).as_secs_f64() * 1e3);
        with_validate.push((t2 - t0).as_secs_f64() * 1e3);
    }
    println!(
        "add one bundle (render + add): median {:.2} ms, with validation of the whole catalog {:.1} ms (goal < 50 ms)",
        median(adds),
        median(with_validate)
    );

    if let Some(fixtures) = fixtures {
        let community = fixtures.join("catalogs/community-v4.18");
        if community.is_dir() {
            // One fixture package (slurm-operator) is truncated on purpose: load package by
            // package and leave out what does not load.
            let mut packages: Vec<std::path::PathBuf> = std::fs::read_dir(&community)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            packages.sort();
            let mut times = Vec::new();
            let (mut count, mut loaded_packages) = (0, 0);
            for run in 0..5 {
                let t0 = Instant::now();
                let mut loaded = DeclarativeConfig::default();
                loaded_packages = 0;
                for package in &packages {
                    if let Ok(config) = load_dir(package) {
                        loaded.merge(config);
                        loaded_packages += 1;
                    }
                }
                validate(&loaded).map_err(|e| anyhow::anyhow!("{e}"))?;
                write_dir(
                    &loaded,
                    &dir.path().join(format!("community-{run}")),
                    Format::Yaml,
                )?;
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                count = loaded.bundles.len();
            }
            println!(
                "community catalog ({loaded_packages} complete packages, {count} bundles): load + validate + write median {:.0} ms",
                median(times)
            );
        }
    }
    Ok(())
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                walk_size(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Pushes a one-arch image of `files` with `labels` under `reference` (an index of one).
async fn push_files_image(
    client: &iib_oci::RegistryClient,
    reference: &iib_oci::Reference,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let layer = iib_oci::build::layer(files);
    let entry = client
        .push_layer_image(reference, "amd64", &layer, labels, "iib bench")
        .await?;
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    client
        .push_index(reference, &tag, vec![entry], None)
        .await?;
    Ok(())
}

/// Peak resident memory of a process, in MB (Linux `VmHWM`).
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `iib bench add`: an `iib serve` (this binary) adds one bundle to an index of
/// `packages` × `bundles` over HTTP, `requests` times, against the registry at `host`;
/// prints the submit-to-complete times and the server's peak memory.
pub async fn add(
    host: &str,
    packages: usize,
    bundles: usize,
    requests: usize,
    fixtures: Option<std::path::PathBuf>,
    chain: bool,
) -> Result<()> {
    use iib_fbc::declcfg::DeclarativeConfig;
    use iib_oci::{ClientOptions, Reference, RegistryClient};
    use std::collections::BTreeMap;

    let client = RegistryClient::new(ClientOptions::default())?;
    let run = format!("{:x}", Utc::now().timestamp_micros());
    // The binary image: one small layer.
    let binary: Reference = format!("{host}/bench/opm-{run}:v4.18").parse()?;
    push_files_image(
        &client,
        &binary,
        &BTreeMap::from([("bin/opm".to_string(), noise("opm", 1 << 20))]),
        &BTreeMap::new(),
    )
    .await?;

    // The from_index: a synthetic catalog, or the fixtures' community catalog.
    let mut catalog = DeclarativeConfig::default();
    let (label, target_package, next_version) = match &fixtures {
        Some(dir) => {
            for entry in std::fs::read_dir(dir.join("catalogs/community-v4.18"))?.flatten() {
                if let Ok(config) = iib_fbc::load::load_dir(&entry.path()) {
                    catalog.merge(config);
                }
            }
            ("the community catalog".to_string(), None, 0)
        }
        None => {
            add_synthetic_packages(&mut catalog, host, packages, bundles)?;
            (
                format!("{packages} packages x {bundles} bundles"),
                Some(format!("package-{:03}", packages / 2)),
                bundles,
            )
        }
    };
    let index: Reference = format!("{host}/bench/index-{run}:v4.18").parse()?;
    push_catalog_index(&client, &binary, &index, &catalog).await?;
    eprintln!(
        "from_index {index}: {label}, {} bundles",
        catalog.bundles.len()
    );

    // The bundles to add: new heads of one package (or new packages for the fixtures).
    let mut new_bundles = Vec::new();
    for r in 0..requests {
        let (package, version, replaces) = match &target_package {
            Some(package) => (
                package.clone(),
                format!("1.{}.0", next_version + r),
                // Each replaces the index's head, or with --chain the previous request's.
                Some(format!(
                    "{package}.v1.{}.0",
                    if chain {
                        next_version + r
                    } else {
                        next_version
                    } - 1
                )),
            ),
            None => (format!("bench-extra-{r}"), "1.0.0".to_string(), None),
        };
        let files: BTreeMap<String, Vec<u8>> =
            synthetic_bundle(&package, &version, replaces.as_deref())
                .into_iter()
                .collect();
        let labels = BTreeMap::from([(
            "operators.operatorframework.io.bundle.package.v1".to_string(),
            package.clone(),
        )]);
        let reference: Reference =
            format!("{host}/bench/{package}-bundle:{version}-{run}").parse()?;
        push_files_image(&client, &reference, &files, &labels).await?;
        new_bundles.push(reference.to_string());
    }

    // The service, as deployed: this binary's `serve` on a fresh SQLite store.
    let data = tempfile::tempdir()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .env_clear()
        .env("IIB_DATA_DIR", data.path())
        .env("IIB_LISTEN_ADDR", "127.0.0.1:0")
        .env("IIB_LOG_LEVEL", "WARN")
        .env("LOGIN_DISABLED", "true")
        .env("IIB_REGISTRY", host)
        .env("IIB_REQUEST_LOGS_DIR", data.path().join("logs"))
        // Traces as the bench is told (`deploy/bench-registry.sh` with BENCH_OTLP=1).
        .envs(std::env::vars().filter(|(k, _)| k == "IIB_OTEL_TRACING" || k.starts_with("OTEL_")))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let base = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("iib: API listening on ") {
                        break url.to_string();
                    }
                }
                _ => anyhow::bail!("iib serve did not start"),
            }
        }
    };
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    // Every poll is a GET /builds/<id> answered while that request builds: the API's latency
    // under a worker's load.
    let mut get_latencies: Vec<f64> = Vec::new();
    for bundle in &new_bundles {
        let started = Instant::now();
        let mut body = json!({"bundles": [bundle], "from_index": index.to_string(), "binary_image": binary.to_string()});
        if chain {
            body["overwrite_from_index"] = json!(true);
            body["overwrite_from_index_token"] = json!("bench:bench");
        }
        let answer: serde_json::Value = http
            .post(format!("{base}/api/v1/builds/add"))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = answer["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("the add was refused: {answer}"))?;
        let state = loop {
            let asked = Instant::now();
            let body: serde_json::Value = http
                .get(format!("{base}/api/v1/builds/{id}"))
                .send()
                .await?
                .json()
                .await?;
            get_latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
            if body["state"] != "in_progress" {
                break body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        if state["state"] != "complete" {
            let _ = child.kill();
            anyhow::bail!("request {id} failed: {}", state["state_reason"]);
        }
        times.push(started.elapsed().as_secs_f64());
    }
    let rss = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // The first request reads the whole from_index; the others find its catalog in the
    // worker's cache and read, write and push only the changed package.
    let mut warm = times[1.min(times.len() - 1)..].to_vec();
    warm.sort_by(|a, b| a.total_cmp(b));
    println!(
        "add 1 bundle to {label} ({} bundles){}, {} requests: p50 {:.3} s, p90 {:.3} s, max {:.3} s (goal p50 < 3 s); first (cold) {:.3} s, later (warm) p50 {:.3} s; server peak RSS {} (goal < 300 MB)",
        catalog.bundles.len(),
        if chain {
            ", each on the last (overwrite_from_index)"
        } else {
            ""
        },
        times.len(),
        sorted[sorted.len() / 2],
        sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
        sorted[sorted.len() - 1],
        times[0],
        warm[warm.len() / 2],
        rss.map(|r| format!("{r:.0} MB")).unwrap_or_else(|| "unknown".into()),
    );
    get_latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        get_latencies[((get_latencies.len() as f64 * q) as usize).min(get_latencies.len() - 1)]
    };
    println!(
        "GET /api/v1/builds/<id> while the adds ran: {} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 50 ms)",
        get_latencies.len(),
        at(0.5),
        at(0.99),
        get_latencies[get_latencies.len() - 1],
    );
    Ok(())
}

/// `iib bench kafka`: commits `requests` rm requests (submitted, then completed: two
/// build.state messages each) on a fresh SQLite store while the relay runs, and times each
/// message from the commit of its event until a consumer reads it; then times a cold replay
/// of the whole history.
pub async fn kafka(brokers: &str, requests: u64) -> Result<()> {
    use crate::command_bus::{CommandBus, CommandContext, RequestSubmission, Submission};
    use crate::shutdown::Shutdown;
    use crate::streaming::messages::Topics;
    use crate::streaming::relay::{Relay, RelaySettings};
    use iib_aggregates::params::RmParams;
    use iib_aggregates::{Actor, BuildRequestCommand};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!(
        "sqlite://{}/bench.db?mode=rwc",
        dir.path().display()
    ))
    .await?;
    store.migrate().await?;
    let bus = CommandBus::new(store.clone(), Duration::hours(1));
    let run = format!("{:x}", Utc::now().timestamp_micros());
    let topics = Topics {
        build_state: format!("bench.build.state.{run}"),
        batch_state: format!("bench.batch.state.{run}"),
        events: None,
    };
    let settings = RelaySettings {
        brokers: brokers.to_string(),
        topics: topics.clone(),
        partitions: 3,
        replication_factor: 1,
        properties: Vec::new(),
    };
    let relay = Relay::new(store.clone(), settings.clone())?;
    relay.ensure_topics().await?;

    // The consumer notes when each (request, state) message arrives.
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[topics.build_state.as_str()])?;
    let arrived: Arc<Mutex<HashMap<(String, String), Instant>>> = Arc::default();
    let expected = (requests * 2) as usize;
    let reader = {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while arrived.lock().expect("lock").len() < expected {
                let Ok(Ok(message)) =
                    tokio::time::timeout(std::time::Duration::from_secs(30), consumer.recv()).await
                else {
                    break;
                };
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                let body: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or_default();
                let state = body["state"].as_str().unwrap_or("").to_string();
                arrived
                    .lock()
                    .expect("lock")
                    .entry((key, state))
                    .or_insert_with(Instant::now);
            }
        })
    };
    // Let the consumer join its group before the clock starts.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.run(bus.committed(), shutdown.clone()));
    let mut committed: HashMap<(String, String), Instant> = HashMap::new();
    eprintln!("committing {requests} requests (2 build.state messages each)");
    for _ in 0..requests {
        let submitted = bus
            .submit(
                Submission {
                    user: None,
                    annotations: None,
                    requests: vec![RequestSubmission {
                        params: iib_aggregates::RequestParams::Rm(RmParams {
                            operators: vec!["bench".into()],
                            from_index: Some("r/index:v4.18".into()),
                            ..Default::default()
                        }),
                        secrets: vec![],
                        queue: None,
                    }],
                },
                &CommandContext::default(),
            )
            .await?;
        let id = submitted.requests[0];
        committed.insert((id.to_string(), "in_progress".into()), Instant::now());
        bus.execute(
            id,
            BuildRequestCommand::Complete {
                actor: Actor::System,
                state_reason: "done".into(),
            },
            &CommandContext::default(),
        )
        .await?;
        committed.insert((id.to_string(), "complete".into()), Instant::now());
    }
    let _ = reader.await;
    shutdown.trigger();
    let _ = running.await;
    let arrived = arrived.lock().expect("lock").clone();
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(k, at)| {
            arrived
                .get(k)
                .map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    if latencies.is_empty() {
        anyhow::bail!("no message arrived");
    }
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "commit to consumer: {} of {} messages, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 200 ms)",
        latencies.len(),
        expected,
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    // A cold replay of the whole history to fresh topics.
    let mut replay_settings = settings;
    replay_settings.topics.build_state.push_str(".replay");
    replay_settings.topics.batch_state.push_str(".replay");
    let replay = Relay::new(store.clone(), replay_settings)?;
    replay.ensure_topics().await?;
    let events = store.read_after(0, i64::MAX).await?.len();
    let started = Instant::now();
    let sent = replay.replay(0).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "cold replay --to-kafka: {events} events ({sent} messages) in {seconds:.2} s, {:.0} events/s",
        events as f64 / seconds
    );
    Ok(())
}

/// Adds `packages` synthetic packages of `bundles` bundles each (`package-NNN`, versions
/// `1.0.0`, `1.1.0`, … each replacing the one before) to `catalog`, as pushed under `host`.
fn add_synthetic_packages(
    catalog: &mut iib_fbc::declcfg::DeclarativeConfig,
    host: &str,
    packages: usize,
    bundles: usize,
) -> Result<()> {
    use iib_fbc::add::{add_bundles, AddOptions};
    use iib_fbc::render::{render_bundle, ObjectsAs};
    for p in 0..packages {
        let package = format!("package-{p:03}");
        let rendered = (0..bundles)
            .map(|i| {
                let version = format!("1.{i}.0");
                let replaces = (i > 0).then(|| format!("{package}.v1.{}.0", i - 1));
                let files = synthetic_bundle(&package, &version, replaces.as_deref());
                render_bundle(
                    files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
                    &format!("{host}/bench/{package}-bundle:{version}"),
                    ObjectsAs::CsvMetadata,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        add_bundles(catalog, rendered, &AddOptions::default())?;
    }
    Ok(())
}

/// Pushes `catalog` as an amd64 FBC index image `index` on `binary`, labelled as IIB labels
/// a v4.18 index.
async fn push_catalog_index(
    client: &iib_oci::RegistryClient,
    binary: &iib_oci::Reference,
    index: &iib_oci::Reference,
    catalog: &iib_fbc::declcfg::DeclarativeConfig,
) -> Result<()> {
    use iib_oci::build::{layer, ConfigChanges};
    use std::collections::BTreeMap;
    let files: BTreeMap<String, Vec<u8>> =
        iib_fbc::write::to_files(catalog, iib_fbc::write::Format::Json)?
            .into_iter()
            .map(|(p, t)| (format!("configs/{p}"), t.into_bytes()))
            .collect();
    let changes = ConfigChanges {
        labels: BTreeMap::from([
            (
                "operators.operatorframework.io.index.configs.v1".to_string(),
                "/configs".to_string(),
            ),
            (
                "com.redhat.index.delivery.version".to_string(),
                "v4.18".to_string(),
            ),
        ]),
        ..Default::default()
    };
    client
        .build(
            binary,
            index,
            &["amd64".to_string()],
            &[layer(&files)],
            &changes,
            None,
        )
        .await?;
    Ok(())
}
