//! File-based catalog blobs (opm's `declcfg`): packages, channels, bundles, deprecations, and
//! any other schema kept as it is. Values whose inner shape opm does not interpret (property
//! values, icons) stay JSON values, so nothing is lost between reading and writing.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

/// The `schema` of a package blob.
pub const SCHEMA_PACKAGE: &str = "olm.package";
/// The `schema` of a channel blob.
pub const SCHEMA_CHANNEL: &str = "olm.channel";
/// The `schema` of a bundle blob.
pub const SCHEMA_BUNDLE: &str = "olm.bundle";
/// The `schema` of a package's deprecations blob.
pub const SCHEMA_DEPRECATIONS: &str = "olm.deprecations";

// Fields are declared in the order of opm's Go structs (`alpha/declcfg/declcfg.go`): serde
// writes them in that order, as Go's encoding/json does, and a field Go always writes is
// never skipped here.

/// A package's icon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Icon {
    /// The image, base64-encoded.
    pub base64data: String,
    /// Its media type, such as `image/svg+xml`.
    pub mediatype: String,
}

/// An `olm.package` blob: one operator package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    /// Always [`SCHEMA_PACKAGE`].
    pub schema: String,
    /// The package name.
    pub name: String,
    /// The channel installs follow unless told otherwise.
    #[serde(default)]
    pub default_channel: String,
    /// The package's icon, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<Icon>,
    /// The package's description (free text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Package-level properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

/// One bundle in a channel and the upgrade edges into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelEntry {
    /// The bundle this entry places in the channel.
    pub name: String,
    /// The bundle it upgrades from ("" for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replaces: String,
    /// Further bundles it upgrades from directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<String>,
    /// A semver range of versions it upgrades from ("" for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub skip_range: String,
}

/// An `olm.channel` blob: an upgrade graph of a package's bundles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Always [`SCHEMA_CHANNEL`].
    pub schema: String,
    /// The channel name, unique within its package.
    pub name: String,
    /// The package the channel belongs to.
    pub package: String,
    /// The channel's upgrade graph: its bundles and the edges between them.
    #[serde(default)]
    pub entries: Vec<ChannelEntry>,
    /// Channel-level properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

/// A typed property of a package, channel or bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    /// The property's `type`, such as `olm.package` or `olm.gvk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its value, kept as JSON.
    pub value: Value,
}

/// An image a bundle uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedImage {
    /// A name for the image ("" when the bundle gave none).
    #[serde(default)]
    pub name: String,
    /// The image pull spec.
    pub image: String,
}

/// An `olm.bundle` blob: one version of an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Always [`SCHEMA_BUNDLE`].
    pub schema: String,
    /// The bundle name (its CSV's name), unique within its package.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The package the bundle belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub package: String,
    /// The bundle image's pull spec.
    #[serde(default)]
    pub image: String,
    /// Its properties: `olm.package` (name and version), provided and required APIs, the
    /// manifests (`olm.bundle.object` or `olm.csv.metadata`), and any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    /// The images the bundle uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_images: Vec<RelatedImage>,
}

/// An `olm.deprecations` blob: what a package marks as deprecated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deprecation {
    /// Always [`SCHEMA_DEPRECATIONS`].
    pub schema: String,
    /// The package whose package, channels or bundles are deprecated.
    pub package: String,
    /// The deprecation entries, kept as JSON (`reference` and `message`).
    #[serde(default)]
    pub entries: Vec<Value>,
}

/// Every blob of a catalog, by kind, in the order read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclarativeConfig {
    /// `olm.package` blobs.
    pub packages: Vec<Package>,
    /// `olm.channel` blobs.
    pub channels: Vec<Channel>,
    /// `olm.bundle` blobs.
    pub bundles: Vec<Bundle>,
    /// `olm.deprecations` blobs.
    pub deprecations: Vec<Deprecation>,
    /// Blobs of other schemas, kept whole.
    pub others: Vec<Value>,
}

impl Bundle {
    /// The values of the properties of one type.
    pub fn properties_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.properties
            .iter()
            .filter(move |p| p.kind == kind)
            .map(|p| &p.value)
    }

    /// The bundle's version, from its `olm.package` property.
    pub fn version(&self) -> Option<&str> {
        self.properties_of("olm.package")
            .next()
            .and_then(|v| v.get("version"))
            .and_then(Value::as_str)
    }
}

impl DeclarativeConfig {
    /// Appends every blob of `other` (opm's `DeclarativeConfig.Merge`).
    pub fn merge(&mut self, other: DeclarativeConfig) {
        self.packages.extend(other.packages);
        self.channels.extend(other.channels);
        self.bundles.extend(other.bundles);
        self.deprecations.extend(other.deprecations);
        self.others.extend(other.others);
    }

    /// The package of every blob (`""` for blobs of no package, such as unknown schemas
    /// without a `package` field).
    pub fn package_names(&self) -> BTreeSet<&str> {
        let mut names = BTreeSet::new();
        names.extend(self.packages.iter().map(|p| p.name.as_str()));
        names.extend(self.channels.iter().map(|c| c.package.as_str()));
        names.extend(self.bundles.iter().map(|b| b.package.as_str()));
        names.extend(self.deprecations.iter().map(|d| d.package.as_str()));
        names.extend(self.others.iter().map(package_of));
        names
    }
}

/// The package an unknown blob names (`""` for none).
pub fn package_of(blob: &Value) -> &str {
    blob.get("package").and_then(Value::as_str).unwrap_or("")
}
