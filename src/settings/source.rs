//! Where settings come from: environment variables named after IIB's settings (its web
//! settings as they are, its lower-case worker settings upper-cased), plus our own, optionally
//! from a TOML file (`--config`) with the same keys; the environment wins.
//!
//! Every key is declared once in [`SETTINGS`] with its kind and IIB's default: this table is
//! the one place names, kinds and defaults are written. An unknown `IIB_*` key, or a value of
//! the wrong kind, stops start-up with a message naming it. What the values mean, and which
//! are in range, is the typed layer's business (the sibling modules); nothing outside
//! `settings/` looks a key up.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

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
    /// Whether iib acts on it; `false`: accepted so that IIB's deployments start unchanged,
    /// and named at start-up when set.
    pub used: bool,
}

const fn s(key: &'static str, kind: Kind, default: Option<&'static str>) -> Setting {
    Setting {
        key,
        kind,
        default,
        used: true,
    }
}

/// An IIB setting iib accepts but does not act on.
const fn unused(key: &'static str, kind: Kind, default: Option<&'static str>) -> Setting {
    Setting {
        key,
        kind,
        default,
        used: false,
    }
}

use Kind::*;

/// Every setting we accept. IIB's settings that iib does not act on (yet) are declared with
/// `unused` so that deployments can keep setting them; start-up names those that are set.
pub const SETTINGS: &[Setting] = &[
    // Ours.
    s("IIB_LISTEN_ADDR", Text, Some("127.0.0.1:8080")),
    s("IIB_METRICS_ADDR", Text, None),
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
    s("IIB_WORKER_QUEUES", Text, None),
    s("IIB_PG_NOTIFY", Bool, Some("true")),
    s("IIB_WORKER_LEASE_SECONDS", Integer, Some("60")),
    s("IIB_WORKER_MAX_ATTEMPTS", Integer, Some("3")),
    s("IIB_INDEX_MAX_CATALOG_LAYERS", Integer, Some("8")),
    s("IIB_WORKER_CATALOG_CACHE_MB", Integer, Some("128")),
    s("IIB_REGISTRY_MAX_MANIFEST_BYTES", Integer, Some("4194304")),
    s("IIB_REGISTRY_MAX_LAYER_BYTES", Integer, Some("1073741824")),
    s("IIB_REGISTRY_MAX_IMAGE_BYTES", Integer, Some("2147483648")),
    // IIB's web settings.
    unused("IIB_ADDITIONAL_LOGGERS", List, Some("[]")),
    s("IIB_AWS_S3_BUCKET_NAME", Text, None),
    s("IIB_BINARY_IMAGE_CONFIG", Object, Some("{}")),
    unused("IIB_FORCE_OVERWRITE_FROM_INDEX", Bool, Some("false")),
    s("IIB_GRAPH_MODE_INDEX_ALLOW_LIST", List, Some("[]")),
    s(
        "IIB_GRAPH_MODE_OPTIONS",
        List,
        Some(r#"["replaces","semver","semver-skippatch"]"#),
    ),
    s("IIB_GREENWAVE_CONFIG", Object, Some("{}")),
    unused("IIB_INDEX_TO_GITLAB_PUSH_MAP", Object, Some("{}")),
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
    unused("IIB_API_TIMEOUT", Integer, Some("120")),
    unused("IIB_API_URL", Text, None),
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
    unused("IIB_REQUEST_LOGS_FORMAT", Text, None),
    unused("IIB_REQUEST_LOGS_LEVEL", Text, Some("DEBUG")),
    s("IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR", Text, None),
    s("IIB_RETRY_DELAY", Integer, Some("10")),
    s("IIB_RETRY_JITTER", Integer, Some("10")),
    s("IIB_RETRY_MULTIPLIER", Integer, Some("5")),
    unused("IIB_SAC_QUEUES", List, Some("[]")),
    s("IIB_TOTAL_ATTEMPTS", Integer, Some("5")),
    // OpenTelemetry's, which IIB reads with `IIB_OTEL_TRACING` (the other `OTEL_*` variables
    // are read by the OpenTelemetry SDK itself).
    s("OTEL_EXPORTER_OTLP_ENDPOINT", Text, None),
    s("OTEL_SERVICE_NAME", Text, None),
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

/// Every declared setting, the debug-only ones included, in declaration order.
pub fn declared() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().chain(DEBUG_SETTINGS)
}

/// The declaration of `key`, if it is one.
pub fn find(key: &str) -> Option<&'static Setting> {
    declared().find(|s| s.key == key)
}

/// Why the settings cannot be used; every message names the setting and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("unknown setting {0}; see the README for the settings iib reads")]
    Unknown(String),
    #[error("setting {key} must be {expected}, got {value:?}")]
    Malformed {
        key: String,
        expected: &'static str,
        value: String,
    },
    /// An integer outside what the setting accepts (`accepted`: "at least 1", "from 1 to 100").
    #[error("setting {key} must be {accepted}, got {value}")]
    OutOfRange {
        key: String,
        accepted: String,
        value: i64,
    },
    /// A value of the right kind that still cannot be used (`problem` says why and what to do).
    #[error("setting {key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("cannot read the configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// IIB's default (the declaration table).
    Default,
    /// The TOML file given with `--config`.
    File,
    /// An environment variable.
    Environment,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Environment => "environment",
        }
    }
}

