//! IIB's own expectations (tests/test_web/test_api_v1.py), ported, less the link keys.

use super::*;
use crate::request_view::{RequestRecord, StateEntry};
use chrono::{DateTime, Utc};
use iib_aggregates::RequestState;

const T: &str = "2020-02-12T17:03:00Z";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn record(params: RequestParams) -> RequestRecord {
    RequestRecord {
        id: 1,
        batch: 1,
        user: Some("tbrady@DOMAIN.LOCAL".into()),
        batch_annotations: None,
        params,
        queue: None,
        facts: BuildFacts::default(),
        history: vec![StateEntry {
            state: RequestState::InProgress,
            state_reason: "The request was initiated".into(),
            updated: at(T),
        }],
        claimed_by: None,
        lease_until: None,
        attempts: 0,
        last_sequence: 1,
    }
}

fn initiated() -> Value {
    json!([{"state": "in_progress", "state_reason": "The request was initiated", "updated": T}])
}

fn keys(rendered: &Json) -> Vec<&str> {
    rendered.keys().map(String::as_str).collect()
}

#[test]
fn add_matches_iibs_get_build() {
    let mut rec = record(RequestParams::Add(AddParams {
        bundles: vec!["quay.io/namespace/bundle:1.0-3".into()],
        from_index: Some("quay.io/namespace/repo:latest".into()),
        binary_image: Some("quay.io/namespace/binary_image:latest".into()),
        build_tags: vec!["build-tag-1".into()],
        ..Default::default()
    }));
    rec.facts = BuildFacts {
        arches: ["s390x".to_string(), "amd64".to_string()].into(),
        binary_image_resolved: Some("quay.io/namespace/binary_image@sha256:abcdef".into()),
        from_index_resolved: Some("quay.io/namespace/from_index@sha256:defghi".into()),
        index_image: Some("quay.io/namespace/index@sha256:fghijk".into()),
        internal_index_image_copy: Some("quay.io/namespace/internal_index:tag".into()),
        internal_index_image_copy_resolved: Some(
            "quay.io/namespace/internal_index@sha256:something".into(),
        ),
        ..Default::default()
    };
    rec.history.push(StateEntry {
        state: RequestState::Complete,
        state_reason: "Completed successfully".into(),
        updated: at(T),
    });
    let expected = json!({
        "arches": ["amd64", "s390x"],
        "batch": 1,
        "batch_annotations": null,
        "binary_image": "quay.io/namespace/binary_image:latest",
        "binary_image_resolved": "quay.io/namespace/binary_image@sha256:abcdef",
        "build_tags": ["build-tag-1"],
        "bundle_mapping": {},
        "bundles": ["quay.io/namespace/bundle:1.0-3"],
        "check_related_images": null,
        "deprecation_list": [],
        "distribution_scope": null,
        "from_index": "quay.io/namespace/repo:latest",
        "from_index_resolved": "quay.io/namespace/from_index@sha256:defghi",
        "graph_update_mode": null,
        "id": 1,
        "index_image": "quay.io/namespace/index@sha256:fghijk",
        "index_image_resolved": null,
        "internal_index_image_copy": "quay.io/namespace/internal_index:tag",
        "internal_index_image_copy_resolved": "quay.io/namespace/internal_index@sha256:something",
        "omps_operator_version": {},
        "organization": null,
        "removed_operators": [],
        "request_type": "add",
        "state": "complete",
        "state_history": [
            {"state": "complete", "state_reason": "Completed successfully", "updated": T},
            {"state": "in_progress", "state_reason": "The request was initiated", "updated": T},
        ],
        "state_reason": "Completed successfully",
        "updated": T,
        "user": "tbrady@DOMAIN.LOCAL",
    });
    assert_eq!(Value::Object(verbose(&rec)), expected);
}

