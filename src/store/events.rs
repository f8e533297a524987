//! The event store proper: append with optimistic concurrency, load one aggregate's
//! history, read everything in global order, hand out ids.

use super::{format_time, parse_time, Store, StoreError, WriteTx};
use crate::store::secrets::Secret;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

/// An event about to be appended. `sequence` numbers an aggregate's events from 1, without
/// gaps; the first new event of an aggregate must follow the last stored one.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// A committed event, with its place in the total order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

const COLUMNS: &str = "global_position, aggregate_type, aggregate_id, sequence, event_type, \
                       event_version, payload, metadata, recorded_at";

type EventRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
);

fn decode(row: EventRow) -> Result<StoredEvent, StoreError> {
    let (
        position,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload,
        metadata,
        recorded_at,
    ) = row;
    Ok(StoredEvent {
        position,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload: readable(position, &payload),
        metadata: serde_json::from_str(&metadata).map_err(StoreError::corrupt)?,
        recorded_at: parse_time(&recorded_at)?,
    })
}

/// A stored payload as JSON; one that cannot be read back (stored by an older iib that let too
/// deep a body through, say) is shown as its text with why, so a history stays readable and
/// the event can still be audited.
fn readable(position: i64, payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|e| {
        tracing::warn!(position, error = %e, "an event's payload cannot be read back as JSON");
        serde_json::json!({
            "unreadable_payload": payload.chars().take(10_000).collect::<String>(),
            "error": e.to_string(),
        })
    })
}

impl Store {
    /// Appends `events` (of one or several aggregates) and `secrets` in one transaction.
    /// Fails with [`StoreError::Conflict`], writing nothing, when any aggregate moved on since
    /// its events were decided. Returns the events' global positions.
    pub async fn append(
        &self,
        events: &[NewEvent],
        secrets: &[Secret],
    ) -> Result<Vec<i64>, StoreError> {
        self.append_keyed(events, secrets, None).await
    }

    /// [`Store::append`], also recording an idempotency key with the request ids it names, in
    /// the same transaction ([`StoreError::KeyTaken`] when another call holds the key).
    pub async fn append_keyed(
        &self,
        events: &[NewEvent],
        secrets: &[Secret],
        key: Option<(&super::IdempotencyKey, &[u64])>,
    ) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() && secrets.is_empty() {
            return Ok(vec![]);
        }
        let tx = self.begin_write().await?;
        self.append_in(tx, events, secrets, key).await
    }

    /// [`Store::append_keyed`] in `tx` (begun with [`Store::begin_write`]), which it commits.
    pub async fn append_in(
        &self,
        mut tx: super::WriteTx,
        events: &[NewEvent],
        secrets: &[Secret],
        key: Option<(&super::IdempotencyKey, &[u64])>,
    ) -> Result<Vec<i64>, StoreError> {
        // Check every aggregate's version under the write lock (the unique key is the backstop).
        let mut checked: Vec<(&str, &str)> = Vec::new();
        for event in events {
            let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
            if checked.contains(&key) {
                continue;
            }
            checked.push(key);
            let found: i64 = on_tx!(tx, conn => {
                sqlx::query_scalar(
                    "SELECT COALESCE(MAX(sequence), 0) FROM events \
                     WHERE aggregate_type = $1 AND aggregate_id = $2",
                )
                .bind(key.0)
                .bind(key.1)
                .fetch_one(conn)
                .await?
            });
            let expected = event.sequence - 1;
            if found != expected {
                return Err(StoreError::Conflict {
                    aggregate_type: key.0.to_string(),
                    aggregate_id: key.1.to_string(),
                    expected,
                    found,
                });
            }
        }
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            let inserted: Result<i64, sqlx::Error> = on_tx!(tx, conn => {
                sqlx::query_scalar(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, recorded_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING global_position",
                )
                .bind(&event.aggregate_type)
                .bind(&event.aggregate_id)
                .bind(event.sequence)
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(event.payload.to_string())
                .bind(event.metadata.to_string())
                .bind(format_time(&event.recorded_at))
                .fetch_one(conn)
                .await
            });
            match inserted {
                Ok(position) => positions.push(position),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::Conflict {
                        aggregate_type: event.aggregate_type.clone(),
                        aggregate_id: event.aggregate_id.clone(),
                        expected: event.sequence - 1,
                        found: event.sequence,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        for secret in secrets {
            secret.insert(&mut tx, self.secret_key.as_deref()).await?;
        }
        if let Some((key, request_ids)) = key {
            let now = events
                .first()
                .map(|e| e.recorded_at)
                .unwrap_or_else(Utc::now);
            key.insert(&mut tx, request_ids, now).await?;
        }
        if let (true, Some(last)) = (self.notifies, positions.last()) {
            tx.notify(crate::wakeups::EVENTS_CHANNEL, &last.to_string())
                .await?;
        }
        tx.commit().await?;
        Ok(positions)
    }

    /// One aggregate's events, oldest first, from `after_sequence` on.
    pub async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence"
        );
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(after_sequence)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(decode).collect()
    }

    /// Up to `limit` events after `position`, in global order.
    pub async fn read_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE global_position > $1 \
             ORDER BY global_position LIMIT $2"
        );
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(position).bind(limit).fetch_all(pool).await?
        });
        rows.into_iter().map(decode).collect()
    }

    /// The position of the newest event (0 when there is none).
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Hands out `count` consecutive ids of the named sequence (`request` or `batch`).
    pub async fn next_ids(&self, sequence: &str, count: i64) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let ids = tx.next_ids(sequence, count).await?;
        tx.commit().await?;
        Ok(ids)
    }
}

