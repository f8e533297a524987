//! The JSON bodies the API accepts: one declaration per endpoint, which is both the field list
//! validation (`validate`, `patch`) lets in and the request body schema of the OpenAPI
//! document, so the document cannot list a field validation refuses or miss one it takes.
//!
//! The structs are never built: validation reads the JSON values itself, in IIB's order and
//! with IIB's messages (a typed parse would answer serde's). What it takes from here is the
//! field names, through [`BodyFields`].

use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The keys a request body may hold, named where its struct is declared.
pub trait BodyFields {
    /// Keys that must be present, with a truthy value (IIB's required parameters).
    const REQUIRED: &'static [&'static str];
    /// Keys that may be present.
    const OPTIONAL: &'static [&'static str];

    /// Whether `key` is one of the body's fields.
    fn accepts(key: &str) -> bool {
        Self::REQUIRED.contains(&key) || Self::OPTIONAL.contains(&key)
    }
}

/// Declares a body: its struct (for the schema; optional fields become `Option`s, unknown
/// keys are refused) and its [`BodyFields`] (for validation), from one list of fields.
macro_rules! request_body {
    (
        $(#[$meta:meta])*
        $name:ident {
            required { $($required:ident : $required_type:ty),* $(,)? }
            optional { $($optional:ident : $optional_type:ty),* $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(ToSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct $name {
            $(pub $required: $required_type,)*
            $(pub $optional: Option<$optional_type>,)*
        }

        impl BodyFields for $name {
            const REQUIRED: &'static [&'static str] = &[$(stringify!($required)),*];
            const OPTIONAL: &'static [&'static str] = &[$(stringify!($optional)),*];
        }
    };
}

request_body!(
    /// `POST /builds/add`: bundles to add to an index image.
    AddBody {
        required {}
        optional {
            bundles: Vec<String>,
            from_index: String,
            binary_image: String,
            add_arches: Vec<String>,
            cnr_token: String,
            organization: String,
            force_backport: bool,
            overwrite_from_index: bool,
            overwrite_from_index_token: String,
            distribution_scope: String,
            deprecation_list: Vec<String>,
            graph_update_mode: String,
            build_tags: Vec<String>,
            check_related_images: bool,
        }
    }
);

request_body!(
    /// `POST /builds/rm`: operators to remove from an index image.
    RmBody {
        required {
            operators: Vec<String>,
            from_index: String,
        }
        optional {
            binary_image: String,
            add_arches: Vec<String>,
            overwrite_from_index: bool,
            overwrite_from_index_token: String,
            distribution_scope: String,
            build_tags: Vec<String>,
        }
    }
);

request_body!(
    /// `POST /builds/regenerate-bundle`, and each build request of its batch.
    RegenerateBundleBody {
        required {
            from_bundle_image: String,
        }
        optional {
            organization: String,
            bundle_replacements: BTreeMap<String, String>,
            registry_auths: Value,
        }
    }
);

request_body!(
    /// `POST /builds/merge-index-image`.
    MergeIndexImageBody {
        required {
            source_from_index: String,
        }
        optional {
            target_index: String,
            binary_image: String,
            deprecation_list: Vec<String>,
            overwrite_target_index: bool,
            overwrite_target_index_token: String,
            distribution_scope: String,
            graph_update_mode: String,
            ignore_bundle_ocp_version: bool,
            build_tags: Vec<String>,
        }
    }
);

request_body!(
    /// `POST /builds/create-empty-index`.
    CreateEmptyIndexBody {
        required {
            from_index: String,
        }
        optional {
            binary_image: String,
            labels: BTreeMap<String, String>,
            output_fbc: bool,
            distribution_scope: String,
        }
    }
);

request_body!(
    /// `POST /builds/recursive-related-bundles`.
    RecursiveRelatedBundlesBody {
        required {
            parent_bundle_image: String,
        }
        optional {
            organization: String,
            registry_auths: Value,
        }
    }
);

request_body!(
    /// `POST /builds/fbc-operations`: one of `fbc_fragment` or `fbc_fragments`.
    FbcOperationsBody {
        required {
            from_index: String,
        }
        optional {
            fbc_fragments: Vec<String>,
            fbc_fragment: String,
            binary_image: String,
            add_arches: Vec<String>,
            overwrite_from_index: bool,
            overwrite_from_index_token: String,
            distribution_scope: String,
            build_tags: Vec<String>,
        }
    }
);

request_body!(
    /// `POST /builds/add-deprecations`.
    AddDeprecationsBody {
        required {
            operator_package: String,
            deprecation_schema: String,
            from_index: String,
        }
        optional {
            binary_image: String,
            add_arches: Vec<String>,
            overwrite_from_index: bool,
            overwrite_from_index_token: String,
            distribution_scope: String,
            build_tags: Vec<String>,
        }
    }
);

request_body!(
    /// `PATCH /builds/<id>`, for IIB's workers: every key they may set on some request type;
    /// which ones a request takes depends on its type. `bundles` and `fbc_fragments` are
    /// strings here, as IIB checks them.
    PatchBody {
        required {}
        optional {
            state: String,
            state_reason: String,
            arches: Vec<String>,
            binary_image: String,
            binary_image_resolved: String,
            bundle_image: String,
            bundle_mapping: BTreeMap<String, Vec<String>>,
            bundle_replacements: BTreeMap<String, String>,
            bundles: String,
            distribution_scope: String,
            fbc_fragment: String,
            fbc_fragment_resolved: String,
            fbc_fragments: String,
            fbc_fragments_resolved: Vec<String>,
            from_bundle_image_resolved: String,
            from_index_resolved: String,
            index_image: String,
            index_image_resolved: String,
            internal_index_image_copy: String,
            internal_index_image_copy_resolved: String,
            omps_operator_version: String,
            parent_bundle_image_resolved: String,
            source_from_index_resolved: String,
            target_index_resolved: String,
        }
    }
);

/// A build request of an add-rm batch: an rm request when it names `operators`, else an add
/// request (which then needs `bundles`).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AddOrRmBody {
    Rm(RmBody),
    Add(AddBody),
}

/// `POST /builds/add-rm-batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AddRmBatchBody {
    pub build_requests: Vec<AddOrRmBody>,
    pub annotations: Option<BTreeMap<String, Value>>,
}

