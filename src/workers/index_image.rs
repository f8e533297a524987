//! The steps every index request shares: resolving pull specs, reading the catalog of an
//! index image (file-based, or a legacy SQLite database migrated on the fly), working out the
//! arches and the binary image, and building and pushing the new index image.

use super::index_catalog::CatalogFiles;
use super::runner::TaskContext;
use super::steps::{step, Step};
use super::tasks::TaskError;
use iib_fbc::render::ObjectsAs;
use iib_oci::build::{layer, ConfigChanges};
use iib_oci::bundle::{CONFIGS_LABEL, DATABASE_LABEL};
use iib_oci::unpack::Node;
use iib_oci::Reference;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// IIB's label for the delivery version of an index (`v4.18`).
pub const DELIVERY_VERSION_LABEL: &str = "com.redhat.index.delivery.version";
/// IIB's label for the distribution scope of an index (`prod`, `stage`, `dev`).
pub const DISTRIBUTION_SCOPE_LABEL: &str = "com.redhat.index.delivery.distribution_scope";
/// Where the catalog goes in the images we build.
pub const CONFIGS_DIR: &str = "/configs";

pub fn parse(pull_spec: &str) -> Result<Reference, TaskError> {
    pull_spec.parse().map_err(|e| {
        TaskError::Failed(format!(
            "The pull specification {pull_spec} is not valid: {e}"
        ))
    })
}

/// `repository@digest` of a pull spec (IIB's `get_resolved_image`).
pub async fn resolve(ctx: &TaskContext, pull_spec: &str) -> Result<String, TaskError> {
    let reference = parse(pull_spec)?;
    let resolving = Step::start(ctx, step::RESOLVE);
    resolving.image(pull_spec);
    let digest = resolving
        .run(ctx.client.resolve(&reference))
        .await
        .map_err(|e| {
            TaskError::Failed(format!(
                "Failed to resolve the container image {pull_spec}: {e}"
            ))
        })?;
    Ok(reference.with_digest(digest).to_string())
}

/// An index image as read: its catalog, labels and arches.
pub struct IndexContents {
    /// The catalog's files (shared with the worker's cache).
    pub catalog: Arc<CatalogFiles>,
    pub labels: BTreeMap<String, String>,
    pub arches: BTreeSet<String>,
    /// Whether its catalog is a file-based one in `/configs`, so a new index can be this image
    /// plus a layer of changes.
    pub layered: bool,
}

/// Reads the catalog of the index image `pull_spec` (its amd64 image, or the only one), from
/// the worker's cache when this worker has read or built that image before.
pub async fn read_index(ctx: &TaskContext, pull_spec: &str) -> Result<IndexContents, TaskError> {
    let reading = Step::start(ctx, step::READ_CATALOG);
    reading.image(pull_spec);
    reading.run(read_index_catalog(ctx, pull_spec)).await
}

async fn read_index_catalog(
    ctx: &TaskContext,
    pull_spec: &str,
) -> Result<IndexContents, TaskError> {
    let reference = parse(pull_spec)?;
    let fail =
        |e: String| TaskError::Failed(format!("Failed to read the index image {pull_spec}: {e}"));
    let arches: BTreeSet<String> = ctx
        .client
        .arches(&reference)
        .await
        .map_err(|e| fail(e.to_string()))?
        .into_iter()
        .collect();
    let image = ctx
        .client
        .arch_image(&reference, None)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let labels = image.labels();
    let layered = labels
        .get(CONFIGS_LABEL)
        .is_some_and(|dir| dir.trim_end_matches('/') == CONFIGS_DIR);
    if let Some(catalog) = ctx.catalogs.get(image.digest.as_str()) {
        ctx.log.info(format!(
            "The catalog of {pull_spec} ({} files) was read before; using it",
            catalog.file_count()
        ));
        return Ok(IndexContents {
            catalog,
            labels,
            arches,
            layered,
        });
    }
    let limits = ctx.client.image_limits();
    let catalog = if let Some(configs) = labels.get(CONFIGS_LABEL) {
        let dir = configs.trim_matches('/').to_string();
        let tree = ctx
            .client
            .read_paths(&reference, Some(&image.arch), &[dir.as_str()], limits)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let prefix = format!("{dir}/");
        let files: Vec<(String, Vec<u8>)> = tree
            .nodes
            .into_iter()
            .filter_map(|(path, node)| match node {
                Node::File(bytes) => path.strip_prefix(&prefix).map(|p| (p.to_string(), bytes)),
                _ => None,
            })
            .collect();
        crate::blocking::run(move || CatalogFiles::from_files(files))
            .await
            .map_err(|e| fail(e.to_string()))?
    } else if let Some(database) = labels.get(DATABASE_LABEL) {
        let path = database.trim_start_matches('/').to_string();
        let tree = ctx
            .client
            .read_paths(&reference, Some(&image.arch), &[path.as_str()], limits)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let bytes = tree
            .file(&path)
            .ok_or_else(|| fail(format!("it has no {database}")))?;
        let bytes = bytes.to_vec();
        // The migration (a SQLite read and the conversion) and the writing are CPU-bound:
        // the whole of it runs on the blocking pool, driving the migration's futures there.
        let runtime = tokio::runtime::Handle::current();
        crate::blocking::run(move || -> Result<CatalogFiles, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let file = dir.path().join("index.db");
            std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
            let catalog = runtime
                .block_on(iib_fbc::sqlite_index::migrate(
                    &file,
                    ObjectsAs::CsvMetadata,
                ))
                .map_err(|e| e.to_string())?;
            CatalogFiles::written(&catalog).map_err(|e| e.to_string())
        })
        .await
        .map_err(fail)?
    } else {
        return Err(fail(format!(
            "it has neither the {CONFIGS_LABEL} label of a file-based catalog nor the {DATABASE_LABEL} label of a SQLite index"
        )));
    };
    let catalog = Arc::new(catalog);
    ctx.catalogs.put(image.digest.to_string(), catalog.clone());
    Ok(IndexContents {
        catalog,
        labels,
        arches,
        layered,
    })
}

