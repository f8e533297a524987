//! Adding bundles to a catalog, and removing packages, as IIB's opm does it (`opm registry add`
//! on the index database, then `opm migrate`), but directly on the file-based catalog.
//!
//! Graph update modes:
//! - `replaces` (default): channel heads are the highest version of the bundles that name the
//!   channel; each channel is the chain walked down `spec.replaces` from its head, with the
//!   bundles a chain member `skips` as entries too. The default channel is the new bundle's
//!   annotation when the bundle is the newest of its package, else the package's, else the
//!   only channel. A replaced bundle that does not exist, a cycle, or a new bundle left out of
//!   its channels fails the add with opm's message.
//! - `semver` / `semver-skippatch`: `spec.replaces` and `skips` are ignored; in each of its
//!   channels the new bundle replaces the next lower version and is replaced by the next
//!   higher one; with skip-patch it also skips the lower versions of its major.minor.
//!
//! The same CSV already in the package fails (`Bundle already added that provides package and
//! csv`) unless `overwrite_latest` is set and it heads every channel it is in; the same image
//! already in the package fails (`Bundle <image> already exists`). Callers that want present
//! bundles skipped (IIB drops them before calling opm) filter with [`present`].
//!
//! Written channels list their entries by name, as `opm migrate` writes them.

use super::declcfg::{
    Bundle, Channel, ChannelEntry, DeclarativeConfig, Package, SCHEMA_CHANNEL, SCHEMA_PACKAGE,
};
use super::render::RenderedBundle;
use super::version::{self, Version};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphMode {
    #[default]
    Replaces,
    Semver,
    SemverSkipPatch,
}

impl GraphMode {
    /// IIB's `graph_update_mode` value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "replaces" => Some(GraphMode::Replaces),
            "semver" => Some(GraphMode::Semver),
            "semver-skippatch" => Some(GraphMode::SemverSkipPatch),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    pub mode: GraphMode,
    pub overwrite_latest: bool,
}

/// What an add did, for logs and users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddReport {
    /// (package, bundle, channels it heads or joined).
    pub added: Vec<(String, String, Vec<String>)>,
    /// Bundles replaced with `overwrite_latest`.
    pub overwritten: Vec<String>,
    /// Existing bundles that no channel reaches any more and were dropped.
    pub pruned: Vec<String>,
}

impl AddReport {
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .added
            .iter()
            .map(|(package, bundle, channels)| {
                format!(
                    "added {bundle} to package {package}, channels {}",
                    channels.join(", ")
                )
            })
            .collect();
        lines.extend(self.overwritten.iter().map(|b| format!("overwrote {b}")));
        lines.extend(
            self.pruned
                .iter()
                .map(|b| format!("pruned {b}: no channel reaches it")),
        );
        lines
    }
}

/// opm's errors, aggregated as Kubernetes' `NewAggregate` prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", aggregate(.0))]
pub struct AddError(pub Vec<String>);

fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, AddError> {
    Err(AddError(vec![message.into()]))
}

/// The bundles of `bundles` already in `config` with the same name and image: what IIB leaves
/// out before adding.
pub fn present<'a>(
    config: &DeclarativeConfig,
    bundles: &'a [RenderedBundle],
) -> Vec<&'a RenderedBundle> {
    bundles
        .iter()
        .filter(|b| {
            config.bundles.iter().any(|c| {
                c.package == b.bundle.package
                    && c.name == b.bundle.name
                    && c.image == b.bundle.image
            })
        })
        .collect()
}

/// A bundle in the upgrade graph of one package.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    version: String,
    image: String,
    replaces: String,
    skips: Vec<String>,
    skip_range: String,
    /// Channels that count it for their head: a new bundle's annotations, or the channels an
    /// existing bundle is an entry of.
    channels: Vec<String>,
    /// The default channel it carries: a new bundle's annotation, or the package's.
    default_channel: String,
}

