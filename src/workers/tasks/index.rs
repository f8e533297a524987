//! The request types that build an index image: add, rm, create-empty-index,
//! add-deprecations, fbc-operations, merge-index-image. Each reads its index, changes the
//! catalog with the native engine, builds the image on the binary image for every arch, pushes
//! it to the request's tag (and the build tags, and over `from_index` when asked), and records
//! what IIB records.

use super::TaskError;
use crate::workers::index_catalog::{CatalogFiles, Selection};
use crate::workers::index_image::{
    self, arches_of, binary_image, build_and_push, build_on_previous, output_pull_spec, parse,
    read_index, resolve, IndexContents, DELIVERY_VERSION_LABEL, DISTRIBUTION_SCOPE_LABEL,
};
use crate::workers::runner::TaskContext;
use crate::workers::steps::{self, step, Step};
use iib_aggregates::params::{
    AddDeprecationsParams, AddParams, CreateEmptyIndexParams, FbcOperationsParams,
    MergeIndexImageParams, RmParams, SecretKind,
};
use iib_aggregates::{BuildFacts, RequestType};
use iib_fbc::add::{add_bundles, package_names, present, remove_packages, AddOptions, GraphMode};
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::deprecate::deprecate_truncate;
use iib_fbc::model::validate;
use iib_fbc::render::{render_bundle, ObjectsAs, RenderedBundle};
use iib_oci::auth::Credentials;
use iib_oci::bundle::BundleImage;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What every index request starts from.
struct Prepared {
    contents: Option<IndexContents>,
    from_index_resolved: Option<String>,
    /// The other indexes, resolved (merge-index-image's source when it has a target).
    others_resolved: Vec<String>,
    binary_image: String,
    binary_image_resolved: String,
    arches: BTreeSet<String>,
    distribution_scope: String,
    labels: BTreeMap<String, String>,
}

/// IIB's `_validate_distribution_scope`: a request may narrow the index's scope, never widen it.
fn distribution_scope(resolved: &str, requested: Option<&str>) -> Result<String, TaskError> {
    const SCOPES: [&str; 3] = ["dev", "stage", "prod"];
    let Some(requested) = requested.filter(|r| !r.is_empty()) else {
        return Ok(resolved.to_string());
    };
    let position = |scope: &str| {
        SCOPES.iter().position(|s| *s == scope).ok_or_else(|| {
            TaskError::Failed(format!(
                "The distribution scope {scope:?} is not one of dev, stage, prod"
            ))
        })
    };
    if position(requested)? > position(resolved)? {
        return Err(TaskError::Failed(format!(
            "Cannot set \"distribution_scope\" to {requested} because from index is already set to {resolved}"
        )));
    }
    Ok(requested.to_string())
}

/// The credentials to overwrite the request's index with (`RequestParams::overwritten_index`):
/// its token (`overwrite_from_index_token`, or `overwrite_target_index_token` for
/// merge-index-image) exactly as given, as IIB puts it in its Docker config. Without a token
/// (privileged users may overwrite without one) the service's own credentials serve; a token
/// that is not `username:token`, or expired before the request ran, fails the request, since
/// going on would push with the service's credentials where the user meant theirs.
fn overwrite_credentials(ctx: &TaskContext) -> Result<Option<Credentials>, TaskError> {
    if ctx.params.overwritten_index().is_none() {
        return Ok(None);
    }
    let kind = if ctx.params.request_type() == RequestType::MergeIndexImage {
        SecretKind::OverwriteTargetIndexToken
    } else {
        SecretKind::OverwriteFromIndexToken
    };
    let Some(token) = ctx.secret(kind)? else {
        return Ok(None);
    };
    Credentials::from_user_colon_secret(token)
        .map(Some)
        .ok_or_else(|| {
            TaskError::Failed(format!(
                "The {} is not in the format \"username:token\"; resubmit the request with a token of that form",
                kind.parameter()
            ))
        })
}

