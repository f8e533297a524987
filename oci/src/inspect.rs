//! What callers such as IIB's workers ask of an image besides its files: its labels (e.g.
//! `com.redhat.index.delivery.version`, `operators.operatorframework.io.index.configs.v1`),
//! the arches it offers, a `skopeo inspect`-like summary for logs, and chosen paths read out
//! of one arch's layers.

use crate::client::{RegistryClient, RegistryError};
use crate::digest::Digest;
use crate::manifest::{ImageManifest, Manifest};
use crate::reference::Reference;
use crate::unpack::{Extractor, Limits, Tree, UnpackError};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Why an image could not be inspected or read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Unpack(#[from] UnpackError),
    #[error("{image} has no linux/{arch} image; it offers {offered:?}")]
    NoSuchArch {
        image: String,
        arch: String,
        offered: Vec<String>,
    },
    #[error("{image}: the image config is not valid JSON: {reason}")]
    BadConfig { image: String, reason: String },
}

/// One arch of an image: its manifest digest, manifest, and config.
#[derive(Debug, Clone)]
pub struct ArchImage {
    pub arch: String,
    pub digest: Digest,
    pub manifest: ImageManifest,
    pub config: Value,
}

impl ArchImage {
    /// The config's labels (`config.Labels`); non-string values are left out.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config["config"]["Labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl RegistryClient {
    /// The arches an image offers (a single-arch image offers its config's architecture).
    pub async fn arches(&self, reference: &Reference) -> Result<Vec<String>, InspectError> {
        match self.manifest(reference).await?.0 {
            Manifest::Index(index) => Ok(index.arches()),
            Manifest::Image(image) => {
                let config = self.config(reference, &image).await?;
                Ok(vec![config["architecture"]
                    .as_str()
                    .unwrap_or("amd64")
                    .to_string()])
            }
        }
    }

    async fn config(
        &self,
        reference: &Reference,
        image: &ImageManifest,
    ) -> Result<Value, InspectError> {
        let bytes = self
            .small_blob(reference, &image.config.digest, image.config.size)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| InspectError::BadConfig {
            image: reference.to_string(),
            reason: e.to_string(),
        })
    }

    /// The image for `arch` (or, with `None`, amd64 when offered, else the first).
    pub async fn arch_image(
        &self,
        reference: &Reference,
        arch: Option<&str>,
    ) -> Result<ArchImage, InspectError> {
        let (manifest, digest, _) = self.manifest(reference).await?;
        let (digest, image) = match manifest {
            Manifest::Image(image) => (digest, image),
            Manifest::Index(index) => {
                let offered = index.arches();
                let wanted = arch.map(str::to_string).unwrap_or_else(|| {
                    if offered.iter().any(|a| a == "amd64") {
                        "amd64".into()
                    } else {
                        offered.first().cloned().unwrap_or_default()
                    }
                });
                let entry = index
                    .for_arch(&wanted)
                    .ok_or_else(|| InspectError::NoSuchArch {
                        image: reference.to_string(),
                        arch: wanted.clone(),
                        offered: offered.clone(),
                    })?;
                let child = reference.with_digest(entry.digest.clone());
                match self.manifest(&child).await? {
                    (Manifest::Image(image), digest, _) => (digest, image),
                    _ => {
                        return Err(RegistryError::Protocol {
                            what: child.to_string(),
                            reason: "an index inside an index is not supported".into(),
                        }
                        .into())
                    }
                }
            }
        };
        let config = self.config(reference, &image).await?;
        let arch = config["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .to_string();
        Ok(ArchImage {
            arch,
            digest,
            manifest: image,
            config,
        })
    }

    /// The labels of an image (of amd64 when it offers several arches).
    pub async fn labels(
        &self,
        reference: &Reference,
    ) -> Result<BTreeMap<String, String>, InspectError> {
        Ok(self.arch_image(reference, None).await?.labels())
    }

    /// A `skopeo inspect`-like summary, for logs.
    pub async fn inspect(&self, reference: &Reference) -> Result<Value, InspectError> {
        let digest = self.resolve(reference).await?;
        let arches = self.arches(reference).await?;
        let image = self.arch_image(reference, None).await?;
        Ok(json!({
            "Name": format!("{}/{}", reference.registry, reference.repository),
            "Digest": digest,
            "Created": image.config["created"],
            "Architecture": image.arch,
            "Os": image.config["os"],
            "Labels": image.labels(),
            "Layers": image.manifest.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
            "Env": image.config["config"]["Env"],
            "Arches": arches,
        }))
    }

    /// Reads `paths` (e.g. `/configs`) out of the layers of one arch of an image, fetching
    /// layers from the top down and none below one that hides everything under `paths`.
    pub async fn read_paths(
        &self,
        reference: &Reference,
        arch: Option<&str>,
        paths: &[&str],
        limits: Limits,
    ) -> Result<Tree, InspectError> {
        let image = self.arch_image(reference, arch).await?;
        let mut extractor = Extractor::new(paths, limits);
        let mut total: u64 = 0;
        for (index, layer) in image.manifest.layers.iter().enumerate().rev() {
            // Compressed sizes count against the cap too: nothing larger is even fetched (and
            // a hostile size cannot overflow the sum).
            total = match total.checked_add(layer.size) {
                Some(total) if total <= limits.max_bytes => total,
                _ => {
                    return Err(UnpackError::TooManyBytes {
                        limit: limits.max_bytes,
                    }
                    .into())
                }
            };
            let blob = self
                .blob_sized(reference, &layer.digest, layer.size)
                .await?;
            // Decompressing and reading a layer is CPU-bound: off the async runtime.
            let media_type = layer.media_type.clone();
            let (back, hides_below) = crate::blocking::run(move || {
                let hides_below = extractor.read(index, &media_type, &blob);
                (extractor, hides_below)
            })
            .await;
            extractor = back;
            if hides_below? {
                break;
            }
        }
        Ok(crate::blocking::run(move || extractor.finish()).await?)
    }
}
