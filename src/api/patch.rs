//! `PATCH /builds/<id>`: IIB's update endpoint for its workers (users in
//! `IIB_WORKER_USERNAMES`). The body's keys are checked in the order sent, as IIB checks them;
//! the facts and the state change become one command, so either all of it applies or none.

use crate::api::error::{ApiError, ApiResult};
use crate::api::submit::{caller, json_body, Body, CallInfo};
use crate::api::{base_url, ApiState};
use crate::command_bus::CommandContext;
use crate::projector::Projector;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use iib_aggregates::{
    Actor, BuildFacts, BuildRequestCommand, RequestId, RequestState, RequestType,
};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;

/// A JSON object with its keys in the order they were sent.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    // A repeated key keeps its first place and its last value, as Python's dict.
                    match entries.iter_mut().find(|(k, _)| *k == key) {
                        Some(entry) => entry.1 = value,
                        None => entries.push((key, value)),
                    }
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

const INDEX_IMAGE_KEYS: [&str; 9] = [
    "binary_image",
    "binary_image_resolved",
    "distribution_scope",
    "from_bundle_image_resolved",
    "from_index_resolved",
    "index_image",
    "index_image_resolved",
    "internal_index_image_copy",
    "internal_index_image_copy_resolved",
];

/// IIB's `get_mutable_keys`.
fn mutable_keys(request_type: RequestType) -> Vec<&'static str> {
    let mut keys = vec!["arches", "state", "state_reason"];
    match request_type {
        RequestType::Add => {
            keys.extend(INDEX_IMAGE_KEYS);
            keys.extend(["bundles", "bundle_mapping", "omps_operator_version"]);
        }
        RequestType::Rm | RequestType::AddDeprecations => keys.extend(INDEX_IMAGE_KEYS),
        RequestType::FbcOperations => {
            keys.extend(INDEX_IMAGE_KEYS);
            keys.extend([
                "fbc_fragments",
                "fbc_fragments_resolved",
                "fbc_fragment",
                "fbc_fragment_resolved",
            ]);
        }
        RequestType::CreateEmptyIndex => keys.extend(INDEX_IMAGE_KEYS.iter().filter(|k| {
            !matches!(
                **k,
                "from_bundle_image_resolved"
                    | "internal_index_image_copy"
                    | "internal_index_image_copy_resolved"
            )
        })),
        RequestType::RegenerateBundle => keys.extend([
            "bundle_image",
            "from_bundle_image_resolved",
            "bundle_replacements",
        ]),
        RequestType::MergeIndexImage => keys.extend([
            "binary_image",
            "binary_image_resolved",
            "distribution_scope",
            "index_image",
            "source_from_index_resolved",
            "target_index_resolved",
        ]),
        RequestType::RecursiveRelatedBundles => keys.push("parent_bundle_image_resolved"),
    }
    keys
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn pull_spec(spec: &str) -> ApiResult<String> {
    if spec.contains('@') || spec.contains(':') || spec == "scratch" {
        Ok(spec.to_string())
    } else {
        Err(bad(format!(
            "Image {spec} should have a tag or a digest specified."
        )))
    }
}

/// IIB's per-key checks (step 8 of its `patch_request`), in the order the keys came.
fn check_value(key: &str, value: &Value) -> ApiResult<()> {
    let strings = |v: &Value| v.as_array().map(|a| a.iter().all(Value::is_string));
    match key {
        "arches" => match value.as_array() {
            Some(items)
                if items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
            {
                Ok(())
            }
            _ => Err(bad(
                "Architectures should be specified as a non-empty array of strings",
            )),
        },
        "bundle_mapping" => match value.as_object() {
            Some(map) if map.values().all(|v| strings(v) == Some(true)) => Ok(()),
            _ => Err(bad(
                "The \"bundle_mapping\" key must be an object with the values as lists of strings",
            )),
        },
        "fbc_fragments_resolved" => match strings(value) {
            Some(true) => Ok(()),
            _ => Err(bad(format!(
                "The value for \"{key}\" must be a list of non-empty strings"
            ))),
        },
        "bundle_replacements" => match value.as_object() {
            Some(map) if map.values().all(Value::is_string) => Ok(()),
            _ => Err(bad(
                "The \"bundle_replacements\" key must be a dictionary object mapping from strings \
                 to strings",
            )),
        },
        _ => match value.as_str() {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(bad(format!(
                "The value for \"{key}\" must be a non-empty string"
            ))),
        },
    }
}

