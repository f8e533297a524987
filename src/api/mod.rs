//! The REST API v1 (axum), wire-compatible with IIB's. Reads come from the read model only;
//! writes go through the command bus. One module per concern: `builds` (reads), `links`
//! (the URL keys of IIB's JSON), `auth`, `error` (IIB's error answers), `request_id`.

pub mod auth;
pub mod builds;
pub mod error;
pub mod links;
pub mod queues;
pub mod request_id;

use crate::command_bus::CommandBus;
use crate::config::Config;
use crate::store::Store;
use auth::AuthConfig;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use links::LinkConfig;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Settings the handlers read, parsed once at start-up.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub auth: AuthConfig,
    pub links: LinkConfig,
    pub max_per_page: i64,
    /// `IIB_PUBLIC_URL`: the base of absolute URLs; else taken from each call's `Host`.
    pub public_url: Option<String>,
    /// Whether we serve HTTPS ourselves (the scheme of absolute URLs).
    pub tls: bool,
    pub max_body_bytes: usize,
}

impl ApiSettings {
    pub fn from_config(config: &Config) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            auth: AuthConfig::from_config(config)?,
            links: LinkConfig::from_config(config),
            max_per_page: config.integer("IIB_MAX_PER_PAGE").unwrap_or(20).max(1),
            public_url: config
                .text("IIB_PUBLIC_URL")
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string()),
            tls: config.text("IIB_TLS_CERT").is_some() && config.text("IIB_TLS_KEY").is_some(),
            max_body_bytes: config
                .integer("IIB_MAX_BODY_BYTES")
                .unwrap_or(16 << 20)
                .max(1024) as usize,
        })
    }

    /// A stored request JSON as IIB answers it: with its link keys.
    pub fn request_answer(
        &self,
        stored: &str,
        base_url: &str,
        verbose: bool,
        status: StatusCode,
    ) -> Response {
        let request_type = stored
            .find("\"request_type\":\"")
            .map(|i| &stored[i + 16..])
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        if !self.links.has_links(request_type, verbose) {
            return raw_json_response(status, stored.to_string());
        }
        match serde_json::from_str::<Map<String, Value>>(stored) {
            Ok(mut request) => {
                self.links.add_links(&mut request, base_url, verbose);
                json_response(status, &Value::Object(request))
            }
            Err(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
            }
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub bus: CommandBus,
    pub api: Arc<ApiSettings>,
}

/// `scheme://host` for absolute URLs in answers.
pub(crate) fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.api.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if state.api.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub(crate) fn raw_json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Serializes as Flask's `jsonify` does: sorted keys (serde_json's map is ordered).
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    raw_json_response(status, value.to_string())
}

pub fn router(state: ApiState) -> Router {
    let max_body = state.api.max_body_bytes;
    Router::new()
        .route("/api/v1/healthcheck", get(healthcheck))
        .route("/api/v1/builds", get(builds::list))
        .route("/api/v1/builds/{id}", get(builds::get_one))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

/// Werkzeug's `MethodNotAllowed` description, as IIB answers it.
async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
    .into_response()
}

/// IIB: `{"status": "Health check OK"}`, or 500 `Database health check failed.`
async fn healthcheck(State(state): State<ApiState>) -> Response {
    match state.store.ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "Health check OK"})),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Database health check failed.",
            )
            .into_response()
        }
    }
}
