//! Merging two indexes (IIB's `merge-index-image`): the bundles the target index has and the
//! source lacks (neither the same digest nor the same CSV name) are added to the source.

use super::declcfg::{Bundle, DeclarativeConfig};
use std::collections::BTreeSet;

/// The digest of a pull spec (`…@sha256:<hex>`), if it names one.
pub fn digest_of(image: &str) -> Option<&str> {
    image.split_once("@sha256:").map(|(_, d)| d)
}

/// The bundles of `target` missing from `source`, in target order. A bundle not pinned to a
/// digest is an error, with IIB's message.
pub fn missing_bundles<'a>(
    source: &DeclarativeConfig,
    target: &'a DeclarativeConfig,
) -> Result<Vec<&'a Bundle>, String> {
    let mut digests = BTreeSet::new();
    let mut names = BTreeSet::new();
    for bundle in &source.bundles {
        let digest = digest_of(&bundle.image).ok_or_else(|| {
            format!(
                "Bundle {} in the source index image is not defined via digest",
                bundle.image
            )
        })?;
        digests.insert(digest);
        names.insert(bundle.name.as_str());
    }
    let mut missing = Vec::new();
    for bundle in &target.bundles {
        let digest = digest_of(&bundle.image).ok_or_else(|| {
            format!(
                "Bundle {} in the target index image is not defined via digest",
                bundle.image
            )
        })?;
        if !digests.contains(digest) && !names.contains(bundle.name.as_str()) {
            missing.push(bundle);
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::load::load_files;

    fn bundles(list: &[(&str, &str)]) -> DeclarativeConfig {
        let text: String = list
            .iter()
            .map(|(name, image)| {
                format!(
                    r#"{{"schema":"olm.bundle","package":"p","name":"{name}","image":"{image}"}}"#
                )
            })
            .collect();
        load_files([("c.json", text.as_bytes())]).unwrap()
    }

    #[test]
    fn missing_means_neither_the_digest_nor_the_name_is_in_the_source() {
        let source = bundles(&[
            ("p.v1", "r.example/p@sha256:aaa"),
            ("p.v2", "r.example/p@sha256:bbb"),
        ]);
        let target = bundles(&[
            ("p.v1", "r.example/other@sha256:aaa"),
            ("p.v2", "r.example/p@sha256:ccc"),
            ("p.v3", "r.example/p@sha256:ddd"),
        ]);
        let missing: Vec<&str> = missing_bundles(&source, &target)
            .unwrap()
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(missing, vec!["p.v3"]);
        let tagged = bundles(&[("p.v9", "r.example/p:9")]);
        assert_eq!(
            missing_bundles(&source, &tagged).unwrap_err(),
            "Bundle r.example/p:9 in the target index image is not defined via digest"
        );
    }
}
