//! Reading files out of an image's layers, safely. Layers are untrusted input: each entry's
//! path must stay inside the image (no absolute paths, no `..`, nothing written through a
//! symlink, link targets that stay inside), device files are refused, and the bytes and files
//! read are capped so a decompression bomb stops early. OCI whiteouts (`.wh.<name>` and
//! `.wh..wh..opq`) remove what lower layers put there, in layer order. Layers may be plain
//! tar, gzip or zstd.

use crate::manifest::{DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use std::collections::BTreeMap;
use std::io::Read;

/// Caps on what reading an image may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes read across all layers (the tar streams, skipped entries included).
    pub max_bytes: u64,
    /// Entries read across all layers.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // What a large catalog may need; `ReadLimits::max_image_bytes` sets it per client.
            max_bytes: 2 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What a path of an image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// The files under the wanted paths, by normalized relative path (`configs/pkg/catalog.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

/// Why layers could not be read; the image is refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnpackError {
    #[error("layer {layer}: entry {path:?} is refused: {reason}")]
    Unsafe {
        layer: usize,
        path: String,
        reason: String,
    },
    #[error("reading the image would take more than {limit} uncompressed bytes; refused as a possible decompression bomb (raise the limit if the image is genuine)")]
    TooManyBytes { limit: u64 },
    #[error("the image has more than {limit} entries; refused (raise the limit if the image is genuine)")]
    TooManyEntries { limit: u64 },
    #[error("layer {layer} cannot be read: {reason}")]
    Corrupt { layer: usize, reason: String },
    #[error(
        "layer {layer} has media type {media_type:?}, which is not a tar layer this reader knows"
    )]
    UnknownMediaType { layer: usize, media_type: String },
}

/// Counts what passes and stops at the cap.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(CAP_EXCEEDED));
        }
        Ok(n)
    }
}

const CAP_EXCEEDED: &str = "iib: uncompressed size cap exceeded";

