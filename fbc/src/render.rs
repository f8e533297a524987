//! Rendering a registry+v1 bundle (its `manifests/` and `metadata/`) into the `olm.bundle`
//! blob that `opm render` prints for it, property for property:
//! - `olm.package` (from the annotations' package and the CSV's version), `olm.gvk` for every
//!   API the bundle provides (each version of each CRD in it, and owned API services),
//!   `olm.gvk.required` (required CRDs and API services, `olm.gvk` dependencies),
//!   `olm.package.required` (`olm.package` dependencies), other dependencies and
//!   `metadata/properties.yaml` properties as they are, then either one `olm.bundle.object`
//!   per manifest or (opm's `bundle-object-to-csv-metadata` migration, what IIB runs) one
//!   `olm.csv.metadata`, sorted as opm sorts them;
//! - `relatedImages`: the CSV's `spec.relatedImages`, the bundle image, and the images of the
//!   install strategy's containers, sorted by image with Go's (unstable) sort, as opm does.
//!
//! Pure code over the bundle's files; reading an image is the registry module's work.

use super::declcfg::{Bundle, Icon, Property, RelatedImage, SCHEMA_BUNDLE};
use super::gojson::{json_kind, struct_field};
use super::{gojson, gosort};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The image label that marks a bundle image and names its package.
pub const PACKAGE_LABEL: &str = "operators.operatorframework.io.bundle.package.v1";
const CHANNELS_ANNOTATION: &str = "operators.operatorframework.io.bundle.channels.v1";
const DEFAULT_CHANNEL_ANNOTATION: &str = "operators.operatorframework.io.bundle.channel.default.v1";
/// CSV annotation holding extra properties (a JSON list).
const PROPERTIES_ANNOTATION: &str = "operatorframework.io/properties";

/// How a bundle's manifests appear among its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectsAs {
    /// One `olm.csv.metadata` property (opm's `--migrate-level bundle-object-to-csv-metadata`,
    /// which IIB passes to opm 1.46 and later).
    #[default]
    CsvMetadata,
    /// One `olm.bundle.object` property per manifest (opm before 1.46, and `opm render`
    /// without a migrate level).
    BundleObjects,
}

/// Why `opm render` would refuse a bundle; `Display` is opm's error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `manifests/` holds no object.
    #[error("no bundle objects found")]
    NoObjects,
    /// No object of `manifests/` is a ClusterServiceVersion.
    #[error("no csv in bundle")]
    NoCsv,
    /// `metadata/` holds no annotations file.
    #[error("Could not find annotations file")]
    NoAnnotations,
    /// A CRD or the CSV's owned APIs could not be read.
    #[error("error checking provided apis in bundle {bundle}: {reason}")]
    ProvidedApis {
        /// The bundle (CSV) name.
        bundle: String,
        /// What was wrong, in opm's words.
        reason: String,
    },
    /// A property (from the CSV, its dependencies or `properties.yaml`) could not be read.
    #[error("get properties for bundle {bundle:?}: {reason}")]
    Properties {
        /// The bundle (CSV) name.
        bundle: String,
        /// What was wrong, in opm's words.
        reason: String,
    },
    /// The related images could not be gathered.
    #[error("get related images for bundle {bundle:?}: {reason}")]
    RelatedImages {
        /// The bundle (CSV) name.
        bundle: String,
        /// What was wrong, in opm's words.
        reason: String,
    },
}

/// A rendered bundle, with what adding it to a catalog needs beyond the blob.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedBundle {
    /// The `olm.bundle` blob `opm render` prints.
    pub bundle: Bundle,
    /// The channels the bundle's annotations put it in.
    pub channels: Vec<String>,
    /// The default channel its annotations name ("" when none).
    pub default_channel: String,
    /// The CSV's `spec.version`.
    pub version: String,
    /// The CSV's `spec.replaces` ("" when none).
    pub replaces: String,
    /// The CSV's `spec.skips`.
    pub skips: Vec<String>,
    /// The CSV's `olm.skipRange` annotation ("" when none).
    pub skip_range: String,
    /// The CSV's `olm.substitutesFor` annotation ("" when none).
    pub substitutes_for: String,
    /// The manifests that use Kubernetes APIs removed in 1.22 (`kind apiVersion`), which make
    /// IIB cap the bundle with `olm.maxOpenShiftVersion`.
    pub removed_apis: Vec<String>,
    /// The CSV's `olm.properties` annotation, as written.
    pub csv_olm_properties: Option<String>,
    /// The CSV's first icon, which opm gives the package when this bundle heads its default
    /// channel.
    pub icon: Option<Icon>,
}

