//! A bundle's CSVs as IIB's `operator-manifest` library (0.0.5) sees them: the pull specs they
//! name (related images, `containerImage` annotations, containers and init containers,
//! `RELATED_IMAGE_*` variables, pull specs inside other annotations), replacing pull specs
//! everywhere, and rebuilding `spec.relatedImages`. Pure: values in, values out.

use serde_json::Value;
use std::collections::BTreeMap;

/// A pull spec in parts, compared as operator-manifest's `ImageName` compares them (a missing
/// tag is `latest`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    pub registry: Option<String>,
    pub namespace: Option<String>,
    pub repo: String,
    pub tag: String,
}

impl ImageName {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || text.contains(char::is_whitespace) {
            return None;
        }
        let parts: Vec<&str> = text.splitn(3, '/').collect();
        let (registry, namespace, rest) = match parts.as_slice() {
            [one] => (None, None, *one),
            [first, rest] if first.contains('.') || first.contains(':') => {
                (Some(*first), None, *rest)
            }
            [first, rest] => (None, Some(*first), *rest),
            [registry, namespace, rest] => (Some(*registry), Some(*namespace), *rest),
            _ => return None,
        };
        let (repo, tag) = if let Some((repo, digest)) = rest.rsplit_once('@') {
            (repo, digest.to_string())
        } else if let Some((repo, tag)) = rest.rsplit_once(':') {
            (repo, tag.to_string())
        } else {
            (rest, "latest".to_string())
        };
        if repo.is_empty() || tag.is_empty() {
            return None;
        }
        Some(Self {
            registry: registry.map(str::to_string),
            namespace: namespace.map(str::to_string),
            repo: repo.to_string(),
            tag,
        })
    }

    pub fn to_str(&self) -> String {
        let mut out = String::new();
        if let Some(registry) = &self.registry {
            out.push_str(registry);
            out.push('/');
        }
        if let Some(namespace) = &self.namespace {
            out.push_str(namespace);
            out.push('/');
        }
        out.push_str(&self.repo);
        if self.tag.contains(':') {
            out.push('@');
        } else {
            out.push(':');
        }
        out.push_str(&self.tag);
        out
    }

    /// Whether it names a digest (`sha256:…`).
    pub fn is_pinned(&self) -> bool {
        self.tag.contains(':')
    }
}

/// Where a pull spec was found, and the name `set_related_images` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub image: ImageName,
    pub name: String,
}

fn heuristic_pull_specs(text: &str) -> Vec<ImageName> {
    let mut out = Vec::new();
    let is_candidate = |c: char| c.is_ascii_alphanumeric() || "/-._@:".contains(c);
    for run in text.split(|c: char| !is_candidate(c)) {
        let run = run.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let Some((registry, rest)) = run.split_once('/') else {
            continue;
        };
        let host = registry.split(':').next().unwrap_or("");
        if !host.contains('.') || rest.is_empty() {
            continue;
        }
        let tagged = rest.contains('@') && rest.contains("sha256:")
            || rest
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
        if !tagged {
            continue;
        }
        if let Some(image) = ImageName::parse(run) {
            out.push(image);
        }
    }
    out
}

fn containers(csv: &Value) -> Vec<(&str, &Value)> {
    let mut out = Vec::new();
    let deployments = csv["spec"]["install"]["spec"]["deployments"].as_array();
    for deployment in deployments.into_iter().flatten() {
        let pod = &deployment["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                out.push((list, container));
            }
        }
    }
    out
}

/// Every `containerImage` annotation anywhere (not inside nested `metadata`).
fn container_image_annotations(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(image) = map
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("containerImage"))
                .and_then(Value::as_str)
            {
                out.push(image.to_string());
            }
            for (key, child) in map {
                if key != "metadata" {
                    container_image_annotations(child, out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| container_image_annotations(i, out)),
        _ => {}
    }
}