fn bundle_version(bundle: &Bundle) -> String {
    bundle.version().unwrap_or("").to_string()
}

/// The package's bundles that are entries of its channels, as graph nodes.
fn existing_nodes(config: &DeclarativeConfig, package: &str) -> Vec<Node> {
    let default_channel = config
        .packages
        .iter()
        .find(|p| p.name == package)
        .map(|p| p.default_channel.clone())
        .unwrap_or_default();
    let mut channels: Vec<&Channel> = config
        .channels
        .iter()
        .filter(|c| c.package == package)
        .collect();
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut nodes = Vec::new();
    for bundle in config.bundles.iter().filter(|b| b.package == package) {
        let mut entry: Option<&ChannelEntry> = None;
        let mut in_channels = Vec::new();
        for channel in &channels {
            if let Some(e) = channel.entries.iter().find(|e| e.name == bundle.name) {
                in_channels.push(channel.name.clone());
                // The fullest entry describes the bundle (a skipped-only entry has no edges).
                let richer = entry.is_none_or(|old| {
                    old.replaces.is_empty()
                        && old.skips.is_empty()
                        && (!e.replaces.is_empty() || !e.skips.is_empty())
                });
                if richer {
                    entry = Some(e);
                }
            }
        }
        let Some(entry) = entry else {
            continue; // Stranded: opm's queries never see it.
        };
        nodes.push(Node {
            name: bundle.name.clone(),
            version: bundle_version(bundle),
            image: bundle.image.clone(),
            replaces: entry.replaces.clone(),
            skips: entry.skips.clone(),
            skip_range: entry.skip_range.clone(),
            channels: in_channels,
            default_channel: default_channel.clone(),
        });
    }
    nodes
}

fn new_node(rendered: &RenderedBundle) -> Node {
    Node {
        name: rendered.bundle.name.clone(),
        version: rendered.version.clone(),
        image: rendered.bundle.image.clone(),
        replaces: rendered.replaces.clone(),
        skips: rendered.skips.clone(),
        skip_range: rendered.skip_range.clone(),
        channels: rendered.channels.clone(),
        default_channel: rendered.default_channel.clone(),
    }
}

