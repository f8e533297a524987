//! The `Batch` aggregate: every request belongs to one (a single request gets a batch of its
//! own; add-rm-batch and regenerate-bundle-batch put several in one, with annotations).
//!
//! A batch's state follows its requests' states as IIB derives it: `in_progress` while any
//! request is, then `failed` if any failed, else `complete`. Requests report their final
//! state to their batch ([`BatchCommand::SettleRequest`]); the last report finishes it.

use crate::ids::{BatchId, RequestId};
use crate::state::{RequestState, RequestType};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request of a batch, as IIB's batch message lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchMember {
    pub id: RequestId,
    pub request_type: RequestType,
    pub organization: Option<String>,
}

pub type Annotations = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq)]
pub enum BatchCommand {
    Create {
        batch_id: BatchId,
        user: Option<String>,
        annotations: Option<Annotations>,
        members: Vec<BatchMember>,
    },
    /// A member request reached a final state.
    SettleRequest {
        request_id: RequestId,
        state: RequestState,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchEvent {
    BatchCreated {
        batch_id: BatchId,
        user: Option<String>,
        annotations: Option<Annotations>,
        members: Vec<BatchMember>,
    },
    BatchRequestSettled {
        request_id: RequestId,
        state: RequestState,
    },
    BatchFinished {
        state: RequestState,
    },
}

impl BatchEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::BatchCreated { .. } => "BatchCreated",
            Self::BatchRequestSettled { .. } => "BatchRequestSettled",
            Self::BatchFinished { .. } => "BatchFinished",
        }
    }
}

impl DomainEvent for BatchEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("batch {0} already exists")]
    AlreadyCreated(BatchId),
    #[error("the batch does not exist")]
    NotCreated,
    #[error("a batch needs at least one request")]
    NoRequests,
    #[error("request {0} is listed twice in the batch")]
    DuplicateRequest(RequestId),
    #[error("request {0} is not part of batch {1}")]
    NotAMember(RequestId, BatchId),
    #[error("request {0} can only settle in a final state, not {1}")]
    NotFinal(RequestId, RequestState),
    #[error("request {0} already settled as {1}")]
    AlreadySettled(RequestId, RequestState),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    id: Option<BatchId>,
    members: Vec<RequestId>,
    settled: BTreeMap<RequestId, RequestState>,
    finished: Option<RequestState>,
}

impl Batch {
    pub fn id(&self) -> Option<BatchId> {
        self.id
    }

    /// IIB's `Batch.state`.
    pub fn state(&self) -> Option<RequestState> {
        self.id?;
        Some(self.finished.unwrap_or(RequestState::InProgress))
    }

    pub fn members(&self) -> &[RequestId] {
        &self.members
    }

    fn decide(&self, command: BatchCommand) -> Result<Vec<BatchEvent>, BatchError> {
        match command {
            BatchCommand::Create {
                batch_id,
                user,
                annotations,
                members,
            } => {
                if let Some(id) = self.id {
                    return Err(BatchError::AlreadyCreated(id));
                }
                if members.is_empty() {
                    return Err(BatchError::NoRequests);
                }
                let mut seen = std::collections::BTreeSet::new();
                if let Some(dup) = members.iter().find(|m| !seen.insert(m.id)) {
                    return Err(BatchError::DuplicateRequest(dup.id));
                }
                Ok(vec![BatchEvent::BatchCreated {
                    batch_id,
                    user,
                    annotations,
                    members,
                }])
            }
            BatchCommand::SettleRequest { request_id, state } => {
                let batch_id = self.id.ok_or(BatchError::NotCreated)?;
                if !self.members.contains(&request_id) {
                    return Err(BatchError::NotAMember(request_id, batch_id));
                }
                if !state.is_final() {
                    return Err(BatchError::NotFinal(request_id, state));
                }
                match self.settled.get(&request_id) {
                    Some(&known) if known == state => return Ok(vec![]),
                    Some(&known) => return Err(BatchError::AlreadySettled(request_id, known)),
                    None => {}
                }
                let mut events = vec![BatchEvent::BatchRequestSettled { request_id, state }];
                if self.settled.len() + 1 == self.members.len() {
                    let any_failed = state == RequestState::Failed
                        || self.settled.values().any(|s| *s == RequestState::Failed);
                    events.push(BatchEvent::BatchFinished {
                        state: if any_failed {
                            RequestState::Failed
                        } else {
                            RequestState::Complete
                        },
                    });
                }
                Ok(events)
            }
        }
    }
}

