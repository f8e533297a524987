//! IIB's request JSON, one serializer per request type (IIB's `to_json` in its models).
//!
//! Keys come out in alphabetical order, as Flask's `jsonify` sorts them. Keys that depend on
//! how the service is reached or configured (`logs`, `related_bundles`, `nested_bundles`,
//! `deprecation_schema_url`: absolute URLs with an expiration) are not rendered here: the API
//! adds them when it answers, from [`link_keys`].

use crate::request_view::RequestRecord;
use crate::timestamp::iib_timestamp;
use iib_aggregates::params::*;
use iib_aggregates::{BuildFacts, RequestParams, RequestType};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

pub type Json = Map<String, Value>;

/// The verbose form (`GET /builds/<id>`), without link keys.
pub fn verbose(record: &RequestRecord) -> Json {
    let mut rv = base(record);
    let facts = &record.facts;
    match &record.params {
        RequestParams::Add(p) => {
            index_image_common(
                &mut rv,
                facts,
                p.binary_image.as_deref(),
                p.from_index.as_deref(),
            );
            put_scope_and_tags(&mut rv, facts, &p.distribution_scope, &p.build_tags);
            rv.insert("organization".into(), json!(p.organization));
            rv.insert(
                "omps_operator_version".into(),
                facts
                    .omps_operator_version
                    .clone()
                    .unwrap_or_else(|| json!({})),
            );
            rv.insert("graph_update_mode".into(), json!(p.graph_update_mode));
            rv.insert("check_related_images".into(), json!(p.check_related_images));
            rv.insert("bundles".into(), json!(p.bundles));
            rv.insert(
                "bundle_mapping".into(),
                json!(facts.bundle_mapping.clone().unwrap_or_default()),
            );
            rv.insert("deprecation_list".into(), json!(p.deprecation_list));
        }
        RequestParams::Rm(p) => {
            index_image_common(
                &mut rv,
                facts,
                p.binary_image.as_deref(),
                p.from_index.as_deref(),
            );
            put_scope_and_tags(&mut rv, facts, &p.distribution_scope, &p.build_tags);
            rv.insert("removed_operators".into(), json!(p.operators));
        }
        RequestParams::RegenerateBundle(p) => {
            rv.insert("bundle_image".into(), json!(facts.bundle_image));
            rv.insert("from_bundle_image".into(), json!(p.from_bundle_image));
            rv.insert(
                "from_bundle_image_resolved".into(),
                json!(facts.from_bundle_image_resolved),
            );
            rv.insert("organization".into(), json!(p.organization));
            rv.insert("bundle_replacements".into(), json!(p.bundle_replacements));
        }
        RequestParams::MergeIndexImage(p) => merge_index_image(&mut rv, facts, p),
        RequestParams::CreateEmptyIndex(p) => {
            index_image_common(
                &mut rv,
                facts,
                p.binary_image.as_deref(),
                Some(&p.from_index),
            );
            put_scope_and_tags(&mut rv, facts, &p.distribution_scope, &[]);
            for key in [
                "bundles",
                "bundle_mapping",
                "organization",
                "deprecation_list",
                "removed_operators",
                "build_tags",
                "internal_index_image_copy",
                "internal_index_image_copy_resolved",
            ] {
                rv.remove(key);
            }
            let labels = p.labels.as_ref().filter(|l| !l.is_empty());
            rv.insert("labels".into(), json!(labels));
        }
        RequestParams::RecursiveRelatedBundles(p) => {
            rv.insert("parent_bundle_image".into(), json!(p.parent_bundle_image));
            rv.insert(
                "parent_bundle_image_resolved".into(),
                json!(facts.parent_bundle_image_resolved),
            );
            rv.insert("organization".into(), json!(p.organization));
        }
        RequestParams::FbcOperations(p) => fbc_operations(&mut rv, facts, p),
        RequestParams::AddDeprecations(p) => {
            index_image_common(
                &mut rv,
                facts,
                p.binary_image.as_deref(),
                Some(&p.from_index),
            );
            put_scope_and_tags(&mut rv, facts, &None, &p.build_tags);
            for key in [
                "bundles",
                "bundle_mapping",
                "deprecation_list",
                "distribution_scope",
                "organization",
                "removed_operators",
            ] {
                rv.remove(key);
            }
            rv.insert("operator_package".into(), json!(p.operator_package));
        }
    }
    rv
}

/// The non-verbose form (`GET /builds`, build.state messages): IIB drops exactly these keys.
pub fn summary(verbose: &Json) -> Json {
    let mut rv = verbose.clone();
    for key in ["batch_annotations", "state_history", "logs"] {
        rv.remove(key);
    }
    rv
}

/// The link keys IIB adds to a request of this type: `(key, always)`; keys that are not
/// always present depend on where request data is kept (logs and related bundles).
pub fn link_keys(request_type: RequestType) -> &'static [(&'static str, bool)] {
    match request_type {
        RequestType::RegenerateBundle => &[("logs", false), ("related_bundles", false)],
        RequestType::RecursiveRelatedBundles => &[("logs", false), ("nested_bundles", true)],
        RequestType::AddDeprecations => &[("logs", false), ("deprecation_schema_url", true)],
        _ => &[("logs", false)],
    }
}

