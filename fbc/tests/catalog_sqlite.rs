//! `iib_fbc::sqlite_index`: legacy SQLite indexes made by `support::index_db` with opm
//! v1.40.0's schema (every migration applied) and the rows `opm registry add` and
//! `opm registry deprecatetruncate` write, then migrated as `opm migrate` migrates them.
//! Bundles are kube-green's real manifests from the shared fixtures (`IIB_FIXTURES`, else
//! `shared/fixtures` beside the clone) and small hand-made ones.

mod support;

use base64::Engine;
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::gojson;
use iib_fbc::model::validate;
use iib_fbc::render::csv_metadata_of;
use iib_fbc::sqlite_index::{migrate, MigrateError, ObjectsAs};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};
use std::path::Path;
use support::index_db::*;

fn to_values<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect()
}

fn bundle<'a>(config: &'a DeclarativeConfig, name: &str) -> &'a iib_fbc::declcfg::Bundle {
    config
        .bundles
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no bundle {name}"))
}

fn properties(config: &DeclarativeConfig, name: &str) -> Vec<Value> {
    to_values(&bundle(config, name).properties)
}

fn related_images(config: &DeclarativeConfig, name: &str) -> Value {
    serde_json::to_value(&bundle(config, name).related_images).unwrap()
}

fn csv_of(bundle: &BundleInput) -> Value {
    bundle.csv().clone()
}

fn package_property(package: &str, version: &str) -> Value {
    json!({"type": "olm.package", "value": {"packageName": package, "version": version}})
}

fn gvk(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": serde_json::from_str::<Value>(value).unwrap()})
}

