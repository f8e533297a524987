//! Merging two indexes (IIB's `merge-index-image`): the bundles the target index has and the
//! source lacks (neither the same digest nor the same CSV name) are added to the source.

use super::add::{add_bundles, AddError, AddOptions, AddReport, GraphMode};
use super::declcfg::{Bundle, DeclarativeConfig};
use super::deprecate::{deprecate_truncate, DeprecateReport};
use super::render::RenderedBundle;
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

/// A bundle of a catalog as the add step needs it: its channels and edges as the catalog has
/// them (the channels it is an entry of stand for its channel annotations; it names its
/// package's default channel when it heads it).
pub fn rendered_from_catalog(config: &DeclarativeConfig, bundle: &Bundle) -> RenderedBundle {
    let mut channels = Vec::new();
    let (mut replaces, mut skips, mut skip_range) = (String::new(), Vec::new(), String::new());
    let mut sorted: Vec<_> = config
        .channels
        .iter()
        .filter(|c| c.package == bundle.package)
        .collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for channel in &sorted {
        if let Some(entry) = channel.entries.iter().find(|e| e.name == bundle.name) {
            channels.push(channel.name.clone());
            if replaces.is_empty() && skips.is_empty() {
                replaces = entry.replaces.clone();
                skips = entry.skips.clone();
            }
            if skip_range.is_empty() {
                skip_range = entry.skip_range.clone();
            }
        }
    }
    let default_channel = config
        .packages
        .iter()
        .find(|p| p.name == bundle.package)
        .map(|p| p.default_channel.clone())
        .filter(|d| channels.contains(d))
        .unwrap_or_default();
    RenderedBundle {
        bundle: bundle.clone(),
        channels,
        default_channel,
        version: bundle.version().unwrap_or("").to_string(),
        replaces,
        skips,
        skip_range,
        substitutes_for: String::new(),
        icon: None,
        removed_apis: Vec::new(),
        csv_olm_properties: None,
    }
}

/// IIB's merge-index-image on catalogs: the bundles `target` has and `source` lacks are
/// added to `source` in `mode`, then the bundles of `deprecation_list` are deprecated.
pub fn merge_indexes(
    source: &mut DeclarativeConfig,
    target: &DeclarativeConfig,
    mode: GraphMode,
    deprecation_list: &[String],
) -> Result<(AddReport, DeprecateReport), AddError> {
    let missing: Vec<RenderedBundle> = missing_bundles(source, target)
        .map_err(|e| AddError(vec![e]))?
        .into_iter()
        .map(|b| rendered_from_catalog(target, b))
        .collect();
    let added = add_bundles(
        source,
        missing,
        &AddOptions {
            mode,
            overwrite_latest: false,
        },
    )?;
    let deprecated = if deprecation_list.is_empty() {
        DeprecateReport::default()
    } else {
        deprecate_truncate(source, deprecation_list)?
    };
    Ok((added, deprecated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_files;

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

    #[test]
    fn merging_adds_what_the_target_has_and_deprecates_the_list() {
        let catalog = |versions: &[u32]| {
            let mut text =
                String::from(r#"{"schema":"olm.package","name":"p","defaultChannel":"stable"}"#);
            let entries: Vec<String> = versions
                .iter()
                .map(|v| {
                    let replaces = if *v > 1 {
                        format!(r#","replaces":"p.v{}""#, v - 1)
                    } else {
                        String::new()
                    };
                    format!(r#"{{"name":"p.v{v}"{replaces}}}"#)
                })
                .collect();
            text.push_str(&format!(
                r#"{{"schema":"olm.channel","package":"p","name":"stable","entries":[{}]}}"#,
                entries.join(",")
            ));
            for v in versions {
                text.push_str(&format!(
                    r#"{{"schema":"olm.bundle","package":"p","name":"p.v{v}","image":"r.example/p@sha256:{v:064}","properties":[{{"type":"olm.package","value":{{"packageName":"p","version":"{v}.0.0"}}}}]}}"#
                ));
            }
            load_files([("c.json", text.as_bytes())]).unwrap()
        };
        let mut source = catalog(&[1, 2]);
        let target = catalog(&[1, 2, 3, 4]);
        let (added, deprecated) = merge_indexes(
            &mut source,
            &target,
            GraphMode::Replaces,
            &[format!("r.example/p@sha256:{:064}", 2)],
        )
        .unwrap();
        let names: Vec<&str> = added.added.iter().map(|(_, b, _)| b.as_str()).collect();
        assert_eq!(names, vec!["p.v3", "p.v4"]);
        assert_eq!(deprecated.deprecated, vec!["p.v2"]);
        let bundles: Vec<&str> = source.bundles.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(bundles, vec!["p.v3", "p.v4"]);
        crate::model::validate(&source).unwrap();
    }
}