fn base(record: &RequestRecord) -> Json {
    let current = record.current();
    let history: Vec<Value> = record
        .history
        .iter()
        .rev()
        .map(|entry| {
            json!({
                "state": entry.state,
                "state_reason": entry.state_reason,
                "updated": iib_timestamp(&entry.updated),
            })
        })
        .collect();
    let mut rv = Json::new();
    rv.insert("id".into(), json!(record.id));
    rv.insert("arches".into(), json!(record.facts.arches));
    rv.insert("batch".into(), json!(record.batch));
    rv.insert("request_type".into(), json!(record.params.request_type()));
    rv.insert("user".into(), json!(record.user));
    rv.insert("batch_annotations".into(), json!(record.batch_annotations));
    rv.insert("state_history".into(), Value::Array(history));
    rv.insert("state".into(), json!(current.state));
    rv.insert("state_reason".into(), json!(current.state_reason));
    rv.insert("updated".into(), json!(iib_timestamp(&current.updated)));
    rv
}

/// IIB's `get_common_index_image_json`.
fn index_image_common(
    rv: &mut Json,
    facts: &BuildFacts,
    binary_image: Option<&str>,
    from_index: Option<&str>,
) {
    rv.insert(
        "binary_image".into(),
        json!(facts.binary_image.as_deref().or(binary_image)),
    );
    rv.insert(
        "binary_image_resolved".into(),
        json!(facts.binary_image_resolved),
    );
    rv.insert("bundle_mapping".into(), json!({}));
    rv.insert("bundles".into(), json!([]));
    rv.insert("deprecation_list".into(), json!([]));
    rv.insert("from_index".into(), json!(from_index));
    rv.insert(
        "from_index_resolved".into(),
        json!(facts.from_index_resolved),
    );
    rv.insert("index_image".into(), json!(facts.index_image));
    rv.insert(
        "index_image_resolved".into(),
        json!(facts.index_image_resolved),
    );
    rv.insert(
        "internal_index_image_copy".into(),
        json!(facts.internal_index_image_copy),
    );
    rv.insert(
        "internal_index_image_copy_resolved".into(),
        json!(facts.internal_index_image_copy_resolved),
    );
    rv.insert("organization".into(), Value::Null);
    rv.insert("removed_operators".into(), json!([]));
}

fn put_scope_and_tags(
    rv: &mut Json,
    facts: &BuildFacts,
    requested_scope: &Option<String>,
    build_tags: &[String],
) {
    rv.insert(
        "distribution_scope".into(),
        json!(facts
            .distribution_scope
            .as_ref()
            .or(requested_scope.as_ref())),
    );
    rv.insert("build_tags".into(), sorted_unique(build_tags));
}

fn sorted_unique(items: &[String]) -> Value {
    json!(items.iter().collect::<BTreeSet<_>>())
}

fn merge_index_image(rv: &mut Json, facts: &BuildFacts, p: &MergeIndexImageParams) {
    rv.insert(
        "binary_image".into(),
        json!(facts.binary_image.as_ref().or(p.binary_image.as_ref())),
    );
    rv.insert(
        "binary_image_resolved".into(),
        json!(facts.binary_image_resolved),
    );
    rv.insert("deprecation_list".into(), json!(p.deprecation_list));
    rv.insert("graph_update_mode".into(), json!(p.graph_update_mode));
    rv.insert(
        "ignore_bundle_ocp_version".into(),
        json!(p.ignore_bundle_ocp_version),
    );
    rv.insert("index_image".into(), json!(facts.index_image));
    rv.insert("source_from_index".into(), json!(p.source_from_index));
    rv.insert(
        "source_from_index_resolved".into(),
        json!(facts.source_from_index_resolved),
    );
    rv.insert("target_index".into(), json!(p.target_index));
    rv.insert(
        "target_index_resolved".into(),
        json!(facts.target_index_resolved),
    );
    put_scope_and_tags(rv, facts, &p.distribution_scope, &p.build_tags);
}

fn fbc_operations(rv: &mut Json, facts: &BuildFacts, p: &FbcOperationsParams) {
    index_image_common(rv, facts, p.binary_image.as_deref(), Some(&p.from_index));
    put_scope_and_tags(rv, facts, &p.distribution_scope, &p.build_tags);
    let resolved = facts.fbc_fragments_resolved.clone().unwrap_or_default();
    if p.used_fbc_fragment {
        if let Some(first) = p.fbc_fragments.first() {
            rv.insert("fbc_fragment".into(), json!(first));
        }
        let single = facts
            .fbc_fragment_resolved
            .clone()
            .or_else(|| resolved.first().cloned());
        rv.insert("fbc_fragment_resolved".into(), json!(single));
        rv.insert("fbc_fragments".into(), json!([]));
        rv.insert("fbc_fragments_resolved".into(), json!([]));
    } else {
        rv.insert("fbc_fragments".into(), json!(p.fbc_fragments));
        rv.insert("fbc_fragments_resolved".into(), json!(resolved));
        rv.insert("fbc_fragment".into(), Value::Null);
        rv.insert("fbc_fragment_resolved".into(), Value::Null);
    }
    for key in [
        "bundles",
        "bundle_mapping",
        "deprecation_list",
        "organization",
        "removed_operators",
    ] {
        rv.remove(key);
    }
}

#[cfg(test)]
mod tests;