/// The files in a directory, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_legacy_index_migrates_blob_by_blob_as_opm_migrate_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    build_index(&db, Variant::default()).await;
    let before = std::fs::read(&db).unwrap();
    let files_before = listing(dir.path());

    let config = migrate(&db, ObjectsAs::CsvMetadata).await.unwrap();

    // The input is only read: same bytes, nothing written beside it.
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert_eq!(listing(dir.path()), files_before);

    // Packages: default channels, icons from the default channel heads' CSVs (toy's icon
    // only decodes once its spaces are removed).
    let kube_green_icon = kube_green_040().csv()["spec"]["icon"][0]["base64data"].clone();
    assert_eq!(
        to_values(&config.packages),
        vec![
            json!({"schema": "olm.package", "name": "kube-green", "defaultChannel": "alpha",
                   "icon": {"base64data": kube_green_icon, "mediatype": "image/svg+xml"}}),
            json!({"schema": "olm.package", "name": "toy-operator", "defaultChannel": "stable",
                   "icon": {"base64data": "aGVsbG8=", "mediatype": "image/png"}}),
        ]
    );

    // Channels: entries by name; replaces from the chain, skips from the other edges (a
    // skipped name not in the index stays in skips, without an entry); a real bundle only
    // skipped is an entry without replaces; the deprecated bundle has no entry, and the
    // bundle above it still replaces it.
    assert_eq!(
        to_values(&config.channels),
        vec![
            json!({"schema": "olm.channel", "name": "alpha", "package": "kube-green", "entries": [
                {"name": "kube-green.v0.3.0"},
                {"name": "kube-green.v0.3.1", "replaces": "kube-green.v0.3.0"},
                {"name": "kube-green.v0.4.0", "replaces": "kube-green.v0.3.1",
                 "skips": ["kube-green.v0.2.0"], "skipRange": ">=0.1.0 <0.3.0"},
            ]}),
            json!({"schema": "olm.channel", "name": "stable", "package": "kube-green", "entries": [
                {"name": "kube-green.v0.3.0"},
                {"name": "kube-green.v0.3.1", "replaces": "kube-green.v0.3.0"},
            ]}),
            json!({"schema": "olm.channel", "name": "stable", "package": "toy-operator", "entries": [
                {"name": "toy-operator.v1.0.0", "replaces": "toy-operator.v0.9.0"},
                {"name": "toy-operator.v1.1.0"},
                {"name": "toy-operator.v2.0.0", "replaces": "toy-operator.v1.0.0",
                 "skips": ["toy-operator.v1.1.0"]},
            ]}),
        ]
    );

    // Bundles by package and name; the deprecated one is gone.
    let names: Vec<(&str, &str, &str)> = config
        .bundles
        .iter()
        .map(|b| (b.package.as_str(), b.name.as_str(), b.image.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "kube-green",
                "kube-green.v0.3.0",
                "quay.io/example/kube-green-bundle:v0.3.0"
            ),
            (
                "kube-green",
                "kube-green.v0.3.1",
                "quay.io/example/kube-green-bundle:v0.3.1"
            ),
            (
                "kube-green",
                "kube-green.v0.4.0",
                "quay.io/example/kube-green-bundle:v0.4.0"
            ),
            (
                "toy-operator",
                "toy-operator.v1.0.0",
                "quay.io/toy/bundle:v1.0.0"
            ),
            (
                "toy-operator",
                "toy-operator.v1.1.0",
                "quay.io/toy/bundle:v1.1.0"
            ),
            (
                "toy-operator",
                "toy-operator.v2.0.0",
                "quay.io/toy/bundle:v2.0.0"
            ),
        ]
    );
    for b in &config.bundles {
        assert_eq!(b.schema, "olm.bundle");
    }

    // Properties: sorted by type then value, the CSV metadata last. olm.gvk dependencies
    // become olm.gvk.required (re-encoded in struct order), olm.package ones
    // olm.package.required, olm.label ones are dropped; other properties stay raw; the
    // olm.package rows written at each channel walk collapse into one.
    assert_eq!(
        properties(&config, "kube-green.v0.4.0"),
        vec![
            json!({"type": "example.com/tier", "value": {"a": "x<y", "b": [1, 2]}}),
            gvk("olm.gvk", SLEEPINFO_GVK),
            gvk(
                "olm.gvk.required",
                r#"{"group":"cert-manager.io","kind":"Certificate","version":"v1"}"#
            ),
            gvk(
                "olm.gvk.required",
                r#"{"group":"cert-manager.io","kind":"Issuer","version":"v1"}"#
            ),
            json!({"type": "olm.maxOpenShiftVersion", "value": "4.12"}),
            package_property("kube-green", "0.4.0"),
            json!({"type": "olm.package.required",
                   "value": {"packageName": "cert-manager", "versionRange": ">=1.0.0"}}),
            json!({"type": "olm.csv.metadata", "value": csv_metadata_of(&csv_of(&kube_green_040()))}),
        ]
    );
    for version in ["0.3.0", "0.3.1"] {
        let name = format!("kube-green.v{version}");
        assert_eq!(
            properties(&config, &name),
            vec![
                gvk("olm.gvk", SLEEPINFO_GVK),
                package_property("kube-green", version),
                json!({"type": "olm.csv.metadata",
                       "value": csv_metadata_of(&csv_of(&kube_green(version)))}),
            ],
            "{name}"
        );
    }
    assert_eq!(
        properties(&config, "toy-operator.v2.0.0"),
        vec![
            package_property("toy-operator", "2.0.0"),
            json!({"type": "olm.csv.metadata", "value": csv_metadata_of(&csv_of(&toy_200()))}),
        ]
    );
    // A bundle whose manifests were cleared has no CSV metadata.
    assert_eq!(
        properties(&config, "toy-operator.v1.1.0"),
        vec![package_property("toy-operator", "1.1.0")]
    );

    // Related images: the CSV's, then the related_image rows not among them (no name),
    // sorted by image; equal images keep their order.
    assert_eq!(
        related_images(&config, "kube-green.v0.4.0"),
        json!([
            {"name": "kube-green", "image": "docker.io/kubegreen/kube-green:0.4.0"},
            {"name": "", "image": "gcr.io/kubebuilder/kube-rbac-proxy:v0.12.0"},
            {"name": "", "image": "quay.io/example/kube-green-bundle:v0.4.0"},
        ])
    );
    assert_eq!(
        related_images(&config, "kube-green.v0.3.0"),
        json!([
            {"name": "", "image": "gcr.io/kubebuilder/kube-rbac-proxy:v0.5.0"},
            {"name": "", "image": "kubegreen/kube-green:0.3.0"},
            {"name": "", "image": "quay.io/example/kube-green-bundle:v0.3.0"},
        ])
    );
    assert_eq!(
        related_images(&config, "toy-operator.v2.0.0"),
        json!([
            {"name": "", "image": "quay.io/toy/bundle:v2.0.0"},
            {"name": "", "image": "quay.io/toy/init:2.0.0"},
            {"name": "toy", "image": "quay.io/toy/toy:2.0.0"},
            {"name": "toy-again", "image": "quay.io/toy/toy:2.0.0"},
        ])
    );
    assert_eq!(
        related_images(&config, "toy-operator.v1.1.0"),
        json!([
            {"name": "", "image": "quay.io/toy/bundle:v1.1.0"},
            {"name": "", "image": "quay.io/toy/toy:1.1.0"},
        ])
    );

    assert!(config.deprecations.is_empty() && config.others.is_empty());
    validate(&config).unwrap();
}

#[tokio::test]
async fn bundle_objects_replace_the_csv_metadata_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    build_index(&db, Variant::default()).await;
    let config = migrate(&db, ObjectsAs::BundleObjects).await.unwrap();

    // One olm.bundle.object per manifest: the object's bytes as the bundle column holds
    // them, base64-encoded, sorted by value, after every other property.
    let bundle = kube_green("0.3.0");
    let mut objects: Vec<String> = bundle
        .objects
        .iter()
        .map(|o| base64::engine::general_purpose::STANDARD.encode(gojson::marshal(o)))
        .collect();
    objects.sort();
    assert_eq!(objects.len(), 6);
    let mut want = vec![
        gvk("olm.gvk", SLEEPINFO_GVK),
        package_property("kube-green", "0.3.0"),
    ];
    want.extend(
        objects
            .into_iter()
            .map(|data| json!({"type": "olm.bundle.object", "value": {"data": data}})),
    );
    assert_eq!(properties(&config, "kube-green.v0.3.0"), want);
    assert_eq!(
        properties(&config, "toy-operator.v1.1.0"),
        vec![package_property("toy-operator", "1.1.0")]
    );
    validate(&config).unwrap();
}

