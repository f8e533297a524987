//! The API: where it listens (`IIB_LISTEN_ADDR`, `IIB_TLS_*`), who is calling (auth), the
//! link keys of answers, what a body may hold and the HTTP server's limits.

use super::artifacts::ArtifactSettings;
use super::read::Reader;
use super::source::SettingsError;
use crate::api::admission::HttpLimits;
use crate::api::auth::AuthConfig;
use crate::api::limits::Limits;
use crate::api::links::LinkConfig;
use crate::api::{validate, ApiSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Permits a semaphore can hold comfortably; far more than any service needs.
const MAX_PERMITS: i64 = 1_000_000;
/// A day, in seconds: the longest time limit that makes sense for one HTTP call or header.
const DAY_SECONDS: i64 = 86_400;

/// Where the API listens and whether it serves HTTPS itself.
#[derive(Clone, Debug)]
pub struct Listen {
    /// `IIB_LISTEN_ADDR`.
    pub addr: SocketAddr,
    /// `IIB_TLS_CERT` and `IIB_TLS_KEY` (both or neither).
    pub tls: Option<TlsFiles>,
    /// `IIB_METRICS_ADDR`: where `iib worker` and `iib relay`, which serve no API, answer
    /// `/metrics`, `/livez` and `/readyz` (unset: they listen nowhere). The API's processes
    /// serve those on `IIB_LISTEN_ADDR`.
    pub ops: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(super) fn listen(r: &Reader) -> Result<Listen, SettingsError> {
    let raw = r.text("IIB_LISTEN_ADDR")?;
    let addr = raw.parse().map_err(|_| SettingsError::Malformed {
        key: "IIB_LISTEN_ADDR".into(),
        expected: "an address such as 127.0.0.1:8080",
        value: raw.clone(),
    })?;
    let tls = match (
        r.optional_path("IIB_TLS_CERT"),
        r.optional_path("IIB_TLS_KEY"),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (cert, _) => {
            return Err(SettingsError::Invalid {
                key: if cert.is_some() {
                    "IIB_TLS_KEY"
                } else {
                    "IIB_TLS_CERT"
                }
                .into(),
                problem: "set both IIB_TLS_CERT and IIB_TLS_KEY to serve HTTPS, or neither".into(),
            })
        }
    };
    let ops = match r.optional_text("IIB_METRICS_ADDR") {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|_| SettingsError::Malformed {
            key: "IIB_METRICS_ADDR".into(),
            expected: "an address such as 0.0.0.0:9090",
            value: raw.clone(),
        })?),
    };
    Ok(Listen { addr, tls, ops })
}

pub(super) fn read(
    r: &Reader,
    listen: &Listen,
    artifacts: &ArtifactSettings,
    days_to_live: i64,
) -> Result<ApiSettings, SettingsError> {
    let s3 = artifacts.s3.is_some();
    Ok(ApiSettings {
        auth: auth(r)?,
        links: LinkConfig {
            logs_kept: artifacts.dirs.logs.is_some() || s3,
            related_bundles_kept: artifacts.dirs.related_bundles.is_some() || s3,
            days_to_live,
        },
        max_per_page: r.at_least::<i64>("IIB_MAX_PER_PAGE", 1)?,
        public_url: public_url(r)?,
        tls: listen.tls.is_some(),
        max_body_bytes: r.at_least::<usize>("IIB_MAX_BODY_BYTES", 1024)?,
        limits: limits(r)?,
        http: http(r)?,
        rules: validate::Rules {
            binary_image_config_empty: r.object("IIB_BINARY_IMAGE_CONFIG")?.is_empty(),
            graph_mode_options: r.strings("IIB_GRAPH_MODE_OPTIONS")?,
            graph_mode_index_allow_list: r.strings("IIB_GRAPH_MODE_INDEX_ALLOW_LIST")?,
            authenticated: false,
        },
        user_to_queue: r.object("IIB_USER_TO_QUEUE")?,
        dirs: artifacts.dirs.clone(),
        s3: artifacts.s3.clone(),
        // Set from the Kafka settings by `Settings::read`.
        relay_enabled: false,
    })
}

fn public_url(r: &Reader) -> Result<Option<String>, SettingsError> {
    let Some(url) = r.optional_text("IIB_PUBLIC_URL") else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(SettingsError::Malformed {
            key: "IIB_PUBLIC_URL".into(),
            expected: "an absolute http(s) URL such as https://iib.example.com",
            value: url,
        });
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

fn auth(r: &Reader) -> Result<AuthConfig, SettingsError> {
    let trusted_proxies = r
        .strings("IIB_TRUSTED_PROXIES")?
        .into_iter()
        .map(|ip| {
            ip.parse().map_err(|_| SettingsError::Malformed {
                key: "IIB_TRUSTED_PROXIES".into(),
                expected: "a JSON array of IP addresses",
                value: ip.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let user_header = r.text("IIB_AUTH_USER_HEADER")?;
    if axum::http::HeaderName::from_bytes(user_header.as_bytes()).is_err() {
        return Err(SettingsError::Malformed {
            key: "IIB_AUTH_USER_HEADER".into(),
            expected: "an HTTP header name such as X-Remote-User",
            value: user_header,
        });
    }
    Ok(AuthConfig {
        login_disabled: r.flag("LOGIN_DISABLED")?,
        user_header,
        trusted_proxies,
        worker_usernames: r.strings("IIB_WORKER_USERNAMES")?,
    })
}

fn limits(r: &Reader) -> Result<Limits, SettingsError> {
    Ok(Limits {
        // A stored event wraps the body in a few levels; serde_json reads back 128 at most.
        max_depth: r.between::<usize>(
            "IIB_MAX_JSON_DEPTH",
            1,
            100,
            "stored events must stay readable",
        )?,
        max_items: r.at_least::<usize>("IIB_MAX_LIST_ITEMS", 1)?,
        max_string_bytes: r.at_least::<usize>("IIB_MAX_STRING_BYTES", 1)?,
        max_batch_requests: r.at_least::<usize>("IIB_MAX_BATCH_REQUESTS", 1)?,
    })
}

fn http(r: &Reader) -> Result<HttpLimits, SettingsError> {
    let seconds = |key: &str| -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(r.between::<u64>(
            key,
            1,
            DAY_SECONDS,
            "",
        )?))
    };
    Ok(HttpLimits {
        max_connections: r.between::<usize>("IIB_HTTP_MAX_CONNECTIONS", 1, MAX_PERMITS, "")?,
        max_concurrent_requests: r.between::<usize>(
            "IIB_HTTP_MAX_CONCURRENT_REQUESTS",
            1,
            MAX_PERMITS,
            "",
        )?,
        header_timeout: seconds("IIB_HTTP_HEADER_TIMEOUT_SECONDS")?,
        request_timeout: seconds("IIB_HTTP_REQUEST_TIMEOUT_SECONDS")?,
        max_event_streams: r.between::<usize>("IIB_MAX_EVENT_STREAMS", 1, MAX_PERMITS, "")?,
    })
}
