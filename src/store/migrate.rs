//! Schema migrations: the SQL files under `migrations/<backend>/`, embedded in the binary and
//! applied in order, each once, recorded in `schema_migrations`.

use super::{Backend, Store, StoreError};
use sqlx::Executor;

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sqlite: include_str!("../../migrations/sqlite/0001_event_store.sql"),
        postgres: include_str!("../../migrations/postgres/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "read_model",
        sqlite: include_str!("../../migrations/sqlite/0002_read_model.sql"),
        postgres: include_str!("../../migrations/postgres/0002_read_model.sql"),
    },
    Migration {
        version: 3,
        name: "idempotency",
        sqlite: include_str!("../../migrations/sqlite/0003_idempotency.sql"),
        postgres: include_str!("../../migrations/postgres/0003_idempotency.sql"),
    },
    Migration {
        version: 4,
        name: "work_queue",
        sqlite: include_str!("../../migrations/sqlite/0004_work_queue.sql"),
        postgres: include_str!("../../migrations/postgres/0004_work_queue.sql"),
    },
    Migration {
        version: 5,
        name: "relay_dead_letters",
        sqlite: include_str!("../../migrations/sqlite/0005_relay_dead_letters.sql"),
        postgres: include_str!("../../migrations/postgres/0005_relay_dead_letters.sql"),
    },
    Migration {
        version: 6,
        name: "set_aside_events",
        sqlite: include_str!("../../migrations/sqlite/0006_set_aside_events.sql"),
        postgres: include_str!("../../migrations/postgres/0006_set_aside_events.sql"),
    },
];

impl Store {
    /// Applies the migrations not applied yet; returns the names of those it applied.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut tx = self.begin_write().await?;
        let applied: Vec<i64> = on_tx!(tx, conn => {
            (&mut *conn).execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )
            .await?;
            sqlx::query_scalar("SELECT version FROM schema_migrations")
                .fetch_all(&mut *conn)
                .await?
        });
        let newest_known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
        if let Some(newer) = applied.iter().find(|v| **v > newest_known) {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {newer}, newer than this iib knows \
                 ({newest_known}); run a newer iib"
            )));
        }
        let mut done = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let sql = match self.backend() {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            let applied_at = super::format_time(&chrono::Utc::now());
            on_tx!(tx, conn => {
                (&mut *conn).execute(sql).await?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(migration.version)
                .bind(migration.name)
                .bind(&applied_at)
                .execute(&mut *conn)
                .await?;
            });
            done.push(migration.name);
        }
        tx.commit().await?;
        Ok(done)
    }
}

impl Store {
    /// The names of the migrations this iib knows that the database has not applied (all of
    /// them on an empty database): a process started against such a database is not ready.
    pub async fn pending_migrations(&self) -> Result<Vec<&'static str>, StoreError> {
        let applied: Vec<i64> = on_pool!(self, pool => {
            match sqlx::query_scalar("SELECT version FROM schema_migrations")
                .fetch_all(pool)
                .await
            {
                Ok(applied) => applied,
                // No table yet: nothing applied.
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        });
        Ok(MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| m.name)
            .collect())
    }
}
