//! The fold: applies committed events, in global order, to the records they touch.
//!
//! The same code serves the live projector (records loaded for one batch of new events) and
//! a full rebuild (all records in memory), which is why a rebuild equals the live read model.

use crate::batch_view::BatchRecord;
use crate::envelope::{DomainEventPayload, ProjectedEvent};
use crate::request_view::RequestRecord;
use iib_aggregates::{BatchEvent, RequestState};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct Views {
    pub requests: HashMap<u64, RequestRecord>,
    pub batches: HashMap<u64, BatchRecord>,
    /// Requests whose rows must be written back.
    pub dirty_requests: BTreeSet<u64>,
    pub dirty_batches: BTreeSet<u64>,
    /// Requests that reached a final state: their secrets can go.
    pub finished_requests: BTreeSet<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FoldError {
    #[error("event at position {0} updates request {1}, which was never submitted")]
    UnknownRequest(i64, u64),
    #[error("event at position {0} updates batch {1}, which was never created")]
    UnknownBatch(i64, u64),
}

impl Views {
    pub fn apply(&mut self, event: &ProjectedEvent) -> Result<(), FoldError> {
        let id = event.aggregate_id;
        match &event.payload {
            DomainEventPayload::Request(payload) => {
                if let Some(record) = self.requests.get_mut(&id) {
                    if event.sequence <= record.last_sequence {
                        return Ok(());
                    }
                    record.last_sequence = event.sequence;
                    let before = record.state();
                    record.apply(payload, event.recorded_at);
                    if !before.is_final() && record.state().is_final() {
                        self.finished_requests.insert(id);
                    }
                } else {
                    let annotations = self.batch_annotations_for(payload);
                    let record =
                        RequestRecord::from_submitted(payload, event.recorded_at, annotations)
                            .ok_or(FoldError::UnknownRequest(event.position, id))?;
                    self.requests.insert(id, record);
                }
                self.dirty_requests.insert(id);
            }
            DomainEventPayload::Batch(payload) => {
                if let Some(batch) = self.batches.get_mut(&id) {
                    if event.sequence <= batch.last_sequence {
                        return Ok(());
                    }
                    batch.last_sequence = event.sequence;
                }
                match payload {
                    BatchEvent::BatchCreated {
                        batch_id,
                        user,
                        annotations,
                        members,
                    } => {
                        self.batches.insert(
                            id,
                            BatchRecord {
                                id: batch_id.get(),
                                user: user.clone(),
                                annotations: annotations.clone(),
                                members: members.clone(),
                                state: RequestState::InProgress,
                                last_sequence: event.sequence,
                            },
                        );
                    }
                    BatchEvent::BatchRequestSettled { .. } => {
                        if !self.batches.contains_key(&id) {
                            return Err(FoldError::UnknownBatch(event.position, id));
                        }
                    }
                    BatchEvent::BatchFinished { state } => {
                        self.batches
                            .get_mut(&id)
                            .ok_or(FoldError::UnknownBatch(event.position, id))?
                            .state = *state;
                    }
                }
                self.dirty_batches.insert(id);
            }
        }
        Ok(())
    }

    fn batch_annotations_for(
        &self,
        payload: &iib_aggregates::BuildRequestEvent,
    ) -> Option<iib_aggregates::batch::Annotations> {
        match payload {
            iib_aggregates::BuildRequestEvent::RequestSubmitted { batch_id, .. } => self
                .batches
                .get(&batch_id.get())
                .and_then(|b| b.annotations.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use iib_aggregates::params::RmParams;
    use iib_aggregates::{
        BatchId, BatchMember, BuildRequestEvent, RequestId, RequestParams, RequestType,
    };

    fn at(s: u32) -> DateTime<Utc> {
        format!("2026-11-28T10:00:{s:02}Z").parse().unwrap()
    }

    fn history() -> Vec<ProjectedEvent> {
        let rid = RequestId::new(1).unwrap();
        let bid = BatchId::new(1).unwrap();
        let batch = |position, sequence, e| ProjectedEvent {
            position,
            aggregate_id: 1,
            sequence,
            recorded_at: at(position as u32),
            payload: DomainEventPayload::Batch(e),
        };
        let request = |position, sequence, e| ProjectedEvent {
            position,
            aggregate_id: 1,
            sequence,
            recorded_at: at(position as u32),
            payload: DomainEventPayload::Request(Box::new(e)),
        };
        vec![
            batch(
                1,
                1,
                BatchEvent::BatchCreated {
                    batch_id: bid,
                    user: None,
                    annotations: Some(serde_json::json!({"a": 1}).as_object().unwrap().clone()),
                    members: vec![BatchMember {
                        id: rid,
                        request_type: RequestType::Rm,
                        organization: None,
                    }],
                },
            ),
            request(
                2,
                1,
                BuildRequestEvent::RequestSubmitted {
                    request_id: rid,
                    batch_id: bid,
                    user: None,
                    params: RequestParams::Rm(RmParams::default()),
                    secrets_given: vec![],
                    queue: None,
                    state_reason: "The request was initiated".into(),
                },
            ),
            request(
                3,
                2,
                BuildRequestEvent::ProgressRecorded {
                    state_reason: "Removing the operators".into(),
                },
            ),
            request(
                4,
                3,
                BuildRequestEvent::RequestFailed {
                    state_reason: "boom".into(),
                },
            ),
            batch(
                5,
                2,
                BatchEvent::BatchRequestSettled {
                    request_id: rid,
                    state: RequestState::Failed,
                },
            ),
            batch(
                6,
                3,
                BatchEvent::BatchFinished {
                    state: RequestState::Failed,
                },
            ),
        ]
    }

    #[test]
    fn re_applying_events_changes_nothing() {
        let mut once = Views::default();
        for event in history() {
            once.apply(&event).unwrap();
        }
        let mut twice = Views::default();
        for event in history().iter().chain(history().iter()) {
            twice.apply(event).unwrap();
        }
        assert_eq!(once.requests, twice.requests);
        assert_eq!(once.batches, twice.batches);
        let record = &once.requests[&1];
        assert_eq!(record.history.len(), 3);
        assert_eq!(record.batch_annotations.as_ref().unwrap()["a"], 1);
        assert_eq!(once.batches[&1].state, RequestState::Failed);
        assert!(once.finished_requests.contains(&1));
    }

    #[test]
    fn an_event_for_an_unknown_request_is_an_error() {
        let mut views = Views::default();
        let progress = history().remove(2);
        assert_eq!(
            views.apply(&progress).unwrap_err(),
            FoldError::UnknownRequest(3, 1)
        );
    }
}
