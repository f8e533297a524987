//! What the client records through the [`metrics`] facade: calls, retries and bytes by
//! registry host. A library only emits; the program decides whether anything listens (it
//! installs a recorder, e.g. a Prometheus exporter). Without one every call here is a no-op.
//!
//! Label values are few by construction: the method, the HTTP status (or `error` when no
//! answer came), the direction of bytes, and the registry host, of which only the first
//! [`MAX_REGISTRY_LABELS`] seen are named: a stream of requests naming ever new registries
//! (each fails, but each would leave series behind) cannot grow the exporter without bound;
//! the rest are counted as `other`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Counter `{registry, method, status}`: registry API calls, one per attempt (a retried call
/// counts each time it is sent). `status` is the HTTP status code, or `error` when no answer
/// came (connection refused, timeout).
pub const REQUESTS: &str = "iib_registry_requests_total";
/// Histogram `{registry, method}`: seconds until a registry call's answer headers arrived.
pub const REQUEST_DURATION: &str = "iib_registry_request_duration_seconds";
/// Counter `{registry}`: registry calls sent again after a connection error, a timeout, a 429
/// or a 5xx.
pub const RETRIES: &str = "iib_registry_retries_total";
/// Counter `{registry, direction}`: body bytes sent to (`sent`) and read from (`received`)
/// registries and their token services.
pub const BYTES: &str = "iib_registry_bytes_total";
/// Counter `{registry, status}`: bearer-token requests to the token service a registry names.
pub const TOKEN_REQUESTS: &str = "iib_registry_token_requests_total";

/// Prometheus metric kind of an entry in [`ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric this crate records: name, kind, help text.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        "Registry API calls by registry host, method and HTTP status (error: no answer); each attempt counts.",
    ),
    (
        REQUEST_DURATION,
        Kind::Histogram,
        "Seconds until a registry call's answer headers arrived, by registry host and method.",
    ),
    (
        RETRIES,
        Kind::Counter,
        "Registry calls sent again after a connection error, timeout, 429 or 5xx, by registry host.",
    ),
    (
        BYTES,
        Kind::Counter,
        "Body bytes sent to and received from registries, by registry host and direction.",
    ),
    (
        TOKEN_REQUESTS,
        Kind::Counter,
        "Bearer-token requests to registries' token services, by registry host and HTTP status (error: no answer).",
    ),
];

/// Registry hosts named in labels at most; later ones are `other`.
pub const MAX_REGISTRY_LABELS: usize = 64;

/// The label value for a registry host.
fn registry_label(registry: &str) -> String {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(registry) {
        return registry.to_string();
    }
    if seen.len() < MAX_REGISTRY_LABELS {
        seen.insert(registry.to_string());
        return registry.to_string();
    }
    "other".to_string()
}

fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_string(), |s| s.to_string())
}

/// One attempt of a registry call and its answer's status (`None`: no answer).
pub(crate) fn call(registry: &str, method: &str, status: Option<u16>, took: Duration) {
    let registry = registry_label(registry);
    metrics::counter!(
        REQUESTS,
        "registry" => registry.clone(),
        "method" => method.to_string(),
        "status" => status_label(status)
    )
    .increment(1);
    metrics::histogram!(
        REQUEST_DURATION,
        "registry" => registry,
        "method" => method.to_string()
    )
    .record(took.as_secs_f64());
}

pub(crate) fn retry(registry: &str) {
    metrics::counter!(RETRIES, "registry" => registry_label(registry)).increment(1);
}

pub(crate) fn sent(registry: &str, bytes: usize) {
    if bytes > 0 {
        metrics::counter!(BYTES, "registry" => registry_label(registry), "direction" => "sent")
            .increment(bytes as u64);
    }
}

pub(crate) fn received(registry: &str, bytes: usize) {
    if bytes > 0 {
        metrics::counter!(BYTES, "registry" => registry_label(registry), "direction" => "received")
            .increment(bytes as u64);
    }
}

pub(crate) fn token(registry: &str, status: Option<u16>) {
    metrics::counter!(
        TOKEN_REQUESTS,
        "registry" => registry_label(registry),
        "status" => status_label(status)
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_past_the_cap_are_other() {
        // Other tests of this crate name registries too: fill the set up whatever it holds.
        let mut named = 0;
        for n in 0..MAX_REGISTRY_LABELS + 10 {
            let host = format!("cap-test-{n}.example.com");
            if registry_label(&host) == host {
                named += 1;
            }
        }
        assert!(named <= MAX_REGISTRY_LABELS);
        assert_eq!(registry_label("one-more.example.com"), "other");
        // Hosts named before stay named.
        assert_eq!(
            registry_label("cap-test-0.example.com"),
            if named > 0 {
                "cap-test-0.example.com"
            } else {
                "other"
            }
        );
    }

    #[test]
    fn no_answer_is_error() {
        assert_eq!(status_label(None), "error");
        assert_eq!(status_label(Some(503)), "503");
    }
}
