//! Loading a file-based catalog: every `.json`, `.yaml` and `.yml` file under a directory (a
//! JSON file may hold several concatenated objects, a YAML file several documents), each blob
//! sorted by its `schema`. Works on a directory or on files read out of an image.

use super::declcfg::*;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// Why a catalog could not be read; each names the file at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadError {
    /// A file is not valid JSON or YAML.
    #[error("{path}: {reason}")]
    Parse {
        /// The file, as given (relative to the catalog root for [`load_dir`]).
        path: String,
        /// The parser's error.
        reason: String,
    },
    /// A blob has no `schema` string.
    #[error("{path}: a blob has no \"schema\" string")]
    NoSchema {
        /// The file holding the blob.
        path: String,
    },
    /// A blob of a known schema does not have that schema's shape.
    #[error("{path}: invalid {schema} blob: {reason}")]
    Invalid {
        /// The file holding the blob.
        path: String,
        /// The blob's schema, such as `olm.bundle`.
        schema: String,
        /// What did not fit.
        reason: String,
    },
    /// A directory or file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The directory or file.
        path: String,
        /// The operating system's error.
        reason: String,
    },
}

fn is_catalog_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !name.starts_with('.')
        && (name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// How deep `[`/`{` may nest in a YAML file (catalogs need a handful of levels).
const MAX_FLOW_NESTING: usize = 1000;

/// Whether flow collections in YAML text nest deeper than `limit`, counting brackets outside
/// quoted strings and comments (an over-estimate in plain scalars, which is fine for a guard).
fn flow_nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut i) = (0usize, 0usize);
    let mut previous = b'\n';
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' if previous.is_ascii_whitespace() => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if !previous.is_ascii_alphanumeric() => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = b;
        i += 1;
    }
    false
}

/// The blobs of one file.
fn blobs(path: &str, bytes: &[u8]) -> Result<Vec<Value>, LoadError> {
    let parse = |reason: String| LoadError::Parse {
        path: path.to_string(),
        reason,
    };
    let mut out = Vec::new();
    if path.ends_with(".json") {
        for value in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
            out.push(value.map_err(|e| parse(e.to_string()))?);
        }
    } else {
        // libyaml reads every event before serde's recursion limit applies, and deep flow
        // nesting costs it quadratic time: refuse it before parsing.
        if flow_nesting_exceeds(bytes, MAX_FLOW_NESTING) {
            return Err(parse(format!(
                "flow collections nested deeper than {MAX_FLOW_NESTING} levels"
            )));
        }
        for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
            let value = Value::deserialize(document).map_err(|e| parse(e.to_string()))?;
            if !value.is_null() {
                out.push(value);
            }
        }
    }
    Ok(out)
}

fn typed<T: serde::de::DeserializeOwned>(
    path: &str,
    schema: &str,
    blob: Value,
) -> Result<T, LoadError> {
    serde_json::from_value(blob).map_err(|e| LoadError::Invalid {
        path: path.to_string(),
        schema: schema.to_string(),
        reason: e.to_string(),
    })
}

/// Loads the catalog held by `files` (path → content), in path order.
pub fn load_files<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<DeclarativeConfig, LoadError> {
    let mut files: Vec<(&str, &[u8])> = files
        .into_iter()
        .filter(|(p, _)| is_catalog_file(p))
        .collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut config = DeclarativeConfig::default();
    for (path, bytes) in files {
        for blob in blobs(path, bytes)? {
            let schema = blob
                .get("schema")
                .and_then(Value::as_str)
                .ok_or_else(|| LoadError::NoSchema {
                    path: path.to_string(),
                })?
                .to_string();
            match schema.as_str() {
                SCHEMA_PACKAGE => config.packages.push(typed(path, &schema, blob)?),
                SCHEMA_CHANNEL => config.channels.push(typed(path, &schema, blob)?),
                SCHEMA_BUNDLE => config.bundles.push(typed(path, &schema, blob)?),
                SCHEMA_DEPRECATIONS => config.deprecations.push(typed(path, &schema, blob)?),
                _ => config.others.push(blob),
            }
        }
    }
    Ok(config)
}

/// Loads the catalog under `dir`.
pub fn load_dir(dir: &Path) -> Result<DeclarativeConfig, LoadError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let entries = std::fs::read_dir(&at).map_err(|e| LoadError::Io {
            path: at.display().to_string(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| LoadError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                if is_catalog_file(&relative) {
                    let bytes = std::fs::read(&path).map_err(|e| LoadError::Io {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    files.push((relative, bytes));
                }
            }
        }
    }
    load_files(files.iter().map(|(p, b)| (p.as_str(), b.as_slice())))
}