/// The package icon opm takes from a CSV: its first icon, base64-decoded (retried without
/// spaces) and re-encoded; none when it does not decode or is empty.
fn icon_of(csv_spec: &Value) -> Option<Icon> {
    let first = struct_field(csv_spec, "icon")?.as_array()?.first()?;
    let text: String = str_field(first, "base64data")
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let engine = base64::engine::general_purpose::STANDARD;
    let data = engine
        .decode(&text)
        .or_else(|_| engine.decode(text.replace(' ', "")))
        .ok()?;
    if data.is_empty() {
        return None;
    }
    Some(Icon {
        base64data: engine.encode(data),
        mediatype: str_field(first, "mediatype").to_string(),
    })
}

/// The first document of a manifest file as JSON (Kubernetes' YAML-or-JSON decoder reads one
/// document and ignores the rest). `None` when it is not an object.
fn decode_first(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value = if text.trim_start().starts_with('{') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .next()?
            .ok()?
    } else {
        use serde::Deserialize;
        let document = serde_yaml_ng::Deserializer::from_str(text).next()?;
        Value::deserialize(document).ok()?
    };
    value.is_object().then_some(value)
}

fn str_field<'a>(object: &'a Value, name: &str) -> &'a str {
    struct_field(object, name)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An API a bundle provides or requires: group, version, kind, plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ApiKey {
    group: String,
    version: String,
    kind: String,
    plural: String,
}

impl ApiKey {
    /// Go's `%v` of the struct.
    fn go_text(&self) -> String {
        format!(
            "{{{} {} {} {}}}",
            self.group, self.version, self.kind, self.plural
        )
    }
}

/// `plural.group` of a CRD name.
fn split_crd_name(name: &str) -> Result<(&str, &str), String> {
    name.split_once('.')
        .ok_or_else(|| format!("couldn't parse plural.group from crd name: {name}"))
}

fn definitions<'a>(spec: &'a Value, section: &str, which: &str) -> Vec<&'a Value> {
    struct_field(spec, section)
        .and_then(|s| struct_field(s, which))
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// opm's `Bundle.ProvidedAPIs`: every version of every CRD in the bundle, and the CSV's owned
/// API services.
fn provided_apis(crds: &[&Value], csv_spec: &Value) -> BTreeSet<ApiKey> {
    let mut provided = BTreeSet::new();
    for crd in crds {
        let spec = struct_field(crd, "spec").unwrap_or(&Value::Null);
        let names = struct_field(spec, "names").unwrap_or(&Value::Null);
        let key = |version: &str| ApiKey {
            group: str_field(spec, "group").to_string(),
            version: version.to_string(),
            kind: str_field(names, "kind").to_string(),
            plural: str_field(names, "plural").to_string(),
        };
        for version in struct_field(spec, "versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            provided.insert(key(str_field(version, "name")));
        }
        // v1beta1 CRDs may name a single version.
        if str_field(crd, "apiVersion").ends_with("/v1beta1") {
            let version = str_field(spec, "version");
            if !version.is_empty() {
                provided.insert(key(version));
            }
        }
    }
    for api in definitions(csv_spec, "apiservicedefinitions", "owned") {
        provided.insert(ApiKey {
            group: str_field(api, "group").to_string(),
            version: str_field(api, "version").to_string(),
            kind: str_field(api, "kind").to_string(),
            plural: str_field(api, "name").to_string(),
        });
    }
    provided
}

/// opm's `Bundle.RequiredAPIs`: required CRDs and API services of the CSV.
fn required_apis(csv_spec: &Value) -> Result<BTreeSet<ApiKey>, String> {
    let mut required = BTreeSet::new();
    for crd in definitions(csv_spec, "customresourcedefinitions", "required") {
        let (plural, group) = split_crd_name(str_field(crd, "name"))?;
        required.insert(ApiKey {
            group: group.to_string(),
            version: str_field(crd, "version").to_string(),
            kind: str_field(crd, "kind").to_string(),
            plural: plural.to_string(),
        });
    }
    for api in definitions(csv_spec, "apiservicedefinitions", "required") {
        required.insert(ApiKey {
            group: str_field(api, "group").to_string(),
            version: str_field(api, "version").to_string(),
            kind: str_field(api, "kind").to_string(),
            plural: str_field(api, "name").to_string(),
        });
    }
    Ok(required)
}

