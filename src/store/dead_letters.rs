//! Kafka messages the broker refused for good, recorded so the relay can move on without
//! losing track of them. Only what identifies a message is kept (its event's position, topic,
//! key, size and the broker's error), never its body: `replay --to-kafka` rebuilds it from the
//! event once the cause is fixed.

use super::{format_time, Store, StoreError};
use chrono::{DateTime, Utc};

/// One refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The global position of the event the message was built from.
    pub position: i64,
    pub topic: String,
    pub key: String,
    pub error: String,
    /// The message's size (key + body + headers) in bytes.
    pub size: u64,
    pub recorded_at: DateTime<Utc>,
}

impl Store {
    /// Records a refused message; returns false when it was recorded before (a page relayed
    /// again after a crash or a transient error refuses the same message again).
    pub async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        let inserted = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO relay_dead_letters \
                 (global_position, topic, message_key, error, size_bytes, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (global_position, topic, message_key) DO NOTHING",
            )
            .bind(letter.position)
            .bind(&letter.topic)
            .bind(&letter.key)
            .bind(&letter.error)
            .bind(i64::try_from(letter.size).unwrap_or(i64::MAX))
            .bind(format_time(&letter.recorded_at))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// How many messages were refused for good, ever.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM relay_dead_letters")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The refused messages, oldest event first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows: Vec<(i64, String, String, String, i64, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT global_position, topic, message_key, error, size_bytes, recorded_at \
                 FROM relay_dead_letters ORDER BY global_position, topic, message_key",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(position, topic, key, error, size, at)| {
                Ok(DeadLetter {
                    position,
                    topic,
                    key,
                    error,
                    size: u64::try_from(size).unwrap_or(0),
                    recorded_at: super::parse_time(&at)?,
                })
            })
            .collect()
    }
}
