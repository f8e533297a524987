//! The catalog engine against real catalogs as opm wrote them: the 29-package community
//! catalog of the shared fixtures (`IIB_FIXTURES`, else `../shared/fixtures` beside the clone,
//! where CI puts it), and small catalogs made here.

use iib::catalog::load::load_dir;
use std::path::PathBuf;

/// What the fixture's slurm-operator/catalog.yaml holds before it breaks off.
const SLURM_CHANNELS: usize = 2;
const SLURM_BUNDLES: usize = 5;

fn fixtures() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("IIB_FIXTURES").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures"
        ))),
        Some(PathBuf::from("/work/shared/fixtures")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("catalogs/community-v4.18").is_dir())
}

#[test]
fn the_community_catalog_loads_and_a_truncated_file_is_refused() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let (mut packages, mut channels, mut bundles) = (0, 0, 0);
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        match load_dir(&dir) {
            Ok(config) => {
                packages += config.packages.len();
                channels += config.channels.len();
                bundles += config.bundles.len();
            }
            Err(e) => refused.push((
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                e.to_string(),
            )),
        }
    }
    // The fixture's slurm-operator/catalog.yaml ends in the middle of its last bundle.
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "slurm-operator");
    assert_eq!(
        refused[0].1,
        "catalog.yaml: a blob has no \"schema\" string"
    );
    // The 29-package catalog has 70 channels and 651 complete bundles; slurm-operator holds
    // SLURM_CHANNELS of the channels and SLURM_BUNDLES of the complete bundles.
    assert_eq!(
        (packages, channels, bundles),
        (28, 70 - SLURM_CHANNELS, 651 - SLURM_BUNDLES)
    );
    let ecr = load_dir(&root.join("ecr-secret-operator")).unwrap();
    let bundle = ecr
        .bundles
        .iter()
        .find(|b| b.name == "ecr-secret-operator.v0.3.2")
        .unwrap();
    assert_eq!(bundle.version(), Some("0.3.2"));
    assert!(bundle
        .image
        .starts_with("quay.io/openshift-community-operators/ecr-secret-operator@sha256:"));
    assert_eq!(ecr.packages[0].default_channel, "alpha");
}

use iib::catalog::load::load_files;
use iib::catalog::model::{validate, ValidationError};

#[test]
fn every_complete_community_package_is_valid() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.ends_with("slurm-operator") {
            continue;
        }
        let config = load_dir(&dir).unwrap();
        assert_eq!(validate(&config), Ok(()), "{}", dir.display());
        checked += 1;
    }
    assert_eq!(checked, 28);
}

