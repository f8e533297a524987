//! Writing a catalog as opm writes it (`alpha/declcfg/write.go`): blobs grouped by package,
//! packages by name; in each, the package blob, its channels and bundles by name (Go's sort),
//! its other blobs by schema, its deprecations; then blobs of no package. JSON is Go's
//! encoder with 4-space indents; YAML is `---` and go-yaml's document for each blob. A
//! directory gets `<package>/catalog.<ext>` per package and `catalog.<ext>` for the rest.

use super::declcfg::{package_of, DeclarativeConfig};
use super::{gojson, gosort, yaml};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The file format a catalog is written in (opm's `--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Go's `encoding/json` with 4-space indents, blob after blob.
    #[default]
    Json,
    /// go-yaml v2, each blob a `---` document.
    Yaml,
}

impl Format {
    /// The file extension of the format, dot included (`.json`, `.yaml`).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => ".json",
            Format::Yaml => ".yaml",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            other => Err(format!(
                "invalid --output value {other:?}, expected (json|yaml)"
            )),
        }
    }
}

/// Why a catalog could not be laid out as files or written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A package name that cannot be a directory name (`.`, `..`, or holding `/`, `\` or NUL).
    #[error("invalid package name {0:?}: must be a single local path element")]
    PackageName(String),
    /// The file system refused a write.
    #[error("cannot write {path}: {reason}")]
    Io {
        /// The file or directory being written.
        path: String,
        /// The operating system's error.
        reason: String,
    },
}

/// One blob in the writer's output.
fn encode<T: Serialize>(blob: &T, format: Format, out: &mut String) {
    match format {
        Format::Json => {
            out.push_str(&gojson::indented(blob));
            out.push('\n');
        }
        Format::Yaml => {
            let value = serde_json::to_value(blob).expect("catalog blobs are JSON");
            yaml::write_blob(&value, out);
        }
    }
}

/// The catalog's blobs by package name, in opm's order; blobs of no package under "".
fn by_package(config: &DeclarativeConfig, format: Format) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in config.package_names() {
        // opm drops packages, channels, bundles and deprecations with no package name.
        if name.is_empty() {
            continue;
        }
        let mut text = String::new();
        for package in config.packages.iter().filter(|p| p.name == name) {
            encode(package, format, &mut text);
        }
        let mut channels: Vec<_> = config
            .channels
            .iter()
            .filter(|c| c.package == name)
            .collect();
        gosort::sort_slice(&mut channels, |a, b| a.name < b.name);
        for channel in channels {
            encode(channel, format, &mut text);
        }
        let mut bundles: Vec<_> = config
            .bundles
            .iter()
            .filter(|b| b.package == name)
            .collect();
        gosort::sort_slice(&mut bundles, |a, b| a.name < b.name);
        for bundle in bundles {
            encode(bundle, format, &mut text);
        }
        let mut others: Vec<&Value> = config
            .others
            .iter()
            .filter(|o| package_of(o) == name)
            .collect();
        others.sort_by(|a, b| {
            let schema = |v: &Value| {
                v.get("schema")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            schema(a).cmp(&schema(b))
        });
        for other in others {
            encode(other, format, &mut text);
        }
        for deprecation in config.deprecations.iter().filter(|d| d.package == name) {
            encode(deprecation, format, &mut text);
        }
        out.insert(name.to_string(), text);
    }
    let mut root = String::new();
    for other in config.others.iter().filter(|o| package_of(o).is_empty()) {
        encode(other, format, &mut root);
    }
    if !root.is_empty() {
        out.insert(String::new(), root);
    }
    out
}

/// The whole catalog as one stream (`opm render` output, `WriteJSON`/`WriteYAML`).
pub fn to_string(config: &DeclarativeConfig, format: Format) -> String {
    let mut blobs = by_package(config, format);
    let root = blobs.remove("").unwrap_or_default();
    let mut out: String = blobs.into_values().collect();
    out.push_str(&root);
    out
}

/// The catalog's files as `WriteFS` lays them out: relative path → content.
pub fn to_files(
    config: &DeclarativeConfig,
    format: Format,
) -> Result<BTreeMap<String, String>, WriteError> {
    let mut files = BTreeMap::new();
    for (package, text) in by_package(config, format) {
        if package.is_empty() {
            files.insert(format!("catalog{}", format.extension()), text);
            continue;
        }
        let local = !package.contains('/')
            && !package.contains('\\')
            && package != "."
            && package != ".."
            && !package.contains('\0');
        if !local {
            return Err(WriteError::PackageName(package));
        }
        files.insert(format!("{package}/catalog{}", format.extension()), text);
    }
    Ok(files)
}

/// Writes the catalog under `dir` (created when missing), replacing what it held: each file is
/// written beside its final name and renamed into place, so a reader never sees half a file.
pub fn write_dir(config: &DeclarativeConfig, dir: &Path, format: Format) -> Result<(), WriteError> {
    let files = to_files(config, format)?;
    let io = |path: &Path, e: std::io::Error| WriteError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    // What the directory held before and no longer should: catalog files of other layouts.
    let wanted: BTreeSet<String> = files.keys().cloned().collect();
    for entry in walk(dir).map_err(|e| io(dir, e))? {
        let relative = entry
            .strip_prefix(dir)
            .unwrap_or(&entry)
            .to_string_lossy()
            .replace('\\', "/");
        let is_catalog = [".json", ".yaml", ".yml"]
            .iter()
            .any(|e| relative.ends_with(e));
        if is_catalog && !wanted.contains(&relative) {
            std::fs::remove_file(&entry).map_err(|e| io(&entry, e))?;
        }
    }
    for (relative, text) in files {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).map_err(|e| io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| io(&path, e))?;
    }
    // Package directories left empty.
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let path = entry.path();
        if path.is_dir()
            && std::fs::read_dir(&path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

/// Every file under `dir` (not following symlinks).
fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}
