//! POST bodies, checked exactly as IIB's `from_json` methods check them, in the same order and
//! with the same messages, into typed `RequestParams` plus the secrets for the worker. The keys
//! each body may hold are those its `bodies` struct declares, the same the OpenAPI document
//! shows.
//!
//! Pure code: the settings it needs come in [`Rules`]. Where IIB answers 500 on malformed
//! input (a non-string `distribution_scope`, non-string `build_tags`, unknown keys on
//! merge-index-image), we answer 400 with a clear message instead.

use crate::api::bodies::{
    AddBody, AddDeprecationsBody, BodyFields, CreateEmptyIndexBody, FbcOperationsBody,
    MergeIndexImageBody, RecursiveRelatedBundlesBody, RegenerateBundleBody, RmBody,
};
use crate::api::error::ApiError;
use crate::command_bus::RequestSubmission;
use iib_aggregates::params::*;
use iib_aggregates::{RequestParams, SecretKind};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub type Payload = Map<String, Value>;
type Result<T> = std::result::Result<T, ApiError>;

/// The settings IIB's validation reads.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `IIB_BINARY_IMAGE_CONFIG` is empty: `binary_image` is then required.
    pub binary_image_config_empty: bool,
    pub graph_mode_options: Vec<String>,
    pub graph_mode_index_allow_list: Vec<String>,
    /// A user is authenticated (IIB's `current_user.is_authenticated`; false with auth off).
    pub authenticated: bool,
}

/// A validated request: what to submit, and what `_get_user_queue` routes on.
#[derive(Clone)]
pub struct Validated {
    pub submission: RequestSubmission,
    /// Whether it overwrites an index (IIB's `SERIAL:` queues).
    pub serial: bool,
    /// The `from_index` IIB's queue map is keyed by.
    pub queue_index: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Python's truthiness of a JSON value.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Python's `repr` of a list of strings, as IIB's messages print them.
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// IIB's `validate_request_params`: required keys present, no unknown keys, required values
/// truthy; falsy optional values (other than booleans) are dropped.
pub fn validate_request_params(
    payload: &mut Payload,
    required: &[&str],
    optional: &[&str],
) -> Result<()> {
    let mut missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !payload.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(bad(format!(
            "Missing required parameter(s): {}",
            missing.join(", ")
        )));
    }
    let invalid: Vec<&str> = payload
        .keys()
        .map(String::as_str)
        .filter(|k| !required.contains(k) && !optional.contains(k))
        .collect();
    if !invalid.is_empty() {
        return Err(bad(format!(
            "The following parameters are invalid: {}",
            invalid.join(", ")
        )));
    }
    let mut required_sorted = required.to_vec();
    required_sorted.sort_unstable();
    for key in required_sorted {
        if !truthy(payload.get(key)) {
            return Err(bad(format!("\"{key}\" must be set")));
        }
    }
    for key in optional {
        if payload.contains_key(*key)
            && !matches!(payload.get(*key), Some(Value::Bool(_)))
            && !truthy(payload.get(*key))
        {
            payload.remove(*key);
        }
    }
    Ok(())
}

/// IIB's `Image.get_or_create` check: a pull spec has a tag or a digest (or is `scratch`).
fn pull_spec(spec: &str) -> Result<String> {
    if spec.contains('@') || spec.contains(':') || spec == "scratch" {
        Ok(spec.to_string())
    } else {
        Err(bad(format!(
            "Image {spec} should have a tag or a digest specified."
        )))
    }
}

/// A list of non-empty strings, or `message`.
fn string_list(value: Option<&Value>, message: &str) -> Result<Vec<String>> {
    match value {
        None => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(message)),
            })
            .collect(),
        Some(_) => Err(bad(message)),
    }
}

fn optional_string(payload: &Payload, key: &str, message: &str) -> Result<Option<String>> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(message)),
    }
}

fn string_map(value: &Value, not_object: &str) -> Result<BTreeMap<String, String>> {
    let Value::Object(map) = value else {
        return Err(bad(not_object));
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad(format!(
                "The key and value of \"{k}\" must be a string"
            ))),
        })
        .collect()
}

