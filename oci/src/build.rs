//! Daemonless image assembly: a new image per arch from a base image (IIB's "binary image")
//! plus layers made here, with config changes, pushed with an image index for all arches.
//! The base's layers are kept by reference (mounted within a registry, never re-uploaded);
//! layers are deterministic tars (sorted, mtime 0, uid/gid 0) gzipped without a timestamp,
//! and configs carry a fixed creation time, so the same content gives the same digest.

use crate::auth::Credentials;
use crate::client::{RegistryClient, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::inspect::InspectError;
use crate::manifest::{
    Descriptor, ImageIndex, ImageManifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
use crate::reference::Reference;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use tracing::Instrument;

/// A layer made here: its gzipped tar and the digest of the tar (the config's diff id).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Bytes,
    pub digest: Digest,
    pub diff_id: Digest,
}

/// Builds a deterministic layer from `files` (path → content; parent directories added).
pub fn layer(files: &BTreeMap<String, Vec<u8>>) -> Layer {
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut at = path.trim_matches('/');
        while let Some((dir, _)) = at.rsplit_once('/') {
            dirs.insert(dir.to_string());
            at = dir;
        }
    }
    let mut entries: Vec<(String, Option<&Vec<u8>>)> =
        dirs.into_iter().map(|d| (d, None)).collect();
    entries.extend(
        files
            .iter()
            .map(|(p, c)| (p.trim_matches('/').to_string(), Some(c))),
    );
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, content) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .expect("writing to memory");
            }
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(bytes.len() as u64);
                builder
                    .append_data(&mut header, &path, bytes.as_slice())
                    .expect("writing to memory");
            }
        }
    }
    let tar = builder.into_inner().expect("writing to memory");
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("writing to memory");
    let blob = Bytes::from(gz.finish().expect("writing to memory"));
    let mut hasher = Hasher::default();
    hasher.update(&blob);
    Layer {
        digest: hasher.finish(),
        diff_id,
        blob,
    }
}

/// Changes to the base image's config.
#[derive(Debug, Clone, Default)]
pub struct ConfigChanges {
    pub labels: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries, replacing a base entry of the same name.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// The history entry's `created_by`, e.g. what built the layer.
    pub created_by: String,
}

/// What a build pushed.
#[derive(Debug, Clone)]
pub struct Built {
    pub index: Digest,
    /// (arch, manifest digest), sorted by arch.
    pub manifests: Vec<(String, Digest)>,
    /// Blob bytes that crossed the wire.
    pub uploaded: u64,
}

/// One arch of an image to push: the layers it keeps, each with the repository that has it,
/// and its config before the changes.
struct ArchPlan<'a> {
    arch: String,
    kept: Vec<(Descriptor, &'a Reference)>,
    config: Value,
}

/// A fixed creation time, so builds are reproducible.
const CREATED: &str = "1970-01-01T00:00:00Z";

fn apply_changes(mut config: Value, layers: &[Layer], changes: &ConfigChanges) -> Value {
    let inner = &mut config["config"];
    if !inner.is_object() {
        *inner = json!({});
    }
    let labels = &mut inner["Labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, v) in &changes.labels {
        labels[k] = json!(v);
    }
    if let Some(entrypoint) = &changes.entrypoint {
        inner["Entrypoint"] = json!(entrypoint);
    }
    if let Some(cmd) = &changes.cmd {
        inner["Cmd"] = json!(cmd);
    }
    if let Some(dir) = &changes.working_dir {
        inner["WorkingDir"] = json!(dir);
    }
    if !changes.env.is_empty() {
        let mut env: Vec<String> = inner["Env"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for entry in &changes.env {
            let name = entry.split('=').next().unwrap_or(entry);
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(entry.clone());
        }
        inner["Env"] = json!(env);
    }
    if !config["rootfs"].is_object() {
        config["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    if let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array_mut() {
        diff_ids.extend(layers.iter().map(|l| json!(l.diff_id)));
    }
    if !config["history"].is_array() {
        config["history"] = json!([]);
    }
    if let Some(history) = config["history"].as_array_mut() {
        for _ in layers {
            history.push(json!({"created": CREATED, "created_by": changes.created_by}));
        }
    }
    config["created"] = json!(CREATED);
    config
}

fn encode<T: serde::Serialize>(value: &T, target: &Reference) -> Result<Bytes, RegistryError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| RegistryError::Protocol {
            what: target.to_string(),
            reason: e.to_string(),
        })
}

