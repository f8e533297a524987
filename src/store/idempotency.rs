//! Idempotency keys of `POST` calls. A key is written in the same transaction as the
//! submission it names, with the request ids it created: it either exists with its requests
//! or not at all, so a call that dies half-way leaves nothing that could jam the key.

use super::{format_time, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};

/// A key to record with a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyKey {
    pub user: String,
    pub key: String,
    pub body_sha256: String,
    /// Keys older than this are forgotten: a new submission may take them again.
    pub not_before: DateTime<Utc>,
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUse {
    pub body_sha256: String,
    pub request_ids: Vec<u64>,
}

impl IdempotencyKey {
    /// Writes the key with the requests its submission created, inside that submission's
    /// transaction. A live key of another call makes the whole submission roll back with
    /// [`StoreError::KeyTaken`].
    pub(crate) async fn insert(
        &self,
        tx: &mut WriteTx,
        request_ids: &[u64],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ids = request_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // A forgotten key, or one an older version left reserved without requests, is free.
        on_tx!(tx, conn => {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE username = $1 AND key = $2 \
                 AND (request_ids IS NULL OR created_at < $3)",
            )
            .bind(&self.user)
            .bind(&self.key)
            .bind(format_time(&self.not_before))
            .execute(conn)
            .await?;
        });
        let inserted: Result<u64, sqlx::Error> = on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO idempotency_keys (username, key, body_sha256, request_ids, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&self.user)
            .bind(&self.key)
            .bind(&self.body_sha256)
            .bind(ids)
            .bind(format_time(&now))
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::KeyTaken),
            Err(e) => Err(e.into()),
        }
    }
}

impl Store {
    /// What a live key holds: the body's hash and the requests its submission created.
    pub async fn idempotency_key(
        &self,
        user: &str,
        key: &str,
        not_before: DateTime<Utc>,
    ) -> Result<Option<KeyUse>, StoreError> {
        let row: Option<(String, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT body_sha256, request_ids FROM idempotency_keys \
                 WHERE username = $1 AND key = $2 AND created_at >= $3",
            )
            .bind(user)
            .bind(key)
            .bind(format_time(&not_before))
            .fetch_optional(pool)
            .await?
        });
        let Some((body_sha256, Some(ids))) = row else {
            return Ok(None);
        };
        let request_ids = ids
            .split(',')
            .map(|id| id.parse::<u64>().map_err(StoreError::corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(KeyUse {
            body_sha256,
            request_ids,
        }))
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