fn distribution_scope(value: Option<Value>) -> Result<Option<String>> {
    const MESSAGE: &str =
        "The \"distribution_scope\" value must be one of \"dev\", \"stage\", or \"prod\"";
    if !truthy(value.as_ref()) {
        return Ok(None);
    }
    match value {
        Some(Value::String(scope)) => {
            let scope = scope.to_lowercase();
            if ["prod", "stage", "dev"].contains(&scope.as_str()) {
                Ok(Some(scope))
            } else {
                Err(bad(MESSAGE))
            }
        }
        _ => Err(bad(MESSAGE)),
    }
}

fn build_tags(value: Option<&Value>) -> Result<Vec<String>> {
    string_list(
        value,
        "\"build_tags\" should be either an empty array or an array of non-empty strings",
    )
}

/// IIB's `validate_graph_mode`.
fn graph_mode(rules: &Rules, mode: Option<&Value>, index: Option<&str>) -> Result<Option<String>> {
    if !truthy(mode) {
        return Ok(None);
    }
    let mode = match mode {
        Some(Value::String(m)) => m.clone(),
        // IIB compares any value with its options; anything but a string is not one of them.
        Some(other) => other.to_string(),
        None => unreachable!("truthy"),
    };
    if !rules.graph_mode_options.contains(&mode) {
        return Err(bad(format!(
            "\"graph_update_mode\" must be set to one of these: {}",
            py_list(&rules.graph_mode_options)
        )));
    }
    let allowed = &rules.graph_mode_index_allow_list;
    let listed = index.is_some_and(|i| {
        allowed.iter().any(|a| a == i)
            || allowed
                .iter()
                .any(|a| a == i.split(':').next().unwrap_or(i))
    });
    if !listed {
        return Err(ApiError::forbidden(format!(
            "\"graph_update_mode\" can only be used on the following index image: {}",
            py_list(allowed)
        )));
    }
    Ok(Some(mode))
}

/// IIB's `validate_registry_auths`.
fn registry_auths(value: &Value) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(bad("\"registry_auths\" must be a dict"));
    };
    if map.len() != 1 || !map.contains_key("auths") {
        return Err(bad("\"registry_auths\" must contain single key \"auths\""));
    }
    let auths = match map.get("auths") {
        Some(Value::Object(auths)) if !auths.is_empty() => auths,
        _ => return Err(bad("\"registry_auths.auths\" must be a non-empty dict")),
    };
    for (registry, auth) in auths {
        let ok = matches!(auth, Value::Object(a) if a.len() == 1
            && matches!(a.get("auth"), Some(Value::String(_))));
        if !ok {
            return Err(bad(format!(
                "{registry} in registry_auths has auth value in incorrect format. \
                 See the API docs for details on the expected format"
            )));
        }
    }
    Ok(())
}

/// `binary_image`: a string, required unless `IIB_BINARY_IMAGE_CONFIG` can pick one.
fn binary_image(payload: &mut Payload, rules: &Rules) -> Result<Option<String>> {
    let binary_image = match payload.remove("binary_image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad("The \"binary_image\" value must be a string")),
    }
    .filter(|b| !b.is_empty());
    if binary_image.is_none() && rules.binary_image_config_empty {
        return Err(bad("The \"binary_image\" value must be a non-empty string"));
    }
    binary_image.map(|b| pull_spec(&b)).transpose()
}

/// What `RequestIndexImageMixin._from_json` leaves for the type-specific code.
struct IndexImageCommon {
    overwrite: bool,
    token: Option<String>,
    distribution_scope: Option<String>,
    deprecation_list: Vec<String>,
    add_arches: Vec<String>,
    binary_image: Option<String>,
    from_index: Option<String>,
    build_tags: Vec<String>,
}