/// The arches of a base image.
pub async fn arches_of(ctx: &TaskContext, pull_spec: &str) -> Result<BTreeSet<String>, TaskError> {
    let reference = parse(pull_spec)?;
    Ok(ctx
        .client
        .arches(&reference)
        .await
        .map_err(|e| TaskError::Failed(format!("Failed to read the arches of {pull_spec}: {e}")))?
        .into_iter()
        .collect())
}

/// The binary image to build on: the request's, else `IIB_BINARY_IMAGE_CONFIG` by
/// distribution scope and the index's delivery version.
pub fn binary_image(
    ctx: &TaskContext,
    requested: Option<&str>,
    distribution_scope: &str,
    delivery_version: Option<&str>,
) -> Result<String, TaskError> {
    if let Some(image) = requested {
        return Ok(image.to_string());
    }
    let version = delivery_version.unwrap_or("");
    ctx.settings
        .binary_image_config
        .get(distribution_scope)
        .and_then(|versions| versions.get(version))
        .cloned()
        .ok_or_else(|| {
            TaskError::Failed(format!(
                "IIB does not have a configured binary_image for distribution_scope : {distribution_scope} and ocp_version: {version}. Please specify a binary_image value in the request."
            ))
        })
}

/// What was pushed: the pull spec, its digest form, and each arch's manifest digest.
pub struct Pushed {
    pub spec: String,
    pub resolved: String,
    pub manifests: Vec<String>,
    /// Blob bytes uploaded (mounted and already present blobs cost nothing).
    pub uploaded: u64,
}

impl Pushed {
    fn new(target: &Reference, spec: String, built: iib_oci::build::Built) -> Self {
        Self {
            resolved: target.with_digest(built.index).to_string(),
            uploaded: built.uploaded,
            spec,
            manifests: built
                .manifests
                .into_iter()
                .map(|(_, d)| d.to_string())
                .collect(),
        }
    }
}

/// The config changes of every index image: IIB's labels, `/configs`, and `opm serve`.
fn index_changes(
    ctx: &TaskContext,
    mut labels: BTreeMap<String, String>,
    what: &str,
) -> ConfigChanges {
    labels.insert(CONFIGS_LABEL.into(), CONFIGS_DIR.into());
    ConfigChanges {
        labels,
        entrypoint: Some(vec!["/bin/opm".into()]),
        cmd: Some(vec![
            "serve".into(),
            CONFIGS_DIR.into(),
            "--cache-dir=/tmp/cache".into(),
            "--cache-enforce-integrity=false".into(),
        ]),
        env: Vec::new(),
        working_dir: None,
        created_by: format!("iib request {}: {what}", ctx.id),
    }
}

/// `files` (relative to the configs dir) as entries of a layer, tarred and gzipped off the
/// async runtime.
async fn configs_layer(files: &BTreeMap<String, Vec<u8>>, opaque: bool) -> iib_oci::build::Layer {
    let mut entries: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(path, bytes)| {
            (
                format!("{}/{path}", CONFIGS_DIR.trim_start_matches('/')),
                bytes.clone(),
            )
        })
        .collect();
    if opaque {
        // An opaque whiteout: nothing the binary image may hold under /configs shows through.
        entries.insert("configs/.wh..wh..opq".into(), Vec::new());
    }
    crate::blocking::run(move || layer(&entries)).await
}

