//! What a worker's run looks like from outside: the request's span (its attributes are what
//! IIB users search traces by) and one span per step of the task, each step timed into
//! `iib_step_duration_seconds{type, step}` when it ends, however it ends.
//!
//! The spans are ordinary `tracing` spans: exported as OpenTelemetry spans when
//! `IIB_OTEL_TRACING` is on (see `crate::telemetry`), and giving every log line of a run its
//! request id in any case.

use super::runner::TaskContext;
use iib_aggregates::params::RequestParams;
use std::future::Future;
use std::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

/// The steps of a task, as the spans and the step histogram name them.
pub mod step {
    /// Resolving pull specs to digests.
    pub const RESOLVE: &str = "resolve";
    /// Reading an index image's catalog (or the worker's copy of it).
    pub const READ_CATALOG: &str = "read_catalog";
    /// Changing the catalog with the engine (add, rm, deprecate, merge, validate).
    pub const CHANGE_CATALOG: &str = "change_catalog";
    /// Writing the catalog's files (opm's layout) for the image.
    pub const WRITE_CATALOG: &str = "write_catalog";
    /// Building the image for every arch and pushing it (its arches are child spans).
    pub const BUILD: &str = "build";
    /// Pushing the build tags.
    pub const PUSH_TAGS: &str = "push_tags";
    /// Overwriting the index the request names with the new image.
    pub const OVERWRITE: &str = "overwrite";
}

/// The span of one run of a request (`trace_id` is filled in when traces are exported).
pub fn request_span(id: u64, worker: &str) -> tracing::Span {
    tracing::info_span!(
        "worker",
        otel.name = "iib.request",
        request_id = id,
        request_type = Empty,
        user = Empty,
        from_index = Empty,
        bundle_count = Empty,
        queue = Empty,
        attempt = Empty,
        worker = worker,
        state = Empty,
        trace_id = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// Records how the run ended (`complete`, `failed` with its reason, `lost`, `handed_back`).
pub fn ended(span: &tracing::Span, state: &str, failure: Option<&str>) {
    span.record("state", state);
    if let Some(reason) = failure {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", reason);
    }
}

/// Records on the request's span what the run learnt of the request.
pub fn describe(
    span: &tracing::Span,
    params: &RequestParams,
    user: Option<&str>,
    queue: Option<&str>,
    attempt: u32,
) {
    span.record("request_type", params.request_type().as_str());
    if let Some(user) = user {
        span.record("user", user);
    }
    if let Some(from_index) = from_index(params) {
        span.record("from_index", from_index);
    }
    if let RequestParams::Add(params) = params {
        span.record("bundle_count", params.bundles.len());
    }
    span.record("queue", queue.unwrap_or(super::settings::DEFAULT_QUEUE));
    span.record("attempt", attempt);
}

/// The index a request starts from, if any.
fn from_index(params: &RequestParams) -> Option<&str> {
    match params {
        RequestParams::Add(p) => p.from_index.as_deref(),
        RequestParams::Rm(p) => p.from_index.as_deref(),
        RequestParams::CreateEmptyIndex(p) => Some(&p.from_index),
        RequestParams::FbcOperations(p) => Some(&p.from_index),
        RequestParams::AddDeprecations(p) => Some(&p.from_index),
        RequestParams::MergeIndexImage(p) => Some(&p.source_from_index),
        RequestParams::RegenerateBundle(_) | RequestParams::RecursiveRelatedBundles(_) => None,
    }
}

/// One step of a task: its span, and its duration recorded when dropped.
pub struct Step {
    span: tracing::Span,
    request_type: &'static str,
    step: &'static str,
    started: Instant,
}

impl Step {
    /// Opens step `step` of `ctx`'s request, a child of the current span.
    pub fn start(ctx: &TaskContext, step: &'static str) -> Self {
        let request_type = ctx.params.request_type().as_str();
        Self {
            span: tracing::info_span!(
                "step",
                otel.name = step,
                step = step,
                request_id = ctx.id,
                request_type = request_type,
                image = Empty,
                arches = Empty,
                bytes_pushed = Empty,
            ),
            request_type,
            step,
            started: Instant::now(),
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Records the image the step is about.
    pub fn image(&self, image: &str) -> &Self {
        self.span.record("image", image);
        self
    }

    /// Records the bytes a push sent.
    pub fn bytes_pushed(&self, bytes: u64) -> &Self {
        self.span.record("bytes_pushed", bytes);
        self
    }

    /// Records the arches built.
    pub fn arches<'a>(&self, arches: impl IntoIterator<Item = &'a String>) -> &Self {
        let list: Vec<&str> = arches.into_iter().map(String::as_str).collect();
        self.span.record("arches", list.join(",").as_str());
        self
    }

    /// Runs `work` inside the step.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        work.instrument(self.span.clone()).await
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        metrics::histogram!(
            crate::metrics::STEP_DURATION,
            "type" => self.request_type,
            "step" => self.step
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

/// Runs `work` as step `step` of `ctx`'s request.
pub async fn run<F: Future>(ctx: &TaskContext, step: &'static str, work: F) -> F::Output {
    Step::start(ctx, step).run(work).await
}
