//! The registry client's options from the service's settings: IIB's worker retry settings,
//! insecure registries, the Docker config holding registry credentials, and the caps on
//! registry reads. `iib-oci` reads no settings itself; this is where they reach it.

use crate::config::Config;
use iib_oci::auth::CredentialStore;
use iib_oci::client::{ClientOptions, LimitNames, ReadLimits, RetryPolicy};
use std::time::Duration;

/// IIB's worker settings: `IIB_TOTAL_ATTEMPTS`, `IIB_RETRY_DELAY`, `IIB_RETRY_JITTER`,
/// `IIB_RETRY_MULTIPLIER` (seconds), `IIB_INSECURE_REGISTRIES`, the Docker config at
/// `IIB_DOCKER_CONFIG_TEMPLATE` (default `~/.docker/config.json`, if present), and
/// `IIB_REGISTRY_MAX_{MANIFEST,LAYER,IMAGE}_BYTES`, which errors name when a registry's answer
/// passes them.
pub fn client_options(config: &Config) -> Result<ClientOptions, String> {
    let seconds = |key: &str, default: i64| {
        Duration::from_secs(config.integer(key).unwrap_or(default).max(0) as u64)
    };
    let defaults = ReadLimits::default();
    let bytes = |key: &str, default: u64| match config.integer(key) {
        None => Ok(default),
        Some(n) if n > 0 => Ok(n as u64),
        Some(n) => Err(format!(
            "setting {key} must be a positive number of bytes, got {n}"
        )),
    };
    let docker_config = config
        .text("IIB_DOCKER_CONFIG_TEMPLATE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker/config.json"))
        });
    let credentials = match docker_config {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the Docker config {}: {e}", path.display()))?;
            CredentialStore::from_docker_config(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        _ => CredentialStore::default(),
    };
    Ok(ClientOptions {
        retry: RetryPolicy {
            attempts: config.integer("IIB_TOTAL_ATTEMPTS").unwrap_or(5).max(1) as u32,
            delay: seconds("IIB_RETRY_DELAY", 10),
            multiplier: config.integer("IIB_RETRY_MULTIPLIER").unwrap_or(5).max(1) as f64,
            jitter: seconds("IIB_RETRY_JITTER", 10),
            max_delay: Duration::from_secs(120),
        },
        timeout: None,
        insecure_registries: config.strings("IIB_INSECURE_REGISTRIES"),
        credentials,
        limits: ReadLimits {
            max_manifest_bytes: bytes(
                "IIB_REGISTRY_MAX_MANIFEST_BYTES",
                defaults.max_manifest_bytes,
            )?,
            max_layer_bytes: bytes("IIB_REGISTRY_MAX_LAYER_BYTES", defaults.max_layer_bytes)?,
            max_image_bytes: bytes("IIB_REGISTRY_MAX_IMAGE_BYTES", defaults.max_image_bytes)?,
            names: LimitNames {
                manifest: "IIB_REGISTRY_MAX_MANIFEST_BYTES",
                layer: "IIB_REGISTRY_MAX_LAYER_BYTES",
            },
        },
    })
}
