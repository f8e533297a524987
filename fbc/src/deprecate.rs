//! Deprecating bundles by truncating the upgrade graph, as IIB does with
//! `opm registry deprecatetruncate --allow-package-removal` followed by `opm migrate`, directly
//! on the file-based catalog:
//! - a deprecated bundle leaves the catalog; in every channel it is in, every bundle below it
//!   (through replaces and skips) goes too, and channels it heads are deleted; bundles above it
//!   keep `replaces` pointing at it (a channel's tail may replace a missing bundle);
//! - below-bundles that also live in channels without the deprecated bundle stay there;
//! - the head of a package's default channel can only go with its whole package: listing
//!   every channel head of a package removes the package;
//! - anything that would remove the default channel's head otherwise fails for that bundle
//!   (`Bundle deprecation causing default channel removal`) and the others go on.

use super::add::AddError;
use super::declcfg::{Channel, DeclarativeConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a deprecation removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeprecateReport {
    /// Bundles deprecated (and so removed), by name.
    pub deprecated: Vec<String>,
    /// Packages removed because all their channel heads were deprecated.
    pub removed_packages: Vec<String>,
    /// Bundles truncated below a deprecated one and gone from the catalog.
    pub truncated: Vec<String>,
}

fn head_of(channel: &Channel) -> Option<&str> {
    let targets: BTreeSet<&str> = channel
        .entries
        .iter()
        .flat_map(|e| {
            std::iter::once(e.replaces.as_str()).chain(e.skips.iter().map(String::as_str))
        })
        .collect();
    let heads: Vec<&str> = channel
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !targets.contains(n))
        .collect();
    match heads.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// Deprecates the bundles whose images are `images` (IIB's `deprecation_list`).
pub fn deprecate_truncate(
    config: &mut DeclarativeConfig,
    images: &[String],
) -> Result<DeprecateReport, AddError> {
    let mut report = DeprecateReport::default();
    if config.bundles.is_empty() {
        return Ok(report);
    }
    let missing: Vec<&str> = images
        .iter()
        .map(String::as_str)
        .filter(|i| !config.bundles.iter().any(|b| b.image == *i))
        .collect();
    if !missing.is_empty() {
        return Err(AddError(vec![format!(
            "target bundlepaths for deprecation missing from registry: [{}]",
            missing.join(" ")
        )]));
    }

    // Packages whose default channel head is listed: all their heads must be, and then the
    // package goes.
    let mut remaining: Vec<String> = images.to_vec();
    let mut packages_to_remove: Vec<String> = Vec::new();
    for image in images {
        let Some(bundle) = config.bundles.iter().find(|b| &b.image == image) else {
            continue;
        };
        let package = bundle.package.clone();
        let Some(default) = config
            .packages
            .iter()
            .find(|p| p.name == package)
            .map(|p| p.default_channel.clone())
        else {
            continue;
        };
        let heads_default = config
            .channels
            .iter()
            .find(|c| c.package == package && c.name == default)
            .and_then(head_of)
            == Some(bundle.name.as_str());
        if !heads_default || packages_to_remove.contains(&package) {
            continue;
        }
        let mut channels: Vec<&Channel> = config
            .channels
            .iter()
            .filter(|c| c.package == package)
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        for channel in channels {
            let head = head_of(channel).unwrap_or("");
            let head_image = config
                .bundles
                .iter()
                .find(|b| b.package == package && b.name == head)
                .map(|b| b.image.clone())
                .unwrap_or_default();
            if !images.contains(&head_image) {
                return Err(AddError(vec![format!(
                    "cannot deprecate default channel head from package without removing all other channel heads in package {package}: must deprecate {head_image}, head of channel {}",
                    channel.name
                )]));
            }
            remaining.retain(|i| i != &head_image);
        }
        packages_to_remove.push(package);
    }
    for package in &packages_to_remove {
        super::add::remove_packages(config, std::slice::from_ref(package))?;
        report.removed_packages.push(package.clone());
    }

    let mut errors = Vec::new();
    for image in &remaining {
        let Some(bundle) = config.bundles.iter().find(|b| &b.image == image) else {
            continue; // Gone with its package, or never there: opm ignores it.
        };
        let (package, name) = (bundle.package.clone(), bundle.name.clone());
        match deprecate_one(config, &package, &name, &mut report) {
            Ok(()) => {}
            Err(e) if e == "Bundle deprecation causing default channel removal" => {
                errors.push(format!("error deprecating bundle {image}: {e}"));
            }
            Err(e) => {
                errors.push(format!("error deprecating bundle {image}: {e}"));
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(AddError(errors))
    }
}

/// opm's `DeprecateBundle` for one bundle, then what `opm migrate` keeps.
fn deprecate_one(
    config: &mut DeclarativeConfig,
    package: &str,
    name: &str,
    report: &mut DeprecateReport,
) -> Result<(), String> {
    let channels: Vec<&Channel> = config
        .channels
        .iter()
        .filter(|c| c.package == package)
        .collect();
    let default = config
        .packages
        .iter()
        .find(|p| p.name == package)
        .map(|p| p.default_channel.clone())
        .unwrap_or_default();
    let default_head = channels
        .iter()
        .find(|c| c.name == default)
        .and_then(|c| head_of(c))
        .map(str::to_string)
        .ok_or_else(|| {
            format!("error getting default channel head for {name}: sql: no rows in result set")
        })?;

    // The tail: every name reachable from the bundle's entries in any channel, through
    // replaces and skips, and from those names' entries in any channel.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut channels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for channel in &channels {
        for entry in &channel.entries {
            channels_of
                .entry(&entry.name)
                .or_default()
                .insert(&channel.name);
            for target in std::iter::once(&entry.replaces)
                .chain(entry.skips.iter())
                .filter(|t| !t.is_empty())
            {
                edges.entry(&entry.name).or_default().insert(target);
                channels_of
                    .entry(target.as_str())
                    .or_default()
                    .insert(&channel.name);
            }
        }
    }
    let mut tail: Vec<&str> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([name]);
    let mut queue = VecDeque::from([name]);
    while let Some(at) = queue.pop_front() {
        tail.push(at);
        for next in edges.get(at).into_iter().flatten() {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    if tail.contains(&default_head.as_str()) {
        return Err("Bundle deprecation causing default channel removal".into());
    }
    let head_channels: BTreeSet<String> = channels_of
        .get(name)
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    // (opm also deletes below-bundles that live nowhere else; in the catalog they simply have
    // no entries left, which drops them below.)
    let below: BTreeSet<String> = tail.iter().skip(1).map(|s| s.to_string()).collect();
    let headed: BTreeSet<String> = channels
        .iter()
        .filter(|c| head_of(c) == Some(name))
        .map(|c| c.name.clone())
        .collect();

    for channel in config.channels.iter_mut().filter(|c| c.package == package) {
        if !head_channels.contains(&channel.name) {
            continue;
        }
        channel.entries.retain(|e| !below.contains(&e.name));
        for entry in &mut channel.entries {
            if below.contains(&entry.replaces) {
                entry.replaces.clear();
            }
            entry.skips.retain(|s| !below.contains(s));
            if entry.name == name {
                entry.replaces.clear();
                entry.skips.clear();
            }
        }
    }
    // Channels it heads go; elsewhere it stays a tombstone, which migrate drops.
    config
        .channels
        .retain(|c| c.package != package || !headed.contains(&c.name));
    for channel in config.channels.iter_mut().filter(|c| c.package == package) {
        channel.entries.retain(|e| e.name != name);
    }
    // Bundles no channel lists any more are invisible after migrate.
    let listed: BTreeSet<String> = config
        .channels
        .iter()
        .filter(|c| c.package == package)
        .flat_map(|c| c.entries.iter().map(|e| e.name.clone()))
        .collect();
    let before: Vec<String> = config
        .bundles
        .iter()
        .filter(|b| b.package == package)
        .map(|b| b.name.clone())
        .collect();
    config
        .bundles
        .retain(|b| b.package != package || (b.name != name && listed.contains(&b.name)));
    report.deprecated.push(name.to_string());
    for gone in before
        .into_iter()
        .filter(|n| n != name && !listed.contains(n))
    {
        report.truncated.push(gone);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_files;

    fn catalog(text: &str) -> DeclarativeConfig {
        load_files([("c.yaml", text.as_bytes())]).unwrap()
    }

    const GRAPH: &str = r#"
schema: olm.package
name: demo
defaultChannel: stable
---
schema: olm.channel
package: demo
name: stable
entries:
- name: demo.v1
- name: demo.v2
  replaces: demo.v1
- name: demo.v3
  replaces: demo.v2
- name: demo.v4
  replaces: demo.v3
---
schema: olm.channel
package: demo
name: fast
entries:
- name: demo.v1
- name: demo.v2
  replaces: demo.v1
- name: demo.v5
  replaces: demo.v2
"#;

    fn with_bundles(graph: &str, names: &[&str]) -> DeclarativeConfig {
        let mut text = graph.to_string();
        for name in names {
            // demo.vN is version N.0.0.
            let version = name.trim_start_matches("demo.v");
            text.push_str(&format!(
                "---\nschema: olm.bundle\npackage: demo\nname: {name}\nimage: registry.example/demo:{name}\nproperties:\n- type: olm.package\n  value: {{packageName: demo, version: {version}.0.0}}\n"
            ));
        }
        catalog(&text)
    }

    fn entries(config: &DeclarativeConfig, channel: &str) -> Vec<(String, String)> {
        config
            .channels
            .iter()
            .find(|c| c.name == channel)
            .map(|c| {
                c.entries
                    .iter()
                    .map(|e| (e.name.clone(), e.replaces.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn deprecating_truncates_below_in_the_bundles_channels_only() {
        let mut config = with_bundles(
            GRAPH,
            &["demo.v1", "demo.v2", "demo.v3", "demo.v4", "demo.v5"],
        );
        let report =
            deprecate_truncate(&mut config, &["registry.example/demo:demo.v3".into()]).unwrap();
        assert_eq!(report.deprecated, vec!["demo.v3"]);
        // stable: v4 still replaces v3 (gone); v2 and v1 are cut from stable.
        assert_eq!(
            entries(&config, "stable"),
            vec![("demo.v4".into(), "demo.v3".into())]
        );
        // fast never had v3: v1 and v2 stay there, and so do their bundles.
        assert_eq!(entries(&config, "fast").len(), 3);
        let names: Vec<&str> = config.bundles.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, vec!["demo.v1", "demo.v2", "demo.v4", "demo.v5"]);
        crate::model::validate(&config).unwrap();
    }

    #[test]
    fn the_default_heads_go_only_with_their_package() {
        let mut config = with_bundles(
            GRAPH,
            &["demo.v1", "demo.v2", "demo.v3", "demo.v4", "demo.v5"],
        );
        let error = deprecate_truncate(
            &mut config.clone(),
            &["registry.example/demo:demo.v4".into()],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot deprecate default channel head from package without removing all other channel heads in package demo: must deprecate registry.example/demo:demo.v5, head of channel fast"
        );
        // Below the heads, a bundle goes with what it replaces; what replaced it keeps the edge.
        let mut below = config.clone();
        let report =
            deprecate_truncate(&mut below, &["registry.example/demo:demo.v2".into()]).unwrap();
        assert_eq!(report.truncated, vec!["demo.v1"]);
        assert_eq!(
            entries(&below, "fast"),
            vec![("demo.v5".to_string(), "demo.v2".to_string())]
        );
        crate::model::validate(&below).unwrap();
        // A bundle whose graph reaches the default channel's head cannot go.
        let mut reaching = with_bundles(
            &GRAPH
                .replace("defaultChannel: stable", "defaultChannel: fast")
                .replace(
                    "- name: demo.v5\n  replaces: demo.v2",
                    "- name: demo.v5\n  replaces: demo.v2\n- name: demo.v6\n  replaces: demo.v5",
                ),
            &[
                "demo.v1", "demo.v2", "demo.v3", "demo.v4", "demo.v5", "demo.v6",
            ],
        );
        // fast's head is now v6; make stable's v4 skip it so deprecating v4 reaches it.
        for channel in reaching.channels.iter_mut().filter(|c| c.name == "stable") {
            channel
                .entries
                .iter_mut()
                .find(|e| e.name == "demo.v4")
                .unwrap()
                .skips = vec!["demo.v6".into()];
        }
        let error = deprecate_truncate(&mut reaching, &["registry.example/demo:demo.v4".into()])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "error deprecating bundle registry.example/demo:demo.v4: Bundle deprecation causing default channel removal"
        );
        let report = deprecate_truncate(
            &mut config,
            &[
                "registry.example/demo:demo.v4".into(),
                "registry.example/demo:demo.v5".into(),
            ],
        )
        .unwrap();
        assert_eq!(report.removed_packages, vec!["demo"]);
        assert!(
            config.packages.is_empty() && config.bundles.is_empty() && config.channels.is_empty()
        );
        let error = deprecate_truncate(
            &mut with_bundles(GRAPH, &["demo.v1"]),
            &["registry.example/missing:1".into()],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "target bundlepaths for deprecation missing from registry: [registry.example/missing:1]"
        );
    }

    #[test]
    fn a_channel_headed_by_the_deprecated_bundle_goes() {
        let mut config = with_bundles(
            GRAPH,
            &["demo.v1", "demo.v2", "demo.v3", "demo.v4", "demo.v5"],
        );
        // v5 heads fast (not the default channel): fast goes; v1 and v2 stay in stable.
        deprecate_truncate(&mut config, &["registry.example/demo:demo.v5".into()]).unwrap();
        assert!(config.channels.iter().all(|c| c.name != "fast"));
        assert_eq!(entries(&config, "stable").len(), 4);
        crate::model::validate(&config).unwrap();
    }
}
