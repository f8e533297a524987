//! The registry client against a real registry: push and pull by tag and digest, a multi-arch
//! index round trip, cross-repository mounts (no blob crosses the wire twice), existing
//! blobs skipped, and digests verified.

mod support;

use bytes::Bytes;
use iib::registry::manifest::{
    Descriptor, ImageIndex, ImageManifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
use iib::registry::{ClientOptions, Digest, Manifest, Reference, RegistryClient, RetryPolicy};
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
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Labels":{{"arch":"{arch}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let layer = format!("layer of {arch} ").repeat(1000).into_bytes();
        sent += client
            .push_blob(
                reference,
                &Digest::of(config.as_bytes()),
                Bytes::from(config.clone()),
                None,
            )
            .await
            .unwrap();
        sent += client
            .push_blob(
                reference,
                &Digest::of(&layer),
                Bytes::from(layer.clone()),
                None,
            )
            .await
            .unwrap();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: descriptor(OCI_CONFIG, config.as_bytes(), None),
            layers: vec![descriptor(OCI_LAYER_GZIP, &layer, None)],
            annotations: None,
        };
        let raw = serde_json::to_vec(&manifest).unwrap();
        let digest = client
            .push_manifest(
                reference,
                &Digest::of(&raw).to_string(),
                OCI_MANIFEST,
                Bytes::from(raw.clone()),
                None,
            )
            .await
            .unwrap();
        entries.push(descriptor(
            OCI_MANIFEST,
            &raw,
            Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
        ));
        assert_eq!(digest, Digest::of(&raw));
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        manifests: entries,
        annotations: None,
    };
    let raw = serde_json::to_vec(&index).unwrap();
    let digest = client
        .push_manifest(
            reference,
            reference.tag.as_deref().unwrap(),
            OCI_INDEX,
            Bytes::from(raw),
            None,
        )
        .await
        .unwrap();
    (digest, sent)
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
            assert!(client.blob_exists(&to, &layer.digest).await.unwrap());
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
