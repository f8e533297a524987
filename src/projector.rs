//! The projector: applies committed events, in global order, to the read model.
//!
//! Each run reads the events after the read model's checkpoint, loads the rows they touch,
//! folds them with `iib_projections::Views` and writes rows, checkpoint and secret deletions
//! in one transaction, so a crash never applies an event twice or skips one. A rebuild folds
//! every event from position 0 in memory and replaces the tables in one transaction.

use crate::store::{parse_time, RawEvent, ReadModelRows, Store, StoreError};
use cqrs_es::Aggregate;
use iib_aggregates::{Batch, BatchEvent, BuildRequest, BuildRequestEvent};
use iib_projections::{DomainEventPayload, ProjectedEvent, Views};
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

/// Events read per query.
const PAGE: i64 = 5_000;

/// Turns a stored event into the typed event the projections fold.
pub fn decode(event: &RawEvent) -> Result<ProjectedEvent, StoreError> {
    let corrupt = |what: String| StoreError::corrupt(format!("event {}: {what}", event.position));
    if event.event_version != iib_aggregates::EVENT_VERSION {
        return Err(corrupt(format!(
            "version {} is unknown to this iib; run a newer iib",
            event.event_version
        )));
    }
    let aggregate_id: u64 = event
        .aggregate_id
        .parse()
        .map_err(|_| corrupt("non-numeric aggregate id".into()))?;
    let payload = match event.aggregate_type.as_str() {
        BuildRequest::TYPE => DomainEventPayload::Request(Box::new(
            serde_json::from_str::<BuildRequestEvent>(&event.payload)
                .map_err(|e| corrupt(e.to_string()))?,
        )),
        Batch::TYPE => DomainEventPayload::Batch(
            serde_json::from_str::<BatchEvent>(&event.payload)
                .map_err(|e| corrupt(e.to_string()))?,
        ),
        other => return Err(corrupt(format!("unknown aggregate type {other:?}"))),
    };
    Ok(ProjectedEvent {
        position: event.position,
        aggregate_id,
        sequence: event.sequence,
        recorded_at: parse_time(&event.recorded_at)?,
        payload,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildReport {
    pub events: u64,
    pub requests: u64,
    pub batches: u64,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Debug)]
pub struct Projector {
    store: Store,
}

impl Projector {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Applies every committed event not applied yet; returns how many it applied.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        let mut applied = 0;
        loop {
            let mut tx = self.store.begin_write().await?;
            let mut rows = ReadModelRows { tx: &mut tx };
            let checkpoint = rows.checkpoint().await?;
            let events = rows.tx.read_raw_after(checkpoint, PAGE).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                tx.commit().await?;
                return Ok(applied);
            };
            let events: Vec<ProjectedEvent> =
                events.iter().map(decode).collect::<Result<_, _>>()?;
            let mut views = Views::default();
            for event in &events {
                load_touched(&mut rows, &mut views, event).await?;
                views.apply(event).map_err(StoreError::corrupt)?;
            }
            write(&mut rows, &views).await?;
            rows.set_checkpoint(last).await?;
            tx.commit().await?;
            if !views.finished_requests.is_empty() {
                self.store.note_secrets_deleted();
            }
            applied += events.len() as u64;
        }
    }

    /// Rebuilds the read model from position 0. `progress` hears (events read, newest position)
    /// as it goes.
    pub async fn rebuild(
        &self,
        mut progress: impl FnMut(u64, i64),
    ) -> Result<RebuildReport, StoreError> {
        let started = Instant::now();
        let mut tx = self.store.begin_write().await?;
        let head = tx.head_position().await?;
        let mut views = Views::default();
        let mut position = 0;
        let mut count = 0u64;
        loop {
            let page = tx.read_raw_after(position, PAGE * 4).await?;
            let Some(last) = page.last().map(|e| e.position) else {
                break;
            };
            for event in &page {
                views.apply(&decode(event)?).map_err(StoreError::corrupt)?;
            }
            count += page.len() as u64;
            position = last;
            progress(count, head);
        }
        let mut rows = ReadModelRows { tx: &mut tx };
        rows.clear().await?;
        write(&mut rows, &views).await?;
        rows.set_checkpoint(position).await?;
        tx.commit().await?;
        self.store.note_secrets_deleted();
        Ok(RebuildReport {
            events: count,
            requests: views.requests.len() as u64,
            batches: views.batches.len() as u64,
            elapsed: started.elapsed(),
        })
    }
}

/// Loads into `views` the stored rows `event` needs, unless loaded already.
async fn load_touched(
    rows: &mut ReadModelRows<'_>,
    views: &mut Views,
    event: &ProjectedEvent,
) -> Result<(), StoreError> {
    let id = event.aggregate_id;
    match &event.payload {
        DomainEventPayload::Request(payload) => {
            if let BuildRequestEvent::RequestSubmitted { batch_id, .. } = payload.as_ref() {
                load_batch(rows, views, batch_id.get()).await?;
            }
            if let Entry::Vacant(slot) = views.requests.entry(id) {
                if let Some(record) = rows.request(id).await? {
                    slot.insert(record);
                }
            }
        }
        DomainEventPayload::Batch(_) => load_batch(rows, views, id).await?,
    }
    Ok(())
}

async fn load_batch(
    rows: &mut ReadModelRows<'_>,
    views: &mut Views,
    id: u64,
) -> Result<(), StoreError> {
    if let Entry::Vacant(slot) = views.batches.entry(id) {
        if let Some(record) = rows.batch(id).await? {
            slot.insert(record);
        }
    }
    Ok(())
}

async fn write(rows: &mut ReadModelRows<'_>, views: &Views) -> Result<(), StoreError> {
    let batches: Vec<_> = views
        .dirty_batches
        .iter()
        .map(|id| &views.batches[id])
        .collect();
    rows.put_batches(&batches).await?;
    let requests: Vec<_> = views
        .dirty_requests
        .iter()
        .map(|id| &views.requests[id])
        .collect();
    rows.put_requests(&requests).await?;
    let mut images: Vec<&str> = requests.iter().flat_map(|r| r.pull_specs()).collect();
    images.sort_unstable();
    images.dedup();
    rows.put_images(&images).await?;
    let finished: Vec<u64> = views.finished_requests.iter().copied().collect();
    rows.delete_secrets(&finished).await
}
