//! What the workers need from the configuration: the queues and how each runs, and IIB's
//! worker settings for the build steps. Built once at start-up by `crate::settings`.

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

/// The default queue's name wherever a queue is named (settings, labels, notifications).
pub const DEFAULT_QUEUE: &str = "default";

/// One queue a worker serves: `None` is the default queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: Option<String>,
    pub settings: QueueSettings,
}

impl Queue {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_QUEUE)
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `IIB_QUEUE_ACTORS`: whether `serve` and `worker` run requests at all.
    pub queue_actors: bool,
    /// The queues this process serves (`IIB_WORKER_QUEUES`; all by default), highest priority
    /// first.
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

impl WorkerSettings {
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
