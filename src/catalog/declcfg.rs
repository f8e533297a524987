//! File-based catalog blobs (opm's `declcfg`): packages, channels, bundles, deprecations, and
//! any other schema kept as it is. Values whose inner shape opm does not interpret (property
//! values, icons) stay JSON values, so nothing is lost between reading and writing.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

pub const SCHEMA_PACKAGE: &str = "olm.package";
pub const SCHEMA_CHANNEL: &str = "olm.channel";
pub const SCHEMA_BUNDLE: &str = "olm.bundle";
pub const SCHEMA_DEPRECATIONS: &str = "olm.deprecations";

// Fields are declared in the order of opm's Go structs (`alpha/declcfg/declcfg.go`): serde
// writes them in that order, as Go's encoding/json does, and a field Go always writes is
// never skipped here.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Icon {
    pub base64data: String,
    pub mediatype: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub schema: String,
    pub name: String,
    #[serde(default)]
    pub default_channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<Icon>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replaces: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub skip_range: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub schema: String,
    pub name: String,
    pub package: String,
    #[serde(default)]
    pub entries: Vec<ChannelEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedImage {
    #[serde(default)]
    pub name: String,
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub schema: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub package: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_images: Vec<RelatedImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deprecation {
    pub schema: String,
    pub package: String,
    #[serde(default)]
    pub entries: Vec<Value>,
}

/// Every blob of a catalog, by kind, in the order read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclarativeConfig {
    pub packages: Vec<Package>,
    pub channels: Vec<Channel>,
    pub bundles: Vec<Bundle>,
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
