//! A request id for every call: taken from an incoming `X-Request-Id` (from a proxy) when it
//! is sane, else made here; returned in the answer's `X-Request-Id` and recorded on every
//! log line of the call through a tracing span, and one access-log line a call. The span is
//! the call's OpenTelemetry span when traces are exported (see `crate::telemetry`).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub const HEADER: &str = "x-request-id";

/// The id of the call being handled, for handlers that record it (e.g. as correlation id).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn new_id() -> String {
    // Unique within a process and across restarts: start time, then a counter.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    format!("{start:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(new_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "http",
        otel.kind = "server",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // With traces on: the caller's trace goes on (W3C `traceparent`), and the trace id is on
    // every line of the call, the access log's included.
    if crate::telemetry::enabled() {
        let incoming = request
            .headers()
            .get(crate::telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        crate::telemetry::continue_trace(&span, incoming);
    }
    // Probes and scrapes come every few seconds: their lines would drown the calls that matter.
    let routine = matches!(
        request.uri().path(),
        "/livez" | "/readyz" | "/metrics" | "/api/v1/healthcheck"
    );
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    // The access log: one line a call (target `iib::access`, so it can be filtered on its own).
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    span.in_scope(|| {
        if routine {
            tracing::debug!(target: "iib::access", status, duration_ms, "answered");
        } else {
            tracing::info!(target: "iib::access", status, duration_ms, "answered");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