/// opm's `AllProvidedAPIsInBundle`: every CRD the CSV owns must be in the bundle.
fn check_owned_crds(provided: &BTreeSet<ApiKey>, csv_spec: &Value) -> Result<(), String> {
    for crd in definitions(csv_spec, "customresourcedefinitions", "owned") {
        let (plural, group) = split_crd_name(str_field(crd, "name"))?;
        let key = ApiKey {
            group: group.to_string(),
            version: str_field(crd, "version").to_string(),
            kind: str_field(crd, "kind").to_string(),
            plural: plural.to_string(),
        };
        if !provided.contains(&key) {
            let found: Vec<String> = provided
                .iter()
                .map(|k| format!("{}:{{}}", k.go_text()))
                .collect();
            return Err(format!(
                "couldn't find {} in bundle. found: map[{}]",
                key.go_text(),
                found.join(" ")
            ));
        }
    }
    Ok(())
}

/// A `{type, value}` list from a metadata file or the CSV's properties annotation.
fn property_list(value: Option<&Value>) -> Vec<Property> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Property {
                kind: struct_field(p, "type")?.as_str()?.to_string(),
                value: struct_field(p, "value").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Go's `release` of a CSV: a string, or a number printed as Go prints it.
fn release_of(spec: &Value) -> Result<String, String> {
    match struct_field(spec, "release") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f == (f as i64) as f64 => (f as i64).to_string(),
            (None, Some(f)) => format!("{f}"),
            _ => n.to_string(),
        }),
        Some(_) => Err("release field must be a string or number".into()),
    }
}

fn string_or_empty(value: Option<&Value>, what: &str) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type string ({what})",
            json_kind(other)
        )),
    }
}