/// IIB's `prepare_request_for_build`: resolve and read the index (`scope_index` gives the scope,
/// delivery version and labels; every index in `indexes` adds its arches), choose the binary
/// image, and work out the arches (the requested ones and the indexes', all of which the
/// binary image must offer).
async fn prepare(
    ctx: &TaskContext,
    from_index: Option<&str>,
    other_indexes: &[&str],
    requested_binary_image: Option<&str>,
    add_arches: &[String],
    requested_scope: Option<&str>,
) -> Result<Prepared, TaskError> {
    // A token that cannot serve fails the request before anything is built.
    overwrite_credentials(ctx)?;
    ctx.progress("Resolving the container images").await?;
    let (contents, from_index_resolved) = match from_index {
        Some(from_index) => {
            let resolved = resolve(ctx, from_index).await?;
            let contents = read_index(ctx, &resolved).await?;
            (Some(contents), Some(resolved))
        }
        None => (None, None),
    };
    let mut others_resolved = Vec::with_capacity(other_indexes.len());
    for index in other_indexes {
        others_resolved.push(resolve(ctx, index).await?);
    }
    let index_labels = contents
        .as_ref()
        .map(|c| c.labels.clone())
        .unwrap_or_default();
    let resolved_scope = index_labels
        .get(DISTRIBUTION_SCOPE_LABEL)
        .cloned()
        .unwrap_or_else(|| "prod".to_string());
    let distribution_scope = distribution_scope(&resolved_scope, requested_scope)?;
    let ocp_version = index_labels
        .get(DELIVERY_VERSION_LABEL)
        .cloned()
        .unwrap_or_else(|| "v4.5".to_string());
    let configured = ctx
        .settings
        .binary_image_config
        .get(&distribution_scope)
        .and_then(|versions| versions.get(&ocp_version))
        .cloned();
    match (requested_binary_image, configured.as_deref()) {
        (Some("scratch"), Some(c)) if c != "scratch" => {
            return Err(TaskError::Failed(format!(
                "The index image should not be binaryless for {ocp_version}."
            )))
        }
        (Some(r), Some("scratch")) if r != "scratch" => {
            return Err(TaskError::Failed(format!(
                "The index image must be built as a binaryless for {ocp_version}."
            )))
        }
        _ => {}
    }
    let binary_image = binary_image(
        ctx,
        requested_binary_image,
        &distribution_scope,
        Some(&ocp_version),
    )?;
    // A binaryless index (IIB's "scratch") is amd64 only and holds nothing but the catalog.
    let (arches, binary_image_resolved) = if binary_image == "scratch" {
        (BTreeSet::from(["amd64".to_string()]), "scratch".to_string())
    } else {
        let mut arches: BTreeSet<String> = add_arches.iter().cloned().collect();
        if let Some(contents) = &contents {
            arches.extend(contents.arches.iter().cloned());
        }
        for resolved in &others_resolved {
            arches.extend(arches_of(ctx, resolved).await?);
        }
        if arches.is_empty() {
            return Err(TaskError::Failed(
                "No arches were provided to build the index image".into(),
            ));
        }
        let binary_image_resolved = resolve(ctx, &binary_image).await?;
        let offered = arches_of(ctx, &binary_image_resolved).await?;
        let missing: Vec<&str> = arches
            .iter()
            .filter(|a| !offered.contains(*a))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(TaskError::Failed(format!(
                "The binary image is not available for the following arches: {}",
                missing.join(", ")
            )));
        }
        (arches, binary_image_resolved)
    };
    // The new index keeps the delivery labels of the one it came from.
    let mut labels = BTreeMap::new();
    labels.insert(DELIVERY_VERSION_LABEL.to_string(), ocp_version);
    labels.insert(
        DISTRIBUTION_SCOPE_LABEL.to_string(),
        distribution_scope.clone(),
    );
    Ok(Prepared {
        contents,
        from_index_resolved,
        others_resolved,
        binary_image,
        binary_image_resolved,
        arches,
        distribution_scope,
        labels,
    })
}

