//! What the workers need from the configuration: the queues and how each runs, and IIB's
//! worker settings for the build steps.

use crate::config::Config;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How one queue runs (from `IIB_QUEUES`, e.g.
/// `{"serial_queue": {"concurrency": 1, "time_limit_seconds": 3600, "priority": 10}}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Requests run at once; 1 makes a serial queue (one at a time, in submission order).
    pub concurrency: usize,
    /// A request running longer fails with a clear reason.
    pub time_limit_seconds: Option<u64>,
    /// Higher runs first when workers compete for the machine (the order of polling).
    pub priority: i32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            time_limit_seconds: None,
            priority: 0,
        }
    }
}

/// One queue a worker serves: `None` is the default queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: Option<String>,
    pub settings: QueueSettings,
}

impl Queue {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub queues: Vec<Queue>,
    /// How long a claim lasts without a heartbeat; a dead worker's request is taken over after.
    pub lease: Duration,
    /// How many times a request may be claimed (a worker dying each time) before it fails.
    pub max_attempts: u32,
    /// How many catalog layers an index may stack on its binary image: a request changing a
    /// few packages adds a layer of just those; past this, the catalog is written whole again
    /// in one layer (below 2: always whole).
    pub max_catalog_layers: usize,
    /// Bytes of index catalogs the worker keeps in memory between requests.
    pub catalog_cache_bytes: usize,
    /// IIB's `iib_registry`: where built images are pushed.
    pub registry: Option<String>,
    /// IIB's `iib_image_push_template`, e.g. `{registry}/iib-build:{request_id}`.
    pub push_template: String,
    /// IIB's `iib_index_image_output_registry`: replaces the registry of the `index_image`
    /// recorded (the image is still pushed to `registry`).
    pub output_registry: Option<String>,
    pub binary_image_config: BTreeMap<String, BTreeMap<String, String>>,
    pub request_logs_dir: Option<PathBuf>,
    pub related_bundles_dir: Option<PathBuf>,
    pub recursive_related_bundles_dir: Option<PathBuf>,
    pub max_recursive_related_bundles: usize,
    pub greenwave_url: Option<String>,
    pub greenwave_config: BTreeMap<String, serde_json::Value>,
    pub organization_customizations: BTreeMap<String, Vec<serde_json::Value>>,
    pub required_labels: BTreeMap<String, String>,
    /// IIB's `iib_no_ocp_label_allow_list`: indexes (prefixes) or users whose bundles may lack
    /// `com.redhat.openshift.versions` in a merge that ignores bundle OCP versions.
    pub no_ocp_label_allow_list: Vec<String>,
    /// IIB's `iib_related_image_registry_replacement`: per user, registry → replacement, for
    /// checking related images.
    pub related_image_registry_replacement: BTreeMap<String, BTreeMap<String, String>>,
    /// Where artifacts also go (`IIB_AWS_S3_BUCKET_NAME`).
    pub s3: Option<crate::artifacts::S3Bucket>,
    /// Tests only (`IIB_TEST_PANIC_ON`, known to debug builds alone): a task panics when its
    /// request's parameters contain this text.
    pub panic_on: Option<String>,
}

/// A queue's settings: `IIB_QUEUES` names it, else a queue whose name says "serial" runs one
/// request at a time, others two.
fn queue_settings(all: &BTreeMap<String, QueueSettings>, name: Option<&str>) -> QueueSettings {
    let key = name.unwrap_or("default");
    all.get(key).cloned().unwrap_or_else(|| QueueSettings {
        concurrency: if key.contains("serial") { 1 } else { 2 },
        ..QueueSettings::default()
    })
}

/// A JSON setting as a typed value (empty when unset).
fn from_json<T: serde::de::DeserializeOwned + Default>(
    config: &Config,
    key: &str,
) -> Result<T, String> {
    match config.get(key) {
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| format!("{key}: {e}")),
        None => Ok(T::default()),
    }
}