/// Renders the bundle held by `files` (paths relative to the bundle root, such as
/// `manifests/csv.yaml` and `metadata/annotations.yaml`) as `opm render` renders the bundle
/// image `image`.
pub fn render_bundle<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    image: &str,
    objects_as: ObjectsAs,
) -> Result<RenderedBundle, RenderError> {
    // Files directly in manifests/ and metadata/, by name (Go's ReadDir order).
    let mut manifests: BTreeMap<&str, &[u8]> = BTreeMap::new();
    let mut metadata: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (path, bytes) in files {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        if let Some(name) = path.strip_prefix("manifests/") {
            if !name.contains('/') && !name.starts_with('.') {
                manifests.insert(name, bytes);
            }
        } else if let Some(name) = path.strip_prefix("metadata/") {
            if !name.contains('/') {
                metadata.insert(name, bytes);
            }
        }
    }

    // Manifests: every object, but only the first CSV.
    let mut objects: Vec<Value> = Vec::new();
    let mut csv_index = None;
    for bytes in manifests.values() {
        let Some(object) = decode_first(bytes) else {
            continue;
        };
        if str_field(&object, "kind").is_empty() {
            continue; // Kubernetes' unstructured decoding requires a kind.
        }
        if str_field(&object, "kind") == "ClusterServiceVersion" {
            if csv_index.is_some() {
                continue;
            }
            csv_index = Some(objects.len());
        }
        objects.push(object);
    }
    if objects.is_empty() {
        return Err(RenderError::NoObjects);
    }
    let csv = &objects[csv_index.ok_or(RenderError::NoCsv)?];
    let name = str_field(
        struct_field(csv, "metadata").unwrap_or(&Value::Null),
        "name",
    )
    .to_string();
    let csv_spec = struct_field(csv, "spec").cloned().unwrap_or(Value::Null);
    let csv_metadata = struct_field(csv, "metadata")
        .cloned()
        .unwrap_or(Value::Null);
    let csv_annotations = struct_field(&csv_metadata, "annotations")
        .cloned()
        .unwrap_or(Value::Null);
    let crds: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            str_field(o, "kind") == "CustomResourceDefinition"
                && matches!(
                    str_field(o, "apiVersion"),
                    "apiextensions.k8s.io/v1" | "apiextensions.k8s.io/v1beta1"
                )
        })
        .collect();
    let provided = provided_apis(&crds, &csv_spec);
    check_owned_crds(&provided, &csv_spec).map_err(|reason| RenderError::ProvidedApis {
        bundle: name.clone(),
        reason,
    })?;

    // Metadata: the first file that reads as each kind of metadata file.
    let mut annotations: Option<Map<String, Value>> = None;
    let mut dependencies: Vec<Property> = Vec::new();
    let mut file_properties: Vec<Property> = Vec::new();
    for bytes in metadata.values() {
        let Some(document) = decode_first(bytes) else {
            continue;
        };
        if annotations.is_none() {
            if let Some(map) = struct_field(&document, "annotations").and_then(Value::as_object) {
                let known = [
                    PACKAGE_LABEL,
                    CHANNELS_ANNOTATION,
                    DEFAULT_CHANNEL_ANNOTATION,
                ];
                let typed_ok = known
                    .iter()
                    .all(|k| map.get(*k).is_none_or(|v| v.is_string() || v.is_null()));
                let any = known.iter().any(|k| {
                    map.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                });
                if typed_ok && any {
                    annotations = Some(map.clone());
                }
            }
        }
        if dependencies.is_empty() {
            dependencies = property_list(struct_field(&document, "dependencies"));
        }
        if file_properties.is_empty() {
            file_properties = property_list(struct_field(&document, "properties"));
        }
    }
    let annotations = annotations.ok_or(RenderError::NoAnnotations)?;
    let annotation = |key: &str| {
        annotations
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let package = annotation(PACKAGE_LABEL);
    let channels_text = annotation(CHANNELS_ANNOTATION);
    let channels: Vec<String> = if channels_text.is_empty() {
        Vec::new()
    } else {
        channels_text.split(',').map(str::to_string).collect()
    };

    let properties_error = |reason: String| RenderError::Properties {
        bundle: name.clone(),
        reason,
    };
    let version = string_or_empty(struct_field(&csv_spec, "version"), "version")
        .map_err(|e| properties_error(format!("get version: {e}")))?;
    let release =
        release_of(&csv_spec).map_err(|e| properties_error(format!("get release: {e}")))?;
    let package_value = |package: &str, version: &str, release: &str| {
        let mut value = json!({"packageName": package, "version": version});
        if !release.is_empty() {
            value["release"] = json!(release);
        }
        value
    };

    // The parser's property set: properties.yaml, then the package (from the annotations), the
    // CSV's properties annotation and the provided APIs.
    let mut parsed = file_properties;
    if !package.is_empty() {
        parsed.push(Property {
            kind: "olm.package".into(),
            value: package_value(&package, &version, &release),
        });
    }
    if let Some(text) = csv_annotations
        .get(PROPERTIES_ANNOTATION)
        .and_then(Value::as_str)
    {
        if let Ok(list) = serde_json::from_str::<Value>(text) {
            parsed.extend(property_list(Some(&list)));
        }
    }
    for api in &provided {
        parsed.push(Property {
            kind: "olm.gvk".into(),
            value: json!({"group": api.group, "kind": api.kind, "version": api.version}),
        });
    }

    // opm's ObjectsAndPropertiesFromBundle.
    let mut provided_gvks: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut required_gvks: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut package_property: Option<Value> = None;
    let mut others: Vec<Property> = Vec::new();
    let gvk_of = |value: &Value| {
        (
            str_field(value, "group").to_string(),
            str_field(value, "kind").to_string(),
            str_field(value, "version").to_string(),
        )
    };
    for property in parsed {
        match property.kind.as_str() {
            "olm.gvk" => {
                provided_gvks.insert(gvk_of(&property.value));
            }
            "olm.package" => {
                package_property = Some(package_value(
                    str_field(&property.value, "packageName"),
                    str_field(&property.value, "version"),
                    str_field(&property.value, "release"),
                ));
            }
            _ => others.push(property),
        }
    }
    let mut packages_required = Vec::new();
    for dependency in dependencies {
        match dependency.kind.as_str() {
            "olm.gvk" => {
                required_gvks.insert(gvk_of(&dependency.value));
            }
            "olm.package" => packages_required.push(Property {
                kind: "olm.package.required".into(),
                value: json!({
                    "packageName": str_field(&dependency.value, "packageName"),
                    "versionRange": str_field(&dependency.value, "version"),
                }),
            }),
            _ => others.push(dependency),
        }
    }
    for api in &provided {
        provided_gvks.insert((api.group.clone(), api.kind.clone(), api.version.clone()));
    }
    for api in
        required_apis(&csv_spec).map_err(|e| properties_error(format!("get required apis: {e}")))?
    {
        required_gvks.insert((api.group, api.kind, api.version));
    }

    let mut properties: Vec<Property> = Vec::new();
    for object in &objects {
        let data = base64::engine::general_purpose::STANDARD.encode(gojson::marshal(object));
        properties.push(Property {
            kind: "olm.bundle.object".into(),
            value: json!({ "data": data }),
        });
    }
    properties.push(Property {
        kind: "olm.package".into(),
        value: package_property.unwrap_or_else(|| package_value(&package, &version, &release)),
    });
    for (group, kind, version) in provided_gvks {
        properties.push(Property {
            kind: "olm.gvk".into(),
            value: json!({"group": group, "kind": kind, "version": version}),
        });
    }
    for (group, kind, version) in required_gvks {
        properties.push(Property {
            kind: "olm.gvk.required".into(),
            value: json!({"group": group, "kind": kind, "version": version}),
        });
    }
    properties.extend(packages_required);
    // The parser's property set drops exact duplicates.
    let mut seen_others = BTreeSet::new();
    properties.extend(
        others
            .into_iter()
            .filter(|p| seen_others.insert((p.kind.clone(), gojson::compact(&p.value)))),
    );
    let mut keyed: Vec<(String, Property)> = properties
        .into_iter()
        .map(|p| (gojson::compact(&p.value), p))
        .collect();
    gosort::sort_slice(&mut keyed, |a, b| {
        (a.1.kind.as_str(), a.0.as_str()) < (b.1.kind.as_str(), b.0.as_str())
    });
    let properties: Vec<Property> = keyed.into_iter().map(|(_, p)| p).collect();

    // Render.Run: bundle objects and CSV metadata go last.
    let (objects_props, mut properties): (Vec<Property>, Vec<Property>) = properties
        .into_iter()
        .partition(|p| p.kind == "olm.bundle.object" || p.kind == "olm.csv.metadata");
    let related_images =
        related_images(&csv_spec, image).map_err(|reason| RenderError::RelatedImages {
            bundle: name.clone(),
            reason,
        })?;
    match objects_as {
        ObjectsAs::BundleObjects => properties.extend(objects_props),
        ObjectsAs::CsvMetadata if image.is_empty() => properties.extend(objects_props),
        ObjectsAs::CsvMetadata => {
            if objects_props.iter().any(|p| p.kind == "olm.csv.metadata") {
                properties.extend(objects_props);
            } else {
                properties.push(Property {
                    kind: "olm.csv.metadata".into(),
                    value: csv_metadata_of(csv),
                });
            }
        }
    }

    let skips = match struct_field(&csv_spec, "skips") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect(),
        _ => Vec::new(),
    };
    let annotation_of = |key: &str| str_field(&csv_annotations, key).to_string();
    Ok(RenderedBundle {
        bundle: Bundle {
            schema: SCHEMA_BUNDLE.into(),
            name: name.clone(),
            package,
            image: image.to_string(),
            properties,
            related_images,
        },
        channels,
        default_channel: annotation(DEFAULT_CHANNEL_ANNOTATION),
        version,
        replaces: str_field(&csv_spec, "replaces").to_string(),
        skips,
        skip_range: annotation_of("olm.skipRange"),
        substitutes_for: annotation_of("olm.substitutesFor"),
        removed_apis: objects.iter().filter_map(removed_api).collect(),
        csv_olm_properties: csv_annotations
            .get("olm.properties")
            .and_then(Value::as_str)
            .map(str::to_string),
        icon: icon_of(&csv_spec),
    })
}

