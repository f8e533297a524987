//! The bundle request types: regenerate-bundle (apply an organization's customizations to a
//! bundle and push it for every arch of the original) and recursive-related-bundles (walk the
//! bundles a bundle's CSV names, level by level).

use super::TaskError;
use crate::workers::index_image::parse;
use crate::workers::operator_manifest::{self as om, ImageName};
use crate::workers::runner::TaskContext;
use iib_aggregates::params::{RecursiveRelatedBundlesParams, RegenerateBundleParams, SecretKind};
use iib_aggregates::BuildFacts;
use iib_oci::build::{layer, ConfigChanges};
use iib_oci::RegistryClient;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// IIB's customizations when an organization has none configured.
const DEFAULT_CUSTOMIZATIONS: [&str; 8] = [
    "resolve_image_pullspecs",
    "related_bundles",
    "package_name_suffix",
    "registry_replacements",
    "perform_bundle_replacements",
    "image_name_from_labels",
    "csv_annotations",
    "enclose_repo",
];
const PACKAGE_ANNOTATION: &str = "operators.operatorframework.io.bundle.package.v1";
const PINNED_LABEL: &str = "com.redhat.iib.pinned";
const BUNDLE_LABEL: &str = "com.redhat.delivery.operator.bundle";

/// A bundle's files being adjusted: every CSV (parsed), the annotations, and what changed.
struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
    csvs: BTreeMap<String, Value>,
    annotations: Value,
    annotations_changed: bool,
}

impl Bundle {
    fn read(files: BTreeMap<String, Vec<u8>>) -> Result<Self, TaskError> {
        let mut csvs = BTreeMap::new();
        for (path, bytes) in &files {
            let is_yaml = path.ends_with(".yaml") || path.ends_with(".yml");
            if !path.starts_with("manifests/") || !is_yaml {
                continue;
            }
            let value: Value = serde_yaml_ng::from_slice(bytes).map_err(|e| {
                TaskError::Failed(format!(
                    "The Operator Manifest is not in a valid YAML format: {e}"
                ))
            })?;
            if value["kind"] == "ClusterServiceVersion" {
                csvs.insert(path.clone(), value);
            }
        }
        let raw = files.get("metadata/annotations.yaml").ok_or_else(|| {
            TaskError::Failed("metadata/annotations.yaml does not exist in the bundle".into())
        })?;
        let annotations: Value = serde_yaml_ng::from_slice(raw)
            .map_err(|_| TaskError::Failed("metadata/annotations.yaml is not valid YAML".into()))?;
        if !annotations.is_object() {
            return Err(TaskError::Failed(
                "The value of metadata/annotations.yaml must be a dictionary".into(),
            ));
        }
        match annotations["annotations"].get(PACKAGE_ANNOTATION) {
            None => {
                return Err(TaskError::Failed(format!(
                    "{PACKAGE_ANNOTATION} is not set in metadata/annotations.yaml"
                )))
            }
            Some(v) if !v.is_string() => {
                return Err(TaskError::Failed(format!(
                    "The value of {PACKAGE_ANNOTATION} in metadata/annotations.yaml is not a string"
                )))
            }
            _ => {}
        }
        Ok(Self {
            files,
            csvs,
            annotations,
            annotations_changed: false,
        })
    }

