//! What a user asked for, per request type, after the API validated it.
//!
//! Every parameter a worker needs is here, including those IIB never shows in its JSON
//! (`add_arches`, `force_backport`, `overwrite_from_index`, `output_fbc`): the event stream is
//! the only input of our workers. Secrets are not: a request records only *which* secrets
//! were given ([`SecretKind`]); their values live in the secret store until the request ends.

use crate::state::RequestType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A secret a request may carry. Only the kind enters events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    OverwriteFromIndexToken,
    OverwriteTargetIndexToken,
    CnrToken,
    RegistryAuths,
}

impl SecretKind {
    pub const ALL: [SecretKind; 4] = [
        Self::OverwriteFromIndexToken,
        Self::OverwriteTargetIndexToken,
        Self::CnrToken,
        Self::RegistryAuths,
    ];

    /// The request parameter that carries it (IIB's name).
    pub fn parameter(self) -> &'static str {
        match self {
            Self::OverwriteFromIndexToken => "overwrite_from_index_token",
            Self::OverwriteTargetIndexToken => "overwrite_target_index_token",
            Self::CnrToken => "cnr_token",
            Self::RegistryAuths => "registry_auths",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddParams {
    pub bundles: Vec<String>,
    pub from_index: Option<String>,
    pub binary_image: Option<String>,
    pub add_arches: Vec<String>,
    pub organization: Option<String>,
    pub force_backport: bool,
    pub overwrite_from_index: bool,
    pub distribution_scope: Option<String>,
    pub deprecation_list: Vec<String>,
    pub graph_update_mode: Option<String>,
    pub build_tags: Vec<String>,
    pub check_related_images: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RmParams {
    pub operators: Vec<String>,
    pub from_index: Option<String>,
    pub binary_image: Option<String>,
    pub add_arches: Vec<String>,
    pub overwrite_from_index: bool,
    pub distribution_scope: Option<String>,
    pub build_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegenerateBundleParams {
    pub from_bundle_image: String,
    pub organization: Option<String>,
    pub bundle_replacements: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MergeIndexImageParams {
    pub source_from_index: String,
    pub target_index: Option<String>,
    pub deprecation_list: Vec<String>,
    pub binary_image: Option<String>,
    pub distribution_scope: Option<String>,
    pub graph_update_mode: Option<String>,
    pub ignore_bundle_ocp_version: Option<bool>,
    pub overwrite_target_index: bool,
    pub build_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateEmptyIndexParams {
    pub from_index: String,
    pub binary_image: Option<String>,
    pub distribution_scope: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub output_fbc: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecursiveRelatedBundlesParams {
    pub parent_bundle_image: String,
    pub organization: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FbcOperationsParams {
    pub fbc_fragments: Vec<String>,
    /// The request used IIB's legacy single `fbc_fragment` key; its JSON keeps that shape.
    pub used_fbc_fragment: bool,
    pub from_index: String,
    pub binary_image: Option<String>,
    pub add_arches: Vec<String>,
    pub distribution_scope: Option<String>,
    pub overwrite_from_index: bool,
    pub build_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddDeprecationsParams {
    pub operator_package: String,
    /// The raw JSON document the user sent; served by `GET /builds/<id>/deprecation-schema`.
    pub deprecation_schema: String,
    pub from_index: String,
    pub binary_image: Option<String>,
    pub distribution_scope: Option<String>,
    pub overwrite_from_index: bool,
    pub build_tags: Vec<String>,
}

/// The validated parameters of one request; the variant is the request type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request_type", rename_all = "kebab-case")]
pub enum RequestParams {
    Add(AddParams),
    Rm(RmParams),
    RegenerateBundle(RegenerateBundleParams),
    MergeIndexImage(MergeIndexImageParams),
    CreateEmptyIndex(CreateEmptyIndexParams),
    RecursiveRelatedBundles(RecursiveRelatedBundlesParams),
    FbcOperations(FbcOperationsParams),
    AddDeprecations(AddDeprecationsParams),
}

impl RequestParams {
    pub fn request_type(&self) -> RequestType {
        match self {
            Self::Add(_) => RequestType::Add,
            Self::Rm(_) => RequestType::Rm,
            Self::RegenerateBundle(_) => RequestType::RegenerateBundle,
            Self::MergeIndexImage(_) => RequestType::MergeIndexImage,
            Self::CreateEmptyIndex(_) => RequestType::CreateEmptyIndex,
            Self::RecursiveRelatedBundles(_) => RequestType::RecursiveRelatedBundles,
            Self::FbcOperations(_) => RequestType::FbcOperations,
            Self::AddDeprecations(_) => RequestType::AddDeprecations,
        }
    }

    /// IIB's `organization` of a request, as its batch message lists it.
    pub fn organization(&self) -> Option<&str> {
        match self {
            Self::Add(p) => p.organization.as_deref(),
            Self::RegenerateBundle(p) => p.organization.as_deref(),
            Self::RecursiveRelatedBundles(p) => p.organization.as_deref(),
            _ => None,
        }
    }

    /// The index image this request rewrites in place, if any: requests on the same index
    /// must run one at a time.
    pub fn overwritten_index(&self) -> Option<&str> {
        match self {
            Self::Add(p) if p.overwrite_from_index => p.from_index.as_deref(),
            Self::Rm(p) if p.overwrite_from_index => p.from_index.as_deref(),
            Self::FbcOperations(p) if p.overwrite_from_index => Some(&p.from_index),
            Self::AddDeprecations(p) if p.overwrite_from_index => Some(&p.from_index),
            Self::MergeIndexImage(p) if p.overwrite_target_index => p.target_index.as_deref(),
            _ => None,
        }
    }

    /// The secrets a request of this type may carry at all.
    pub fn accepts_secret(&self, kind: SecretKind) -> bool {
        use SecretKind::*;
        match self {
            Self::Add(_) => matches!(kind, OverwriteFromIndexToken | CnrToken),
            Self::Rm(_) | Self::FbcOperations(_) | Self::AddDeprecations(_) => {
                kind == OverwriteFromIndexToken
            }
            Self::MergeIndexImage(_) => kind == OverwriteTargetIndexToken,
            Self::RegenerateBundle(_) | Self::RecursiveRelatedBundles(_) => kind == RegistryAuths,
            Self::CreateEmptyIndex(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_tagged_with_the_request_type() {
        let p = RequestParams::Rm(RmParams {
            operators: vec!["kube-green".into()],
            from_index: Some("registry.example.com/index:v4.18".into()),
            ..Default::default()
        });
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["request_type"], "rm");
        assert_eq!(serde_json::from_value::<RequestParams>(v).unwrap(), p);
    }

    #[test]
    fn only_overwriting_requests_name_an_index_to_serialize_on() {
        let mut add = AddParams {
            from_index: Some("r/i:1".into()),
            ..Default::default()
        };
        assert_eq!(RequestParams::Add(add.clone()).overwritten_index(), None);
        add.overwrite_from_index = true;
        assert_eq!(RequestParams::Add(add).overwritten_index(), Some("r/i:1"));
    }
}