/// `POST /builds/regenerate-bundle-batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegenerateBundleBatchBody {
    pub build_requests: Vec<RegenerateBundleBody>,
    pub annotations: Option<BTreeMap<String, Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ApiError;
    use crate::api::validate::{self, Payload, Rules, Validated};
    use serde_json::json;
    use utoipa::PartialSchema;

    type Validator = fn(Payload, &Rules) -> Result<Validated, ApiError>;

    /// One single-request endpoint: its body's schema and field lists, its validator, and a
    /// body that validation takes.
    struct Endpoint {
        name: &'static str,
        schema: Value,
        required: &'static [&'static str],
        optional: &'static [&'static str],
        validate: Validator,
        valid: Value,
    }

    fn endpoint<B: BodyFields + PartialSchema>(
        name: &'static str,
        validate: Validator,
        valid: Value,
    ) -> Endpoint {
        Endpoint {
            name,
            schema: serde_json::to_value(B::schema()).unwrap(),
            required: B::REQUIRED,
            optional: B::OPTIONAL,
            validate,
            valid,
        }
    }

    const INDEX: &str = "registry.example.com/index:v4.18";
    const IMAGE: &str = "registry.example.com/image:v1";
    const OPM: &str = "registry.example.com/opm:v4.18";

    fn endpoints() -> Vec<Endpoint> {
        vec![
            endpoint::<AddBody>(
                "add",
                validate::add,
                json!({"from_index": INDEX, "binary_image": OPM}),
            ),
            endpoint::<RmBody>(
                "rm",
                validate::rm,
                json!({"operators": ["op"], "from_index": INDEX, "binary_image": OPM}),
            ),
            endpoint::<RegenerateBundleBody>(
                "regenerate-bundle",
                validate::regenerate_bundle,
                json!({"from_bundle_image": IMAGE}),
            ),
            endpoint::<MergeIndexImageBody>(
                "merge-index-image",
                validate::merge_index_image,
                json!({"source_from_index": INDEX, "target_index": INDEX, "binary_image": OPM}),
            ),
            endpoint::<CreateEmptyIndexBody>(
                "create-empty-index",
                validate::create_empty_index,
                json!({"from_index": INDEX, "binary_image": OPM}),
            ),
            endpoint::<RecursiveRelatedBundlesBody>(
                "recursive-related-bundles",
                validate::recursive_related_bundles,
                json!({"parent_bundle_image": IMAGE}),
            ),
            endpoint::<FbcOperationsBody>(
                "fbc-operations",
                validate::fbc_operations,
                json!({"from_index": INDEX, "fbc_fragments": [IMAGE], "binary_image": OPM}),
            ),
            endpoint::<AddDeprecationsBody>(
                "add-deprecations",
                validate::add_deprecations,
                json!({"operator_package": "op", "deprecation_schema": "{}",
                       "from_index": INDEX, "binary_image": OPM}),
            ),
        ]
    }

    fn rules() -> Rules {
        Rules {
            binary_image_config_empty: true,
            graph_mode_options: vec!["semver".into()],
            graph_mode_index_allow_list: vec!["registry.example.com/index".into()],
            authenticated: false,
        }
    }

    fn properties(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// `valid` with `key` set to a value of the type the schema documents for it (and what
    /// that key needs alongside it).
    fn with_field(valid: &Value, schema: &Value, key: &str) -> Payload {
        let mut payload = valid.as_object().unwrap().clone();
        let mut set = |k: &str, v: Value| payload.insert(k.to_string(), v);
        match key {
            "distribution_scope" => set(key, json!("prod")),
            "graph_update_mode" => set(key, json!("semver")),
            "overwrite_from_index" | "overwrite_from_index_token" => {
                set("overwrite_from_index", json!(true));
                set("overwrite_from_index_token", json!("token"))
            }
            "overwrite_target_index" | "overwrite_target_index_token" => {
                set("overwrite_target_index", json!(true));
                set("overwrite_target_index_token", json!("token"))
            }
            "registry_auths" => set(
                key,
                json!({"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}}}),
            ),
            "fbc_fragment" => {
                payload.remove("fbc_fragments");
                payload.insert(key.into(), json!(IMAGE))
            }
            "deprecation_schema" => set(key, json!("{}")),
            _ => {
                let types = &schema["properties"][key]["type"];
                let has =
                    |t: &str| types == t || types.as_array().is_some_and(|a| a.contains(&json!(t)));
                let value = if has("boolean") {
                    json!(false)
                } else if has("array") {
                    json!([IMAGE])
                } else if has("object") {
                    json!({})
                } else if has("string") {
                    json!(IMAGE)
                } else {
                    panic!("{key}: no sample for {types}")
                };
                set(key, value)
            }
        };
        payload
    }

    #[test]
    fn each_schema_documents_exactly_the_fields_its_validation_lists() {
        for e in endpoints() {
            let mut fields: Vec<String> = e
                .required
                .iter()
                .chain(e.optional)
                .map(|k| k.to_string())
                .collect();
            fields.sort();
            assert_eq!(properties(&e.schema), fields, "{}", e.name);
            let required: Vec<&str> = e.schema["required"]
                .as_array()
                .map(|r| r.iter().map(|k| k.as_str().unwrap()).collect())
                .unwrap_or_default();
            assert_eq!(required, e.required, "{}", e.name);
            assert_eq!(e.schema["additionalProperties"], json!(false), "{}", e.name);
        }
    }

    #[test]
    fn validation_takes_every_documented_field_with_a_value_of_its_documented_type() {
        for e in endpoints() {
            if let Err(error) = (e.validate)(e.valid.as_object().unwrap().clone(), &rules()) {
                panic!("{}: the valid body is refused: {}", e.name, error.message);
            }
            for key in properties(&e.schema) {
                let payload = with_field(&e.valid, &e.schema, &key);
                if let Err(error) = (e.validate)(payload.clone(), &rules()) {
                    panic!(
                        "{}: the documented field {key} is refused in {}: {}",
                        e.name,
                        Value::Object(payload),
                        error.message
                    );
                }
            }
        }
    }

    #[test]
    fn validation_refuses_a_field_the_schema_does_not_document() {
        for e in endpoints() {
            let mut payload = e.valid.as_object().unwrap().clone();
            payload.insert("not_a_field".into(), json!("x"));
            let error = match (e.validate)(payload, &rules()) {
                Ok(_) => panic!("{}: an undocumented field is taken", e.name),
                Err(error) => error,
            };
            assert_eq!(
                error.message, "The following parameters are invalid: not_a_field",
                "{}",
                e.name
            );
        }
    }

    #[test]
    fn validation_refuses_a_body_without_a_documented_required_field() {
        for e in endpoints() {
            for key in e.required {
                let mut payload = e.valid.as_object().unwrap().clone();
                payload.remove(*key);
                assert!(
                    (e.validate)(payload, &rules()).is_err(),
                    "{}: a body without {key} is taken",
                    e.name
                );
            }
        }
    }
}
