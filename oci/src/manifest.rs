//! Manifests, image indexes and descriptors: OCI's and Docker's v2 schema 2 media types.
//! Schema 1 manifests are refused with a clear error.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// An OCI image index (a multi-arch image).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest (one arch).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layers: a tar, gzipped, zstd-compressed, or plain.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
#[allow(missing_docs)]
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
#[allow(missing_docs)]
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker's schema 2 manifest list (its multi-arch image).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's gzipped tar layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// What we ask registries for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The platform an index entry is for (`linux`/`amd64`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Content by reference: its media type, digest and size (and, in an index, its platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One arch of an image: its config and layers, lowest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A multi-arch image: one manifest per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a registry answers for a manifest reference: an image or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Why a manifest could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{0} is a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a current client (schema 2 or OCI)")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("the manifest is not valid JSON of its type: {0}")]
    Malformed(String),
}

impl Manifest {
    /// Parses a manifest by its media type (the `Content-Type`, else the `mediaType` field).
    pub fn parse(
        content_type: Option<&str>,
        bytes: &[u8],
        what: &str,
    ) -> Result<Self, ManifestError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let declared = value.get("mediaType").and_then(Value::as_str);
        let header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        let media_type = header
            .filter(|h| {
                !h.is_empty() && *h != "application/json" && *h != "application/octet-stream"
            })
            .or(declared)
            .unwrap_or(if value.get("manifests").is_some() {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            });
        if media_type.starts_with(DOCKER_SCHEMA1)
            || value.get("schemaVersion") == Some(&Value::from(1))
        {
            return Err(ManifestError::Schema1(what.to_string()));
        }
        let malformed = |e: serde_json::Error| ManifestError::Malformed(e.to_string());
        match media_type {
            OCI_INDEX | DOCKER_LIST => Ok(Self::Index(
                serde_json::from_value(value).map_err(malformed)?,
            )),
            OCI_MANIFEST | DOCKER_MANIFEST => Ok(Self::Image(
                serde_json::from_value(value).map_err(malformed)?,
            )),
            other => Err(ManifestError::UnsupportedMediaType(other.to_string())),
        }
    }

    /// Its media type (the OCI one when the document does not say).
    pub fn media_type(&self) -> &str {
        match self {
            Self::Image(m) => m.media_type.as_deref().unwrap_or(OCI_MANIFEST),
            Self::Index(i) => i.media_type.as_deref().unwrap_or(OCI_INDEX),
        }
    }
}

impl ImageIndex {
    /// The manifest for `architecture` on Linux.
    pub fn for_arch(&self, architecture: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == architecture && p.os == "linux")
        })
    }

    /// The architectures it offers (Linux only), sorted.
    pub fn arches(&self) -> Vec<String> {
        let mut arches: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os == "linux")
            .map(|p| p.architecture.clone())
            .collect();
        arches.sort();
        arches.dedup();
        arches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_pick_the_kind_and_schema1_is_refused() {
        let d = Digest::of(b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{d}","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}}]}}"#
        );
        let Manifest::Index(parsed) = Manifest::parse(None, index.as_bytes(), "r/i:1").unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(parsed.arches(), ["s390x"]);
        assert!(parsed.for_arch("s390x").is_some());
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}"#;
        let err = Manifest::parse(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            schema1,
            "r/i:1",
        )
        .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("r/i:1 is a Docker schema 1 manifest"));
        assert!(matches!(
            Manifest::parse(None, b"nope", "x"),
            Err(ManifestError::Malformed(_))
        ));
    }
}
