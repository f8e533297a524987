//! Logging: `IIB_LOG_FORMAT` and `IIB_LOG_LEVEL`.

use super::read::Reader;
use super::source::SettingsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object a line, for collectors.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `IIB_LOG_FORMAT`: `json`, else pretty. IIB's value is a Python logging format string;
    /// one carried over from IIB is accepted and logs pretty.
    pub format: LogFormat,
    /// `IIB_LOG_LEVEL` as a `tracing` filter (`RUST_LOG`, when set, wins).
    pub filter: String,
}

pub(super) fn read(r: &Reader) -> Result<TelemetrySettings, SettingsError> {
    let format = if r.text("IIB_LOG_FORMAT")?.eq_ignore_ascii_case("json") {
        LogFormat::Json
    } else {
        LogFormat::Pretty
    };
    Ok(TelemetrySettings {
        format,
        filter: filter(&r.text("IIB_LOG_LEVEL")?)?,
    })
}

/// IIB's (Python's) level names, `tracing`'s, or a `tracing` filter such as `info,iib=debug`.
fn filter(level: &str) -> Result<String, SettingsError> {
    let lower = level.trim().to_ascii_lowercase();
    let level = match lower.as_str() {
        "trace" | "debug" | "info" | "error" | "off" => lower.clone(),
        "warn" | "warning" => "warn".into(),
        "critical" | "fatal" => "error".into(),
        directives
            if (directives.contains('=') || directives.contains(','))
                && tracing_subscriber::EnvFilter::try_new(directives).is_ok() =>
        {
            directives.to_string()
        }
        _ => {
            return Err(SettingsError::Malformed {
                key: "IIB_LOG_LEVEL".into(),
                expected: "DEBUG, INFO, WARNING, ERROR or CRITICAL (or a tracing filter such as info,iib=debug)",
                value: level.to_string(),
            })
        }
    };
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iibs_level_names_map_to_tracing_and_others_are_refused() {
        assert_eq!(filter("INFO").unwrap(), "info");
        assert_eq!(filter("WARNING").unwrap(), "warn");
        assert_eq!(filter("WARN").unwrap(), "warn");
        assert_eq!(filter("CRITICAL").unwrap(), "error");
        assert_eq!(filter("info,iib=debug").unwrap(), "info,iib=debug");
        let err = filter("LOUD").unwrap_err().to_string();
        assert!(
            err.starts_with("setting IIB_LOG_LEVEL must be DEBUG, INFO"),
            "{err}"
        );
    }
}
