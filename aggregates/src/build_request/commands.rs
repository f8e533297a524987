//! Commands a build request accepts: from the API (submit, IIB's worker PATCH) and from workers.

use crate::facts::BuildFacts;
use crate::ids::{BatchId, RequestId, WorkerId};
use crate::params::{RequestParams, SecretKind};
use crate::state::RequestState;
use chrono::{DateTime, Utc};

/// Who issues a command that changes a running request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// One of our queue actors; it must hold the request's claim.
    Worker(WorkerId),
    /// A user allowed to update requests over the API (IIB's `IIB_WORKER_USERNAMES`).
    Api { user: Option<String> },
    /// The service itself: time limits, recovery of abandoned requests.
    System,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BuildRequestCommand {
    /// Creates the request. The API has validated `params`; secret values went to the secret
    /// store, and only their kinds come here.
    Submit {
        request_id: RequestId,
        batch_id: BatchId,
        user: Option<String>,
        params: RequestParams,
        secrets_given: Vec<SecretKind>,
        /// The queue IIB's `IIB_USER_TO_QUEUE` routes it to; `None` is the default queue.
        queue: Option<String>,
    },
    /// A worker takes the request until `lease_until`; an expired claim may be taken over.
    Claim {
        worker: WorkerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    },
    /// The claim holder extends its lease (a heartbeat).
    RenewClaim {
        worker: WorkerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    },
    /// The claim holder hands the request back (e.g. at shutdown) so another worker resumes it.
    ReleaseClaim {
        worker: WorkerId,
        reason: String,
    },
    /// A new `state_reason` while the request is in progress.
    RecordProgress {
        actor: Actor,
        state_reason: String,
    },
    /// Facts learned while building.
    RecordFacts {
        actor: Actor,
        facts: BuildFacts,
    },
    Complete {
        actor: Actor,
        state_reason: String,
    },
    Fail {
        actor: Actor,
        state_reason: String,
    },
    /// IIB's worker `PATCH`: facts and a state change, applied together or not at all.
    Update {
        actor: Actor,
        facts: Option<BuildFacts>,
        state: Option<(RequestState, String)>,
    },
}