/// `kind apiVersion` of a manifest using an API Kubernetes 1.22 removed (operator-sdk's
/// community validation: v1beta1 CRDs and the beta RBAC, admission, coordination, networking,
/// storage, certificates, scheduling and API registration kinds).
fn removed_api(object: &Value) -> Option<String> {
    let api = str_field(object, "apiVersion");
    let kind = str_field(object, "kind");
    let removed = match api {
        "apiextensions.k8s.io/v1beta1" => kind == "CustomResourceDefinition",
        "scheduling.k8s.io/v1beta1" => kind == "PriorityClass",
        "rbac.authorization.k8s.io/v1beta1" => {
            matches!(
                kind,
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
            )
        }
        "apiregistration.k8s.io/v1beta1" => kind == "APIService",
        "authentication.k8s.io/v1beta1" => kind == "TokenReview",
        "authorization.k8s.io/v1beta1" => kind.ends_with("SubjectAccessReview"),
        "admissionregistration.k8s.io/v1beta1" => {
            matches!(
                kind,
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
            )
        }
        "coordination.k8s.io/v1beta1" => kind == "Lease",
        "extensions/v1beta1" => kind == "Ingress",
        "networking.k8s.io/v1beta1" => matches!(kind, "Ingress" | "IngressClass"),
        "storage.k8s.io/v1beta1" => {
            matches!(
                kind,
                "CSIDriver" | "CSINode" | "StorageClass" | "VolumeAttachment"
            )
        }
        "certificates.k8s.io/v1beta1" => kind == "CertificateSigningRequest",
        _ => false,
    };
    removed.then(|| format!("{kind} {api}"))
}

