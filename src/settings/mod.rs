//! The service's settings, typed, built once at start-up from the environment and the optional
//! TOML file (`--config`), and handed to each part of the service. Not for reading a setting at
//! the point of use: nothing outside this module looks a key up.
//!
//! - `source`: the declaration table (every key once, with its kind and IIB's default), the
//!   raw values and where each came from (default, file, environment).
//! - `read`: typed reads with range checks; a value out of range stops start-up with a message
//!   naming the setting and what it accepts (never a silent clamp).
//! - One module per area: `api` (listening, auth, links, body and HTTP limits), `workers`,
//!   `registry`, `kafka`, `artifacts` (directories and S3), `storage` (data directory,
//!   database, secrets, retention), `telemetry` (logging and traces).
//! - `show`: what `iib config` prints, secrets masked.

mod api;
mod artifacts;
mod kafka;
mod read;
mod registry;
pub mod show;
pub mod source;
mod storage;
mod telemetry;
mod workers;

pub use api::{Listen, TlsFiles};
pub use artifacts::ArtifactSettings;
pub use registry::RegistrySettings;
pub use source::{Config, Origin, SettingsError, SETTINGS};
pub use storage::StorageSettings;
pub use telemetry::{LogFormat, TelemetrySettings, TraceExport};

use crate::api::ApiSettings;
use crate::streaming::relay::RelaySettings;
use crate::workers::settings::WorkerSettings;
use read::Reader;
use std::collections::BTreeMap;
use std::path::Path;

