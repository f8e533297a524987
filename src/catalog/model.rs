//! Catalog validation as opm judges it (`opm validate`): the checks of its declcfg → model
//! conversion, which stop at the first problem, then the model's own checks (default channel,
//! non-empty channels, one head per channel, no replaces cycles, no stranded bundles, ...),
//! which are all reported. Messages are opm's.

use super::declcfg::{Channel, DeclarativeConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A problem that stops opm before validating (its conversion step).
    #[error("{0}")]
    Conversion(String),
    /// Every problem the model's checks found, each with where it is.
    #[error("invalid index:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

fn conversion(message: String) -> ValidationError {
    ValidationError::Conversion(message)
}

/// Kubernetes' `IsDNS1123Label`, as opm reports it.
fn dns1123_label_errors(name: &str) -> Vec<&'static str> {
    let mut errors = Vec::new();
    if name.len() > 63 {
        errors.push("must be no more than 63 characters");
    }
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().next().is_some_and(|b| b != b'-')
            && s.bytes().last().is_some_and(|b| b != b'-')
    };
    if !valid(name) {
        if name.contains('.') && name.split('.').all(valid) {
            errors.push("must not contain dots");
        } else {
            errors.push(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            );
        }
    }
    errors
}

/// opm's `Channel.Head` and `validateReplacesChain`.
pub fn replaces_chain_error(channel: &Channel) -> Option<String> {
    let mut incoming: HashMap<&str, usize> = HashMap::new();
    for entry in &channel.entries {
        if !entry.replaces.is_empty() {
            *incoming.entry(entry.replaces.as_str()).or_default() += 1;
        }
        for skip in &entry.skips {
            *incoming.entry(skip).or_default() += 1;
        }
    }
    let mut heads: Vec<&str> = channel
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !incoming.contains_key(n))
        .collect();
    if heads.is_empty() {
        return Some("no channel head found in graph".into());
    }
    if heads.len() > 1 {
        heads.sort_unstable();
        return Some(format!(
            "multiple channel heads found in graph: {}",
            heads.join(", ")
        ));
    }
    let by_name: HashMap<&str, _> = channel
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let all: BTreeSet<&str> = by_name.keys().copied().collect();
    let skipped: BTreeSet<&str> = channel
        .entries
        .iter()
        .flat_map(|e| e.skips.iter().map(String::as_str))
        .collect();
    let head = by_name[heads[0]];
    let mut chain_from: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut from_head: BTreeSet<&str> = BTreeSet::from([head.name.as_str()]);
    let mut current = Some(head);
    while let Some(entry) = current {
        chain_from
            .entry(entry.name.as_str())
            .or_insert_with(|| vec![entry.name.as_str()]);
        let replaces = entry.replaces.as_str();
        if skipped.contains(replaces) {
            break;
        }
        for chain in chain_from.values_mut() {
            chain.push(replaces);
        }
        if from_head.contains(replaces) {
            return Some(format!(
                "detected cycle in replaces chain of upgrade graph: {}",
                chain_from[replaces].join(" -> ")
            ));
        }
        from_head.insert(replaces);
        current = by_name.get(replaces).copied();
    }
    let stranded: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| !from_head.contains(n) && !skipped.contains(n))
        .collect();
    if !stranded.is_empty() {
        return Some(format!(
            "channel contains one or more stranded bundles: {}",
            stranded.join(", ")
        ));
    }
    None
}