/// IIB's `RequestIndexImageMixin._from_json`, for a body of type `B`.
///
/// IIB lists `output_fbc` for every type but only create-empty-index has it (the others fail
/// with a 500): here only create-empty-index's body has it.
fn index_image_common<B: BodyFields>(
    payload: &mut Payload,
    rules: &Rules,
) -> Result<IndexImageCommon> {
    validate_request_params(payload, B::REQUIRED, B::OPTIONAL)?;
    if !truthy(payload.get("from_index")) && !truthy(payload.get("add_arches")) {
        return Err(bad(
            "One of \"from_index\" or \"add_arches\" must be specified",
        ));
    }
    let overwrite = match payload.remove("overwrite_from_index") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(bad(
                "The \"overwrite_from_index\" parameter must be a boolean",
            ))
        }
    };
    let token = payload.remove("overwrite_from_index_token");
    let token = if truthy(token.as_ref()) {
        let Some(Value::String(token)) = token else {
            return Err(bad(
                "The \"overwrite_from_index_token\" parameter must be a string",
            ));
        };
        if !overwrite {
            return Err(bad(
                "The \"overwrite_from_index\" parameter is required when the \
                 \"overwrite_from_index_token\" parameter is used",
            ));
        }
        Some(token)
    } else {
        None
    };
    let distribution_scope = distribution_scope(payload.remove("distribution_scope"))?;
    // IIB de-duplicates through a set; we keep the first occurrence's order.
    let deprecation_list = match payload.remove("deprecation_list") {
        Some(value) if truthy(Some(&value)) => {
            let mut seen = BTreeSet::new();
            string_list(
                Some(&value),
                "\"deprecation_list\" should be either an empty array or an array of non-empty strings",
            )?
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .collect()
        }
        _ => vec![],
    };
    if rules.authenticated && overwrite && token.is_none() {
        return Err(ApiError::forbidden(
            "You must set \"overwrite_from_index_token\" to use \"overwrite_from_index\"",
        ));
    }
    let add_arches = match payload.remove("add_arches") {
        None => vec![],
        Some(value) => string_list(
            Some(&value),
            "Architectures should be specified as a non-empty array of strings",
        )?,
    };
    let binary_image = binary_image(payload, rules)?;
    let from_index = match payload.get("from_index") {
        None => None,
        Some(Value::String(s)) => Some(pull_spec(s)?),
        Some(_) => return Err(bad("\"from_index\" must be a string")),
    };
    let build_tags = build_tags(payload.get("build_tags"))?;
    Ok(IndexImageCommon {
        overwrite,
        token,
        distribution_scope,
        deprecation_list,
        add_arches,
        binary_image,
        from_index,
        build_tags,
    })
}

fn overwrite_secret(token: Option<String>) -> Vec<(SecretKind, String)> {
    token
        .map(|t| vec![(SecretKind::OverwriteFromIndexToken, t)])
        .unwrap_or_default()
}

/// `POST /builds/add` (IIB's `add_bundles` and `RequestAdd.from_json`).
pub fn add(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    // The API drops repeated bundles first, keeping the first of each.
    if let Some(Value::Array(bundles)) = payload.get_mut("bundles") {
        let mut seen = Vec::new();
        bundles.retain(|b| {
            if seen.contains(b) {
                false
            } else {
                seen.push(b.clone());
                true
            }
        });
    }
    for key in ["bundles", "deprecation_list"] {
        string_list(
            payload.get(key),
            &format!("\"{key}\" should be either an empty array or an array of non-empty strings"),
        )?;
    }
    if !(truthy(payload.get("bundles")) || truthy(payload.get("from_index"))) {
        return Err(bad(
            "\"from_index\" must be specified if no bundles are specified",
        ));
    }
    if truthy(payload.get("check_related_images")) && !truthy(payload.get("bundles")) {
        return Err(bad(
            "\"check_related_images\" must be specified only when bundles are specified",
        ));
    }
    let check_related_images = match payload.get("check_related_images") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(bad(
                "The \"check_related_images\" parameter must be a boolean",
            ))
        }
    };
    for key in ["cnr_token", "graph_update_mode", "organization"] {
        match payload.get(key) {
            None => continue,
            Some(Value::String(_)) => {}
            Some(_) => return Err(bad(format!("\"{key}\" must be a string"))),
        }
        if key == "graph_update_mode" {
            let index = payload
                .get("from_index")
                .and_then(Value::as_str)
                .map(str::to_string);
            graph_mode(rules, payload.get(key), index.as_deref())?;
        }
    }
    let force_backport = match payload.get("force_backport") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("\"force_backport\" must be a boolean")),
    };
    let cnr_token = payload.remove("cnr_token");
    payload.remove("force_backport");
    let common = index_image_common::<AddBody>(&mut payload, rules)?;
    let bundles = string_list(payload.get("bundles"), "")?
        .iter()
        .map(|b| pull_spec(b))
        .collect::<Result<Vec<_>>>()?;
    let deprecation_list = common
        .deprecation_list
        .iter()
        .map(|d| pull_spec(d))
        .collect::<Result<Vec<_>>>()?;
    let organization = optional_string(
        &payload,
        "organization",
        "\"organization\" must be a string",
    )?;
    let graph_update_mode = optional_string(&payload, "graph_update_mode", "")?;
    let mut secrets = overwrite_secret(common.token);
    if let Some(Value::String(token)) = cnr_token.filter(|t| truthy(Some(t))) {
        secrets.push((SecretKind::CnrToken, token));
    }
    Ok(Validated {
        serial: common.overwrite,
        queue_index: common.from_index.clone(),
        submission: RequestSubmission {
            params: RequestParams::Add(AddParams {
                bundles,
                from_index: common.from_index,
                binary_image: common.binary_image,
                add_arches: common.add_arches,
                organization,
                force_backport,
                overwrite_from_index: common.overwrite,
                distribution_scope: common.distribution_scope,
                deprecation_list,
                graph_update_mode,
                build_tags: common.build_tags,
                check_related_images,
            }),
            secrets,
            queue: None,
        },
    })
}

