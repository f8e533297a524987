//! `iib`: IIB's API and workers, re-implemented. This library holds the adapters and wiring
//! around the pure domain (`iib-aggregates`), the read models (`iib-projections`) and the
//! catalog engine (`iib-fbc`) and the registry and image library (`iib-oci`); `main.rs` is the
//! command line.

pub mod api;
pub mod artifacts;
pub mod background;
pub mod bench;
pub mod blocking;
pub mod catalog_cli;
pub mod command_bus;
pub mod metrics;
pub mod projector;
pub mod replay;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod streaming;
pub mod telemetry;
pub mod wakeups;
pub mod workers;
