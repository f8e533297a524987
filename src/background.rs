//! Long-running tasks of a worker process: the projector loop and secret expiry.

use crate::projector::Projector;
use crate::shutdown::Shutdown;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Keeps the read model current: runs after every commit, and every second in case another
/// process committed.
pub async fn run_projector(projector: Projector, committed: Arc<Notify>, shutdown: Shutdown) {
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        match projector.catch_up().await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, failures, "the projector failed; retrying");
            }
        }
        let pause = Duration::from_millis(if failures == 0 {
            1000
        } else {
            1000 * u64::from(failures.min(10))
        });
        tokio::select! {
            _ = committed.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait() => {}
        }
    }
    // A last pass so nothing committed before shutdown waits for the next start.
    if let Err(e) = projector.catch_up().await {
        tracing::warn!(error = %e, "the projector's last pass failed; the next start catches up");
    }
}

/// Deletes secrets whose lifetime ended (those of finished requests go at once).
pub async fn purge_secrets(store: Store, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        match store.purge_expired_secrets(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "deleted expired request secrets"),
            Err(e) => tracing::warn!(error = %e, "deleting expired secrets failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.wait() => {}
        }
    }
}