/// The pull specs a CSV names, in operator-manifest's order, with their related-image names.
pub fn pull_specs(csv: &Value) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    for related in csv["spec"]["relatedImages"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(image) = related["image"].as_str().and_then(ImageName::parse) {
            found.push(Found {
                name: related["name"].as_str().unwrap_or("").to_string(),
                image,
            });
        }
    }
    let mut annotations = Vec::new();
    container_image_annotations(csv, &mut annotations);
    for text in annotations {
        if let Some(image) = ImageName::parse(&text) {
            found.push(Found {
                name: annotation_name(&image),
                image,
            });
        }
    }
    for list in ["containers", "initContainers"] {
        for (kind, container) in containers(csv) {
            if kind != list {
                continue;
            }
            if let Some(image) = container["image"].as_str().and_then(ImageName::parse) {
                found.push(Found {
                    name: container["name"].as_str().unwrap_or("").to_string(),
                    image,
                });
            }
        }
    }
    for (_, container) in containers(csv) {
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap_or("");
            if let Some(suffix) = name.strip_prefix("RELATED_IMAGE_") {
                if variable.get("valueFrom").is_some() {
                    return Err(format!(
                        "{name}: \"valueFrom\" references are not supported"
                    ));
                }
                if let Some(image) = variable["value"].as_str().and_then(ImageName::parse) {
                    found.push(Found {
                        name: suffix.to_lowercase(),
                        image,
                    });
                }
            }
        }
    }
    if let Some(map) = csv["metadata"]["annotations"].as_object() {
        for (key, value) in map {
            if key == "containerImage" {
                continue;
            }
            for image in value.as_str().map(heuristic_pull_specs).unwrap_or_default() {
                found.push(Found {
                    name: annotation_name(&image),
                    image,
                });
            }
        }
    }
    Ok(found)
}

fn annotation_name(image: &ImageName) -> String {
    format!(
        "{}-{}-annotation",
        image.repo,
        image.tag.trim_start_matches("sha256:")
    )
}

/// The distinct pull specs of a CSV, first occurrence first.
pub fn distinct(found: &[Found]) -> Vec<ImageName> {
    let mut out: Vec<ImageName> = Vec::new();
    for f in found {
        if !out.contains(&f.image) {
            out.push(f.image.clone());
        }
    }
    out
}

/// Replaces the pull specs of `map` in every string of the CSV (annotation values are
/// rewritten where a pull spec occurs inside them).
pub fn replace_everywhere(csv: &mut Value, map: &BTreeMap<ImageName, ImageName>) {
    fn walk(value: &mut Value, map: &BTreeMap<ImageName, ImageName>, in_annotations: bool) {
        match value {
            Value::String(text) => {
                if let Some(new) = ImageName::parse(text).and_then(|i| map.get(&i)) {
                    *text = new.to_str();
                } else if in_annotations {
                    for image in heuristic_pull_specs(text) {
                        if let Some(new) = map.get(&image) {
                            let old = image.to_str();
                            if text.contains(&old) {
                                *text = text.replace(&old, &new.to_str());
                            }
                        }
                    }
                }
            }
            Value::Object(object) => {
                for (key, child) in object.iter_mut() {
                    walk(child, map, in_annotations || key == "annotations");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, map, in_annotations)),
            _ => {}
        }
    }
    if !map.is_empty() {
        walk(csv, map, false);
    }
}

/// Rebuilds `spec.relatedImages` from the pull specs found, first occurrence per name; a name
/// given two different images is an error.
pub fn set_related_images(csv: &mut Value) -> Result<(), String> {
    let found = pull_specs(csv)?;
    let mut by_name: Vec<(String, ImageName)> = Vec::new();
    for f in found {
        match by_name.iter().find(|(name, _)| *name == f.name) {
            Some((_, image)) if *image != f.image => {
                return Err(format!(
                    "Found conflicts when setting relatedImages: {}: {} X {}",
                    f.name,
                    image.to_str(),
                    f.image.to_str()
                ))
            }
            Some(_) => {}
            None => by_name.push((f.name, f.image)),
        }
    }
    let list: Vec<Value> = by_name
        .into_iter()
        .map(|(name, image)| serde_json::json!({"name": name, "image": image.to_str()}))
        .collect();
    if !csv["spec"].is_object() {
        csv["spec"] = serde_json::json!({});
    }
    csv["spec"]["relatedImages"] = Value::Array(list);
    Ok(())
}