/// The new index image: the binary image for each arch with the catalog `files` in
/// `/configs` and IIB's labels, pushed (an image index) to the request's push target.
pub async fn build_and_push(
    ctx: &TaskContext,
    binary_image: &str,
    arches: &BTreeSet<String>,
    files: &BTreeMap<String, Vec<u8>>,
    labels: BTreeMap<String, String>,
) -> Result<Pushed, TaskError> {
    let target_spec = ctx
        .settings
        .push_target(ctx.id)
        .map_err(TaskError::Failed)?;
    let target = parse(&target_spec)?;
    let catalog_layer = configs_layer(files, true).await;
    let changes = index_changes(ctx, labels, "the index catalog");
    if binary_image == "scratch" {
        return push_binaryless(ctx, &target, &target_spec, catalog_layer, &changes).await;
    }
    let base = parse(binary_image)?;
    let arches: Vec<String> = arches.iter().cloned().collect();
    let built = ctx
        .client
        .build(&base, &target, &arches, &[catalog_layer], &changes, None)
        .await
        .map_err(|e| {
            TaskError::Failed(format!(
                "Failed to build the index image on {binary_image}: {e}"
            ))
        })?;
    Ok(Pushed::new(&target, target_spec, built))
}

/// The new index image as `previous` (an index built on `binary_image`) plus one layer of
/// `entries` (changed catalog files and whiteouts, relative to the configs dir). `None`, with
/// nothing pushed, when `previous` is not built on `binary_image` for every arch or already
/// stacks `IIB_INDEX_MAX_CATALOG_LAYERS` layers on it.
pub async fn build_on_previous(
    ctx: &TaskContext,
    binary_image: &str,
    previous: &str,
    arches: &BTreeSet<String>,
    entries: &BTreeMap<String, Vec<u8>>,
    labels: BTreeMap<String, String>,
) -> Result<Option<Pushed>, TaskError> {
    if binary_image == "scratch" || ctx.settings.max_catalog_layers < 2 {
        return Ok(None);
    }
    let target_spec = ctx
        .settings
        .push_target(ctx.id)
        .map_err(TaskError::Failed)?;
    let target = parse(&target_spec)?;
    let delta = configs_layer(entries, false).await;
    let changes = index_changes(ctx, labels, "the catalog changes");
    let arches: Vec<String> = arches.iter().cloned().collect();
    let built = ctx
        .client
        .build_extended(
            &parse(binary_image)?,
            &parse(previous)?,
            &target,
            &arches,
            std::slice::from_ref(&delta),
            &changes,
            ctx.settings.max_catalog_layers,
            None,
        )
        .await
        .map_err(|e| {
            TaskError::Failed(format!(
                "Failed to build the index image on {previous}: {e}"
            ))
        })?;
    Ok(built.map(|built| Pushed::new(&target, target_spec, built)))
}

/// A binaryless index: one amd64 image of the catalog layer alone, under an image index.
async fn push_binaryless(
    ctx: &TaskContext,
    target: &iib_oci::Reference,
    target_spec: &str,
    catalog_layer: iib_oci::build::Layer,
    changes: &ConfigChanges,
) -> Result<Pushed, TaskError> {
    let fail = |e: iib_oci::RegistryError| {
        TaskError::Failed(format!("Failed to build the binaryless index image: {e}"))
    };
    let entry = ctx
        .client
        .push_layer_image(
            target,
            "amd64",
            &catalog_layer,
            &changes.labels,
            &changes.created_by,
        )
        .await
        .map_err(fail)?;
    let manifests = vec![entry.digest.to_string()];
    let digest = ctx
        .client
        .push_index(target, &target.target(), vec![entry], None)
        .await
        .map_err(fail)?;
    Ok(Pushed {
        spec: target_spec.to_string(),
        resolved: target.with_digest(digest).to_string(),
        manifests,
        uploaded: catalog_layer.blob.len() as u64,
    })
}

/// Tags the pushed index image with each of `tags` in the push target's repository.
pub async fn push_tags(ctx: &TaskContext, pushed: &str, tags: &[String]) -> Result<(), TaskError> {
    let source = parse(pushed)?;
    for tag in tags {
        let target = source.with_tag(tag);
        ctx.client
            .copy(&source, &target, None)
            .await
            .map_err(|e| TaskError::Failed(format!("Failed to push the build tag {tag}: {e}")))?;
    }
    Ok(())
}

/// IIB's `index_image` as recorded: the pushed pull spec, with its registry replaced by
/// `IIB_INDEX_IMAGE_OUTPUT_REGISTRY` when set.
pub fn output_pull_spec(ctx: &TaskContext, pushed: &str) -> String {
    match (&ctx.settings.output_registry, &ctx.settings.registry) {
        (Some(output), Some(registry)) => pushed.replacen(registry.as_str(), output, 1),
        _ => pushed.to_string(),
    }
}
