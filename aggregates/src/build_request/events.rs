//! Events of a build request, named in the past tense. Serialized with serde; the type name
//! and [`crate::EVENT_VERSION`] are stored next to each payload. No secret values, ever.

use crate::facts::BuildFacts;
use crate::ids::{BatchId, RequestId, WorkerId};
use crate::params::{RequestParams, SecretKind};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

/// IIB's first `state_reason` of every request.
pub const INITIAL_STATE_REASON: &str = "The request was initiated";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BuildRequestEvent {
    RequestSubmitted {
        request_id: RequestId,
        batch_id: BatchId,
        user: Option<String>,
        params: RequestParams,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets_given: Vec<SecretKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        state_reason: String,
    },
    RequestClaimed {
        worker: WorkerId,
        lease_until: DateTime<Utc>,
        /// 1 for the first claim, 2 when a second worker resumes it, ...
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taken_over_from: Option<WorkerId>,
    },
    ClaimRenewed {
        worker: WorkerId,
        lease_until: DateTime<Utc>,
    },
    ClaimReleased {
        worker: WorkerId,
        reason: String,
    },
    ProgressRecorded {
        state_reason: String,
    },
    FactsRecorded {
        facts: BuildFacts,
    },
    RequestCompleted {
        state_reason: String,
    },
    RequestFailed {
        state_reason: String,
    },
}

impl BuildRequestEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::RequestSubmitted { .. } => "RequestSubmitted",
            Self::RequestClaimed { .. } => "RequestClaimed",
            Self::ClaimRenewed { .. } => "ClaimRenewed",
            Self::ClaimReleased { .. } => "ClaimReleased",
            Self::ProgressRecorded { .. } => "ProgressRecorded",
            Self::FactsRecorded { .. } => "FactsRecorded",
            Self::RequestCompleted { .. } => "RequestCompleted",
            Self::RequestFailed { .. } => "RequestFailed",
        }
    }
}

impl DomainEvent for BuildRequestEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}
