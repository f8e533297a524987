//! Registry answers are read with bounds: a 100 MB manifest, blobs longer than their
//! descriptors, huge error bodies and token answers each fail with a clear error, and the
//! process's memory stays small while they do. One test, so nothing else in this process moves
//! its peak memory.

mod support;

use iib_oci::{
    ClientOptions, LimitNames, ReadLimits, Reference, RegistryClient, RegistryError, RetryPolicy,
};
use support::hostile_registry::{HostileRegistry, MIB};

/// (resident now, peak resident since the last reset), in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Resets the peak (VmHWM) to the current resident size.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_registry_answers_fail_clearly_and_memory_stays_bounded() {
    let registry = HostileRegistry::start().await;
    let client = RegistryClient::new(ClientOptions {
        retry: RetryPolicy {
            attempts: 1,
            ..Default::default()
        },
        limits: ReadLimits {
            max_layer_bytes: 16 * MIB,
            names: LimitNames {
                manifest: "--max-manifest-bytes",
                layer: "--max-layer-bytes",
            },
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let reference =
        |tag: &str| -> Reference { format!("{}/image:{tag}", registry.host).parse().unwrap() };
    // Warm up the client (connection pool, TLS-free HTTP stack) before measuring.
    let _ = client.manifest(&reference("missing")).await;
    reset_peak();
    let (baseline, _) = memory();
    let bounded = |what: &str| {
        let (_, peak) = memory();
        let grown = peak.saturating_sub(baseline);
        assert!(
            grown < 48 * MIB,
            "{what}: peak memory grew by {} MiB",
            grown / MIB
        );
    };

    let err = client.manifest(&reference("huge")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == 4 * MIB),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("the limit --max-manifest-bytes sets"),
        "the error names the caller's setting: {err}"
    );
    bounded("a 100 MB manifest");

    let err = client.manifest(&reference("error")).await.unwrap_err();
    let RegistryError::Status { status, body, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(status.as_u16(), 400);
    assert!(body.len() <= 500, "only the start of an error body is kept");
    bounded("a 100 MB error body");

    let err = client.manifest(&reference("authed")).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { what, .. } if what.starts_with("token for")),
        "{err}"
    );
    bounded("a 100 MB token answer");

    // A blob longer than its descriptor declares stops at the declared size.
    let digest: iib_oci::Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    let err = client
        .blob_sized(&reference("any"), &digest, 1000)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { limit: 1000, why, .. } if why.contains("descriptor")),
        "{err}"
    );
    bounded("a 200 MB blob declared as 1,000 bytes");
    // One of unknown size stops at the layer limit.
    let err = client.blob(&reference("any"), &digest).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { limit, .. } if *limit == 16 * MIB),
        "{err}"
    );
    assert!(
        err.to_string().contains("the limit --max-layer-bytes sets"),
        "the error names the caller's setting: {err}"
    );
    bounded("a 200 MB blob of unknown size");
    // A descriptor declaring more than the limit is refused before anything is fetched, and a
    // hostile size cannot overflow anything.
    let err = client
        .blob_sized(&reference("any"), &digest, u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");

    // The same through the bundle reader: a bundle whose layer lies about its size.
    let err = client.bundle_image(&reference("bundle")).await.unwrap_err();
    assert!(err.to_string().contains("1000 bytes"), "{err}");
    bounded("a bundle image with a lying layer");
}