impl Layer {
    /// How a manifest lists this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            digest: self.digest.clone(),
            size: self.blob.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

impl RegistryClient {
    /// Pushes one arch of an image: its config blob and a manifest (by digest) listing
    /// `layers`, which the repository must have already. Returns the index entry for it and
    /// the bytes uploaded.
    pub async fn push_arch_image(
        &self,
        target: &Reference,
        platform: Platform,
        config: &Value,
        layers: Vec<Descriptor>,
        credentials: Option<&Credentials>,
    ) -> Result<(Descriptor, u64), RegistryError> {
        let config = encode(config, target)?;
        let config_descriptor = Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            platform: None,
            annotations: None,
        };
        let uploaded = self
            .push_blob(target, &config_descriptor.digest, config, credentials)
            .await?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: config_descriptor,
            layers,
            annotations: None,
        };
        let raw = encode(&manifest, target)?;
        let digest = Digest::of(&raw);
        let size = raw.len() as u64;
        self.push_manifest(target, digest.as_str(), OCI_MANIFEST, raw, credentials)
            .await?;
        let entry = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size,
            platform: Some(platform),
            annotations: None,
        };
        Ok((entry, uploaded))
    }

    /// Pushes an image of one layer for `arch` (the layer blob, a config carrying `labels`, a
    /// manifest) into `target`'s repository; returns its index entry, for `push_index`.
    pub async fn push_layer_image(
        &self,
        target: &Reference,
        arch: &str,
        layer: &Layer,
        labels: &BTreeMap<String, String>,
        created_by: &str,
    ) -> Result<Descriptor, RegistryError> {
        self.push_blob(target, &layer.digest, layer.blob.clone(), None)
            .await?;
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": CREATED, "created_by": created_by}],
            "created": CREATED,
        });
        let platform = Platform {
            architecture: arch.to_string(),
            os: "linux".into(),
            variant: None,
        };
        let (entry, _) = self
            .push_arch_image(target, platform, &config, vec![layer.descriptor()], None)
            .await?;
        Ok(entry)
    }

    /// Pushes an OCI image index of `entries` under `tag`; returns its digest.
    pub async fn push_index(
        &self,
        target: &Reference,
        tag: &str,
        entries: Vec<Descriptor>,
        credentials: Option<&Credentials>,
    ) -> Result<Digest, RegistryError> {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: entries,
            annotations: None,
        };
        let raw = encode(&index, target)?;
        self.push_manifest(target, tag, OCI_INDEX, raw, credentials)
            .await
    }

    /// Builds `target` for `arches` as `previous` plus `layers`, where `previous` was built on
    /// `base` (its layers start with `base`'s, for every arch, and the layers it added are the
    /// same for every arch): each arch keeps `previous`'s layers and gets `base`'s config with
    /// `changes`, so the result equals a build on `base` of all the layers. Returns `None`,
    /// having pushed nothing, when `previous` is not such an image or would then stack more
    /// than `max_added` layers on `base`.
    #[allow(clippy::too_many_arguments)]
    pub async fn build_extended(
        &self,
        base: &Reference,
        previous: &Reference,
        target: &Reference,
        arches: &[String],
        layers: &[Layer],
        changes: &ConfigChanges,
        max_added: usize,
        credentials: Option<&Credentials>,
    ) -> Result<Option<Built>, InspectError> {
        let mut arches: Vec<String> = arches.to_vec();
        arches.sort();
        arches.dedup();
        let diff_ids = |config: &Value| -> Vec<String> {
            config["rootfs"]["diff_ids"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        // Check every arch before pushing anything.
        let mut plans = Vec::new();
        let mut added_layers: Option<Vec<Digest>> = None;
        for arch in &arches {
            let image = self.arch_image(base, Some(arch)).await?;
            let before = match self.arch_image(previous, Some(arch)).await {
                Ok(before) => before,
                Err(InspectError::NoSuchArch { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let base_layers: Vec<&Digest> =
                image.manifest.layers.iter().map(|l| &l.digest).collect();
            let before_layers: Vec<&Digest> =
                before.manifest.layers.iter().map(|l| &l.digest).collect();
            let (base_ids, before_ids) = (diff_ids(&image.config), diff_ids(&before.config));
            let extends = before_layers.len() >= base_layers.len()
                && before_layers[..base_layers.len()] == base_layers[..]
                && before_ids.len() == before_layers.len()
                && base_ids.len() == base_layers.len()
                && before_ids[..base_ids.len()] == base_ids[..];
            if !extends || before_layers.len() - base_layers.len() + layers.len() > max_added {
                return Ok(None);
            }
            let added: Vec<Digest> = before_layers[base_layers.len()..]
                .iter()
                .map(|d| (*d).clone())
                .collect();
            match &added_layers {
                Some(first) if *first != added => return Ok(None),
                Some(_) => {}
                None => added_layers = Some(added),
            }
            plans.push((arch.clone(), image, before));
        }
        let plans = plans
            .into_iter()
            .map(|(arch, image, before)| {
                let mut config = image.config;
                config["rootfs"] = before.config["rootfs"].clone();
                config["history"] = before.config["history"].clone();
                let kept = before
                    .manifest
                    .layers
                    .into_iter()
                    .enumerate()
                    .map(|(i, layer)| {
                        let from = if i < image.manifest.layers.len() {
                            base
                        } else {
                            previous
                        };
                        (layer, from)
                    })
                    .collect();
                ArchPlan { arch, kept, config }
            })
            .collect();
        self.push_plans(target, plans, layers, changes, credentials)
            .await
            .map(Some)
    }

    /// Pushes each arch's image (its kept layers taken from where they are, `layers`, and its
    /// config with `changes`) and an index of them.
    async fn push_plans(
        &self,
        target: &Reference,
        plans: Vec<ArchPlan<'_>>,
        layers: &[Layer],
        changes: &ConfigChanges,
        credentials: Option<&Credentials>,
    ) -> Result<Built, InspectError> {
        let mut uploaded = 0;
        let mut entries = Vec::new();
        let mut manifests = Vec::new();
        for plan in plans {
            // One span an arch (OpenTelemetry's, when the service exports traces).
            let span = tracing::info_span!(
                "build_arch",
                arch = %plan.arch,
                bytes_pushed = tracing::field::Empty
            );
            let arch = plan.arch.clone();
            let (entry, sent) = self
                .push_plan(target, plan, layers, changes, credentials)
                .instrument(span.clone())
                .await?;
            span.record("bytes_pushed", sent);
            uploaded += sent;
            manifests.push((arch, entry.digest.clone()));
            entries.push(entry);
        }
        let index = self
            .push_index(target, &target.target(), entries, credentials)
            .instrument(tracing::info_span!("push_index", image = %target))
            .await?;
        Ok(Built {
            index,
            manifests,
            uploaded,
        })
    }

    /// Pushes one arch's image: its kept layers (from where they are), `layers`, and its
    /// config with `changes`. Returns its index entry and the bytes uploaded.
    async fn push_plan(
        &self,
        target: &Reference,
        plan: ArchPlan<'_>,
        layers: &[Layer],
        changes: &ConfigChanges,
        credentials: Option<&Credentials>,
    ) -> Result<(Descriptor, u64), RegistryError> {
        let mut uploaded = 0;
        let mut image_layers = Vec::with_capacity(plan.kept.len() + layers.len());
        for (layer, from) in plan.kept {
            uploaded += self
                .transfer_blob(from, target, &layer.digest, layer.size, credentials)
                .await?;
            image_layers.push(layer);
        }
        for layer in layers {
            uploaded += self
                .push_blob(target, &layer.digest, layer.blob.clone(), credentials)
                .await?;
        }
        image_layers.extend(layers.iter().map(Layer::descriptor));
        let platform = Platform {
            architecture: plan.arch.clone(),
            os: plan.config["os"].as_str().unwrap_or("linux").to_string(),
            variant: plan.config["variant"].as_str().map(str::to_string),
        };
        let config = apply_changes(plan.config, layers, changes);
        let (entry, sent) = self
            .push_arch_image(target, platform, &config, image_layers, credentials)
            .await?;
        Ok((entry, uploaded + sent))
    }

    /// Builds `target` for `arches` from `base` plus `layers`, and pushes it with an index
    /// tagged as `target` says.
    pub async fn build(
        &self,
        base: &Reference,
        target: &Reference,
        arches: &[String],
        layers: &[Layer],
        changes: &ConfigChanges,
        credentials: Option<&Credentials>,
    ) -> Result<Built, InspectError> {
        let mut arches: Vec<String> = arches.to_vec();
        arches.sort();
        arches.dedup();
        let mut plans = Vec::with_capacity(arches.len());
        for arch in arches {
            let image = self.arch_image(base, Some(&arch)).await?;
            plans.push(ArchPlan {
                arch,
                kept: image
                    .manifest
                    .layers
                    .into_iter()
                    .map(|l| (l, base))
                    .collect(),
                config: image.config,
            });
        }
        self.push_plans(target, plans, layers, changes, credentials)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_make_the_same_layer() {
        let mut files = BTreeMap::new();
        files.insert("configs/b/catalog.json".to_string(), b"{}".to_vec());
        files.insert("configs/a/catalog.json".to_string(), b"{\"a\":1}".to_vec());
        let one = layer(&files);
        let two = layer(&files);
        assert_eq!(one.digest, two.digest);
        assert_eq!(one.diff_id, two.diff_id);
        assert_eq!(Digest::of(&one.blob), one.digest);
        // It reads back with the reader, parent directories included.
        let tree = crate::unpack::extract(
            &[(OCI_LAYER_GZIP, &one.blob)],
            &["configs"],
            Default::default(),
        )
        .unwrap();
        assert_eq!(tree.file("configs/a/catalog.json"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(tree.nodes.get("configs/a"), Some(&crate::unpack::Node::Dir));
    }

    #[test]
    fn config_changes_merge_into_the_base() {
        let base = json!({"architecture": "s390x", "os": "linux",
            "config": {"Labels": {"a": "1"}, "Env": ["PATH=/bin", "X=1"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:00"]}, "history": [{}]});
        let l = layer(&BTreeMap::from([("x".to_string(), b"x".to_vec())]));
        let changes = ConfigChanges {
            labels: BTreeMap::from([(
                "operators.operatorframework.io.index.configs.v1".into(),
                "/configs".into(),
            )]),
            env: vec!["X=2".into()],
            entrypoint: Some(vec!["/bin/opm".into()]),
            created_by: "iib".into(),
            ..Default::default()
        };
        let config = apply_changes(base, std::slice::from_ref(&l), &changes);
        assert_eq!(config["config"]["Labels"]["a"], "1");
        assert_eq!(
            config["config"]["Labels"]["operators.operatorframework.io.index.configs.v1"],
            "/configs"
        );
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "X=2"]));
        assert_eq!(config["rootfs"]["diff_ids"][1], json!(l.diff_id));
        assert_eq!(config["history"].as_array().unwrap().len(), 2);
        assert_eq!(config["created"], CREATED);
    }
}
