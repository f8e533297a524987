//! The `BuildRequest` aggregate: one per IIB request, of any type. It enforces IIB's state
//! machine (`in_progress` → `complete` | `failed`, final states are final) and the worker
//! claim protocol (one claim holder at a time, leases that expire so a dead worker's request
//! is taken over, never stuck).

mod commands;
mod events;

pub use commands::{Actor, BuildRequestCommand};
pub use events::{BuildRequestEvent, INITIAL_STATE_REASON};

use crate::facts::BuildFacts;
use crate::ids::{BatchId, RequestId, WorkerId};
use crate::params::SecretKind;
use crate::state::{RequestState, RequestType};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub worker: WorkerId,
    pub lease_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRequest {
    id: Option<RequestId>,
    batch: Option<BatchId>,
    request_type: Option<RequestType>,
    state: Option<RequestState>,
    state_reason: String,
    claim: Option<Claim>,
    attempts: u32,
    /// Claims handed back in order (at a worker's shutdown), as opposed to abandoned.
    #[serde(default)]
    hand_backs: u32,
    facts: BuildFacts,
    /// The kinds of secret the request was sent with: a worker that finds one missing knows it
    /// expired, and fails rather than going on without it.
    #[serde(default)]
    secrets_given: Vec<SecretKind>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildRequestError {
    #[error("the request does not exist")]
    NotSubmitted,
    #[error("request {0} already exists")]
    AlreadySubmitted(RequestId),
    /// IIB's own message for a change to a finished request.
    #[error("A {0} request cannot change states")]
    Final(RequestState),
    #[error("a {request_type} request does not accept \"{}\"", .kind.parameter())]
    SecretNotAccepted {
        request_type: RequestType,
        kind: SecretKind,
    },
    #[error("the request is claimed by worker {worker} until {lease_until}")]
    ClaimedByOther {
        worker: WorkerId,
        lease_until: DateTime<Utc>,
    },
    #[error("worker {0} does not hold the claim on this request")]
    NotClaimHolder(WorkerId),
    #[error("a claim's lease must end after it starts")]
    LeaseInThePast,
    #[error("The \"state_reason\" must be a non-empty string")]
    EmptyStateReason,
    #[error("At least one key must be specified to update the request")]
    NoFacts,
    #[error("The following keys are not allowed: {}", .0.join(", "))]
    KeysNotAllowed(Vec<&'static str>),
}

impl BuildRequest {
    pub fn id(&self) -> Option<RequestId> {
        self.id
    }
    pub fn batch(&self) -> Option<BatchId> {
        self.batch
    }
    pub fn request_type(&self) -> Option<RequestType> {
        self.request_type
    }
    pub fn state(&self) -> Option<RequestState> {
        self.state
    }
    pub fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// Claims that ended without a hand-back or an end: workers that died holding the request.
    pub fn abandoned(&self) -> u32 {
        let ended_in_order = self.hand_backs + u32::from(self.claim.is_some());
        self.attempts.saturating_sub(ended_in_order)
    }
    pub fn facts(&self) -> &BuildFacts {
        &self.facts
    }
    pub fn secrets_given(&self) -> &[SecretKind] {
        &self.secrets_given
    }

    /// The request exists and is not final.
    fn require_in_progress(&self) -> Result<(), BuildRequestError> {
        match self.state {
            None => Err(BuildRequestError::NotSubmitted),
            Some(RequestState::InProgress) => Ok(()),
            Some(state) => Err(BuildRequestError::Final(state)),
        }
    }

    fn require_claim_holder(&self, worker: &WorkerId) -> Result<(), BuildRequestError> {
        match &self.claim {
            Some(claim) if &claim.worker == worker => Ok(()),
            _ => Err(BuildRequestError::NotClaimHolder(worker.clone())),
        }
    }

    fn require_actor(&self, actor: &Actor) -> Result<(), BuildRequestError> {
        match actor {
            Actor::Worker(worker) => self.require_claim_holder(worker),
            Actor::Api { .. } | Actor::System => Ok(()),
        }
    }

    fn decide(
        &self,
        command: BuildRequestCommand,
    ) -> Result<Vec<BuildRequestEvent>, BuildRequestError> {
        use BuildRequestCommand as C;
        use BuildRequestEvent as E;
        match command {
            C::Submit {
                request_id,
                batch_id,
                user,
                params,
                mut secrets_given,
                queue,
            } => {
                if let Some(id) = self.id {
                    return Err(BuildRequestError::AlreadySubmitted(id));
                }
                if let Some(&kind) = secrets_given.iter().find(|k| !params.accepts_secret(**k)) {
                    return Err(BuildRequestError::SecretNotAccepted {
                        request_type: params.request_type(),
                        kind,
                    });
                }
                secrets_given.sort();
                secrets_given.dedup();
                Ok(vec![E::RequestSubmitted {
                    request_id,
                    batch_id,
                    user,
                    params,
                    secrets_given,
                    queue,
                    state_reason: INITIAL_STATE_REASON.to_string(),
                }])
            }
            C::Claim {
                worker,
                now,
                lease_until,
            } => {
                self.require_in_progress()?;
                if lease_until <= now {
                    return Err(BuildRequestError::LeaseInThePast);
                }
                match &self.claim {
                    Some(claim) if claim.worker == worker => Ok(vec![E::ClaimRenewed {
                        worker,
                        lease_until,
                    }]),
                    Some(claim) if claim.lease_until > now => {
                        Err(BuildRequestError::ClaimedByOther {
                            worker: claim.worker.clone(),
                            lease_until: claim.lease_until,
                        })
                    }
                    previous => Ok(vec![E::RequestClaimed {
                        worker,
                        lease_until,
                        attempt: self.attempts + 1,
                        taken_over_from: previous.as_ref().map(|c| c.worker.clone()),
                    }]),
                }
            }
            C::RenewClaim {
                worker,
                now,
                lease_until,
            } => {
                self.require_in_progress()?;
                self.require_claim_holder(&worker)?;
                if lease_until <= now {
                    return Err(BuildRequestError::LeaseInThePast);
                }
                Ok(vec![E::ClaimRenewed {
                    worker,
                    lease_until,
                }])
            }
            C::ReleaseClaim { worker, reason } => {
                self.require_in_progress()?;
                self.require_claim_holder(&worker)?;
                Ok(vec![E::ClaimReleased { worker, reason }])
            }
            C::RecordProgress {
                actor,
                state_reason,
            } => {
                self.require_in_progress()?;
                self.require_actor(&actor)?;
                let state_reason = non_empty(state_reason)?;
                if state_reason == self.state_reason {
                    // Retried step: the history already says so.
                    return Ok(vec![]);
                }
                Ok(vec![E::ProgressRecorded { state_reason }])
            }
            C::RecordFacts { actor, facts } => {
                self.require_in_progress()?;
                self.require_actor(&actor)?;
                if facts.is_empty() {
                    return Err(BuildRequestError::NoFacts);
                }
                let request_type = self.request_type.ok_or(BuildRequestError::NotSubmitted)?;
                let disallowed = facts.disallowed_keys(request_type);
                if !disallowed.is_empty() {
                    return Err(BuildRequestError::KeysNotAllowed(disallowed));
                }
                let mut merged = self.facts.clone();
                merged.merge(facts.clone());
                if merged == self.facts {
                    return Ok(vec![]);
                }
                Ok(vec![E::FactsRecorded { facts }])
            }
            C::Complete {
                actor,
                state_reason,
            } => {
                self.require_in_progress()?;
                self.require_actor(&actor)?;
                let state_reason = non_empty(state_reason)?;
                Ok(vec![E::RequestCompleted { state_reason }])
            }
            C::Fail {
                actor,
                state_reason,
            } => {
                self.require_in_progress()?;
                self.require_actor(&actor)?;
                let state_reason = non_empty(state_reason)?;
                Ok(vec![E::RequestFailed { state_reason }])
            }
            C::Update {
                actor,
                facts,
                state,
            } => {
                self.require_in_progress()?;
                self.require_actor(&actor)?;
                // Decide each part on the state the earlier parts leave.
                let mut parts = Vec::new();
                if let Some(facts) = facts {
                    parts.push(C::RecordFacts {
                        actor: actor.clone(),
                        facts,
                    });
                }
                if let Some((state, state_reason)) = state {
                    let actor = actor.clone();
                    parts.push(match state {
                        RequestState::InProgress => C::RecordProgress {
                            actor,
                            state_reason,
                        },
                        RequestState::Complete => C::Complete {
                            actor,
                            state_reason,
                        },
                        RequestState::Failed => C::Fail {
                            actor,
                            state_reason,
                        },
                    });
                }
                let mut scratch = self.clone();
                let mut events = Vec::new();
                for part in parts {
                    for event in scratch.decide(part)? {
                        scratch.apply(event.clone());
                        events.push(event);
                    }
                }
                Ok(events)
            }
        }
    }
}

fn non_empty(reason: String) -> Result<String, BuildRequestError> {
    if reason.trim().is_empty() {
        Err(BuildRequestError::EmptyStateReason)
    } else {
        Ok(reason)
    }
}

impl Aggregate for BuildRequest {
    const TYPE: &'static str = "BuildRequest";
    type Command = BuildRequestCommand;
    type Event = BuildRequestEvent;
    type Error = BuildRequestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use BuildRequestEvent as E;
        match event {
            E::RequestSubmitted {
                request_id,
                batch_id,
                params,
                state_reason,
                secrets_given,
                ..
            } => {
                self.id = Some(request_id);
                self.secrets_given = secrets_given;
                self.batch = Some(batch_id);
                self.request_type = Some(params.request_type());
                self.state = Some(RequestState::InProgress);
                self.state_reason = state_reason;
            }
            E::RequestClaimed {
                worker,
                lease_until,
                attempt,
                ..
            } => {
                self.claim = Some(Claim {
                    worker,
                    lease_until,
                });
                self.attempts = attempt;
            }
            E::ClaimRenewed {
                worker,
                lease_until,
            } => {
                self.claim = Some(Claim {
                    worker,
                    lease_until,
                });
            }
            E::ClaimReleased { .. } => {
                self.claim = None;
                self.hand_backs += 1;
            }
            E::ProgressRecorded { state_reason } => self.state_reason = state_reason,
            E::FactsRecorded { facts } => self.facts.merge(facts),
            E::RequestCompleted { state_reason } => {
                self.state = Some(RequestState::Complete);
                self.state_reason = state_reason;
                self.claim = None;
            }
            E::RequestFailed { state_reason } => {
                self.state = Some(RequestState::Failed);
                self.state_reason = state_reason;
                self.claim = None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
