//! `Idempotency-Key` on POST: a client that resubmits after a flaky error gets the requests
//! its first call created, not new ones. The same key with another body is a 409; a key whose
//! first call is still running is a 409 that says to retry. Keys are per user and kept a day.

use crate::api::error::{ApiError, ApiResult};
use crate::api::submit::Caller;
use crate::api::ApiState;
use crate::store::KeyState;
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

fn user(caller: &Caller) -> &str {
    caller.user.as_deref().unwrap_or("")
}

/// Reserves the key; returns the requests of an earlier call with it, if there was one.
pub async fn existing(
    state: &ApiState,
    key: &str,
    caller: &Caller,
    body: &Bytes,
) -> ApiResult<Option<Vec<u64>>> {
    let hash = body_hash(body);
    match state
        .store
        .reserve_idempotency_key(user(caller), key, &hash, chrono::Utc::now())
        .await?
    {
        KeyState::Reserved => Ok(None),
        KeyState::Used { body_sha256, .. } if body_sha256 != hash => Err(ApiError::new(
            StatusCode::CONFLICT,
            "This Idempotency-Key was already used with a different request body",
        )),
        KeyState::Used {
            request_ids: Some(ids),
            ..
        } => Ok(Some(ids)),
        KeyState::Used {
            request_ids: None, ..
        } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "A request with this Idempotency-Key is being submitted; retry in a moment",
        )),
    }
}

/// Records what the call created.
pub async fn remember(state: &ApiState, key: &str, caller: &Caller, ids: &[u64]) -> ApiResult<()> {
    Ok(state
        .store
        .complete_idempotency_key(user(caller), key, ids)
        .await?)
}

/// Frees the key of a call that failed.
pub async fn release(state: &ApiState, key: &str, caller: &Caller) {
    if let Err(e) = state.store.release_idempotency_key(user(caller), key).await {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
}