/// Normalizes a tar path to `a/b/c`; refuses absolute paths and `..`.
fn normalize(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("`..` is not allowed".into()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target relative to the link's directory; `None` if it leaves the image.
fn resolve(link_dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link_dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn wanted(path: &str, prefixes: &[String]) -> bool {
    prefixes.is_empty()
        || prefixes.iter().any(|p| {
            path == p || path.starts_with(&format!("{p}/")) || p.starts_with(&format!("{path}/"))
        })
}

impl Tree {
    /// Removes `path` and everything under it.
    fn remove_subtree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
    }

    /// Whether a directory on the way to `path` is a symlink (writing there would escape).
    fn through_symlink(&self, path: &str) -> bool {
        let mut at = path;
        while let Some((dir, _)) = at.rsplit_once('/') {
            if matches!(self.nodes.get(dir), Some(Node::Symlink(_))) {
                return true;
            }
            at = dir;
        }
        false
    }

    /// A file's bytes, if the tree has it.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(path.trim_start_matches('/')) {
            Some(Node::File(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The files under a directory, by path.
    pub fn files_under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{}/", dir.trim_matches('/'));
        self.nodes
            .iter()
            .filter_map(move |(path, node)| match node {
                Node::File(bytes) if path.starts_with(&prefix) => {
                    Some((path.as_str(), bytes.as_slice()))
                }
                _ => None,
            })
    }
}

/// Reads the wanted paths (e.g. `configs`, `database/index.db`; empty: everything) out of
/// `layers` (media type, blob), lowest first. Layers are read from the top down and reading
/// stops at a layer that hides everything below it under the wanted paths (an opaque whiteout
/// or a whiteout of the path), so lower layers are not even decompressed.
pub fn extract(
    layers: &[(&str, &[u8])],
    wanted_paths: &[&str],
    limits: Limits,
) -> Result<Tree, UnpackError> {
    let mut extractor = Extractor::new(wanted_paths, limits);
    for (index, (media_type, blob)) in layers.iter().enumerate().rev() {
        if extractor.read(index, media_type, blob)? {
            break;
        }
    }
    extractor.finish()
}

/// Reads layers from the top down (`read`, until it says the layers below cannot matter),
/// then applies them from the bottom up (`finish`).
pub struct Extractor {
    prefixes: Vec<String>,
    limits: Limits,
    bytes_budget: u64,
    entries_seen: u64,
    /// Layers read, top first.
    read: Vec<(usize, Layer)>,
}

impl Extractor {
    /// An extractor of `wanted_paths` (empty: everything) within `limits`.
    pub fn new(wanted_paths: &[&str], limits: Limits) -> Self {
        Self {
            prefixes: wanted_paths
                .iter()
                .map(|p| p.trim_matches('/').to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            limits,
            bytes_budget: limits.max_bytes,
            entries_seen: 0,
            read: Vec::new(),
        }
    }

    /// Reads layer `index` (the next one down); returns whether the layers below it are hidden
    /// under every wanted path, so there is no need to read them.
    pub fn read(
        &mut self,
        index: usize,
        media_type: &str,
        blob: &[u8],
    ) -> Result<bool, UnpackError> {
        let corrupt = |reason: String| UnpackError::Corrupt {
            layer: index,
            reason,
        };
        let reader: Box<dyn Read + '_> = match media_type {
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            OCI_LAYER_ZSTD => Box::new(
                ruzstd::decoding::StreamingDecoder::new(blob)
                    .map_err(|e| corrupt(e.to_string()))?,
            ),
            OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Box::new(blob),
            other => {
                return Err(UnpackError::UnknownMediaType {
                    layer: index,
                    media_type: other.to_string(),
                })
            }
        };
        let mut capped = Capped {
            inner: reader,
            read: 0,
            limit: self.bytes_budget,
        };
        let layer = read_layer(
            &mut capped,
            index,
            &self.prefixes,
            self.limits,
            &mut self.entries_seen,
        );
        let layer = match layer {
            Err(LayerError::Io(e)) if e.to_string().contains(CAP_EXCEEDED) => {
                return Err(UnpackError::TooManyBytes {
                    limit: self.limits.max_bytes,
                })
            }
            Err(LayerError::Io(e)) => return Err(corrupt(e.to_string())),
            Err(LayerError::Unpack(e)) => return Err(e),
            Ok(layer) => layer,
        };
        self.bytes_budget = self.bytes_budget.saturating_sub(capped.read);
        let hides_below = !self.prefixes.is_empty()
            && self.prefixes.iter().all(|wanted| {
                let covers = |dir: &String| {
                    dir.is_empty() || dir == wanted || wanted.starts_with(&format!("{dir}/"))
                };
                layer.opaque.iter().any(covers) || layer.whiteouts.iter().any(covers)
            });
        self.read.push((index, layer));
        Ok(hides_below)
    }

    /// The tree the layers read make, applied from the lowest one read.
    pub fn finish(self) -> Result<Tree, UnpackError> {
        let mut tree = Tree::default();
        for (index, layer) in self.read.into_iter().rev() {
            apply(&mut tree, layer, index)?;
        }
        Ok(tree)
    }
}

enum LayerError {
    Io(std::io::Error),
    Unpack(UnpackError),
}

impl From<std::io::Error> for LayerError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One layer's entries, read but not applied.
#[derive(Default)]
struct Layer {
    /// Paths whose lower-layer content goes (`.wh.<name>`).
    whiteouts: Vec<String>,
    /// Directories whose lower-layer children go (`.wh..wh..opq`).
    opaque: Vec<String>,
    entries: Vec<(String, Node)>,
    /// Hard links: (path, target), resolved after the layer's files are known.
    hardlinks: Vec<(String, String)>,
}

fn read_layer(
    reader: &mut dyn Read,
    index: usize,
    prefixes: &[String],
    limits: Limits,
    entries_seen: &mut u64,
) -> Result<Layer, LayerError> {
    let unsafe_entry = |path: &str, reason: &str| {
        LayerError::Unpack(UnpackError::Unsafe {
            layer: index,
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    let mut archive = tar::Archive::new(reader);
    let mut layer = Layer::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        *entries_seen += 1;
        if *entries_seen > limits.max_entries {
            return Err(LayerError::Unpack(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            }));
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(&raw_path).map_err(|reason| unsafe_entry(&raw_path, &reason))?;
        if path.is_empty() {
            continue;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            layer.opaque.push(dir.to_string());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            layer.whiteouts.push(hidden);
            continue;
        }
        if !wanted(&path, prefixes) {
            continue;
        }
        let kind = entry.header().entry_type();
        let node = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut bytes = Vec::with_capacity(entry.size().min(1 << 24) as usize);
                entry.read_to_end(&mut bytes)?;
                Node::File(bytes)
            }
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if target.starts_with('/') || resolve(parent(&path), &target).is_none() {
                    return Err(unsafe_entry(
                        &raw_path,
                        &format!("the symlink to {target:?} leaves the image"),
                    ));
                }
                Node::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let target = normalize(&target).map_err(|reason| {
                    unsafe_entry(&raw_path, &format!("its hard link target {reason}"))
                })?;
                layer.hardlinks.push((path, target));
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_entry(&raw_path, "device files are not allowed"))
            }
            tar::EntryType::Fifo => return Err(unsafe_entry(&raw_path, "FIFOs are not allowed")),
            // Extended headers and the like carry no file.
            _ => continue,
        };
        layer.entries.push((path, node));
    }
    Ok(layer)
}

fn apply(tree: &mut Tree, layer: Layer, index: usize) -> Result<(), UnpackError> {
    for dir in &layer.opaque {
        if dir.is_empty() {
            tree.nodes.clear();
        } else {
            let prefix = format!("{dir}/");
            tree.nodes.retain(|k, _| !k.starts_with(&prefix));
        }
    }
    for path in &layer.whiteouts {
        tree.remove_subtree(path);
    }
    for (path, node) in layer.entries {
        if tree.through_symlink(&path) {
            return Err(UnpackError::Unsafe {
                layer: index,
                path,
                reason: "a directory on its path is a symlink; writing through it could escape"
                    .into(),
            });
        }
        if !matches!(node, Node::Dir) {
            tree.remove_subtree(&path);
        }
        tree.nodes.insert(path, node);
    }
    for (path, target) in layer.hardlinks {
        match tree.nodes.get(&target) {
            Some(Node::File(bytes)) => {
                let bytes = bytes.clone();
                tree.nodes.insert(path, Node::File(bytes));
            }
            _ => {
                return Err(UnpackError::Unsafe {
                    layer: index,
                    path,
                    reason: format!("its hard link target {target:?} is not a file in the image"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
