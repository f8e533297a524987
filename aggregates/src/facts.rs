//! Facts a worker learns while building (IIB's PATCHable keys): resolved digests, arches,
//! the pushed index image, bundle mapping, ... Recorded as partial updates: a field that is
//! `None` leaves what was recorded before; `arches` only ever grows, as in IIB.

use crate::state::RequestType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildFacts {
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub arches: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_image_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_index_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_image_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_index_image_copy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_index_image_copy_resolved: Option<String>,
    /// Operator (package) name → the bundles of this request that belong to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_mapping: Option<BTreeMap<String, Vec<String>>>,
    /// OMPS' answer, kept as the JSON object IIB shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omps_operator_version: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_bundle_image_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_from_index_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_index_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_bundle_image_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fbc_fragment_resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fbc_fragments_resolved: Option<Vec<String>>,
}

impl BuildFacts {
    /// The IIB keys this update sets, in alphabetical order.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut put = |present: bool, key: &'static str| {
            if present {
                keys.push(key)
            }
        };
        put(!self.arches.is_empty(), "arches");
        put(self.binary_image.is_some(), "binary_image");
        put(
            self.binary_image_resolved.is_some(),
            "binary_image_resolved",
        );
        put(self.bundle_image.is_some(), "bundle_image");
        put(self.bundle_mapping.is_some(), "bundle_mapping");
        put(self.distribution_scope.is_some(), "distribution_scope");
        put(
            self.fbc_fragment_resolved.is_some(),
            "fbc_fragment_resolved",
        );
        put(
            self.fbc_fragments_resolved.is_some(),
            "fbc_fragments_resolved",
        );
        put(
            self.from_bundle_image_resolved.is_some(),
            "from_bundle_image_resolved",
        );
        put(self.from_index_resolved.is_some(), "from_index_resolved");
        put(self.index_image.is_some(), "index_image");
        put(self.index_image_resolved.is_some(), "index_image_resolved");
        put(
            self.internal_index_image_copy.is_some(),
            "internal_index_image_copy",
        );
        put(
            self.internal_index_image_copy_resolved.is_some(),
            "internal_index_image_copy_resolved",
        );
        put(
            self.omps_operator_version.is_some(),
            "omps_operator_version",
        );
        put(
            self.parent_bundle_image_resolved.is_some(),
            "parent_bundle_image_resolved",
        );
        put(
            self.source_from_index_resolved.is_some(),
            "source_from_index_resolved",
        );
        put(
            self.target_index_resolved.is_some(),
            "target_index_resolved",
        );
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// Keys that a request of `request_type` may not record (IIB's `get_mutable_keys`).
    pub fn disallowed_keys(&self, request_type: RequestType) -> Vec<&'static str> {
        self.keys()
            .into_iter()
            .filter(|key| !allowed(request_type, key))
            .collect()
    }

    /// Applies `update` on top of `self`.
    /// Drops the keys `request_type` may not record (IIB's mutable keys per type).
    pub fn restrict_to(self, request_type: RequestType) -> BuildFacts {
        let disallowed = self.disallowed_keys(request_type);
        if disallowed.is_empty() {
            return self;
        }
        let mut value = serde_json::to_value(&self).expect("facts serialize");
        if let Some(map) = value.as_object_mut() {
            for key in disallowed {
                map.remove(key);
            }
        }
        serde_json::from_value(value).expect("a subset of facts deserializes")
    }

    pub fn merge(&mut self, update: BuildFacts) {
        let BuildFacts {
            arches,
            binary_image,
            binary_image_resolved,
            distribution_scope,
            from_index_resolved,
            index_image,
            index_image_resolved,
            internal_index_image_copy,
            internal_index_image_copy_resolved,
            bundle_mapping,
            omps_operator_version,
            bundle_image,
            from_bundle_image_resolved,
            source_from_index_resolved,
            target_index_resolved,
            parent_bundle_image_resolved,
            fbc_fragment_resolved,
            fbc_fragments_resolved,
        } = update;
        self.arches.extend(arches);
        fn set<T>(slot: &mut Option<T>, value: Option<T>) {
            if value.is_some() {
                *slot = value;
            }
        }
        set(&mut self.binary_image, binary_image);
        set(&mut self.binary_image_resolved, binary_image_resolved);
        set(&mut self.distribution_scope, distribution_scope);
        set(&mut self.from_index_resolved, from_index_resolved);
        set(&mut self.index_image, index_image);
        set(&mut self.index_image_resolved, index_image_resolved);
        set(
            &mut self.internal_index_image_copy,
            internal_index_image_copy,
        );
        set(
            &mut self.internal_index_image_copy_resolved,
            internal_index_image_copy_resolved,
        );
        if let Some(mapping) = bundle_mapping {
            let current = self.bundle_mapping.get_or_insert_with(BTreeMap::new);
            for (operator, bundles) in mapping {
                let entry = current.entry(operator).or_default();
                for bundle in bundles {
                    if !entry.contains(&bundle) {
                        entry.push(bundle);
                    }
                }
            }
        }
        set(&mut self.omps_operator_version, omps_operator_version);
        set(&mut self.bundle_image, bundle_image);
        set(
            &mut self.from_bundle_image_resolved,
            from_bundle_image_resolved,
        );
        set(
            &mut self.source_from_index_resolved,
            source_from_index_resolved,
        );
        set(&mut self.target_index_resolved, target_index_resolved);
        set(
            &mut self.parent_bundle_image_resolved,
            parent_bundle_image_resolved,
        );
        set(&mut self.fbc_fragment_resolved, fbc_fragment_resolved);
        set(&mut self.fbc_fragments_resolved, fbc_fragments_resolved);
    }
}

