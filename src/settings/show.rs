//! `iib config`: every setting with its effective value and where the value came from, secrets
//! masked, as a table for people or JSON for tools.

use super::source::{declared, Origin};
use super::Settings;
use serde_json::{json, Map, Value};

/// What a masked secret shows instead.
pub const MASK: &str = "*****";

/// Settings whose whole value is a secret.
const SECRET_SETTINGS: &[&str] = &["IIB_SECRET_KEY"];

/// Parts of a key (a librdkafka property, a URL query parameter, a JSON object key) that say
/// its value is a secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "private",
    "jaas",
    "apikey",
    "api_key",
    "api.key",
    "key.pem",
    "ssl_key",
    "oauthbearer.config",
];

/// Whether a key names a secret (case does not matter).
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// One setting as `iib config` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub key: &'static str,
    /// The effective value, secrets masked; `null` when unset.
    pub value: Value,
    pub source: Origin,
    /// `false`: accepted for IIB compatibility, not acted on.
    pub used: bool,
}

impl Settings {
    /// Every declared setting, in declaration order, secrets masked.
    pub fn entries(&self) -> Vec<Entry> {
        declared()
            .map(|setting| {
                let mut value = self.source.get(setting.key).cloned().unwrap_or(Value::Null);
                // The effective database is the embedded one when none is given.
                if setting.key == "IIB_DATABASE_URL" {
                    value = Value::String(self.storage.database_url.clone());
                }
                Entry {
                    key: setting.key,
                    value: mask(setting.key, value),
                    source: self.source.origin(setting.key),
                    used: setting.used,
                }
            })
            .collect()
    }
}

/// A setting's value with its secrets masked: the whole value of a secret setting, the
/// password of any URL, the values of object keys and URL query parameters that name secrets.
pub fn mask(key: &str, value: Value) -> Value {
    if SECRET_SETTINGS.contains(&key) {
        return match value {
            Value::String(s) if s.is_empty() => Value::String(s),
            Value::Null => Value::Null,
            _ => Value::String(MASK.into()),
        };
    }
    mask_value(value)
}

fn mask_value(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(mask_url(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_value).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if looks_secret(&k) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        mask_value(v)
                    };
                    (k, v)
                })
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// `scheme://user:password@host/…?password=…` with the password and secret-named query
/// parameters masked; text that is not such a URL is returned as it is. The user part ends at
/// the last `@` before the query, so a password holding `/` or `@` is masked whole (a path
/// holding `@` may be masked too: better too much than too little).
pub fn mask_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &text[rest_start..];
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let mut out = text[..rest_start].to_string();
    match rest[..query_start].rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) if !user.contains('/') => out.push_str(&format!("{user}:{MASK}")),
                Some(_) => out.push_str(MASK),
                None => out.push_str(&rest[..at]),
            }
            out.push_str(&rest[at..query_start]);
        }
        None => out.push_str(&rest[..query_start]),
    }
    let tail = &rest[query_start..];
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.strip_prefix('?') {
        Some(query) => {
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if looks_secret(name) => format!("{name}={MASK}"),
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

/// The entries as a JSON object keyed by setting.
pub fn to_json(entries: &[Entry]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|e| {
                (
                    e.key.to_string(),
                    json!({"value": e.value, "source": e.source, "used": e.used}),
                )
            })
            .collect(),
    )
}

/// The entries as an aligned table: setting, value, source (and a note for unused ones).
pub fn to_table(entries: &[Entry]) -> String {
    let shown = |value: &Value| match value {
        Value::Null => "(unset)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<(&str, String, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.key,
                shown(&e.value),
                e.source.as_str(),
                if e.used {
                    ""
                } else {
                    "accepted for IIB compatibility, not used"
                },
            )
        })
        .collect();
    let key_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(7);
    let value_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 60);
    let mut out = format!(
        "{:key_width$}  {:value_width$}  SOURCE\n",
        "SETTING", "VALUE"
    );
    for (key, value, source, note) in rows {
        let line = format!("{key:key_width$}  {value:value_width$}  {source:11}  {note}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_is_masked_whole() {
        assert_eq!(
            mask(
                "IIB_SECRET_KEY",
                json!("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
            ),
            json!(MASK)
        );
        assert_eq!(mask("IIB_SECRET_KEY", Value::Null), Value::Null);
    }

    #[test]
    fn a_database_url_keeps_its_user_and_host_but_not_its_password() {
        assert_eq!(
            mask(
                "IIB_DATABASE_URL",
                json!("postgres://iib:hunter2@db.example.com:5432/iib")
            ),
            json!("postgres://iib:*****@db.example.com:5432/iib")
        );
        assert_eq!(
            mask(
                "IIB_DATABASE_URL",
                json!("postgres://db.example.com/iib?user=iib&password=hunter2&sslmode=require")
            ),
            json!("postgres://db.example.com/iib?user=iib&password=*****&sslmode=require")
        );
        assert_eq!(
            mask("IIB_DATABASE_URL", json!("postgres://iib@db/iib")),
            json!("postgres://iib@db/iib")
        );
        assert_eq!(
            mask("IIB_DATABASE_URL", json!("sqlite://./data/iib.db")),
            json!("sqlite://./data/iib.db")
        );
        // An @ or / in the password does not leak any of it.
        assert_eq!(
            mask_url("postgres://iib:p@ss@db/iib"),
            "postgres://iib:*****@db/iib"
        );
        assert_eq!(
            mask_url("postgres://iib:pa/ss@db/iib"),
            "postgres://iib:*****@db/iib"
        );
        assert_eq!(
            mask_url("https://host/a?token=t#frag"),
            "https://host/a?token=*****#frag"
        );
    }

    #[test]
    fn kafka_properties_naming_secrets_are_masked() {
        let masked = mask(
            "IIB_KAFKA_PROPERTIES",
            json!({
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "iib",
                "sasl.password": "hunter2",
                "ssl.key.password": "hunter3",
                "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
                "sasl.oauthbearer.client.secret": "s3cr3t",
                "sasl.jaas.config": "… password=\"x\";",
                "linger.ms": 5
            }),
        );
        assert_eq!(
            masked,
            json!({
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "iib",
                "sasl.password": MASK,
                "ssl.key.password": MASK,
                "ssl.key.pem": MASK,
                "sasl.oauthbearer.client.secret": MASK,
                "sasl.jaas.config": MASK,
                "linger.ms": 5
            })
        );
    }

    #[test]
    fn urls_anywhere_lose_their_passwords_and_plain_values_stay() {
        assert_eq!(
            mask(
                "IIB_INDEX_TO_GITLAB_PUSH_MAP",
                json!({"quay.io/ns/index": "https://bot:glpat-xyz@gitlab.example.com/ns/catalog.git"})
            ),
            json!({"quay.io/ns/index": "https://bot:*****@gitlab.example.com/ns/catalog.git"})
        );
        assert_eq!(
            mask("IIB_REGISTRY", json!("registry.example.com")),
            json!("registry.example.com")
        );
        assert_eq!(mask("IIB_MAX_PER_PAGE", json!(20)), json!(20));
    }
}
