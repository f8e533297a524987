//! Audit: a request's whole history from the event store (every event, with time, actor and
//! payload; secrets were never written, so none can show), and the read-model rebuild.

use crate::store::{Store, StoreError, StoredEvent};
use cqrs_es::Aggregate;
use iib_aggregates::metadata;
use iib_aggregates::BuildRequest;
use serde_json::{json, Value};
use std::io::Write;

/// A request's events, oldest first, plus those of its batch.
pub async fn request_history(
    store: &Store,
    request_id: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = store
        .load(BuildRequest::TYPE, &request_id.to_string(), 0)
        .await?;
    let batch = events
        .first()
        .and_then(|e| e.payload["RequestSubmitted"]["batch_id"].as_u64());
    if let Some(batch) = batch {
        let batch_events = store
            .load(iib_aggregates::Batch::TYPE, &batch.to_string(), 0)
            .await?;
        events.extend(batch_events.into_iter().filter(|e| concerns(e, request_id)));
        events.sort_by_key(|e| e.position);
    }
    Ok(events)
}

/// Whether a batch event is about `request_id` (its creation, settlement, or end).
fn concerns(event: &StoredEvent, request_id: u64) -> bool {
    match event.payload.get("BatchRequestSettled") {
        Some(settled) => settled["request_id"].as_u64() == Some(request_id),
        None => true,
    }
}

/// Who caused an event, from its metadata.
pub fn actor(event: &StoredEvent) -> String {
    let meta = &event.metadata;
    match (meta.get(metadata::WORKER), meta.get(metadata::USER)) {
        (Some(Value::String(w)), _) => format!("worker {w}"),
        (_, Some(Value::String(u))) => format!("user {u}"),
        _ => "anonymous".to_string(),
    }
}

/// One event as a JSON line (`iib replay --request N --json`).
pub fn to_json(event: &StoredEvent) -> Value {
    json!({
        "position": event.position,
        "recorded_at": crate::store::format_time(&event.recorded_at),
        "aggregate": format!("{} {}", event.aggregate_type, event.aggregate_id),
        "sequence": event.sequence,
        "event": event.event_type,
        "version": event.event_version,
        "actor": actor(event),
        "metadata": event.metadata,
        "payload": event.payload,
    })
}

/// Prints a request's history for people.
pub fn print_history(out: &mut impl Write, events: &[StoredEvent]) -> std::io::Result<()> {
    for event in events {
        let payload = event
            .payload
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        writeln!(
            out,
            "#{:<8} {}  {:<10} {:<22} by {}",
            event.position,
            crate::store::format_time(&event.recorded_at),
            format!("{} {}", event.aggregate_type, event.aggregate_id),
            event.event_type,
            actor(event),
        )?;
        writeln!(out, "          {payload}")?;
    }
    Ok(())
}