#[tokio::test]
async fn a_null_csv_for_the_default_channel_head_is_opms_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    build_index(
        &db,
        Variant {
            null_head_csv: true,
        },
    )
    .await;
    let error = migrate(&db, ObjectsAs::CsvMetadata).await.unwrap_err();
    assert!(matches!(error, MigrateError::Catalog(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "populate package icons: unmarshal CSV json for bundle \"toy-operator.v2.0.0\": unexpected end of JSON input"
    );
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    std::fs::write(&path, "{\"schema\": \"olm.package\"}\n").unwrap();
    let error = migrate(&path, ObjectsAs::CsvMetadata).await.unwrap_err();
    assert!(matches!(error, MigrateError::NotSqlite { .. }), "{error:?}");
    assert!(
        error.to_string().contains("unsupported file type"),
        "{error}"
    );
    // An empty file and a missing one too.
    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        migrate(&path, ObjectsAs::CsvMetadata).await,
        Err(MigrateError::NotSqlite { .. })
    ));
    let missing = dir.path().join("missing.db");
    let error = migrate(&missing, ObjectsAs::CsvMetadata).await.unwrap_err();
    assert!(matches!(error, MigrateError::Io { .. }), "{error:?}");
    assert!(!missing.exists());
    // The SQLite header on garbage is a database error, not a panic.
    let mut garbage = b"SQLite format 3\0".to_vec();
    garbage.extend(std::iter::repeat_n(0xA5u8, 4096));
    std::fs::write(&path, &garbage).unwrap();
    let error = migrate(&path, ObjectsAs::CsvMetadata).await.unwrap_err();
    assert!(matches!(error, MigrateError::Sqlite { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[tokio::test]
async fn schema_versions_and_empty_indexes() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh index (opm's schema, no rows) is an empty catalog.
    let empty = dir.path().join("empty.db");
    create(&empty, 13).await.close().await.unwrap();
    assert_eq!(
        migrate(&empty, ObjectsAs::CsvMetadata).await.unwrap(),
        DeclarativeConfig::default()
    );
    // A schema older than migration 9 would need opm's in-place upgrade.
    let old = dir.path().join("old.db");
    create(&old, 8).await.close().await.unwrap();
    let error = migrate(&old, ObjectsAs::CsvMetadata).await.unwrap_err();
    assert!(
        matches!(
            error,
            MigrateError::UnsupportedSchema { found: Some(8), .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("schema version 8"), "{error}");
}

#[tokio::test]
async fn bad_rows_give_opms_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    build_index(&db, Variant::default()).await;
    let pristine = std::fs::read(&db).unwrap();
    let broken = |sql: &'static str| {
        let db = db.clone();
        let pristine = pristine.clone();
        async move {
            std::fs::write(&db, &pristine).unwrap();
            let options = SqliteConnectOptions::new()
                .filename(&db)
                .foreign_keys(false);
            let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
            conn.execute(sql).await.unwrap();
            conn.close().await.unwrap();
            migrate(&db, ObjectsAs::CsvMetadata)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let error = broken(
        "update properties set value = '{\"group\":1}' where type = 'olm.gvk' and operatorbundle_name = 'kube-green.v0.3.0'",
    )
    .await;
    assert!(
        error.starts_with("populate channels: convert bundle \"kube-green.v0.3.0\": convert properties: parse property[")
            && error.ends_with("] of type \"olm.gvk\": json: cannot unmarshal number into Go struct field GroupVersionKind.group of type string"),
        "{error}"
    );
    let error = broken(
        "update operatorbundle set bundle = '{\"kind\":\"Service\"}' where name = 'toy-operator.v1.0.0'",
    )
    .await;
    assert_eq!(error, "populate channels: no csv in bundle");
    let error = broken(
        "update operatorbundle set bundle = '{\"kind\":\"ClusterServiceVersion\",' where name = 'toy-operator.v1.0.0'",
    )
    .await;
    assert!(error.starts_with("populate channels: "), "{error}");
    let error = broken("update channel_entry set channel_name = 'beta' where entry_id = 1").await;
    assert!(
        error.starts_with("populate channels: unknown channel \"beta\" for bundle "),
        "{error}"
    );
    let error =
        broken("update package set default_channel = 'gone' where name = 'toy-operator'").await;
    assert!(error.starts_with("populate package icons: "), "{error}");
    let error =
        broken("update properties set value = 'not json' where type = 'olm.maxOpenShiftVersion'")
            .await;
    assert!(
        error.starts_with("populate channels: convert bundle \"kube-green.v0.4.0\": property of type \"olm.maxOpenShiftVersion\" has a value that is not JSON"),
        "{error}"
    );
}
