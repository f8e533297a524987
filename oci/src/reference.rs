//! Image references (pull specs): `[registry[:port]/]repository[:tag][@digest]`, parsed as the
//! Docker distribution grammar does, with Docker Hub's short names (`busybox` is
//! `docker.io/library/busybox:latest`).

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry of references without one (`busybox`).
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API really lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// An image reference; parse one with [`str::parse`]. Its `Display` is the full form:
/// registry and repository, then the digest if there is one, else the tag
/// (`docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, e.g. `quay.io`, `localhost:5000`, `docker.io`.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`, `ns/index`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// A text that is not a valid image reference, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?} is not a valid image reference: {reason}")]
pub struct ReferenceError {
    pub spec: String,
    pub reason: String,
}

fn valid_component(c: &str) -> bool {
    // lowercase alphanumerics, separated by one of `.`, `_`, `__`, `-`+
    !c.is_empty()
        && c.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => (host, Some(port)),
        _ => (h, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ReferenceError {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if spec.is_empty() || spec.len() > 4096 {
            return Err(fail("it is empty or too long"));
        }
        let (name_and_tag, digest) = match spec.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(digest.parse::<Digest>().map_err(|e| fail(&e.to_string()))?),
            ),
            None => (spec, None),
        };
        // A tag is what follows the last `:` after the last `/`.
        let last_slash = name_and_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(name_and_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_and_tag, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(fail(&format!("the tag {tag:?} is not valid")));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(fail(&format!("the registry {first:?} is not valid")));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !repository.split('/').all(valid_component) {
            return Err(fail(&format!(
                "the repository {repository:?} is not valid (lowercase letters, digits and . _ - between them)"
            )));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The host:port the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository at `digest` (`registry/repo@sha256:...`).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// Whether the registry is on this machine (plain HTTP is allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            if self.digest.is_none() {
                write!(f, ":{tag}")?;
            }
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn docker_hub_short_names_expand() {
        let r = parse("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(parse("bitnami/nginx:1.2").repository, "bitnami/nginx");
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let r = parse("localhost:5000/ns/index:v4.18");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "ns/index");
        assert_eq!(r.tag.as_deref(), Some("v4.18"));
        assert!(r.is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("quay.io/ns/repo@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), d);
        assert_eq!(r.to_string(), format!("quay.io/ns/repo@{d}"));
        assert!(!r.is_loopback());
        let r = parse(&format!("127.0.0.1:5000/a/b:t@{d}"));
        assert_eq!(r.target(), d, "the digest wins");
        assert!(r.is_loopback());
    }

    #[test]
    fn bad_references_say_why() {
        for bad in [
            "",
            "UPPER/case:1",
            "quay.io/ns/repo:",
            "quay.io/ns/repo@sha256:zz",
            "a//b",
            "quay.io/ns/re po:1",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(
                err.to_string().contains("is not a valid image reference"),
                "{bad}: {err}"
            );
        }
    }
}
