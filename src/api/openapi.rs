//! What the OpenAPI document (`GET /api/v1/openapi.json`) is made of besides its paths: its
//! title and the schemas several handlers answer with; the handler serving it; and the docs
//! page at `/`, as IIB serves one (ReDoc, pointed at our document).
//!
//! The paths come from the handlers' `#[utoipa::path]` annotations, collected by `api::router`
//! as it registers each route (`utoipa_axum::routes!`), and request bodies from `bodies`, the
//! field lists validation uses; nothing here names a handler.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};

/// `{"error": "<message>"}`, the body of every error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: String,
}

/// A build request as IIB shows it; its keys depend on the request type (see IIB's docs).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BuildRequest {
    pub id: u64,
    pub batch: u64,
    pub request_type: String,
    pub state: String,
    pub state_reason: String,
    pub updated: String,
    pub user: Option<String>,
    pub arches: Vec<String>,
}

/// A page of `GET /builds`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BuildsPage {
    pub items: Vec<BuildRequest>,
    pub meta: BTreeMap<String, Value>,
}

/// The document's title, description and shared schemas. Its paths are added by
/// `api::router` as it registers each route, so the document lists exactly what is served.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "iib: IIB Image Builder API",
        description = "Wire-compatible with IIB's API v1. Writes need a user (set by the \
                       authenticating proxy) unless LOGIN_DISABLED; PATCH is for IIB workers."
    ),
    components(schemas(ErrorBody, BuildRequest, BuildsPage))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`: the document `api::router` assembled, as JSON.
pub async fn document(json: Arc<str>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.to_string(),
    )
        .into_response()
}

/// `GET /`: the API docs page. Like IIB's it is a ReDoc page; it points at our document.
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r#"<!DOCTYPE html>
<html>
<head>
  <title>IIB API Documentation</title>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="/api/v1/openapi.json" hide-loading></redoc>
  <script src="https://cdn.jsdelivr.net/npm/redoc@2.0.0-rc.23/bundles/redoc.standalone.js"> </script>
  <noscript>The API is described by <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
</body>
</html>
"#,
    )
}
