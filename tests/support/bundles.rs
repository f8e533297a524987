//! Operator bundles for tests: the shared fixtures' community bundles, and pushing a bundle
//! directory to a registry as `operator-sdk`/`opm alpha bundle build` would build it (one
//! layer holding `manifests/` and `metadata/`, labels from `metadata/annotations.yaml`).

use iib_oci::build::layer;
use iib_oci::{Reference, RegistryClient};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shared fixtures (`IIB_FIXTURES`, else `../shared/fixtures` beside the clone, else
/// `/work/shared/fixtures`).
pub fn fixtures() -> PathBuf {
    let candidates = [
        std::env::var_os("IIB_FIXTURES").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures"
        ))),
        Some(PathBuf::from("/work/shared/fixtures")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("community-operators").is_dir())
        .expect("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory")
}

/// A community package of the fixtures: its directory, catalog version and bundles (name,
/// version directory) in `bundles.json` order.
pub struct FixturePackage {
    pub name: String,
    pub dir: PathBuf,
    pub catalog_version: String,
    pub bundles: Vec<(String, PathBuf)>,
}

pub fn community_packages() -> Vec<FixturePackage> {
    let root = fixtures().join("community-operators");
    let mut packages: Vec<FixturePackage> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundles.json").is_file())
        .map(|dir| {
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("bundles.json")).unwrap()).unwrap();
            let bundles = index["bundles"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, version)| (name.clone(), dir.join(version.as_str().unwrap())))
                .collect();
            FixturePackage {
                name: dir.file_name().unwrap().to_string_lossy().to_string(),
                catalog_version: index["catalog_version"].as_str().unwrap().to_string(),
                dir,
                bundles,
            }
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

/// The files of a bundle directory's `manifests/` and `metadata/`, by relative path.
pub fn bundle_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["manifests", "metadata"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                files.insert(format!("{sub}/{name}"), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Pushes the bundle in `dir` as the image `reference` (an amd64 image under an index).
pub async fn push_bundle(client: &RegistryClient, reference: &Reference, dir: &Path) {
    push_bundle_with_labels(client, reference, dir, &BTreeMap::new()).await;
}

/// `push_bundle` with extra image labels.
pub async fn push_bundle_with_labels(
    client: &RegistryClient,
    reference: &Reference,
    dir: &Path,
    extra: &BTreeMap<String, String>,
) {
    let files = bundle_files(dir);
    let annotations: serde_json::Value =
        serde_yaml_ng::from_slice(&files["metadata/annotations.yaml"]).unwrap();
    let labels: BTreeMap<String, String> = annotations["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .chain(extra.clone())
        .collect();
    let entry = client
        .push_layer_image(reference, "amd64", &layer(&files), &labels, "bundle")
        .await
        .unwrap();
    client
        .push_index(
            reference,
            reference.tag.as_deref().unwrap(),
            vec![entry],
            None,
        )
        .await
        .unwrap();
}

/// A binary ("opm") image: per arch one layer with `bin/opm`, pushed as an image index.
pub async fn push_binary_image(client: &RegistryClient, reference: &Reference, arches: &[&str]) {
    let mut entries = Vec::new();
    for arch in arches {
        let files = BTreeMap::from([(
            "bin/opm".to_string(),
            format!("#!/bin/sh\necho opm for {arch}\n").into_bytes(),
        )]);
        entries.push(
            client
                .push_layer_image(reference, arch, &layer(&files), &BTreeMap::new(), "opm")
                .await
                .unwrap(),
        );
    }
    client
        .push_index(reference, reference.tag.as_deref().unwrap(), entries, None)
        .await
        .unwrap();
}

/// An index image holding `catalog` in `/configs`, built on `binary` for `arches`, with the
/// delivery labels IIB reads.
pub async fn push_index_image(
    client: &RegistryClient,
    binary: &Reference,
    target: &Reference,
    arches: &[&str],
    catalog: &iib_fbc::declcfg::DeclarativeConfig,
    delivery_version: &str,
) {
    use iib_oci::build::ConfigChanges;
    let files: BTreeMap<String, Vec<u8>> =
        iib_fbc::write::to_files(catalog, iib_fbc::write::Format::Json)
            .unwrap()
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
                delivery_version.to_string(),
            ),
            (
                "com.redhat.index.delivery.distribution_scope".to_string(),
                "prod".to_string(),
            ),
        ]),
        ..Default::default()
    };
    let arches: Vec<String> = arches.iter().map(|a| a.to_string()).collect();
    client
        .build(binary, target, &arches, &[layer(&files)], &changes, None)
        .await
        .unwrap();
}
