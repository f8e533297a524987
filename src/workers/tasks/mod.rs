//! One task per request type. A task reports progress and facts through its context and
//! returns the final `state_reason`, or fails with one.

mod bundle;
mod greenwave;
mod index;

use super::runner::TaskContext;
use iib_aggregates::params::RequestParams;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The request fails with this `state_reason`.
    #[error("{0}")]
    Failed(String),
    /// The worker lost the request (its claim or the store): it stops, someone else finishes.
    #[error("{0}")]
    Lost(String),
}

/// Runs the task of the request's type.
pub async fn run(ctx: &TaskContext) -> Result<String, TaskError> {
    panic_when_asked(ctx).await?;
    match &ctx.params {
        RequestParams::Add(params) => index::add(ctx, params).await,
        RequestParams::Rm(params) => index::rm(ctx, params).await,
        RequestParams::CreateEmptyIndex(params) => index::create_empty_index(ctx, params).await,
        RequestParams::AddDeprecations(params) => index::add_deprecations(ctx, params).await,
        RequestParams::FbcOperations(params) => index::fbc_operations(ctx, params).await,
        RequestParams::MergeIndexImage(params) => index::merge_index_image(ctx, params).await,
        RequestParams::RegenerateBundle(params) => bundle::regenerate_bundle(ctx, params).await,
        RequestParams::RecursiveRelatedBundles(params) => {
            bundle::recursive_related_bundles(ctx, params).await
        }
    }
}

/// The test suite's way to make a task panic (`IIB_TEST_PANIC_ON`, a setting only debug
/// builds accept): after its first step, so the panic happens with the heartbeat running.
async fn panic_when_asked(ctx: &TaskContext) -> Result<(), TaskError> {
    let Some(needle) = ctx.settings.panic_on.as_deref() else {
        return Ok(());
    };
    let params = serde_json::to_string(&ctx.params).unwrap_or_default();
    if cfg!(debug_assertions) && params.contains(needle) {
        ctx.progress("Starting a task that panics (IIB_TEST_PANIC_ON)")
            .await?;
        panic!("IIB_TEST_PANIC_ON matched request {}", ctx.id);
    }
    Ok(())
}
