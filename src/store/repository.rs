//! `cqrs-es`' repository trait on our store, so `cqrs_es::persist::PersistedEventStore` and
//! `CqrsFramework` work on it unchanged. Snapshots are not kept: a request has a few dozen
//! events at most.

use super::{NewEvent, Store, StoreError, StoredEvent};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;

impl From<StoreError> for PersistenceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
            StoreError::Database(e) => PersistenceError::ConnectionError(Box::new(e)),
            StoreError::Corrupt(e) => PersistenceError::DeserializationError(e.into()),
            e @ (StoreError::UnsupportedUrl(_) | StoreError::KeyTaken) => {
                PersistenceError::UnknownError(Box::new(e))
            }
        }
    }
}

pub(crate) fn to_serialized(event: StoredEvent) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: event.aggregate_id,
        sequence: event.sequence as usize,
        aggregate_type: event.aggregate_type,
        event_type: event.event_type,
        event_version: event.event_version,
        payload: event.payload,
        metadata: event.metadata,
    }
}

/// The time to record for events that arrive without one in their metadata.
fn recorded_at(metadata: &Value) -> chrono::DateTime<chrono::Utc> {
    metadata
        .get(iib_aggregates::metadata::RECORDED_AT)
        .and_then(Value::as_str)
        .and_then(|t| super::parse_time(t).ok())
        .unwrap_or_else(chrono::Utc::now)
}

pub(crate) fn to_new(event: &SerializedEvent) -> NewEvent {
    NewEvent {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence as i64,
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        payload: event.payload.clone(),
        metadata: event.metadata.clone(),
        recorded_at: recorded_at(&event.metadata),
    }
}

impl PersistedEventRepository for Store {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .load(A::TYPE, aggregate_id, last_sequence as i64)
            .await?;
        Ok(events.into_iter().map(to_serialized).collect())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let events: Vec<NewEvent> = events.iter().map(to_new).collect();
        self.append(&events, &[]).await?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(feed(events).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let mut events = Vec::new();
        let mut position = 0;
        loop {
            let page = self.read_after(position, 10_000).await?;
            let Some(last) = page.last() else { break };
            position = last.position;
            events.extend(
                page.into_iter()
                    .filter(|e| e.aggregate_type == A::TYPE)
                    .map(to_serialized),
            );
        }
        Ok(feed(events).await)
    }
}

async fn feed(events: Vec<SerializedEvent>) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        // The channel holds them all, so this never waits.
        let _ = feed.push(Ok(event)).await;
    }
    stream
}
