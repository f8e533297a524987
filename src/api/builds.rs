//! Reading requests: `GET /builds` (IIB's filters and pagination) and `GET /builds/<id>`.
//! Answers come from the read model only.

use crate::api::error::{ApiError, ApiResult};
use crate::api::{base_url, json_response, ApiState};
use crate::store::ListFilter;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use iib_aggregates::{RequestState, RequestType};
use serde_json::json;

/// `request.args.get(name)`: the first value of a query parameter.
pub(crate) fn query_args(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

fn arg<'a>(args: &'a [(String, String)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// IIB's `str_to_bool`.
fn truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Werkzeug's query-string encoding (`urlencode` with `safe="!$'()*,/:;?@"`).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(byte as char)
            }
            b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b'/' | b':' | b';' | b'?' | b'@' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Flask-SQLAlchemy's page arguments: a non-integer or a value below 1 is a 404.
fn positive(value: Option<&str>, default: i64) -> ApiResult<i64> {
    match value {
        None => Ok(default),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ApiError::not_found()),
        },
    }
}

#[utoipa::path(get, path = "/api/v1/builds",
    params(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("per_page" = Option<u64>, Query, description = "Items per page, at most IIB_MAX_PER_PAGE"),
        ("verbose" = Option<String>, Query, description = "true or 1 for the verbose form"),
        ("state" = Option<String>, Query, description = "in_progress, complete or failed"),
        ("batch" = Option<u64>, Query, description = "A batch id"),
        ("request_type" = Option<String>, Query, description = "A request type"),
        ("user" = Option<String>, Query, description = "The submitting user"),
        ("from_index" = Option<String>, Query, description = "Exact from_index pull spec"),
        ("from_index_startswith" = Option<String>, Query, description = "from_index prefix"),
        ("index_image" = Option<String>, Query, description = "Exact index_image pull spec"),
    ),
    responses(
        (status = 200, description = "A page of requests, newest first", body = crate::api::openapi::BuildsPage),
        (status = 400, description = "A filter is invalid", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such page", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let args = query_args(raw.as_deref());
    // Filters go to the database as they are; PostgreSQL refuses a NUL in text.
    if let Some((name, _)) = args.iter().find(|(_, v)| v.chars().any(char::is_control)) {
        return Err(ApiError::bad_request(format!(
            "The \"{name}\" query parameter must not contain control characters"
        )));
    }
    let mut filter = ListFilter::default();
    // The filters a page link repeats, in IIB's order.
    let mut echoed: Vec<(&str, String)> = Vec::new();
    if let Some(v) = arg(&args, "state").filter(|v| !v.is_empty()) {
        echoed.push(("state", v.to_string()));
        v.parse::<RequestState>().map_err(ApiError::bad_request)?;
        filter.state = Some(v.to_string());
    }
    if let Some(v) = arg(&args, "batch") {
        echoed.push(("batch", v.to_string()));
        let batch = v
            .parse::<i64>()
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| ApiError::bad_request("The batch must be a positive integer"))?;
        filter.batch = Some(batch);
    }
    if let Some(v) = arg(&args, "request_type").filter(|v| !v.is_empty()) {
        echoed.push(("request_type", v.to_string()));
        v.parse::<RequestType>().map_err(ApiError::bad_request)?;
        filter.request_type = Some(v.to_string());
    }
    if let Some(v) = arg(&args, "user").filter(|v| !v.is_empty()) {
        echoed.push(("user", v.to_string()));
        filter.user = Some(v.to_string());
    }
    if let Some(v) = arg(&args, "from_index").filter(|v| !v.is_empty()) {
        echoed.push(("from_index", v.to_string()));
        if !state.store.image_known(v).await? {
            return Err(ApiError::bad_request(format!(
                "from_index {v} is not a valid index image"
            )));
        }
        filter.from_index = Some(v.to_string());
    }
    if let Some(v) = arg(&args, "from_index_startswith").filter(|v| !v.is_empty()) {
        echoed.push(("from_index_startswith", v.to_string()));
        if !state.store.image_prefix_known(v).await? {
            return Err(ApiError::bad_request(format!(
                "Can't find any from_index starting with {v}"
            )));
        }
        filter.from_index_startswith = Some(v.to_string());
    }
    if let Some(v) = arg(&args, "index_image").filter(|v| !v.is_empty()) {
        if !state.store.image_known(v).await? {
            return Err(ApiError::bad_request(format!(
                "{v} is not a valid index image"
            )));
        }
        echoed.push(("index_image", v.to_string()));
        filter.index_image = Some(v.to_string());
    }
    let verbose = truthy(arg(&args, "verbose"));
    let page = positive(arg(&args, "page"), 1)?;
    let per_page = positive(arg(&args, "per_page"), 20)?.min(state.api.max_per_page);

    let found = state
        .store
        .list_requests(&filter, page, per_page, verbose)
        .await?;
    if found.items.is_empty() && page != 1 {
        return Err(ApiError::not_found());
    }
    let base = base_url(&state, &headers);
    let mut items = Vec::with_capacity(found.items.len());
    for text in &found.items {
        items.push(state.api.linked_request(text, &base, verbose)?);
    }
    let pages = (found.total + per_page - 1) / per_page;
    let url = |page: i64| {
        let mut url = format!("{base}/api/v1/builds?page={page}&per_page={per_page}");
        for (key, value) in &echoed {
            url.push('&');
            url.push_str(key);
            url.push('=');
            url.push_str(&encode_query_value(value));
        }
        url
    };
    let meta = json!({
        "first": url(1),
        "last": url(pages),
        "next": (page < pages).then(|| url(page + 1)),
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "previous": (page > 1).then(|| url(page - 1)),
        "total": found.total,
    });
    Ok(json_response(
        axum::http::StatusCode::OK,
        &json!({"items": items, "meta": meta}),
    ))
}

#[utoipa::path(get, path = "/api/v1/builds/{id}", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request (verbose)", body = crate::api::openapi::BuildRequest),
        (status = 404, description = "No such request", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn get_one(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    let text = state
        .store
        .request_json(id, true)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(state.api.request_answer(
        &text,
        &base_url(&state, &headers),
        true,
        axum::http::StatusCode::OK,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_as_werkzeug_does() {
        assert_eq!(
            encode_query_value("quay.io/ns/index:v4.18"),
            "quay.io/ns/index:v4.18"
        );
        assert_eq!(encode_query_value("a b&c=d#e%"), "a+b%26c%3Dd%23e%25");
        assert_eq!(
            encode_query_value("tbrady@DOMAIN.LOCAL"),
            "tbrady@DOMAIN.LOCAL"
        );
    }

    #[test]
    fn the_first_value_of_a_parameter_counts() {
        let args = query_args(Some("state=failed&state=complete&verbose=True"));
        assert_eq!(arg(&args, "state"), Some("failed"));
        assert!(truthy(arg(&args, "verbose")));
        assert!(!truthy(Some("yes")));
    }

    #[test]
    fn page_arguments_below_one_or_not_numbers_are_not_found() {
        assert_eq!(positive(None, 20).unwrap(), 20);
        assert_eq!(positive(Some("3"), 1).unwrap(), 3);
        assert_eq!(positive(Some("0"), 1).unwrap_err().status, 404);
        assert_eq!(positive(Some("x"), 1).unwrap_err().status, 404);
    }
}
