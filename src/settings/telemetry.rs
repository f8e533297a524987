//! Logging (`IIB_LOG_FORMAT`, `IIB_LOG_LEVEL`) and OpenTelemetry traces (`IIB_OTEL_TRACING`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, as IIB names them).

use super::read::Reader;
use super::source::SettingsError;
use super::Environment;

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
    /// `IIB_OTEL_TRACING`: spans exported over OTLP; `None`: off (the default).
    pub traces: Option<TraceExport>,
}

/// Where and as whom spans are exported (OTLP over HTTP, protobuf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExport {
    /// The full URL spans are POSTed to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (as IIB builds it); `None`: the OTLP
    /// default, `http://localhost:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, else `iib`: the `service.name` of every span.
    pub service_name: String,
}

/// The service name when `OTEL_SERVICE_NAME` is not set.
const SERVICE_NAME: &str = "iib";

fn traces(r: &Reader, env: &Environment) -> Result<Option<TraceExport>, SettingsError> {
    // Read even when off, so that `iib config` and the declared-equals-read check agree.
    let on = r.flag("IIB_OTEL_TRACING")?;
    let base = r.optional_text("OTEL_EXPORTER_OTLP_ENDPOINT");
    let service_name = r.optional_text("OTEL_SERVICE_NAME");
    if !on {
        return Ok(None);
    }
    let endpoint = match (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), base) {
        (Some(full), _) => Some(checked_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", full)?),
        (None, Some(base)) if !base.trim().is_empty() => Some(format!(
            "{}/v1/traces",
            checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?.trim_end_matches('/')
        )),
        _ => None,
    };
    Ok(Some(TraceExport {
        endpoint,
        service_name: service_name
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| SERVICE_NAME.to_string()),
    }))
}

/// An `http://` or `https://` URL, trimmed.
fn checked_url(key: &str, value: &str) -> Result<String, SettingsError> {
    let value = value.trim();
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(value.to_string())
        }
        _ => Err(SettingsError::Malformed {
            key: key.into(),
            expected: "an http:// or https:// URL (OTLP over HTTP)",
            value: value.to_string(),
        }),
    }
}

pub(super) fn read(r: &Reader, env: &Environment) -> Result<TelemetrySettings, SettingsError> {
    let format = if r.text("IIB_LOG_FORMAT")?.eq_ignore_ascii_case("json") {
        LogFormat::Json
    } else {
        LogFormat::Pretty
    };
    Ok(TelemetrySettings {
        format,
        filter: filter(&r.text("IIB_LOG_LEVEL")?)?,
        traces: traces(r, env)?,
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
    use crate::settings::Settings;

    fn traces_of(pairs: &[(&str, &str)]) -> Option<TraceExport> {
        Settings::from_pairs(pairs.iter().copied())
            .unwrap()
            .telemetry
            .traces
    }

    #[test]
    fn traces_are_off_unless_asked_and_the_endpoint_is_iibs() {
        assert_eq!(
            traces_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
            None
        );
        assert_eq!(
            traces_of(&[
                ("IIB_OTEL_TRACING", "true"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "iib-api"),
            ]),
            Some(TraceExport {
                endpoint: Some("http://collector:4318/v1/traces".into()),
                service_name: "iib-api".into(),
            })
        );
        assert_eq!(
            traces_of(&[
                ("IIB_OTEL_TRACING", "true"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://tempo/otlp/traces"
                ),
            ]),
            Some(TraceExport {
                endpoint: Some("https://tempo/otlp/traces".into()),
                service_name: "iib".into(),
            })
        );
        assert_eq!(
            traces_of(&[("IIB_OTEL_TRACING", "true")]).unwrap().endpoint,
            None
        );
        let err = Settings::from_pairs([
            ("IIB_OTEL_TRACING", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with(
                "setting OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL"
            ),
            "{err}"
        );
    }

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
