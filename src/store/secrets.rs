//! Secrets (tokens, registry auths) a request hands to its worker. They never enter events,
//! logs or answers: written with the submission, read by the worker, deleted when the
//! request ends (by the projector, in the transaction that records the end) or expires.

use super::{format_time, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use iib_aggregates::SecretKind;
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub request_id: u64,
    pub kind: SecretKind,
    pub value: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("request_id", &self.request_id)
            .field("kind", &self.kind)
            .field("value", &"*****")
            .finish()
    }
}

fn kind_name(kind: SecretKind) -> &'static str {
    kind.parameter()
}

impl Secret {
    pub(super) async fn insert(&self, tx: &mut WriteTx) -> Result<(), StoreError> {
        on_tx!(tx, conn => sqlx::query(
            "INSERT INTO request_secrets (request_id, kind, value, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (request_id, kind) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .bind(self.request_id as i64)
        .bind(kind_name(self.kind))
        .bind(&self.value)
        .bind(format_time(&self.expires_at))
        .execute(conn)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

impl Store {
    /// The live secrets of a request.
    pub async fn secrets(
        &self,
        request_id: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Secret>, StoreError> {
        let rows: Vec<(String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT kind, value, expires_at FROM request_secrets \
                 WHERE request_id = $1 AND expires_at > $2 ORDER BY kind",
            )
            .bind(request_id as i64)
            .bind(format_time(&now))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(kind, value, expires_at)| {
                let kind = SecretKind::ALL
                    .into_iter()
                    .find(|k| kind_name(*k) == kind)
                    .ok_or_else(|| StoreError::corrupt(format!("unknown secret kind {kind:?}")))?;
                Ok(Secret {
                    request_id,
                    kind,
                    value,
                    expires_at: super::parse_time(&expires_at)?,
                })
            })
            .collect()
    }

    /// Deletes secrets past their lifetime; returns how many went.
    pub async fn purge_expired_secrets(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM request_secrets WHERE expires_at <= $1")
                .bind(format_time(&now))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