/// `POST /builds/rm`.
pub fn rm(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    let operators = match payload.get("operators") {
        None => vec![],
        value => string_list(
            value,
            "\"operators\" should be a non-empty array of strings",
        )?,
    };
    if operators.is_empty() {
        return Err(bad("\"operators\" should be a non-empty array of strings"));
    }
    let common = index_image_common::<RmBody>(&mut payload, rules)?;
    Ok(Validated {
        serial: common.overwrite,
        queue_index: common.from_index.clone(),
        submission: RequestSubmission {
            params: RequestParams::Rm(RmParams {
                operators,
                from_index: common.from_index,
                binary_image: common.binary_image,
                add_arches: common.add_arches,
                overwrite_from_index: common.overwrite,
                distribution_scope: common.distribution_scope,
                build_tags: common.build_tags,
            }),
            secrets: overwrite_secret(common.token),
            queue: None,
        },
    })
}

/// `POST /builds/regenerate-bundle` (and each item of the batch).
pub fn regenerate_bundle(mut payload: Payload, _rules: &Rules) -> Result<Validated> {
    validate_request_params(
        &mut payload,
        RegenerateBundleBody::REQUIRED,
        RegenerateBundleBody::OPTIONAL,
    )?;
    let bundle_replacements = match payload.get("bundle_replacements") {
        Some(value) if truthy(Some(value)) => string_map(
            value,
            "The value of \"bundle_replacements\" must be a JSON object",
        )?,
        _ => BTreeMap::new(),
    };
    let organization = match payload.get("organization") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) if truthy(Some(v)) => return Err(bad("\"organization\" must be a string")),
        _ => None,
    };
    let Some(Value::String(from_bundle_image)) = payload.get("from_bundle_image") else {
        return Err(bad("\"from_bundle_image\" must be a string"));
    };
    let from_bundle_image = from_bundle_image.clone();
    let secrets = registry_auths_secret(payload.remove("registry_auths"))?;
    Ok(Validated {
        serial: false,
        queue_index: None,
        submission: RequestSubmission {
            params: RequestParams::RegenerateBundle(RegenerateBundleParams {
                from_bundle_image: pull_spec(&from_bundle_image)?,
                organization,
                bundle_replacements,
            }),
            secrets,
            queue: None,
        },
    })
}

fn registry_auths_secret(value: Option<Value>) -> Result<Vec<(SecretKind, String)>> {
    match value {
        Some(auths) if truthy(Some(&auths)) => {
            registry_auths(&auths)?;
            Ok(vec![(SecretKind::RegistryAuths, auths.to_string())])
        }
        _ => Ok(vec![]),
    }
}