fn arch_list(arches: &BTreeSet<String>) -> String {
    arches.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// IIB's "prebuild PATCH": the resolved images and scope, and the state reason saying which
/// arches are built.
async fn prebuild(
    ctx: &TaskContext,
    prepared: &Prepared,
    mut facts: BuildFacts,
) -> Result<(), TaskError> {
    facts.binary_image = Some(prepared.binary_image.clone());
    facts.binary_image_resolved = Some(prepared.binary_image_resolved.clone());
    facts.distribution_scope = Some(prepared.distribution_scope.clone());
    if facts.from_index_resolved.is_none() {
        facts.from_index_resolved = prepared.from_index_resolved.clone();
    }
    ctx.facts(facts).await?;
    ctx.progress(format!(
        "Building the index image for the following arches: {}",
        arch_list(&prepared.arches)
    ))
    .await
}

/// The catalog a task changes: the whole catalog, or the selected packages of the from_index.
struct Working {
    catalog: DeclarativeConfig,
    /// What of the from_index `catalog` holds, when not all of it.
    selection: Option<Selection>,
}

impl Working {
    fn new(catalog: DeclarativeConfig) -> Self {
        Self {
            catalog,
            selection: None,
        }
    }
}

fn unreadable(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(format!(
        "Failed to read the catalog of the index image: {e}"
    ))
}

/// Runs `work` on `catalog` off the async runtime (`crate::blocking`: parsing, validating,
/// writing and the engine's changes are CPU-bound) as step `name`, and hands the catalog back.
async fn on_catalog<T, F>(
    ctx: &TaskContext,
    name: &'static str,
    mut catalog: DeclarativeConfig,
    work: F,
) -> (DeclarativeConfig, T)
where
    T: Send + 'static,
    F: FnOnce(&mut DeclarativeConfig) -> T + Send + 'static,
{
    steps::run(
        ctx,
        name,
        crate::blocking::run(move || {
            let out = work(&mut catalog);
            (catalog, out)
        }),
    )
    .await
}

/// The whole catalog of `files`, parsed off the async runtime.
async fn load_all(files: &Arc<CatalogFiles>) -> Result<DeclarativeConfig, TaskError> {
    let files = files.clone();
    crate::blocking::run(move || files.load_all())
        .await
        .map_err(unreadable)
}

impl Prepared {
    /// The whole catalog of the from_index (empty without one).
    async fn whole(&self) -> Result<Working, TaskError> {
        Ok(Working::new(match &self.contents {
            Some(contents) => load_all(&contents.catalog).await?,
            None => DeclarativeConfig::default(),
        }))
    }

    /// The packages a task changes (and those sharing files with them), to change and write
    /// only them.
    async fn packages<'a>(
        &self,
        packages: impl IntoIterator<Item = &'a str>,
    ) -> Result<Working, TaskError> {
        let Some(contents) = &self.contents else {
            return self.whole().await;
        };
        let selection = contents.catalog.select(packages);
        let (files, selected) = (contents.catalog.clone(), selection.clone());
        let catalog = crate::blocking::run(move || files.load(&selected))
            .await
            .map_err(unreadable)?;
        Ok(Working {
            catalog,
            selection: Some(selection),
        })
    }
}

/// Pushes the new index: the from_index plus a layer of the changed packages when the task
/// changed only some (and the from_index is built on this binary image, with room for a
/// layer), else the binary image plus the whole catalog. Either way the worker remembers the
/// new catalog, so a request building on this image reads nothing but its changed packages.
async fn publish(
    ctx: &TaskContext,
    prepared: &Prepared,
    working: Working,
) -> Result<index_image::Pushed, TaskError> {
    // Writing is CPU-bound: off the async runtime, the catalog handed back.
    let write = |catalog: DeclarativeConfig| async move {
        let (catalog, written) = on_catalog(ctx, step::WRITE_CATALOG, catalog, |c| {
            CatalogFiles::write(c)
        })
        .await;
        written
            .map(|written| (catalog, written))
            .map_err(|e| TaskError::Failed(format!("Failed to write the catalog: {e}")))
    };
    let remember = |pushed: &index_image::Pushed, files: CatalogFiles| {
        let files = Arc::new(files);
        for manifest in &pushed.manifests {
            ctx.catalogs.put(manifest.clone(), files.clone());
        }
    };
    let Working {
        mut catalog,
        selection,
    } = working;
    if let (Some(selection), Some(contents), Some(from_index)) = (
        &selection,
        &prepared.contents,
        &prepared.from_index_resolved,
    ) {
        let only_selected = catalog
            .package_names()
            .into_iter()
            .all(|p| selection.packages.contains(p));
        if contents.layered && only_selected && !contents.catalog.covers_all(selection) {
            let (written_catalog, written) = write(catalog).await?;
            catalog = written_catalog;
            let entries = contents.catalog.delta(selection, &written);
            if let Some(pushed) = build_on_previous(
                ctx,
                &prepared.binary_image_resolved,
                from_index,
                &prepared.arches,
                &entries,
                prepared.labels.clone(),
            )
            .await?
            {
                ctx.log.info(format!(
                    "Built on {from_index} with one layer of the changed package(s) {}: {} file(s) written, {} removed",
                    selection.packages.iter().cloned().collect::<Vec<_>>().join(", "),
                    written.len(),
                    entries.len() - written.len(),
                ));
                remember(
                    &pushed,
                    contents.catalog.replaced(selection, written, &catalog),
                );
                return Ok(pushed);
            }
        }
    }
    // The whole catalog on the binary image.
    let catalog = match (&selection, &prepared.contents) {
        (Some(selection), Some(contents)) => {
            let (files, selection) = (contents.catalog.clone(), selection.clone());
            crate::blocking::run(move || {
                let mut whole = files.load_rest(&selection)?;
                whole.merge(catalog);
                Ok::<_, iib_fbc::load::LoadError>(whole)
            })
            .await
            .map_err(unreadable)?
        }
        _ => catalog,
    };
    let (catalog, files) = write(catalog).await?;
    let pushed = build_and_push(
        ctx,
        &prepared.binary_image_resolved,
        &prepared.arches,
        &files,
        prepared.labels.clone(),
    )
    .await?;
    remember(&pushed, CatalogFiles::from_written(files, &catalog));
    Ok(pushed)
}

