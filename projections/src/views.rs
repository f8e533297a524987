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
                            },
                        );
                    }
                    BatchEvent::BatchRequestSettled { .. } => {}
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