/// Whether the CSV lists related images already.
pub fn has_related_images(csv: &Value) -> bool {
    csv["spec"]["relatedImages"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
}

/// operator-manifest's `_replace_csv_pullspecs`: replace, then fill `relatedImages` if empty.
pub fn replace_pull_specs(
    csv: &mut Value,
    map: &BTreeMap<ImageName, ImageName>,
) -> Result<(), String> {
    replace_everywhere(csv, map);
    if !has_related_images(csv) {
        set_related_images(csv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv() -> Value {
        json!({
            "kind": "ClusterServiceVersion",
            "metadata": {"name": "op.v1", "annotations": {
                "containerImage": "quay.io/ns/operator:v1",
                "alm-examples": "uses registry.example.com/ns/helper:2.0 and more"}},
            "spec": {"install": {"strategy": "deployment", "spec": {"deployments": [{"name": "d", "spec": {"template": {"spec": {
                "containers": [{"name": "manager", "image": "quay.io/ns/operator:v1",
                    "env": [{"name": "RELATED_IMAGE_DB", "value": "registry.example.com/db/postgres@sha256:abc"}]}],
                "initContainers": [{"name": "init", "image": "quay.io/ns/init:v1"}]}}}}]}}}
        })
    }

    #[test]
    fn image_names_parse_and_print_as_operator_manifest_does() {
        let image = ImageName::parse("quay.io/ns/sub/repo:tag").unwrap();
        assert_eq!(image.registry.as_deref(), Some("quay.io"));
        assert_eq!(image.namespace.as_deref(), Some("ns"));
        assert_eq!(image.repo, "sub/repo");
        assert_eq!(image.to_str(), "quay.io/ns/sub/repo:tag");
        assert_eq!(
            ImageName::parse("ns/repo"),
            ImageName::parse("ns/repo:latest")
        );
        assert_eq!(
            ImageName::parse("r.io/ns/repo@sha256:abc")
                .unwrap()
                .to_str(),
            "r.io/ns/repo@sha256:abc"
        );
        assert!(ImageName::parse("r.io/ns/repo@sha256:abc")
            .unwrap()
            .is_pinned());
        assert_eq!(
            ImageName::parse("localhost:5000/repo:1")
                .unwrap()
                .registry
                .as_deref(),
            Some("localhost:5000")
        );
    }

    #[test]
    fn pull_specs_are_found_where_operator_manifest_looks() {
        let found: Vec<String> = distinct(&pull_specs(&csv()).unwrap())
            .iter()
            .map(ImageName::to_str)
            .collect();
        assert_eq!(
            found,
            vec![
                "quay.io/ns/operator:v1",
                "quay.io/ns/init:v1",
                "registry.example.com/db/postgres@sha256:abc",
                "registry.example.com/ns/helper:2.0",
            ]
        );
    }

    #[test]
    fn replacing_rewrites_every_occurrence_and_fills_related_images() {
        let mut csv = csv();
        let map = BTreeMap::from([
            (
                ImageName::parse("quay.io/ns/operator:v1").unwrap(),
                ImageName::parse("mirror.io/ns/operator@sha256:111").unwrap(),
            ),
            (
                ImageName::parse("registry.example.com/ns/helper:2.0").unwrap(),
                ImageName::parse("mirror.io/ns/helper:2.0").unwrap(),
            ),
        ]);
        replace_pull_specs(&mut csv, &map).unwrap();
        assert_eq!(
            csv["metadata"]["annotations"]["containerImage"],
            "mirror.io/ns/operator@sha256:111"
        );
        assert_eq!(
            csv["metadata"]["annotations"]["alm-examples"],
            "uses mirror.io/ns/helper:2.0 and more"
        );
        let container = &csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]
            ["spec"]["containers"][0];
        assert_eq!(container["image"], "mirror.io/ns/operator@sha256:111");
        let names: Vec<&str> = csv["spec"]["relatedImages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "operator-111-annotation",
                "manager",
                "init",
                "db",
                "helper-2.0-annotation"
            ]
        );
    }

    #[test]
    fn value_from_related_images_are_refused() {
        let mut csv = csv();
        csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]
            ["containers"][0]["env"] =
            json!([{"name": "RELATED_IMAGE_X", "valueFrom": {"configMapKeyRef": {}}}]);
        assert_eq!(
            pull_specs(&csv).unwrap_err(),
            "RELATED_IMAGE_X: \"valueFrom\" references are not supported"
        );
    }
}
