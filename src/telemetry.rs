//! Logging with `tracing`: pretty for people, JSON for collectors (`IIB_LOG_FORMAT`), at
//! `IIB_LOG_LEVEL` unless `RUST_LOG` says otherwise. Nothing logs a secret: secrets are
//! typed (`store::Secret`) and their `Debug` prints `*****`.

use crate::settings::{LogFormat, TelemetrySettings};
use tracing_subscriber::EnvFilter;

pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The AWS SDK warns at every client it builds that its HTTP client will change in
        // its next major version; that is a note for us, not for operators.
        EnvFilter::new(format!(
            "{},aws_smithy_runtime::client::defaults=error",
            settings.filter
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
