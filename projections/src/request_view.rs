//! The request read model: everything IIB shows of a request, folded from its events.

use chrono::{DateTime, Utc};
use iib_aggregates::batch::Annotations;
use iib_aggregates::{BuildFacts, BuildRequestEvent, RequestParams, RequestState, WorkerId};
use serde::{Deserialize, Serialize};

/// One entry of IIB's `state_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    pub state: RequestState,
    pub state_reason: String,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: u64,
    pub batch: u64,
    pub user: Option<String>,
    pub batch_annotations: Option<Annotations>,
    pub params: RequestParams,
    /// The queue the request runs on (`None`: the default queue); not in IIB's JSON.
    #[serde(default)]
    pub queue: Option<String>,
    pub facts: BuildFacts,
    /// Oldest first; IIB shows it newest first.
    pub history: Vec<StateEntry>,
    /// The worker holding the request and until when (not part of IIB's JSON).
    pub claimed_by: Option<WorkerId>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: u32,
    /// The sequence number of the last event applied: an event at or below it was applied
    /// already and is skipped, so re-applying events is harmless.
    #[serde(default)]
    pub last_sequence: i64,
}

impl RequestRecord {
    /// Starts a record from the request's first event; `None` for any other event.
    pub fn from_submitted(
        event: &BuildRequestEvent,
        recorded_at: DateTime<Utc>,
        batch_annotations: Option<Annotations>,
    ) -> Option<Self> {
        let BuildRequestEvent::RequestSubmitted {
            request_id,
            batch_id,
            user,
            params,
            state_reason,
            queue,
            ..
        } = event
        else {
            return None;
        };
        Some(Self {
            id: request_id.get(),
            batch: batch_id.get(),
            user: user.clone(),
            batch_annotations,
            params: params.clone(),
            queue: queue.clone(),
            facts: BuildFacts::default(),
            history: vec![StateEntry {
                state: RequestState::InProgress,
                state_reason: state_reason.clone(),
                updated: recorded_at,
            }],
            claimed_by: None,
            lease_until: None,
            attempts: 0,
            last_sequence: 1,
        })
    }

    pub fn current(&self) -> &StateEntry {
        self.history
            .last()
            .expect("a record starts with its submission entry")
    }

    pub fn state(&self) -> RequestState {
        self.current().state
    }

    /// Applies a later event of this request. Returns whether anything a user sees changed.
    pub fn apply(&mut self, event: &BuildRequestEvent, recorded_at: DateTime<Utc>) -> bool {
        use BuildRequestEvent as E;
        let mut push = |state, reason: &String| {
            self.history.push(StateEntry {
                state,
                state_reason: reason.clone(),
                updated: recorded_at,
            });
            true
        };
        match event {
            E::RequestSubmitted { .. } => false,
            E::ProgressRecorded { state_reason } => push(RequestState::InProgress, state_reason),
            E::RequestCompleted { state_reason } => {
                self.claimed_by = None;
                self.lease_until = None;
                push(RequestState::Complete, state_reason)
            }
            E::RequestFailed { state_reason } => {
                self.claimed_by = None;
                self.lease_until = None;
                push(RequestState::Failed, state_reason)
            }
            E::FactsRecorded { facts } => {
                self.facts.merge(facts.clone());
                true
            }
            E::RequestClaimed {
                worker,
                lease_until,
                attempt,
                ..
            } => {
                self.claimed_by = Some(worker.clone());
                self.lease_until = Some(*lease_until);
                self.attempts = *attempt;
                false
            }
            E::ClaimRenewed {
                worker,
                lease_until,
            } => {
                self.claimed_by = Some(worker.clone());
                self.lease_until = Some(*lease_until);
                false
            }
            E::ClaimReleased { .. } => {
                self.claimed_by = None;
                self.lease_until = None;
                false
            }
        }
    }
}
