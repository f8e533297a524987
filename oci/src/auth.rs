//! Registry credentials and challenges: anonymous, basic, and bearer tokens obtained from the
//! realm a `WWW-Authenticate` challenge names, per repository scope. Credentials come from a
//! Docker `config.json` (`auths.<registry>.auth` = base64 `user:password`) or a per-request
//! override (IIB's `overwrite_from_index_token`, `user:token`). Their `Debug` never shows them.

use base64::Engine;
use std::collections::BTreeMap;
use std::fmt;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, *****)", self.username)
    }
}

impl Credentials {
    /// `user:secret`, as IIB's tokens and Docker's `auth` entries are written.
    pub fn from_user_colon_secret(text: &str) -> Option<Self> {
        let (username, password) = text.split_once(':')?;
        Some(Self {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    /// The `Authorization: Basic …` header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Credentials per registry host, from a Docker `config.json`.
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    by_registry: BTreeMap<String, Credentials>,
}

impl CredentialStore {
    /// Reads the `auths` of a Docker `config.json` (the text, not a path: the caller reads
    /// the file). Entries without an `auth` are skipped; an `auth` that is not base64
    /// `user:password` is an error naming its registry.
    pub fn from_docker_config(json: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| format!("the Docker config is not JSON: {e}"))?;
        let mut by_registry = BTreeMap::new();
        if let Some(auths) = value.get("auths").and_then(|a| a.as_object()) {
            for (registry, entry) in auths {
                let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else {
                    continue;
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| {
                        format!("the auth of {registry} in the Docker config is not base64")
                    })?;
                let text = String::from_utf8(decoded).map_err(|_| {
                    format!("the auth of {registry} in the Docker config is not text")
                })?;
                let credentials = Credentials::from_user_colon_secret(&text)
                    .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
                let host = registry
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or(registry)
                    .to_string();
                by_registry.insert(host, credentials);
            }
        }
        Ok(Self { by_registry })
    }

    /// Adds `other`'s credentials, which win over ours for the same registry.
    pub fn extend(&mut self, other: CredentialStore) {
        self.by_registry.extend(other.by_registry);
    }

    /// Sets the credentials for `registry` (`host[:port]`).
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.by_registry.insert(registry.to_string(), credentials);
    }

    /// The credentials for `registry`; Docker Hub's are found under any of its names.
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.by_registry.get(registry).or_else(|| {
            // Docker Hub is filed under several names.
            (registry == "docker.io" || registry == "registry-1.docker.io")
                .then(|| self.by_registry.get("index.docker.io"))
                .flatten()
        })
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:ns/index:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:ns/index:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn docker_config_credentials_and_debug_hides_secrets() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");
        let store = CredentialStore::from_docker_config(&format!(
            r#"{{"auths": {{"https://quay.io": {{"auth": "{auth}"}}, "localhost:5000": {{"auth": "{auth}"}}}}}}"#
        ))
        .unwrap();
        let quay = store.get("quay.io").unwrap();
        assert_eq!(quay.username, "bob");
        assert!(store.get("localhost:5000").is_some());
        assert!(!format!("{quay:?}").contains("hunter2"));
        assert!(
            CredentialStore::from_docker_config(r#"{"auths": {"x": {"auth": "!!"}}}"#).is_err()
        );
        let token = Credentials::from_user_colon_secret("robot:tok:en").unwrap();
        assert_eq!(token.password, "tok:en");
    }
}