    fn package(&self) -> String {
        self.annotations["annotations"][PACKAGE_ANNOTATION]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn pull_specs(&self) -> Result<Vec<ImageName>, TaskError> {
        let mut all = Vec::new();
        for csv in self.csvs.values() {
            for image in om::distinct(&om::pull_specs(csv).map_err(TaskError::Failed)?) {
                if !all.contains(&image) {
                    all.push(image);
                }
            }
        }
        Ok(all)
    }

    fn replace(&mut self, map: &BTreeMap<ImageName, ImageName>) -> Result<(), TaskError> {
        for csv in self.csvs.values_mut() {
            om::replace_pull_specs(csv, map).map_err(TaskError::Failed)?;
        }
        Ok(())
    }

    /// The files with the changed documents written back.
    fn into_files(mut self) -> Result<BTreeMap<String, Vec<u8>>, TaskError> {
        for (path, csv) in &self.csvs {
            let text =
                serde_yaml_ng::to_string(csv).map_err(|e| TaskError::Failed(e.to_string()))?;
            self.files.insert(path.clone(), text.into_bytes());
        }
        if self.annotations_changed {
            let text = serde_yaml_ng::to_string(&self.annotations)
                .map_err(|e| TaskError::Failed(e.to_string()))?;
            self.files
                .insert("metadata/annotations.yaml".into(), text.into_bytes());
        }
        Ok(self.files)
    }
}

/// The client a request uses: with the credentials it was sent (`registry_auths`), if any,
/// in place of the service's for the same registries (as IIB merges them into its Docker
/// config). `registry_auths` that expired before the request ran fail it: the service's own
/// credentials never stand in for the user's.
fn request_client(ctx: &TaskContext) -> Result<RegistryClient, TaskError> {
    match ctx.secret(SecretKind::RegistryAuths)? {
        None => Ok(ctx.client.clone()),
        Some(auths) => {
            let mut options = ctx.client_options.clone();
            let extra = iib_oci::auth::CredentialStore::from_docker_config(auths)
                .map_err(|e| TaskError::Failed(format!("The registry_auths are not valid: {e}")))?;
            options.credentials.extend(extra);
            RegistryClient::new(options).map_err(|e| TaskError::Failed(e.to_string()))
        }
    }
}

async fn labels_of(
    client: &RegistryClient,
    image: &ImageName,
) -> Result<BTreeMap<String, String>, TaskError> {
    let spec = image.to_str();
    client
        .labels(&parse(&spec)?)
        .await
        .map_err(|e| TaskError::Failed(format!("Failed to read the labels of {spec}: {e}")))
}

/// Whether a pull spec is a bundle (its `com.redhat.delivery.operator.bundle` label is true).
async fn is_bundle(client: &RegistryClient, image: &ImageName) -> Result<bool, TaskError> {
    let labels = labels_of(client, image).await?;
    Ok(labels
        .get(BUNDLE_LABEL)
        .is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "yes" | "on" | "1")))
}