/// `POST /builds/merge-index-image`.
pub fn merge_index_image(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    // IIB hands unknown keys to its model and fails with a 500; we name them.
    let unknown: Vec<&str> = payload
        .keys()
        .map(String::as_str)
        .filter(|k| !MergeIndexImageBody::accepts(k))
        .collect();
    if !unknown.is_empty() {
        return Err(bad(format!(
            "The following parameters are invalid: {}",
            unknown.join(", ")
        )));
    }
    let deprecation_list = string_list(
        payload.remove("deprecation_list").as_ref(),
        "The \"deprecation_list\" value should be an empty array or an array of strings",
    )?
    .iter()
    .map(|d| pull_spec(d))
    .collect::<Result<Vec<_>>>()?;
    let source_from_index = match payload.get("source_from_index") {
        Some(Value::String(s)) if !s.is_empty() => pull_spec(s)?,
        _ => return Err(bad("The \"source_from_index\" value must be a string")),
    };
    let target_for_mode = payload
        .get("target_index")
        .and_then(Value::as_str)
        .map(str::to_string);
    let graph_update_mode = graph_mode(
        rules,
        payload.get("graph_update_mode"),
        target_for_mode.as_deref(),
    )?;
    let target_index = match payload.remove("target_index") {
        Some(value) if truthy(Some(&value)) => match value {
            Value::String(s) => Some(pull_spec(&s)?),
            _ => return Err(bad("The \"target_index\" value must be a string")),
        },
        _ => None,
    };
    let overwrite = match payload.remove("overwrite_target_index") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(bad(
                "The \"overwrite_target_index\" value must be a boolean",
            ))
        }
    };
    let token = payload.remove("overwrite_target_index_token");
    let token = if truthy(token.as_ref()) {
        let Some(Value::String(token)) = token else {
            return Err(bad(
                "The \"overwrite_target_index_token\" value must be a string",
            ));
        };
        if !overwrite {
            return Err(bad(
                "The \"overwrite_target_index\" value is required when the \
                 \"overwrite_target_index_token\" value is used",
            ));
        }
        Some(token)
    } else {
        if overwrite {
            return Err(bad(
                "The \"overwrite_target_index_token\" value is required when the \
                 \"overwrite_target_index\" value is set",
            ));
        }
        None
    };
    let binary_image = binary_image(&mut payload, rules)?;
    let distribution_scope = distribution_scope(payload.remove("distribution_scope"))?;
    let build_tags = build_tags(payload.get("build_tags"))?;
    let ignore_bundle_ocp_version = match payload.get("ignore_bundle_ocp_version") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(bad(
                "The \"ignore_bundle_ocp_version\" value must be a boolean",
            ))
        }
    };
    Ok(Validated {
        serial: overwrite,
        queue_index: None,
        submission: RequestSubmission {
            params: RequestParams::MergeIndexImage(MergeIndexImageParams {
                source_from_index,
                target_index,
                deprecation_list,
                binary_image,
                distribution_scope,
                graph_update_mode,
                ignore_bundle_ocp_version,
                overwrite_target_index: overwrite,
                build_tags,
            }),
            secrets: token
                .map(|t| vec![(SecretKind::OverwriteTargetIndexToken, t)])
                .unwrap_or_default(),
            queue: None,
        },
    })
}

/// `POST /builds/create-empty-index`.
pub fn create_empty_index(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    match payload.get("from_index") {
        None | Some(Value::Null) => return Err(bad("\"from_index\" must be a specified")),
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(bad("\"from_index\" must be a non-empty string")),
    }
    let output_fbc = match payload.get("output_fbc") {
        Some(Value::Bool(b)) => *b,
        Some(v) if truthy(Some(v)) => return Err(bad("\"output_fbc\" should be boolean")),
        _ => false,
    };
    let labels = match payload.get("labels") {
        None | Some(Value::Null) => None,
        Some(value) => Some(string_map(
            value,
            "The value of \"labels\" must be a JSON object",
        )?),
    };
    for arg in [
        "add_arches",
        "overwrite_from_index",
        "overwrite_from_index_token",
        "build_tags",
    ] {
        if payload.contains_key(arg) {
            return Err(bad(format!(
                "The \"{arg}\" arg is invalid for the create-empty-index endpoint."
            )));
        }
    }
    let common = index_image_common::<CreateEmptyIndexBody>(&mut payload, rules)?;
    Ok(Validated {
        serial: false,
        queue_index: None,
        submission: RequestSubmission {
            params: RequestParams::CreateEmptyIndex(CreateEmptyIndexParams {
                from_index: common.from_index.unwrap_or_default(),
                binary_image: common.binary_image,
                distribution_scope: common.distribution_scope,
                labels: labels.filter(|l| !l.is_empty()),
                output_fbc,
            }),
            secrets: vec![],
            queue: None,
        },
    })
}