/// Whether IIB caps this bundle with `olm.maxOpenShiftVersion: 4.8` (`add_max_ocp_version_property`):
/// it uses removed APIs and its CSV does not already cap it below 4.9.
pub fn needs_max_openshift_version(bundle: &RenderedBundle) -> bool {
    if bundle.removed_apis.is_empty() {
        return false;
    }
    let capped_below_4_9 = bundle
        .csv_olm_properties
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|list| {
            list.as_array()?
                .iter()
                .find(|p| p["type"] == "olm.maxOpenShiftVersion")
                .map(|p| {
                    let text = match &p["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let mut parts = text
                        .split('.')
                        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
                    let (major, minor) =
                        (parts.next().unwrap_or(u64::MAX), parts.next().unwrap_or(0));
                    (major, minor) < (4, 9)
                })
        })
        .unwrap_or(false);
    !capped_below_4_9
}

/// Adds IIB's `olm.maxOpenShiftVersion: 4.8` property where opm's order puts it.
pub fn add_max_openshift_version(bundle: &mut Bundle) {
    let property = Property {
        kind: "olm.maxOpenShiftVersion".into(),
        value: serde_json::json!(4.8),
    };
    if bundle.properties.iter().any(|p| p.kind == property.kind) {
        return;
    }
    let at = bundle
        .properties
        .iter()
        .position(|p| {
            p.kind == "olm.bundle.object"
                || p.kind == "olm.csv.metadata"
                || p.kind.as_str() > property.kind.as_str()
        })
        .unwrap_or(bundle.properties.len());
    bundle.properties.insert(at, property);
}

/// opm's `getRelatedImages`, then Render's sort by image.
fn related_images(csv_spec: &Value, image: &str) -> Result<Vec<RelatedImage>, String> {
    let mut images: Vec<RelatedImage> = Vec::new();
    if let Some(list) = struct_field(csv_spec, "relatedImages") {
        if !list.is_null() {
            let list = list
                .as_array()
                .ok_or("json: cannot unmarshal relatedImages: not a list")?;
            for item in list {
                images.push(RelatedImage {
                    name: str_field(item, "name").to_string(),
                    image: str_field(item, "image").to_string(),
                });
            }
        }
    }
    let mut seen: BTreeSet<String> = images.iter().map(|i| i.image.clone()).collect();
    if !image.is_empty() && !seen.contains(image) {
        images.push(RelatedImage {
            name: String::new(),
            image: image.to_string(),
        });
    }
    // The install strategy's container images (opm iterates a Go map here; the later sort
    // by image makes the order irrelevant, since these images are all distinct).
    let install = struct_field(csv_spec, "install").unwrap_or(&Value::Null);
    if str_field(install, "strategy") == "deployment" {
        let mut operator_images = BTreeSet::new();
        let deployments = struct_field(install, "spec")
            .and_then(|s| struct_field(s, "deployments"))
            .and_then(Value::as_array);
        for deployment in deployments.into_iter().flatten() {
            let pod = struct_field(deployment, "spec")
                .and_then(|s| struct_field(s, "template"))
                .and_then(|t| struct_field(t, "spec"))
                .unwrap_or(&Value::Null);
            for list in ["containers", "initContainers"] {
                for container in struct_field(pod, list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    operator_images.insert(str_field(container, "image").to_string());
                }
            }
        }
        for operator_image in operator_images {
            if seen.insert(operator_image.clone()) {
                images.push(RelatedImage {
                    name: String::new(),
                    image: operator_image,
                });
            }
        }
    }
    gosort::sort_slice(&mut images, |a, b| a.image < b.image);
    Ok(images)
}

/// Keeps the listed fields of a Go struct decoded from `value`: `(json name, kind)`, where a
/// kind says how the field is typed and whether Go omits it when empty.
fn typed(value: &Value, fields: &[(&str, Kind)]) -> Value {
    let mut out = Map::new();
    for (name, kind) in fields {
        let found = struct_field(value, name);
        if let Some(v) = kind.convert(found) {
            out.insert((*name).to_string(), v);
        }
    }
    Value::Object(out)
}

