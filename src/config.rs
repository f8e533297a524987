//! Configuration: environment variables named after IIB's settings (its web settings as they
//! are, its lower-case worker settings upper-cased), plus our own, optionally from a TOML
//! file (`--config`) with the same keys; the environment wins.
//!
//! Every key is declared once in [`SETTINGS`] with its kind and IIB's default. An unknown
//! `IIB_*` key, or a value of the wrong kind, stops start-up with a message naming it.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Bool,
    /// A JSON object (IIB's dict settings).
    Object,
    /// A JSON array of strings.
    List,
}

pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    /// IIB's default, as the environment would spell it.
    pub default: Option<&'static str>,
}

const fn s(key: &'static str, kind: Kind, default: Option<&'static str>) -> Setting {
    Setting { key, kind, default }
}

use Kind::*;

/// Every setting we read. Those that later issues act on are declared now so that
/// deployments can set them without start-up failing.
pub const SETTINGS: &[Setting] = &[
    // Ours.
    s("IIB_LISTEN_ADDR", Text, Some("127.0.0.1:8080")),
    s("IIB_DATA_DIR", Text, Some("./data")),
    s("IIB_DATABASE_URL", Text, None),
    s("IIB_KAFKA_BROKERS", Text, None),
    s("IIB_KAFKA_BUILD_STATE_TOPIC", Text, Some("iib.build.state")),
    s("IIB_KAFKA_BATCH_STATE_TOPIC", Text, Some("iib.batch.state")),
    s("IIB_KAFKA_EVENTS_TOPIC", Text, None),
    s("IIB_KAFKA_PARTITIONS", Integer, Some("3")),
    s("IIB_KAFKA_REPLICATION_FACTOR", Integer, Some("1")),
    s("IIB_KAFKA_PROPERTIES", Object, Some("{}")),
    s("IIB_TLS_CERT", Text, None),
    s("IIB_TLS_KEY", Text, None),
    s("IIB_SECRET_LIFETIME_SECONDS", Integer, Some("259200")),
    s("IIB_SECRET_KEY", Text, None),
    s("IIB_INSECURE_REGISTRIES", List, Some("[]")),
    s("IIB_AUTH_USER_HEADER", Text, Some("X-Remote-User")),
    s("IIB_TRUSTED_PROXIES", List, Some(r#"["127.0.0.1","::1"]"#)),
    s("IIB_PUBLIC_URL", Text, None),
    s("IIB_MAX_BODY_BYTES", Integer, Some("16777216")),
    s("IIB_MAX_JSON_DEPTH", Integer, Some("32")),
    s("IIB_MAX_LIST_ITEMS", Integer, Some("1000")),
    s("IIB_MAX_STRING_BYTES", Integer, Some("65536")),
    s("IIB_MAX_BATCH_REQUESTS", Integer, Some("200")),
    s("IIB_HTTP_MAX_CONNECTIONS", Integer, Some("1024")),
    s("IIB_HTTP_MAX_CONCURRENT_REQUESTS", Integer, Some("256")),
    s("IIB_HTTP_HEADER_TIMEOUT_SECONDS", Integer, Some("10")),
    s("IIB_HTTP_REQUEST_TIMEOUT_SECONDS", Integer, Some("60")),
    s("IIB_MAX_EVENT_STREAMS", Integer, Some("256")),
    s("IIB_QUEUES", Object, Some("{}")),
    s("IIB_QUEUE_ACTORS", Bool, Some("true")),
    s("IIB_WORKER_LEASE_SECONDS", Integer, Some("60")),
    s("IIB_WORKER_MAX_ATTEMPTS", Integer, Some("3")),
    s("IIB_INDEX_MAX_CATALOG_LAYERS", Integer, Some("8")),
    s("IIB_WORKER_CATALOG_CACHE_MB", Integer, Some("128")),
    s("IIB_REGISTRY_MAX_MANIFEST_BYTES", Integer, Some("4194304")),
    s("IIB_REGISTRY_MAX_LAYER_BYTES", Integer, Some("1073741824")),
    s("IIB_REGISTRY_MAX_IMAGE_BYTES", Integer, Some("2147483648")),
    // IIB's web settings.
    s("IIB_ADDITIONAL_LOGGERS", List, Some("[]")),
    s("IIB_AWS_S3_BUCKET_NAME", Text, None),
    s("IIB_BINARY_IMAGE_CONFIG", Object, Some("{}")),
    s("IIB_FORCE_OVERWRITE_FROM_INDEX", Bool, Some("false")),
    s("IIB_GRAPH_MODE_INDEX_ALLOW_LIST", List, Some("[]")),
    s(
        "IIB_GRAPH_MODE_OPTIONS",
        List,
        Some(r#"["replaces","semver","semver-skippatch"]"#),
    ),
    s("IIB_GREENWAVE_CONFIG", Object, Some("{}")),
    s("IIB_INDEX_TO_GITLAB_PUSH_MAP", Object, Some("{}")),
    s("IIB_LOG_FORMAT", Text, Some("pretty")),
    s("IIB_LOG_LEVEL", Text, Some("INFO")),
    s("IIB_MAX_PER_PAGE", Integer, Some("20")),
    s("IIB_OTEL_TRACING", Bool, Some("false")),
    s("IIB_RECURSIVE_REQUEST_RELATED_BUNDLES_DIR", Text, None),
    s("IIB_REQUEST_DATA_DAYS_TO_LIVE", Integer, Some("3")),
    s("IIB_REQUEST_LOGS_DIR", Text, None),
    s("IIB_REQUEST_RELATED_BUNDLES_DIR", Text, None),
    s("IIB_USER_TO_QUEUE", Object, Some("{}")),
    s("IIB_WORKER_USERNAMES", List, Some("[]")),
    s("LOGIN_DISABLED", Bool, Some("false")),
    // IIB's worker settings, upper-cased.
    s("IIB_API_TIMEOUT", Integer, Some("120")),
    s("IIB_API_URL", Text, None),
    s("IIB_DOCKER_CONFIG_TEMPLATE", Text, None),
    s("IIB_GREENWAVE_URL", Text, None),
    s(
        "IIB_IMAGE_PUSH_TEMPLATE",
        Text,
        Some("{registry}/iib-build:{request_id}"),
    ),
    s("IIB_INDEX_IMAGE_OUTPUT_REGISTRY", Text, None),
    s("IIB_MAX_RECURSIVE_RELATED_BUNDLES", Integer, Some("15")),
    s("IIB_ORGANIZATION_CUSTOMIZATIONS", Object, Some("{}")),
    s("IIB_REGISTRY", Text, None),
    s("IIB_REQUIRED_LABELS", Object, Some("{}")),
    s("IIB_NO_OCP_LABEL_ALLOW_LIST", List, Some("[]")),
    s("IIB_RELATED_IMAGE_REGISTRY_REPLACEMENT", Object, Some("{}")),
    s("IIB_REQUEST_LOGS_FORMAT", Text, None),
    s("IIB_REQUEST_LOGS_LEVEL", Text, Some("DEBUG")),
    s("IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR", Text, None),
    s("IIB_RETRY_DELAY", Integer, Some("10")),
    s("IIB_RETRY_JITTER", Integer, Some("10")),
    s("IIB_RETRY_MULTIPLIER", Integer, Some("5")),
    s("IIB_SAC_QUEUES", List, Some("[]")),
    s("IIB_TOTAL_ATTEMPTS", Integer, Some("5")),
];

/// Settings that only debug builds (the test suite's) know: they reach code paths no
/// deployment should, so a release build refuses them as unknown and stops start-up.
///
/// - `IIB_TEST_PANIC_ON`: a worker's task panics when the request's parameters (as JSON)
///   contain this text, to test how a panicking task ends.
#[cfg(debug_assertions)]
const DEBUG_SETTINGS: &[Setting] = &[s("IIB_TEST_PANIC_ON", Text, None)];
#[cfg(not(debug_assertions))]
const DEBUG_SETTINGS: &[Setting] = &[];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown setting {0}; see the README for the settings iib reads")]
    Unknown(String),
    #[error("setting {key} must be {expected}, got {value:?}")]
    Malformed {
        key: String,
        expected: &'static str,
        value: String,
    },
    #[error("cannot read the configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The parsed settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<&'static str, Value>,
}

fn parse(setting: &Setting, raw: &str) -> Result<Value, ConfigError> {
    let malformed = |expected| ConfigError::Malformed {
        key: setting.key.to_string(),
        expected,
        value: raw.to_string(),
    };
    match setting.kind {
        Text => Ok(Value::String(raw.to_string())),
        Integer => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| malformed("an integer")),
        Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" | "" => Ok(Value::Bool(false)),
            _ => Err(malformed("true or false")),
        },
        Object => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(malformed("a JSON object")),
        },
        List => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Array(items)) if items.iter().all(Value::is_string) => {
                Ok(Value::Array(items))
            }
            _ => Err(malformed("a JSON array of strings")),
        },
    }
}