/// Builds and pushes the new index, pushes the build tags, overwrites the index the request
/// names (`RequestParams::overwritten_index`) with its token, and records the image. As IIB:
/// add, rm, fbc-operations and add-deprecations also record the resolved image and the internal
/// copy (create-empty-index and merge-index-image only `arches` and `index_image`), and
/// merge-index-image does not announce "Creating the manifest list".
async fn finish(
    ctx: &TaskContext,
    prepared: &Prepared,
    working: Working,
    build_tags: &[String],
) -> Result<(), TaskError> {
    let request_type = ctx.params.request_type();
    let full_record = !matches!(
        request_type,
        RequestType::CreateEmptyIndex | RequestType::MergeIndexImage
    );
    let overwrite = ctx.params.overwritten_index();
    let (catalog, valid) =
        on_catalog(ctx, step::CHANGE_CATALOG, working.catalog, |c| validate(c)).await;
    valid.map_err(|e| {
        TaskError::Failed(format!("Failed to validate the content of the index:\n{e}"))
    })?;
    let working = Working { catalog, ..working };
    if request_type != RequestType::MergeIndexImage {
        ctx.progress("Creating the manifest list").await?;
    }
    let build = Step::start(ctx, step::BUILD);
    build.arches(&prepared.arches);
    let built = build.run(publish(ctx, prepared, working)).await?;
    build.image(&built.spec).bytes_pushed(built.uploaded);
    drop(build);
    let (pushed, pushed_resolved) = (built.spec, built.resolved);
    ctx.log.info(format!(
        "Pushed the index image {pushed} ({pushed_resolved})"
    ));
    if !build_tags.is_empty() {
        steps::run(
            ctx,
            step::PUSH_TAGS,
            index_image::push_tags(ctx, &pushed, build_tags),
        )
        .await?;
    }
    let mut facts = BuildFacts {
        arches: prepared.arches.clone(),
        index_image: Some(output_pull_spec(ctx, &pushed)),
        ..BuildFacts::default()
    };
    if full_record {
        facts.index_image_resolved = Some(output_pull_spec(ctx, &pushed_resolved));
        facts.internal_index_image_copy = Some(pushed.clone());
        facts.internal_index_image_copy_resolved = Some(pushed_resolved.clone());
    }
    if let Some(index) = overwrite {
        let credentials = overwrite_credentials(ctx)?;
        let target = parse(index)?;
        // IIB's `_verify_index_image`: the index must not have moved while we built.
        if let Some(before) = &prepared.from_index_resolved {
            let now = resolve(ctx, index).await?;
            if &now != before {
                return Err(TaskError::Failed(
                    "The supplied from_index image changed during the IIB request. Please resubmit the request.".into(),
                ));
            }
        }
        ctx.progress(format!("Overwriting the index image {index} with {pushed}"))
            .await?;
        let overwrite = Step::start(ctx, step::OVERWRITE);
        overwrite.image(index);
        let (digest, sent) = overwrite
            .run(
                ctx.client
                    .copy(&parse(&pushed)?, &target, credentials.as_ref()),
            )
            .await
            .map_err(|e| {
                TaskError::Failed(format!(
                    "Failed to overwrite the input from_index container image of {index}: {e}"
                ))
            })?;
        overwrite.bytes_pushed(sent);
        drop(overwrite);
        facts.index_image = Some(index.to_string());
        if full_record {
            facts.index_image_resolved = Some(target.with_digest(digest).to_string());
        }
    }
    ctx.facts(facts).await
}

/// The request's bundle images (resolved pull specs), each read once: labels and files.
async fn read_bundles(
    ctx: &TaskContext,
    resolved: &[String],
) -> Result<Vec<(String, BundleImage)>, TaskError> {
    let mut bundles = Vec::with_capacity(resolved.len());
    for pull_spec in resolved {
        let image = ctx
            .client
            .bundle_image(&parse(pull_spec)?)
            .await
            .map_err(|e| {
                TaskError::Failed(format!("Failed to read the bundle image {pull_spec}: {e}"))
            })?;
        bundles.push((pull_spec.clone(), image));
    }
    Ok(bundles)
}

/// Renders the bundles for the engine.
fn render_bundles(bundles: &[(String, BundleImage)]) -> Result<Vec<RenderedBundle>, TaskError> {
    bundles
        .iter()
        .map(|(pull_spec, image)| {
            render_bundle(image.file_refs(), pull_spec, ObjectsAs::CsvMetadata).map_err(|e| {
                TaskError::Failed(format!("Failed to render the bundle {pull_spec}: {e}"))
            })
        })
        .collect()
}

