//! The keys of IIB's request JSON that depend on where the service is reached and how it is
//! configured: `logs`, `related_bundles`, `nested_bundles` (each `{expiration, url}`) and
//! `deprecation_schema_url`. The read model stores the JSON without them.

use chrono::{DateTime, NaiveDateTime, Utc};
use iib_projections::render::Json;
use iib_projections::timestamp::iib_timestamp;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Request logs are kept (locally or in S3): `logs` appears in the verbose form.
    pub logs_kept: bool,
    /// Related bundles are kept: `related_bundles` appears for regenerate-bundle.
    pub related_bundles_kept: bool,
    pub days_to_live: i64,
}

impl LinkConfig {
    /// When a request's data expires: its last state change plus the days to live.
    pub fn expiration(&self, updated: DateTime<Utc>) -> DateTime<Utc> {
        updated + chrono::Duration::days(self.days_to_live)
    }

    /// Adds the link keys IIB shows for this request to its stored JSON.
    pub fn add_links(&self, request: &mut Json, base_url: &str, verbose: bool) {
        let (Some(id), Some(request_type)) = (
            request.get("id").and_then(Value::as_u64),
            request
                .get("request_type")
                .and_then(Value::as_str)
                .map(str::to_string),
        ) else {
            return;
        };
        let expiration = request
            .get("updated")
            .and_then(Value::as_str)
            .and_then(parse_iib_timestamp)
            .map(|updated| iib_timestamp(&self.expiration(updated)));
        let link = |path: &str| {
            json!({
                "expiration": expiration,
                "url": format!("{base_url}/api/v1/builds/{id}/{path}"),
            })
        };
        if verbose && self.logs_kept {
            request.insert("logs".into(), link("logs"));
        }
        match request_type.as_str() {
            "regenerate-bundle" if self.related_bundles_kept => {
                request.insert("related_bundles".into(), link("related_bundles"));
            }
            "recursive-related-bundles" => {
                request.insert("nested_bundles".into(), link("nested-bundles"));
            }
            "add-deprecations" => {
                request.insert(
                    "deprecation_schema_url".into(),
                    json!(format!("{base_url}/api/v1/builds/{id}/deprecation-schema")),
                );
            }
            _ => {}
        }
    }

    /// Whether any link key could apply to a request of this type.
    pub fn has_links(&self, request_type: &str, verbose: bool) -> bool {
        (verbose && self.logs_kept)
            || matches!(
                request_type,
                "recursive-related-bundles" | "add-deprecations"
            )
            || (request_type == "regenerate-bundle" && self.related_bundles_kept)
    }
}

/// Reads IIB's own timestamp format back (`2020-02-12T17:03:00Z`, with or without fraction).
pub fn parse_iib_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let naive = text.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(logs: bool, related: bool) -> LinkConfig {
        LinkConfig {
            logs_kept: logs,
            related_bundles_kept: related,
            days_to_live: 3,
        }
    }

    fn request(request_type: &str) -> Json {
        json!({"id": 1, "request_type": request_type, "updated": "2020-02-12T17:03:00Z"})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn logs_show_in_the_verbose_form_when_kept() {
        let mut r = request("add");
        links(true, false).add_links(&mut r, "http://localhost", true);
        assert_eq!(
            r["logs"],
            json!({"expiration": "2020-02-15T17:03:00Z", "url": "http://localhost/api/v1/builds/1/logs"})
        );
        let mut r = request("add");
        links(true, false).add_links(&mut r, "http://localhost", false);
        assert!(!r.contains_key("logs"));
        let mut r = request("add");
        links(false, false).add_links(&mut r, "http://localhost", true);
        assert!(!r.contains_key("logs"));
    }

    #[test]
    fn type_specific_links_follow_iibs_conditions() {
        let mut r = request("regenerate-bundle");
        links(false, true).add_links(&mut r, "https://iib.example.com", false);
        assert_eq!(
            r["related_bundles"]["url"],
            "https://iib.example.com/api/v1/builds/1/related_bundles"
        );
        let mut r = request("recursive-related-bundles");
        links(false, false).add_links(&mut r, "http://h", false);
        assert_eq!(
            r["nested_bundles"]["url"],
            "http://h/api/v1/builds/1/nested-bundles"
        );
        let mut r = request("add-deprecations");
        links(false, false).add_links(&mut r, "http://h", false);
        assert_eq!(
            r["deprecation_schema_url"],
            "http://h/api/v1/builds/1/deprecation-schema"
        );
    }

    #[test]
    fn iib_timestamps_parse_back() {
        assert!(parse_iib_timestamp("2020-02-12T17:03:00Z").is_some());
        assert_eq!(
            iib_timestamp(&parse_iib_timestamp("2020-02-12T17:03:00.000123Z").unwrap()),
            "2020-02-12T17:03:00.000123Z"
        );
        assert!(parse_iib_timestamp("yesterday").is_none());
    }
}