/// IIB's mutable keys per request type (`get_mutable_keys` in its models), less `state` and
/// `state_reason`, which are commands of their own here.
fn allowed(request_type: RequestType, key: &str) -> bool {
    const INDEX_IMAGE_KEYS: [&str; 8] = [
        "binary_image",
        "binary_image_resolved",
        "distribution_scope",
        "from_index_resolved",
        "index_image",
        "index_image_resolved",
        "internal_index_image_copy",
        "internal_index_image_copy_resolved",
    ];
    if key == "arches" {
        return true;
    }
    let index_key = INDEX_IMAGE_KEYS.contains(&key);
    match request_type {
        RequestType::Add => index_key || matches!(key, "bundle_mapping" | "omps_operator_version"),
        RequestType::Rm | RequestType::AddDeprecations => index_key,
        RequestType::FbcOperations => {
            index_key || matches!(key, "fbc_fragment_resolved" | "fbc_fragments_resolved")
        }
        RequestType::CreateEmptyIndex => index_key && !key.starts_with("internal_index_image_copy"),
        RequestType::RegenerateBundle => {
            matches!(key, "bundle_image" | "from_bundle_image_resolved")
        }
        RequestType::MergeIndexImage => matches!(
            key,
            "binary_image"
                | "binary_image_resolved"
                | "distribution_scope"
                | "index_image"
                | "source_from_index_resolved"
                | "target_index_resolved"
        ),
        RequestType::RecursiveRelatedBundles => key == "parent_bundle_image_resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_earlier_facts_and_grows_arches() {
        let mut facts = BuildFacts {
            arches: ["amd64".to_string()].into(),
            binary_image_resolved: Some("b@sha256:1".into()),
            ..Default::default()
        };
        facts.merge(BuildFacts {
            arches: ["s390x".to_string()].into(),
            index_image: Some("r/iib-build:1".into()),
            ..Default::default()
        });
        assert_eq!(facts.arches.len(), 2);
        assert_eq!(facts.binary_image_resolved.as_deref(), Some("b@sha256:1"));
        assert_eq!(facts.index_image.as_deref(), Some("r/iib-build:1"));
    }

    #[test]
    fn each_type_may_record_only_its_own_keys() {
        let facts = BuildFacts {
            index_image: Some("r/i:1".into()),
            bundle_image: Some("r/b:1".into()),
            ..Default::default()
        };
        assert_eq!(
            facts.disallowed_keys(RequestType::Add),
            vec!["bundle_image"]
        );
        assert_eq!(
            facts.disallowed_keys(RequestType::RegenerateBundle),
            vec!["index_image"]
        );
        assert!(BuildFacts::default().is_empty());
    }
}
