//! The request types that build an index image: add, rm, create-empty-index,
//! add-deprecations, fbc-operations, merge-index-image. Each reads its index, changes the
//! catalog with the native engine, builds the image on the binary image for every arch, pushes
//! it to the request's tag (and the build tags, and over `from_index` when asked), and records
//! what IIB records.

use super::TaskError;
use crate::catalog::add::{
    add_bundles, present, remove_packages, remove_packages_with, AddOptions, GraphMode,
};
use crate::catalog::declcfg::DeclarativeConfig;
use crate::catalog::deprecate::deprecate_truncate;
use crate::catalog::model::validate;
use crate::catalog::render::{render_bundle, ObjectsAs, RenderedBundle};
use crate::registry::auth::Credentials;
use crate::workers::index_image::{
    self, arches_of, binary_image, build_and_push, output_pull_spec, parse, read_index, resolve,
    IndexContents, DELIVERY_VERSION_LABEL, DISTRIBUTION_SCOPE_LABEL,
};
use crate::workers::runner::TaskContext;
use iib_aggregates::params::{
    AddDeprecationsParams, AddParams, CreateEmptyIndexParams, FbcOperationsParams,
    MergeIndexImageParams, RmParams, SecretKind,
};
use iib_aggregates::BuildFacts;
use std::collections::{BTreeMap, BTreeSet};

/// What every index request starts from.
struct Prepared {
    contents: Option<IndexContents>,
    from_index_resolved: Option<String>,
    binary_image_resolved: String,
    arches: BTreeSet<String>,
    labels: BTreeMap<String, String>,
}

