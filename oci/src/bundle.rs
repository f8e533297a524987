//! Reading an operator bundle image: its labels, and the files under `/manifests` and
//! `/metadata` that the catalog engine renders. The engine is pure; this is its input.

use crate::client::RegistryClient;
use crate::inspect::InspectError;
use crate::reference::Reference;
use crate::unpack::{extract, Limits, Node, UnpackError};
use std::collections::BTreeMap;

/// The label that marks a bundle image (and names its package).
pub const PACKAGE_LABEL: &str = "operators.operatorframework.io.bundle.package.v1";
/// The label that marks a file-based catalog image (and says where the catalog is).
pub const CONFIGS_LABEL: &str = "operators.operatorframework.io.index.configs.v1";
/// The label of a legacy SQLite index image.
pub const DATABASE_LABEL: &str = "operators.operatorframework.io.index.database.v1";

/// Bundles are small: more than this much content is refused.
const BUNDLE_LIMITS: Limits = Limits {
    max_bytes: 256 << 20,
    max_entries: 10_000,
};

/// Why a bundle image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleImageError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{image}: {source}")]
    Unpack {
        image: String,
        #[source]
        source: UnpackError,
    },
    /// opm's words when an image is neither a bundle nor a catalog.
    #[error("render {image:?}: image type could not be determined, found labels\n{labels}")]
    NotABundle { image: String, labels: String },
    #[error("render {image:?}: image type could not be determined: image has no labels")]
    NoLabels { image: String },
}

/// A bundle image as the engine needs it.
#[derive(Debug, Clone)]
pub struct BundleImage {
    pub labels: BTreeMap<String, String>,
    /// Paths relative to the image root (`manifests/csv.yaml`) → contents.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl BundleImage {
    /// The files as (path, contents) borrowed pairs.
    pub fn file_refs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))
    }
}

impl RegistryClient {
    /// Reads the bundle image `reference` (its amd64 image, or the only one it has).
    pub async fn bundle_image(
        &self,
        reference: &Reference,
    ) -> Result<BundleImage, BundleImageError> {
        let image = self.arch_image(reference, None).await?;
        let labels = image.labels();
        if !labels.contains_key(PACKAGE_LABEL) {
            if labels.is_empty() {
                return Err(BundleImageError::NoLabels {
                    image: reference.to_string(),
                });
            }
            return Err(BundleImageError::NotABundle {
                image: reference.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| format!("  {k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        let mut blobs = Vec::with_capacity(image.manifest.layers.len());
        let mut total: u64 = 0;
        for layer in &image.manifest.layers {
            total = total.saturating_add(layer.size);
            if total > BUNDLE_LIMITS.max_bytes {
                return Err(BundleImageError::Unpack {
                    image: reference.to_string(),
                    source: UnpackError::TooManyBytes {
                        limit: BUNDLE_LIMITS.max_bytes,
                    },
                });
            }
            blobs.push((
                layer.media_type.clone(),
                self.blob_sized(reference, &layer.digest, layer.size)
                    .await
                    .map_err(InspectError::from)?,
            ));
        }
        // Decompressing and unpacking is CPU-bound: off the async runtime.
        let tree = crate::blocking::run(move || {
            let layers: Vec<(&str, &[u8])> = blobs
                .iter()
                .map(|(m, b)| (m.as_str(), b.as_ref()))
                .collect();
            extract(&layers, &["manifests", "metadata"], BUNDLE_LIMITS)
        })
        .await
        .map_err(|source| BundleImageError::Unpack {
            image: reference.to_string(),
            source,
        })?;
        let files = tree
            .nodes
            .into_iter()
            .filter_map(|(path, node)| match node {
                Node::File(bytes) => Some((path, bytes)),
                _ => None,
            })
            .collect();
        Ok(BundleImage { labels, files })
    }
}
