//! Idempotency keys of `POST` calls: reserved before a submission, filled with the request
//! ids it created, so a repeated call answers with them instead of creating more.

use super::{format_time, Store, StoreError};
use chrono::{DateTime, Utc};

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// Just reserved by this call.
    Reserved,
    /// Used before: the body's hash, and the requests it created (`None` while in flight).
    Used {
        body_sha256: String,
        request_ids: Option<Vec<u64>>,
    },
}

impl Store {
    /// Reserves `key` for `user`, or tells what it already holds.
    pub async fn reserve_idempotency_key(
        &self,
        user: &str,
        key: &str,
        body_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyState, StoreError> {
        let inserted = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO idempotency_keys (username, key, body_sha256, request_ids, created_at) \
                 VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (username, key) DO NOTHING",
            )
            .bind(user)
            .bind(key)
            .bind(body_sha256)
            .bind(format_time(&now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            return Ok(KeyState::Reserved);
        }
        let (body_sha256, ids): (String, Option<String>) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT body_sha256, request_ids FROM idempotency_keys WHERE username = $1 AND key = $2",
            )
            .bind(user)
            .bind(key)
            .fetch_one(pool)
            .await?
        });
        let request_ids = ids
            .map(|ids| {
                ids.split(',')
                    .map(|id| id.parse::<u64>().map_err(StoreError::corrupt))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(KeyState::Used {
            body_sha256,
            request_ids,
        })
    }

    /// Records the requests a reserved key's call created.
    pub async fn complete_idempotency_key(
        &self,
        user: &str,
        key: &str,
        request_ids: &[u64],
    ) -> Result<(), StoreError> {
        let ids = request_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        on_pool!(self, pool => {
            sqlx::query("UPDATE idempotency_keys SET request_ids = $1 WHERE username = $2 AND key = $3")
                .bind(ids)
                .bind(user)
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Frees a reserved key whose call failed before submitting.
    pub async fn release_idempotency_key(&self, user: &str, key: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE username = $1 AND key = $2 AND request_ids IS NULL",
            )
            .bind(user)
            .bind(key)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets keys older than `before`.
    pub async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(format_time(&before))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
