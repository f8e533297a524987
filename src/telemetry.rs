//! Logging with `tracing`: pretty for people, JSON for collectors (`IIB_LOG_FORMAT`), at
//! `IIB_LOG_LEVEL` unless `RUST_LOG` says otherwise. Nothing logs a secret: secrets are
//! typed (`store::Secret`) and their `Debug` prints `*****`.

use tracing_subscriber::EnvFilter;

pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The AWS SDK warns at every client it builds that its HTTP client will change in
        // its next major version; that is a note for us, not for operators.
        EnvFilter::new(format!(
            "{},aws_smithy_runtime::client::defaults=error",
            level.to_ascii_lowercase()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if format.eq_ignore_ascii_case("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
