//! Storage: where the event store lives (`IIB_DATA_DIR`, `IIB_DATABASE_URL`), how request
//! secrets are kept (`IIB_SECRET_KEY`, `IIB_SECRET_LIFETIME_SECONDS`) and how long request
//! data is kept (`IIB_REQUEST_DATA_DAYS_TO_LIVE`).

use super::artifacts::ArtifactSettings;
use super::read::Reader;
use super::source::SettingsError;
use crate::background::Retention;
use crate::store::{SecretKey, Store};
use std::path::PathBuf;

/// A hundred years, in days: a bound that keeps date arithmetic from overflowing.
const CENTURY_DAYS: i64 = 36_500;

#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// `IIB_DATA_DIR`: where the embedded SQLite database lives.
    pub data_dir: PathBuf,
    /// `IIB_DATABASE_URL`, or the embedded SQLite file under `data_dir`.
    pub database_url: String,
    /// Whether `database_url` is the embedded default (`IIB_DATABASE_URL` unset).
    pub embedded: bool,
    /// `IIB_SECRET_KEY`: request secrets are encrypted at rest with it.
    pub secret_key: Option<SecretKey>,
    /// `IIB_SECRET_LIFETIME_SECONDS`: how long a request's secrets are kept at most.
    pub secret_lifetime: chrono::Duration,
    /// `IIB_REQUEST_DATA_DAYS_TO_LIVE` over the request files on disk.
    pub retention: Retention,
    /// `IIB_PG_NOTIFY`: on PostgreSQL, processes wake each other through LISTEN/NOTIFY (new
    /// events, new runnable work) and polls are a slow fallback; off: they poll as on SQLite.
    pub pg_notify: bool,
}

pub(super) fn read(
    r: &Reader,
    artifacts: &ArtifactSettings,
) -> Result<StorageSettings, SettingsError> {
    let data_dir = PathBuf::from(r.text("IIB_DATA_DIR")?);
    let given_url = r.optional_text("IIB_DATABASE_URL");
    if let Some(url) = &given_url {
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(SettingsError::Invalid {
                key: "IIB_DATABASE_URL".into(),
                problem: "must start with sqlite:, postgres:// or postgresql:// (unset: SQLite under IIB_DATA_DIR)".into(),
            });
        }
    }
    let secret_key = r
        .optional_text("IIB_SECRET_KEY")
        .map(|text| {
            SecretKey::from_base64(&text).map_err(|_| SettingsError::Malformed {
                key: "IIB_SECRET_KEY".into(),
                expected: "32 random bytes, base64-encoded (openssl rand -base64 32)",
                value: "*****".into(),
            })
        })
        .transpose()?;
    let secret_lifetime = chrono::Duration::seconds(r.between::<i64>(
        "IIB_SECRET_LIFETIME_SECONDS",
        1,
        CENTURY_DAYS * 86_400,
        "",
    )?);
    Ok(StorageSettings {
        embedded: given_url.is_none(),
        database_url: given_url.unwrap_or_else(|| Store::sqlite_url_in(&data_dir)),
        data_dir,
        secret_key,
        secret_lifetime,
        retention: Retention {
            days_to_live: days_to_live(r)?,
            dirs: artifacts.retained_dirs(),
        },
        pg_notify: r.flag("IIB_PG_NOTIFY")?,
    })
}

/// `IIB_REQUEST_DATA_DAYS_TO_LIVE` (IIB's tests use -1 for data already expired).
pub(super) fn days_to_live(r: &Reader) -> Result<i64, SettingsError> {
    r.between::<i64>(
        "IIB_REQUEST_DATA_DAYS_TO_LIVE",
        -CENTURY_DAYS,
        CENTURY_DAYS,
        "",
    )
}
