//! Prometheus metrics, in every process (`serve`, `api`, `worker`, `relay`): the `metrics`
//! facade records, `metrics-exporter-prometheus` keeps the values, and our own `/metrics`
//! handler renders them (the exporter's HTTP server is not used). Every metric is named here,
//! with its labels, kind and help ([`ALL`], plus `iib_oci::metrics::ALL` for the registry
//! client's); code elsewhere records through the small functions below.
//!
//! Labels are low-cardinality by construction: HTTP routes are axum's route templates (never
//! the raw path), request types are IIB's eight, queues are the configured ones, registry hosts
//! are capped (`iib_oci::metrics`). Never a request id, a user or an image name.
//!
//! Values read from the database (event counts, lags, queue depths, events set aside) are
//! refreshed on each scrape by [`store::refresh`]; every process reads the same database, so
//! dashboards aggregate them with `max`, not `sum`.

pub mod store;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub use iib_oci::metrics::Kind;

/// Counter `{method, route, status}`: HTTP calls answered. `route` is the route template
/// (`/api/v1/builds/{id}`), `unmatched` for paths no route serves.
pub const HTTP_REQUESTS: &str = "iib_http_requests_total";
/// Histogram `{method, route}`: seconds from a call's arrival to its answer's headers (an
/// event stream's duration is the time to its first byte).
pub const HTTP_REQUEST_DURATION: &str = "iib_http_request_duration_seconds";
/// Counter `{type, queue}`: requests submitted through the API.
pub const REQUESTS_SUBMITTED: &str = "iib_requests_submitted_total";
/// Counter `{type, queue}`: runs started by a worker (a request taken over after its worker
/// died, or handed back at shutdown, starts again).
pub const REQUESTS_STARTED: &str = "iib_requests_started_total";
/// Counter `{type, queue}`: requests a worker completed.
pub const REQUESTS_COMPLETED: &str = "iib_requests_completed_total";
/// Counter `{type, queue}`: requests a worker failed.
pub const REQUESTS_FAILED: &str = "iib_requests_failed_total";
/// Histogram `{type, state}`: seconds from a worker's start of a request to its recorded end
/// (`state`: complete or failed).
pub const BUILD_DURATION: &str = "iib_build_duration_seconds";
/// Histogram `{type, step}`: seconds per step of a worker's task (recorded by the tasks' step
/// guard; buckets set here).
pub const STEP_DURATION: &str = "iib_step_duration_seconds";
/// Histogram `{queue}`: seconds from a request's submission to its first start by a worker.
pub const QUEUE_WAIT: &str = "iib_queue_wait_seconds";
/// Gauge `{queue, state}`: unfinished requests per queue, `waiting` (unclaimed) or `running`.
pub const QUEUE_DEPTH: &str = "iib_queue_depth";
/// Counter: index catalogs a worker found in its cache (`CatalogCache`).
pub const CATALOG_CACHE_HITS: &str = "iib_catalog_cache_hits_total";
/// Counter: index catalogs a worker had to read from the registry.
pub const CATALOG_CACHE_MISSES: &str = "iib_catalog_cache_misses_total";
/// Gauge: bytes of catalog files the worker's cache holds.
pub const CATALOG_CACHE_BYTES: &str = "iib_catalog_cache_bytes";
/// Counter: events committed to the event store (its head position).
pub const EVENTS: &str = "iib_events_total";
/// Gauge: committed events the read model has not applied yet.
pub const READ_MODEL_LAG_EVENTS: &str = "iib_read_model_lag_events";
/// Gauge: age of the oldest event the read model has not applied yet.
pub const READ_MODEL_LAG_SECONDS: &str = "iib_read_model_lag_seconds";
/// Gauge: committed events not relayed to Kafka yet (0 when `IIB_KAFKA_BROKERS` is unset).
pub const RELAY_LAG_EVENTS: &str = "iib_relay_lag_events";
/// Gauge: age of the oldest event not relayed to Kafka yet (0 when Kafka is off).
pub const RELAY_LAG_SECONDS: &str = "iib_relay_lag_seconds";
/// Counter: Kafka messages the broker refused for good (`relay_dead_letters`).
pub const RELAY_DEAD_LETTERS: &str = "iib_relay_dead_letters_total";
/// Counter `{reader}`: events a reader (`read_model`, `kafka_relay`) set aside.
pub const EVENTS_SET_ASIDE: &str = "iib_events_set_aside_total";
/// Gauge: 1 when the last scrape could read the database, else 0 (the values read from it are
/// then those of the scrape before).
pub const DATABASE_UP: &str = "iib_database_up";
/// Gauge `{version}`: 1, with the version of iib running.
pub const BUILD_INFO: &str = "iib_build_info";