fn graph_mode(requested: Option<&str>) -> Result<GraphMode, TaskError> {
    match requested {
        None => Ok(GraphMode::Replaces),
        Some(mode) => GraphMode::parse(mode)
            .ok_or_else(|| TaskError::Failed(format!("The graph update mode {mode} is not valid"))),
    }
}

fn engine(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(e.to_string())
}

/// IIB's `verify_labels`: every bundle must carry `IIB_REQUIRED_LABELS`.
fn verify_labels(ctx: &TaskContext, bundles: &[(String, BundleImage)]) -> Result<(), TaskError> {
    for (bundle, image) in bundles {
        for (label, value) in &ctx.settings.required_labels {
            if image.labels.get(label) != Some(value) {
                return Err(TaskError::Failed(format!(
                    "The bundle {bundle} does not have the label {label}={value}"
                )));
            }
        }
    }
    Ok(())
}

/// IIB's `inspect_related_images`: every pull spec the bundles' CSVs name must be readable
/// (after the submitter's registry replacements).
async fn check_related_images(
    ctx: &TaskContext,
    bundles: &[(String, BundleImage)],
) -> Result<(), TaskError> {
    use crate::workers::operator_manifest::{distinct, pull_specs};
    let replacements = ctx
        .user
        .as_ref()
        .and_then(|u| ctx.settings.related_image_registry_replacement.get(u))
        .cloned()
        .unwrap_or_default();
    let mut unreachable = Vec::new();
    for (_, image) in bundles {
        for (path, bytes) in &image.files {
            let is_yaml = path.ends_with(".yaml") || path.ends_with(".yml");
            if !path.starts_with("manifests/") || !is_yaml {
                continue;
            }
            let csv: serde_json::Value = serde_yaml_ng::from_slice(bytes).map_err(|e| {
                TaskError::Failed(format!(
                    "The Operator Manifest is not in a valid YAML format: {e}"
                ))
            })?;
            if csv["kind"] != "ClusterServiceVersion" {
                continue;
            }
            for name in distinct(&pull_specs(&csv).map_err(TaskError::Failed)?) {
                let mut spec = name.to_str();
                if let Some(new) = name.registry.as_deref().and_then(|r| replacements.get(r)) {
                    spec = spec.replace(name.registry.as_deref().unwrap_or_default(), new);
                }
                let reachable = match spec.parse::<iib_oci::Reference>() {
                    Ok(reference) => ctx.client.resolve(&reference).await.is_ok(),
                    Err(_) => false,
                };
                if !reachable && !unreachable.contains(&spec) {
                    unreachable.push(spec);
                }
            }
        }
    }
    if unreachable.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unreachable.iter().map(|s| format!("'{s}'")).collect();
    Err(TaskError::Failed(format!(
        "IIB cannot access the following related images [{}]",
        listed.join(", ")
    )))
}

