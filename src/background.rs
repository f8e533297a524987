//! Long-running tasks of a worker process: the projector loop, secret expiry (and scrubbing
//! their bytes from the database's files), and the purge of expired request data.

use crate::projector::Projector;
use crate::shutdown::Shutdown;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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

/// Deletes secrets whose lifetime ended (those of finished requests go at once, with the
/// projector's transaction), and leaves no copy of deleted secrets in the database's files:
/// after each deletion, and every minute for deletions made by another process on the same
/// SQLite file, the write-ahead log is folded in and truncated (`Store::scrub_deleted_rows`).
pub async fn purge_secrets(store: Store, shutdown: Shutdown) {
    let mut scrub_pending = true;
    let mut next_purge = Instant::now();
    while !shutdown.is_triggered() {
        if Instant::now() >= next_purge {
            match store.purge_expired_secrets(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "deleted expired request secrets"),
                Err(e) => tracing::warn!(error = %e, "deleting expired secrets failed"),
            }
            scrub_pending = true;
            next_purge = Instant::now() + Duration::from_secs(60);
        }
        if scrub_pending {
            match store.scrub_deleted_rows().await {
                Ok(true) => scrub_pending = false,
                Ok(false) => {
                    tracing::debug!("readers held up the write-ahead log checkpoint; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "the write-ahead log checkpoint failed"),
            }
        }
        let pause = if scrub_pending {
            Duration::from_secs(1)
        } else {
            next_purge.saturating_duration_since(Instant::now())
        };
        tokio::select! {
            _ = store.secrets_were_deleted() => scrub_pending = true,
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait() => {}
        }
    }
}

/// Where request data is kept on disk and for how long: IIB's `IIB_REQUEST_DATA_DAYS_TO_LIVE`
/// over the request logs and (recursive) related-bundles files. Data kept in S3 expires by the
/// bucket's own lifecycle rules.
#[derive(Debug, Clone)]
pub struct Retention {
    pub days_to_live: i64,
    /// Each directory with the file-name suffix of the files iib writes there
    /// (`<id>.log`, `<id>_related_bundles.json`, `<id>_recursive_related_bundles.json`).
    pub dirs: Vec<(PathBuf, &'static str)>,
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub files: u64,
    pub idempotency_keys: u64,
}

/// Removes, as of `now`, the request files last written more than `days_to_live` days (and
/// at least an hour) ago and the idempotency keys past their lifetime. Only files named as
/// iib names them are touched, so a directory shared with other files is safe.
pub async fn purge_request_data(
    store: &Store,
    retention: &Retention,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Purged, String> {
    // A file written in the last hour is kept whatever the setting says: a running request
    // may still be writing its log.
    let before = (now - chrono::Duration::days(retention.days_to_live))
        .min(now - chrono::Duration::hours(1));
    let mut purged = Purged::default();
    for (dir, suffix) in &retention.dirs {
        purged.files += purge_files(dir, suffix, before.into())
            .map_err(|e| format!("cannot purge the request files in {}: {e}", dir.display()))?;
    }
    let key_lifetime = chrono::Duration::hours(crate::api::idempotency::KEY_LIFETIME_HOURS);
    purged.idempotency_keys = store
        .purge_idempotency_keys(now - key_lifetime)
        .await
        .map_err(|e| format!("cannot purge the idempotency keys: {e}"))?;
    Ok(purged)
}

/// Deletes `<request id><suffix>` files in `dir` last modified before `before`.
fn purge_files(dir: &Path, suffix: &str, before: SystemTime) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Nothing was written yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let is_ours = name
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if !is_ours {
            continue;
        }
        // symlink_metadata: a link is not followed, and not ours to delete.
        let metadata = entry.path().symlink_metadata()?;
        if metadata.is_file() && metadata.modified()? < before {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

/// Purges expired request data at start-up and every hour.
pub async fn purge_request_data_periodically(
    store: Store,
    retention: Retention,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        match purge_request_data(&store, &retention, chrono::Utc::now()).await {
            Ok(Purged {
                files: 0,
                idempotency_keys: 0,
            }) => {}
            Ok(purged) => tracing::info!(
                files = purged.files,
                idempotency_keys = purged.idempotency_keys,
                days_to_live = retention.days_to_live,
                "purged expired request data"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "purging expired request data failed; retrying in an hour")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait() => {}
        }
    }
}