/// Every metric of the service (this crate's): name, kind, help.
pub const ALL: &[(&str, Kind, &str)] = &[
    (HTTP_REQUESTS, Kind::Counter, "HTTP calls answered, by method, route template and status."),
    (HTTP_REQUEST_DURATION, Kind::Histogram, "Seconds from an HTTP call's arrival to its answer's headers, by method and route template."),
    (REQUESTS_SUBMITTED, Kind::Counter, "Build requests submitted through the API, by type and queue."),
    (REQUESTS_STARTED, Kind::Counter, "Build request runs started by a worker, by type and queue (a request taken over starts again)."),
    (REQUESTS_COMPLETED, Kind::Counter, "Build requests a worker completed, by type and queue."),
    (REQUESTS_FAILED, Kind::Counter, "Build requests a worker failed, by type and queue."),
    (BUILD_DURATION, Kind::Histogram, "Seconds from a worker's start of a request to its recorded end, by type and final state."),
    (STEP_DURATION, Kind::Histogram, "Seconds per step of a worker's task, by request type and step."),
    (QUEUE_WAIT, Kind::Histogram, "Seconds from a request's submission to its first start by a worker, by queue."),
    (QUEUE_DEPTH, Kind::Gauge, "Unfinished requests per queue: waiting (unclaimed) or running (claimed by a worker)."),
    (CATALOG_CACHE_HITS, Kind::Counter, "Index catalogs a worker found in its cache."),
    (CATALOG_CACHE_MISSES, Kind::Counter, "Index catalogs a worker read from the registry (not in its cache)."),
    (CATALOG_CACHE_BYTES, Kind::Gauge, "Bytes of catalog files a worker's cache holds."),
    (EVENTS, Kind::Counter, "Events committed to the event store."),
    (READ_MODEL_LAG_EVENTS, Kind::Gauge, "Committed events the read model has not applied yet."),
    (READ_MODEL_LAG_SECONDS, Kind::Gauge, "Age of the oldest event the read model has not applied yet."),
    (RELAY_LAG_EVENTS, Kind::Gauge, "Committed events whose Kafka messages are not delivered yet (0 when IIB_KAFKA_BROKERS is unset)."),
    (RELAY_LAG_SECONDS, Kind::Gauge, "Age of the oldest event not relayed to Kafka yet (0 when IIB_KAFKA_BROKERS is unset)."),
    (RELAY_DEAD_LETTERS, Kind::Counter, "Kafka messages the broker refused for good (see relay_dead_letters)."),
    (EVENTS_SET_ASIDE, Kind::Counter, "Events a reader could not apply and skipped."),
    (DATABASE_UP, Kind::Gauge, "1 when the last scrape could read the database, else 0."),
    (BUILD_INFO, Kind::Gauge, "Always 1; the version label says which iib runs."),
];

/// Histogram buckets, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const REGISTRY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BUILD_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0,
];
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    7200.0, 21600.0,
];