pub async fn add(ctx: &TaskContext, params: &AddParams) -> Result<String, TaskError> {
    ctx.progress("Resolving the bundles").await?;
    let mut resolved = Vec::with_capacity(params.bundles.len());
    for bundle in &params.bundles {
        resolved.push(resolve(ctx, bundle).await?);
    }
    let bundles = read_bundles(ctx, &resolved).await?;
    verify_labels(ctx, &bundles)?;
    if params.check_related_images == Some(true) {
        check_related_images(ctx, &bundles).await?;
    }
    super::greenwave::gate(ctx, &bundles).await?;
    let prepared = prepare(
        ctx,
        params.from_index.as_deref(),
        &[],
        params.binary_image.as_deref(),
        &params.add_arches,
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut rendered = crate::blocking::run(move || render_bundles(&bundles)).await?;
    // IIB's add_max_ocp_version_property.
    for bundle in &mut rendered {
        if iib_fbc::render::needs_max_openshift_version(bundle) {
            ctx.log.info(format!(
                "The bundle {} uses APIs removed in Kubernetes 1.22 ({}): capping it with olm.maxOpenShiftVersion 4.8",
                bundle.bundle.name,
                bundle.removed_apis.join(", ")
            ));
            iib_fbc::render::add_max_openshift_version(&mut bundle.bundle);
        }
    }
    // bundle_mapping: each package's bundles as submitted.
    let mut mapping: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (submitted, bundle) in params.bundles.iter().zip(&rendered) {
        if !bundle.bundle.package.is_empty() {
            mapping
                .entry(bundle.bundle.package.clone())
                .or_default()
                .push(submitted.clone());
        }
    }
    prebuild(
        ctx,
        &prepared,
        BuildFacts {
            bundle_mapping: (!mapping.is_empty()).then_some(mapping),
            ..BuildFacts::default()
        },
    )
    .await?;
    // The bundles named for deprecation, resolved up front: their packages are changed too.
    let mut listed = Vec::new();
    for bundle in &params.deprecation_list {
        listed.push(resolve(ctx, bundle).await?);
    }
    let mut packages: BTreeSet<String> =
        rendered.iter().map(|b| b.bundle.package.clone()).collect();
    if let Some(contents) = &prepared.contents {
        for image in &listed {
            packages.extend(
                contents
                    .catalog
                    .packages_of_image(image)
                    .map(str::to_string),
            );
        }
    }
    let mut working = prepared
        .packages(packages.iter().map(String::as_str))
        .await?;
    let catalog = &mut working.catalog;
    let mut missing = rendered;
    if prepared.contents.is_some() {
        ctx.progress("Checking if bundles are already present in index image")
            .await?;
        // Bundles already in the index are left out, as IIB does.
        let already: BTreeSet<String> = present(catalog, &missing)
            .iter()
            .map(|b| b.bundle.image.clone())
            .collect();
        for image in &already {
            ctx.log.info(format!(
                "The bundle {image} is already in the index image; skipping it"
            ));
        }
        missing.retain(|b| !already.contains(&b.bundle.image));
    }
    let options = AddOptions {
        mode: graph_mode(params.graph_update_mode.as_deref())?,
        // IIB overwrites the latest bundle of a package in dev and stage indexes.
        overwrite_latest: matches!(prepared.distribution_scope.as_str(), "dev" | "stage"),
    };
    let (added, report) = on_catalog(
        ctx,
        step::CHANGE_CATALOG,
        std::mem::take(catalog),
        move |c| add_bundles(c, missing, &options),
    )
    .await;
    *catalog = added;
    let report = report.map_err(|e| {
        TaskError::Failed(format!("Failed to add the bundles to the index image: {e}"))
    })?;
    for line in report.lines() {
        ctx.log.info(line);
    }
    if !params.deprecation_list.is_empty() {
        // Only bundles of the index (or of this request) are deprecated.
        let known: BTreeSet<&str> = catalog.bundles.iter().map(|b| b.image.as_str()).collect();
        let images: Vec<String> = listed
            .into_iter()
            .filter(|i| known.contains(i.as_str()))
            .collect();
        if images.is_empty() {
            ctx.log
                .info("Deprecation list was set but no bundles were found for deprecation.");
        } else {
            let (deprecated, done) = on_catalog(
                ctx,
                step::CHANGE_CATALOG,
                std::mem::take(catalog),
                move |c| deprecate_truncate(c, &images),
            )
            .await;
            *catalog = deprecated;
            done.map_err(|e| TaskError::Failed(format!("Failed to deprecate the bundles: {e}")))?;
        }
    }
    finish(ctx, &prepared, working, &params.build_tags).await?;
    Ok("The operator bundle(s) were successfully added to the index image".into())
}

pub async fn rm(ctx: &TaskContext, params: &RmParams) -> Result<String, TaskError> {
    let prepared = prepare(
        ctx,
        params.from_index.as_deref(),
        &[],
        params.binary_image.as_deref(),
        &params.add_arches,
        params.distribution_scope.as_deref(),
    )
    .await?;
    prebuild(ctx, &prepared, BuildFacts::default()).await?;
    let mut working = prepared.packages(package_names(&params.operators)).await?;
    let operators = params.operators.clone();
    let (removed, done) = on_catalog(
        ctx,
        step::CHANGE_CATALOG,
        std::mem::take(&mut working.catalog),
        move |c| remove_packages(c, &operators),
    )
    .await;
    working.catalog = removed;
    done.map_err(|e| {
        TaskError::Failed(format!(
            "Failed to remove operators from the index image: {e}"
        ))
    })?;
    finish(ctx, &prepared, working, &params.build_tags).await?;
    Ok("The operator(s) were successfully removed from the index image".into())
}

pub async fn create_empty_index(
    ctx: &TaskContext,
    params: &CreateEmptyIndexParams,
) -> Result<String, TaskError> {
    let mut prepared = prepare(
        ctx,
        Some(&params.from_index),
        &[],
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    prebuild(ctx, &prepared, BuildFacts::default()).await?;
    ctx.progress("Checking operators present in index image")
        .await?;
    let packages: Vec<String> = prepared
        .contents
        .as_ref()
        .map(|c| c.catalog.packages().map(str::to_string).collect())
        .unwrap_or_default();
    ctx.progress("Removing operators from index image").await?;
    ctx.log.info(format!(
        "Removing the package(s) {} and every blob of no package",
        packages.join(", ")
    ));
    // The index is empty: every package goes, and what no package owns too.
    let catalog = DeclarativeConfig::default();
    ctx.progress("Getting and updating labels for new index image")
        .await?;
    if let Some(labels) = &params.labels {
        prepared.labels.extend(labels.clone());
    }
    finish(ctx, &prepared, Working::new(catalog), &[]).await?;
    Ok("The empty index image was successfully created".into())
}

pub async fn add_deprecations(
    ctx: &TaskContext,
    params: &AddDeprecationsParams,
) -> Result<String, TaskError> {
    ctx.progress("Resolving the index images").await?;
    // IIB takes the scope from the index, not from the request.
    let prepared = prepare(
        ctx,
        Some(&params.from_index),
        &[],
        params.binary_image.as_deref(),
        &[],
        None,
    )
    .await?;
    prebuild(ctx, &prepared, BuildFacts::default()).await?;
    let mut working = prepared
        .packages([params.operator_package.as_str()])
        .await?;
    ctx.progress("Getting all deprecations present in index image")
        .await?;
    let schema: serde_json::Value = serde_json::from_str(&params.deprecation_schema)
        .map_err(|e| TaskError::Failed(format!("The deprecation schema is not valid JSON: {e}")))?;
    ctx.progress("Adding deprecations to from_index").await?;
    iib_fbc::deprecations::set_deprecations(
        &mut working.catalog,
        &params.operator_package,
        &schema,
    )
    .map_err(engine)?;
    finish(ctx, &prepared, working, &params.build_tags).await?;
    Ok("The deprecation schema was successfully added to the index image".into())
}

pub async fn fbc_operations(
    ctx: &TaskContext,
    params: &FbcOperationsParams,
) -> Result<String, TaskError> {
    ctx.progress("Resolving the fbc fragments").await?;
    let mut resolved_fragments = Vec::new();
    for fragment in &params.fbc_fragments {
        resolved_fragments.push(resolve(ctx, fragment).await?);
    }
    // IIB ignores add_arches for fbc-operations.
    let prepared = prepare(
        ctx,
        Some(&params.from_index),
        &[],
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    prebuild(
        ctx,
        &prepared,
        BuildFacts {
            fbc_fragment_resolved: if params.used_fbc_fragment {
                resolved_fragments.first().cloned()
            } else {
                None
            },
            fbc_fragments_resolved: Some(resolved_fragments.clone()),
            ..BuildFacts::default()
        },
    )
    .await?;
    let count = resolved_fragments.len();
    ctx.progress(format!(
        "Extracting operator packages from {count} fbc fragment(s)"
    ))
    .await?;
    let mut fragments = Vec::new();
    for resolved in &resolved_fragments {
        let fragment = read_index(ctx, resolved).await?.catalog;
        fragments.push(load_all(&fragment).await?);
    }
    let packages: BTreeSet<String> = fragments
        .iter()
        .flat_map(iib_fbc::fragment::packages)
        .collect();
    let mut working = prepared
        .packages(packages.iter().map(String::as_str))
        .await?;
    for (i, (fragment, resolved)) in fragments.into_iter().zip(&resolved_fragments).enumerate() {
        let packages: Vec<String> = iib_fbc::fragment::packages(&fragment)
            .into_iter()
            .map(|p| format!("'{p}'"))
            .collect();
        ctx.progress(format!(
            "Adding package(s) [{}] from fbc fragment {}/{count} to from_index",
            packages.join(", "),
            i + 1
        ))
        .await?;
        let resolved = resolved.clone();
        let (added, done) = on_catalog(
            ctx,
            step::CHANGE_CATALOG,
            std::mem::take(&mut working.catalog),
            move |c| iib_fbc::fragment::add_fragment(c, fragment, &resolved),
        )
        .await;
        working.catalog = added;
        done.map_err(engine)?;
    }
    finish(ctx, &prepared, working, &params.build_tags).await?;
    Ok(format!(
        "The {count} FBC fragment(s) were successfully added in the index image"
    ))
}

/// IIB's `get_bundles_latest_version`: of the bundles given (pull specs in `catalog`), the
/// highest version of each package.
fn latest_per_package(catalog: &DeclarativeConfig, images: &[String]) -> Vec<String> {
    let mut latest: BTreeMap<String, (iib_fbc::version::Version, String)> = BTreeMap::new();
    for image in images {
        let Some(bundle) = catalog.bundles.iter().find(|b| &b.image == image) else {
            continue;
        };
        let Ok(version) = iib_fbc::version::parse(bundle.version().unwrap_or("")) else {
            continue;
        };
        match latest.get(&bundle.package) {
            Some((best, _)) if iib_fbc::version::compare(best, &version).is_ge() => {}
            _ => {
                latest.insert(bundle.package.clone(), (version, image.clone()));
            }
        }
    }
    latest.into_values().map(|(_, image)| image).collect()
}

pub async fn merge_index_image(
    ctx: &TaskContext,
    params: &MergeIndexImageParams,
) -> Result<String, TaskError> {
    // The scope and binary image come from the target index when there is one.
    let scope_index = params
        .target_index
        .as_deref()
        .unwrap_or(&params.source_from_index);
    let others: Vec<&str> = if params.target_index.is_some() {
        vec![params.source_from_index.as_str()]
    } else {
        Vec::new()
    };
    let prepared = prepare(
        ctx,
        Some(scope_index),
        &others,
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    // The source as resolved once: prepare's other index with a target, else its from_index.
    let (source_resolved, source) = match (&params.target_index, prepared.others_resolved.first()) {
        (Some(_), Some(resolved)) => (resolved.clone(), read_index(ctx, resolved).await?.catalog),
        _ => match (&prepared.from_index_resolved, &prepared.contents) {
            (Some(resolved), Some(contents)) => (resolved.clone(), contents.catalog.clone()),
            _ => return Err(unreadable("the source index was not read")),
        },
    };

    let target_resolved = params
        .target_index
        .as_ref()
        .and(prepared.from_index_resolved.clone());
    prebuild(
        ctx,
        &prepared,
        BuildFacts {
            source_from_index_resolved: Some(source_resolved.clone()),
            target_index_resolved: target_resolved,
            ..BuildFacts::default()
        },
    )
    .await?;
    ctx.progress("Getting bundles present in the index images")
        .await?;
    let catalog = load_all(&source).await?;
    let target = if params.target_index.is_some() {
        prepared.whole().await?.catalog
    } else {
        DeclarativeConfig::default()
    };
    let missing: Vec<String> = iib_fbc::merge::missing_bundles(&catalog, &target)
        .map_err(TaskError::Failed)?
        .iter()
        .map(|b| b.image.clone())
        .collect();
    ctx.progress("Adding bundles missing in source index image")
        .await?;
    // Bundles whose com.redhat.openshift.versions does not admit the target's OpenShift.
    let ocp = prepared
        .labels
        .get(DELIVERY_VERSION_LABEL)
        .cloned()
        .unwrap_or_else(|| "v4.6".into());
    let ocp_version = crate::workers::ocp_versions::ocp_version(&ocp).map_err(TaskError::Failed)?;
    let allow_no_label = params.ignore_bundle_ocp_version == Some(true)
        && ctx.settings.no_ocp_label_allow_list.iter().any(|entry| {
            params
                .target_index
                .as_deref()
                .is_some_and(|t| t.starts_with(entry.as_str()))
                || source_resolved.starts_with(entry.as_str())
                || ctx.user.as_deref() == Some(entry.as_str())
        });
    let candidates: Vec<String> = missing
        .iter()
        .cloned()
        .chain(catalog.bundles.iter().map(|b| b.image.clone()))
        .collect();
    let mut invalid = Vec::new();
    for image in &candidates {
        let labels =
            ctx.client.labels(&parse(image)?).await.map_err(|e| {
                TaskError::Failed(format!("Failed to read the labels of {image}: {e}"))
            })?;
        let label = labels
            .get("com.redhat.openshift.versions")
            .map(String::as_str);
        if !crate::workers::ocp_versions::admits(label, &ocp_version, allow_no_label) {
            ctx.log.info(format!(
                "The bundle {image} is not for OpenShift {ocp} (com.redhat.openshift.versions: {}); deprecating it",
                label.unwrap_or("none")
            ));
            invalid.push(image.clone());
        }
    }
    let mode = graph_mode(params.graph_update_mode.as_deref())?;
    let (merged, done) = on_catalog(ctx, step::CHANGE_CATALOG, catalog, move |c| {
        iib_fbc::merge::merge_indexes(c, &target, mode, &[])
    })
    .await;
    let mut catalog = merged;
    done.map_err(|e| TaskError::Failed(format!("Failed to merge the index images: {e}")))?;
    ctx.progress("Deprecating bundles in the deprecation list")
        .await?;
    let mut listed = Vec::new();
    for bundle in &params.deprecation_list {
        listed.push(resolve(ctx, bundle).await?);
    }
    let mut deprecations: Vec<String> = candidates
        .iter()
        .filter(|c| listed.contains(c))
        .cloned()
        .collect();
    deprecations.extend(invalid);
    let deprecations = latest_per_package(&catalog, &deprecations);
    if !deprecations.is_empty() {
        let (deprecated, done) = on_catalog(ctx, step::CHANGE_CATALOG, catalog, move |c| {
            deprecate_truncate(c, &deprecations)
        })
        .await;
        catalog = deprecated;
        done.map_err(|e| TaskError::Failed(format!("Failed to deprecate the bundles: {e}")))?;
    }
    finish(ctx, &prepared, Working::new(catalog), &params.build_tags).await?;
    Ok("The index image was successfully cleaned and updated.".into())
}
