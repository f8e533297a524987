//! Legacy SQLite operator indexes (`/database/index.db` in old index images, IIB's hidden
//! `/var/lib/iib/_hidden/do.not.edit.db`) turned into a file-based catalog as `opm migrate`
//! (v1.40.0) turns them, so old indexes stay usable.
//!
//! The steps are opm's (`alpha/action/render.go` `sqliteToDeclcfg`, `pkg/sqlite/conversion.go`
//! `ToModel`, `alpha/declcfg/model_to_declcfg.go`, then `Render.Run`):
//! - packages and their channels from the `package` and `channel` tables;
//! - one row per (real bundle, channel) from opm's own `listBundlesQuery` (its CTEs as they
//!   are; only the selected columns differ), which rebuilds each entry's `replaces` (the chain from the channel head) and
//!   `skips` (every other edge); a real bundle that is only skipped in a channel is an entry
//!   there without `replaces`; bundles with an `olm.deprecated` property are dropped;
//! - bundle properties as `ToModel` builds them: `olm.gvk` parsed and re-emitted,
//!   `olm.gvk.required` and `olm.package.required` from the `olm.gvk` and `olm.package`
//!   dependencies (every other dependency type dropped), every other property kept raw,
//!   `olm.package` made up when missing; each value compacted, the list de-duplicated and
//!   sorted by (type, value bytes), then the manifests last: one `olm.csv.metadata`
//!   ([`ObjectsAs::CsvMetadata`], opm 1.28–1.45, or later with `--migrate-level`) or one
//!   `olm.bundle.object` per object ([`ObjectsAs::BundleObjects`]);
//! - `relatedImages`: the CSV's `spec.relatedImages`, then the `related_image` rows not listed
//!   there (with no name), sorted by image with Go's sort;
//! - the package icon from the CSV (`csv` column) of its default channel's head.
//!
//! The database is opened read-only and immutable: nothing is written next to it or into it,
//! and opm's in-place schema upgrade is not run. Schemas from migration 9 on read the same
//! (migrations 10–13 change nothing this reads); older ones are refused. The contents are
//! untrusted: NULLs, bad JSON and odd types give errors, never panics, and the file's size is
//! capped. Model validation is left to the caller ([`crate::model::validate`]).
//!
//! Differences from opm, all at the edges:
//! - schemas older than migration 9 are refused (opm upgrades them in place, backfilling from
//!   the CSVs); a database without tables is an empty catalog, as opm finds it;
//! - Go's typed decoding of a CSV is approximated by checking the fields opm's conversion
//!   reads (not the install strategy's deployment specs or timestamps); where Go's decoding
//!   fails, opm 1.40 falls back to bundle objects (and fails on the icon's CSV), as here;
//! - JSON syntax errors are worded by serde_json, not Go (`unexpected end of JSON input` for
//!   empty input is Go's); a property value that is not JSON fails here, where opm fails
//!   later, when writing; a default channel without a channel row is an error (opm panics);
//! - Go map order is made deterministic: `related_image` rows are appended in image order,
//!   packages are handled by name;
//! - [`ObjectsAs::BundleObjects`] sorts the objects by value, as opm 1.46 and later do (1.26
//!   keeps the object order); [`ObjectsAs::CsvMetadata`] is opm 1.40's conversion (1.46+ with
//!   `--migrate-level` fails on a CSV that does not decode instead of keeping its objects).

use super::declcfg::{
    Bundle, Channel, ChannelEntry, DeclarativeConfig, Icon, Package, Property, RelatedImage,
    SCHEMA_BUNDLE, SCHEMA_CHANNEL, SCHEMA_PACKAGE,
};
use super::gojson::{json_kind, struct_field};
use super::{gojson, gosort, render};
use base64::Engine;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

pub use super::render::ObjectsAs;

/// The largest index database read (opm holds the whole catalog in memory too).
pub const MAX_INDEX_DB_BYTES: u64 = 4 << 30;
/// The schema version opm v1.40.0 migrates a database to.
pub const LATEST_SCHEMA_VERSION: i64 = 13;
/// The oldest schema version read as it is: migrations 10 to 13 change nothing read here.
pub const OLDEST_READABLE_SCHEMA_VERSION: i64 = 9;

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// How much of an offending value an error message quotes.
const QUOTE_LIMIT: usize = 200;