/// How one field of a typed CSV struct is decoded and written back.
#[derive(Clone, Copy)]
enum Kind {
    /// A string always written.
    Str,
    /// A string left out when empty.
    StrOmit,
    /// A bool always written.
    Bool,
    /// An integer left out when zero.
    IntOmit,
    /// A list of strings left out when empty.
    Strings,
    /// A string map left out when empty.
    StringMap,
    /// Raw JSON left out when absent.
    Raw,
    /// A struct always written (Go's omitempty never drops a struct).
    Struct(&'static [(&'static str, Kind)]),
    /// A list of structs left out when empty.
    List(&'static [(&'static str, Kind)]),
}

impl Kind {
    fn convert(self, value: Option<&Value>) -> Option<Value> {
        let value = value.filter(|v| !v.is_null());
        match self {
            Kind::Str => Some(Value::String(
                value.and_then(Value::as_str).unwrap_or("").into(),
            )),
            Kind::StrOmit => value
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into())),
            Kind::Bool => Some(Value::Bool(value.and_then(Value::as_bool).unwrap_or(false))),
            Kind::IntOmit => value
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
                .map(Value::from),
            Kind::Strings => value
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    Value::Array(
                        l.iter()
                            .map(|s| Value::String(s.as_str().unwrap_or("").into()))
                            .collect(),
                    )
                }),
            Kind::StringMap => value
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    Value::Object(
                        m.iter()
                            .filter_map(|(k, v)| {
                                Some((k.clone(), Value::String(v.as_str()?.into())))
                            })
                            .collect(),
                    )
                }),
            Kind::Raw => value.cloned(),
            Kind::Struct(fields) => Some(typed(value.unwrap_or(&Value::Null), fields)),
            Kind::List(fields) => value
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .map(|l| Value::Array(l.iter().map(|item| typed(item, fields)).collect())),
        }
    }
}

// operator-framework/api's v1alpha1 types, as far as `olm.csv.metadata` holds them.
const DESCRIPTOR: &[(&str, Kind)] = &[
    ("path", Kind::Str),
    ("displayName", Kind::StrOmit),
    ("description", Kind::StrOmit),
    ("x-descriptors", Kind::Strings),
    ("value", Kind::Raw),
];
const RESOURCE: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("kind", Kind::Str),
    ("version", Kind::Str),
];
const CRD_DESCRIPTION: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("version", Kind::Str),
    ("kind", Kind::Str),
    ("displayName", Kind::StrOmit),
    ("description", Kind::StrOmit),
    ("resources", Kind::List(RESOURCE)),
    ("statusDescriptors", Kind::List(DESCRIPTOR)),
    ("specDescriptors", Kind::List(DESCRIPTOR)),
    ("actionDescriptors", Kind::List(DESCRIPTOR)),
];
const API_SERVICE_DESCRIPTION: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("group", Kind::Str),
    ("version", Kind::Str),
    ("kind", Kind::Str),
    ("deploymentName", Kind::StrOmit),
    ("containerPort", Kind::IntOmit),
    ("displayName", Kind::StrOmit),
    ("description", Kind::StrOmit),
    ("resources", Kind::List(RESOURCE)),
    ("statusDescriptors", Kind::List(DESCRIPTOR)),
    ("specDescriptors", Kind::List(DESCRIPTOR)),
    ("actionDescriptors", Kind::List(DESCRIPTOR)),
];
const CRD_DEFINITIONS: &[(&str, Kind)] = &[
    ("owned", Kind::List(CRD_DESCRIPTION)),
    ("required", Kind::List(CRD_DESCRIPTION)),
];
const API_DEFINITIONS: &[(&str, Kind)] = &[
    ("owned", Kind::List(API_SERVICE_DESCRIPTION)),
    ("required", Kind::List(API_SERVICE_DESCRIPTION)),
];
const INSTALL_MODE: &[(&str, Kind)] = &[("type", Kind::Str), ("supported", Kind::Bool)];
const APP_LINK: &[(&str, Kind)] = &[("name", Kind::StrOmit), ("url", Kind::StrOmit)];
const MAINTAINER: &[(&str, Kind)] = &[("name", Kind::StrOmit), ("email", Kind::StrOmit)];
const GVK: &[(&str, Kind)] = &[
    ("group", Kind::Str),
    ("version", Kind::Str),
    ("kind", Kind::Str),
];

