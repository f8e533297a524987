//! Creating requests: every `POST /builds/...` endpoint. Each checks the caller (IIB's
//! `login_required`), reads the JSON body as Flask does, validates it (`validate`), routes it
//! to a queue, submits it through the command bus and answers 201 with IIB's JSON, read back
//! from the read model.

use crate::api::error::{ApiError, ApiResult};
use crate::api::idempotency;
use crate::api::queues::user_queue;
use crate::api::request_id::RequestId;
use crate::api::validate::{self, Payload, Rules, Validated};
use crate::api::{base_url, json_response, ApiState};
use crate::command_bus::{CommandContext, CommandError, Submission};
use crate::projector::Projector;
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use std::net::SocketAddr;

/// A request body, read only once the caller is known (`Body::read`), so that an anonymous
/// or untrusted caller cannot make the service buffer megabytes first.
pub struct Body(axum::body::Body);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        request: axum::extract::Request,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(request.into_body()))
    }
}

impl Body {
    /// The whole body, within `IIB_MAX_BODY_BYTES`; a larger one is a JSON 413 (Werkzeug's
    /// words), refused before it is read when its `Content-Length` says so.
    pub async fn read(self, state: &ApiState, headers: &HeaderMap) -> ApiResult<Bytes> {
        use http_body_util::BodyExt;
        let limit = state.api.max_body_bytes;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The data value transmitted exceeds the capacity limit.",
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match http_body_util::Limited::new(self.0, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(ApiError::bad_request(format!(
                "The request body could not be read: {e}"
            ))),
        }
    }
}

/// The JSON body of a call, as Flask's `request.get_json()` reads it.
/// Its values are then checked against the API's limits (`limits`), before anything else.
pub(crate) fn json_body(state: &ApiState, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let mimetype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_json = mimetype == "application/json"
        || (mimetype.starts_with("application/") && mimetype.ends_with("+json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Did not attempt to load JSON data because the request Content-Type was not \
             'application/json'.",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "The browser (or proxy) sent a request that this server could not understand.",
        )
    })?;
    state.api.limits.check(&value)?;
    Ok(value)
}

fn object(value: Value) -> ApiResult<Payload> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request(
            "The input data must be a JSON object",
        )),
    }
}

/// The longest user name believed from the proxy's header.
const MAX_USER_BYTES: usize = 255;

/// Who calls, checked as IIB's `login_required` does.
pub struct Caller {
    pub user: Option<String>,
    pub request_id: Option<String>,
}

/// Where a call comes from: the peer address and the call's request id.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    pub peer: Option<SocketAddr>,
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for CallInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        })
    }
}

/// The caller of a write, checked as IIB's `login_required` does.
pub(crate) fn caller(state: &ApiState, call: &CallInfo, headers: &HeaderMap) -> ApiResult<Caller> {
    let user = state.api.auth.user(call.peer, headers);
    if let Some(name) = &user {
        // The user is written into every event and row of its requests: keep it a name.
        if name.len() > MAX_USER_BYTES || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "The user in {} must be at most {MAX_USER_BYTES} bytes without control characters",
                state.api.auth.user_header
            )));
        }
    }
    state.api.auth.require_login(&user)?;
    Ok(Caller {
        user,
        request_id: call.request_id.clone(),
    })
}

fn rules(state: &ApiState, caller: &Caller) -> Rules {
    Rules {
        authenticated: caller.user.is_some(),
        ..state.api.rules.clone()
    }
}

