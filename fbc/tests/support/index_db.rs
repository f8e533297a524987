//! Legacy SQLite index databases for tests: opm v1.40.0's schema (every migration applied) and
//! the rows `opm registry add` and `opm registry deprecatetruncate` write. Bundles are
//! kube-green's real manifests from the shared fixtures and small hand-made ones.
//!
//! Used by this crate's `catalog_sqlite` tests and, through `#[path]`, by the service's
//! `iib catalog migrate` test (`tests/cli.rs`); the including module provides `fixtures()`
//! (the shared fixtures directory) beside it.

#![allow(dead_code)]

use iib_fbc::gojson;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor, Row};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::fixtures;

/// The tables as opm v1.40.0 leaves them after migrations 000 to 013 (`pkg/sqlite/migrations`).
pub const SCHEMA: &str = r#"
CREATE TABLE operatorbundle (
    name TEXT PRIMARY KEY,
    csv TEXT,
    bundle TEXT,
    bundlepath TEXT, skiprange TEXT, version TEXT, replaces TEXT, skips TEXT, substitutesfor TEXT);
CREATE TABLE package (
    name TEXT PRIMARY KEY,
    default_channel TEXT,
    FOREIGN KEY(name, default_channel) REFERENCES channel(package_name,name) ON DELETE CASCADE
);
CREATE TABLE channel (
    name TEXT,
    package_name TEXT,
    head_operatorbundle_name TEXT,
    PRIMARY KEY(name, package_name),
    FOREIGN KEY(head_operatorbundle_name) REFERENCES operatorbundle(name) ON DELETE CASCADE
);
CREATE TABLE channel_entry (
    entry_id INTEGER PRIMARY KEY,
    channel_name TEXT,
    package_name TEXT,
    operatorbundle_name TEXT,
    replaces INTEGER,
    depth INTEGER,
    FOREIGN KEY(replaces) REFERENCES channel_entry(entry_id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY(channel_name, package_name) REFERENCES channel(name, package_name) ON DELETE CASCADE
);
CREATE TABLE api (
    group_name TEXT,
    version TEXT,
    kind TEXT,
    plural TEXT NOT NULL,
    PRIMARY KEY(group_name, version, kind)
);
CREATE TABLE related_image (
    image TEXT,
    operatorbundle_name TEXT,
    FOREIGN KEY(operatorbundle_name) REFERENCES operatorbundle(name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX pk ON operatorbundle(name, version, bundlepath);
CREATE TABLE api_provider (
    group_name TEXT,
    version TEXT,
    kind TEXT,
    operatorbundle_name TEXT,
    operatorbundle_version TEXT,
    operatorbundle_path TEXT,
    FOREIGN KEY(operatorbundle_name, operatorbundle_version, operatorbundle_path) REFERENCES operatorbundle(name, version, bundlepath) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY(group_name, version, kind) REFERENCES api(group_name, version, kind) ON DELETE CASCADE
);
CREATE TABLE api_requirer (
    group_name TEXT,
    version TEXT,
    kind TEXT,
    operatorbundle_name TEXT,
    operatorbundle_version TEXT,
    operatorbundle_path TEXT,
    FOREIGN KEY(operatorbundle_name, operatorbundle_version, operatorbundle_path) REFERENCES operatorbundle(name, version, bundlepath) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY(group_name, version, kind) REFERENCES api(group_name, version, kind) ON DELETE CASCADE
);
CREATE TRIGGER api_provider_cleanup
AFTER DELETE ON api_provider
WHEN NOT EXISTS (SELECT 1 FROM api_provider JOIN api_requirer WHERE
    (api_provider.group_name = OLD.group_name AND api_provider.version = OLD.version AND api_provider.kind = OLD.kind) OR
    (api_requirer.group_name = OLD.group_name AND api_requirer.version = OLD.version AND api_requirer.kind = OLD.kind))
BEGIN
    DELETE FROM api WHERE group_name = OLD.group_name AND version = OLD.version AND kind = OLD.kind;
END;
CREATE TRIGGER api_requirer_cleanup
AFTER DELETE ON api_requirer
WHEN NOT EXISTS (SELECT 1 FROM api_provider JOIN api_requirer WHERE
    (api_provider.group_name = OLD.group_name AND api_provider.version = OLD.version AND api_provider.kind = OLD.kind) OR
    (api_requirer.group_name = OLD.group_name AND api_requirer.version = OLD.version AND api_requirer.kind = OLD.kind))
BEGIN
    DELETE FROM api WHERE group_name = OLD.group_name AND version = OLD.version AND kind = OLD.kind;
END;
CREATE TABLE dependencies (
    type TEXT,
    value TEXT,
    operatorbundle_name TEXT,
    operatorbundle_version TEXT,
    operatorbundle_path TEXT,
    FOREIGN KEY(operatorbundle_name, operatorbundle_version, operatorbundle_path) REFERENCES operatorbundle(name, version, bundlepath) ON DELETE CASCADE
);
CREATE TABLE properties (
    type TEXT,
    value TEXT,
    operatorbundle_name TEXT,
    operatorbundle_version TEXT,
    operatorbundle_path TEXT,
    FOREIGN KEY(operatorbundle_name, operatorbundle_version, operatorbundle_path) REFERENCES operatorbundle(name, version, bundlepath) ON DELETE CASCADE
);
CREATE TABLE deprecated (
    operatorbundle_name TEXT PRIMARY KEY
);
CREATE TABLE schema_migrations (
    version bigint NOT NULL,
    timestamp DATETIME DEFAULT CURRENT_TIMESTAMP
);
"#;

/// A bundle as `opm registry add` sees it after parsing its image.
pub struct BundleInput {
    pub image: String,
    /// Every manifest, in the bundle's order; the CSV among them.
    pub objects: Vec<Value>,
    /// `metadata/properties.yaml` entries, as JSON values.
    pub properties: Vec<(&'static str, Value)>,
    /// `metadata/dependencies.yaml` entries: type and the raw value bytes.
    pub dependencies: Vec<(&'static str, &'static str)>,
}

impl BundleInput {
    pub fn csv(&self) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == "ClusterServiceVersion")
            .expect("a CSV")
    }

    pub fn name(&self) -> String {
        self.csv()["metadata"]["name"].as_str().unwrap().to_string()
    }

    pub fn version(&self) -> String {
        self.csv()["spec"]["version"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// kube-green's manifests of one version, in file-name order, as JSON.
pub fn kube_green(version: &str) -> BundleInput {
    let dir = fixtures()
        .join("community-operators/kube-green")
        .join(version)
        .join("manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let objects = files
        .iter()
        .map(|f| serde_yaml_ng::from_str::<Value>(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    BundleInput {
        image: format!("quay.io/example/kube-green-bundle:v{version}"),
        objects,
        properties: Vec::new(),
        dependencies: Vec::new(),
    }
}

/// A small hand-made bundle of `toy-operator`.
pub fn toy(
    version: &str,
    replaces: Option<&str>,
    skips: &[&str],
    extra_spec: Value,
) -> BundleInput {
    let mut spec = json!({
        "version": version,
        "displayName": "Toy",
        "install": {"strategy": "deployment", "spec": {"deployments": [{
            "name": "toy",
            "spec": {"template": {"spec": {"containers": [
                {"name": "toy", "image": format!("quay.io/toy/toy:{version}")}
            ]}}}
        }]}}
    });
    if let Some(replaces) = replaces {
        spec["replaces"] = json!(replaces);
    }
    if !skips.is_empty() {
        spec["skips"] = json!(skips);
    }
    for (key, value) in extra_spec.as_object().unwrap() {
        spec[key] = value.clone();
    }
    BundleInput {
        image: format!("quay.io/toy/bundle:v{version}"),
        objects: vec![json!({
            "apiVersion": "operators.coreos.com/v1alpha1",
            "kind": "ClusterServiceVersion",
            "metadata": {"name": format!("toy-operator.v{version}"), "annotations": {"capabilities": "Basic Install"}},
            "spec": spec,
        })],
        properties: Vec::new(),
        dependencies: Vec::new(),
    }
}

/// Go's `json.NewEncoder(w).Encode(obj)`: compact, sorted keys, HTML-escaped, a newline.
pub fn encoded(object: &Value) -> String {
    format!("{}\n", gojson::marshal(object))
}

pub async fn exec(conn: &mut SqliteConnection, sql: &str, args: &[Option<String>]) {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = query.bind(arg.clone());
    }
    query.execute(&mut *conn).await.unwrap();
}

pub fn some(s: impl Into<String>) -> Option<String> {
    Some(s.into())
}

/// Go's `sql.NullString{String: s, Valid: s != ""}`.
pub fn nullable(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The APIs a bundle provides: every version of each CRD in it.
pub fn provided_apis(bundle: &BundleInput) -> BTreeSet<(String, String, String, String)> {
    let mut apis = BTreeSet::new();
    for crd in bundle
        .objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        let spec = &crd["spec"];
        for version in spec["versions"].as_array().into_iter().flatten() {
            apis.insert((
                spec["group"].as_str().unwrap().to_string(),
                version["name"].as_str().unwrap().to_string(),
                spec["names"]["kind"].as_str().unwrap().to_string(),
                spec["names"]["plural"].as_str().unwrap().to_string(),
            ));
        }
    }
    apis
}

/// `AddOperatorBundle` (opm `pkg/sqlite/load.go`): the bundle's row, its images,
/// dependencies, properties and APIs.
pub async fn add_operator_bundle(conn: &mut SqliteConnection, bundle: &BundleInput, keep: bool) {
    let csv = bundle.csv();
    let name = bundle.name();
    let version = bundle.version();
    let annotation = |key: &str| {
        csv["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let spec = &csv["spec"];
    let skips: Vec<&str> = spec["skips"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap())
        .collect();
    let bundle_column: String = bundle.objects.iter().map(encoded).collect();
    exec(
        conn,
        "insert into operatorbundle(name, csv, bundle, bundlepath, version, skiprange, replaces, skips, substitutesfor) values(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            some(&name),
            keep.then(|| encoded(csv)),
            keep.then_some(bundle_column),
            some(&bundle.image),
            some(&version),
            some(annotation("olm.skipRange")),
            some(spec["replaces"].as_str().unwrap_or("")),
            some(skips.join(",")),
            some(annotation("olm.substitutesFor")),
        ],
    )
    .await;

    // bundle.Images(): the bundle image, the operator images, the CSV's related images.
    let mut images = BTreeSet::from([bundle.image.clone()]);
    for deployment in spec["install"]["spec"]["deployments"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for list in ["containers", "initContainers"] {
            for container in deployment["spec"]["template"]["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
            {
                images.insert(container["image"].as_str().unwrap().to_string());
            }
        }
    }
    for related in spec["relatedImages"].as_array().into_iter().flatten() {
        images.insert(related["image"].as_str().unwrap().to_string());
    }
    for image in images {
        exec(
            conn,
            "insert into related_image(image, operatorbundle_name) values(?,?)",
            &[some(image), some(&name)],
        )
        .await;
    }

    // Dependencies keep their raw bytes (a json.RawMessage, stored as a blob).
    for (kind, value) in &bundle.dependencies {
        sqlx::query("insert into dependencies(type, value, operatorbundle_name, operatorbundle_version, operatorbundle_path) values(?, ?, ?, ?, ?)")
            .bind(*kind)
            .bind(value.as_bytes())
            .bind(&name)
            .bind(nullable(&version))
            .bind(nullable(&bundle.image))
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    // Properties: properties.yaml, the derived olm.package, one olm.gvk per provided API.
    let mut properties: BTreeSet<(String, String)> = bundle
        .properties
        .iter()
        .map(|(kind, value)| (kind.to_string(), gojson::marshal(value)))
        .collect();
    properties.insert((
        "olm.package".into(),
        gojson::marshal(&json!({"packageName": package_of(&name), "version": version})),
    ));
    for (group, api_version, kind, plural) in provided_apis(bundle) {
        properties.insert((
            "olm.gvk".into(),
            gojson::marshal(&json!({"group": group, "kind": kind, "version": api_version})),
        ));
        exec(
            conn,
            "insert or ignore into api(group_name, version, kind, plural) values(?, ?, ?, ?)",
            &[some(&group), some(&api_version), some(&kind), some(plural)],
        )
        .await;
        exec(
            conn,
            "insert into api_provider(group_name, version, kind, operatorbundle_name, operatorbundle_version, operatorbundle_path) values(?, ?, ?, ?, ?, ?)",
            &[some(group), some(api_version), some(kind), some(&name), some(&version), some(&bundle.image)],
        )
        .await;
    }
    for (kind, value) in properties {
        exec(
            conn,
            "insert into properties(type, value, operatorbundle_name, operatorbundle_version, operatorbundle_path) values(?, ?, ?, ?, ?)",
            &[some(kind), some(value), some(&name), nullable(&version), nullable(&bundle.image)],
        )
        .await;
    }
}

pub fn package_of(bundle: &str) -> &'static str {
    if bundle.starts_with("kube-green") {
        "kube-green"
    } else {
        "toy-operator"
    }
}

pub async fn insert_entry(
    conn: &mut SqliteConnection,
    channel: &str,
    package: &str,
    bundle: &str,
    depth: i64,
) -> i64 {
    sqlx::query("insert into channel_entry(channel_name, package_name, operatorbundle_name, depth) values(?, ?, ?, ?)")
        .bind(channel)
        .bind(package)
        .bind(bundle)
        .bind(depth)
        .execute(&mut *conn)
        .await
        .unwrap()
        .last_insert_rowid()
}

pub async fn set_replaces(conn: &mut SqliteConnection, entry: i64, replaces: i64) {
    sqlx::query("update channel_entry set replaces = ? where entry_id = ?")
        .bind(replaces)
        .bind(entry)
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// `AddPackageChannels` (opm `pkg/sqlite/load.go`): the package, its channels, and each
/// channel's entries walked from its head along `replaces`, with a synthetic entry per skip.
pub async fn add_package_channels(
    conn: &mut SqliteConnection,
    package: &str,
    channels: &[(&str, &str)],
    default_channel: &str,
) {
    exec(
        conn,
        "insert into package(name) values(?)",
        &[some(package)],
    )
    .await;
    for (channel, head) in channels {
        exec(
            conn,
            "insert into channel(name, package_name, head_operatorbundle_name) values(?, ?, ?)",
            &[some(*channel), some(package), some(*head)],
        )
        .await;
        if *channel == default_channel || channels.len() == 1 {
            exec(
                conn,
                "update package set default_channel = ? where name = ?",
                &[some(*channel), some(package)],
            )
            .await;
        }
    }
    for (channel, head) in channels {
        let mut id = insert_entry(conn, channel, package, head, 0).await;
        let mut current = head.to_string();
        let mut depth = 1;
        let mut seen = BTreeSet::from([current.clone()]);
        loop {
            let row = sqlx::query(
                "SELECT replaces, skips, version, bundlepath FROM operatorbundle WHERE name=?",
            )
            .bind(&current)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            let replaces: String = row.get::<Option<String>, _>(0).unwrap_or_default();
            let skips: String = row.get::<Option<String>, _>(1).unwrap_or_default();
            let version: String = row.get::<Option<String>, _>(2).unwrap_or_default();
            let path: String = row.get::<Option<String>, _>(3).unwrap_or_default();
            exec(
                conn,
                "insert into properties(type, value, operatorbundle_name, operatorbundle_version, operatorbundle_path) values(?, ?, ?, ?, ?)",
                &[
                    some("olm.package"),
                    some(gojson::marshal(&json!({"packageName": package, "version": version}))),
                    some(&current),
                    nullable(&version),
                    nullable(&path),
                ],
            )
            .await;
            for skip in skips.split(',').filter(|s| !s.is_empty()) {
                let skipped = insert_entry(conn, channel, package, skip, depth).await;
                let synthesized = insert_entry(conn, channel, package, &current, depth).await;
                set_replaces(conn, synthesized, skipped).await;
                depth += 1;
            }
            if replaces.is_empty() {
                break;
            }
            let replaced = insert_entry(conn, channel, package, &replaces, depth).await;
            assert!(seen.insert(replaces.clone()), "cycle");
            set_replaces(conn, id, replaced).await;
            id = replaced;
            current = replaces;
            depth += 1;
        }
    }
}

/// `DeprecateBundle` for a bundle with nothing below it: it becomes a tombstone entry with an
/// `olm.deprecated` property.
pub async fn deprecate(conn: &mut SqliteConnection, name: &str) {
    let row = sqlx::query("SELECT version, bundlepath FROM operatorbundle WHERE name=?")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let (version, path): (String, String) = (row.get(0), row.get(1));
    exec(
        conn,
        "UPDATE channel_entry SET replaces=NULL WHERE operatorbundle_name=?",
        &[some(name)],
    )
    .await;
    exec(
        conn,
        "DELETE FROM channel WHERE head_operatorbundle_name=?",
        &[some(name)],
    )
    .await;
    exec(
        conn,
        "insert into properties(type, value, operatorbundle_name, operatorbundle_version, operatorbundle_path) values(?, ?, ?, ?, ?)",
        &[some("olm.deprecated"), some("{}"), some(name), some(version), some(path)],
    )
    .await;
    exec(
        conn,
        "INSERT OR REPLACE INTO deprecated(operatorbundle_name) VALUES(?)",
        &[some(name)],
    )
    .await;
}

pub async fn create(path: &Path, schema_version: i64) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    conn.execute(SCHEMA).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations(version) VALUES (?)")
        .bind(schema_version)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// What differs between the test databases.
#[derive(Default)]
pub struct Variant {
    /// The default channel head of toy-operator loses its `csv` column.
    pub null_head_csv: bool,
}

pub const SLEEPINFO_GVK: &str =
    r#"{"group":"kube-green.com","kind":"SleepInfo","version":"v1alpha1"}"#;

/// kube-green 0.4.0 with a skipRange, a skip of a bundle not in the index, a related image,
/// extra properties and dependencies of three types.
pub fn kube_green_040() -> BundleInput {
    let mut bundle = kube_green("0.4.0");
    let csv = bundle
        .objects
        .iter_mut()
        .find(|o| o["kind"] == "ClusterServiceVersion")
        .unwrap();
    csv["metadata"]["annotations"]["olm.skipRange"] = json!(">=0.1.0 <0.3.0");
    csv["spec"]["skips"] = json!(["kube-green.v0.2.0"]);
    csv["spec"]["relatedImages"] =
        json!([{"name": "kube-green", "image": "docker.io/kubegreen/kube-green:0.4.0"}]);
    bundle.properties = vec![
        ("olm.maxOpenShiftVersion", json!("4.12")),
        ("example.com/tier", json!({"b": [1, 2], "a": "x<y"})),
    ];
    bundle.dependencies = vec![
        (
            "olm.gvk",
            r#"{"group":"cert-manager.io","kind":"Certificate","version":"v1"}"#,
        ),
        // From a JSON dependencies file: raw bytes, keys in any order.
        (
            "olm.gvk",
            r#"{ "kind": "Issuer", "version": "v1", "group": "cert-manager.io" }"#,
        ),
        (
            "olm.package",
            r#"{"packageName":"cert-manager","version":">=1.0.0"}"#,
        ),
        ("olm.label", r#"{"label":"green"}"#),
    ];
    bundle
}

pub fn toy_200() -> BundleInput {
    toy(
        "2.0.0",
        Some("toy-operator.v1.0.0"),
        &["toy-operator.v1.1.0"],
        json!({
            "icon": [{"base64data": "aGVs bG8=", "mediatype": "image/png"}],
            "relatedImages": [
                {"name": "toy", "image": "quay.io/toy/toy:2.0.0"},
                {"name": "toy-again", "image": "quay.io/toy/toy:2.0.0"}
            ],
            "install": {"strategy": "deployment", "spec": {"deployments": [{
                "name": "toy",
                "spec": {"template": {"spec": {
                    "containers": [{"name": "toy", "image": "quay.io/toy/toy:2.0.0"}],
                    "initContainers": [{"name": "init", "image": "quay.io/toy/init:2.0.0"}]
                }}}
            }]}}
        }),
    )
}

/// Two packages as `opm registry add` (replaces mode) and `deprecatetruncate` leave them:
/// - kube-green: 0.3.0 ← 0.3.1 ← 0.4.0 in `alpha` (default), 0.3.0 ← 0.3.1 in `stable`;
///   0.4.0 also skips kube-green.v0.2.0, which is not in the index;
/// - toy-operator, channel `stable`: 0.9.0 (deprecated) ← 1.0.0 ← 2.0.0, and 2.0.0 skips
///   1.1.0, a real bundle whose manifests were cleared (as semver mode clears non-heads).
pub async fn build_index(path: &Path, variant: Variant) {
    let mut conn = create(path, 13).await;
    for bundle in [kube_green("0.3.0"), kube_green("0.3.1"), kube_green_040()] {
        add_operator_bundle(&mut conn, &bundle, true).await;
    }
    add_package_channels(
        &mut conn,
        "kube-green",
        &[
            ("alpha", "kube-green.v0.4.0"),
            ("stable", "kube-green.v0.3.1"),
        ],
        "alpha",
    )
    .await;
    let toys = [
        (toy("0.9.0", None, &[], json!({})), true),
        (
            toy("1.0.0", Some("toy-operator.v0.9.0"), &[], json!({})),
            true,
        ),
        (toy("1.1.0", None, &[], json!({})), false),
        (toy_200(), true),
    ];
    for (bundle, keep) in &toys {
        add_operator_bundle(&mut conn, bundle, *keep).await;
    }
    add_package_channels(
        &mut conn,
        "toy-operator",
        &[("stable", "toy-operator.v2.0.0")],
        "",
    )
    .await;
    deprecate(&mut conn, "toy-operator.v0.9.0").await;
    if variant.null_head_csv {
        exec(
            &mut conn,
            "update operatorbundle set csv = NULL where name = ?",
            &[some("toy-operator.v2.0.0")],
        )
        .await;
    }
    conn.close().await.unwrap();
}
