//! `iib`: IIB's API and workers, re-implemented. This library holds the adapters and wiring
//! around the pure domain (`iib-aggregates`) and read models (`iib-projections`); `main.rs`
//! is the command line.

pub mod api;
pub mod artifacts;
pub mod background;
pub mod bench;
pub mod blocking;
pub mod catalog;
pub mod catalog_cli;
pub mod command_bus;
/// The raw settings under their old name, for `registry::ClientOptions::from_config` alone
/// until the registry moves to its own crate; everything else takes `settings::Settings`.
pub mod config {
    pub use crate::settings::source::{Config, SettingsError as ConfigError};
}
pub mod projector;
pub mod registry;
pub mod replay;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod streaming;
pub mod telemetry;
pub mod workers;