/// The raw settings: each declared key's value (of its kind) and where it came from. The
/// typed [`super::Settings`] is built from this once; nothing else reads it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<&'static str, (Value, Origin)>,
}

fn parse(setting: &Setting, raw: &str) -> Result<Value, SettingsError> {
    let malformed = |expected| SettingsError::Malformed {
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

/// Whether an environment variable is one of ours (others are none of our business).
pub fn is_setting_name(name: &str) -> bool {
    name.starts_with("IIB_")
        || matches!(
            name,
            "LOGIN_DISABLED" | "OTEL_EXPORTER_OTLP_ENDPOINT" | "OTEL_SERVICE_NAME"
        )
}

impl Config {
    /// Reads `environment` (name/value pairs; those not named like a setting are ignored)
    /// and, if given, a TOML file.
    pub fn load_with(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut raw: Vec<(String, String, Origin)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| SettingsError::File {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            for (key, value) in table {
                raw.push((toml_to_raw(&value), key, Origin::File));
            }
        }
        raw.extend(
            environment
                .into_iter()
                .filter(|(k, _)| is_setting_name(k))
                .map(|(k, v)| (v, k, Origin::Environment)),
        );
        Self::from_raw(
            raw.into_iter()
                .map(|(value, key, origin)| (key, value, origin)),
        )
    }

    /// Builds the configuration from key/value pairs as if they were the environment.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        Self::from_raw(
            pairs
                .into_iter()
                .map(|(key, value)| (key, value, Origin::Environment)),
        )
    }

    /// Defaults first, then each value in order (a later one wins).
    fn from_raw(
        entries: impl IntoIterator<Item = (String, String, Origin)>,
    ) -> Result<Self, SettingsError> {
        let mut values = BTreeMap::new();
        for setting in declared() {
            if let Some(default) = setting.default {
                values.insert(setting.key, (parse(setting, default)?, Origin::Default));
            }
        }
        for (key, raw, origin) in entries {
            let setting = find(&key).ok_or(SettingsError::Unknown(key))?;
            values.insert(setting.key, (parse(setting, &raw)?, origin));
        }
        Ok(Self { values })
    }

    /// A setting's value (of its declared kind), if it has one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).map(|(value, _)| value)
    }

    /// Where a setting's value came from (`Default` also for a setting without a value).
    pub fn origin(&self, key: &str) -> Origin {
        self.values
            .get(key)
            .map_or(Origin::Default, |(_, origin)| *origin)
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

    /// The declared settings that were given (file or environment) but that iib does not act
    /// on, in declaration order.
    pub fn set_but_unused(&self) -> Vec<&'static str> {
        declared()
            .filter(|s| !s.used && self.origin(s.key) != Origin::Default)
            .map(|s| s.key)
            .collect()
    }
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
        assert_eq!(config.origin("IIB_MAX_PER_PAGE"), Origin::Default);
        assert_eq!(config.origin("IIB_DATABASE_URL"), Origin::Default);
    }

    #[test]
    fn every_declared_default_parses_and_every_non_text_setting_has_one() {
        for setting in declared() {
            if let Some(default) = setting.default {
                parse(setting, default).unwrap();
            } else {
                assert_eq!(setting.kind, Text, "{} needs a default", setting.key);
            }
        }
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
        assert_eq!(config.origin("IIB_MAX_PER_PAGE"), Origin::File);
        assert_eq!(config.get("IIB_WORKER_USERNAMES").unwrap()[0], "w");
        let config = Config::load_with(Some(&path), pairs(&[("IIB_MAX_PER_PAGE", "7")])).unwrap();
        assert_eq!(config.integer("IIB_MAX_PER_PAGE"), Some(7));
        assert_eq!(config.origin("IIB_MAX_PER_PAGE"), Origin::Environment);
        assert_eq!(config.origin("IIB_WORKER_USERNAMES"), Origin::File);
        std::fs::write(&path, "IIB_NOPE = 1\n").unwrap();
        assert_eq!(
            Config::load_with(Some(&path), vec![]).unwrap_err(),
            SettingsError::Unknown("IIB_NOPE".into())
        );
    }

    #[test]
    fn only_unused_settings_that_were_given_are_named() {
        let config = Config::from_pairs(pairs(&[
            ("IIB_API_TIMEOUT", "60"),
            ("IIB_SAC_QUEUES", "[]"),
            ("IIB_MAX_PER_PAGE", "5"),
        ]))
        .unwrap();
        assert_eq!(
            config.set_but_unused(),
            vec!["IIB_API_TIMEOUT", "IIB_SAC_QUEUES"]
        );
        assert!(Config::from_pairs(vec![])
            .unwrap()
            .set_but_unused()
            .is_empty());
    }
}