/// A channel entry: (name, replaces, skips).
type Entry<'a> = (&'a str, &'a str, &'a [&'a str]);

/// A one-package catalog: `entries` per channel as (name, replaces, skips); bundles for
/// every entry name unless listed in `without_bundles`.
fn catalog(
    default_channel: &str,
    channels: &[(&str, &[Entry])],
    without_bundles: &[&str],
) -> String {
    let mut out =
        format!(r#"{{"schema":"olm.package","name":"demo","defaultChannel":"{default_channel}"}}"#);
    let mut names = std::collections::BTreeSet::new();
    for (channel, entries) in channels {
        let entries: Vec<String> = entries
            .iter()
            .map(|(name, replaces, skips)| {
                names.insert(name.to_string());
                let skips: Vec<String> = skips.iter().map(|s| format!("{s:?}")).collect();
                format!(
                    r#"{{"name":"{name}","replaces":"{replaces}","skips":[{}]}}"#,
                    skips.join(",")
                )
            })
            .collect();
        out.push_str(&format!(
            r#"{{"schema":"olm.channel","package":"demo","name":"{channel}","entries":[{}]}}"#,
            entries.join(",")
        ));
    }
    for name in names
        .iter()
        .filter(|n| !without_bundles.contains(&n.as_str()))
    {
        out.push_str(&format!(
            r#"{{"schema":"olm.bundle","package":"demo","name":"{name}","image":"quay.io/demo/bundle:{name}","properties":[{{"type":"olm.package","value":{{"packageName":"demo","version":"1.0.0"}}}}]}}"#
        ));
    }
    out
}

fn problems(text: &str) -> ValidationError {
    let config = load_files([("catalog.json", text.as_bytes())]).unwrap();
    validate(&config).unwrap_err()
}

fn invalid(text: &str) -> Vec<String> {
    match problems(text) {
        ValidationError::Invalid(all) => all,
        other => panic!("expected model problems, got {other}"),
    }
}

#[test]
fn graph_problems_are_reported_as_opm_words_them() {
    let two_heads = catalog(
        "stable",
        &[("stable", &[("a", "", &[]), ("b", "", &[])])],
        &[],
    );
    assert_eq!(
        invalid(&two_heads),
        ["invalid package \"demo\": invalid channel \"stable\": multiple channel heads found in graph: a, b"]
    );
    let cycle = catalog(
        "stable",
        &[(
            "stable",
            &[("c", "b", &[]), ("b", "a", &[]), ("a", "b", &[])],
        )],
        &[],
    );
    assert_eq!(
        invalid(&cycle),
        ["invalid package \"demo\": invalid channel \"stable\": detected cycle in replaces chain of upgrade graph: b -> a -> b"]
    );
    let no_head = catalog(
        "stable",
        &[("stable", &[("a", "b", &[]), ("b", "a", &[])])],
        &[],
    );
    assert_eq!(
        invalid(&no_head),
        ["invalid package \"demo\": invalid channel \"stable\": no channel head found in graph"]
    );
    let skipped_is_fine = catalog(
        "stable",
        &[("stable", &[("b", "", &["a"]), ("a", "", &[])])],
        &[],
    );
    let config = load_files([("c.json", skipped_is_fine.as_bytes())]).unwrap();
    assert_eq!(validate(&config), Ok(()));
}

#[test]
fn package_and_channel_problems_are_reported() {
    let no_default = catalog("", &[("stable", &[("a", "", &[])])], &[]);
    assert_eq!(
        invalid(&no_default),
        ["invalid package \"demo\": default channel must be set"]
    );
    let missing_default = catalog("fast", &[("stable", &[("a", "", &[])])], &[]);
    assert_eq!(
        invalid(&missing_default),
        ["invalid package \"demo\": invalid channel \"fast\": channel must contain at least one bundle"]
    );
    let no_channel = r#"{"schema":"olm.package","name":"demo","defaultChannel":"stable"}"#;
    assert_eq!(
        invalid(no_channel),
        ["invalid package \"demo\": package must contain at least one channel"]
    );
}

#[test]
fn conversion_problems_stop_at_the_first() {
    let missing_bundle = catalog(
        "stable",
        &[("stable", &[("a", "", &[]), ("b", "a", &[])])],
        &["b"],
    );
    assert_eq!(
        problems(&missing_bundle),
        ValidationError::Conversion(
            "no olm.bundle blobs found in package \"demo\" for olm.channel entries [b]".into()
        )
    );
    let twice = format!(
        "{}{}",
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}"#,
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}"#
    );
    assert_eq!(problems(&twice).to_string(), "duplicate package \"demo\"");
    let bad_name = r#"{"schema":"olm.package","name":"Demo_1","defaultChannel":"s"}"#;
    assert!(problems(bad_name)
        .to_string()
        .starts_with("invalid package name \"Demo_1\": [a lowercase RFC 1123 label"));
    let stray = r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}{"schema":"olm.channel","package":"other","name":"s","entries":[]}"#;
    assert_eq!(
        problems(stray).to_string(),
        "unknown package \"other\" for channel \"s\""
    );
    let orphan = format!(
        "{}{}",
        catalog("stable", &[("stable", &[("a", "", &[])])], &[]),
        r#"{"schema":"olm.bundle","package":"demo","name":"z","image":"q/z:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"2.0.0"}}]}"#
    );
    assert_eq!(
        problems(&orphan).to_string(),
        "package \"demo\", bundle \"z\" not found in any channel entries"
    );
}

/// The community bundles of the fixtures: (package dir, bundle name, version dir).
fn community_bundles(fixtures: &std::path::Path) -> Vec<(PathBuf, String, PathBuf)> {
    let mut out = Vec::new();
    let root = fixtures.join("community-operators");
    let mut packages: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundles.json").is_file())
        .collect();
    packages.sort();
    for package in packages {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(package.join("bundles.json")).unwrap()).unwrap();
        for (name, dir) in index["bundles"].as_object().unwrap() {
            out.push((
                package.clone(),
                name.clone(),
                package.join(dir.as_str().unwrap()),
            ));
        }
    }
    out
}