impl Aggregate for Batch {
    const TYPE: &'static str = "Batch";
    type Command = BatchCommand;
    type Event = BatchEvent;
    type Error = BatchError;
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
        match event {
            BatchEvent::BatchCreated {
                batch_id, members, ..
            } => {
                self.id = Some(batch_id);
                self.members = members.into_iter().map(|m| m.id).collect();
            }
            BatchEvent::BatchRequestSettled { request_id, state } => {
                self.settled.insert(request_id, state);
            }
            BatchEvent::BatchFinished { state } => self.finished = Some(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn rid(n: u64) -> RequestId {
        RequestId::new(n).unwrap()
    }

    fn created(ids: &[u64]) -> BatchEvent {
        BatchEvent::BatchCreated {
            batch_id: BatchId::new(4).unwrap(),
            user: Some("bob".into()),
            annotations: Some(
                serde_json::json!({"release": "RHBA-1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            members: ids
                .iter()
                .map(|&id| BatchMember {
                    id: rid(id),
                    request_type: RequestType::Add,
                    organization: None,
                })
                .collect(),
        }
    }

    fn settled(id: u64, state: RequestState) -> BatchEvent {
        BatchEvent::BatchRequestSettled {
            request_id: rid(id),
            state,
        }
    }

    fn settle(id: u64, state: RequestState) -> BatchCommand {
        BatchCommand::SettleRequest {
            request_id: rid(id),
            state,
        }
    }

    #[test]
    fn a_batch_is_created_once_with_distinct_requests() {
        let BatchEvent::BatchCreated {
            batch_id,
            user,
            annotations,
            members,
        } = created(&[1, 2])
        else {
            unreachable!()
        };
        let create = BatchCommand::Create {
            batch_id,
            user,
            annotations,
            members,
        };
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(create.clone())
            .then_expect_events(vec![created(&[1, 2])]);
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2])])
            .when(create)
            .then_expect_error(BatchError::AlreadyCreated(BatchId::new(4).unwrap()));
        let BatchEvent::BatchCreated { members, .. } = created(&[1, 1]) else {
            unreachable!()
        };
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(BatchCommand::Create {
                batch_id: BatchId::new(5).unwrap(),
                user: None,
                annotations: None,
                members,
            })
            .then_expect_error(BatchError::DuplicateRequest(rid(1)));
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(BatchCommand::Create {
                batch_id: BatchId::new(5).unwrap(),
                user: None,
                annotations: None,
                members: vec![],
            })
            .then_expect_error(BatchError::NoRequests);
    }

    #[test]
    fn the_batch_stays_in_progress_until_every_request_settles() {
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2])])
            .when(settle(1, RequestState::Complete))
            .then_expect_events(vec![settled(1, RequestState::Complete)]);
    }

    #[test]
    fn the_last_request_finishes_the_batch_complete_when_all_completed() {
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2]), settled(1, RequestState::Complete)])
            .when(settle(2, RequestState::Complete))
            .then_expect_events(vec![
                settled(2, RequestState::Complete),
                BatchEvent::BatchFinished {
                    state: RequestState::Complete,
                },
            ]);
    }

    #[test]
    fn one_failed_request_fails_the_batch() {
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2]), settled(1, RequestState::Failed)])
            .when(settle(2, RequestState::Complete))
            .then_expect_events(vec![
                settled(2, RequestState::Complete),
                BatchEvent::BatchFinished {
                    state: RequestState::Failed,
                },
            ]);
    }

    #[test]
    fn settling_is_idempotent_but_cannot_change_a_final_state() {
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2]), settled(1, RequestState::Failed)])
            .when(settle(1, RequestState::Failed))
            .then_expect_events(vec![]);
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1, 2]), settled(1, RequestState::Failed)])
            .when(settle(1, RequestState::Complete))
            .then_expect_error(BatchError::AlreadySettled(rid(1), RequestState::Failed));
    }

    #[test]
    fn only_members_settle_and_only_in_final_states() {
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1])])
            .when(settle(9, RequestState::Complete))
            .then_expect_error(BatchError::NotAMember(rid(9), BatchId::new(4).unwrap()));
        TestFramework::<Batch>::with(())
            .given(vec![created(&[1])])
            .when(settle(1, RequestState::InProgress))
            .then_expect_error(BatchError::NotFinal(rid(1), RequestState::InProgress));
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(settle(1, RequestState::Complete))
            .then_expect_error(BatchError::NotCreated);
    }

    #[test]
    fn state_follows_iibs_derivation() {
        let mut batch = Batch::default();
        assert_eq!(batch.state(), None);
        batch.apply(created(&[1, 2]));
        assert_eq!(batch.state(), Some(RequestState::InProgress));
        batch.apply(settled(1, RequestState::Failed));
        assert_eq!(batch.state(), Some(RequestState::InProgress));
        batch.apply(BatchEvent::BatchFinished {
            state: RequestState::Failed,
        });
        assert_eq!(batch.state(), Some(RequestState::Failed));
    }
}
