//! The projector: applies committed events, in global order, to the read model.
//!
//! Each run reads the events after the read model's checkpoint, loads the rows they touch,
//! folds them with `iib_projections::Views` and writes rows, checkpoint and secret deletions
//! in one transaction, so a crash never applies an event twice or skips one. A rebuild folds
//! every event from position 0 in memory and replaces the tables in one transaction.
//!
//! **Many processes, one read model.** Every process that runs a projector (each `iib serve`,
//! `iib worker`, and each `iib api` for its own submissions) may apply events: no process is
//! elected. The updates are idempotent by position instead: a page is applied inside the
//! store's write transaction (`Store::begin_write`: on PostgreSQL the advisory lock every
//! writer takes, on SQLite `BEGIN IMMEDIATE`), which reads the checkpoint, applies the events
//! after it and moves it; a second projector waits for the lock, finds the checkpoint moved and
//! applies only what is left, so no event is applied twice or on a stale row
//! (`tests/fleet.rs` checks the read model against a rebuild with several processes). On
//! PostgreSQL with `IIB_PG_NOTIFY`, a page holding a submission, a request's end or a
//! hand-back sends `NOTIFY iib_work, '<queue>'` with its commit, when the workers' query
//! (`Store::queue_work`) can see it.

use crate::store::{is_data_error, parse_time, RawEvent, ReadModelRows, Store, StoreError};
use cqrs_es::Aggregate;
use iib_aggregates::{Batch, BatchEvent, BuildRequest, BuildRequestEvent};
use iib_projections::{DomainEventPayload, ProjectedEvent, Views};
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

/// Events read per query.
const PAGE: i64 = 5_000;

/// The projector's name among the readers that set events aside.
pub const READER: &str = "read_model";

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
    ///
    /// An event that cannot be decoded or folded, or whose rows the database refuses, is set
    /// aside (recorded with its position and why) and the events after it are applied: one bad
    /// event never stops the read model. A database that is away is an error to retry.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        // Nothing new: done without the write lock (many processes' projectors wake on every
        // commit; only one of them finds work).
        if self.store.read_model_position().await? >= self.store.head_position().await? {
            return Ok(0);
        }
        let mut applied = 0;
        // After a page whose rows the database refused, go one event at a time up to its end,
        // to find which event it was.
        let mut one_by_one_until = 0;
        loop {
            let checkpoint = self.store.read_model_position().await?;
            let limit = if checkpoint < one_by_one_until {
                1
            } else {
                PAGE
            };
            match self.apply_page(limit).await {
                Ok(None) => return Ok(applied),
                Ok(Some(count)) => applied += count,
                Err((e, last)) if is_data_error(&e) && limit > 1 => {
                    tracing::warn!(error = %e, "the database refused a page of the read model; applying it one event at a time");
                    one_by_one_until = last;
                }
                Err((e, _)) if is_data_error(&e) => self.set_aside_next(&e.to_string()).await?,
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Applies up to `limit` events after the checkpoint in one transaction; `None` when there
    /// were none. On failure, also the position of the page's last event.
    async fn apply_page(&self, limit: i64) -> Result<Option<u64>, (StoreError, i64)> {
        let no_page = |e: StoreError| (e, 0);
        let mut tx = self.store.begin_write().await.map_err(no_page)?;
        let mut rows = ReadModelRows { tx: &mut tx };
        let checkpoint = rows.checkpoint().await.map_err(no_page)?;
        let raw = rows
            .tx
            .read_raw_after(checkpoint, limit)
            .await
            .map_err(no_page)?;
        let Some(last) = raw.last().map(|e| e.position) else {
            tx.commit().await.map_err(no_page)?;
            return Ok(None);
        };
        let in_page = |e: StoreError| (e, last);
        let mut views = Views::default();
        // Requests whose events may make work runnable (see `wakeups::makes_work_runnable`).
        let mut runnable = Vec::new();
        for event in &raw {
            let decoded = match decode(event) {
                Ok(decoded) => decoded,
                Err(e) => {
                    rows.tx
                        .set_aside(READER, event, &e.to_string())
                        .await
                        .map_err(in_page)?;
                    continue;
                }
            };
            load_touched(&mut rows, &mut views, &decoded)
                .await
                .map_err(in_page)?;
            if let DomainEventPayload::Request(payload) = &decoded.payload {
                if crate::wakeups::makes_work_runnable(payload) {
                    runnable.push(decoded.aggregate_id);
                }
            }
            if let Err(e) = views.apply(&decoded) {
                rows.tx
                    .set_aside(READER, event, &e.to_string())
                    .await
                    .map_err(in_page)?;
            }
        }
        write(&mut rows, &views).await.map_err(in_page)?;
        rows.set_checkpoint(last).await.map_err(in_page)?;
        if self.store.notifies() {
            // Sent with the commit, when the read model the workers query shows the change.
            let mut queues: Vec<&str> = runnable
                .iter()
                .filter_map(|id| views.requests.get(id))
                .map(|r| r.queue.as_deref().unwrap_or(crate::wakeups::DEFAULT_QUEUE))
                .collect();
            queues.sort_unstable();
            queues.dedup();
            for queue in queues {
                rows.tx
                    .notify(crate::wakeups::WORK_CHANNEL, queue)
                    .await
                    .map_err(in_page)?;
            }
        }
        tx.commit().await.map_err(in_page)?;
        if !views.finished_requests.is_empty() {
            self.store.note_secrets_deleted();
        }
        Ok(Some(raw.len() as u64))
    }

    /// Sets the next event aside (its rows were refused by the database) and moves past it.
    async fn set_aside_next(&self, error: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let mut rows = ReadModelRows { tx: &mut tx };
        let checkpoint = rows.checkpoint().await?;
        if let Some(event) = rows.tx.read_raw_after(checkpoint, 1).await?.first() {
            rows.tx.set_aside(READER, event, error).await?;
            rows.set_checkpoint(event.position).await?;
        }
        tx.commit().await
    }

    /// Rebuilds the read model from position 0. `progress` hears (events read, newest position)
    /// as it goes. The events the live projector set aside are left out again, and so is any
    /// other that cannot be decoded or folded (set aside now), so a rebuild equals the live
    /// read model.
    pub async fn rebuild(
        &self,
        mut progress: impl FnMut(u64, i64),
    ) -> Result<RebuildReport, StoreError> {
        let started = Instant::now();
        let mut tx = self.store.begin_write().await?;
        let head = tx.head_position().await?;
        let skipped: std::collections::HashSet<i64> =
            tx.set_aside_positions(READER).await?.into_iter().collect();
        let mut views = Views::default();
        let mut position = 0;
        let mut count = 0u64;
        loop {
            let page = tx.read_raw_after(position, PAGE * 4).await?;
            let Some(last) = page.last().map(|e| e.position) else {
                break;
            };
            for event in &page {
                if skipped.contains(&event.position) {
                    continue;
                }
                let folded = decode(event)
                    .and_then(|decoded| views.apply(&decoded).map_err(StoreError::corrupt));
                if let Err(e) = folded {
                    tx.set_aside(READER, event, &e.to_string()).await?;
                }
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
