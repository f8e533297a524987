//! Secrets (tokens, registry auths) a request hands to its worker. They never enter events,
//! logs or answers: written with the submission, read by the worker, deleted when the
//! request ends (by the projector, in the transaction that records the end) or expires.
//!
//! With `IIB_SECRET_KEY` set, values are stored encrypted (ChaCha20-Poly1305, bound to their
//! request and kind), so what a database keeps after a deletion (PostgreSQL's dead tuples and
//! WAL, a backup, a copied file) is of no use without the key. Values written without a key
//! are still read as they are.

use super::{format_time, Store, StoreError, WriteTx};
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use iib_aggregates::SecretKind;
use std::fmt;

/// What an encrypted value starts with (then base64 of nonce and ciphertext).
const SEALED: &str = "enc:v1:";
const NONCE_BYTES: usize = 12;

/// The key secrets are encrypted with at rest (`IIB_SECRET_KEY`).
#[derive(Clone)]
pub struct SecretKey(Key);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(*****)")
    }
}

impl SecretKey {
    /// A key from its base64 text (32 bytes, e.g. `openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                "IIB_SECRET_KEY must be 32 random bytes, base64-encoded \
                 (make one with `openssl rand -base64 32`)"
                    .to_string()
            })?;
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// What the ciphertext is bound to: a value cannot be moved to another request or kind.
    fn context(request_id: u64, kind: SecretKind) -> String {
        format!("iib-secret/{request_id}/{}", kind.parameter())
    }

    fn seal(&self, request_id: u64, kind: SecretKind, value: &str) -> Result<String, StoreError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let context = Self::context(request_id, kind);
        let ciphertext = ChaCha20Poly1305::new(&self.0)
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::corrupt("a secret could not be encrypted"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        ))
    }
}

/// The stored text of a value: sealed with the key if there is one.
fn stored_value(
    key: Option<&SecretKey>,
    request_id: u64,
    kind: SecretKind,
    value: &str,
) -> Result<String, StoreError> {
    match key {
        Some(key) => key.seal(request_id, kind, value),
        None => Ok(value.to_string()),
    }
}

/// A stored value as it was given: opened with the key when it was sealed.
fn opened_value(
    key: Option<&SecretKey>,
    request_id: u64,
    kind: SecretKind,
    stored: String,
) -> Result<String, StoreError> {
    let Some(sealed) = stored.strip_prefix(SEALED) else {
        return Ok(stored);
    };
    let unreadable = |why: &str| {
        StoreError::corrupt(format!(
            "the {} of request {request_id} cannot be read: {why}",
            kind.parameter()
        ))
    };
    let key = key.ok_or_else(|| {
        unreadable("it is encrypted; set IIB_SECRET_KEY to the key it was written with")
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .ok()
        .filter(|b| b.len() > NONCE_BYTES)
        .ok_or_else(|| unreadable("the stored value is damaged"))?;
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let context = SecretKey::context(request_id, kind);
    let plain = ChaCha20Poly1305::new(&key.0)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| {
            unreadable("IIB_SECRET_KEY is not the key it was written with (or it was altered)")
        })?;
    String::from_utf8(plain).map_err(|_| unreadable("the stored value is damaged"))
}

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
    pub(super) async fn insert(
        &self,
        tx: &mut WriteTx,
        key: Option<&SecretKey>,
    ) -> Result<(), StoreError> {
        let value = stored_value(key, self.request_id, self.kind, &self.value)?;
        on_tx!(tx, conn => sqlx::query(
            "INSERT INTO request_secrets (request_id, kind, value, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (request_id, kind) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .bind(self.request_id as i64)
        .bind(kind_name(self.kind))
        .bind(&value)
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
                    value: opened_value(self.secret_key.as_deref(), request_id, kind, value)?,
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