/// Validates a catalog as `opm validate` does.
pub fn validate(config: &DeclarativeConfig) -> Result<(), ValidationError> {
    let mut default_channels: BTreeMap<&str, &str> = BTreeMap::new();
    for package in &config.packages {
        if package.name.is_empty() {
            return Err(conversion("config contains package with no name".into()));
        }
        if default_channels.contains_key(package.name.as_str()) {
            return Err(conversion(format!("duplicate package {:?}", package.name)));
        }
        let errors = dns1123_label_errors(&package.name);
        if !errors.is_empty() {
            return Err(conversion(format!(
                "invalid package name {:?}: [{}]",
                package.name,
                errors.join(" ")
            )));
        }
        default_channels.insert(&package.name, package.default_channel.as_str());
    }
    let mut channels: BTreeMap<&str, BTreeMap<&str, &Channel>> = BTreeMap::new();
    // opm tracks, per package, the entries of the last channel seen that have no bundle yet.
    let mut undefined_entries: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for channel in &config.channels {
        if !default_channels.contains_key(channel.package.as_str()) {
            return Err(conversion(format!(
                "unknown package {:?} for channel {:?}",
                channel.package, channel.name
            )));
        }
        if channel.name.is_empty() {
            return Err(conversion(format!(
                "package {:?} contains channel with no name",
                channel.package
            )));
        }
        let package_channels = channels.entry(&channel.package).or_default();
        if package_channels.insert(&channel.name, channel).is_some() {
            return Err(conversion(format!(
                "package {:?} has duplicate channel {:?}",
                channel.package, channel.name
            )));
        }
        let mut seen = BTreeSet::new();
        for entry in &channel.entries {
            if !seen.insert(entry.name.as_str()) {
                return Err(conversion(format!(
                    "invalid package {:?}, channel {:?}: duplicate entry {:?}",
                    channel.package, channel.name, entry.name
                )));
            }
        }
        undefined_entries.insert(&channel.package, seen);
    }
    let mut bundles: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for bundle in &config.bundles {
        if bundle.package.is_empty() {
            return Err(conversion(format!(
                "package name must be set for bundle {:?}",
                bundle.name
            )));
        }
        if !default_channels.contains_key(bundle.package.as_str()) {
            return Err(conversion(format!(
                "unknown package {:?} for bundle {:?}",
                bundle.package, bundle.name
            )));
        }
        if bundles
            .insert((&bundle.package, &bundle.name), ())
            .is_some()
        {
            return Err(conversion(format!(
                "package {:?} has duplicate bundle {:?}",
                bundle.package, bundle.name
            )));
        }
        let packages: Vec<_> = bundle.properties_of("olm.package").collect();
        if packages.len() != 1 {
            return Err(conversion(format!(
                "package {:?} bundle {:?} must have exactly 1 \"olm.package\" property, found {}",
                bundle.package,
                bundle.name,
                packages.len()
            )));
        }
        let named = packages[0]
            .get("packageName")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if named != bundle.package {
            return Err(conversion(format!(
                "package {:?} does not match \"olm.package\" property {:?}",
                bundle.package, named
            )));
        }
        let in_channels = channels.get(bundle.package.as_str()).is_some_and(|cs| {
            cs.values()
                .any(|c| c.entries.iter().any(|e| e.name == bundle.name))
        });
        if let Some(entries) = undefined_entries.get_mut(bundle.package.as_str()) {
            entries.remove(bundle.name.as_str());
        }
        if !in_channels {
            return Err(conversion(format!(
                "package {:?}, bundle {:?} not found in any channel entries",
                bundle.package, bundle.name
            )));
        }
    }
    for (package, entries) in &undefined_entries {
        if !entries.is_empty() {
            let names: Vec<&str> = entries.iter().copied().collect();
            return Err(conversion(format!(
                "no olm.bundle blobs found in package {package:?} for olm.channel entries [{}]",
                names.join(" ")
            )));
        }
    }

    let mut problems = Vec::new();
    for (package, default_channel) in &default_channels {
        let at = format!("invalid package {package:?}");
        let package_channels = channels.get(package);
        if default_channel.is_empty() {
            problems.push(format!("{at}: default channel must be set"));
        }
        match package_channels {
            None => problems.push(format!("{at}: package must contain at least one channel")),
            Some(cs) => {
                if !default_channel.is_empty() && !cs.contains_key(default_channel) {
                    // opm adds an empty channel by that name, which then fails validation.
                    problems.push(format!(
                        "{at}: invalid channel {default_channel:?}: channel must contain at least one bundle"
                    ));
                }
                for (name, channel) in cs {
                    let at = format!("{at}: invalid channel {name:?}");
                    if channel.entries.is_empty() {
                        problems.push(format!("{at}: channel must contain at least one bundle"));
                    } else if let Some(problem) = replaces_chain_error(channel) {
                        problems.push(format!("{at}: {problem}"));
                    }
                    for entry in &channel.entries {
                        for (i, skip) in entry.skips.iter().enumerate() {
                            if skip.is_empty() {
                                problems.push(format!(
                                    "{at}: invalid bundle {:?}: skip[{i}] is empty",
                                    entry.name
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    for bundle in &config.bundles {
        if bundle.image.is_empty() && bundle.properties_of("olm.bundle.object").next().is_none() {
            problems.push(format!(
                "invalid package {:?}: invalid bundle {:?}: bundle image must be set",
                bundle.package, bundle.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::Invalid(problems))
    }
}
