//! What goes to Kafka for an event: IIB's messages, built from the same read-model fold and
//! JSON serializers the API uses. `build.state`: the request's non-verbose JSON as of that
//! event, keyed by request id, with IIB's `batch`/`id`/`state`/`user` properties as headers.
//! `batch.state`: sent for a new batch and a finished one. Every message has a stable
//! `correlation_id` (from the event's position), so consumers can drop repeats, and the
//! `traceparent` of the span that caused the event when traces were exported.

use crate::projector::decode;
use crate::store::{format_time, RawEvent, Store, StoreError, StoredEvent};
use iib_aggregates::metadata;
use iib_projections::{render, BatchRecord, DomainEventPayload, ProjectedEvent, Views};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub key: String,
    pub body: String,
    pub headers: Vec<(String, Option<String>)>,
}

impl Message {
    /// Its `correlation_id` header (`iib-<position>-<topic>`).
    pub fn correlation_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "correlation_id")
            .and_then(|(_, v)| v.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub build_state: String,
    pub batch_state: String,
    /// Every domain event, for consumers who want the whole stream.
    pub events: Option<String>,
}

impl Topics {
    /// Every topic the relay publishes to.
    pub fn names(&self) -> Vec<&str> {
        [
            Some(self.build_state.as_str()),
            Some(self.batch_state.as_str()),
            self.events.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn projected(event: &StoredEvent) -> Result<ProjectedEvent, StoreError> {
    decode(&RawEvent {
        position: event.position,
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        event_version: event.event_version.clone(),
        payload: event.payload.to_string(),
        recorded_at: format_time(&event.recorded_at),
    })
}

/// Folds an aggregate's events up to (and with) `upto_sequence`.
async fn fold(
    store: &Store,
    views: &mut Views,
    aggregate_type: &str,
    id: &str,
    upto_sequence: i64,
) -> Result<(), StoreError> {
    for event in store.load(aggregate_type, id, 0).await? {
        if event.sequence > upto_sequence {
            break;
        }
        views
            .apply(&projected(&event)?)
            .map_err(StoreError::corrupt)?;
    }
    Ok(())
}

fn base_headers(position: i64, topic: &str) -> Vec<(String, Option<String>)> {
    vec![
        (
            "correlation_id".into(),
            Some(format!("iib-{position}-{topic}")),
        ),
        ("content-type".into(), Some("application/json".into())),
    ]
}

fn batch_message(topics: &Topics, position: i64, batch: &BatchRecord) -> Message {
    let mut headers = base_headers(position, &topics.batch_state);
    headers.push(("batch".into(), Some(batch.id.to_string())));
    headers.push(("state".into(), Some(batch.state.as_str().into())));
    headers.push(("user".into(), batch.user.clone()));
    Message {
        topic: topics.batch_state.clone(),
        key: batch.id.to_string(),
        body: batch.to_json().to_string(),
        headers,
    }
}

/// The messages one committed event produces (none for most events).
pub async fn messages_for(
    store: &Store,
    event: &StoredEvent,
    topics: &Topics,
) -> Result<Vec<Message>, StoreError> {
    let mut out = Vec::new();
    let state_change = matches!(
        event.event_type.as_str(),
        "RequestSubmitted" | "ProgressRecorded" | "RequestCompleted" | "RequestFailed"
    );
    let batch_change = matches!(event.event_type.as_str(), "BatchCreated" | "BatchFinished");
    if state_change {
        let mut views = Views::default();
        let batch_id = match &projected(event)?.payload {
            DomainEventPayload::Request(_) => {
                let first = store.load("BuildRequest", &event.aggregate_id, 0).await?;
                first
                    .first()
                    .and_then(|e| e.payload["RequestSubmitted"]["batch_id"].as_u64())
            }
            DomainEventPayload::Batch(_) => None,
        };
        if let Some(batch) = batch_id {
            fold(store, &mut views, "Batch", &batch.to_string(), 1).await?;
        }
        fold(
            store,
            &mut views,
            "BuildRequest",
            &event.aggregate_id,
            event.sequence,
        )
        .await?;
        let id: u64 = event.aggregate_id.parse().map_err(StoreError::corrupt)?;
        if let Some(record) = views.requests.get(&id) {
            let body = render::summary(&render::verbose(record));
            let mut headers = base_headers(event.position, &topics.build_state);
            headers.push(("batch".into(), Some(record.batch.to_string())));
            headers.push(("id".into(), Some(record.id.to_string())));
            headers.push(("state".into(), Some(record.state().as_str().into())));
            headers.push(("user".into(), record.user.clone()));
            out.push(Message {
                topic: topics.build_state.clone(),
                key: record.id.to_string(),
                body: Value::Object(body).to_string(),
                headers,
            });
        }
    }
    if batch_change {
        let mut views = Views::default();
        fold(
            store,
            &mut views,
            "Batch",
            &event.aggregate_id,
            event.sequence,
        )
        .await?;
        let id: u64 = event.aggregate_id.parse().map_err(StoreError::corrupt)?;
        if let Some(batch) = views.batches.get(&id) {
            out.push(batch_message(topics, event.position, batch));
        }
    }
    if let Some(topic) = &topics.events {
        let mut headers = base_headers(event.position, topic);
        headers.push(("event".into(), Some(event.event_type.clone())));
        out.push(Message {
            topic: topic.clone(),
            key: format!("{}-{}", event.aggregate_type, event.aggregate_id),
            body: crate::replay::to_json(event).to_string(),
            headers,
        });
    }
    // The trace of the span that caused the event (W3C Trace Context over Kafka headers).
    if let Some(traceparent) = event.metadata[metadata::TRACEPARENT].as_str() {
        for message in &mut out {
            message
                .headers
                .push((metadata::TRACEPARENT.into(), Some(traceparent.to_string())));
        }
    }
    Ok(out)
}