fn toml_to_raw(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl Config {
    /// Reads the process environment and, if given, a TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, std::env::vars())
    }

    /// Reads `environment` (name/value pairs) and, if given, a TOML file.
    pub fn load_with(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            for (key, value) in table {
                if find(&key).is_none() {
                    return Err(ConfigError::Unknown(key));
                }
                raw.insert(key, toml_to_raw(&value));
            }
        }
        raw.extend(
            environment
                .into_iter()
                .filter(|(k, _)| k.starts_with("IIB_") || k == "LOGIN_DISABLED"),
        );
        Self::from_pairs(raw)
    }

    /// Builds the configuration from key/value pairs (the environment, in tests a map).
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for setting in SETTINGS {
            if let Some(default) = setting.default {
                values.insert(setting.key, parse(setting, default)?);
            }
        }
        for (key, raw) in pairs {
            let setting = find(&key).ok_or(ConfigError::Unknown(key))?;
            values.insert(setting.key, parse(setting, &raw)?);
        }
        Ok(Self { values })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn integer(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Value::as_i64)
    }

    /// A list setting's strings.
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let raw = self.text("IIB_LISTEN_ADDR").unwrap_or("127.0.0.1:8080");
        raw.parse().map_err(|_| ConfigError::Malformed {
            key: "IIB_LISTEN_ADDR".into(),
            expected: "an address such as 127.0.0.1:8080",
            value: raw.into(),
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.text("IIB_DATA_DIR").unwrap_or("./data"))
    }

    /// `IIB_DATABASE_URL`, or the embedded SQLite file under `IIB_DATA_DIR`.
    pub fn database_url(&self) -> String {
        self.text("IIB_DATABASE_URL")
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| crate::store::Store::sqlite_url_in(&self.data_dir()))
    }

    /// `IIB_SECRET_KEY`, the key request secrets are encrypted with at rest.
    pub fn secret_key(&self) -> Result<Option<crate::store::SecretKey>, ConfigError> {
        self.text("IIB_SECRET_KEY")
            .filter(|k| !k.is_empty())
            .map(|text| {
                crate::store::SecretKey::from_base64(text).map_err(|_| ConfigError::Malformed {
                    key: "IIB_SECRET_KEY".into(),
                    expected: "32 random bytes, base64-encoded (openssl rand -base64 32)",
                    value: "*****".into(),
                })
            })
            .transpose()
    }

    pub fn secret_lifetime(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            self.integer("IIB_SECRET_LIFETIME_SECONDS")
                .unwrap_or(259_200),
        )
    }
}

fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().chain(DEBUG_SETTINGS).find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_iibs() {
        let config = Config::from_pairs(vec![]).unwrap();
        assert_eq!(config.integer("IIB_MAX_PER_PAGE"), Some(20));
        assert_eq!(
            config.text("IIB_IMAGE_PUSH_TEMPLATE"),
            Some("{registry}/iib-build:{request_id}")
        );
        assert_eq!(config.integer("IIB_TOTAL_ATTEMPTS"), Some(5));
        assert!(!config.flag("LOGIN_DISABLED"));
        assert_eq!(config.listen_addr().unwrap().to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn unknown_settings_stop_start_up_by_name() {
        let err = Config::from_pairs(pairs(&[("IIB_MAX_PER_PAEG", "5")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting IIB_MAX_PER_PAEG; see the README for the settings iib reads"
        );
    }

    #[test]
    fn malformed_values_name_the_setting_and_the_expected_kind() {
        let err = Config::from_pairs(pairs(&[("IIB_MAX_PER_PAGE", "many")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting IIB_MAX_PER_PAGE must be an integer, got \"many\""
        );
        let err = Config::from_pairs(pairs(&[("IIB_USER_TO_QUEUE", "[1]")])).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("setting IIB_USER_TO_QUEUE must be a JSON object"));
        let err = Config::from_pairs(pairs(&[("LOGIN_DISABLED", "maybe")])).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("setting LOGIN_DISABLED must be true or false"));
        let config = Config::from_pairs(pairs(&[("IIB_LISTEN_ADDR", "nowhere")])).unwrap();
        assert!(config.listen_addr().is_err());
    }

    #[test]
    fn a_malformed_secret_key_stops_start_up_without_echoing_it() {
        let config = Config::from_pairs(pairs(&[("IIB_SECRET_KEY", "hunter2")])).unwrap();
        let err = config.secret_key().unwrap_err().to_string();
        assert!(
            err.starts_with("setting IIB_SECRET_KEY must be 32 random bytes"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let config = Config::from_pairs(pairs(&[(
            "IIB_SECRET_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )]))
        .unwrap();
        assert!(config.secret_key().unwrap().is_some());
    }

    #[test]
    fn dict_and_list_settings_are_json() {
        let config = Config::from_pairs(pairs(&[
            ("IIB_USER_TO_QUEUE", r#"{"PARALLEL:bot": "iib_bot"}"#),
            ("IIB_WORKER_USERNAMES", r#"["worker@EXAMPLE"]"#),
        ]))
        .unwrap();
        assert_eq!(
            config.get("IIB_USER_TO_QUEUE").unwrap()["PARALLEL:bot"],
            "iib_bot"
        );
        assert_eq!(
            config.get("IIB_WORKER_USERNAMES").unwrap()[0],
            "worker@EXAMPLE"
        );
    }

    #[test]
    fn a_toml_file_gives_the_same_keys_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iib.toml");
        std::fs::write(
            &path,
            "IIB_MAX_PER_PAGE = 50\nIIB_WORKER_USERNAMES = [\"w\"]\n",
        )
        .unwrap();
        let config = Config::load_with(Some(&path), pairs(&[("PATH", "/bin")])).unwrap();
        assert_eq!(config.integer("IIB_MAX_PER_PAGE"), Some(50));
        assert_eq!(config.get("IIB_WORKER_USERNAMES").unwrap()[0], "w");
        let config = Config::load_with(Some(&path), pairs(&[("IIB_MAX_PER_PAGE", "7")])).unwrap();
        assert_eq!(config.integer("IIB_MAX_PER_PAGE"), Some(7));
        std::fs::write(&path, "IIB_NOPE = 1\n").unwrap();
        assert_eq!(
            Config::load_with(Some(&path), vec![]).unwrap_err(),
            ConfigError::Unknown("IIB_NOPE".into())
        );
    }
}