#[test]
fn keys_come_out_sorted_as_flask_writes_them() {
    let rendered = verbose(&record(RequestParams::Rm(RmParams::default())));
    let text = serde_json::to_string(&rendered).unwrap();
    let mut sorted = keys(&rendered);
    sorted.sort_unstable();
    assert_eq!(keys(&rendered), sorted);
    assert!(text.starts_with(r#"{"arches":[],"batch":1,"batch_annotations":null,"#));
}

#[test]
fn rm_matches_iibs_post_answer() {
    let rendered = verbose(&record(RequestParams::Rm(RmParams {
        operators: vec!["some:thing".into()],
        binary_image: Some("binary:image".into()),
        from_index: Some("index:image".into()),
        ..Default::default()
    })));
    let expected = json!({
        "arches": [], "batch": 1, "batch_annotations": null,
        "binary_image": "binary:image", "binary_image_resolved": null,
        "bundle_mapping": {}, "distribution_scope": null, "bundles": [], "build_tags": [],
        "deprecation_list": [], "from_index": "index:image", "from_index_resolved": null,
        "id": 1, "index_image": null, "index_image_resolved": null,
        "internal_index_image_copy": null, "internal_index_image_copy_resolved": null,
        "organization": null, "removed_operators": ["some:thing"], "request_type": "rm",
        "state": "in_progress", "state_history": initiated(),
        "state_reason": "The request was initiated", "updated": T,
        "user": "tbrady@DOMAIN.LOCAL",
    });
    assert_eq!(Value::Object(rendered), expected);
}

#[test]
fn regenerate_bundle_matches_iibs_post_answer() {
    let rendered = verbose(&record(RequestParams::RegenerateBundle(
        RegenerateBundleParams {
            from_bundle_image: "registry.example.com/bundle-image:latest".into(),
            organization: None,
            bundle_replacements: [("foo".to_string(), "bar".to_string())].into(),
        },
    )));
    let expected = json!({
        "arches": [], "batch": 1, "batch_annotations": null, "bundle_image": null,
        "bundle_replacements": {"foo": "bar"},
        "from_bundle_image": "registry.example.com/bundle-image:latest",
        "from_bundle_image_resolved": null, "organization": null, "id": 1,
        "request_type": "regenerate-bundle", "state": "in_progress",
        "state_history": initiated(), "state_reason": "The request was initiated",
        "updated": T, "user": "tbrady@DOMAIN.LOCAL",
    });
    assert_eq!(Value::Object(rendered), expected);
}

#[test]
fn merge_index_image_matches_iibs_post_answer() {
    let rendered = verbose(&record(RequestParams::MergeIndexImage(
        MergeIndexImageParams {
            deprecation_list: vec!["some@sha256:bundle".into()],
            binary_image: Some("binary:image".into()),
            source_from_index: "source_index:image".into(),
            target_index: Some("target_index:image".into()),
            graph_update_mode: Some("semver".into()),
            distribution_scope: Some("stage".into()),
            ..Default::default()
        },
    )));
    let expected = json!({
        "arches": [], "batch": 1, "batch_annotations": null,
        "binary_image": "binary:image", "binary_image_resolved": null, "build_tags": [],
        "deprecation_list": ["some@sha256:bundle"], "distribution_scope": "stage",
        "graph_update_mode": "semver", "id": 1, "ignore_bundle_ocp_version": null,
        "index_image": null, "request_type": "merge-index-image",
        "source_from_index": "source_index:image", "source_from_index_resolved": null,
        "state": "in_progress", "state_history": initiated(),
        "state_reason": "The request was initiated", "target_index": "target_index:image",
        "target_index_resolved": null, "updated": T, "user": "tbrady@DOMAIN.LOCAL",
    });
    assert_eq!(Value::Object(rendered), expected);
}

const BASE_KEYS: [&str; 10] = [
    "arches",
    "batch",
    "batch_annotations",
    "id",
    "request_type",
    "state",
    "state_history",
    "state_reason",
    "updated",
    "user",
];

fn assert_keys(rendered: &Json, extra: &[&str]) {
    let mut want: Vec<&str> = BASE_KEYS.iter().chain(extra).copied().collect();
    want.sort_unstable();
    assert_eq!(keys(rendered), want);
}

#[test]
fn create_empty_index_has_iibs_keys_and_null_for_empty_labels() {
    let rendered = verbose(&record(RequestParams::CreateEmptyIndex(
        CreateEmptyIndexParams {
            from_index: "r/i:1".into(),
            labels: Some(Default::default()),
            ..Default::default()
        },
    )));
    assert_keys(
        &rendered,
        &[
            "binary_image",
            "binary_image_resolved",
            "from_index",
            "from_index_resolved",
            "index_image",
            "index_image_resolved",
            "distribution_scope",
            "labels",
        ],
    );
    assert_eq!(rendered["labels"], Value::Null);
}

#[test]
fn recursive_related_bundles_has_iibs_keys() {
    let rendered = verbose(&record(RequestParams::RecursiveRelatedBundles(
        RecursiveRelatedBundlesParams {
            parent_bundle_image: "r/b:1".into(),
            organization: Some("acme".into()),
        },
    )));
    assert_keys(
        &rendered,
        &[
            "parent_bundle_image",
            "parent_bundle_image_resolved",
            "organization",
        ],
    );
}

#[test]
fn fbc_operations_keeps_the_legacy_single_fragment_shape() {
    let fbc_keys = [
        "binary_image",
        "binary_image_resolved",
        "from_index",
        "from_index_resolved",
        "index_image",
        "index_image_resolved",
        "internal_index_image_copy",
        "internal_index_image_copy_resolved",
        "distribution_scope",
        "build_tags",
        "fbc_fragment",
        "fbc_fragment_resolved",
        "fbc_fragments",
        "fbc_fragments_resolved",
    ];
    let mut params = FbcOperationsParams {
        fbc_fragments: vec!["r/f:1".into(), "r/f:2".into()],
        from_index: "r/i:1".into(),
        ..Default::default()
    };
    let mut rec = record(RequestParams::FbcOperations(params.clone()));
    rec.facts.fbc_fragments_resolved = Some(vec!["r/f@sha256:1".into(), "r/f@sha256:2".into()]);
    let rendered = verbose(&rec);
    assert_keys(&rendered, &fbc_keys);
    assert_eq!(rendered["fbc_fragments"], json!(["r/f:1", "r/f:2"]));
    assert_eq!(rendered["fbc_fragment"], Value::Null);

    params.used_fbc_fragment = true;
    params.fbc_fragments.truncate(1);
    rec.params = RequestParams::FbcOperations(params);
    let rendered = verbose(&rec);
    assert_keys(&rendered, &fbc_keys);
    assert_eq!(rendered["fbc_fragment"], "r/f:1");
    assert_eq!(rendered["fbc_fragment_resolved"], "r/f@sha256:1");
    assert_eq!(rendered["fbc_fragments"], json!([]));
}

#[test]
fn add_deprecations_hides_its_scope_and_schema() {
    let rendered = verbose(&record(RequestParams::AddDeprecations(
        AddDeprecationsParams {
            operator_package: "kube-green".into(),
            deprecation_schema: "{}".into(),
            from_index: "r/i:1".into(),
            distribution_scope: Some("prod".into()),
            build_tags: vec!["b".into(), "a".into(), "b".into()],
            ..Default::default()
        },
    )));
    assert_keys(
        &rendered,
        &[
            "binary_image",
            "binary_image_resolved",
            "from_index",
            "from_index_resolved",
            "index_image",
            "index_image_resolved",
            "internal_index_image_copy",
            "internal_index_image_copy_resolved",
            "build_tags",
            "operator_package",
        ],
    );
    assert_eq!(rendered["build_tags"], json!(["a", "b"]));
}

#[test]
fn summary_drops_exactly_iibs_verbose_only_keys() {
    let full = verbose(&record(RequestParams::Rm(RmParams::default())));
    let short = summary(&full);
    assert_eq!(full.len() - short.len(), 2);
    assert!(!short.contains_key("state_history"));
    assert!(!short.contains_key("batch_annotations"));
    assert_eq!(short["state"], "in_progress");
}

#[test]
fn facts_override_what_was_asked() {
    let mut rec = record(RequestParams::Add(AddParams {
        binary_image: None,
        distribution_scope: None,
        ..Default::default()
    }));
    rec.facts.binary_image = Some("r/opm:v4.18".into());
    rec.facts.distribution_scope = Some("prod".into());
    rec.facts.bundle_mapping = Some([("kube-green".to_string(), vec!["r/b:1".to_string()])].into());
    let rendered = verbose(&rec);
    assert_eq!(rendered["binary_image"], "r/opm:v4.18");
    assert_eq!(rendered["distribution_scope"], "prod");
    assert_eq!(rendered["bundle_mapping"], json!({"kube-green": ["r/b:1"]}));
}
