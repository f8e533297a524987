//! The registry most worker tests start from: the kube-green bundles of the shared fixtures,
//! a two-arch binary image and an index of some of those bundles, pinned as IIB pins them.

use super::bundles::{community_packages, push_binary_image, push_bundle, push_index_image};
use super::registry::Registry;
use iib::catalog_cli::Sources;
use iib_fbc::add::{add_bundles, AddOptions};
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::render::ObjectsAs;
use iib_oci::{ClientOptions, Reference, RegistryClient};

/// A registry with the kube-green bundles, a two-arch binary image and an index holding the
/// first `in_index` kube-green bundles.
pub struct World {
    pub registry: Registry,
    pub bundles: Vec<String>,
    pub binary: String,
    pub index: String,
}

pub async fn world(in_index: usize) -> World {
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
