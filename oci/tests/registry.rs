//! The registry client against a real registry: push and pull by tag and digest, a multi-arch
//! index round trip, cross-repository mounts (no blob crosses the wire twice), existing
//! blobs skipped, and digests verified.

mod support;

use bytes::Bytes;
use iib_oci::manifest::{Descriptor, Platform, OCI_LAYER_GZIP};
use iib_oci::{ClientOptions, Digest, Manifest, Reference, RegistryClient, RetryPolicy};
use std::time::Duration;
use support::registry::Registry;

fn client() -> RegistryClient {
    RegistryClient::new(ClientOptions {
        retry: RetryPolicy {
            attempts: 3,
            delay: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
        },
        ..Default::default()
    })
    .unwrap()
}

fn descriptor(media_type: &str, bytes: &[u8], platform: Option<Platform>) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform,
        annotations: None,
    }
}

/// Pushes a 2-arch image (one config and one layer per arch) and tags its index.
async fn push_two_arch_image(client: &RegistryClient, reference: &Reference) -> (Digest, u64) {
    let mut entries = Vec::new();
    let mut sent = 0;
    for arch in ["amd64", "s390x"] {
        let config = serde_json::json!({"architecture": arch, "os": "linux",
            "config": {"Labels": {"arch": arch}}, "rootfs": {"type": "layers", "diff_ids": []}});
        let layer = format!("layer of {arch} ").repeat(1000).into_bytes();
        sent += client
            .push_blob(
                reference,
                &Digest::of(&layer),
                Bytes::from(layer.clone()),
                None,
            )
            .await
            .unwrap();
        let (entry, config_sent) = client
            .push_arch_image(
                reference,
                platform(arch),
                &config,
                vec![descriptor(OCI_LAYER_GZIP, &layer, None)],
                None,
            )
            .await
            .unwrap();
        sent += config_sent;
        entries.push(entry);
    }
    let digest = client
        .push_index(reference, reference.tag.as_deref().unwrap(), entries, None)
        .await
        .unwrap();
    (digest, sent)
}