/// Routes each request to its queue, submits them as one batch, and answers with their JSON.
async fn submit(
    state: &ApiState,
    headers: &HeaderMap,
    caller: &Caller,
    annotations: Option<Map<String, Value>>,
    requests: Vec<Validated>,
    body: &Bytes,
    as_list: bool,
) -> ApiResult<Response> {
    let key = idempotency::key(headers)?.map(|key| idempotency::record(key, caller, body));
    if let Some(key) = &key {
        if let Some(existing) = idempotency::existing(state, key).await? {
            return answer(state, headers, &existing, as_list).await;
        }
    }
    let submissions = requests
        .into_iter()
        .map(|v| {
            let mut submission = v.submission;
            submission.queue = user_queue(
                &state.api.user_to_queue,
                caller.user.as_deref(),
                v.serial,
                v.queue_index.as_deref(),
            );
            submission
        })
        .collect::<Vec<_>>();
    let labels: Vec<crate::metrics::RequestLabels> = submissions
        .iter()
        .map(|r| crate::metrics::RequestLabels::new(r.params.request_type(), r.queue.as_deref()))
        .collect();
    let context = CommandContext {
        user: caller.user.clone(),
        worker: None,
        correlation_id: caller.request_id.clone(),
    };
    let submitted = state
        .bus
        .submit_keyed(
            Submission {
                user: caller.user.clone(),
                annotations,
                requests: submissions,
            },
            &context,
            key.clone(),
        )
        .await;
    let submitted = match (submitted, &key) {
        (Ok(submitted), _) => submitted,
        // A call with the same key committed first: answer with what it created.
        (Err(CommandError::Store(StoreError::KeyTaken)), Some(key)) => {
            return match idempotency::existing(state, key).await? {
                Some(existing) => answer(state, headers, &existing, as_list).await,
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "A request with this Idempotency-Key is being submitted; retry in a moment",
                )),
            };
        }
        (Err(e), _) => return Err(e.into()),
    };
    let ids: Vec<u64> = submitted.requests.iter().map(|id| id.get()).collect();
    tracing::info!(batch = submitted.batch.get(), requests = ?ids, "submitted");
    labels.iter().for_each(crate::metrics::request_submitted);
    answer(state, headers, &ids, as_list).await
}

/// IIB answers a new request with its verbose JSON (a list of them for batch endpoints).
async fn answer(
    state: &ApiState,
    headers: &HeaderMap,
    ids: &[u64],
    as_list: bool,
) -> ApiResult<Response> {
    Projector::new(state.store.clone()).catch_up().await?;
    let base = base_url(state, headers);
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        let stored = state.store.request_json(*id, true).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the new request is not in the read model",
            )
        })?;
        items.push(state.api.linked_request(&stored, &base, true)?);
    }
    let body = if as_list {
        Value::Array(items)
    } else {
        items.pop().unwrap_or(Value::Null)
    };
    Ok(json_response(StatusCode::CREATED, &body))
}

type Validator = fn(Payload, &Rules) -> ApiResult<Validated>;

async fn single(
    state: ApiState,
    call: CallInfo,
    headers: HeaderMap,
    body: Body,
    validator: Validator,
) -> ApiResult<Response> {
    let caller = caller(&state, &call, &headers)?;
    let body = body.read(&state, &headers).await?;
    let payload = object(json_body(&state, &headers, &body)?)?;
    let validated = validator(payload, &rules(&state, &caller))?;
    submit(
        &state,
        &headers,
        &caller,
        None,
        vec![validated],
        &body,
        false,
    )
    .await
}

