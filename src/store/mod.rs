//! The database adapter: the event store, the secret store and the read-model tables, on
//! SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! One code path serves both: the SQL is portable (`$N` placeholders, `ON CONFLICT`,
//! `RETURNING`), and [`on_pool!`]/[`on_tx!`] expand each statement for both native sqlx
//! drivers (the type-erased `sqlx::Any` driver was 3× slower at reading events). The two real
//! differences live here: how a writer serializes (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a
//! transaction-scoped advisory lock, so global positions become visible in order and readers
//! never skip one) and the DDL in `migrations/<backend>/`. Payloads and times are stored as
//! text (JSON, RFC 3339 UTC).

/// Runs `$body` with `$conn` bound to the store's pool, once per backend.
macro_rules! on_pool {
    ($store:expr, $conn:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($conn) => $body,
            $crate::store::Pool::Postgres($conn) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the write transaction's connection, once per backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match &mut $tx.0 {
            $crate::store::TxInner::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::TxInner::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

mod dead_letters;
mod events;
mod idempotency;
mod migrate;
mod queue_depth;
mod read_model;
mod repository;
mod secrets;
mod set_aside;

pub use dead_letters::DeadLetter;
pub use events::{NewEvent, RawEvent, StoredEvent};
pub use idempotency::{IdempotencyKey, KeyUse};
pub use queue_depth::QueueDepth;
pub use read_model::{ListFilter, ListPage, ReadModelRows, WorkItem};
pub use secrets::{Secret, SecretKey};
pub use set_aside::{is_data_error, SetAside};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{aggregate_type} {aggregate_id} was changed by someone else (expected version {expected}, found {found}); reload and retry")]
    Conflict {
        aggregate_type: String,
        aggregate_id: String,
        expected: i64,
        found: i64,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another call recorded the same idempotency key first; nothing was written.
    #[error("another call used this idempotency key first")]
    KeyTaken,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

impl StoreError {
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction holding the store's write lock until it commits or is dropped (rolled back).
pub struct WriteTx(pub(crate) TxInner);

pub(crate) enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl WriteTx {
    /// `NOTIFY channel, payload` delivered when (and only if) this transaction commits
    /// (PostgreSQL; no-op on SQLite).
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if let TxInner::Postgres(tx) = &mut self.0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// Told when secrets were deleted, so the scrubber (`background::purge_secrets`) folds the
    /// write-ahead log, which still holds their bytes, into the database file at once.
    secrets_deleted: std::sync::Arc<tokio::sync::Notify>,
    /// Encrypts secrets at rest (`IIB_SECRET_KEY`); none: stored as given.
    secret_key: Option<std::sync::Arc<SecretKey>>,
    /// PostgreSQL with `IIB_PG_NOTIFY`: commits send `NOTIFY`s (see `crate::wakeups`).
    notifies: bool,
}

impl Store {
    /// Connects to `url` (`sqlite://path` creates the file; `postgres://...`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // Short: while the database is away, callers get a clear 503 soon rather than a hang.
        let acquire_timeout = Duration::from_secs(3);
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: every commit is on disk before it returns, so a power loss cannot roll
                // back a submission whose request id was already answered (NORMAL in WAL mode
                // may lose the last commits).
                .synchronous(SqliteSynchronous::Full)
                // Deleted rows (secrets above all) are overwritten with zeros, not left in
                // freed pages for anyone who reads the file.
                .pragma("secure_delete", "ON")
                .busy_timeout(Duration::from_secs(10))
                .pragma("cache_size", "-65536");
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(options)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(Self {
            pool,
            secrets_deleted: Default::default(),
            secret_key: None,
            notifies: false,
        })
    }

    /// Encrypts the secrets this store writes with `key`, and reads those written with it.
    pub fn with_secret_key(mut self, key: Option<SecretKey>) -> Self {
        self.secret_key = key.map(std::sync::Arc::new);
        self
    }

    /// On PostgreSQL, makes every append send `NOTIFY iib_events` and the projector send
    /// `NOTIFY iib_work` with its commits, for the other processes' `crate::wakeups` listeners
    /// (no-op on SQLite, whose processes poll).
    pub fn with_notifies(mut self, on: bool) -> Self {
        self.notifies = on && self.backend() == Backend::Postgres;
        self
    }

    /// Whether commits send `NOTIFY`s (PostgreSQL with `IIB_PG_NOTIFY`).
    pub fn notifies(&self) -> bool {
        self.notifies
    }

    /// A connection of its own listening on `channels` (PostgreSQL only; `None` on SQLite).
    pub async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(listener))
    }

    /// A connection outside the pool, for a session-level lock that must end with the
    /// connection (PostgreSQL only; `None` on SQLite).
    pub async fn dedicated_connection(&self) -> Result<Option<sqlx::PgConnection>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        Ok(Some(pool.acquire().await?.detach()))
    }

    /// The embedded default: a SQLite file in `data_dir`.
    pub fn sqlite_url_in(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("iib.db").display())
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a transaction that holds the store's write lock until it ends.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Ok(WriteTx(match &self.pool {
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // One writer at a time: positions are handed out and become visible in order.
                sqlx::query("SELECT pg_advisory_xact_lock(7262011)")
                    .execute(&mut *tx)
                    .await?;
                TxInner::Postgres(tx)
            }
        }))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// SQLite: folds the write-ahead log into the database file (no-op on PostgreSQL).
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Says that secrets were deleted (after the deleting transaction committed).
    pub fn note_secrets_deleted(&self) {
        self.secrets_deleted.notify_one();
    }

    /// Resolves once secrets were deleted since the last call.
    pub async fn secrets_were_deleted(&self) {
        self.secrets_deleted.notified().await
    }

    /// Leaves no copy of deleted rows in the database's files. SQLite zeroes deleted rows in
    /// its pages (`secure_delete`), but the write-ahead log keeps every older version of a page
    /// until a checkpoint folds it in and truncates it; this runs that checkpoint. Returns
    /// false when readers kept it from finishing (call again soon).
    ///
    /// PostgreSQL keeps a deleted row's bytes in the table's pages until they are reused, and
    /// in its own WAL; nothing a client can run removes them reliably, so this does nothing
    /// there.
    pub async fn scrub_deleted_rows(&self) -> Result<bool, StoreError> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Ok(true);
        };
        // (busy, frames in the log, frames checkpointed); busy = 1 when a reader held it up.
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
        Ok(busy == 0)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// RFC 3339 UTC with microseconds: sorts as text, parses back exactly.
pub fn format_time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::corrupt(format!("bad timestamp {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_commits_are_durable_and_deleted_rows_are_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&Store::sqlite_url_in(dir.path()))
            .await
            .unwrap();
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!()
        };
        let mut conn = pool.acquire().await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            synchronous, 2,
            "FULL: a power loss keeps every answered commit"
        );
        let secure_delete: i64 = sqlx::query_scalar("PRAGMA secure_delete")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(secure_delete, 1);
    }
}
