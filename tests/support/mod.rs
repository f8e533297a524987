//! Test support: a fresh database per test on each backend, real servers only.
//! PostgreSQL comes from `TEST_POSTGRES_URL` (default: the local server, user postgres).

#![allow(dead_code)]

pub mod big_catalog;
pub mod bundles;
pub mod db_faults;
pub mod gate;
pub mod kafka;
pub mod s3;
pub mod server;
pub mod tls;
pub mod world;

// The registry servers live with the registry library's tests; the service's tests use the
// same ones.
#[path = "../../oci/tests/support/faults.rs"]
pub mod faults;
#[path = "../../oci/tests/support/hostile_registry.rs"]
pub mod hostile_registry;
#[path = "../../oci/tests/support/registry.rs"]
pub mod registry;
#[path = "../../oci/tests/support/token_issuer.rs"]
pub mod token_issuer;

use iib::store::Store;
use sqlx::Connection;

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = Store::sqlite_url_in(dir.path());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A new, uniquely named database on the PostgreSQL server.
pub async fn postgres() -> TestDb {
    let admin = postgres_admin_url();
    let name = format!(
        "iib_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must run for these tests (see README: the test command starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    let url = format!("{base}/{name}");
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store,
        url,
        _dir: None,
    }
}

/// Runs the same async scenario on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::support::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::support::postgres().await).await
            }
        }
    };
}

/// Submits one rm request (removing `operator` from `r/index:v4.18`) for `user`.
pub async fn submit_rm(
    bus: &iib::command_bus::CommandBus,
    user: Option<&str>,
    operator: &str,
) -> iib::command_bus::Submitted {
    use iib::command_bus::{CommandContext, RequestSubmission, Submission};
    use iib_aggregates::params::RmParams;
    use iib_aggregates::RequestParams;
    let user = user.map(str::to_string);
    bus.submit(
        Submission {
            user: user.clone(),
            annotations: None,
            requests: vec![RequestSubmission {
                params: RequestParams::Rm(RmParams {
                    operators: vec![operator.to_string()],
                    from_index: Some("r/index:v4.18".into()),
                    ..Default::default()
                }),
                secrets: vec![],
                queue: None,
            }],
        },
        &CommandContext::user(user),
    )
    .await
    .unwrap()
}
