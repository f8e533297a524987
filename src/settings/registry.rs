//! Registries: IIB's retry settings (`IIB_TOTAL_ATTEMPTS`, `IIB_RETRY_DELAY`,
//! `IIB_RETRY_JITTER`, `IIB_RETRY_MULTIPLIER`, seconds), `IIB_INSECURE_REGISTRIES`, the Docker
//! config with the service's credentials (`IIB_DOCKER_CONFIG_TEMPLATE`, default
//! `~/.docker/config.json` if present) and the caps on what is read from a registry
//! (`IIB_REGISTRY_MAX_*_BYTES`).

use super::read::Reader;
use super::source::SettingsError;
use super::Environment;
use iib_oci::auth::CredentialStore;
use iib_oci::client::{ClientOptions, LimitNames, ReadLimits, RetryPolicy};
use std::path::PathBuf;
use std::time::Duration;

/// An hour, in seconds: the longest first retry delay or jitter that makes sense.
const HOUR_SECONDS: i64 = 3_600;

#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// `IIB_TOTAL_ATTEMPTS`: tries of one registry call, the first included.
    pub total_attempts: u32,
    /// `IIB_RETRY_DELAY`: the first wait before a retry.
    pub retry_delay: Duration,
    /// `IIB_RETRY_JITTER`: at most this much is added to each wait at random.
    pub retry_jitter: Duration,
    /// `IIB_RETRY_MULTIPLIER`: each wait is this many times the one before.
    pub retry_multiplier: u32,
    /// `IIB_INSECURE_REGISTRIES`: `host[:port]` spoken to over plain HTTP (besides loopback).
    pub insecure_registries: Vec<String>,
    /// The Docker config file read for the service's own credentials, if there is one to
    /// look for (`IIB_DOCKER_CONFIG_TEMPLATE`, else `$HOME/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// `IIB_REGISTRY_MAX_MANIFEST_BYTES`, `IIB_REGISTRY_MAX_LAYER_BYTES`,
    /// `IIB_REGISTRY_MAX_IMAGE_BYTES`.
    pub limits: ReadLimits,
}

pub(super) fn read(r: &Reader, env: &Environment) -> Result<RegistrySettings, SettingsError> {
    let seconds = |key: &str| -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(r.between::<u64>(
            key,
            0,
            HOUR_SECONDS,
            "",
        )?))
    };
    let docker_config = r.optional_path("IIB_DOCKER_CONFIG_TEMPLATE").or_else(|| {
        env.get("HOME")
            .map(|home| PathBuf::from(home).join(".docker/config.json"))
    });
    Ok(RegistrySettings {
        total_attempts: r.at_least::<u32>("IIB_TOTAL_ATTEMPTS", 1)?,
        retry_delay: seconds("IIB_RETRY_DELAY")?,
        retry_jitter: seconds("IIB_RETRY_JITTER")?,
        retry_multiplier: r.at_least::<u32>("IIB_RETRY_MULTIPLIER", 1)?,
        insecure_registries: r.strings("IIB_INSECURE_REGISTRIES")?,
        docker_config,
        limits: ReadLimits {
            max_manifest_bytes: r.at_least::<u64>("IIB_REGISTRY_MAX_MANIFEST_BYTES", 1)?,
            max_layer_bytes: r.at_least::<u64>("IIB_REGISTRY_MAX_LAYER_BYTES", 1)?,
            max_image_bytes: r.at_least::<u64>("IIB_REGISTRY_MAX_IMAGE_BYTES", 1)?,
            names: LimitNames {
                manifest: "IIB_REGISTRY_MAX_MANIFEST_BYTES",
                layer: "IIB_REGISTRY_MAX_LAYER_BYTES",
            },
        },
    })
}

impl RegistrySettings {
    /// The registry client's options; reads the Docker config file when there is one.
    pub fn client_options(&self) -> Result<ClientOptions, String> {
        let credentials = match &self.docker_config {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "cannot read the Docker config {} (IIB_DOCKER_CONFIG_TEMPLATE): {e}",
                        path.display()
                    )
                })?;
                CredentialStore::from_docker_config(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            _ => CredentialStore::default(),
        };
        Ok(ClientOptions {
            retry: RetryPolicy {
                attempts: self.total_attempts,
                delay: self.retry_delay,
                multiplier: f64::from(self.retry_multiplier),
                jitter: self.retry_jitter,
                max_delay: Duration::from_secs(120),
            },
            timeout: None,
            insecure_registries: self.insecure_registries.clone(),
            credentials,
            limits: self.limits,
        })
    }
}