/// Why an index database could not be migrated.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The file could not be read.
    #[error("read index database {}: {source}", .path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file does not start with SQLite's header.
    #[error("ref {:?} has unsupported file type: not an SQLite database", .path.display().to_string())]
    NotSqlite {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_INDEX_DB_BYTES`].
    #[error("index database {} is {size} bytes, more than the {limit} bytes allowed", .path.display())]
    TooLarge {
        /// The database file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The largest size read.
        limit: u64,
    },
    /// The database records no schema version, or one older than
    /// [`OLDEST_READABLE_SCHEMA_VERSION`].
    #[error(
        "index database {}: {} is not supported: it must be at least {OLDEST_READABLE_SCHEMA_VERSION} (opm migrates to {LATEST_SCHEMA_VERSION}); migrate it with opm first",
        .path.display(),
        schema_text(.found)
    )]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version found (`None` when the database records none).
        found: Option<i64>,
    },
    /// SQLite failed on a query.
    #[error("index database {}: {context}: {source}", .path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being read.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// What opm's conversion would report, in its words where they are known.
    #[error("{0}")]
    Catalog(String),
}

fn schema_text(found: &Option<i64>) -> String {
    match found {
        Some(v) => format!("schema version {v}"),
        None => "a database without a schema version".to_string(),
    }
}

/// Reads the SQLite index at `index_db` and returns the catalog `opm migrate` writes for it.
pub async fn migrate(
    index_db: &Path,
    objects_as: ObjectsAs,
) -> Result<DeclarativeConfig, MigrateError> {
    check_file(index_db)?;
    let options = SqliteConnectOptions::new()
        .filename(index_db)
        .read_only(true)
        .immutable(true)
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(sql_error(index_db, "open"))?;
    let result = Reader {
        conn: &mut conn,
        path: index_db,
        objects_as,
    }
    .run()
    .await;
    let _ = conn.close().await;
    result
}

fn check_file(path: &Path) -> Result<(), MigrateError> {
    let io = |source| MigrateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_INDEX_DB_BYTES {
        return Err(MigrateError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_INDEX_DB_BYTES,
        });
    }
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]).map_err(io)? {
            0 => break,
            n => read += n,
        }
    }
    if read < header.len() || &header != SQLITE_HEADER {
        return Err(MigrateError::NotSqlite {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn sql_error(path: &Path, context: &'static str) -> impl FnOnce(sqlx::Error) -> MigrateError {
    let path = path.to_path_buf();
    move |source| MigrateError::Sqlite {
        path,
        context,
        source,
    }
}

/// opm's `listBundlesQuery` (`pkg/sqlite/query.go`), with the selected columns cast to text
/// and without the `bundle` column, which is read once per bundle rather than once per
/// channel.
const LIST_BUNDLES_QUERY: &str = r#"
WITH RECURSIVE
tip (depth) AS (
  SELECT min(depth)
  FROM channel_entry
), replaces_entry (entry_id, replaces) AS (
  SELECT entry_id, replaces
    FROM channel_entry
      INNER JOIN tip ON channel_entry.depth = tip.depth
  UNION
  SELECT channel_entry.entry_id, channel_entry.replaces
    FROM channel_entry
      INNER JOIN replaces_entry
        ON channel_entry.entry_id = replaces_entry.replaces
), replaces_bundle (entry_id, operatorbundle_name, package_name, channel_name, replaces) AS (
  SELECT min(all_entry.entry_id), all_entry.operatorbundle_name, all_entry.package_name, all_entry.channel_name, max(replaced_entry.operatorbundle_name)
    FROM channel_entry AS all_entry
      LEFT OUTER JOIN replaces_entry
        ON all_entry.entry_id = replaces_entry.entry_id
      LEFT OUTER JOIN channel_entry AS replaced_entry
        ON replaces_entry.replaces = replaced_entry.entry_id
    GROUP BY all_entry.operatorbundle_name, all_entry.package_name, all_entry.channel_name
), skips_entry (entry_id, skips) AS (
  SELECT entry_id, replaces
    FROM channel_entry
    WHERE replaces IS NOT NULL
  EXCEPT
  SELECT entry_id, replaces
    FROM replaces_entry
), skips_bundle (operatorbundle_name, package_name, channel_name, skips) AS (
  SELECT all_entry.operatorbundle_name, all_entry.package_name, all_entry.channel_name, group_concat(skipped_entry.operatorbundle_name, ",")
    FROM skips_entry
      INNER JOIN channel_entry AS all_entry
        ON skips_entry.entry_id = all_entry.entry_id
      INNER JOIN channel_entry AS skipped_entry
        ON skips_entry.skips = skipped_entry.entry_id
    GROUP BY all_entry.operatorbundle_name, all_entry.package_name, all_entry.channel_name
),
merged_properties (bundle_name, merged) AS (
  SELECT operatorbundle_name, json_group_array(json_object('type', CAST(properties.type AS TEXT), 'value', CAST(properties.value AS TEXT)))
    FROM properties
    GROUP BY operatorbundle_name
),
merged_dependencies (bundle_name, merged) AS (
  SELECT operatorbundle_name, json_group_array(json_object('type', CAST(dependencies.type AS TEXT), 'value', CAST(dependencies.value AS TEXT)))
    FROM dependencies
    GROUP BY operatorbundle_name
)
SELECT
    CAST(operatorbundle.bundlepath AS TEXT),
    CAST(operatorbundle.name AS TEXT),
    CAST(replaces_bundle.package_name AS TEXT),
    CAST(replaces_bundle.channel_name AS TEXT),
    CAST(replaces_bundle.replaces AS TEXT),
    CAST(skips_bundle.skips AS TEXT),
    CAST(operatorbundle.version AS TEXT),
    CAST(operatorbundle.skiprange AS TEXT),
    CAST(merged_dependencies.merged AS TEXT),
    CAST(merged_properties.merged AS TEXT)
  FROM replaces_bundle
    INNER JOIN operatorbundle
      ON replaces_bundle.operatorbundle_name = operatorbundle.name
    LEFT OUTER JOIN skips_bundle
      ON replaces_bundle.operatorbundle_name = skips_bundle.operatorbundle_name
        AND replaces_bundle.package_name = skips_bundle.package_name
        AND replaces_bundle.channel_name = skips_bundle.channel_name
    LEFT OUTER JOIN merged_dependencies
      ON operatorbundle.name = merged_dependencies.bundle_name
    LEFT OUTER JOIN merged_properties
      ON operatorbundle.name = merged_properties.bundle_name"#;

/// One row of the bundle list, as opm's `SendBundles` makes an `api.Bundle` of it.
struct ListedBundle {
    name: String,
    package: String,
    channel: String,
    bundle_path: String,
    version: String,
    skip_range: String,
    replaces: String,
    skips: Vec<String>,
    /// `(type, value)` after opm's `uniqueDeps`.
    dependencies: Vec<(String, String)>,
    /// `(type, value)` after opm's `uniqueProps`.
    properties: Vec<(String, String)>,
}

/// The `bundle` column split as opm's `BundleStringToAPIBundle` splits it.
#[derive(Debug, Default)]
struct StoredBundle {
    /// Every object, as its raw JSON text.
    objects: Vec<String>,
    /// The first CSV among them, parsed; none when the column is NULL or empty.
    csv: Option<Value>,
}

struct ModelPackage {
    default_channel: String,
    /// Channels by name, each with its entries by bundle name.
    channels: BTreeMap<String, BTreeMap<String, ChannelEntry>>,
    bundles: BTreeMap<String, Bundle>,
    icon: Option<Icon>,
}

struct Reader<'a> {
    conn: &'a mut SqliteConnection,
    path: &'a Path,
    objects_as: ObjectsAs,
}

impl Reader<'_> {
    fn sql(&self, context: &'static str) -> impl FnOnce(sqlx::Error) -> MigrateError {
        sql_error(self.path, context)
    }

    async fn run(mut self) -> Result<DeclarativeConfig, MigrateError> {
        if !self.check_schema().await? {
            return Ok(DeclarativeConfig::default());
        }
        let mut packages = self.packages().await?;
        let rows = self.list_bundles().await?;
        let stored = self.stored_bundles(&rows).await?;
        populate_channels(&mut packages, &rows, &stored, self.objects_as)?;
        self.populate_icons(&mut packages).await?;
        let mut config = convert(packages);
        self.add_db_related_images(&mut config).await?;
        for bundle in &mut config.bundles {
            gosort::sort_slice(&mut bundle.related_images, |a, b| a.image < b.image);
        }
        Ok(config)
    }

    /// Whether the schema can be read; `false` for a database with no tables at all, which
    /// opm would initialise and find empty.
    async fn check_schema(&mut self) -> Result<bool, MigrateError> {
        let tables: Vec<Option<String>> =
            sqlx::query_scalar("SELECT CAST(name AS TEXT) FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut *self.conn)
                .await
                .map_err(self.sql("list tables"))?;
        let tables: BTreeSet<String> = tables
            .into_iter()
            .flatten()
            .filter(|t| !t.starts_with("sqlite_"))
            .collect();
        let version = if tables.contains("schema_migrations") {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT CAST(version AS INTEGER) FROM schema_migrations LIMIT 1",
            )
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(self.sql("read the schema version"))?
            .flatten()
        } else {
            None
        };
        match version {
            Some(v) if v >= OLDEST_READABLE_SCHEMA_VERSION => Ok(true),
            None if tables.iter().all(|t| t == "schema_migrations") => Ok(false),
            found => Err(MigrateError::UnsupportedSchema {
                path: self.path.to_path_buf(),
                found,
            }),
        }
    }

    /// opm's `initializeModelPackages`: `ListPackages`, then `GetPackage` for each.
    async fn packages(&mut self) -> Result<BTreeMap<String, ModelPackage>, MigrateError> {
        let names: Vec<Option<String>> =
            sqlx::query_scalar("SELECT DISTINCT CAST(name AS TEXT) FROM package")
                .fetch_all(&mut *self.conn)
                .await
                .map_err(self.sql("list packages"))?;
        let mut packages = BTreeMap::new();
        for name in names.into_iter().flatten() {
            let rows = sqlx::query(
                "SELECT DISTINCT CAST(package.name AS TEXT), CAST(default_channel AS TEXT), \
                 CAST(channel.name AS TEXT) \
                 FROM package INNER JOIN channel ON channel.package_name=package.name \
                 WHERE package.name=?",
            )
            .bind(name.as_str())
            .fetch_all(&mut *self.conn)
            .await
            .map_err(self.sql("read a package"))?;
            if rows.is_empty() {
                return Err(MigrateError::Catalog(format!("package {name} not found")));
            }
            let mut package_name = String::new();
            let mut default_channel = String::new();
            let mut channels = BTreeMap::new();
            for row in &rows {
                package_name = text(row, 0).map_err(self.sql("read a package"))?;
                default_channel = text(row, 1).map_err(self.sql("read a package"))?;
                let channel = text(row, 2).map_err(self.sql("read a package"))?;
                channels.insert(channel, BTreeMap::new());
            }
            packages.insert(
                package_name,
                ModelPackage {
                    default_channel,
                    channels,
                    bundles: BTreeMap::new(),
                    icon: None,
                },
            );
        }
        Ok(packages)
    }

    /// opm's `SendBundles` over `listBundlesQuery`, less the manifests.
    async fn list_bundles(&mut self) -> Result<Vec<ListedBundle>, MigrateError> {
        let rows = sqlx::query(LIST_BUNDLES_QUERY)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(self.sql("list bundles"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = |i| -> Result<Option<String>, MigrateError> {
                row.try_get::<Option<String>, _>(i)
                    .map_err(sql_error(self.path, "list bundles"))
            };
            let bundle_path = get(0)?;
            let name = get(1)?;
            let package = get(2)?;
            let channel = get(3)?;
            let replaces = get(4)?;
            let skips = get(5)?;
            let version = get(6)?;
            let skip_range = get(7)?;
            let dependencies = get(8)?;
            let properties = get(9)?;
            let (Some(name), Some(version), Some(bundle_path), Some(channel)) =
                (name, version, bundle_path, channel)
            else {
                continue;
            };
            let dependencies = match dependencies {
                Some(text) => unique(merged_list(&text).map_err(populate_channels_error)?),
                None => Vec::new(),
            };
            let properties = match properties {
                Some(text) => unique(merged_list(&text).map_err(populate_channels_error)?),
                None => Vec::new(),
            };
            out.push(ListedBundle {
                name,
                package: package.unwrap_or_default(),
                channel,
                bundle_path,
                version,
                skip_range: skip_range.unwrap_or_default(),
                replaces: replaces.unwrap_or_default(),
                skips: skips
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                dependencies,
                properties,
            });
        }
        Ok(out)
    }

    /// The `bundle` column of every listed bundle, split (opm splits it for each row, and
    /// fails on the first that does not split).
    async fn stored_bundles(
        &mut self,
        rows: &[ListedBundle],
    ) -> Result<HashMap<String, StoredBundle>, MigrateError> {
        let mut stored = HashMap::new();
        for row in rows {
            if stored.contains_key(&row.name) {
                continue;
            }
            let column: Option<Option<String>> = sqlx::query_scalar(
                "SELECT CAST(bundle AS TEXT) FROM operatorbundle WHERE name = ? LIMIT 1",
            )
            .bind(&row.name)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(self.sql("read a bundle"))?;
            let bundle = match column.flatten() {
                Some(text) if !text.is_empty() => {
                    split_bundle(&text).map_err(populate_channels_error)?
                }
                _ => StoredBundle::default(),
            };
            stored.insert(row.name.clone(), bundle);
        }
        Ok(stored)
    }

    /// opm's `populatePackageIcons`.
    async fn populate_icons(
        &mut self,
        packages: &mut BTreeMap<String, ModelPackage>,
    ) -> Result<(), MigrateError> {
        for (name, package) in packages.iter_mut() {
            let fail = |m: String| MigrateError::Catalog(format!("populate package icons: {m}"));
            if !package.channels.contains_key(&package.default_channel) {
                // opm dereferences a nil default channel here and panics.
                return Err(fail(format!(
                    "package {name:?} has no channel {:?}, its default channel",
                    package.default_channel
                )));
            }
            let row = sqlx::query(
                "SELECT CAST(operatorbundle.name AS TEXT), CAST(operatorbundle.csv AS TEXT) \
                 FROM operatorbundle INNER JOIN channel \
                 ON channel.head_operatorbundle_name = operatorbundle.name \
                 WHERE channel.name = ? AND channel.package_name = ?",
            )
            .bind(&package.default_channel)
            .bind(name)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(self.sql("read a default channel head"))?;
            let Some(row) = row else {
                return Err(fail(format!(
                    "get default channel head for package {name:?}: no entry found for {name} {}",
                    package.default_channel
                )));
            };
            let head = text(&row, 0).map_err(self.sql("read a default channel head"))?;
            let csv_text = text(&row, 1).map_err(self.sql("read a default channel head"))?;
            let csv = parse_json(&csv_text)
                .and_then(|csv| check_csv(&csv).map(|()| csv))
                .map_err(|e| fail(format!("unmarshal CSV json for bundle {head:?}: {e}")))?;
            package.icon = icon_of(&csv);
        }
        Ok(())
    }

    /// opm's `populateDBRelatedImages`: the `related_image` rows of each bundle not already
    /// among its related images, without a name.
    async fn add_db_related_images(
        &mut self,
        config: &mut DeclarativeConfig,
    ) -> Result<(), MigrateError> {
        let rows = sqlx::query(
            "SELECT CAST(image AS TEXT), CAST(operatorbundle_name AS TEXT) FROM related_image",
        )
        .fetch_all(&mut *self.conn)
        .await
        .map_err(self.sql("list related images"))?;
        let mut images: HashMap<String, BTreeSet<String>> = HashMap::new();
        for row in &rows {
            let image: Option<String> = row.try_get(0).map_err(self.sql("list related images"))?;
            let bundle: Option<String> = row.try_get(1).map_err(self.sql("list related images"))?;
            if let (Some(image), Some(bundle)) = (image, bundle) {
                images.entry(bundle).or_default().insert(image);
            }
        }
        for bundle in &mut config.bundles {
            let Some(set) = images.get_mut(&bundle.name) else {
                continue;
            };
            // opm removes the images it finds from the shared set, as here.
            for listed in &bundle.related_images {
                set.remove(&listed.image);
            }
            bundle
                .related_images
                .extend(set.iter().map(|image| RelatedImage {
                    name: String::new(),
                    image: image.clone(),
                }));
        }
        Ok(())
    }
}

/// A text column, NULL read as "" (Go's `sql.NullString.String`).
fn text(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<String, sqlx::Error> {
    Ok(row.try_get::<Option<String>, _>(index)?.unwrap_or_default())
}

fn populate_channels_error(message: String) -> MigrateError {
    MigrateError::Catalog(format!("populate channels: {message}"))
}

/// A `json_group_array` of `{type, value}` objects, as Go decodes it into `[]*api.Property`.
fn merged_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let value = parse_json(text)?;
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(cannot_unmarshal(&other, "[]*api.Property")),
    };
    items
        .iter()
        .map(|item| {
            let fields = go_strings(item, "Property", &["type", "value"])?;
            let [kind, value]: [String; 2] = fields.try_into().expect("two fields");
            Ok((kind, value))
        })
        .collect()
}

/// opm's `uniqueProps` / `uniqueDeps`: the first of each `type/value`.
fn unique(list: Vec<(String, String)>) -> Vec<(String, String)> {
    if list.len() <= 1 {
        return list;
    }
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|(kind, value)| seen.insert(format!("{kind}/{value}")))
        .collect()
}

/// opm's `BundleStringToAPIBundle`: the concatenated objects, each decoded as an unstructured
/// object up to the first CSV, which must have a name.
fn split_bundle(text: &str) -> Result<StoredBundle, String> {
    let mut bundle = StoredBundle::default();
    let bytes = text.as_bytes();
    let mut at = 0;
    loop {
        // Go's `Decoder.More`.
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
            at += 1;
        }
        if at >= bytes.len() || matches!(bytes[at], b']' | b'}') {
            break;
        }
        let mut stream =
            serde_json::Deserializer::from_str(&text[at..]).into_iter::<serde::de::IgnoredAny>();
        match stream.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("unexpected EOF".into()),
        }
        let end = at + stream.byte_offset();
        bundle.objects.push(text[at..end].to_string());
        at = end;
    }
    let mut csv_name = String::new();
    for raw in &bundle.objects {
        let object = parse_json(raw)?;
        if !object.is_object() {
            return Err(cannot_unmarshal(&object, "map[string]interface {}"));
        }
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err(format!("Object 'Kind' is missing in '{}'", quote(raw)));
        }
        if kind == "ClusterServiceVersion" {
            csv_name = object
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            bundle.csv = Some(object);
            break;
        }
    }
    if csv_name.is_empty() {
        return Err("no csv in bundle".into());
    }
    Ok(bundle)
}

/// opm's `populateModelChannels` and `ConvertAPIBundleToModelBundle`, and the merging of a
/// bundle's channels that `ConvertFromModel` does.
fn populate_channels(
    packages: &mut BTreeMap<String, ModelPackage>,
    rows: &[ListedBundle],
    stored: &HashMap<String, StoredBundle>,
    objects_as: ObjectsAs,
) -> Result<(), MigrateError> {
    for row in rows {
        if row
            .properties
            .iter()
            .any(|(kind, _)| kind == "olm.deprecated")
        {
            continue;
        }
        let Some(package) = packages.get_mut(&row.package) else {
            return Err(populate_channels_error(format!(
                "unknown package {:?} for bundle {:?}",
                row.package, row.name
            )));
        };
        let Some(entries) = package.channels.get_mut(&row.channel) else {
            return Err(populate_channels_error(format!(
                "unknown channel {:?} for bundle {:?}",
                row.channel, row.name
            )));
        };
        entries.insert(
            row.name.clone(),
            ChannelEntry {
                name: row.name.clone(),
                replaces: row.replaces.clone(),
                skips: row.skips.clone(),
                skip_range: row.skip_range.clone(),
            },
        );
        if !package.bundles.contains_key(&row.name) {
            let empty = StoredBundle::default();
            let bundle = stored.get(&row.name).unwrap_or(&empty);
            let converted = convert_bundle(row, bundle, objects_as).map_err(|e| {
                populate_channels_error(format!("convert bundle {:?}: {e}", row.name))
            })?;
            package.bundles.insert(row.name.clone(), converted);
        }
    }
    Ok(())
}

/// A property with its value as opm compares it: the compacted JSON text.
struct TextProperty {
    kind: String,
    text: String,
    value: Value,
}

impl TextProperty {
    fn built(kind: &str, value: Value) -> Self {
        TextProperty {
            kind: kind.to_string(),
            text: gojson::compact(&value),
            value,
        }
    }

    fn raw(kind: &str, raw: &str) -> Result<Self, String> {
        let value = parse_json(raw).map_err(|e| {
            format!(
                "property of type {kind:?} has a value that is not JSON ({e}): {}",
                quote(raw)
            )
        })?;
        Ok(TextProperty {
            kind: kind.to_string(),
            text: go_compact(raw),
            value,
        })
    }
}

fn gvk_value(fields: &[String]) -> Value {
    json!({"group": fields[0], "kind": fields[2], "version": fields[1]})
}

/// One bundle blob: properties as opm's `convertAPIBundleToModelProperties` builds them,
/// normalized, de-duplicated and sorted as `ConvertFromModel` and `Render.Run` leave them.
fn convert_bundle(
    row: &ListedBundle,
    stored: &StoredBundle,
    objects_as: ObjectsAs,
) -> Result<Bundle, String> {
    let parse_error = |i: usize, kind: &str, e: String| {
        format!("convert properties: parse property[{i}] of type {kind:?}: {e}")
    };
    let gvk_fields = ["group", "version", "kind", "plural"];
    let mut out: Vec<TextProperty> = Vec::new();
    let mut provided: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut required: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut found_package = false;
    for (i, (kind, raw)) in row.properties.iter().enumerate() {
        match kind.as_str() {
            "olm.gvk" => {
                let fields = parse_json(raw)
                    .and_then(|v| go_strings(&v, "GroupVersionKind", &gvk_fields))
                    .map_err(|e| parse_error(i, kind, e))?;
                provided.insert(fields);
            }
            _ => {
                found_package |= kind == "olm.package";
                out.push(TextProperty::raw(kind, raw)?);
            }
        }
    }
    for (i, (kind, raw)) in row.dependencies.iter().enumerate() {
        match kind.as_str() {
            "olm.gvk" => {
                let fields = parse_json(raw)
                    .and_then(|v| go_strings(&v, "GroupVersionKind", &gvk_fields))
                    .map_err(|e| parse_error(i, kind, e))?;
                required.insert(fields);
            }
            "olm.package" => {
                let fields = parse_json(raw)
                    .and_then(|v| go_strings(&v, "Package", &["packageName", "version"]))
                    .map_err(|e| parse_error(i, kind, e))?;
                out.push(TextProperty::built(
                    "olm.package.required",
                    json!({"packageName": fields[0], "versionRange": fields[1]}),
                ));
            }
            _ => {}
        }
    }
    if !found_package {
        out.push(TextProperty::built(
            "olm.package",
            json!({"packageName": row.package, "version": row.version}),
        ));
    }
    // The legacy provided/required API lists hold the same keys; plural is not part of them.
    let gvks = |set: BTreeSet<Vec<String>>| -> BTreeSet<(String, String, String)> {
        set.into_iter()
            .map(|f| (f[0].clone(), f[1].clone(), f[2].clone()))
            .collect()
    };
    for (group, version, kind) in gvks(provided) {
        out.push(TextProperty::built(
            "olm.gvk",
            gvk_value(&[group, version, kind]),
        ));
    }
    for (group, version, kind) in gvks(required) {
        out.push(TextProperty::built(
            "olm.gvk.required",
            gvk_value(&[group, version, kind]),
        ));
    }
    let csv_decodes = stored
        .csv
        .as_ref()
        .is_some_and(|csv| check_csv(csv).is_ok());
    let mut objects = Vec::new();
    match (objects_as, &stored.csv) {
        (ObjectsAs::CsvMetadata, Some(csv)) if csv_decodes && !row.bundle_path.is_empty() => {
            objects.push(TextProperty::built(
                "olm.csv.metadata",
                render::csv_metadata_of(csv),
            ));
        }
        _ => {
            let engine = base64::engine::general_purpose::STANDARD;
            for raw in &stored.objects {
                objects.push(TextProperty::built(
                    "olm.bundle.object",
                    json!({"data": engine.encode(raw.as_bytes())}),
                ));
            }
        }
    }
    let related_images = related_images_of(stored.csv.as_ref())
        .map_err(|e| format!("get related iamges: unmarshal csv: {e}"))?;

    let sort = |list: &mut Vec<TextProperty>| {
        let mut seen = BTreeSet::new();
        list.retain(|p| seen.insert((p.kind.clone(), p.text.clone())));
        list.sort_by(|a, b| (&a.kind, &a.text).cmp(&(&b.kind, &b.text)));
    };
    sort(&mut out);
    sort(&mut objects);
    let properties = out
        .into_iter()
        .chain(objects)
        .map(|p| Property {
            kind: p.kind,
            value: p.value,
        })
        .collect();
    Ok(Bundle {
        schema: SCHEMA_BUNDLE.into(),
        name: row.name.clone(),
        package: row.package.clone(),
        image: row.bundle_path.clone(),
        properties,
        related_images,
    })
}

/// opm's `ConvertFromModel`: packages by name, then each package's channels (entries by
/// name) and bundles by name.
fn convert(packages: BTreeMap<String, ModelPackage>) -> DeclarativeConfig {
    let mut config = DeclarativeConfig::default();
    for (name, package) in packages {
        config.packages.push(Package {
            schema: SCHEMA_PACKAGE.into(),
            name: name.clone(),
            default_channel: package.default_channel,
            icon: package.icon,
            description: String::new(),
            properties: Vec::new(),
        });
        for (channel, entries) in package.channels {
            config.channels.push(Channel {
                schema: SCHEMA_CHANNEL.into(),
                name: channel,
                package: name.clone(),
                entries: entries.into_values().collect(),
                properties: Vec::new(),
            });
        }
        config.bundles.extend(package.bundles.into_values());
    }
    config
}

/// The CSV's `spec.relatedImages` (opm's `getRelatedImages`): none without a CSV.
fn related_images_of(csv: Option<&Value>) -> Result<Vec<RelatedImage>, String> {
    let Some(csv) = csv else {
        return Ok(Vec::new());
    };
    let spec = present(struct_field(csv, "spec"));
    if let Some(spec) = spec {
        if !spec.is_object() {
            return Err(cannot_unmarshal_field(spec, "csv.spec", "struct"));
        }
    }
    let list = spec.and_then(|s| present(struct_field(s, "relatedImages")));
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err(cannot_unmarshal_field(
            list,
            "csv.spec.relatedImages",
            "[]struct",
        ));
    };
    items
        .iter()
        .map(|item| {
            let fields = go_strings(item, "spec.relatedImages", &["name", "image"])?;
            Ok(RelatedImage {
                name: fields[0].clone(),
                image: fields[1].clone(),
            })
        })
        .collect()
}

/// The package icon opm takes from a CSV: its first icon, base64-decoded as Go's
/// `StdEncoding` decodes (newlines ignored), retried without spaces, and re-encoded; none if
/// it does not decode or is empty.
fn icon_of(csv: &Value) -> Option<Icon> {
    let spec = present(struct_field(csv, "spec"))?;
    let first = present(struct_field(spec, "icon"))?.as_array()?.first()?;
    let string = |name| {
        present(struct_field(first, name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let data = string("base64data");
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let decode = |text: &str| {
        let text: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        engine.decode(text)
    };
    let bytes = decode(&data)
        .or_else(|_| decode(&data.replace(' ', "")))
        .ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(Icon {
        base64data: base64::engine::general_purpose::STANDARD.encode(bytes),
        mediatype: string("mediatype"),
    })
}

/// Whether Go would decode `csv` into operator-framework's typed `ClusterServiceVersion`, for
/// the fields opm's conversion reads (the typed install strategy is not checked).
fn check_csv(csv: &Value) -> Result<(), String> {
    match csv {
        Value::Null => return Ok(()),
        Value::Object(_) => {}
        other => return Err(cannot_unmarshal(other, "v1alpha1.ClusterServiceVersion")),
    }
    let at = |path: &str| format!("ClusterServiceVersion.{path}");
    if let Some(metadata) = present(struct_field(csv, "metadata")) {
        expect_object(metadata, &at("metadata"))?;
        for name in ["name", "namespace"] {
            expect_string(
                struct_field(metadata, name),
                &at(&format!("metadata.{name}")),
            )?;
        }
        for name in ["annotations", "labels"] {
            expect_string_map(
                struct_field(metadata, name),
                &at(&format!("metadata.{name}")),
            )?;
        }
    }
    let Some(spec) = present(struct_field(csv, "spec")) else {
        return Ok(());
    };
    expect_object(spec, &at("spec"))?;
    for name in [
        "displayName",
        "description",
        "maturity",
        "minKubeVersion",
        "replaces",
    ] {
        expect_string(struct_field(spec, name), &at(&format!("spec.{name}")))?;
    }
    for name in ["skips", "keywords"] {
        expect_list(
            struct_field(spec, name),
            &at(&format!("spec.{name}")),
            |item, path| expect_string(Some(item), path),
        )?;
    }
    for name in ["labels", "annotations"] {
        expect_string_map(struct_field(spec, name), &at(&format!("spec.{name}")))?;
    }
    if let Some(version) = struct_field(spec, "version") {
        // operator-framework's OperatorVersion: a string parsed tolerantly, null included.
        let text = match version {
            Value::Null => "",
            Value::String(s) => s.as_str(),
            other => {
                return Err(cannot_unmarshal_field(other, &at("spec.version"), "string"));
            }
        };
        parse_tolerant(text)?;
    }
    let string_fields = |fields: &'static [&'static str]| {
        move |item: &Value, path: &str| -> Result<(), String> {
            if item.is_null() {
                return Ok(());
            }
            expect_object(item, path)?;
            for name in fields {
                expect_string(struct_field(item, name), &format!("{path}.{name}"))?;
            }
            Ok(())
        }
    };
    expect_list(
        struct_field(spec, "icon"),
        &at("spec.icon"),
        string_fields(&["base64data", "mediatype"]),
    )?;
    expect_list(
        struct_field(spec, "relatedImages"),
        &at("spec.relatedImages"),
        string_fields(&["name", "image"]),
    )?;
    expect_list(
        struct_field(spec, "maintainers"),
        &at("spec.maintainers"),
        string_fields(&["name", "email"]),
    )?;
    expect_list(
        struct_field(spec, "links"),
        &at("spec.links"),
        string_fields(&["name", "url"]),
    )?;
    if let Some(provider) = present(struct_field(spec, "provider")) {
        string_fields(&["name", "url"])(provider, &at("spec.provider"))?;
    }
    expect_list(
        struct_field(spec, "installModes"),
        &at("spec.installModes"),
        |item, path| {
            if item.is_null() {
                return Ok(());
            }
            expect_object(item, path)?;
            expect_string(struct_field(item, "type"), &format!("{path}.type"))?;
            match present(struct_field(item, "supported")) {
                None | Some(Value::Bool(_)) => Ok(()),
                Some(other) => Err(cannot_unmarshal_field(
                    other,
                    &format!("{path}.supported"),
                    "bool",
                )),
            }
        },
    )?;
    Ok(())
}

/// blang/semver's `ParseTolerant`.
fn parse_tolerant(text: &str) -> Result<(), String> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
    let mut parts: Vec<String> = trimmed.splitn(3, '.').map(str::to_string).collect();
    for part in &mut parts {
        if part.len() > 1 {
            let mut stripped = part.trim_start_matches('0').to_string();
            if !stripped.starts_with(|c: char| c.is_ascii_digit()) {
                stripped.insert(0, '0');
            }
            *part = stripped;
        }
    }
    if parts.len() < 3 {
        if parts
            .last()
            .is_some_and(|p| p.contains('+') || p.contains('-'))
        {
            return Err("Short version cannot contain PreRelease/Build meta data".into());
        }
        while parts.len() < 3 {
            parts.push("0".into());
        }
    }
    semver::Version::parse(&parts.join("."))
        .map(|_| ())
        .map_err(|e| format!("invalid version {text:?}: {e}"))
}

fn expect_object(value: &Value, path: &str) -> Result<(), String> {
    if value.is_object() {
        Ok(())
    } else {
        Err(cannot_unmarshal_field(value, path, "struct"))
    }
}

fn expect_string(value: Option<&Value>, path: &str) -> Result<(), String> {
    match value {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(cannot_unmarshal_field(other, path, "string")),
    }
}

fn expect_string_map(value: Option<&Value>, path: &str) -> Result<(), String> {
    match present(value) {
        None => Ok(()),
        Some(Value::Object(map)) => map
            .iter()
            .try_for_each(|(key, v)| expect_string(Some(v), &format!("{path}.{key}"))),
        Some(other) => Err(cannot_unmarshal_field(other, path, "map[string]string")),
    }
}

fn expect_list(
    value: Option<&Value>,
    path: &str,
    item: impl Fn(&Value, &str) -> Result<(), String>,
) -> Result<(), String> {
    match present(value) {
        None => Ok(()),
        Some(Value::Array(items)) => items.iter().try_for_each(|v| item(v, path)),
        Some(other) => Err(cannot_unmarshal_field(other, path, "slice")),
    }
}

/// A value that is there and not null.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// The string fields of a Go struct decoded from `value` ("" when absent or null).
fn go_strings(value: &Value, go_type: &str, fields: &[&str]) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(vec![String::new(); fields.len()]),
        Value::Object(_) => fields
            .iter()
            .map(|name| match struct_field(value, name) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(cannot_unmarshal_field(
                    other,
                    &format!("{go_type}.{name}"),
                    "string",
                )),
            })
            .collect(),
        other => Err(cannot_unmarshal(other, go_type)),
    }
}

fn parse_json(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err("unexpected end of JSON input".into());
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Go's `json.Compact`: the text without whitespace outside strings, nothing else changed.
fn go_compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

fn cannot_unmarshal(value: &Value, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        json_kind(value)
    )
}

fn cannot_unmarshal_field(value: &Value, path: &str, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {path} of type {go_type}",
        json_kind(value)
    )
}

/// The start of a long value, for an error message.
fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return text.to_string();
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_columns_split_as_go_decodes_them() {
        let text = "{\"kind\":\"ConfigMap\",\"a\":1}\n {\"kind\":\"ClusterServiceVersion\",\"metadata\":{\"name\":\"x.v1\"}}\n{\"no\":\"kind\"}\n";
        let bundle = split_bundle(text).unwrap();
        assert_eq!(
            bundle.objects,
            vec![
                "{\"kind\":\"ConfigMap\",\"a\":1}",
                "{\"kind\":\"ClusterServiceVersion\",\"metadata\":{\"name\":\"x.v1\"}}",
                "{\"no\":\"kind\"}",
            ]
        );
        assert_eq!(bundle.csv.unwrap()["metadata"]["name"], "x.v1");
        // Objects before the CSV must have a kind; a CSV needs a name.
        assert!(
            split_bundle("{\"a\":1}{\"kind\":\"ClusterServiceVersion\"}")
                .unwrap_err()
                .starts_with("Object 'Kind' is missing in '{\"a\":1}'")
        );
        assert_eq!(
            split_bundle("{\"kind\":\"ClusterServiceVersion\"}").err(),
            Some("no csv in bundle".into())
        );
        assert_eq!(
            split_bundle("{\"kind\":\"Service\"}").err(),
            Some("no csv in bundle".into())
        );
        assert!(split_bundle("{\"kind\":").is_err());
    }

    #[test]
    fn raw_values_are_compacted_as_go_compacts_them() {
        assert_eq!(
            go_compact("{ \"a\" : [1, 2],\n\t\"b\": \"x \\\" y\" }"),
            "{\"a\":[1,2],\"b\":\"x \\\" y\"}"
        );
        assert_eq!(go_compact("\"\\u003c a\""), "\"\\u003c a\"");
    }

    #[test]
    fn tolerant_versions_follow_blang() {
        for ok in ["1.2.3", "v1.2", "1", " 01.02.03 ", "1.0.0-rc.1+b"] {
            assert!(parse_tolerant(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1.2-rc", "x.y.z", "1.2.3.4"] {
            assert!(parse_tolerant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unique_keeps_the_first_of_each_type_and_value() {
        let list = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "1".to_string()),
        ];
        assert_eq!(unique(list).len(), 2);
    }

    #[test]
    fn icons_decode_like_go_and_retry_without_spaces() {
        let csv =
            json!({"spec": {"icon": [{"base64data": "aGVs bG8=", "mediatype": "image/png"}]}});
        assert_eq!(
            icon_of(&csv),
            Some(Icon {
                base64data: "aGVsbG8=".into(),
                mediatype: "image/png".into()
            })
        );
        assert_eq!(
            icon_of(&json!({"spec": {"icon": [{"base64data": "!!"}]}})),
            None
        );
        assert_eq!(
            icon_of(&json!({"spec": {"icon": [{"base64data": ""}]}})),
            None
        );
        assert_eq!(icon_of(&json!({"spec": {"icon": []}})), None);
    }
}