/// Every series name a scrape may show: counters and gauges as named, histograms as their
/// `_bucket`, `_sum` and `_count` series. The dashboard's test checks its queries against it.
pub fn series_names() -> Vec<String> {
    let mut names = Vec::new();
    for (name, kind, _) in ALL.iter().chain(iib_oci::metrics::ALL.iter()) {
        match kind {
            Kind::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            Kind::Counter | Kind::Gauge => names.push(name.to_string()),
        }
    }
    names
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle), describes every
/// metric and starts the exporter's upkeep (histograms are folded every few seconds, so memory
/// stays bounded between scrapes).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
            (iib_oci::metrics::REQUEST_DURATION, REGISTRY_BUCKETS),
            (BUILD_DURATION, BUILD_BUCKETS),
            (STEP_DURATION, BUILD_BUCKETS),
            (QUEUE_WAIT, WAIT_BUCKETS),
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
                .expect("bucket lists are not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows nothing of it");
        }
        for (name, kind, help) in ALL.iter().chain(iib_oci::metrics::ALL.iter()) {
            match kind {
                Kind::Counter => metrics::describe_counter!(*name, *help),
                Kind::Gauge => metrics::describe_gauge!(*name, *help),
                Kind::Histogram => {
                    metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
                }
            }
        }
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        handle
    })
}

/// The Prometheus text exposition of everything recorded in this process.
pub fn render() -> String {
    install().render()
}

/// A request's labels: its type and queue (`default` for the default queue).
#[derive(Debug, Clone)]
pub struct RequestLabels {
    pub request_type: &'static str,
    pub queue: String,
}

impl RequestLabels {
    pub fn new(request_type: iib_aggregates::RequestType, queue: Option<&str>) -> Self {
        Self {
            request_type: request_type.as_str(),
            queue: queue_label(queue),
        }
    }
}

/// The label of a queue (`None`: the default queue).
pub fn queue_label(queue: Option<&str>) -> String {
    queue
        .unwrap_or(crate::workers::settings::DEFAULT_QUEUE)
        .to_string()
}

/// A request submitted through the API.
pub fn request_submitted(labels: &RequestLabels) {
    metrics::counter!(REQUESTS_SUBMITTED, "type" => labels.request_type, "queue" => labels.queue.clone())
        .increment(1);
}

/// A worker starts a request; `waited` is the time since its submission on its first start.
pub fn request_started(labels: &RequestLabels, waited: Option<Duration>) {
    metrics::counter!(REQUESTS_STARTED, "type" => labels.request_type, "queue" => labels.queue.clone())
        .increment(1);
    if let Some(waited) = waited {
        metrics::histogram!(QUEUE_WAIT, "queue" => labels.queue.clone())
            .record(waited.as_secs_f64());
    }
}

/// A worker recorded a request's end; `took` is the run's time when it ran.
pub fn request_ended(labels: &RequestLabels, complete: bool, took: Option<Duration>) {
    let name = if complete {
        REQUESTS_COMPLETED
    } else {
        REQUESTS_FAILED
    };
    metrics::counter!(name, "type" => labels.request_type, "queue" => labels.queue.clone())
        .increment(1);
    if let Some(took) = took {
        let state = if complete { "complete" } else { "failed" };
        metrics::histogram!(BUILD_DURATION, "type" => labels.request_type, "state" => state)
            .record(took.as_secs_f64());
    }
}

/// An HTTP call answered.
pub fn http_call(method: &'static str, route: String, status: u16, took: Duration) {
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(took.as_secs_f64());
}

/// A worker looked an index catalog up in its cache.
pub fn catalog_cache_lookup(hit: bool) {
    let name = if hit {
        CATALOG_CACHE_HITS
    } else {
        CATALOG_CACHE_MISSES
    };
    metrics::counter!(name).increment(1);
}

/// What a worker's catalog cache holds now.
pub fn catalog_cache_bytes(bytes: usize) {
    metrics::gauge!(CATALOG_CACHE_BYTES).set(bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_prefixed_and_lint_clean() {
        let names: Vec<&str> = ALL
            .iter()
            .chain(iib_oci::metrics::ALL.iter())
            .map(|(n, _, _)| *n)
            .collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a name is listed twice");
        for (name, kind, help) in ALL.iter().chain(iib_oci::metrics::ALL.iter()) {
            assert!(name.starts_with("iib_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters and only counters end in _total"
            );
            if *kind == Kind::Histogram {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }
}