/// The facts a checked body records.
fn facts(
    request_type: RequestType,
    body: &BTreeMap<&str, &Value>,
) -> ApiResult<Option<BuildFacts>> {
    let mut facts = BuildFacts::default();
    let text = |key: &str| body.get(key).and_then(|v| v.as_str());
    let image = |key: &str| text(key).map(pull_spec).transpose();
    facts.binary_image = image("binary_image")?;
    facts.binary_image_resolved = image("binary_image_resolved")?;
    facts.bundle_image = image("bundle_image")?;
    facts.from_bundle_image_resolved = if request_type == RequestType::RegenerateBundle {
        image("from_bundle_image_resolved")?
    } else {
        // IIB accepts the key for index image types and ignores it.
        image("from_bundle_image_resolved")?;
        None
    };
    facts.from_index_resolved = image("from_index_resolved")?;
    image("fbc_fragment")?;
    facts.fbc_fragment_resolved = image("fbc_fragment_resolved")?;
    facts.index_image = image("index_image")?;
    facts.index_image_resolved = image("index_image_resolved")?;
    facts.internal_index_image_copy = image("internal_index_image_copy")?;
    facts.internal_index_image_copy_resolved = image("internal_index_image_copy_resolved")?;
    facts.parent_bundle_image_resolved = image("parent_bundle_image_resolved")?;
    facts.source_from_index_resolved = image("source_from_index_resolved")?;
    facts.target_index_resolved = image("target_index_resolved")?;
    if let Some(arches) = body.get("arches").and_then(|v| v.as_array()) {
        facts.arches = arches
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
    }
    if let Some(mapping) = body.get("bundle_mapping").and_then(|v| v.as_object()) {
        let mut checked = BTreeMap::new();
        for (operator, bundles) in mapping {
            let bundles = bundles
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(pull_spec)
                .collect::<ApiResult<Vec<_>>>()?;
            checked.insert(operator.clone(), bundles);
        }
        facts.bundle_mapping = Some(checked);
    }
    // IIB stores the distribution scope a worker sends as it is.
    facts.distribution_scope = text("distribution_scope").map(str::to_string);
    if let Some(resolved) = body
        .get("fbc_fragments_resolved")
        .and_then(|v| v.as_array())
    {
        facts.fbc_fragments_resolved = Some(
            resolved
                .iter()
                .filter_map(Value::as_str)
                .map(pull_spec)
                .collect::<ApiResult<Vec<_>>>()?,
        );
    }
    if let Some(omps) = text("omps_operator_version") {
        // IIB keeps the text and fails every later read when it is not JSON; we refuse it.
        facts.omps_operator_version =
            Some(serde_json::from_str(omps).map_err(|_| {
                bad("The value for \"omps_operator_version\" must be a JSON document")
            })?);
    }
    Ok((!facts.is_empty()).then_some(facts))
}

