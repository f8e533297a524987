//! API errors, answered as IIB answers them: `{"error": "<message>"}` with the status IIB
//! uses (400 for validation, 401/403 for auth, 404 with IIB's fixed text), and 503 when the
//! database cannot be reached.

use crate::command_bus::CommandError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// IIB's text for every 404.
pub const NOT_FOUND: &str = "The requested resource was not found";

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// IIB's `ValidationError`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, NOT_FOUND)
    }

    /// Werkzeug's `Unauthorized` description, which IIB returns for anonymous writes.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The server could not verify that you are authorized to access the URL requested. \
             You either supplied the wrong credentials (e.g. a bad password), or your browser \
             doesn't understand how to supply the credentials required.",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is not reachable right now; retry in a few seconds",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::json_response(self.status, &json!({ "error": self.message }))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Self::unavailable()
            }
            StoreError::KeyTaken => Self::new(
                StatusCode::CONFLICT,
                "A request with this Idempotency-Key is being submitted; retry in a moment",
            ),
            StoreError::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "The request was changed by someone else at the same time; retry",
            ),
            other => {
                tracing::error!(error = %other, "store error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        use iib_aggregates::BuildRequestError as R;
        match err {
            CommandError::Store(e) => e.into(),
            CommandError::Request(R::NotSubmitted) => Self::not_found(),
            CommandError::Request(e) => Self::bad_request(e.to_string()),
            CommandError::Batch(e) => Self::bad_request(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
