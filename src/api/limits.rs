//! What the API accepts, bounded in one place, before any validation or storage.
//!
//! Everything a POST or PATCH body carries ends up in events, read-model rows, Kafka messages
//! and answers, on SQLite or PostgreSQL, and must come back out of each of them. A body is
//! refused with a clear 400 here when it could not: nesting deeper than a stored event can be
//! read back (serde_json stops at 128 levels, and an event wraps the body in a few more), a
//! NUL character (PostgreSQL's `text` refuses it), control characters in pull specs, names
//! and tags (they have no meaning there and break logs and terminals), strings and lists
//! larger than any real request needs. IIB has no such limits; its own messages are kept for
//! everything it does check (`validate`).

use crate::api::error::ApiError;
use serde_json::Value;

/// The limits, from the settings (`crate::settings` reads and checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `IIB_MAX_JSON_DEPTH`: how deeply arrays and objects may nest (the body itself is 1).
    pub max_depth: usize,
    /// `IIB_MAX_LIST_ITEMS`: items in one array, or keys in one object.
    pub max_items: usize,
    /// `IIB_MAX_STRING_BYTES`: bytes in one string or object key.
    pub max_string_bytes: usize,
    /// `IIB_MAX_BATCH_REQUESTS`: build requests in one batch.
    pub max_batch_requests: usize,
}

/// Keys whose string values are free text, where tabs and line breaks are fine (a deprecation
/// schema is a JSON or YAML document; a worker's `state_reason` may span lines); every other
/// string is a pull spec, a name, a tag or a token.
const FREE_TEXT_KEYS: &[&str] = &["deprecation_schema", "state_reason"];

/// Keys whose whole value is the submitter's own data (any JSON), where free text is fine.
const FREE_JSON_KEYS: &[&str] = &["annotations"];

impl Limits {
    /// Checks a parsed body; the error names the first offending field and the setting that
    /// bounds it.
    pub fn check(&self, body: &Value) -> Result<(), ApiError> {
        self.walk(body, &mut Vec::new(), 1, false)
    }

    fn walk<'a>(
        &self,
        value: &'a Value,
        path: &mut Vec<&'a str>,
        depth: usize,
        free_text: bool,
    ) -> Result<(), ApiError> {
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
            Value::String(text) => self.text(text, path, free_text),
            Value::Array(items) => {
                self.container(depth, items.len(), path)?;
                for item in items {
                    self.walk(item, path, depth + 1, free_text)?;
                }
                Ok(())
            }
            Value::Object(map) => {
                self.container(depth, map.len(), path)?;
                for (key, item) in map {
                    self.text(key, path, true)?;
                    path.push(key);
                    let free = free_text
                        || FREE_JSON_KEYS.contains(&key.as_str())
                        || (FREE_TEXT_KEYS.contains(&key.as_str()) && item.is_string());
                    self.walk(item, path, depth + 1, free)?;
                    path.pop();
                }
                Ok(())
            }
        }
    }

    fn container(&self, depth: usize, len: usize, path: &[&str]) -> Result<(), ApiError> {
        if depth > self.max_depth {
            return Err(ApiError::bad_request(format!(
                "{} nests arrays and objects deeper than {} levels (IIB_MAX_JSON_DEPTH)",
                field(path),
                self.max_depth
            )));
        }
        if len > self.max_items {
            return Err(ApiError::bad_request(format!(
                "{} has {len} items; at most {} are allowed (IIB_MAX_LIST_ITEMS)",
                field(path),
                self.max_items
            )));
        }
        Ok(())
    }

    fn text(&self, text: &str, path: &[&str], free_text: bool) -> Result<(), ApiError> {
        if text.len() > self.max_string_bytes {
            return Err(ApiError::bad_request(format!(
                "{} holds a string of {} bytes; at most {} are allowed (IIB_MAX_STRING_BYTES)",
                field(path),
                text.len(),
                self.max_string_bytes
            )));
        }
        let refused = |c: char| {
            c == '\0' || (c.is_control() && !(free_text && matches!(c, '\t' | '\n' | '\r')))
        };
        if let Some(c) = text.chars().find(|c| refused(*c)) {
            return Err(ApiError::bad_request(format!(
                "{} contains the control character U+{:04X}; remove it",
                field(path),
                c as u32
            )));
        }
        Ok(())
    }

    /// A batch's `build_requests`, bounded on their own: each one becomes a request.
    pub fn check_batch(&self, requests: usize) -> Result<(), ApiError> {
        if requests > self.max_batch_requests {
            return Err(ApiError::bad_request(format!(
                "The \"build_requests\" value has {requests} items; at most {} are allowed in one batch (IIB_MAX_BATCH_REQUESTS): split it into several batches",
                self.max_batch_requests
            )));
        }
        Ok(())
    }
}

/// How an error names where it found a problem: `The "bundles" value`, or `The body`.
fn field(path: &[&str]) -> String {
    match path.first() {
        None => "The body".to_string(),
        Some(_) => format!("The \"{}\" value", path.join(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The limits IIB_MAX_* give by default.
    fn defaults() -> Limits {
        crate::settings::Settings::defaults().api.limits
    }

    fn nested(depth: usize) -> Value {
        let mut value = json!("leaf");
        for _ in 0..depth {
            value = json!([value]);
        }
        value
    }

    #[test]
    fn nesting_is_bounded_everywhere_with_the_field_named() {
        let limits = defaults();
        assert!(limits.check(&json!({"annotations": nested(30)})).is_ok());
        let error = limits
            .check(&json!({"annotations": {"a": nested(40)}}))
            .unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error
                .message
                .starts_with("The \"annotations.a\" value nests"),
            "{}",
            error.message
        );
        assert!(limits.check(&nested(33)).is_err());
    }

    #[test]
    fn nul_is_refused_everywhere_and_control_characters_outside_free_text() {
        let limits = defaults();
        let error = limits
            .check(&json!({"bundles": ["quay.io/a/b:1\u{0}"]}))
            .unwrap_err();
        assert_eq!(
            error.message,
            "The \"bundles\" value contains the control character U+0000; remove it"
        );
        assert!(limits
            .check(&json!({"annotations": {"k": "a\u{0}"}}))
            .is_err());
        assert!(limits
            .check(&json!({"annotations": {"k\u{0}": 1}}))
            .is_err());
        assert!(limits.check(&json!({"from_index": "a\nb:1"})).is_err());
        assert!(limits.check(&json!({"from_index": "a\u{85}b:1"})).is_err());
        assert!(limits
            .check(&json!({"annotations": {"note": "two\nlines\ttab"}}))
            .is_ok());
        assert!(limits
            .check(&json!({"deprecation_schema": "{\n\"schema\": 1}"}))
            .is_ok());
        // A key named like a free-text one does not make its nested strings free.
        assert!(limits.check(&json!({"state_reason": ["a\nb"]})).is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        let limits = Limits {
            max_items: 3,
            max_string_bytes: 8,
            ..defaults()
        };
        assert!(limits.check(&json!({"bundles": ["a", "b", "c"]})).is_ok());
        let error = limits
            .check(&json!({"bundles": ["a", "b", "c", "d"]}))
            .unwrap_err();
        assert_eq!(
            error.message,
            "The \"bundles\" value has 4 items; at most 3 are allowed (IIB_MAX_LIST_ITEMS)"
        );
        assert!(limits.check(&json!({"from_index": "123456789"})).is_err());
        assert!(limits.check(&json!({"123456789": 1})).is_err());
        assert!(limits.check_batch(200).is_ok());
        assert!(defaults().check_batch(201).is_err());
    }
}
