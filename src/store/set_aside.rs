//! Events a reader could not apply, set aside so that one bad event never stops the read model
//! or the Kafka relay: each is recorded with its position and why, counted in `/metrics`, and
//! logged; the reader moves past it.

use super::{format_time, RawEvent, Store, StoreError, WriteTx};

/// One event set aside by one reader.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAside {
    pub reader: String,
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub error: String,
}

impl WriteTx {
    /// Records that `reader` skips `event` because of `error`.
    pub async fn set_aside(
        &mut self,
        reader: &str,
        event: &RawEvent,
        error: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(
            reader,
            position = event.position,
            aggregate_type = %event.aggregate_type,
            aggregate_id = %event.aggregate_id,
            error,
            "set an event aside: it cannot be applied; everything after it goes on (see `iib replay --request`)"
        );
        let error: String = error.chars().take(2000).collect();
        on_tx!(self, conn => {
            sqlx::query(
                "INSERT INTO set_aside_events (reader, global_position, aggregate_type, \
                 aggregate_id, error, set_aside_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (reader, global_position) DO NOTHING",
            )
            .bind(reader)
            .bind(event.position)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(error)
            .bind(format_time(&chrono::Utc::now()))
            .execute(conn)
            .await?;
        });
        Ok(())
    }

    /// The positions `reader` set aside.
    pub async fn set_aside_positions(&mut self, reader: &str) -> Result<Vec<i64>, StoreError> {
        Ok(on_tx!(self, conn => {
            sqlx::query_scalar(
                "SELECT global_position FROM set_aside_events WHERE reader = $1 \
                 ORDER BY global_position",
            )
            .bind(reader)
            .fetch_all(conn)
            .await?
        }))
    }
}

impl Store {
    /// Records that `reader` skips the committed `event` because of `error`.
    pub async fn set_aside(
        &self,
        reader: &str,
        event: &super::StoredEvent,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let raw = RawEvent {
            position: event.position,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            event_version: event.event_version.clone(),
            payload: String::new(),
            recorded_at: String::new(),
        };
        tx.set_aside(reader, &raw, error).await?;
        tx.commit().await
    }

    /// Every event set aside, oldest first.
    pub async fn set_aside_events(&self) -> Result<Vec<SetAside>, StoreError> {
        let rows: Vec<(String, i64, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT reader, global_position, aggregate_type, aggregate_id, error \
                 FROM set_aside_events ORDER BY global_position, reader",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(reader, position, aggregate_type, aggregate_id, error)| SetAside {
                    reader,
                    position,
                    aggregate_type,
                    aggregate_id,
                    error,
                },
            )
            .collect())
    }

    /// How many events each reader set aside.
    pub async fn set_aside_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT reader, COUNT(*) FROM set_aside_events GROUP BY reader ORDER BY reader",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}

/// Whether a database error is about the data (a value the database refuses, a row too large)
/// rather than the database being away: such a write fails again however often it is retried.
pub fn is_data_error(error: &StoreError) -> bool {
    let StoreError::Database(sqlx::Error::Database(e)) = error else {
        return false;
    };
    let code = e.code().unwrap_or_default();
    if code.len() == 5 {
        // PostgreSQL SQLSTATE: 22 data exception, 23 integrity constraint, 54 program limit.
        matches!(&code[..2], "22" | "23" | "54")
    } else {
        // SQLite result codes (primary code in the low byte): TOOBIG, CONSTRAINT, MISMATCH.
        code.parse::<i64>()
            .is_ok_and(|c| matches!(c & 0xff, 18..=20))
    }
}
