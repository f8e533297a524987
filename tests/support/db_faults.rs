//! Faults injected into a running `iib serve`'s SQLite database from outside the process: a
//! trigger that refuses to append events of some types, as a database refusing writes would.
//! The server sees an ordinary database error on those appends and nothing else changes.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use std::path::Path;

pub struct RefusedEvents {
    conn: SqliteConnection,
}

const TRIGGER: &str = "iib_test_refuse_events";

impl RefusedEvents {
    /// From now on, appending an event of one of `event_types` (e.g. `ClaimRenewed`) to the
    /// database of the server whose data directory is `data_dir` fails.
    pub async fn install(data_dir: &Path, event_types: &[&str]) -> Self {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("iib.db"))
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        let types: Vec<String> = event_types.iter().map(|t| format!("'{t}'")).collect();
        sqlx::query(&format!(
            "CREATE TRIGGER {TRIGGER} BEFORE INSERT ON events \
             WHEN NEW.event_type IN ({}) \
             BEGIN SELECT RAISE(ABORT, 'injected fault: this event is refused'); END",
            types.join(", ")
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        Self { conn }
    }

    /// Appends of those events work again.
    pub async fn remove(mut self) {
        sqlx::query(&format!("DROP TRIGGER {TRIGGER}"))
            .execute(&mut self.conn)
            .await
            .unwrap();
        let _ = self.conn.close().await;
    }
}
