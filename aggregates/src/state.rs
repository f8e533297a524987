//! Request types and states, spelled on the wire exactly as IIB spells them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// IIB's `RequestStateMapping`: `in_progress` → `complete` | `failed`; the last two are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    InProgress,
    Complete,
    Failed,
}

impl RequestState {
    pub const ALL: [RequestState; 3] = [Self::InProgress, Self::Complete, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::InProgress)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s} is not a valid build request state. Valid states are: complete, failed, in_progress"
                )
            })
    }
}

/// IIB's `RequestTypeMapping` (without `generic`, which no endpoint creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestType {
    Add,
    Rm,
    RegenerateBundle,
    MergeIndexImage,
    CreateEmptyIndex,
    RecursiveRelatedBundles,
    FbcOperations,
    AddDeprecations,
}

impl RequestType {
    pub const ALL: [RequestType; 8] = [
        Self::Add,
        Self::Rm,
        Self::RegenerateBundle,
        Self::MergeIndexImage,
        Self::CreateEmptyIndex,
        Self::RecursiveRelatedBundles,
        Self::FbcOperations,
        Self::AddDeprecations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Rm => "rm",
            Self::RegenerateBundle => "regenerate-bundle",
            Self::MergeIndexImage => "merge-index-image",
            Self::CreateEmptyIndex => "create-empty-index",
            Self::RecursiveRelatedBundles => "recursive-related-bundles",
            Self::FbcOperations => "fbc-operations",
            Self::AddDeprecations => "add-deprecations",
        }
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            format!(
                "{s} is not a valid build request type. Valid request_types are: generic, add, rm, \
                 regenerate-bundle, merge-index-image, create-empty-index, recursive-related-bundles, \
                 fbc-operations, add-deprecations"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_iib_spells_them() {
        for t in RequestType::ALL {
            assert_eq!(t.as_str().parse::<RequestType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "done".parse::<RequestState>().unwrap_err(),
            "done is not a valid build request state. Valid states are: complete, failed, in_progress"
        );
    }
}