macro_rules! single_endpoint {
    ($name:ident, $validator:path, $route:literal, $body:ty) => {
        #[utoipa::path(post, path = $route, request_body = $body,
            params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a submission safely")),
            responses(
                (status = 201, description = "The new request", body = crate::api::openapi::BuildRequest),
                (status = 400, description = "Invalid input (IIB's message)", body = crate::api::openapi::ErrorBody), (status = 401, description = "No user", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not allowed", body = crate::api::openapi::ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody), (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody), (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
        pub async fn $name(
            State(state): State<ApiState>,
            call: CallInfo,
            headers: HeaderMap,
            body: Body,
        ) -> ApiResult<Response> {
            single(state, call, headers, body, $validator).await
        }
    };
}

single_endpoint!(
    add,
    validate::add,
    "/api/v1/builds/add",
    crate::api::bodies::AddBody
);
single_endpoint!(
    rm,
    validate::rm,
    "/api/v1/builds/rm",
    crate::api::bodies::RmBody
);
single_endpoint!(
    regenerate_bundle,
    validate::regenerate_bundle,
    "/api/v1/builds/regenerate-bundle",
    crate::api::bodies::RegenerateBundleBody
);
single_endpoint!(
    merge_index_image,
    validate::merge_index_image,
    "/api/v1/builds/merge-index-image",
    crate::api::bodies::MergeIndexImageBody
);
single_endpoint!(
    create_empty_index,
    validate::create_empty_index,
    "/api/v1/builds/create-empty-index",
    crate::api::bodies::CreateEmptyIndexBody
);
single_endpoint!(
    recursive_related_bundles,
    validate::recursive_related_bundles,
    "/api/v1/builds/recursive-related-bundles",
    crate::api::bodies::RecursiveRelatedBundlesBody
);
single_endpoint!(
    fbc_operations,
    validate::fbc_operations,
    "/api/v1/builds/fbc-operations",
    crate::api::bodies::FbcOperationsBody
);
single_endpoint!(
    add_deprecations,
    validate::add_deprecations,
    "/api/v1/builds/add-deprecations",
    crate::api::bodies::AddDeprecationsBody
);

/// A batch body: its build requests and annotations.
type BatchBody = (Vec<Value>, Option<Map<String, Value>>);

/// IIB's `Batch.validate_batch_request_params`.
fn batch_payload(value: Value) -> ApiResult<BatchBody> {
    let invalid = || {
        ApiError::bad_request(
            "The input data must be a JSON object and the \"build_requests\" value must be a \
             non-empty array",
        )
    };
    let Value::Object(mut payload) = value else {
        return Err(invalid());
    };
    let requests = match payload.remove("build_requests") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(invalid()),
    };
    let annotations = match payload.remove("annotations") {
        None => None,
        Some(Value::Object(a)) => Some(a),
        Some(_) => {
            return Err(ApiError::bad_request(
                "The value of \"annotations\" must be a JSON object",
            ))
        }
    };
    Ok((requests, annotations))
}

/// IIB's suffix on a batch item's validation error; a 403 keeps its own text.
fn in_batch(error: ApiError, items: &[Value], item: &Value) -> ApiError {
    if error.status != StatusCode::BAD_REQUEST {
        return error;
    }
    let index = items.iter().position(|i| i == item).unwrap_or(0);
    ApiError::bad_request(format!(
        "{}. This occurred on the build request in index {index}.",
        error.message.trim_end_matches('.')
    ))
}

async fn batch(
    state: ApiState,
    call: CallInfo,
    headers: HeaderMap,
    body: Body,
    validate_item: fn(Value, &Rules) -> ApiResult<Validated>,
) -> ApiResult<Response> {
    let caller = caller(&state, &call, &headers)?;
    let body = body.read(&state, &headers).await?;
    let (items, annotations) = batch_payload(json_body(&state, &headers, &body)?)?;
    state.api.limits.check_batch(items.len())?;
    let rules = rules(&state, &caller);
    let mut validated = Vec::with_capacity(items.len());
    for item in &items {
        validated.push(validate_item(item.clone(), &rules).map_err(|e| in_batch(e, &items, item))?);
    }
    submit(
        &state,
        &headers,
        &caller,
        annotations,
        validated,
        &body,
        true,
    )
    .await
}

fn add_or_rm(item: Value, rules: &Rules) -> ApiResult<Validated> {
    let not_add_rm = || ApiError::bad_request("Build request is not a valid Add/Rm request.");
    let Value::Object(payload) = item else {
        return Err(not_add_rm());
    };
    if validate::truthy(payload.get("operators")) {
        validate::rm(payload, rules)
    } else if validate::truthy(payload.get("bundles")) {
        validate::add(payload, rules)
    } else {
        Err(not_add_rm())
    }
}

fn regenerate_item(item: Value, rules: &Rules) -> ApiResult<Validated> {
    validate::regenerate_bundle(object(item)?, rules)
}

#[utoipa::path(post, path = "/api/v1/builds/add-rm-batch", request_body = crate::api::bodies::AddRmBatchBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a submission safely")),
    responses(
        (status = 201, description = "The new requests, one batch", body = Vec<crate::api::openapi::BuildRequest>),
        (status = 400, description = "Invalid input (IIB's message)", body = crate::api::openapi::ErrorBody), (status = 401, description = "No user", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not allowed", body = crate::api::openapi::ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody), (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody), (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn add_rm_batch(
    State(state): State<ApiState>,
    call: CallInfo,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    batch(state, call, headers, body, add_or_rm).await
}

#[utoipa::path(post, path = "/api/v1/builds/regenerate-bundle-batch", request_body = crate::api::bodies::RegenerateBundleBatchBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a submission safely")),
    responses(
        (status = 201, description = "The new requests, one batch", body = Vec<crate::api::openapi::BuildRequest>),
        (status = 400, description = "Invalid input (IIB's message)", body = crate::api::openapi::ErrorBody), (status = 401, description = "No user", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not allowed", body = crate::api::openapi::ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody), (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody), (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn regenerate_bundle_batch(
    State(state): State<ApiState>,
    call: CallInfo,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    batch(state, call, headers, body, regenerate_item).await
}
