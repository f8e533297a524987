//! Logging with `tracing`: pretty for people, JSON for collectors (`IIB_LOG_FORMAT`), at
//! `IIB_LOG_LEVEL` unless `RUST_LOG` says otherwise. Nothing logs a secret: secrets are
//! typed (`store::Secret`) and their `Debug` prints `*****`.
//!
//! With `IIB_OTEL_TRACING` the same spans are exported as OpenTelemetry traces (OTLP over
//! HTTP, protobuf; batched on a thread of their own, flushed by [`Telemetry::shutdown`]). The
//! W3C `traceparent` of a span is how a trace crosses processes: the API continues an incoming
//! header, stores the submitting span's in the events' metadata, the worker links its span to
//! it (and continues its trace), and the Kafka relay puts it in the messages' headers. When
//! tracing is off none of this runs: the functions below return at once.

use crate::settings::{LogFormat, TelemetrySettings, TraceExport};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The W3C Trace Context header (also the events' metadata key and the Kafka header).
pub use iib_aggregates::metadata::TRACEPARENT;

/// Whether spans are exported (set once by [`init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// What [`init`] set up; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use = "call shutdown() before the process ends, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (blocks up to its timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                eprintln!("iib: exporting the last spans failed: {e}");
            }
        }
    }
}

/// Installs the subscriber: the log lines, and the OpenTelemetry layer when `export` (the
/// long-running commands) and `IIB_OTEL_TRACING` say so.
pub fn init(settings: &TelemetrySettings, export: bool) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The AWS SDK warns at every client it builds that its HTTP client will change in
        // its next major version; that is a note for us, not for operators.
        EnvFilter::new(format!(
            "{},aws_smithy_runtime::client::defaults=error",
            settings.filter
        ))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match settings.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let provider = match (&settings.traces, export) {
        (Some(traces), true) => Some(provider(traces)?),
        _ => None,
    };
    match &provider {
        None => {
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(filter)
                .try_init();
        }
        Some(provider) => {
            // The service's spans are exported whatever the log level; its warnings and errors
            // become events of their spans. The log lines keep their own filter (at INFO, the
            // default, lines in the service's spans carry their fields, the trace id).
            let exported = filter_fn(|meta| {
                meta.target().starts_with("iib")
                    && if meta.is_span() {
                        *meta.level() <= Level::INFO
                    } else {
                        *meta.level() <= Level::WARN
                    }
            });
            let otel = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("iib"))
                .with_threads(false)
                .with_location(false)
                // No busy/idle clock on every poll of every span.
                .with_tracked_inactivity(false)
                .with_filter(exported);
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter))
                .with(otel)
                .try_init();
        }
    }
    if let (Some(traces), Some(_)) = (&settings.traces, &provider) {
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = crate::settings::show::mask_url(
                traces
                    .endpoint
                    .as_deref()
                    .unwrap_or("http://localhost:4318/v1/traces")
            ),
            service_name = %traces.service_name,
            "exporting traces (OTLP over HTTP)"
        );
    }
    Ok(Telemetry { provider })
}

fn provider(traces: &TraceExport) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    // OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION (and their _TRACES_ forms) are
    // read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    let exporter = match &traces.endpoint {
        Some(endpoint) => exporter.with_endpoint(endpoint.clone()),
        None => exporter,
    }
    .build()
    .map_err(|e| format!("cannot export traces (IIB_OTEL_TRACING): {e}"))?;
    // `Resource::builder` also reads OTEL_RESOURCE_ATTRIBUTES; the batch processor reads
    // OTEL_BSP_*, the provider OTEL_TRACES_SAMPLER and the span limits.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(traces.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`, when spans are exported and it is sampled or not.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current())
}

/// The span a `traceparent` names, if it is a valid one.
fn remote(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Makes the not yet entered `span` a child of the remote span `traceparent` names (an
/// incoming header; an invalid one is ignored), and records the trace id in its `trace_id`
/// field, so that every log line in it carries the trace id.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(remote) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    record_trace_id(span);
}

/// Links the not yet entered `span` to the span `traceparent` names (the submitting call's,
/// from the events' metadata, maybe hours old and from another process) and continues its
/// trace; records the trace id in `trace_id`.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(origin) = traceparent.and_then(remote) {
        span.add_link(origin.clone());
        let _ = span.set_parent(Context::new().with_remote_span_context(origin));
    }
    record_trace_id(span);
}

fn record_trace_id(span: &tracing::Span) {
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_name_a_span() {
        let span = remote("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(
            span.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(span.span_id().to_string(), "b7ad6b7169203331");
        assert!(span.is_remote() && span.is_sampled());
        assert!(remote("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(remote("not a traceparent").is_none());
    }

    #[test]
    fn off_means_nothing_is_done() {
        let span = tracing::info_span!("off", trace_id = tracing::field::Empty);
        assert_eq!(traceparent(&span), None);
        follow(
            &span,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
    }
}