/// IIB's `_adjust_operator_bundle`: applies the organization's customizations in order and
/// returns the labels to set. With `recursive`, stops at `related_bundles`. The related
/// bundles found are pushed to `related`.
#[allow(clippy::too_many_arguments)]
async fn adjust(
    ctx: &TaskContext,
    client: &RegistryClient,
    bundle: &mut Bundle,
    organization: Option<&str>,
    pinned_by_iib: bool,
    recursive: bool,
    replacements: &BTreeMap<String, String>,
    related: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, TaskError> {
    let configured = organization
        .and_then(|o| ctx.settings.organization_customizations.get(o))
        .filter(|c| !c.is_empty());
    let customizations: Vec<Value> = match configured {
        Some(list) => list.clone(),
        None => DEFAULT_CUSTOMIZATIONS
            .iter()
            .map(|t| serde_json::json!({"type": t}))
            .collect(),
    };
    let mut labels = BTreeMap::new();
    for customization in customizations {
        let kind = customization["type"].as_str().unwrap_or("");
        match kind {
            "package_name_suffix" => {
                let suffix = customization["suffix"].as_str().unwrap_or("");
                let package = bundle.package();
                if !suffix.is_empty() && !package.ends_with(suffix) {
                    let renamed = format!("{package}{suffix}");
                    bundle.annotations["annotations"][PACKAGE_ANNOTATION] =
                        Value::String(renamed.clone());
                    bundle.annotations_changed = true;
                    labels.insert(PACKAGE_ANNOTATION.to_string(), renamed);
                }
            }
            "registry_replacements" => {
                let Some(map) = customization["replacements"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                else {
                    continue;
                };
                let mut replace = BTreeMap::new();
                for image in bundle.pull_specs()? {
                    if let Some(new) = image
                        .registry
                        .as_deref()
                        .and_then(|r| map.get(r))
                        .and_then(Value::as_str)
                    {
                        let mut moved = image.clone();
                        moved.registry = Some(new.to_string());
                        replace.insert(image, moved);
                    }
                }
                bundle.replace(&replace)?;
            }
            "csv_annotations" => {
                let Some(map) = customization["annotations"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                else {
                    continue;
                };
                if organization.is_none() {
                    continue;
                }
                let package = bundle.package();
                for csv in bundle.csvs.values_mut() {
                    for (key, template) in map {
                        let value = template
                            .as_str()
                            .unwrap_or("")
                            .replace("{package_name}", &package);
                        if !csv["metadata"]["annotations"].is_object() {
                            csv["metadata"]["annotations"] = serde_json::json!({});
                        }
                        csv["metadata"]["annotations"][key] = Value::String(value);
                    }
                }
            }
            "image_name_from_labels" => {
                let Some(template) = customization["template"].as_str().filter(|t| !t.is_empty())
                else {
                    continue;
                };
                let mut replace = BTreeMap::new();
                for image in bundle.pull_specs()? {
                    let image_labels = labels_of(client, &image).await?;
                    let name = match fill_template(template, &image_labels) {
                        Ok(name) => name,
                        Err(TemplateError::MissingLabel) => {
                            let available: Vec<&str> =
                                image_labels.keys().map(String::as_str).collect();
                            return Err(TaskError::Failed(format!(
                                "Pull spec {} is missing one or more label(s) required in the image_name_from_labels {template}. Available labels: {}",
                                image.to_str(),
                                available.join(", ")
                            )));
                        }
                        Err(TemplateError::TooLong) => {
                            return Err(TaskError::Failed(format!(
                                "The image name that the image_name_from_labels template {template} makes from the labels of {} is longer than {MAX_IMAGE_NAME} characters, the longest repository name a registry accepts; check the labels of that image",
                                image.to_str()
                            )));
                        }
                    };
                    let mut renamed = image.clone();
                    match name.split_once('/') {
                        Some((namespace, repo)) => {
                            renamed.namespace = Some(namespace.to_string());
                            renamed.repo = repo.to_string();
                        }
                        None => {
                            renamed.namespace = None;
                            renamed.repo = name;
                        }
                    }
                    if let Err(e) = renamed.to_str().parse::<iib_oci::Reference>() {
                        return Err(TaskError::Failed(format!(
                            "The image_name_from_labels template {template} makes the pull spec {} out of {}: {e}; check the labels of {1}",
                            renamed.to_str(),
                            image.to_str()
                        )));
                    }
                    replace.insert(image, renamed);
                }
                bundle.replace(&replace)?;
            }
            "enclose_repo" => {
                let namespace = customization["namespace"].as_str().unwrap_or("");
                let glue = customization["enclosure_glue"].as_str().unwrap_or("");
                if namespace.is_empty() || glue.is_empty() {
                    continue;
                }
                let mut replace = BTreeMap::new();
                for image in bundle.pull_specs()? {
                    let mut parts: Vec<String> =
                        image.repo.split('/').map(str::to_string).collect();
                    if let Some(ns) = image.namespace.as_deref().filter(|n| *n != namespace) {
                        parts.insert(0, ns.to_string());
                    }
                    let mut enclosed = image.clone();
                    enclosed.namespace = Some(namespace.to_string());
                    enclosed.repo = parts.join(glue);
                    replace.insert(image, enclosed);
                }
                bundle.replace(&replace)?;
            }
            "related_bundles" => {
                if recursive {
                    return Ok(labels);
                }
                for image in bundle.pull_specs()? {
                    if is_bundle(client, &image).await? {
                        related.push(image.to_str());
                    }
                }
                write_artifact(
                    ctx,
                    ctx.settings.related_bundles_dir.as_deref(),
                    crate::artifacts::Artifact::RelatedBundles,
                    related,
                )
                .await?;
            }
            "resolve_image_pullspecs" => {
                if pinned_by_iib {
                    continue;
                }
                let mut replace = BTreeMap::new();
                for image in bundle.pull_specs()? {
                    let resolved = resolve_with(client, &image.to_str()).await?;
                    if !image.is_pinned() {
                        if let Some(pinned) = ImageName::parse(&resolved) {
                            replace.insert(image, pinned);
                            labels.insert(PINNED_LABEL.to_string(), "true".to_string());
                        }
                    }
                }
                if !replace.is_empty() {
                    bundle.replace(&replace)?;
                }
            }
            "perform_bundle_replacements" => {
                let mut replace = BTreeMap::new();
                for (old, new) in replacements {
                    let (Some(old_name), Some(new_name)) =
                        (ImageName::parse(old), ImageName::parse(new))
                    else {
                        continue;
                    };
                    if is_bundle(client, &old_name).await? {
                        replace.insert(old_name, new_name);
                    }
                }
                bundle.replace(&replace)?;
            }
            other => ctx
                .log
                .warn(format!("ignoring the unknown customization {other:?}")),
        }
    }
    Ok(labels)
}

/// The longest image name (`namespace/repo`) `image_name_from_labels` may make: a registry
/// refuses longer repository names, and the cap bounds what labels can make us build.
const MAX_IMAGE_NAME: usize = 255;

#[derive(Debug, PartialEq, Eq)]
enum TemplateError {
    /// A `{label}` the image does not have.
    MissingLabel,
    /// The name would be longer than [`MAX_IMAGE_NAME`].
    TooLong,
}

/// Fills the `{label}` fields of an `image_name_from_labels` template with `labels` in one
/// pass from left to right, as Python's `str.format` does for IIB: a label's value is copied,
/// never scanned again, so a value holding `{name}` stays as it is (scanning values again made
/// a value `{name}` loop forever and `x{name}` grow without end). `{{` and `}}` are literal
/// braces; a brace with no partner is kept as it is.
fn fill_template(
    template: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut name = String::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        name.push_str(&rest[..at]);
        let tail = &rest[at..];
        let field = tail.strip_prefix('{').and_then(|t| t.split_once('}'));
        if tail.starts_with("{{") || tail.starts_with("}}") {
            name.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some((key, after)) = field {
            let value = labels.get(key).ok_or(TemplateError::MissingLabel)?;
            name.push_str(value);
            rest = after;
        } else {
            name.push_str(&tail[..1]);
            rest = &tail[1..];
        }
        if name.len() > MAX_IMAGE_NAME {
            return Err(TemplateError::TooLong);
        }
    }
    name.push_str(rest);
    if name.len() > MAX_IMAGE_NAME {
        return Err(TemplateError::TooLong);
    }
    Ok(name)
}

async fn resolve_with(client: &RegistryClient, pull_spec: &str) -> Result<String, TaskError> {
    let reference = parse(pull_spec)?;
    let digest = client.resolve(&reference).await.map_err(|e| {
        TaskError::Failed(format!(
            "Failed to resolve the container image {pull_spec}: {e}"
        ))
    })?;
    Ok(reference.with_digest(digest).to_string())
}

/// IIB's artifact file `{dir}/{id}_{name}.json`: a JSON list as Python's `json.dump` writes it,
/// uploaded to S3 too when a bucket is configured.
async fn write_artifact(
    ctx: &TaskContext,
    dir: Option<&std::path::Path>,
    artifact: crate::artifacts::Artifact,
    list: &[String],
) -> Result<(), TaskError> {
    let name = artifact.prefix();
    let items: Vec<String> = list
        .iter()
        .map(|i| serde_json::to_string(i).expect("strings serialize"))
        .collect();
    let text = format!("[{}]", items.join(", "));
    if let Some(bucket) = &ctx.settings.s3 {
        bucket
            .put(artifact, ctx.id, text.clone().into_bytes())
            .await
            .map_err(TaskError::Failed)?;
        ctx.log.info(format!(
            "Uploaded the {name} file to the S3 bucket {}",
            bucket.bucket()
        ));
    }
    let Some(dir) = dir else {
        if ctx.settings.s3.is_some() {
            return Ok(());
        }
        return Err(TaskError::Failed(format!(
            "The directory for the {name} files is not configured on the workers"
        )));
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| TaskError::Failed(format!("Cannot write the {name} file: {e}")))?;
    let path = dir.join(artifact.file_name(ctx.id));
    std::fs::write(&path, text)
        .map_err(|e| TaskError::Failed(format!("Cannot write {}: {e}", path.display())))?;
    ctx.log
        .info(format!("Wrote the {name} file {}", path.display()));
    Ok(())
}

/// A bundle image's files and labels (read with the bundle-size limits).
async fn bundle_files(
    client: &RegistryClient,
    pull_spec: &str,
) -> Result<(BTreeMap<String, Vec<u8>>, BTreeMap<String, String>), TaskError> {
    let image = client
        .bundle_image(&parse(pull_spec)?)
        .await
        .map_err(|e| TaskError::Failed(format!("Failed to read the bundle {pull_spec}: {e}")))?;
    Ok((image.files, image.labels))
}

pub async fn regenerate_bundle(
    ctx: &TaskContext,
    params: &RegenerateBundleParams,
) -> Result<String, TaskError> {
    ctx.progress("Resolving from_bundle_image").await?;
    let client = request_client(ctx)?;
    let resolved = resolve_with(&client, &params.from_bundle_image).await?;
    // Every read goes through the request's client: the bundle may need its registry_auths.
    let arches: BTreeSet<String> = client
        .arches(&parse(&resolved)?)
        .await
        .map_err(|e| TaskError::Failed(format!("Failed to read the arches of {resolved}: {e}")))?
        .into_iter()
        .collect();
    if arches.is_empty() {
        return Err(TaskError::Failed(format!(
            "No arches were found in the resolved from_bundle_image {resolved}"
        )));
    }
    let (files, original_labels) = bundle_files(&client, &resolved).await?;
    let pinned_by_iib = original_labels
        .get(PINNED_LABEL)
        .is_some_and(|v| v == "true");
    ctx.facts(BuildFacts {
        from_bundle_image_resolved: Some(resolved.clone()),
        ..BuildFacts::default()
    })
    .await?;
    ctx.progress(format!(
        "Regenerating the bundle image for the following arches: {}",
        arches.iter().cloned().collect::<Vec<_>>().join(", ")
    ))
    .await?;
    let mut bundle = Bundle::read(files)?;
    let mut related = Vec::new();
    let labels = adjust(
        ctx,
        &client,
        &mut bundle,
        params.organization.as_deref(),
        pinned_by_iib,
        false,
        &params.bundle_replacements,
        &mut related,
    )
    .await?;
    let mut files = bundle.into_files()?;
    // The new manifests and metadata replace the old ones wholesale.
    files.insert("manifests/.wh..wh..opq".into(), Vec::new());
    files.insert("metadata/.wh..wh..opq".into(), Vec::new());
    let changes = ConfigChanges {
        labels,
        created_by: format!("iib request {}: the regenerated bundle", ctx.id),
        ..ConfigChanges::default()
    };
    let target_spec = ctx
        .settings
        .push_target(ctx.id)
        .map_err(TaskError::Failed)?;
    let target = parse(&target_spec)?;
    let arch_list: Vec<String> = arches.iter().cloned().collect();
    ctx.progress("Creating the manifest list").await?;
    client
        .build(
            &parse(&resolved)?,
            &target,
            &arch_list,
            &[crate::blocking::run(move || layer(&files)).await],
            &changes,
            None,
        )
        .await
        .map_err(|e| TaskError::Failed(format!("Failed to build the bundle image: {e}")))?;
    ctx.facts(BuildFacts {
        arches,
        bundle_image: Some(crate::workers::index_image::output_pull_spec(
            ctx,
            &target_spec,
        )),
        ..BuildFacts::default()
    })
    .await?;
    Ok("The request completed successfully".into())
}

pub async fn recursive_related_bundles(
    ctx: &TaskContext,
    params: &RecursiveRelatedBundlesParams,
) -> Result<String, TaskError> {
    ctx.progress("Resolving parent_bundle_image").await?;
    let client = request_client(ctx)?;
    let parent = resolve_with(&client, &params.parent_bundle_image).await?;
    ctx.facts(BuildFacts {
        parent_bundle_image_resolved: Some(parent.clone()),
        ..BuildFacts::default()
    })
    .await?;
    ctx.progress(format!(
        "Finding recursive related bundles for the bundle: {}",
        params.parent_bundle_image
    ))
    .await?;
    let limit = ctx.settings.max_recursive_related_bundles;
    let mut result = vec![parent.clone()];
    let mut level = vec![parent];
    let mut total = 0usize;
    while !level.is_empty() {
        let mut next = Vec::new();
        for bundle_image in &level {
            let (files, labels) = bundle_files(&client, bundle_image).await?;
            let mut bundle = Bundle::read(files)?;
            if params.organization.is_some() {
                let pinned = labels.get(PINNED_LABEL).is_some_and(|v| v == "true");
                adjust(
                    ctx,
                    &client,
                    &mut bundle,
                    params.organization.as_deref(),
                    pinned,
                    true,
                    &BTreeMap::new(),
                    &mut Vec::new(),
                )
                .await?;
            }
            let mut children = Vec::new();
            let mut seen = BTreeSet::new();
            for image in bundle.pull_specs()? {
                if seen.insert(image.clone()) && is_bundle(&client, &image).await? {
                    children.push(image.to_str());
                }
            }
            total += children.len();
            if total >= limit {
                return Err(TaskError::Failed(
                    "Max number of related bundles exceeded. Potential DOS attack!".into(),
                ));
            }
            next.extend(children);
        }
        result.extend(next.iter().cloned());
        level = next;
    }
    ctx.progress("Writing recursive related bundles to a file")
        .await?;
    result.reverse();
    write_artifact(
        ctx,
        ctx.settings.recursive_related_bundles_dir.as_deref(),
        crate::artifacts::Artifact::RecursiveRelatedBundles,
        &result,
    )
    .await?;
    Ok("The request completed successfully".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_template_is_filled_in_one_pass_and_values_are_never_scanned_again() {
        let l = labels(&[
            ("name", "{name}"),
            ("grow", "x{grow}"),
            ("component", "rhel8/operator"),
            ("version", "1.2"),
        ]);
        assert_eq!(fill_template("{name}", &l).unwrap(), "{name}");
        assert_eq!(fill_template("{grow}", &l).unwrap(), "x{grow}");
        assert_eq!(
            fill_template("{component}-{version}", &l).unwrap(),
            "rhel8/operator-1.2"
        );
        // Python's escapes, and braces without a partner kept.
        assert_eq!(fill_template("a{{b}}c", &l).unwrap(), "a{b}c");
        assert_eq!(fill_template("a}b{c", &l).unwrap(), "a}b{c");
        assert_eq!(
            fill_template("{missing}", &l),
            Err(TemplateError::MissingLabel)
        );
    }

    #[test]
    fn a_name_longer_than_a_repository_name_may_be_is_refused() {
        let long = "a".repeat(200);
        let l = labels(&[("long", &long)]);
        assert_eq!(
            fill_template("{long}{long}", &l),
            Err(TemplateError::TooLong)
        );
        assert_eq!(
            fill_template(&"b".repeat(MAX_IMAGE_NAME + 1), &l),
            Err(TemplateError::TooLong)
        );
        assert!(fill_template("{long}", &l).is_ok());
    }
}
