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

/// How an add places new bundles in the upgrade graph (IIB's `graph_update_mode`; see the
/// module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphMode {
    /// `replaces`: the graph follows the bundles' `spec.replaces` and `skips`.
    #[default]
    Replaces,
    /// `semver`: each new bundle replaces the next lower version in its channels.
    Semver,
    /// `semver-skippatch`: as `semver`, and it also skips the lower patch versions of its
    /// minor version.
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

/// How [`add_bundles`] adds.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// How new bundles join the upgrade graph.
    pub mode: GraphMode,
    /// Replace a bundle of the same package and CSV name that heads every channel it is in
    /// (opm's `--overwrite-latest`), instead of refusing it.
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
    /// One human-readable line per bundle added, overwritten or pruned.
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

/// The package names `opm registry rm` takes from its arguments: each may list several,
/// comma-separated.
pub fn package_names(packages: &[String]) -> impl Iterator<Item = &str> {
    packages
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.is_empty())
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
    for name in package_names(packages) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declcfg::{Property, SCHEMA_BUNDLE};
    use crate::write::{to_string, Format};
    use serde_json::json;

    /// A rendered bundle of package `demo` made by hand.
    fn bundle(
        version: &str,
        replaces: &str,
        skips: &[&str],
        channels: &[&str],
        default: &str,
    ) -> RenderedBundle {
        let name = format!("demo.v{version}");
        RenderedBundle {
            bundle: Bundle {
                schema: SCHEMA_BUNDLE.into(),
                name: name.clone(),
                package: "demo".into(),
                image: format!("registry.example/demo-bundle:{version}"),
                properties: vec![Property {
                    kind: "olm.package".into(),
                    value: json!({"packageName": "demo", "version": version}),
                }],
                related_images: Vec::new(),
            },
            channels: channels.iter().map(|c| c.to_string()).collect(),
            default_channel: default.into(),
            version: version.into(),
            replaces: if replaces.is_empty() {
                String::new()
            } else {
                format!("demo.v{replaces}")
            },
            skips: skips.iter().map(|s| format!("demo.v{s}")).collect(),
            skip_range: String::new(),
            substitutes_for: String::new(),
            icon: None,
            removed_apis: Vec::new(),
            csv_olm_properties: None,
        }
    }

    fn add(
        config: &mut DeclarativeConfig,
        bundles: Vec<RenderedBundle>,
        mode: GraphMode,
    ) -> Result<AddReport, AddError> {
        add_bundles(
            config,
            bundles,
            &AddOptions {
                mode,
                overwrite_latest: false,
            },
        )
    }

    fn entries(config: &DeclarativeConfig, channel: &str) -> Vec<(String, String, Vec<String>)> {
        config
            .channels
            .iter()
            .find(|c| c.name == channel)
            .unwrap_or_else(|| panic!("no channel {channel}"))
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.replaces.clone(), e.skips.clone()))
            .collect()
    }

    fn e(name: &str, replaces: &str, skips: &[&str]) -> (String, String, Vec<String>) {
        (
            format!("demo.v{name}"),
            if replaces.is_empty() {
                String::new()
            } else {
                format!("demo.v{replaces}")
            },
            skips.iter().map(|s| format!("demo.v{s}")).collect(),
        )
    }

    /// A deterministic random source for the randomized tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }
    }

    #[test]
    fn replaces_mode_walks_the_chain_from_each_head_and_lists_skipped_bundles() {
        let mut config = DeclarativeConfig::default();
        add(
            &mut config,
            vec![
                bundle("1.0.0", "", &[], &["stable"], ""),
                bundle("1.1.0", "1.0.0", &[], &["stable", "fast"], "stable"),
                bundle("1.2.0", "1.1.0", &["1.0.0"], &["fast"], "fast"),
            ],
            GraphMode::Replaces,
        )
        .unwrap();
        assert_eq!(
            entries(&config, "fast"),
            vec![
                e("1.0.0", "", &[]),
                e("1.1.0", "1.0.0", &[]),
                e("1.2.0", "1.1.0", &["1.0.0"])
            ]
        );
        assert_eq!(
            entries(&config, "stable"),
            vec![e("1.0.0", "", &[]), e("1.1.0", "1.0.0", &[])]
        );
        // The newest bundle names the default channel.
        assert_eq!(config.packages[0].default_channel, "fast");
        crate::model::validate(&config).unwrap();
    }

    #[test]
    fn opms_refusals_are_kept_with_its_words() {
        let base = || {
            let mut config = DeclarativeConfig::default();
            add(
                &mut config,
                vec![
                    bundle("1.0.0", "", &[], &["stable"], "stable"),
                    bundle("1.1.0", "1.0.0", &[], &["stable"], "stable"),
                ],
                GraphMode::Replaces,
            )
            .unwrap();
            config
        };
        let error = |bundles: Vec<RenderedBundle>, overwrite: bool| {
            let mut config = base();
            let before = config.clone();
            let result = add_bundles(
                &mut config,
                bundles,
                &AddOptions {
                    mode: GraphMode::Replaces,
                    overwrite_latest: overwrite,
                },
            );
            // A refused add changes nothing.
            assert_eq!(config, before);
            result.unwrap_err().to_string()
        };
        let mut same_name = bundle("1.1.0", "1.0.0", &[], &["stable"], "");
        same_name.bundle.image = "registry.example/other:1".into();
        assert_eq!(
            error(vec![same_name.clone()], false),
            "Bundle already added that provides package and csv"
        );
        assert_eq!(
            error(vec![bundle("1.2.0", "1.1.0", &[], &["stable"], ""), {
                let mut b = bundle("1.3.0", "1.2.0", &[], &["stable"], "");
                b.bundle.image = "registry.example/demo-bundle:1.0.0".into();
                b
            }], false),
            // opm names the image being added, once per clash, not the one already there.
            "[Bundle registry.example/demo-bundle:1.2.0 already exists, Bundle registry.example/demo-bundle:1.0.0 already exists]"
        );
        let mut not_head = bundle("1.0.0", "", &[], &["stable"], "");
        not_head.bundle.image = "registry.example/other:1".into();
        assert_eq!(
            error(vec![not_head], true),
            "Cannot overwrite a bundle that is not at the head of a channel using --overwrite-latest"
        );
        assert_eq!(
            error(vec![bundle("2.0.0", "1.5.0", &[], &["stable"], "")], false),
            "Invalid bundle demo.v2.0.0, replaces nonexistent bundle demo.v1.5.0"
        );
        let pruned = error(vec![bundle("0.5.0", "", &[], &["stable"], "")], false);
        assert!(pruned.starts_with("add prunes bundle demo.v0.5.0 (registry.example/demo-bundle:0.5.0) from package demo, channel stable: this may be due to incorrect channel head (demo.v1.1.0, skips/replaces [demo.v1.0.0])"), "{pruned}");
        let mut twin = bundle("1.1.0", "1.0.0", &[], &["beta"], "");
        twin.bundle.name = "demo.v1.1.0-twin".into();
        twin.bundle.image = "registry.example/twin:1".into();
        assert_eq!(
            error(vec![twin], false),
            "more than one bundle with maximum version 1.1.0"
        );
        let undecided = error(
            vec![bundle("1.2.0", "1.1.0", &[], &["beta"], "gamma")],
            false,
        );
        assert!(undecided.starts_with("unable to determine default channel among channel heads: map[beta:{name:demo.v1.2.0"), "{undecided}");
    }

    #[test]
    fn overwrite_latest_replaces_the_head_in_place() {
        let mut config = DeclarativeConfig::default();
        add(
            &mut config,
            vec![
                bundle("1.0.0", "", &[], &["stable"], "stable"),
                bundle("1.1.0", "1.0.0", &[], &["stable"], "stable"),
            ],
            GraphMode::Replaces,
        )
        .unwrap();
        let mut rebuilt = bundle("1.1.0", "1.0.0", &[], &["stable"], "stable");
        rebuilt.bundle.image = "registry.example/demo-bundle:1.1.0-rebuilt".into();
        let report = add_bundles(
            &mut config,
            vec![rebuilt],
            &AddOptions {
                mode: GraphMode::Replaces,
                overwrite_latest: true,
            },
        )
        .unwrap();
        assert_eq!(report.overwritten, vec!["demo.v1.1.0".to_string()]);
        let head = config
            .bundles
            .iter()
            .find(|b| b.name == "demo.v1.1.0")
            .unwrap();
        assert_eq!(head.image, "registry.example/demo-bundle:1.1.0-rebuilt");
        assert_eq!(config.bundles.len(), 2);
        assert_eq!(
            entries(&config, "stable"),
            vec![e("1.0.0", "", &[]), e("1.1.0", "1.0.0", &[])]
        );
    }

    #[test]
    fn semver_modes_order_by_version_and_skip_patches() {
        let mut config = DeclarativeConfig::default();
        for version in ["1.0.0", "1.0.1", "1.1.0", "2.0.0"] {
            add(
                &mut config,
                vec![bundle(version, "", &[], &["stable"], "")],
                GraphMode::Semver,
            )
            .unwrap();
        }
        assert_eq!(
            entries(&config, "stable"),
            vec![
                e("1.0.0", "", &[]),
                e("1.0.1", "1.0.0", &[]),
                e("1.1.0", "1.0.1", &[]),
                e("2.0.0", "1.1.0", &[])
            ]
        );
        assert_eq!(config.packages[0].default_channel, "stable");
        let refused = add(
            &mut config.clone(),
            vec![{
                let mut b = bundle("1.1.0", "", &[], &["stable"], "");
                b.bundle.name = "demo.again".into();
                b.bundle.image = "registry.example/again:1".into();
                b
            }],
            GraphMode::Semver,
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "Bundle version 1.1.0 already added to index"
        );

        let mut config = DeclarativeConfig::default();
        for version in ["1.0.0", "1.0.1", "1.0.2"] {
            add(
                &mut config,
                vec![bundle(version, "", &[], &["stable"], "")],
                GraphMode::SemverSkipPatch,
            )
            .unwrap();
        }
        // Each patch skips the lower patches of its minor (the skipped stay as entries).
        assert_eq!(
            entries(&config, "stable"),
            vec![
                e("1.0.0", "", &[]),
                e("1.0.1", "", &[]),
                e("1.0.2", "", &["1.0.0", "1.0.1"])
            ]
        );
    }

    #[test]
    fn random_upgrade_graphs_give_one_catalog_whatever_the_order() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..200 {
            let count = 1 + rng.below(12);
            let channels = ["alpha", "beta", "stable"];
            let mut bundles = Vec::new();
            for i in 0..count {
                let version = format!("1.{i}.0");
                let replaces = if i > 0 {
                    format!("1.{}.0", i - 1)
                } else {
                    String::new()
                };
                // Skips cover the oldest bundles (skipping a bundle whose predecessors stay in
                // the chain strands them, which opm's validation rejects).
                let skips: Vec<String> = if i > 1 && rng.below(3) == 0 {
                    (0..=rng.below(i - 1)).map(|j| format!("1.{j}.0")).collect()
                } else {
                    Vec::new()
                };
                let skip_refs: Vec<&str> = skips.iter().map(String::as_str).collect();
                // Every bundle is in stable (the default channel its annotations name), and in
                // the others at random; the newest heads every channel.
                let mut in_channels: Vec<&str> = channels[..2]
                    .iter()
                    .copied()
                    .filter(|_| rng.below(2) == 0)
                    .collect();
                in_channels.push("stable");
                if i + 1 == count {
                    in_channels = channels.to_vec();
                }
                bundles.push(bundle(
                    &version,
                    &replaces,
                    &skip_refs,
                    &in_channels,
                    "stable",
                ));
            }
            let mut first: Option<String> = None;
            for _ in 0..5 {
                let mut order = bundles.clone();
                rng.shuffle(&mut order);
                let mut config = DeclarativeConfig::default();
                add(&mut config, order, GraphMode::Replaces)
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
                crate::model::validate(&config).unwrap_or_else(|e| {
                    panic!("case {case}: {e}\n{}", to_string(&config, Format::Yaml))
                });
                let written = to_string(&config, Format::Json);
                match &first {
                    None => first = Some(written),
                    Some(first) => assert_eq!(&written, first, "case {case}"),
                }
            }
            // One at a time, oldest first, gives the same catalog.
            let mut config = DeclarativeConfig::default();
            for b in &bundles {
                add(&mut config, vec![b.clone()], GraphMode::Replaces)
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
            }
            assert_eq!(
                Some(to_string(&config, Format::Json)),
                first,
                "case {case}: one by one"
            );

            // Semver mode: any insertion order gives one graph.
            let mut semver_first: Option<String> = None;
            for _ in 0..3 {
                let mut order = bundles.clone();
                rng.shuffle(&mut order);
                let mut config = DeclarativeConfig::default();
                for b in order {
                    add(&mut config, vec![b], GraphMode::Semver)
                        .unwrap_or_else(|e| panic!("case {case}: {e}"));
                }
                crate::model::validate(&config).unwrap_or_else(|e| panic!("case {case}: {e}"));
                let written = to_string(&config, Format::Json);
                match &semver_first {
                    None => semver_first = Some(written),
                    Some(first) => assert_eq!(&written, first, "case {case}: semver"),
                }
            }
        }
    }

    #[test]
    fn adding_then_removing_a_package_gives_the_catalog_back() {
        let mut rng = Rng(42);
        for case in 0..50 {
            let mut config = DeclarativeConfig::default();
            add(
                &mut config,
                vec![bundle("1.0.0", "", &[], &["stable"], "stable")],
                GraphMode::Replaces,
            )
            .unwrap();
            let before = to_string(&config, Format::Yaml);
            let count = 1 + rng.below(6);
            let others: Vec<RenderedBundle> = (0..count)
                .map(|i| {
                    let mut b = bundle(&format!("0.{i}.0"), "", &[], &["main"], "main");
                    b.bundle.package = "other".into();
                    b.bundle.name = format!("other.v0.{i}.0");
                    b.bundle.image = format!("registry.example/other:{i}");
                    b.bundle.properties[0].value =
                        json!({"packageName": "other", "version": format!("0.{i}.0")});
                    if i > 0 {
                        b.replaces = format!("other.v0.{}.0", i - 1);
                    }
                    b
                })
                .collect();
            add(&mut config, others, GraphMode::Replaces)
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            assert_ne!(to_string(&config, Format::Yaml), before);
            remove_packages(&mut config, &["other".to_string()]).unwrap();
            assert_eq!(to_string(&config, Format::Yaml), before, "case {case}");
        }
        let mut config = DeclarativeConfig::default();
        assert_eq!(
            remove_packages(&mut config, &["ghost".to_string()]).unwrap_err().to_string(),
            "error deleting packages from database: error removing operator package ghost: no package found for packagename ghost"
        );
        remove_packages_with(&mut config, &["ghost".to_string()], true).unwrap();
    }
}