/// `POST /builds/recursive-related-bundles`.
pub fn recursive_related_bundles(mut payload: Payload, _rules: &Rules) -> Result<Validated> {
    validate_request_params(
        &mut payload,
        RecursiveRelatedBundlesBody::REQUIRED,
        RecursiveRelatedBundlesBody::OPTIONAL,
    )?;
    let organization = match payload.get("organization") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) if truthy(Some(v)) => return Err(bad("\"organization\" must be a string")),
        _ => None,
    };
    let Some(Value::String(parent)) = payload.get("parent_bundle_image") else {
        return Err(bad("\"parent_bundle_image\" must be a string"));
    };
    let parent = parent.clone();
    let secrets = registry_auths_secret(payload.remove("registry_auths"))?;
    Ok(Validated {
        serial: false,
        queue_index: None,
        submission: RequestSubmission {
            params: RequestParams::RecursiveRelatedBundles(RecursiveRelatedBundlesParams {
                parent_bundle_image: pull_spec(&parent)?,
                organization,
            }),
            secrets,
            queue: None,
        },
    })
}

/// `POST /builds/fbc-operations`.
pub fn fbc_operations(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    let fragment = payload.get("fbc_fragment").cloned();
    let fragments = payload.get("fbc_fragments").cloned();
    let present = |v: &Option<Value>| !matches!(v, None | Some(Value::Null));
    if present(&fragment) && present(&fragments) {
        return Err(bad(
            "Cannot provide both \"fbc_fragment\" and \"fbc_fragments\" parameters",
        ));
    }
    let used_fbc_fragment = match fragment {
        Some(Value::String(single)) => {
            payload.remove("fbc_fragment");
            payload.insert(
                "fbc_fragments".into(),
                Value::Array(vec![Value::String(single)]),
            );
            true
        }
        Some(v) if !v.is_null() => return Err(bad("\"fbc_fragment\" must be a string")),
        _ if !present(&fragments) => {
            return Err(bad(
                "Either \"fbc_fragment\" or \"fbc_fragments\" must be provided",
            ))
        }
        _ => false,
    };
    // `fbc_fragment` is folded into `fbc_fragments` by now: one still there (a null) is refused,
    // and `fbc_fragments` is required.
    let optional: Vec<&str> = FbcOperationsBody::OPTIONAL
        .iter()
        .copied()
        .filter(|k| *k != "fbc_fragment")
        .collect();
    let required: Vec<&str> = FbcOperationsBody::REQUIRED
        .iter()
        .copied()
        .chain(["fbc_fragments"])
        .collect();
    validate_request_params(&mut payload, &required, &optional)?;
    let fbc_fragments = string_list(
        payload.get("fbc_fragments"),
        "\"fbc_fragments\" should be either an empty array or an array of non-empty strings",
    )?;
    let common = index_image_common::<FbcOperationsBody>(&mut payload, rules)?;
    let fbc_fragments = fbc_fragments
        .iter()
        .map(|f| pull_spec(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(Validated {
        serial: common.overwrite,
        queue_index: common.from_index.clone(),
        submission: RequestSubmission {
            params: RequestParams::FbcOperations(FbcOperationsParams {
                fbc_fragments,
                used_fbc_fragment,
                from_index: common.from_index.unwrap_or_default(),
                binary_image: common.binary_image,
                add_arches: common.add_arches,
                distribution_scope: common.distribution_scope,
                overwrite_from_index: common.overwrite,
                build_tags: common.build_tags,
            }),
            secrets: overwrite_secret(common.token),
            queue: None,
        },
    })
}

/// `POST /builds/add-deprecations`.
pub fn add_deprecations(mut payload: Payload, rules: &Rules) -> Result<Validated> {
    let operator_package = match payload.get("operator_package") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad("\"operator_package\" should be a non-empty string")),
    };
    let deprecation_schema = match payload.get("deprecation_schema") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad("\"deprecation_schema\" should be a non-empty string")),
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(&deprecation_schema).is_err() {
        return Err(bad("\"deprecation_schema\" string should be valid JSON"));
    }
    let common = index_image_common::<AddDeprecationsBody>(&mut payload, rules)?;
    Ok(Validated {
        serial: common.overwrite,
        queue_index: common.from_index.clone(),
        submission: RequestSubmission {
            params: RequestParams::AddDeprecations(AddDeprecationsParams {
                operator_package,
                deprecation_schema,
                from_index: common.from_index.unwrap_or_default(),
                binary_image: common.binary_image,
                distribution_scope: common.distribution_scope,
                overwrite_from_index: common.overwrite,
                build_tags: common.build_tags,
            }),
            secrets: overwrite_secret(common.token),
            queue: None,
        },
    })
}