impl WorkerSettings {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let json = |key: &str| config.get(key).cloned();
        let queues_config: BTreeMap<String, QueueSettings> = match json("IIB_QUEUES") {
            Some(value) => serde_json::from_value(value).map_err(|e| format!("IIB_QUEUES: {e}"))?,
            None => BTreeMap::new(),
        };
        // The default queue, and every queue IIB_USER_TO_QUEUE routes to.
        let mut names: Vec<Option<String>> = vec![None];
        if let Some(serde_json::Value::Object(map)) = json("IIB_USER_TO_QUEUE") {
            for queue in map.values().filter_map(|v| v.as_str()) {
                if !names.contains(&Some(queue.to_string())) {
                    names.push(Some(queue.to_string()));
                }
            }
        }
        for name in queues_config.keys() {
            let name = (name != "default").then(|| name.clone());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut queues: Vec<Queue> = names
            .into_iter()
            .map(|name| Queue {
                settings: queue_settings(&queues_config, name.as_deref()),
                name,
            })
            .collect();
        for queue in &queues {
            if queue.settings.concurrency == 0 {
                return Err(format!(
                    "IIB_QUEUES: queue {} has concurrency 0",
                    queue.label()
                ));
            }
        }
        queues.sort_by_key(|q| std::cmp::Reverse(q.settings.priority));
        Ok(Self {
            queues,
            lease: Duration::from_secs(
                config
                    .integer("IIB_WORKER_LEASE_SECONDS")
                    .unwrap_or(60)
                    .max(5) as u64,
            ),
            max_attempts: config
                .integer("IIB_WORKER_MAX_ATTEMPTS")
                .unwrap_or(3)
                .max(1) as u32,
            max_catalog_layers: config
                .integer("IIB_INDEX_MAX_CATALOG_LAYERS")
                .unwrap_or(8)
                .max(0) as usize,
            catalog_cache_bytes: (config
                .integer("IIB_WORKER_CATALOG_CACHE_MB")
                .unwrap_or(128)
                .max(0) as usize)
                << 20,
            registry: config.text("IIB_REGISTRY").map(str::to_string),
            push_template: config
                .text("IIB_IMAGE_PUSH_TEMPLATE")
                .unwrap_or("{registry}/iib-build:{request_id}")
                .to_string(),
            output_registry: config
                .text("IIB_INDEX_IMAGE_OUTPUT_REGISTRY")
                .map(str::to_string),
            binary_image_config: from_json(config, "IIB_BINARY_IMAGE_CONFIG")?,
            request_logs_dir: config.text("IIB_REQUEST_LOGS_DIR").map(PathBuf::from),
            related_bundles_dir: config
                .text("IIB_REQUEST_RELATED_BUNDLES_DIR")
                .map(PathBuf::from),
            recursive_related_bundles_dir: config
                .text("IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR")
                .or_else(|| config.text("IIB_RECURSIVE_REQUEST_RELATED_BUNDLES_DIR"))
                .map(PathBuf::from),
            max_recursive_related_bundles: config
                .integer("IIB_MAX_RECURSIVE_RELATED_BUNDLES")
                .unwrap_or(15)
                .max(0) as usize,
            greenwave_url: config.text("IIB_GREENWAVE_URL").map(str::to_string),
            greenwave_config: from_json(config, "IIB_GREENWAVE_CONFIG")?,
            organization_customizations: from_json(config, "IIB_ORGANIZATION_CUSTOMIZATIONS")?,
            required_labels: from_json(config, "IIB_REQUIRED_LABELS")?,
            no_ocp_label_allow_list: config.strings("IIB_NO_OCP_LABEL_ALLOW_LIST"),
            related_image_registry_replacement: from_json(
                config,
                "IIB_RELATED_IMAGE_REGISTRY_REPLACEMENT",
            )?,
            s3: crate::artifacts::S3Bucket::from_config(config)?,
            panic_on: config.text("IIB_TEST_PANIC_ON").map(str::to_string),
        })
    }

    /// The pull spec a request's index image is pushed to.
    pub fn push_target(&self, request_id: u64) -> Result<String, String> {
        let registry = self
            .registry
            .as_deref()
            .ok_or("IIB_REGISTRY is not set: the workers do not know where to push built images")?;
        Ok(self
            .push_template
            .replace("{registry}", registry)
            .replace("{request_id}", &request_id.to_string()))
    }
}