fn platform(arch: &str) -> Platform {
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_image_round_trips_by_tag_and_digest() {
    let registry = Registry::start().await;
    let client = client();
    let reference: Reference = format!("{}/ns/index:v4.18", registry.host).parse().unwrap();
    let (digest, sent) = push_two_arch_image(&client, &reference).await;
    assert!(sent > 0);

    assert_eq!(client.resolve(&reference).await.unwrap(), digest);
    let (manifest, got_digest, _) = client
        .manifest(&reference.with_digest(digest.clone()))
        .await
        .unwrap();
    assert_eq!(got_digest, digest);
    let Manifest::Index(index) = manifest else {
        panic!("an index")
    };
    assert_eq!(index.arches(), ["amd64", "s390x"]);
    let s390x = index.for_arch("s390x").unwrap();
    let (image, _, _) = client
        .manifest(&reference.with_digest(s390x.digest.clone()))
        .await
        .unwrap();
    let Manifest::Image(image) = image else {
        panic!("an image")
    };
    let config = client.blob(&reference, &image.config.digest).await.unwrap();
    assert!(String::from_utf8_lossy(&config).contains(r#""arch":"s390x""#));

    // Pushing what is already there sends nothing.
    let (_, again) = push_two_arch_image(&client, &reference).await;
    assert_eq!(again, 0, "existing blobs are skipped");

    let missing: Reference = format!("{}/ns/index:nope", registry.host).parse().unwrap();
    let err = client.manifest(&missing).await.unwrap_err();
    assert!(err.to_string().ends_with("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_within_a_registry_mounts_every_blob() {
    let registry = Registry::start().await;
    let client = client();
    let from: Reference = format!("{}/ns/source:1", registry.host).parse().unwrap();
    let (digest, _) = push_two_arch_image(&client, &from).await;
    let to: Reference = format!("{}/other/target:copied", registry.host)
        .parse()
        .unwrap();
    let (copied, uploaded) = client.copy(&from, &to, None).await.unwrap();
    assert_eq!(copied, digest, "the same index, byte for byte");
    assert_eq!(uploaded, 0, "blobs were mounted, not uploaded");
    assert_eq!(client.resolve(&to).await.unwrap(), digest);
    let Manifest::Index(index) = client.manifest(&to).await.unwrap().0 else {
        panic!()
    };
    for entry in &index.manifests {
        let (image, _, _) = client
            .manifest(&to.with_digest(entry.digest.clone()))
            .await
            .unwrap();
        let Manifest::Image(image) = image else {
            panic!()
        };
        for layer in &image.layers {
            assert!(client.blob_exists(&to, &layer.digest, None).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_checked_against_its_digest() {
    let registry = Registry::start().await;
    let client = client();
    let reference: Reference = format!("{}/ns/blobs:1", registry.host).parse().unwrap();
    let bytes = Bytes::from_static(b"some content");
    let digest = Digest::of(&bytes);
    assert_eq!(
        client
            .push_blob(&reference, &digest, bytes.clone(), None)
            .await
            .unwrap(),
        12
    );
    assert_eq!(client.blob(&reference, &digest).await.unwrap(), bytes);
    // Uploading bytes under a digest they do not have is refused by the registry.
    let wrong = Digest::of(b"other");
    assert!(client
        .push_blob(&reference, &wrong, bytes, None)
        .await
        .is_err());
}

/// Incompressible bytes, the same for the same seed.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Digest::of(seed.as_bytes()).to_string().into_bytes();
    while out.len() < len {
        block = Digest::of(&block).to_string().into_bytes();
        out.extend_from_slice(&block[7..]);
    }
    out.truncate(len);
    out
}

/// A base ("binary") image: per arch, one real gzip layer with an `opm` and a label.
async fn push_base(client: &RegistryClient, reference: &Reference, arches: &[&str]) -> u64 {
    use iib_oci::build::layer;
    use std::collections::BTreeMap;
    let mut entries = Vec::new();
    let mut base_bytes = 0;
    for arch in arches {
        let files = BTreeMap::from([
            ("bin/opm".to_string(), noise(arch, 300_000)),
            (
                "configs/base/catalog.json".to_string(),
                format!("{{\"from\":\"{arch}\"}}").into_bytes(),
            ),
        ]);
        let l = layer(&files);
        base_bytes += l.blob.len() as u64;
        client
            .push_blob(reference, &l.digest, l.blob.clone(), None)
            .await
            .unwrap();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Labels": {"com.redhat.index.delivery.version": "v4.18"}, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id]},
        });
        let (entry, _) = client
            .push_arch_image(
                reference,
                platform(arch),
                &config,
                vec![l.descriptor()],
                None,
            )
            .await
            .unwrap();
        entries.push(entry);
    }
    client
        .push_index(reference, reference.tag.as_deref().unwrap(), entries, None)
        .await
        .unwrap();
    base_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_on_a_base_mounts_its_layers_and_reads_back() {
    use iib_oci::build::{layer, ConfigChanges};
    use iib_oci::unpack::Limits;
    use std::collections::BTreeMap;
    let registry = Registry::start().await;
    let client = client();
    let base: Reference = format!("{}/ns/opm:v4.18", registry.host).parse().unwrap();
    let base_bytes = push_base(&client, &base, &["amd64", "s390x", "ppc64le"]).await;
    let target: Reference = format!("{}/iib/iib-build:7", registry.host)
        .parse()
        .unwrap();
    let new_layer = layer(&BTreeMap::from([(
        "configs/kube-green/catalog.json".to_string(),
        noise("catalog", 50_000),
    )]));
    let changes = ConfigChanges {
        labels: BTreeMap::from([(
            "operators.operatorframework.io.index.configs.v1".to_string(),
            "/configs".to_string(),
        )]),
        created_by: "iib test".into(),
        ..Default::default()
    };
    let arches = vec!["s390x".to_string(), "amd64".to_string()];
    let built = client
        .build(
            &base,
            &target,
            &arches,
            std::slice::from_ref(&new_layer),
            &changes,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        built
            .manifests
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>(),
        ["amd64", "s390x"]
    );
    // Only the new layer crossed the wire, once, plus two small configs; the base was mounted.
    let new = new_layer.blob.len() as u64;
    assert!(
        built.uploaded >= new && built.uploaded < new + 10_000,
        "uploaded {} (layer {new}, base {base_bytes})",
        built.uploaded
    );
    assert_eq!(client.resolve(&target).await.unwrap(), built.index);
    assert_eq!(client.arches(&target).await.unwrap(), ["amd64", "s390x"]);

    let labels = client.labels(&target).await.unwrap();
    assert_eq!(
        labels["com.redhat.index.delivery.version"], "v4.18",
        "kept from the base"
    );
    assert_eq!(
        labels["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );
    let tree = client
        .read_paths(&target, Some("s390x"), &["/configs"], Limits::default())
        .await
        .unwrap();
    assert_eq!(
        tree.file("configs/base/catalog.json"),
        Some(&b"{\"from\":\"s390x\"}"[..])
    );
    assert_eq!(
        tree.file("configs/kube-green/catalog.json")
            .map(|f| f.len()),
        Some(50_000)
    );
    let summary = client.inspect(&target).await.unwrap();
    assert_eq!(summary["Digest"], built.index.to_string());
    assert_eq!(summary["Layers"].as_array().unwrap().len(), 2);

    // The same build again: the same digest, nothing uploaded.
    let again = client
        .build(
            &base,
            &target,
            &arches,
            std::slice::from_ref(&new_layer),
            &changes,
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.index, built.index, "reproducible");
    assert_eq!(again.uploaded, 0);
    // An arch the base lacks is a clear error.
    let err = client
        .build(&base, &target, &["arm64".to_string()], &[], &changes, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no linux/arm64 image"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_retried_after_server_errors() {
    use std::sync::atomic::Ordering;
    use support::faults::FaultProxy;
    let registry = Registry::start().await;
    let client = client();
    let direct: Reference = format!("{}/ns/retry:1", registry.host).parse().unwrap();
    let (digest, _) = push_two_arch_image(&client, &direct).await;
    let proxy = FaultProxy::start(&registry.host, 2).await;
    let through: Reference = format!("{}/ns/retry:1", proxy.host).parse().unwrap();
    assert_eq!(
        client.resolve(&through).await.unwrap(),
        digest,
        "the third try gets through"
    );
    assert_eq!(proxy.calls.load(Ordering::SeqCst), 3);
    // More failures than attempts: the error says what the registry answered.
    let stubborn = FaultProxy::start(&registry.host, 10).await;
    let through: Reference = format!("{}/ns/retry:1", stubborn.host).parse().unwrap();
    let err = client.resolve(&through).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(
        stubborn.calls.load(Ordering::SeqCst),
        3,
        "attempts are capped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_basic_auth_takes_our_credentials_and_refuses_others() {
    use iib_oci::auth::{CredentialStore, Credentials};
    let registry = Registry::start_with_auth(Some(("robot", "s3cret"))).await;
    let anonymous = client();
    let reference: Reference = format!("{}/ns/private:1", registry.host).parse().unwrap();
    let err = anonymous
        .push_blob(
            &reference,
            &Digest::of(b"x"),
            Bytes::from_static(b"x"),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(err.to_string().contains("no credentials"), "{err}");
    let mut credentials = CredentialStore::default();
    credentials.insert(
        &registry.host,
        Credentials::from_user_colon_secret("robot:s3cret").unwrap(),
    );
    let authed = RegistryClient::new(ClientOptions {
        credentials,
        ..Default::default()
    })
    .unwrap();
    let (digest, _) = push_two_arch_image(&authed, &reference).await;
    assert_eq!(authed.resolve(&reference).await.unwrap(), digest);
    // A per-request override (IIB's overwrite_from_index_token) works without a store entry.
    let token = Credentials::from_user_colon_secret("robot:s3cret").unwrap();
    assert_eq!(
        anonymous
            .push_blob(
                &reference,
                &Digest::of(b"y"),
                Bytes::from_static(b"y"),
                Some(&token)
            )
            .await
            .unwrap(),
        1
    );
    let wrong = Credentials::from_user_colon_secret("robot:nope").unwrap();
    let err = anonymous
        .push_blob(
            &reference,
            &Digest::of(b"z"),
            Bytes::from_static(b"z"),
            Some(&wrong),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the secret is not in the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_tools_read_the_images_we_build() {
    use iib_oci::build::{layer, ConfigChanges};
    use std::collections::BTreeMap;
    use std::process::Command;
    let registry = Registry::start().await;
    let client = client();
    let base: Reference = format!("{}/ns/opm:v4.18", registry.host).parse().unwrap();
    push_base(&client, &base, &["amd64", "s390x"]).await;
    let target: Reference = format!("{}/iib/iib-build:8", registry.host)
        .parse()
        .unwrap();
    let new_layer = layer(&BTreeMap::from([(
        "configs/kube-green/catalog.json".to_string(),
        b"{\"schema\":\"olm.package\",\"name\":\"kube-green\"}".to_vec(),
    )]));
    let changes = ConfigChanges {
        labels: BTreeMap::from([(
            "operators.operatorframework.io.index.configs.v1".to_string(),
            "/configs".to_string(),
        )]),
        created_by: "iib test".into(),
        ..Default::default()
    };
    client
        .build(
            &base,
            &target,
            &["amd64".into(), "s390x".into()],
            &[new_layer],
            &changes,
            None,
        )
        .await
        .unwrap();
    let image = format!("docker://{target}");
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("skopeo and umoci are installed by tests/run-all.sh");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let inspected: serde_json::Value = serde_json::from_str(&run(&[
        "skopeo",
        "--insecure-policy",
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "s390x",
        &image,
    ]))
    .unwrap();
    assert_eq!(inspected["Architecture"], "s390x");
    assert_eq!(
        inspected["Labels"]["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run(&[
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        &image,
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
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("configs/kube-green/catalog.json")).unwrap(),
        "{\"schema\":\"olm.package\",\"name\":\"kube-green\"}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("configs/base/catalog.json")).unwrap(),
        "{\"from\":\"amd64\"}"
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/opm")).unwrap().len(),
        300_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_streamed_downloads_and_new_tags() {
    let registry = Registry::start().await;
    let client = client();
    let reference: Reference = format!("{}/ns/chunks:1", registry.host).parse().unwrap();
    let bytes = Bytes::from(noise("chunks", 1_000_003));
    let digest = Digest::of(&bytes);
    let sent = client
        .push_blob_chunked(&reference, &digest, bytes.clone(), 256 * 1024, None)
        .await
        .unwrap();
    assert_eq!(sent, 1_000_003);
    let mut out = Vec::new();
    let read = client
        .blob_to(&reference, &digest, &mut out, 2_000_000)
        .await
        .unwrap();
    assert_eq!((read, out.as_slice()), (1_000_003, bytes.as_ref()));
    let err = client
        .blob_to(&reference, &digest, &mut Vec::new(), 1000)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than the 1000 bytes allowed"),
        "{err}"
    );
    assert_eq!(
        client
            .push_blob_chunked(&reference, &digest, bytes, 1024, None)
            .await
            .unwrap(),
        0
    );

    let (index, _) = push_two_arch_image(&client, &reference).await;
    let tagged = client.tag(&reference, "v4.18-nightly", None).await.unwrap();
    assert_eq!(tagged, index);
    let nightly = reference.with_tag("v4.18-nightly");
    assert_eq!(client.resolve(&nightly).await.unwrap(), index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_fetched_per_scope_and_cached() {
    use iib_oci::auth::{CredentialStore, Credentials};
    use std::sync::atomic::Ordering;
    use support::token_issuer::TokenIssuer;
    let issuer = TokenIssuer::start("robot", "s3cret").await;
    let registry = Registry::start_with_auth_config(&issuer.registry_auth_config()).await;
    let reference: Reference = format!("{}/ns/private:1", registry.host).parse().unwrap();
    let anonymous = client();
    let err = anonymous.resolve(&reference).await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let mut credentials = CredentialStore::default();
    credentials.insert(
        &registry.host,
        Credentials::from_user_colon_secret("robot:s3cret").unwrap(),
    );
    let authed = RegistryClient::new(ClientOptions {
        credentials,
        ..Default::default()
    })
    .unwrap();
    let issued_before = issuer.tokens_issued.load(Ordering::SeqCst);
    let (digest, _) = push_two_arch_image(&authed, &reference).await;
    assert_eq!(authed.resolve(&reference).await.unwrap(), digest);
    let (_, _, _) = authed.manifest(&reference).await.unwrap();
    let issued = issuer.tokens_issued.load(Ordering::SeqCst) - issued_before;
    // One token per scope (pull; pull,push), reused for every later call.
    assert!(
        (1..=2).contains(&issued),
        "{issued} tokens for dozens of calls"
    );
}

#[test]
fn zstd_layers_made_by_the_reference_compressor_are_read() {
    use iib_oci::build::layer;
    use iib_oci::manifest::OCI_LAYER_ZSTD;
    use iib_oci::unpack::{extract, Limits};
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::process::{Command, Stdio};
    // A plain tar of our own making, compressed by Debian's zstd at a real level.
    let gz = layer(&BTreeMap::from([(
        "configs/pkg/catalog.json".to_string(),
        noise("zstd", 200_000),
    )]));
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.blob[..]), &mut tar).unwrap();
    let mut child = Command::new("zstd")
        .args(["-q", "-19", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd is installed by tests/run-all.sh");
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let compressed = child.wait_with_output().unwrap().stdout;
    let tree = extract(
        &[(OCI_LAYER_ZSTD, &compressed)],
        &["configs"],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(
        tree.file("configs/pkg/catalog.json").map(|f| f.len()),
        Some(200_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_configs_named_by_digest_are_read_once_per_client() {
    let registry = Registry::start().await;
    let reference: Reference = format!("{}/ns/cached:1", registry.host).parse().unwrap();
    let reader = client();
    let (digest, _) = push_two_arch_image(&reader, &reference).await;
    let pinned = reference.with_digest(digest.clone());
    let labels = reader.labels(&pinned).await.unwrap();
    assert_eq!(reader.arches(&pinned).await.unwrap(), ["amd64", "s390x"]);
    // With the registry gone, what is named by digest still reads; what a tag names does not.
    drop(registry);
    assert_eq!(reader.resolve(&pinned).await.unwrap(), digest);
    assert_eq!(reader.labels(&pinned).await.unwrap(), labels);
    assert_eq!(reader.arches(&pinned).await.unwrap(), ["amd64", "s390x"]);
    assert!(reader.resolve(&reference).await.is_err());
    // Another client has its own cache.
    assert!(client().resolve(&pinned).await.is_err());
}
