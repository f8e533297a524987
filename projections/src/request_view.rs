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

    /// Every pull spec the request names, asked for or learned (IIB's `image` rows).
    pub fn pull_specs(&self) -> Vec<&str> {
        fn opt<'a>(specs: &mut Vec<&'a str>, spec: &'a Option<String>) {
            if let Some(spec) = spec {
                specs.push(spec)
            }
        }
        let mut specs: Vec<&str> = Vec::new();
        let mut one = |spec| opt(&mut specs, spec);
        match &self.params {
            RequestParams::Add(p) => {
                one(&p.from_index);
                one(&p.binary_image);
            }
            RequestParams::Rm(p) => {
                one(&p.from_index);
                one(&p.binary_image);
            }
            RequestParams::RegenerateBundle(_) | RequestParams::RecursiveRelatedBundles(_) => {}
            RequestParams::MergeIndexImage(p) => {
                one(&p.target_index);
                one(&p.binary_image);
            }
            RequestParams::CreateEmptyIndex(p) => one(&p.binary_image),
            RequestParams::FbcOperations(p) => one(&p.binary_image),
            RequestParams::AddDeprecations(p) => one(&p.binary_image),
        }
        let f = &self.facts;
        for spec in [
            &f.binary_image,
            &f.binary_image_resolved,
            &f.from_index_resolved,
            &f.index_image,
            &f.index_image_resolved,
            &f.internal_index_image_copy,
            &f.internal_index_image_copy_resolved,
            &f.bundle_image,
            &f.from_bundle_image_resolved,
            &f.source_from_index_resolved,
            &f.target_index_resolved,
            &f.parent_bundle_image_resolved,
            &f.fbc_fragment_resolved,
        ] {
            one(spec);
        }
        match &self.params {
            RequestParams::Add(p) => {
                specs.extend(p.bundles.iter().map(String::as_str));
                specs.extend(p.deprecation_list.iter().map(String::as_str));
            }
            RequestParams::RegenerateBundle(p) => specs.push(&p.from_bundle_image),
            RequestParams::MergeIndexImage(p) => {
                specs.push(&p.source_from_index);
                specs.extend(p.deprecation_list.iter().map(String::as_str));
            }
            RequestParams::CreateEmptyIndex(p) => specs.push(&p.from_index),
            RequestParams::RecursiveRelatedBundles(p) => specs.push(&p.parent_bundle_image),
            RequestParams::FbcOperations(p) => {
                specs.push(&p.from_index);
                specs.extend(p.fbc_fragments.iter().map(String::as_str));
            }
            RequestParams::AddDeprecations(p) => specs.push(&p.from_index),
            RequestParams::Rm(_) => {}
        }
        if let Some(resolved) = &f.fbc_fragments_resolved {
            specs.extend(resolved.iter().map(String::as_str));
        }
        specs.sort_unstable();
        specs.dedup();
        specs
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
