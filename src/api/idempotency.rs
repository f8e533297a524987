//! `Idempotency-Key` on POST: a client that resubmits after a flaky error gets the requests
//! its first call created, not new ones. The same key with another body is a 409. The key is
//! written in the submission's own transaction, so a call that died half-way never leaves
//! it taken; two racing calls with one key create one set of requests and both get its ids.
//! Keys are per user and kept a day (`KEY_LIFETIME_HOURS`), then purged.

use crate::api::error::{ApiError, ApiResult};
use crate::api::submit::Caller;
use crate::api::ApiState;
use crate::store::IdempotencyKey;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

pub const HEADER: &str = "idempotency-key";

/// How long a key is remembered.
pub const KEY_LIFETIME_HOURS: i64 = 24;

/// The call's key, if it sent one.
pub fn key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 255 => Ok(Some(key.to_string())),
        _ => Err(ApiError::bad_request(
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The body's hash, of its canonical JSON so that spacing and key order do not matter.
fn body_hash(body: &Bytes) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_else(|_| body.to_vec());
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key a call sent, as the store records it with the submission.
pub fn record(key: String, caller: &Caller, body: &Bytes) -> IdempotencyKey {
    IdempotencyKey {
        user: caller.user.clone().unwrap_or_default(),
        key,
        body_sha256: body_hash(body),
        not_before: chrono::Utc::now() - chrono::Duration::hours(KEY_LIFETIME_HOURS),
    }
}

/// The requests an earlier call with this key created; a 409 when it came with another body.
pub async fn existing(state: &ApiState, key: &IdempotencyKey) -> ApiResult<Option<Vec<u64>>> {
    match state
        .store
        .idempotency_key(&key.user, &key.key, key.not_before)
        .await?
    {
        None => Ok(None),
        Some(used) if used.body_sha256 != key.body_sha256 => Err(ApiError::new(
            StatusCode::CONFLICT,
            "This Idempotency-Key was already used with a different request body",
        )),
        Some(used) => Ok(Some(used.request_ids)),
    }
}
