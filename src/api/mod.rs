//! The REST API (axum). This part serves what the read model already holds: the health
//! check and a request's IIB JSON. The full API v1 (every POST, the list with IIB's filters
//! and pagination, link keys, errors) is built on this in its own module tree.

use crate::store::Store;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/healthcheck", get(healthcheck))
        .route("/api/v1/builds/{id}", get(get_build))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "The requested resource was not found",
    )
}

/// IIB answers `{"status": "Health check OK"}` when its database answers.
async fn healthcheck(State(state): State<ApiState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "Health check OK"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database health check failed; the database is not reachable, retry later",
            )
        }
    }
}

async fn get_build(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found().await;
    };
    match state.store.request_json(id, true).await {
        Ok(Some(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(None) => not_found().await,
        Err(e) => {
            tracing::error!(error = %e, request_id = id, "reading a request failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not reachable; retry later",
            )
        }
    }
}