/// IIB's `prepare_request_for_build`: resolve the images, read the index, work out the arches
/// (the requested ones and those of `from_index`, all of which the binary image must offer)
/// and the distribution scope, and record them.
async fn prepare(
    ctx: &TaskContext,
    from_index: Option<&str>,
    requested_binary_image: Option<&str>,
    add_arches: &[String],
    requested_scope: Option<&str>,
) -> Result<Prepared, TaskError> {
    ctx.progress("Resolving the container images").await?;
    let (contents, from_index_resolved) = match from_index {
        Some(from_index) => {
            let resolved = resolve(ctx, from_index).await?;
            let contents = read_index(ctx, &resolved).await?;
            (Some(contents), Some(resolved))
        }
        None => (None, None),
    };
    let index_labels = contents
        .as_ref()
        .map(|c| c.labels.clone())
        .unwrap_or_default();
    let distribution_scope = requested_scope
        .map(str::to_string)
        .or_else(|| index_labels.get(DISTRIBUTION_SCOPE_LABEL).cloned())
        .unwrap_or_else(|| "prod".to_string())
        .to_lowercase();
    if !["prod", "stage", "dev"].contains(&distribution_scope.as_str()) {
        return Err(TaskError::Failed(format!(
            "The following distribution scope is not valid: {distribution_scope}"
        )));
    }
    let binary_image = binary_image(
        ctx,
        requested_binary_image,
        &distribution_scope,
        index_labels.get(DELIVERY_VERSION_LABEL).map(String::as_str),
    )?;
    let binary_image_resolved = resolve(ctx, &binary_image).await?;
    let mut arches: BTreeSet<String> = add_arches.iter().cloned().collect();
    if let Some(contents) = &contents {
        arches.extend(contents.arches.iter().cloned());
    }
    if arches.is_empty() {
        return Err(TaskError::Failed(
            "No arches were provided to build the index image".into(),
        ));
    }
    let offered = arches_of(ctx, &binary_image_resolved).await?;
    let missing: Vec<&String> = arches.iter().filter(|a| !offered.contains(*a)).collect();
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(TaskError::Failed(format!(
            "The binary image is not available for the following arches: {}",
            missing.join(", ")
        )));
    }
    ctx.log.info(format!(
        "Set to build the index image for the following arches: {}",
        arches.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    ctx.facts(BuildFacts {
        arches: arches.clone(),
        binary_image: Some(binary_image.clone()),
        binary_image_resolved: Some(binary_image_resolved.clone()),
        distribution_scope: Some(distribution_scope.clone()),
        from_index_resolved: from_index_resolved.clone(),
        ..BuildFacts::default()
    })
    .await?;
    // The new index keeps the delivery labels of the one it came from.
    let mut labels = BTreeMap::new();
    if let Some(version) = index_labels.get(DELIVERY_VERSION_LABEL) {
        labels.insert(DELIVERY_VERSION_LABEL.to_string(), version.clone());
    }
    labels.insert(
        DISTRIBUTION_SCOPE_LABEL.to_string(),
        distribution_scope.clone(),
    );
    Ok(Prepared {
        contents,
        from_index_resolved,
        binary_image_resolved,
        arches,
        labels,
    })
}

/// Builds and pushes the new index, pushes the build tags, overwrites `overwrite` with the
/// token when asked, and records the index image.
async fn finish(
    ctx: &TaskContext,
    prepared: &Prepared,
    catalog: &DeclarativeConfig,
    build_tags: &[String],
    overwrite: Option<(&str, SecretKind)>,
) -> Result<(), TaskError> {
    validate(catalog).map_err(|e| {
        TaskError::Failed(format!("Failed to validate the content of the index:\n{e}"))
    })?;
    ctx.progress(format!(
        "Building the index image for the following arches: {}",
        prepared
            .arches
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await?;
    let (pushed, pushed_resolved) = build_and_push(
        ctx,
        &prepared.binary_image_resolved,
        &prepared.arches,
        catalog,
        prepared.labels.clone(),
    )
    .await?;
    ctx.log.info(format!(
        "Pushed the index image {pushed} ({pushed_resolved})"
    ));
    if !build_tags.is_empty() {
        index_image::push_tags(ctx, &pushed, build_tags).await?;
    }
    let mut facts = BuildFacts {
        index_image: Some(output_pull_spec(ctx, &pushed)),
        index_image_resolved: Some(output_pull_spec(ctx, &pushed_resolved)),
        internal_index_image_copy: Some(pushed.clone()),
        internal_index_image_copy_resolved: Some(pushed_resolved.clone()),
        ..BuildFacts::default()
    };
    if let Some((index, kind)) = overwrite {
        ctx.progress(format!("Overwriting the index image {index}"))
            .await?;
        let credentials = ctx
            .secret(kind)
            .and_then(Credentials::from_user_colon_secret);
        let target = parse(index)?;
        let (digest, _) = ctx
            .client
            .copy(&parse(&pushed)?, &target, credentials.as_ref())
            .await
            .map_err(|e| {
                TaskError::Failed(format!("Failed to overwrite the index image {index}: {e}"))
            })?;
        facts.index_image = Some(index.to_string());
        facts.index_image_resolved = Some(target.with_digest(digest).to_string());
    }
    ctx.facts(facts).await
}

fn catalog_of(prepared: &Prepared) -> DeclarativeConfig {
    prepared
        .contents
        .as_ref()
        .map(|c| c.catalog.clone())
        .unwrap_or_default()
}

/// Renders bundle images (resolved pull specs) for the engine.
async fn render_bundles(
    ctx: &TaskContext,
    resolved: &[String],
) -> Result<Vec<RenderedBundle>, TaskError> {
    let mut rendered = Vec::with_capacity(resolved.len());
    for pull_spec in resolved {
        let reference = parse(pull_spec)?;
        let image = ctx.client.bundle_image(&reference).await.map_err(|e| {
            TaskError::Failed(format!("Failed to read the bundle image {pull_spec}: {e}"))
        })?;
        rendered.push(
            render_bundle(image.file_refs(), pull_spec, ObjectsAs::CsvMetadata).map_err(|e| {
                TaskError::Failed(format!("Failed to render the bundle {pull_spec}: {e}"))
            })?,
        );
    }
    Ok(rendered)
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

pub async fn add(ctx: &TaskContext, params: &AddParams) -> Result<String, TaskError> {
    ctx.progress("Resolving the bundles").await?;
    let mut resolved = Vec::with_capacity(params.bundles.len());
    for bundle in &params.bundles {
        resolved.push(resolve(ctx, bundle).await?);
    }
    let prepared = prepare(
        ctx,
        params.from_index.as_deref(),
        params.binary_image.as_deref(),
        &params.add_arches,
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    ctx.progress("Rendering the bundles").await?;
    let rendered = render_bundles(ctx, &resolved).await?;
    let mut mapping: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for bundle in &rendered {
        mapping
            .entry(bundle.bundle.package.clone())
            .or_default()
            .push(bundle.bundle.image.clone());
    }
    ctx.facts(BuildFacts {
        bundle_mapping: Some(mapping),
        ..BuildFacts::default()
    })
    .await?;
    // Bundles already in the index are left out, as IIB does.
    let already: BTreeSet<String> = present(&catalog, &rendered)
        .iter()
        .map(|b| b.bundle.image.clone())
        .collect();
    for image in &already {
        ctx.log.info(format!(
            "The bundle {image} is already in the index image; skipping it"
        ));
    }
    let missing: Vec<RenderedBundle> = rendered
        .into_iter()
        .filter(|b| !already.contains(&b.bundle.image))
        .collect();
    ctx.progress("Adding the bundles to the index image")
        .await?;
    let report = add_bundles(
        &mut catalog,
        missing,
        &AddOptions {
            mode: graph_mode(params.graph_update_mode.as_deref())?,
            overwrite_latest: params.overwrite_from_index,
        },
    )
    .map_err(|e| TaskError::Failed(format!("Failed to add the bundles to the index image: {e}")))?;
    for line in report.lines() {
        ctx.log.info(line);
    }
    if !params.deprecation_list.is_empty() {
        ctx.progress("Deprecating bundles in the deprecation list")
            .await?;
        let mut images = Vec::new();
        for bundle in &params.deprecation_list {
            images.push(resolve(ctx, bundle).await?);
        }
        deprecate_truncate(&mut catalog, &images)
            .map_err(|e| TaskError::Failed(format!("Failed to deprecate the bundles: {e}")))?;
    }
    let overwrite = params
        .overwrite_from_index
        .then_some(params.from_index.as_deref())
        .flatten()
        .map(|i| (i, SecretKind::OverwriteFromIndexToken));
    finish(ctx, &prepared, &catalog, &params.build_tags, overwrite).await?;
    Ok("The operator bundle(s) were successfully added to the index image".into())
}

pub async fn rm(ctx: &TaskContext, params: &RmParams) -> Result<String, TaskError> {
    let prepared = prepare(
        ctx,
        params.from_index.as_deref(),
        params.binary_image.as_deref(),
        &params.add_arches,
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    ctx.progress("Removing the operators from the index image")
        .await?;
    remove_packages(&mut catalog, &params.operators).map_err(|e| {
        TaskError::Failed(format!(
            "Failed to remove operators from the index image: {e}"
        ))
    })?;
    let overwrite = params
        .overwrite_from_index
        .then_some(params.from_index.as_deref())
        .flatten()
        .map(|i| (i, SecretKind::OverwriteFromIndexToken));
    finish(ctx, &prepared, &catalog, &params.build_tags, overwrite).await?;
    Ok("The operator(s) were successfully removed from the index image".into())
}

pub async fn create_empty_index(
    ctx: &TaskContext,
    params: &CreateEmptyIndexParams,
) -> Result<String, TaskError> {
    let mut prepared = prepare(
        ctx,
        Some(&params.from_index),
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    ctx.progress("Removing operators from index image").await?;
    let packages: Vec<String> = catalog.packages.iter().map(|p| p.name.clone()).collect();
    remove_packages_with(&mut catalog, &packages, true).map_err(engine)?;
    catalog = DeclarativeConfig::default();
    if let Some(labels) = &params.labels {
        prepared.labels.extend(labels.clone());
    }
    finish(ctx, &prepared, &catalog, &[], None).await?;
    Ok("The index image was successfully cleaned and updated.".into())
}

pub async fn add_deprecations(
    ctx: &TaskContext,
    params: &AddDeprecationsParams,
) -> Result<String, TaskError> {
    let prepared = prepare(
        ctx,
        Some(&params.from_index),
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    ctx.progress("Adding deprecations to the index image")
        .await?;
    let schema: serde_json::Value = serde_json::from_str(&params.deprecation_schema)
        .map_err(|e| TaskError::Failed(format!("The deprecation schema is not valid JSON: {e}")))?;
    crate::catalog::deprecations::set_deprecations(&mut catalog, &params.operator_package, &schema)
        .map_err(engine)?;
    let overwrite = params.overwrite_from_index.then_some((
        params.from_index.as_str(),
        SecretKind::OverwriteFromIndexToken,
    ));
    finish(ctx, &prepared, &catalog, &params.build_tags, overwrite).await?;
    Ok("The deprecations were successfully added to the index image".into())
}

pub async fn fbc_operations(
    ctx: &TaskContext,
    params: &FbcOperationsParams,
) -> Result<String, TaskError> {
    let prepared = prepare(
        ctx,
        Some(&params.from_index),
        params.binary_image.as_deref(),
        &params.add_arches,
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    let mut resolved_fragments = Vec::new();
    for fragment in &params.fbc_fragments {
        ctx.progress(format!(
            "Adding the FBC fragment {fragment} to the index image"
        ))
        .await?;
        let resolved = resolve(ctx, fragment).await?;
        let contents = read_index(ctx, &resolved).await?;
        crate::catalog::fragment::add_fragment(&mut catalog, contents.catalog, fragment)
            .map_err(engine)?;
        resolved_fragments.push(resolved);
    }
    ctx.facts(BuildFacts {
        fbc_fragment_resolved: if params.used_fbc_fragment {
            resolved_fragments.first().cloned()
        } else {
            None
        },
        fbc_fragments_resolved: Some(resolved_fragments),
        ..BuildFacts::default()
    })
    .await?;
    let overwrite = params.overwrite_from_index.then_some((
        params.from_index.as_str(),
        SecretKind::OverwriteFromIndexToken,
    ));
    finish(ctx, &prepared, &catalog, &params.build_tags, overwrite).await?;
    Ok("The FBC fragment was successfully added in the index image".into())
}

pub async fn merge_index_image(
    ctx: &TaskContext,
    params: &MergeIndexImageParams,
) -> Result<String, TaskError> {
    let prepared = prepare(
        ctx,
        Some(&params.source_from_index),
        params.binary_image.as_deref(),
        &[],
        params.distribution_scope.as_deref(),
    )
    .await?;
    let mut catalog = catalog_of(&prepared);
    let source_resolved = prepared.from_index_resolved.clone();
    let mut facts = BuildFacts {
        source_from_index_resolved: source_resolved,
        ..BuildFacts::default()
    };
    if let Some(target_index) = &params.target_index {
        ctx.progress("Adding the bundles missing in the source index image")
            .await?;
        let target_resolved = resolve(ctx, target_index).await?;
        let target = read_index(ctx, &target_resolved).await?;
        facts.target_index_resolved = Some(target_resolved);
        let mut deprecations = Vec::new();
        for bundle in &params.deprecation_list {
            deprecations.push(resolve(ctx, bundle).await?);
        }
        crate::catalog::merge::merge_indexes(
            &mut catalog,
            &target.catalog,
            graph_mode(params.graph_update_mode.as_deref())?,
            &deprecations,
        )
        .map_err(|e| TaskError::Failed(format!("Failed to merge the index images: {e}")))?;
    }
    ctx.facts(facts).await?;
    let overwrite = params
        .overwrite_target_index
        .then_some(params.target_index.as_deref())
        .flatten()
        .map(|i| (i, SecretKind::OverwriteTargetIndexToken));
    finish(ctx, &prepared, &catalog, &params.build_tags, overwrite).await?;
    Ok("The index image was successfully merged".into())
}