/// The `olm.csv.metadata` value opm builds from a CSV (`property.MustBuildCSVMetadata`).
pub fn csv_metadata_of(csv: &Value) -> Value {
    let metadata = struct_field(csv, "metadata").unwrap_or(&Value::Null);
    let spec = struct_field(csv, "spec").unwrap_or(&Value::Null);
    let mut out = Map::new();
    let mut put = |name: &str, kind: Kind, from: Option<&Value>| {
        if let Some(value) = kind.convert(from) {
            out.insert(name.to_string(), value);
        }
    };
    put(
        "annotations",
        Kind::StringMap,
        struct_field(metadata, "annotations"),
    );
    put(
        "apiServiceDefinitions",
        Kind::Struct(API_DEFINITIONS),
        struct_field(spec, "apiservicedefinitions"),
    );
    put(
        "crdDescriptions",
        Kind::Struct(CRD_DEFINITIONS),
        struct_field(spec, "customresourcedefinitions"),
    );
    put(
        "description",
        Kind::StrOmit,
        struct_field(spec, "description"),
    );
    put(
        "displayName",
        Kind::StrOmit,
        struct_field(spec, "displayName"),
    );
    put(
        "installModes",
        Kind::List(INSTALL_MODE),
        struct_field(spec, "installModes"),
    );
    put("keywords", Kind::Strings, struct_field(spec, "keywords"));
    put("labels", Kind::StringMap, struct_field(metadata, "labels"));
    put("links", Kind::List(APP_LINK), struct_field(spec, "links"));
    put(
        "maintainers",
        Kind::List(MAINTAINER),
        struct_field(spec, "maintainers"),
    );
    put("maturity", Kind::StrOmit, struct_field(spec, "maturity"));
    put(
        "minKubeVersion",
        Kind::StrOmit,
        struct_field(spec, "minKubeVersion"),
    );
    put(
        "nativeAPIs",
        Kind::List(GVK),
        struct_field(spec, "nativeAPIs"),
    );
    put(
        "provider",
        Kind::Struct(APP_LINK),
        struct_field(spec, "provider"),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(crd_api: &str, olm_properties: Option<&str>) -> Vec<(String, Vec<u8>)> {
        let annotations = match olm_properties {
            Some(p) => format!("    olm.properties: '{p}'\n"),
            None => String::new(),
        };
        let csv = format!(
            "apiVersion: operators.coreos.com/v1alpha1\nkind: ClusterServiceVersion\nmetadata:\n  name: demo.v1.0.0\n  annotations:\n    x: y\n{annotations}spec:\n  version: 1.0.0\n  customresourcedefinitions:\n    owned:\n    - name: widgets.example.com\n      version: v1\n      kind: Widget\n"
        );
        let crd = format!(
            "apiVersion: {crd_api}\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names:\n    kind: Widget\n    plural: widgets\n  versions:\n  - name: v1\n"
        );
        vec![
            ("manifests/csv.yaml".into(), csv.into_bytes()),
            ("manifests/crd.yaml".into(), crd.into_bytes()),
            (
                "metadata/annotations.yaml".into(),
                b"annotations:\n  operators.operatorframework.io.bundle.package.v1: demo\n  operators.operatorframework.io.bundle.channels.v1: stable\n".to_vec(),
            ),
        ]
    }

    fn render(files: &[(String, Vec<u8>)]) -> RenderedBundle {
        render_bundle(
            files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
            "registry.example/demo-bundle:1",
            ObjectsAs::CsvMetadata,
        )
        .unwrap()
    }

    #[test]
    fn bundles_on_removed_apis_are_capped_at_openshift_4_8_as_iib_does() {
        let old = render(&files("apiextensions.k8s.io/v1beta1", None));
        assert_eq!(
            old.removed_apis,
            vec!["CustomResourceDefinition apiextensions.k8s.io/v1beta1"]
        );
        assert!(needs_max_openshift_version(&old));
        let mut bundle = old.bundle.clone();
        add_max_openshift_version(&mut bundle);
        let kinds: Vec<&str> = bundle.properties.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "olm.gvk",
                "olm.maxOpenShiftVersion",
                "olm.package",
                "olm.csv.metadata"
            ]
        );
        assert_eq!(bundle.properties[1].value, serde_json::json!(4.8));
        // Already capped below 4.9, or on current APIs: left alone.
        let capped = render(&files(
            "apiextensions.k8s.io/v1beta1",
            Some(r#"[{"type": "olm.maxOpenShiftVersion", "value": "4.8"}]"#),
        ));
        assert!(!needs_max_openshift_version(&capped));
        let too_high = render(&files(
            "apiextensions.k8s.io/v1beta1",
            Some(r#"[{"type": "olm.maxOpenShiftVersion", "value": "4.10"}]"#),
        ));
        assert!(needs_max_openshift_version(&too_high));
        assert!(!needs_max_openshift_version(&render(&files(
            "apiextensions.k8s.io/v1",
            None
        ))));
    }
}