/// A bundle directory's files, relative to it.
fn bundle_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["manifests", "metadata"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                files.push((format!("{sub}/{name}"), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

/// opm's catalog for a fixture package, blob by blob, and the catalog version it was made for.
fn golden_blobs(package: &std::path::Path) -> (Vec<serde_json::Value>, String) {
    use serde::Deserialize;
    let text = std::fs::read_to_string(package.join("catalog.yaml")).unwrap();
    let blobs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(package.join("bundles.json")).unwrap()).unwrap();
    (
        blobs,
        index["catalog_version"].as_str().unwrap().to_string(),
    )
}

/// Catalogs for OpenShift 4.12 were made by an opm that kept bundle objects; later ones carry
/// `olm.csv.metadata`.
fn objects_as_for(catalog_version: &str) -> iib::catalog::render::ObjectsAs {
    use iib::catalog::render::ObjectsAs;
    let minor: u32 = catalog_version
        .trim_start_matches("v4.")
        .parse()
        .unwrap_or(99);
    if minor <= 12 {
        ObjectsAs::BundleObjects
    } else {
        ObjectsAs::CsvMetadata
    }
}

#[test]
fn every_community_bundle_renders_as_opm_rendered_it() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let bundles = community_bundles(&fixtures);
    assert_eq!(bundles.len(), 16, "the fixtures hold 16 bundles");
    for (package, name, dir) in bundles {
        let (blobs, catalog_version) = golden_blobs(&package);
        let golden = blobs
            .iter()
            .find(|b| b["schema"] == "olm.bundle" && b["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in {}", package.display()));
        let image = golden["image"].as_str().unwrap();
        let files = bundle_files(&dir);
        let rendered = iib::catalog::render::render_bundle(
            files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
            image,
            objects_as_for(&catalog_version),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = serde_json::to_value(&rendered.bundle).unwrap();
        if &ours != golden {
            for (key, want) in golden.as_object().unwrap() {
                if ours.get(key) != Some(want) {
                    if key == "properties" {
                        let ours_props = ours[key].as_array().cloned().unwrap_or_default();
                        for (i, want_prop) in want.as_array().unwrap().iter().enumerate() {
                            if ours_props.get(i) != Some(want_prop) {
                                panic!(
                                    "{name}: property {i} differs:\n ours: {}\n opm:  {}",
                                    ours_props
                                        .get(i)
                                        .map(|p| p.to_string())
                                        .unwrap_or_default()
                                        .chars()
                                        .take(600)
                                        .collect::<String>(),
                                    want_prop.to_string().chars().take(600).collect::<String>()
                                );
                            }
                        }
                    }
                    panic!(
                        "{name}: {key} differs:\n ours: {}\n opm:  {}",
                        ours.get(key).map(|v| v.to_string()).unwrap_or_default(),
                        want
                    );
                }
            }
            panic!("{name}: extra keys in ours: {ours}");
        }
    }
}

#[test]
fn every_community_package_is_written_back_byte_for_byte_as_opm_wrote_it() {
    use iib::catalog::write::{to_files, Format};
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let mut identical = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let package = dir.file_name().unwrap().to_string_lossy().to_string();
        let original = std::fs::read_to_string(dir.join("catalog.yaml")).unwrap();
        if package == "slurm-operator" {
            continue; // The fixture breaks off mid-line (see the load test).
        }
        let config = load_dir(&dir).unwrap();
        let files = to_files(&config, Format::Yaml).unwrap();
        assert_eq!(files.len(), 1, "{package}");
        let written = &files[&format!("{package}/catalog.yaml")];
        if written != &original {
            let line = written
                .lines()
                .zip(original.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{package}: line {} differs:\n ours: {:?}\n opm:  {:?}",
                line + 1,
                written.lines().nth(line),
                original.lines().nth(line)
            );
        }
        identical += 1;
    }
    assert_eq!(identical, 28);
}