/// Adds `bundles` to `config`.
pub fn add_bundles(
    config: &mut DeclarativeConfig,
    bundles: Vec<RenderedBundle>,
    options: &AddOptions,
) -> Result<AddReport, AddError> {
    let mut report = AddReport::default();
    if bundles.is_empty() {
        return Ok(report);
    }
    let overwrites = sanity_check(config, &bundles, options)?;
    if options.mode != GraphMode::Replaces && !overwrites.is_empty() {
        // opm removes nothing first in the semver modes, so its insert fails.
        let name = &overwrites.values().next().expect("non-empty")[0];
        return fail(format!(
            "error loading bundle {name} into db: UNIQUE constraint failed: operatorbundle.name"
        ));
    }
    for (package, name) in overwrites
        .iter()
        .flat_map(|(p, ns)| ns.iter().map(move |n| (p, n)))
    {
        remove_overwritten_head(config, package, name)?;
        report.overwritten.push(name.clone());
    }

    let mut by_package: BTreeMap<String, Vec<RenderedBundle>> = BTreeMap::new();
    for bundle in bundles {
        by_package
            .entry(bundle.bundle.package.clone())
            .or_default()
            .push(bundle);
    }
    let mut errors = Vec::new();
    for (package, new) in by_package {
        let result = match options.mode {
            GraphMode::Replaces => add_replaces(config, &package, new, &mut report),
            GraphMode::Semver => add_semver(config, &package, new, false, &mut report),
            GraphMode::SemverSkipPatch => add_semver(config, &package, new, true, &mut report),
        };
        if let Err(AddError(e)) = result {
            errors.extend(e);
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(AddError(errors))
    }
}

/// opm's `globalSanityCheck`: duplicates, overwrites and edges into other packages. Returns
/// the bundles to overwrite, by package.
fn sanity_check(
    config: &DeclarativeConfig,
    bundles: &[RenderedBundle],
    options: &AddOptions,
) -> Result<BTreeMap<String, Vec<String>>, AddError> {
    let mut errors = Vec::new();
    let mut overwrites: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let images: BTreeSet<&str> = bundles.iter().map(|b| b.bundle.image.as_str()).collect();
    for rendered in bundles {
        let bundle = &rendered.bundle;
        if bundle.package.is_empty() {
            errors.push(format!(
                "bundle {} names no package: its metadata/annotations.yaml lacks operators.operatorframework.io.bundle.package.v1",
                bundle.name
            ));
            continue;
        }
        let package_images: Vec<&str> = config
            .bundles
            .iter()
            .filter(|b| b.package == bundle.package && !b.image.is_empty())
            .map(|b| b.image.as_str())
            .collect();
        for image in &package_images {
            if images.contains(image) {
                errors.push(format!("Bundle {} already exists", bundle.image));
            }
        }
        let mut channels: Vec<&Channel> = config
            .channels
            .iter()
            .filter(|c| c.package == bundle.package)
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut valid_overwrite = false;
        for channel in channels {
            if !channel.entries.iter().any(|e| e.name == bundle.name) {
                continue;
            }
            if !options.overwrite_latest {
                errors.push("Bundle already added that provides package and csv".into());
                break;
            }
            let replaced_here = channel
                .entries
                .iter()
                .any(|e| e.replaces == bundle.name || e.skips.contains(&bundle.name));
            if replaced_here {
                errors.push(
                    "Cannot overwrite a bundle that is not at the head of a channel using --overwrite-latest".into(),
                );
                valid_overwrite = false;
                break;
            }
            valid_overwrite = true;
        }
        if valid_overwrite {
            if overwrites.contains_key(&bundle.package) {
                errors.push(
                    "Cannot overwrite more than one bundle at a time for a given package using --overwrite-latest"
                        .into(),
                );
                break;
            }
            overwrites.insert(bundle.package.clone(), vec![bundle.name.clone()]);
        }
    }
    // ValidateEdgeBundlePackage: a name (the bundle, what it replaces or skips) may belong to
    // one package only.
    let mut seen: HashMap<&str, &str> = HashMap::new();
    'edges: for rendered in bundles {
        let package = rendered.bundle.package.as_str();
        let names = rendered
            .skips
            .iter()
            .chain(std::iter::once(&rendered.replaces))
            .chain(std::iter::once(&rendered.bundle.name))
            .filter(|n| !n.is_empty());
        for name in names {
            if let Some(other) = seen.insert(name, package) {
                if other != package {
                    let mut both = [other, package];
                    both.sort_unstable();
                    errors.push(format!(
                        "bundle {name} must belong to exactly one package, found on: [{} {}]",
                        both[0], both[1]
                    ));
                    break 'edges;
                }
            }
        }
    }
    for channel in &config.channels {
        for entry in &channel.entries {
            if let Some(package) = seen.get(entry.name.as_str()) {
                if *package != channel.package {
                    errors.push(format!(
                        "bundle {} belongs to package {} on index, cannot be added as an edge for package {}",
                        entry.name, channel.package, package
                    ));
                    return Err(AddError(errors));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(overwrites)
    } else {
        Err(AddError(errors))
    }
}

/// opm's `RemoveOverwrittenChannelHead`: the bundle leaves every channel it heads (the bundle it
/// replaces heads them instead; a channel left empty goes) and the catalog.
fn remove_overwritten_head(
    config: &mut DeclarativeConfig,
    package: &str,
    name: &str,
) -> Result<(), AddError> {
    for channel in config.channels.iter_mut().filter(|c| c.package == package) {
        if let Some(at) = channel.entries.iter().position(|e| e.name == name) {
            channel.entries.remove(at);
        }
    }
    config
        .channels
        .retain(|c| c.package != package || !c.entries.is_empty());
    config
        .bundles
        .retain(|b| !(b.package == package && b.name == name));
    Ok(())
}

fn parse_version(node: &Node) -> Result<Version, String> {
    let raw = if node.version.is_empty() {
        "0.0.0-z"
    } else {
        &node.version
    };
    version::parse(raw)
        .map_err(|e| format!("error parsing bundle {} version {raw}: {e}", node.name))
}

/// opm's `SemverPackageManifest`: the head of each channel and the default channel.
fn heads_and_default(nodes: &[Node]) -> Result<(BTreeMap<String, String>, String), AddError> {
    struct Seen {
        name: String,
        version: Version,
        count: usize,
    }
    let mut heads: BTreeMap<String, Seen> = BTreeMap::new();
    let mut default_channel = String::new();
    let mut max = Seen {
        name: String::new(),
        version: Version::new(0, 0, 0),
        count: 0,
    };
    for node in nodes {
        let version = parse_version(node).map_err(|e| AddError(vec![e]))?;
        let mut current = Seen {
            name: node.name.clone(),
            version,
            count: 1,
        };
        for channel in &node.channels {
            match heads.get(channel) {
                None => {
                    heads.insert(
                        channel.clone(),
                        Seen {
                            name: current.name.clone(),
                            version: current.version.clone(),
                            count: current.count,
                        },
                    );
                }
                Some(head) => {
                    let order = version::build_id_compare(&current.version, &head.version)
                        .map_err(|e| AddError(vec![e]))?;
                    if order == Ordering::Less {
                        continue;
                    }
                    if order == Ordering::Equal {
                        current.count += head.count;
                    }
                    heads.insert(
                        channel.clone(),
                        Seen {
                            name: current.name.clone(),
                            version: current.version.clone(),
                            count: current.count,
                        },
                    );
                }
            }
        }
        let order = version::build_id_compare(&current.version, &max.version)
            .map_err(|e| AddError(vec![e]))?;
        if order == Ordering::Less {
            continue;
        }
        if order == Ordering::Equal {
            current.count += max.count;
        }
        max = current;
        if !node.default_channel.is_empty() {
            default_channel = node.default_channel.clone();
        }
    }
    if max.count > 1 {
        return fail(format!(
            "more than one bundle with maximum version {}",
            max.version
        ));
    }
    let mut found = heads.len() == 1 && default_channel.is_empty();
    let mut chosen = default_channel.clone();
    for (channel, head) in &heads {
        if head.count > 1 {
            return fail(format!(
                "more than one potential channel head for {channel}"
            ));
        }
        if heads.len() == 1 {
            chosen = channel.clone();
        }
        found = found || *channel == default_channel;
    }
    if !found {
        let described: Vec<String> = heads
            .iter()
            .map(|(c, h)| {
                format!(
                    "{c}:{{name:{} version:{} count:{}}}",
                    h.name, h.version, h.count
                )
            })
            .collect();
        return fail(format!(
            "unable to determine default channel among channel heads: map[{}]",
            described.join(" ")
        ));
    }
    Ok((
        heads.into_iter().map(|(c, h)| (c, h.name)).collect(),
        chosen,
    ))
}

/// One channel walked from its head down `replaces` (opm's `AddPackageChannels`): its entries,
/// by name.
fn walk_channel(head: &str, nodes: &BTreeMap<&str, &Node>) -> Result<Vec<ChannelEntry>, String> {
    let mut entries: BTreeMap<String, ChannelEntry> = BTreeMap::new();
    let mut chain: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([head]);
    let mut current = head;
    loop {
        let node = nodes
            .get(current)
            .ok_or_else(|| format!("no bundle found for bundlename {current}"))?;
        chain.insert(current.to_string());
        entries.insert(
            current.to_string(),
            ChannelEntry {
                name: current.to_string(),
                replaces: String::new(),
                skips: node.skips.clone(),
                skip_range: node.skip_range.clone(),
            },
        );
        // Real bundles it skips are entries of the channel too, without edges of their own
        // (unless the chain reaches them).
        for skip in &node.skips {
            if let Some(skipped) = nodes.get(skip.as_str()) {
                if !chain.contains(skip) {
                    entries.entry(skip.clone()).or_insert_with(|| ChannelEntry {
                        name: skip.clone(),
                        replaces: String::new(),
                        skips: Vec::new(),
                        skip_range: skipped.skip_range.clone(),
                    });
                }
            }
        }
        if node.replaces.is_empty() {
            break;
        }
        let replaces = node.replaces.as_str();
        if !seen.insert(replaces) {
            return Err(format!("Cycle detected, {current} replaces {replaces}"));
        }
        entries.get_mut(current).expect("just inserted").replaces = replaces.to_string();
        if !nodes.contains_key(replaces) {
            return Err(format!(
                "Invalid bundle {head}, replaces nonexistent bundle {replaces}"
            ));
        }
        current = replaces;
    }
    Ok(entries.into_values().collect())
}

/// opm's `checkForBundles`: a new bundle must be reachable from the head of each of its
/// channels (along replaces and skips).
fn check_reachable(
    node: &Node,
    channels: &[Channel],
    heads: &BTreeMap<String, String>,
    package: &str,
    nodes: &BTreeMap<&str, &Node>,
) -> Result<(), String> {
    for channel_name in &node.channels {
        let channel = channels.iter().find(|c| &c.name == channel_name);
        let head = heads.get(channel_name).cloned().unwrap_or_default();
        let reached = channel.is_some_and(|c| {
            let edges: HashMap<&str, &ChannelEntry> =
                c.entries.iter().map(|e| (e.name.as_str(), e)).collect();
            let mut queue = VecDeque::from([head.as_str()]);
            let mut seen = BTreeSet::new();
            while let Some(at) = queue.pop_front() {
                if !seen.insert(at) {
                    continue;
                }
                if at == node.name {
                    return true;
                }
                if let Some(entry) = edges.get(at) {
                    queue.extend(
                        std::iter::once(entry.replaces.as_str())
                            .chain(entry.skips.iter().map(String::as_str))
                            .filter(|n| nodes.contains_key(n)),
                    );
                }
            }
            false
        });
        if !reached {
            let head_skips: Vec<&str> = nodes
                .get(head.as_str())
                .map(|h| {
                    std::iter::once(h.replaces.as_str())
                        .chain(h.skips.iter().map(String::as_str))
                        .filter(|n| !n.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            return Err(format!(
                "add prunes bundle {name} ({image}) from package {package}, channel {channel_name}: this may be due to incorrect channel head ({head}, skips/replaces [{skips}]). Be aware that the head of the channel {channel_name} where you are trying to add the {name} is {head}. Upgrade graphs follows the Semantic Versioning 2.0.0 (https://semver.org/) which means that is not possible add new versions lower then the head of the channel",
                name = node.name,
                image = node.image,
                skips = head_skips.join(" "),
            ));
        }
    }
    Ok(())
}

fn add_replaces(
    config: &mut DeclarativeConfig,
    package: &str,
    new: Vec<RenderedBundle>,
    report: &mut AddReport,
) -> Result<(), AddError> {
    let mut nodes = existing_nodes(config, package);
    nodes.extend(new.iter().map(new_node));
    let (heads, default_channel) = heads_and_default(&nodes)?;
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut channels = Vec::new();
    let mut errors = Vec::new();
    for (channel, head) in &heads {
        match walk_channel(head, &by_name) {
            Ok(entries) => channels.push(Channel {
                schema: SCHEMA_CHANNEL.into(),
                name: channel.clone(),
                package: package.to_string(),
                entries,
                properties: Vec::new(),
            }),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(AddError(errors));
    }
    for rendered in &new {
        check_reachable(&new_node(rendered), &channels, &heads, package, &by_name)
            .map_err(|e| AddError(vec![e]))?;
    }
    apply(
        config,
        package,
        channels,
        default_channel,
        &heads,
        new,
        report,
    );
    Ok(())
}

/// Replaces the package's channels, keeps the bundles some channel lists (plus the new ones),
/// and sets its default channel and icon.
fn apply(
    config: &mut DeclarativeConfig,
    package: &str,
    channels: Vec<Channel>,
    default_channel: String,
    heads: &BTreeMap<String, String>,
    new: Vec<RenderedBundle>,
    report: &mut AddReport,
) {
    let listed: BTreeSet<String> = channels
        .iter()
        .flat_map(|c| c.entries.iter().map(|e| e.name.clone()))
        .collect();
    let default_head = heads.get(&default_channel).cloned().unwrap_or_default();
    let icon = new
        .iter()
        .find(|b| b.bundle.name == default_head)
        .and_then(|b| b.icon.clone());
    for rendered in &new {
        let joined: Vec<String> = channels
            .iter()
            .filter(|c| c.entries.iter().any(|e| e.name == rendered.bundle.name))
            .map(|c| c.name.clone())
            .collect();
        report
            .added
            .push((package.to_string(), rendered.bundle.name.clone(), joined));
    }
    config.channels.retain(|c| c.package != package);
    config.channels.extend(channels);
    let before = config.bundles.len();
    let mut pruned = Vec::new();
    config.bundles.retain(|b| {
        let keep = b.package != package || listed.contains(&b.name);
        if !keep {
            pruned.push(b.name.clone());
        }
        keep
    });
    debug_assert!(config.bundles.len() + pruned.len() == before);
    report.pruned.extend(pruned);
    config.bundles.extend(
        new.into_iter()
            .map(|b| b.bundle)
            .filter(|b| listed.contains(&b.name)),
    );
    match config.packages.iter_mut().find(|p| p.name == package) {
        Some(existing) => {
            existing.default_channel = default_channel;
            if icon.is_some() {
                existing.icon = icon;
            }
        }
        None => config.packages.push(Package {
            schema: SCHEMA_PACKAGE.into(),
            name: package.to_string(),
            default_channel,
            icon,
            description: String::new(),
            properties: Vec::new(),
        }),
    }
}

/// The upgrade graph of one channel, as opm's semver loader sees it: real bundles and their
/// edges (replaces and skips), and the head.
struct SemverChannel {
    head: String,
    nodes: BTreeMap<String, BTreeSet<String>>,
}

fn add_semver(
    config: &mut DeclarativeConfig,
    package: &str,
    new: Vec<RenderedBundle>,
    skip_patch: bool,
    report: &mut AddReport,
) -> Result<(), AddError> {
    let existing = existing_nodes(config, package);
    let mut versions: BTreeMap<String, String> = existing
        .iter()
        .map(|n| (n.name.clone(), n.version.clone()))
        .collect();
    let mut skip_ranges: BTreeMap<String, String> = existing
        .iter()
        .map(|n| (n.name.clone(), n.skip_range.clone()))
        .collect();
    let mut graph: BTreeMap<String, SemverChannel> = BTreeMap::new();
    for channel in config.channels.iter().filter(|c| c.package == package) {
        let nodes: BTreeMap<String, BTreeSet<String>> = channel
            .entries
            .iter()
            .filter(|e| versions.contains_key(&e.name))
            .map(|e| {
                let edges = std::iter::once(&e.replaces)
                    .chain(e.skips.iter())
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect();
                (e.name.clone(), edges)
            })
            .collect();
        let targets: BTreeSet<&String> = nodes.values().flatten().collect();
        let heads: Vec<&String> = nodes.keys().filter(|n| !targets.contains(n)).collect();
        let head = match heads.as_slice() {
            [one] => (*one).clone(),
            [] => return fail(format!("no channel head found for {}", channel.name)),
            many => {
                return fail(format!(
                    "multiple candidate channel heads found for {}: {:?}",
                    channel.name, many
                ))
            }
        };
        graph.insert(channel.name.clone(), SemverChannel { head, nodes });
    }
    let mut default_channel = config
        .packages
        .iter()
        .find(|p| p.name == package)
        .map(|p| p.default_channel.clone())
        .unwrap_or_default();

    for rendered in &new {
        let name = rendered.bundle.name.clone();
        if rendered.version.is_empty() {
            return fail(format!("Bundle version {} is not valid", rendered.version));
        }
        let new_version = version::parse(&rendered.version).map_err(|_| {
            AddError(vec![format!(
                "Bundle version {} is not valid",
                rendered.version
            )])
        })?;
        if !rendered.default_channel.is_empty() {
            default_channel = rendered.default_channel.clone();
        }
        if default_channel.is_empty() {
            let mut sorted = rendered.channels.clone();
            sorted.sort();
            default_channel = sorted.first().cloned().unwrap_or_default();
        }
        if default_channel.is_empty() {
            return fail("Default channel is missing and can't be inferred");
        }
        for channel_name in &rendered.channels {
            let channel = graph
                .entry(channel_name.clone())
                .or_insert_with(|| SemverChannel {
                    head: name.clone(),
                    nodes: BTreeMap::new(),
                });
            let mut lowest_ahead: Option<(String, Version)> = None;
            let mut greatest_behind: Option<(String, Version)> = None;
            let mut skipped_patches = Vec::new();
            for existing in channel.nodes.keys() {
                let text = versions.get(existing).cloned().unwrap_or_default();
                let existing_version = version::parse(&text).map_err(|_| {
                    AddError(vec![format!(
                        "Unable to parse existing bundle version stored in index {existing} {text} {}",
                        config
                            .bundles
                            .iter()
                            .find(|b| &b.name == existing && b.package == package)
                            .map(|b| b.image.as_str())
                            .unwrap_or("")
                    )])
                })?;
                match version::compare(&existing_version, &new_version) {
                    Ordering::Equal => {
                        return fail(format!(
                            "Bundle version {new_version} already added to index"
                        ))
                    }
                    Ordering::Greater => {
                        if lowest_ahead.as_ref().is_none_or(|(_, v)| {
                            version::compare(&existing_version, v) == Ordering::Less
                        }) {
                            lowest_ahead = Some((existing.clone(), existing_version.clone()));
                        }
                    }
                    Ordering::Less => {
                        if greatest_behind.as_ref().is_none_or(|(_, v)| {
                            version::compare(&existing_version, v) == Ordering::Greater
                        }) {
                            greatest_behind = Some((existing.clone(), existing_version.clone()));
                        }
                        if skip_patch
                            && existing_version.major == new_version.major
                            && existing_version.minor == new_version.minor
                        {
                            skipped_patches.push(existing.clone());
                        }
                    }
                }
            }
            let mut edges: BTreeSet<String> = skipped_patches.iter().cloned().collect();
            if let Some((behind, _)) = &greatest_behind {
                edges.insert(behind.clone());
            }
            match &lowest_ahead {
                Some((ahead, _)) => {
                    channel
                        .nodes
                        .insert(ahead.clone(), BTreeSet::from([name.clone()]));
                }
                None => channel.head = name.clone(),
            }
            for skipped in &skipped_patches {
                channel.nodes.remove(skipped);
            }
            channel.nodes.insert(name.clone(), edges);
        }
        versions.insert(name.clone(), rendered.version.clone());
        skip_ranges.insert(name.clone(), rendered.skip_range.clone());
    }

    // Channel entries: walk each channel from its head; an edge to a node still in the channel
    // is the replaces edge, the others are skips.
    let mut channels = Vec::new();
    let mut heads = BTreeMap::new();
    for (channel_name, channel) in &graph {
        heads.insert(channel_name.clone(), channel.head.clone());
        let mut entries: BTreeMap<String, ChannelEntry> = BTreeMap::new();
        let mut current = Some(channel.head.clone());
        let mut walked = 0usize;
        while let Some(at) = current.take() {
            if entries.contains_key(&at) {
                return fail(format!("Cycle detected in channel {channel_name} at {at}"));
            }
            walked += 1;
            let edges = channel.nodes.get(&at).cloned().unwrap_or_default();
            let mut entry = ChannelEntry {
                name: at.clone(),
                replaces: String::new(),
                skips: Vec::new(),
                skip_range: skip_ranges.get(&at).cloned().unwrap_or_default(),
            };
            for edge in edges {
                if channel.nodes.contains_key(&edge) {
                    entry.replaces = edge.clone();
                    current = Some(edge);
                } else {
                    entry.skips.push(edge);
                }
            }
            entries.insert(at, entry);
        }
        if walked != channel.nodes.len() {
            return fail(format!(
                "Invalid graph: some (non-bottom) nodes defined in the graph were not mentioned as replacements of any node ({} != {})",
                channel.nodes.len() - 1,
                walked - 1
            ));
        }
        // Real bundles only skipped are entries too.
        let skipped: Vec<ChannelEntry> = entries
            .values()
            .flat_map(|e| e.skips.iter())
            .filter(|s| versions.contains_key(*s) && !entries.contains_key(*s))
            .map(|s| ChannelEntry {
                name: s.clone(),
                replaces: String::new(),
                skips: Vec::new(),
                skip_range: skip_ranges.get(s).cloned().unwrap_or_default(),
            })
            .collect();
        for entry in skipped {
            entries.insert(entry.name.clone(), entry);
        }
        channels.push(Channel {
            schema: SCHEMA_CHANNEL.into(),
            name: channel_name.clone(),
            package: package.to_string(),
            entries: entries.into_values().collect(),
            properties: Vec::new(),
        });
    }
    if !heads.contains_key(&default_channel) {
        return fail(format!(
            "the default channel ({default_channel}) does not exist: FOREIGN KEY constraint failed"
        ));
    }
    apply(
        config,
        package,
        channels,
        default_channel,
        &heads,
        new,
        report,
    );
    Ok(())
}

/// opm's `registry rm`: removes whole packages (their package, channels, bundles,
/// deprecations and other blobs). A package not in the catalog is an error unless
/// `permissive`.
pub fn remove_packages(
    config: &mut DeclarativeConfig,
    packages: &[String],
) -> Result<(), AddError> {
    remove_packages_with(config, packages, false)
}

/// `remove_packages`, skipping packages that are not there when `permissive` (IIB's
/// create-empty-index).
pub fn remove_packages_with(
    config: &mut DeclarativeConfig,
    packages: &[String],
    permissive: bool,
) -> Result<(), AddError> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for name in packages
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.is_empty())
    {
        if !seen.insert(name) {
            continue;
        }
        let known = config.packages.iter().any(|p| p.name == name)
            || config.channels.iter().any(|c| c.package == name);
        if !known {
            errors.push(format!(
                "error removing operator package {name}: no package found for packagename {name}"
            ));
            continue;
        }
        config.packages.retain(|p| p.name != name);
        config.channels.retain(|c| c.package != name);
        config.bundles.retain(|b| b.package != name);
        config.deprecations.retain(|d| d.package != name);
        config
            .others
            .retain(|o| o.get("package").and_then(Value::as_str) != Some(name));
    }
    if errors.is_empty() || permissive {
        Ok(())
    } else {
        Err(AddError(vec![format!(
            "error deleting packages from database: {}",
            aggregate(&errors)
        )]))
    }
}
