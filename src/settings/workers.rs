//! The workers: the queues (`IIB_QUEUES`, and every queue `IIB_USER_TO_QUEUE` routes to), the
//! claim lease and attempts, the catalog cache, and IIB's worker settings for the build steps.

use super::artifacts::ArtifactSettings;
use super::read::Reader;
use super::source::SettingsError;
use crate::workers::settings::{Queue, QueueSettings, WorkerSettings, DEFAULT_QUEUE};
use std::collections::BTreeMap;
use std::time::Duration;

/// A day, in seconds: the longest claim lease that makes sense.
const DAY_SECONDS: i64 = 86_400;
/// A tebibyte, in MiB: more catalog cache than any machine running iib has.
const TIB_IN_MIB: i64 = 1 << 20;

pub(super) fn read(
    r: &Reader,
    artifacts: &ArtifactSettings,
) -> Result<WorkerSettings, SettingsError> {
    Ok(WorkerSettings {
        queue_actors: r.flag("IIB_QUEUE_ACTORS")?,
        queues: served(r, queues(r)?)?,
        lease: Duration::from_secs(r.between::<u64>(
            "IIB_WORKER_LEASE_SECONDS",
            5,
            DAY_SECONDS,
            "",
        )?),
        max_attempts: r.at_least::<u32>("IIB_WORKER_MAX_ATTEMPTS", 1)?,
        max_catalog_layers: r.between::<usize>("IIB_INDEX_MAX_CATALOG_LAYERS", 0, 100, "")?,
        catalog_cache_bytes: r.between::<usize>(
            "IIB_WORKER_CATALOG_CACHE_MB",
            0,
            TIB_IN_MIB,
            "",
        )? << 20,
        registry: r.optional_text("IIB_REGISTRY"),
        push_template: r.text("IIB_IMAGE_PUSH_TEMPLATE")?,
        output_registry: r.optional_text("IIB_INDEX_IMAGE_OUTPUT_REGISTRY"),
        binary_image_config: r.json("IIB_BINARY_IMAGE_CONFIG")?,
        request_logs_dir: artifacts.dirs.logs.clone(),
        related_bundles_dir: artifacts.dirs.related_bundles.clone(),
        recursive_related_bundles_dir: artifacts.dirs.nested_bundles.clone(),
        max_recursive_related_bundles: r
            .at_least::<usize>("IIB_MAX_RECURSIVE_RELATED_BUNDLES", 0)?,
        greenwave_url: r.optional_text("IIB_GREENWAVE_URL"),
        greenwave_config: r.json("IIB_GREENWAVE_CONFIG")?,
        organization_customizations: r.json("IIB_ORGANIZATION_CUSTOMIZATIONS")?,
        required_labels: r.json("IIB_REQUIRED_LABELS")?,
        no_ocp_label_allow_list: r.strings("IIB_NO_OCP_LABEL_ALLOW_LIST")?,
        related_image_registry_replacement: r.json("IIB_RELATED_IMAGE_REGISTRY_REPLACEMENT")?,
        s3: artifacts.s3.clone(),
        panic_on: r.optional_text("IIB_TEST_PANIC_ON"),
    })
}

/// The default queue, every queue `IIB_USER_TO_QUEUE` routes to and every queue `IIB_QUEUES`
/// names, highest priority first.
fn queues(r: &Reader) -> Result<Vec<Queue>, SettingsError> {
    let configured: BTreeMap<String, QueueSettings> = r.json("IIB_QUEUES")?;
    let mut names: Vec<Option<String>> = vec![None];
    for queue in r
        .object("IIB_USER_TO_QUEUE")?
        .values()
        .filter_map(|v| v.as_str())
    {
        if !names.contains(&Some(queue.to_string())) {
            names.push(Some(queue.to_string()));
        }
    }
    for name in configured.keys() {
        let name = (name != DEFAULT_QUEUE).then(|| name.clone());
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut queues: Vec<Queue> = names
        .into_iter()
        .map(|name| Queue {
            settings: queue_settings(&configured, name.as_deref()),
            name,
        })
        .collect();
    if let Some(queue) = queues.iter().find(|q| q.settings.concurrency == 0) {
        return Err(SettingsError::Invalid {
            key: "IIB_QUEUES".into(),
            problem: format!(
                "queue {} has concurrency 0; give it at least 1 (1 runs one request at a time)",
                queue.label()
            ),
        });
    }
    queues.sort_by_key(|q| std::cmp::Reverse(q.settings.priority));
    Ok(queues)
}

/// The queues this process's workers serve: those `IIB_WORKER_QUEUES` (`iib worker --queues`)
/// names, comma-separated (`default` is the default queue), or all of them when unset. A name
/// no queue setting declares is refused: a worker waiting on a queue nobody routes to would
/// sit idle without a word.
fn served(r: &Reader, all: Vec<Queue>) -> Result<Vec<Queue>, SettingsError> {
    let Some(wanted) = r.optional_text("IIB_WORKER_QUEUES") else {
        return Ok(all);
    };
    let mut names = Vec::new();
    for name in wanted.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(SettingsError::Invalid {
            key: "IIB_WORKER_QUEUES".into(),
            problem: "names no queue; give queue names separated by commas (default: the default queue), or leave it unset for every queue".into(),
        });
    }
    if let Some(unknown) = names
        .iter()
        .find(|name| !all.iter().any(|q| q.label() == **name))
    {
        let known: Vec<&str> = all.iter().map(Queue::label).collect();
        return Err(SettingsError::Invalid {
            key: "IIB_WORKER_QUEUES".into(),
            problem: format!(
                "names the queue {unknown:?}, which no queue setting declares (known: {}); declare it in IIB_QUEUES or IIB_USER_TO_QUEUE",
                known.join(", ")
            ),
        });
    }
    Ok(all
        .into_iter()
        .filter(|q| names.contains(&q.label()))
        .collect())
}

/// A queue's settings: `IIB_QUEUES` names it, else a queue whose name says "serial" runs one
/// request at a time, others two.
fn queue_settings(all: &BTreeMap<String, QueueSettings>, name: Option<&str>) -> QueueSettings {
    let key = name.unwrap_or(DEFAULT_QUEUE);
    all.get(key).cloned().unwrap_or_else(|| QueueSettings {
        concurrency: if key.contains("serial") { 1 } else { 2 },
        ..QueueSettings::default()
    })
}
