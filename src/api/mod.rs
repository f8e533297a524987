//! The REST API v1 (axum), wire-compatible with IIB's. Reads come from the read model only;
//! writes go through the command bus. One module per concern: `builds` (reads), `links`
//! (the URL keys of IIB's JSON), `auth`, `error` (IIB's error answers), `request_id`,
//! `bodies` (the fields each body may hold, for validation and the document), `openapi`.
//!
//! [`router`] registers each documented route and adds it to the OpenAPI document in one
//! step; the few routes outside IIB's API are [`UNDOCUMENTED_ROUTES`].

pub mod admission;
pub mod artifacts;
pub mod auth;
pub mod bodies;
pub mod builds;
pub mod error;
pub mod events;
pub mod http_metrics;
pub mod idempotency;
pub mod limits;
pub mod links;
pub mod openapi;
pub mod patch;
pub mod probes;
pub mod queues;
pub mod request_id;
pub mod submit;
pub mod validate;

use crate::command_bus::CommandBus;
use crate::store::Store;
use auth::AuthConfig;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::{ApiError, ApiResult};
use links::LinkConfig;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Settings the handlers read, built once at start-up by `crate::settings`.
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
    /// What a body may hold (`limits`).
    pub limits: limits::Limits,
    /// Connections, concurrent calls, time limits, event streams (`admission`).
    pub http: admission::HttpLimits,
    /// What validation reads from the settings (`authenticated` is set per call).
    pub rules: validate::Rules,
    pub user_to_queue: Map<String, Value>,
    pub dirs: DataDirs,
    /// `IIB_AWS_S3_BUCKET_NAME`: artifacts are served from S3 instead of the directories.
    pub s3: Option<crate::artifacts::S3Bucket>,
    /// `IIB_KAFKA_BROKERS` is set: events are relayed to Kafka, so a relay lag is real. Without
    /// it, nothing is relayed and the lag `/metrics` reports is 0, not every event ever stored.
    pub relay_enabled: bool,
}

/// Where finished requests' files are kept (IIB's `IIB_REQUEST_*_DIR` settings).
#[derive(Debug, Clone, Default)]
pub struct DataDirs {
    pub logs: Option<std::path::PathBuf>,
    pub related_bundles: Option<std::path::PathBuf>,
    pub nested_bundles: Option<std::path::PathBuf>,
}

impl ApiSettings {
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
        match self.linked_request(stored, base_url, verbose) {
            Ok(request) => json_response(status, &request),
            Err(e) => e.into_response(),
        }
    }

    /// A stored request JSON, parsed, with its link keys.
    pub fn linked_request(&self, stored: &str, base_url: &str, verbose: bool) -> ApiResult<Value> {
        let mut request: Map<String, Value> = serde_json::from_str(stored)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.links.add_links(&mut request, base_url, verbose);
        Ok(Value::Object(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_as_python_does() {
        assert_eq!(
            escape_non_ascii(r#"{"a":"é😀"}"#),
            r#"{"a":"\u00e9\ud83d\ude00"}"#
        );
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub bus: CommandBus,
    pub api: Arc<ApiSettings>,
    /// Free places for Server-Sent Events streams (`IIB_MAX_EVENT_STREAMS`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Open streams end when the service stops.
    pub shutdown: crate::shutdown::Shutdown,
}

impl ApiState {
    pub fn new(
        store: Store,
        bus: CommandBus,
        api: ApiSettings,
        shutdown: crate::shutdown::Shutdown,
    ) -> Self {
        Self {
            event_streams: Arc::new(tokio::sync::Semaphore::new(api.http.max_event_streams)),
            store,
            bus,
            api: Arc::new(api),
            shutdown,
        }
    }
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

/// A JSON body as Flask's `jsonify` writes it: compact, non-ASCII escaped as `\uXXXX`, and a
/// final newline.
pub(crate) fn raw_json_response(status: StatusCode, mut body: String) -> Response {
    if !body.is_ascii() {
        body = escape_non_ascii(&body);
    }
    body.push('\n');
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

/// Python's `ensure_ascii`: in serialized JSON non-ASCII characters occur only inside strings,
/// where `\uXXXX` (UTF-16, surrogate pairs beyond the BMP) means the same.
fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Serializes as Flask's `jsonify` does: sorted keys (serde_json's map is ordered).
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    raw_json_response(status, value.to_string())
}

/// Every documented route, registered with axum and added to the OpenAPI document in one
/// step (`routes!` reads each handler's `#[utoipa::path]`), so a route cannot be served without
/// being documented, nor documented without being served.
fn documented_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthcheck))
        .routes(routes!(builds::list))
        .routes(routes!(builds::get_one, patch::patch))
        .routes(routes!(events::events))
        .routes(routes!(artifacts::logs))
        .routes(routes!(artifacts::related_bundles))
        .routes(routes!(artifacts::nested_bundles))
        .routes(routes!(artifacts::deprecation_schema))
        .routes(routes!(submit::add))
        .routes(routes!(submit::rm))
        .routes(routes!(submit::add_rm_batch))
        .routes(routes!(submit::regenerate_bundle))
        .routes(routes!(submit::regenerate_bundle_batch))
        .routes(routes!(submit::merge_index_image))
        .routes(routes!(submit::create_empty_index))
        .routes(routes!(submit::recursive_related_bundles))
        .routes(routes!(submit::fbc_operations))
        .routes(routes!(submit::add_deprecations))
}

/// The routes served but kept out of the document (method, path): the docs page, the document
/// itself, Prometheus' scrape target and the liveness and readiness probes, none of them part
/// of IIB's API.
pub const UNDOCUMENTED_ROUTES: [(&str, &str); 5] = [
    ("GET", "/"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
];

pub fn router(state: ApiState) -> Router {
    let max_body = state.api.max_body_bytes;
    let gate = admission::CallGate::new(&state.api.http);
    let (documented, document) = documented_routes().split_for_parts();
    let document: Arc<str> = document
        .to_json()
        .unwrap_or_else(|_| "{}".to_string())
        .into();
    // These are `UNDOCUMENTED_ROUTES`.
    documented
        .route("/", get(openapi::docs_page))
        .route(
            "/api/v1/openapi.json",
            get(move || openapi::document(document.clone())),
        )
        .route("/metrics", get(metrics))
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(gate, admission::admit))
        .layer(axum::middleware::from_fn(request_id::assign))
        .layer(axum::middleware::from_fn(http_metrics::record))
        .with_state(state)
}

/// What a process without the API (`iib worker`, `iib relay`) serves on `IIB_METRICS_ADDR`:
/// the Prometheus scrape target and the probes, answered as the API answers them.
pub fn ops_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(http_metrics::record))
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

/// Prometheus metrics: everything this process recorded (`crate::metrics`), with the values
/// read from the database refreshed first. The database being away does not hide the rest:
/// `iib_database_up` says so.
async fn metrics(State(state): State<ApiState>) -> Response {
    if let Err(e) = crate::metrics::store::refresh(&state.store, state.api.relay_enabled).await {
        tracing::warn!(error = %e, "/metrics cannot read the database");
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// IIB: `{"status": "Health check OK"}`, or 500 `Database health check failed.`
#[utoipa::path(get, path = "/api/v1/healthcheck", responses(
    (status = 200, description = "The database answers"),
    (status = 500, description = "It does not", body = openapi::ErrorBody)))]
pub(crate) async fn healthcheck(State(state): State<ApiState>) -> Response {
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