impl WriteTx {
    /// [`Store::next_ids`] in this transaction: ids taken together with the events that use
    /// them, under the write lock, follow the order of those events' positions (a request with
    /// a lower id is never committed after one with a higher id, which the workers' serial
    /// and per-index order relies on).
    pub async fn next_ids(&mut self, sequence: &str, count: i64) -> Result<Vec<u64>, StoreError> {
        let tx = self;
        let last: i64 = on_tx!(tx, conn => {
            sqlx::query_scalar(
                "UPDATE id_sequences SET value = value + $1 WHERE name = $2 RETURNING value",
            )
            .bind(count)
            .bind(sequence)
            .fetch_one(conn)
            .await?
        });
        Ok(((last - count + 1)..=last).map(|id| id as u64).collect())
    }
}

/// An event as the projector reads it: the payload still as text, parsed once, straight into
/// its typed form, and no metadata (the read model does not show it).
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_version: String,
    pub payload: String,
    pub recorded_at: String,
}

impl WriteTx {
    /// Up to `limit` events after `position`, in global order, for the projector.
    pub async fn read_raw_after(
        &mut self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        // Unchecked decoding: the columns' types are ours, and sqlx's per-value type check
        // doubled the time of a rebuild.
        Ok(on_tx!(self, conn => {
            let rows = sqlx::query(
                "SELECT global_position, aggregate_type, aggregate_id, sequence, event_version, \
                 payload, recorded_at FROM events WHERE global_position > $1 \
                 ORDER BY global_position LIMIT $2",
            )
            .bind(position)
            .bind(limit)
            .fetch_all(conn)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(RawEvent {
                        position: row.try_get_unchecked(0)?,
                        aggregate_type: row.try_get_unchecked(1)?,
                        aggregate_id: row.try_get_unchecked(2)?,
                        sequence: row.try_get_unchecked(3)?,
                        event_version: row.try_get_unchecked(4)?,
                        payload: row.try_get_unchecked(5)?,
                        recorded_at: row.try_get_unchecked(6)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }))
    }

    /// The position of the newest event.
    pub async fn head_position(&mut self) -> Result<i64, StoreError> {
        Ok(on_tx!(self, conn => {
            sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(conn)
                .await?
        }))
    }
}
