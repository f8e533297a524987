//! The catalog engine end to end against a real registry: the community bundles of the shared
//! fixtures are pushed as bundle images and added (in `replaces` mode, one `iib catalog add`
//! per bundle, and through the library in one call) to an empty catalog; each package must then
//! equal the catalog opm made from the same bundles, once bundle pull specs are mapped to ours.

mod support;

use iib::catalog_cli::{MigrateLevel, Sources};
use iib_fbc::add::{add_bundles, AddOptions};
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::load::load_dir;
use iib_fbc::render::ObjectsAs;
use iib_oci::{ClientOptions, Reference, RegistryClient};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use support::bundles::{community_packages, push_bundle, FixturePackage};
use support::registry::Registry;

/// opm made catalogs for OpenShift 4.12 and older with bundle objects, later ones with CSV
/// metadata.
fn level_for(catalog_version: &str) -> MigrateLevel {
    let minor: u32 = catalog_version.trim_start_matches("v4.").parse().unwrap();
    if minor <= 12 {
        MigrateLevel::None
    } else {
        MigrateLevel::BundleObjectToCsvMetadata
    }
}

fn objects_as(level: MigrateLevel) -> ObjectsAs {
    match level {
        MigrateLevel::None => ObjectsAs::BundleObjects,
        MigrateLevel::BundleObjectToCsvMetadata => ObjectsAs::CsvMetadata,
    }
}

/// Every blob of a package, as JSON values, with related images put in one order (their order
/// depends on the pull specs, which differ; render tests check opm's order on the originals).
fn package_blobs(blobs: impl IntoIterator<Item = Value>, package: &str) -> Vec<Value> {
    blobs
        .into_iter()
        .filter(|b| {
            b["package"] == package || (b["schema"] == "olm.package" && b["name"] == package)
        })
        .map(|mut b| {
            if let Some(images) = b.get_mut("relatedImages").and_then(Value::as_array_mut) {
                images.sort_by_key(|i| (i["image"].to_string(), i["name"].to_string()));
            }
            b
        })
        .collect()
}

/// opm's catalog of the package, with its bundle pull specs replaced by ours.
fn golden(package: &FixturePackage, ours: &BTreeMap<String, String>) -> Vec<Value> {
    let text = std::fs::read_to_string(package.dir.join("catalog.yaml")).unwrap();
    let mut blobs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    for blob in &mut blobs {
        if blob["schema"] != "olm.bundle" {
            continue;
        }
        let theirs = blob["image"].as_str().unwrap().to_string();
        let mine = &ours[blob["name"].as_str().unwrap()];
        blob["image"] = Value::String(mine.clone());
        for image in blob["relatedImages"].as_array_mut().unwrap() {
            if image["image"] == theirs.as_str() {
                image["image"] = Value::String(mine.clone());
            }
        }
    }
    package_blobs(blobs, &package.name)
}

fn ours(config: &DeclarativeConfig, package: &str) -> Vec<Value> {
    let text = iib_fbc::write::to_string(config, iib_fbc::write::Format::Json);
    let blobs = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap);
    package_blobs(blobs, package)
}

fn assert_same(package: &str, ours: &[Value], golden: &[Value]) {
    assert_eq!(ours.len(), golden.len(), "{package}: number of blobs");
    for (mine, theirs) in ours.iter().zip(golden) {
        let mut mine = mine.clone();
        // IIB's opm gives a package the icon of its default channel head's CSV, and so do we.
        // The community pipeline wrote libredb-studio-operator's package blob without one,
        // although its CSV has an icon: no add can make that blob, so only there the icon
        // is not compared.
        if theirs["schema"] == "olm.package" && theirs.get("icon").is_none() {
            assert!(
                mine["icon"]["base64data"].is_string(),
                "{package}: no icon from the CSV"
            );
            mine.as_object_mut().unwrap().remove("icon");
        }
        let mine = &mine;
        if mine != theirs {
            let mut keys: Vec<&String> = theirs.as_object().unwrap().keys().collect();
            keys.extend(mine.as_object().unwrap().keys());
            for key in keys {
                assert_eq!(
                    mine.get(key),
                    theirs.get(key),
                    "{package}: {} {:?}: {key} differs",
                    theirs["schema"],
                    theirs["name"]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn community_bundles_added_to_an_empty_catalog_equal_opms_catalog() {
    let registry = Registry::start().await;
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let packages = community_packages();
    assert_eq!(packages.len(), 4);
    for package in &packages {
        // Push every bundle; remember which pull spec stands for which opm one.
        let mut pushed = BTreeMap::new();
        let mut references = Vec::new();
        for (name, dir) in &package.bundles {
            let version = dir.file_name().unwrap().to_string_lossy();
            let spec = format!("{}/{}-bundle:{version}", registry.host, package.name);
            let reference: Reference = spec.parse().unwrap();
            push_bundle(&client, &reference, dir).await;
            pushed.insert(name.clone(), spec.clone());
            references.push(spec);
        }
        let level = level_for(&package.catalog_version);
        let want = golden(package, &pushed);

        // The command, written as YAML: every bundle in one call, and (where opm can build
        // the package that way) one call per bundle, each building on the catalog before.
        let level_arg = match level {
            MigrateLevel::None => "none",
            MigrateLevel::BundleObjectToCsvMetadata => "bundle-object-to-csv-metadata",
        };
        let add = |catalog: &std::path::Path, specs: &[String]| {
            Command::new(env!("CARGO_BIN_EXE_iib"))
                .args(["catalog", "add", "--catalog"])
                .arg(catalog)
                .args([
                    "--mode",
                    "replaces",
                    "--migrate-level",
                    level_arg,
                    "-o",
                    "yaml",
                ])
                .args(specs)
                .env("IIB_LOG_LEVEL", "WARN")
                .output()
                .unwrap()
        };
        let one_by_one = work.path().join(format!("{}-one-by-one", package.name));
        let mut refused = None;
        for spec in &references {
            let out = add(&one_by_one, std::slice::from_ref(spec));
            if !out.status.success() {
                refused = Some(String::from_utf8_lossy(&out.stderr).to_string());
                break;
            }
        }
        match refused {
            None => {
                let loaded = load_dir(&one_by_one).unwrap();
                assert_same(&package.name, &ours(&loaded, &package.name), &want);
            }
            // ecr-secret-operator's first bundle is in channel v0.3 but names v0.4 as the
            // default: alone, opm cannot place it either.
            Some(error) => {
                assert_eq!(package.name, "ecr-secret-operator", "{error}");
                assert!(
                    error.contains("unable to determine default channel among channel heads"),
                    "{error}"
                );
            }
        }
        let catalog = work.path().join(format!("{}-cli", package.name));
        let out = add(&catalog, &references);
        assert!(
            out.status.success(),
            "iib catalog add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = catalog.join(&package.name).join("catalog.yaml");
        assert!(written.is_file(), "{} was not written", written.display());
        let loaded = load_dir(&catalog).unwrap();
        iib_fbc::model::validate(&loaded).unwrap();
        assert_same(&package.name, &ours(&loaded, &package.name), &want);

        // The library, every bundle in one call.
        let mut sources = Sources::new(ClientOptions::default());
        let mut rendered = Vec::new();
        for spec in &references {
            rendered.push(
                sources
                    .render_bundle(spec, None, objects_as(level))
                    .await
                    .unwrap(),
            );
        }
        let mut config = DeclarativeConfig::default();
        add_bundles(&mut config, rendered, &AddOptions::default()).unwrap();
        assert_same(&package.name, &ours(&config, &package.name), &want);
    }
}