/// Variables outside IIB's settings that the settings read: the standard AWS ones (S3),
/// `HOME` (the default Docker config) and OpenTelemetry's endpoint of traces alone. Taken from the same environment as the settings, so a
/// test can give them.
const ENVIRONMENT: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "HOME",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The non-empty values of [`ENVIRONMENT`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment(BTreeMap<String, String>);

impl Environment {
    fn from_pairs<'a>(pairs: impl IntoIterator<Item = &'a (String, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter(|(k, v)| ENVIRONMENT.contains(&k.as_str()) && !v.is_empty())
                .cloned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Every setting the service acts on, typed and checked.
#[derive(Clone)]
pub struct Settings {
    /// Where the API listens, and HTTPS.
    pub listen: Listen,
    pub api: ApiSettings,
    pub workers: WorkerSettings,
    pub registry: RegistrySettings,
    /// The Kafka relay; `None`: `IIB_KAFKA_BROKERS` is unset and the relay is off.
    pub kafka: Option<RelaySettings>,
    pub artifacts: ArtifactSettings,
    pub storage: StorageSettings,
    pub telemetry: TelemetrySettings,
    /// The raw values and their origins, for `iib config`.
    source: Config,
}

impl Settings {
    /// The process environment and, if given, a TOML file (the environment wins).
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with(file, std::env::vars())
    }

    /// `environment` (name/value pairs; only settings and the few variables the settings
    /// read are looked at) and, if given, a TOML file.
    pub fn load_with(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let environment: Vec<(String, String)> = environment.into_iter().collect();
        let config = Config::load_with(file, environment.iter().cloned())?;
        Self::build(config, &Environment::from_pairs(&environment))
    }

    /// From name/value pairs alone, as if they were the whole environment (tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, SettingsError> {
        Self::load_with(None, pairs.into_iter().map(|(k, v)| (k.into(), v.into())))
    }

    /// IIB's defaults, with nothing set.
    pub fn defaults() -> Self {
        Self::from_pairs(Vec::<(String, String)>::new())
            .expect("the declared defaults are valid (a unit test checks them)")
    }

    fn build(config: Config, env: &Environment) -> Result<Self, SettingsError> {
        Self::read(&Reader::new(&config), env, config.clone())
    }

    fn read(r: &Reader, env: &Environment, source: Config) -> Result<Self, SettingsError> {
        let artifacts = artifacts::read(r, env)?;
        let storage = storage::read(r, &artifacts)?;
        let listen = api::listen(r)?;
        let kafka = kafka::read(r)?;
        let mut api = api::read(r, &listen, &artifacts, storage.retention.days_to_live)?;
        api.relay_enabled = kafka.is_some();
        Ok(Self {
            api,
            workers: workers::read(r, &artifacts)?,
            registry: registry::read(r, env)?,
            kafka,
            telemetry: telemetry::read(r, env)?,
            listen,
            artifacts,
            storage,
            source,
        })
    }

    /// The settings that were given but that iib does not act on (IIB's, accepted so that its
    /// deployments start unchanged), in declaration order.
    pub fn set_but_unused(&self) -> Vec<&'static str> {
        self.source.set_but_unused()
    }

    /// The one start-up line naming the settings given but not acted on, if any.
    pub fn log_unused(&self) {
        let unused = self.set_but_unused();
        if !unused.is_empty() {
            tracing::warn!(
                "accepted for IIB compatibility, not used: {}",
                unused.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn error(pairs: &[(&str, &str)]) -> String {
        match Settings::from_pairs(pairs.iter().copied()) {
            Ok(_) => panic!("{pairs:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_declared_setting_is_read_or_declared_unused_and_nothing_else_is_read() {
        let config = Config::from_pairs(vec![]).unwrap();
        let r = Reader::new(&config);
        Settings::read(&r, &Environment::default(), config.clone()).unwrap();
        let read = r.keys_read();
        for setting in source::declared() {
            assert_eq!(
                read.contains(setting.key),
                setting.used,
                "{}: read by the typed settings exactly when declared used",
                setting.key
            );
        }
        for key in &read {
            assert!(
                source::find(key).is_some(),
                "{key} is read but not declared"
            );
        }
    }

    #[test]
    fn the_defaults_are_iibs_and_written_once() {
        let settings = Settings::defaults();
        assert_eq!(settings.api.max_per_page, 20);
        assert_eq!(settings.api.max_body_bytes, 16 << 20);
        assert_eq!(settings.api.limits.max_depth, 32);
        assert_eq!(settings.api.http.max_connections, 1024);
        assert_eq!(settings.api.auth.user_header, "X-Remote-User");
        assert_eq!(settings.listen.addr.to_string(), "127.0.0.1:8080");
        assert!(settings.listen.tls.is_none());
        assert_eq!(settings.registry.total_attempts, 5);
        assert_eq!(settings.registry.retry_delay, Duration::from_secs(10));
        assert_eq!(settings.registry.limits.max_manifest_bytes, 4 << 20);
        assert_eq!(settings.workers.lease, Duration::from_secs(60));
        assert_eq!(settings.workers.max_attempts, 3);
        assert_eq!(settings.workers.catalog_cache_bytes, 128 << 20);
        assert!(settings.workers.queue_actors);
        assert_eq!(
            settings.workers.push_template,
            "{registry}/iib-build:{request_id}"
        );
        assert!(settings.kafka.is_none());
        assert!(settings.storage.embedded);
        assert!(settings.storage.database_url.starts_with("sqlite://"));
        assert_eq!(settings.storage.secret_lifetime, chrono::Duration::days(3));
        assert_eq!(settings.storage.retention.days_to_live, 3);
        assert_eq!(settings.telemetry.filter, "info");
        assert_eq!(settings.telemetry.format, LogFormat::Pretty);
        assert!(settings.registry.docker_config.is_none());
    }

    #[test]
    fn values_out_of_range_are_refused_naming_the_setting_and_the_range() {
        assert_eq!(
            error(&[("IIB_TOTAL_ATTEMPTS", "0")]),
            "setting IIB_TOTAL_ATTEMPTS must be at least 1, got 0"
        );
        assert_eq!(
            error(&[("IIB_MAX_PER_PAGE", "0")]),
            "setting IIB_MAX_PER_PAGE must be at least 1, got 0"
        );
        assert_eq!(
            error(&[("IIB_MAX_BODY_BYTES", "100")]),
            "setting IIB_MAX_BODY_BYTES must be at least 1024, got 100"
        );
        assert_eq!(
            error(&[("IIB_WORKER_LEASE_SECONDS", "1")]),
            "setting IIB_WORKER_LEASE_SECONDS must be from 5 to 86400, got 1"
        );
        assert_eq!(
            error(&[("IIB_MAX_JSON_DEPTH", "0")]),
            "setting IIB_MAX_JSON_DEPTH must be from 1 to 100 (stored events must stay readable), got 0"
        );
        assert_eq!(
            error(&[("IIB_KAFKA_PARTITIONS", "0")]),
            "setting IIB_KAFKA_PARTITIONS must be from 1 to 100000, got 0"
        );
        assert_eq!(
            error(&[("IIB_RETRY_DELAY", "-1")]),
            "setting IIB_RETRY_DELAY must be from 0 to 3600, got -1"
        );
        assert_eq!(
            error(&[("IIB_RETRY_MULTIPLIER", "0")]),
            "setting IIB_RETRY_MULTIPLIER must be at least 1, got 0"
        );
        assert_eq!(
            error(&[("IIB_REGISTRY_MAX_MANIFEST_BYTES", "0")]),
            "setting IIB_REGISTRY_MAX_MANIFEST_BYTES must be at least 1, got 0"
        );
        assert_eq!(
            error(&[("IIB_HTTP_MAX_CONCURRENT_REQUESTS", "4611686018427387904")]),
            "setting IIB_HTTP_MAX_CONCURRENT_REQUESTS must be from 1 to 1000000, got 4611686018427387904"
        );
        assert_eq!(
            error(&[("IIB_SECRET_LIFETIME_SECONDS", "0")]),
            "setting IIB_SECRET_LIFETIME_SECONDS must be from 1 to 3153600000, got 0"
        );
        assert_eq!(
            error(&[("IIB_REQUEST_DATA_DAYS_TO_LIVE", "99999999999")]),
            "setting IIB_REQUEST_DATA_DAYS_TO_LIVE must be from -36500 to 36500, got 99999999999"
        );
        assert_eq!(
            error(&[("IIB_QUEUES", r#"{"iib_serial": {"concurrency": 0}}"#)]),
            "setting IIB_QUEUES: queue iib_serial has concurrency 0; give it at least 1 (1 runs one request at a time)"
        );
    }

    #[test]
    fn a_worker_serves_the_queues_it_is_given_and_refuses_unknown_ones() {
        let routed = ("IIB_USER_TO_QUEUE", r#"{"bot": "iib_serial"}"#);
        let all = Settings::from_pairs([routed]).unwrap();
        let labels = |s: &Settings| -> Vec<String> {
            s.workers
                .queues
                .iter()
                .map(|q| q.label().to_string())
                .collect()
        };
        assert_eq!(labels(&all), ["default", "iib_serial"]);
        let some = Settings::from_pairs([routed, ("IIB_WORKER_QUEUES", " iib_serial ,")]).unwrap();
        assert_eq!(labels(&some), ["iib_serial"]);
        let both =
            Settings::from_pairs([routed, ("IIB_WORKER_QUEUES", "default,iib_serial")]).unwrap();
        assert_eq!(labels(&both), ["default", "iib_serial"]);
        assert_eq!(
            error(&[routed, ("IIB_WORKER_QUEUES", "default,nope")]),
            "setting IIB_WORKER_QUEUES: names the queue \"nope\", which no queue setting declares (known: default, iib_serial); declare it in IIB_QUEUES or IIB_USER_TO_QUEUE"
        );
        assert!(error(&[("IIB_WORKER_QUEUES", " , ")])
            .starts_with("setting IIB_WORKER_QUEUES: names no queue"));
    }

    #[test]
    fn the_edges_of_each_range_are_accepted() {
        let settings = Settings::from_pairs([
            ("IIB_TOTAL_ATTEMPTS", "1"),
            ("IIB_RETRY_DELAY", "0"),
            ("IIB_RETRY_JITTER", "0"),
            ("IIB_WORKER_LEASE_SECONDS", "5"),
            ("IIB_INDEX_MAX_CATALOG_LAYERS", "0"),
            ("IIB_MAX_JSON_DEPTH", "100"),
            ("IIB_REQUEST_DATA_DAYS_TO_LIVE", "-1"),
            ("IIB_SECRET_LIFETIME_SECONDS", "1"),
            ("IIB_MAX_BODY_BYTES", "1024"),
        ])
        .unwrap();
        assert_eq!(settings.registry.total_attempts, 1);
        assert_eq!(settings.workers.max_catalog_layers, 0);
        assert_eq!(settings.api.links.days_to_live, -1);
        assert_eq!(settings.storage.retention.days_to_live, -1);
        assert_eq!(settings.api.max_body_bytes, 1024);
    }

    #[test]
    fn other_malformed_values_are_named() {
        assert!(error(&[("IIB_LISTEN_ADDR", "nowhere")])
            .starts_with("setting IIB_LISTEN_ADDR must be an address"));
        assert_eq!(
            error(&[("IIB_TLS_CERT", "/etc/iib/cert.pem")]),
            "setting IIB_TLS_KEY: set both IIB_TLS_CERT and IIB_TLS_KEY to serve HTTPS, or neither"
        );
        assert!(error(&[("IIB_TRUSTED_PROXIES", r#"["proxy"]"#)])
            .starts_with("setting IIB_TRUSTED_PROXIES must be a JSON array of IP addresses"));
        assert!(error(&[("IIB_AUTH_USER_HEADER", "X Remote User")])
            .starts_with("setting IIB_AUTH_USER_HEADER must be an HTTP header name"));
        assert!(error(&[("IIB_PUBLIC_URL", "iib.example.com")])
            .starts_with("setting IIB_PUBLIC_URL must be an absolute http(s) URL"));
        assert!(error(&[("IIB_DATABASE_URL", "mysql://db/iib")])
            .starts_with("setting IIB_DATABASE_URL: must start with sqlite:"));
        assert_eq!(
            error(&[("IIB_KAFKA_PROPERTIES", r#"{"linger.ms": [5]}"#)]),
            "setting IIB_KAFKA_PROPERTIES: the value of linger.ms must be a string, number or boolean"
        );
        assert!(error(&[("IIB_BINARY_IMAGE_CONFIG", r#"{"prod": "x"}"#)])
            .starts_with("setting IIB_BINARY_IMAGE_CONFIG: invalid type"));
        assert!(error(&[("IIB_AWS_S3_BUCKET_NAME", "iib")]).starts_with(
            "setting IIB_AWS_S3_BUCKET_NAME: the bucket is \"iib\" but AWS_ACCESS_KEY_ID"
        ));
    }

    #[test]
    fn a_malformed_secret_key_stops_start_up_without_echoing_it() {
        let err = error(&[("IIB_SECRET_KEY", "hunter2")]);
        assert!(
            err.starts_with("setting IIB_SECRET_KEY must be 32 random bytes"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let settings = Settings::from_pairs([(
            "IIB_SECRET_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )])
        .unwrap();
        assert!(settings.storage.secret_key.is_some());
    }

    #[test]
    fn empty_optional_settings_are_unset_everywhere() {
        let settings = Settings::from_pairs([
            ("IIB_REQUEST_LOGS_DIR", ""),
            ("IIB_REGISTRY", ""),
            ("IIB_KAFKA_BROKERS", ""),
            ("IIB_DATABASE_URL", ""),
        ])
        .unwrap();
        assert!(settings.artifacts.dirs.logs.is_none());
        assert!(settings.workers.request_logs_dir.is_none());
        assert!(!settings.api.links.logs_kept);
        assert!(settings.workers.registry.is_none());
        assert!(settings.kafka.is_none());
        assert!(settings.storage.embedded);
    }

    #[test]
    fn the_request_directories_feed_the_api_the_workers_and_the_purge() {
        let settings = Settings::from_pairs([
            ("IIB_REQUEST_LOGS_DIR", "/var/lib/iib/logs"),
            (
                "IIB_RECURSIVE_REQUEST_RELATED_BUNDLES_DIR",
                "/var/lib/iib/nested",
            ),
        ])
        .unwrap();
        assert!(settings.api.links.logs_kept);
        assert!(!settings.api.links.related_bundles_kept);
        assert_eq!(
            settings.workers.recursive_related_bundles_dir,
            Some("/var/lib/iib/nested".into())
        );
        assert_eq!(
            settings.storage.retention.dirs,
            vec![
                ("/var/lib/iib/logs".into(), ".log"),
                (
                    "/var/lib/iib/nested".into(),
                    "_recursive_related_bundles.json"
                )
            ]
        );
    }

    #[test]
    fn the_registry_settings_make_the_clients_options() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let settings = Settings::from_pairs([
            ("IIB_TOTAL_ATTEMPTS", "2"),
            ("IIB_RETRY_MULTIPLIER", "3"),
            ("IIB_INSECURE_REGISTRIES", r#"["registry.local:5000"]"#),
            ("IIB_DOCKER_CONFIG_TEMPLATE", docker.to_str().unwrap()),
            ("IIB_REGISTRY_MAX_LAYER_BYTES", "1000"),
        ])
        .unwrap();
        let options = settings.registry.client_options().unwrap();
        assert_eq!(options.retry.attempts, 2);
        assert_eq!(options.retry.multiplier, 3.0);
        assert_eq!(options.insecure_registries, vec!["registry.local:5000"]);
        assert_eq!(options.limits.max_layer_bytes, 1000);
        assert!(!format!("{:?}", options.credentials).contains("dXNlcjpwYXNz"));

        std::fs::write(&docker, "not json").unwrap();
        let err = settings.registry.client_options().unwrap_err();
        assert!(err.contains(docker.to_str().unwrap()), "{err}");

        // Without the setting, $HOME's Docker config, when there is one.
        let settings = Settings::from_pairs([("HOME", "/home/iib")]).unwrap();
        assert_eq!(
            settings.registry.docker_config,
            Some("/home/iib/.docker/config.json".into())
        );
        assert!(settings.registry.client_options().is_ok());
    }

    #[test]
    fn the_kafka_relay_is_on_with_brokers() {
        let settings = Settings::from_pairs([
            ("IIB_KAFKA_BROKERS", "kafka:9092"),
            (
                "IIB_KAFKA_PROPERTIES",
                r#"{"linger.ms": 5, "enable.idempotence": true}"#,
            ),
        ])
        .unwrap();
        let kafka = settings.kafka.unwrap();
        assert_eq!(kafka.brokers, "kafka:9092");
        assert_eq!(kafka.topics.build_state, "iib.build.state");
        assert_eq!(kafka.partitions, 3);
        assert_eq!(
            kafka.properties,
            vec![
                ("enable.idempotence".to_string(), "true".to_string()),
                ("linger.ms".to_string(), "5".to_string())
            ]
        );
    }

    #[test]
    fn unused_settings_that_were_set_are_named_and_shown() {
        let settings = Settings::from_pairs([
            ("IIB_REQUEST_LOGS_LEVEL", "INFO"),
            ("IIB_FORCE_OVERWRITE_FROM_INDEX", "true"),
        ])
        .unwrap();
        assert_eq!(
            settings.set_but_unused(),
            vec!["IIB_FORCE_OVERWRITE_FROM_INDEX", "IIB_REQUEST_LOGS_LEVEL"]
        );
        let entries = settings.entries();
        let otel = entries
            .iter()
            .find(|e| e.key == "IIB_REQUEST_LOGS_LEVEL")
            .unwrap();
        assert!(!otel.used);
        assert_eq!(otel.source, Origin::Environment);
    }

    #[test]
    fn iib_config_entries_mask_secrets_and_show_the_effective_database() {
        let settings = Settings::from_pairs([
            (
                "IIB_SECRET_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("IIB_DATABASE_URL", "postgres://iib:hunter2@db/iib"),
            ("IIB_KAFKA_PROPERTIES", r#"{"sasl.password": "hunter3"}"#),
        ])
        .unwrap();
        let json = show::to_json(&settings.entries()).to_string();
        let table = show::to_table(&settings.entries());
        for shown in [&json, &table] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(!shown.contains("MDEyMzQ1"), "{shown}");
            assert!(shown.contains("postgres://iib:*****@db/iib"), "{shown}");
        }
        let defaults = Settings::defaults().entries();
        let database = defaults
            .iter()
            .find(|e| e.key == "IIB_DATABASE_URL")
            .unwrap();
        assert_eq!(database.source, Origin::Default);
        assert!(database.value.as_str().unwrap().starts_with("sqlite://"));
    }
}
