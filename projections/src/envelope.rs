//! One committed event as the projections see it: its global position, when it was
//! recorded, and the typed payload of whichever aggregate emitted it.

use chrono::{DateTime, Utc};
use iib_aggregates::{BatchEvent, BuildRequestEvent};

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEventPayload {
    Request(Box<BuildRequestEvent>),
    Batch(BatchEvent),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedEvent {
    pub position: i64,
    /// The aggregate's id: a request id or a batch id.
    pub aggregate_id: u64,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub payload: DomainEventPayload,
}
