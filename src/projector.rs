//! The projector: applies committed events, in global order, to the read model.
//!
//! Each run reads the events after the read model's checkpoint, loads the rows they touch,
//! folds them with `iib_projections::Views` and writes rows, checkpoint and secret deletions
//! in one transaction, so a crash never applies an event twice or skips one. A rebuild folds
//! every event from position 0 in memory and replaces the tables in one transaction.

use crate::store::{ReadModelRows, Store, StoreError, StoredEvent};
use iib_aggregates::{Batch, BatchEvent, BuildRequest, BuildRequestEvent};
use iib_projections::{DomainEventPayload, ProjectedEvent, Views};
use cqrs_es::Aggregate;
use std::time::{Duration, Instant};

/// Events read per query.
const PAGE: i64 = 5_000;

/// Turns a stored event into the typed event the projections fold.
pub fn decode(event: &StoredEvent) -> Result<ProjectedEvent, StoreError> {
    if event.event_version != iib_aggregates::EVENT_VERSION {
        return Err(StoreError::corrupt(format!(
            "event {} has version {}, which this iib cannot read; run a newer iib",
            event.position, event.event_version
        )));
    }
    let aggregate_id: u64 = event.aggregate_id.parse().map_err(|_| {
        StoreError::corrupt(format!("event {} has a non-numeric aggregate id", event.position))
    })?;
    let payload = match event.aggregate_type.as_str() {
        BuildRequest::TYPE => DomainEventPayload::Request(
            serde_json::from_value::<BuildRequestEvent>(event.payload.clone())
                .map_err(|e| StoreError::corrupt(format!("event {}: {e}", event.position)))?,
        ),
        Batch::TYPE => DomainEventPayload::Batch(
            serde_json::from_value::<BatchEvent>(event.payload.clone())
                .map_err(|e| StoreError::corrupt(format!("event {}: {e}", event.position)))?,
        ),
        other => {
            return Err(StoreError::corrupt(format!(
                "event {} belongs to unknown aggregate type {other:?}",
                event.position
            )))
        }
    };
    Ok(ProjectedEvent {
        position: event.position,
        aggregate_id,
        sequence: event.sequence,
        recorded_at: event.recorded_at,
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
            let events = crate::store::read_after_on(&mut **rows.tx, checkpoint, PAGE).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                tx.commit().await?;
                return Ok(applied);
            };
            let events: Vec<ProjectedEvent> = events.iter().map(decode).collect::<Result<_, _>>()?;
            let mut views = Views::default();
            for event in &events {
                load_touched(&mut rows, &mut views, event).await?;
                views.apply(event).map_err(StoreError::corrupt)?;
            }
            write(&mut rows, &views).await?;
            rows.set_checkpoint(last).await?;
            tx.commit().await?;
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
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        let mut views = Views::default();
        let mut position = 0;
        let mut count = 0u64;
        loop {
            let page = crate::store::read_after_on(&mut *tx, position, PAGE * 4).await?;
            let Some(last) = page.last().map(|e| e.position) else { break };
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
            if let BuildRequestEvent::RequestSubmitted { batch_id, .. } = payload {
                load_batch(rows, views, batch_id.get()).await?;
            }
            if !views.requests.contains_key(&id) {
                if let Some(record) = rows.request(id).await? {
                    views.requests.insert(id, record);
                }
            }
        }
        DomainEventPayload::Batch(_) => load_batch(rows, views, id).await?,
    }
    Ok(())
}

async fn load_batch(rows: &mut ReadModelRows<'_>, views: &mut Views, id: u64) -> Result<(), StoreError> {
    if !views.batches.contains_key(&id) {
        if let Some(record) = rows.batch(id).await? {
            views.batches.insert(id, record);
        }
    }
    Ok(())
}

async fn write(rows: &mut ReadModelRows<'_>, views: &Views) -> Result<(), StoreError> {
    for id in &views.dirty_batches {
        rows.put_batch(&views.batches[id]).await?;
    }
    for id in &views.dirty_requests {
        rows.put_request(&views.requests[id]).await?;
    }
    for id in &views.finished_requests {
        rows.delete_secrets(*id).await?;
    }
    Ok(())
}
