//! What a finished request leaves behind, served as IIB serves it: its log
//! (`GET /builds/<id>/logs`), the related bundles of a regenerate-bundle request, the nested
//! bundles of a recursive-related-bundles request, and the deprecation schema an
//! add-deprecations request was given. Files live in the directories IIB's settings name and
//! expire `IIB_REQUEST_DATA_DAYS_TO_LIVE` days after the request's last state change.

use crate::api::error::{ApiError, ApiResult};
use crate::api::ApiState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use iib_aggregates::{RequestParams, RequestType};
use iib_projections::RequestRecord;
use std::path::PathBuf;

async fn record(state: &ApiState, id: &str) -> ApiResult<RequestRecord> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    state
        .store
        .request_record(id)
        .await?
        .ok_or_else(ApiError::not_found)
}

fn require_type(record: &RequestRecord, wanted: RequestType) -> ApiResult<()> {
    let actual = record.params.request_type();
    if actual == wanted {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "The request {} is of type {actual}. This endpoint is only valid for requests of \
             type {wanted}.",
            record.id
        )))
    }
}

fn require_final(record: &RequestRecord, what: &str) -> ApiResult<()> {
    if record.state().is_final() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "The request {} is not complete yet. {what} will be available once the request \
             is complete.",
            record.id
        )))
    }
}

fn expired(state: &ApiState, record: &RequestRecord) -> bool {
    state.api.links.expiration(record.current().updated) < chrono::Utc::now()
}

fn body(content_type: &'static str, bytes: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response()
}

/// Reads a kept file; `Ok(None)` when it is not there.
/// An artifact kept in S3: the object, else 410 when the request's data expired, else 404.
async fn from_s3(
    state: &ApiState,
    bucket: &crate::artifacts::S3Bucket,
    record: &RequestRecord,
    artifact: crate::artifacts::Artifact,
    content_type: &'static str,
) -> ApiResult<Response> {
    match bucket.get(artifact, record.id).await {
        Some(bytes) => Ok(body(content_type, bytes)),
        None if expired(state, record) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "The data for the build request {} no longer exist",
                record.id
            ),
        )),
        None => Err(ApiError::not_found()),
    }
}

async fn read(path: PathBuf) -> ApiResult<Option<Vec<u8>>> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read a request file");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "IIB cannot read the request's data right now",
            ))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/builds/{id}/logs", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request log (text/plain)"),
        (status = 400, description = "Wrong request type, or not finished", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such request, or not kept", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "Expired", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "Finished but the file is missing", body = crate::api::openapi::ErrorBody)))]
pub async fn logs(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    if state.api.s3.is_none() && state.api.dirs.logs.is_none() {
        return Err(ApiError::not_found());
    }
    let record = record(&state, &id).await?;
    require_final(&record, "logs")?;
    if let Some(bucket) = &state.api.s3 {
        return from_s3(
            &state,
            bucket,
            &record,
            crate::artifacts::Artifact::Logs,
            "text/plain; charset=utf-8",
        )
        .await;
    }
    let dir = state.api.dirs.logs.clone().expect("checked above");
    match read(dir.join(format!("{}.log", record.id))).await? {
        Some(bytes) => Ok(body("text/plain; charset=utf-8", bytes)),
        None if expired(&state, &record) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "The logs for the build request {} no longer exist",
                record.id
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "IIB is done processing the request and could not find logs.",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/builds/{id}/related_bundles", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The related bundles (JSON)"),
        (status = 400, description = "Wrong request type, or not finished", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such request, or not kept", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "Expired", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "Finished but the file is missing", body = crate::api::openapi::ErrorBody)))]
pub async fn related_bundles(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if state.api.s3.is_none() && state.api.dirs.related_bundles.is_none() {
        return Err(ApiError::not_found());
    }
    let record = record(&state, &id).await?;
    require_type(&record, RequestType::RegenerateBundle)?;
    require_final(&record, "related_bundles")?;
    if let Some(bucket) = &state.api.s3 {
        return from_s3(
            &state,
            bucket,
            &record,
            crate::artifacts::Artifact::RelatedBundles,
            "application/json",
        )
        .await;
    }
    let dir = state
        .api
        .dirs
        .related_bundles
        .clone()
        .expect("checked above");
    match read(dir.join(format!("{}_related_bundles.json", record.id))).await? {
        Some(bytes) => Ok(body("application/json", bytes)),
        None if expired(&state, &record) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "The related_bundles for the build request {} no longer exist",
                record.id
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            match record.params.organization() {
                Some(org) if !org.is_empty() => format!(
                    "IIB is done processing the request and cannot find related_bundles. Please \
                     make sure the iib_organization_customizations for organization {org} has \
                     related_bundles customization type set"
                ),
                _ => "IIB is done processing the request and could not find related_bundles."
                    .to_string(),
            },
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/builds/{id}/nested-bundles", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The nested bundles (JSON)"),
        (status = 400, description = "Wrong request type, or not finished", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such request, or not kept", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "Expired", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "Finished but the file is missing", body = crate::api::openapi::ErrorBody)))]
pub async fn nested_bundles(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = record(&state, &id).await?;
    require_type(&record, RequestType::RecursiveRelatedBundles)?;
    require_final(&record, "nested_bundles")?;
    if let Some(bucket) = &state.api.s3 {
        return from_s3(
            &state,
            bucket,
            &record,
            crate::artifacts::Artifact::RecursiveRelatedBundles,
            "application/json",
        )
        .await;
    }
    let Some(dir) = state.api.dirs.nested_bundles.clone() else {
        return Err(ApiError::not_found());
    };
    match read(dir.join(format!("{}_recursive_related_bundles.json", record.id))).await? {
        Some(bytes) => Ok(body("application/json", bytes)),
        None if expired(&state, &record) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "The nested_bundles for the build request {} no longer exist",
                record.id
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "IIB is done processing the request and could not find nested_bundles.",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/builds/{id}/deprecation-schema", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The deprecation schema as given (JSON)"),
        (status = 400, description = "Wrong request type, or not finished", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such request, or not kept", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "Expired", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "Finished but the file is missing", body = crate::api::openapi::ErrorBody)))]
pub async fn deprecation_schema(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = record(&state, &id).await?;
    require_type(&record, RequestType::AddDeprecations)?;
    let RequestParams::AddDeprecations(params) = &record.params else {
        unreachable!("the type was checked");
    };
    Ok(body(
        "application/json",
        params.deprecation_schema.clone().into_bytes(),
    ))
}