#[utoipa::path(patch, path = "/api/v1/builds/{id}", params(("id" = u64, Path, description = "Request id")),
    request_body = crate::api::bodies::PatchBody,
    responses(
        (status = 200, description = "The updated request", body = crate::api::openapi::BuildRequest),
        (status = 404, description = "No such request", body = crate::api::openapi::ErrorBody),
        (status = 400, description = "Invalid input (IIB's message)", body = crate::api::openapi::ErrorBody), (status = 401, description = "No user", body = crate::api::openapi::ErrorBody), (status = 403, description = "Not allowed", body = crate::api::openapi::ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody), (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody), (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn patch(
    State(state): State<ApiState>,
    call: CallInfo,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let id = id
        .parse::<u64>()
        .ok()
        .and_then(RequestId::new)
        .ok_or_else(ApiError::not_found)?;
    let who = caller(&state, &call, &headers)?;
    state.api.auth.require_worker(&who.user)?;
    let body = body.read(&state, &headers).await?;
    if !json_body(&state, &headers, &body)?.is_object() {
        return Err(bad("The input data must be a JSON object"));
    }
    let Ordered(entries) =
        serde_json::from_slice(&body).map_err(|_| bad("The input data must be a JSON object"))?;
    if entries.is_empty() {
        return Err(bad(
            "At least one key must be specified to update the request",
        ));
    }
    let request = state.bus.request(id).await?;
    let request_type = request.request_type().ok_or_else(ApiError::not_found)?;
    let allowed = mutable_keys(request_type);
    let mut not_allowed: Vec<&str> = entries
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k))
        .collect();
    if !not_allowed.is_empty() {
        not_allowed.sort_unstable();
        return Err(bad(format!(
            "The following keys are not allowed: {}",
            not_allowed.join(", ")
        )));
    }
    for (key, value) in &entries {
        check_value(key, value)?;
    }
    let body: BTreeMap<&str, &Value> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new_state = match (body.get("state"), body.get("state_reason")) {
        (Some(_), None) => {
            return Err(bad(
                "The \"state_reason\" key is required when \"state\" is supplied",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "The \"state\" key is required when \"state_reason\" is supplied",
            ))
        }
        (Some(state), Some(reason)) => {
            let state = state.as_str().unwrap_or_default();
            let state: RequestState = state.parse().map_err(ApiError::bad_request)?;
            Some((state, reason.as_str().unwrap_or_default().to_string()))
        }
        (None, None) => None,
    };
    let facts = facts(request_type, &body)?;
    if facts.is_some() || new_state.is_some() {
        let context = CommandContext {
            user: who.user.clone(),
            worker: None,
            correlation_id: who.request_id.clone(),
        };
        state
            .bus
            .execute(
                id,
                BuildRequestCommand::Update {
                    actor: Actor::Api { user: who.user },
                    facts,
                    state: new_state,
                },
                &context,
            )
            .await?;
    }
    Projector::new(state.store.clone()).catch_up().await?;
    let stored = state
        .store
        .request_json(id.get(), true)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(state
        .api
        .request_answer(&stored, &base_url(&state, &headers), true, StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::bodies::{BodyFields, PatchBody};
    use serde_json::json;
    use std::collections::BTreeSet;
    use utoipa::PartialSchema;

    #[test]
    fn the_patch_schema_documents_exactly_the_keys_some_request_type_lets_workers_set() {
        let settable: BTreeSet<&str> = RequestType::ALL
            .into_iter()
            .flat_map(mutable_keys)
            .collect();
        let documented: BTreeSet<&str> = PatchBody::REQUIRED
            .iter()
            .chain(PatchBody::OPTIONAL)
            .copied()
            .collect();
        assert_eq!(settable, documented);
    }

    #[test]
    fn each_patch_field_takes_a_value_of_its_documented_type_and_refuses_a_number() {
        let schema = serde_json::to_value(PatchBody::schema()).unwrap();
        let has = |types: &Value, t: &str| {
            types == t || types.as_array().is_some_and(|a| a.contains(&json!(t)))
        };
        for (key, property) in schema["properties"].as_object().unwrap() {
            let image = json!("registry.example.com/image:v1");
            let value = if has(&property["type"], "array") {
                json!([image])
            } else if has(&property["type"], "object") {
                let inner = &property["additionalProperties"]["type"];
                if has(inner, "array") {
                    json!({"operator": [image]})
                } else {
                    json!({"operator": image})
                }
            } else {
                image
            };
            if let Err(e) = check_value(key, &value) {
                panic!("{key}: {value} is refused: {}", e.message);
            }
            assert!(check_value(key, &json!(1)).is_err(), "{key} takes a number");
        }
    }
}
