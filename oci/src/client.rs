//! The registry client: the OCI distribution API (and Docker registry v2) over HTTPS, or plain
//! HTTP for loopback registries and those [`ClientOptions::insecure_registries`] names. Every
//! call has a timeout; connection errors, 429 and 5xx are retried as the [`RetryPolicy`] says;
//! `401` challenges are answered with basic credentials or a bearer token for the repository
//! scope (tokens are cached per registry, scope and credentials). Every answer is read within
//! the [`ReadLimits`].

use crate::auth::{parse_challenge, Challenge, CredentialStore, Credentials};
use crate::digest::Digest;
use crate::manifest::{Manifest, ACCEPT};
use crate::reference::Reference;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT as ACCEPT_HEADER, AUTHORIZATION, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a registry call failed. Each message names what was asked for and, where the caller
/// can do something about it, what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{what}: the registry answered {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{what}: authentication failed ({reason}); check the credentials for {registry}")]
    Unauthorized {
        what: String,
        registry: String,
        reason: String,
    },
    #[error("{what}: the content's digest is {actual}, not {expected}; the registry returned other bytes than asked for")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("{what}: {reason}")]
    Protocol { what: String, reason: String },
    #[error("{what}: the registry sent more than {limit} bytes, {why}; refused")]
    TooLarge {
        what: String,
        limit: u64,
        /// Where the limit comes from, and what to do if the content is genuine.
        why: String,
    },
}

/// How calls that fail on the way (connection errors, timeouts, 429, 5xx) are tried again: the
/// pause before attempt `n + 1` is `delay × multiplierⁿ⁻¹` plus up to `jitter`, at most
/// `max_delay`. The defaults are IIB's (5 attempts, 10 s, ×5, 10 s jitter, 2 min at most).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retries).
    pub attempts: u32,
    pub delay: Duration,
    pub multiplier: f64,
    pub jitter: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            delay: Duration::from_secs(10),
            multiplier: 5.0,
            jitter: Duration::from_secs(10),
            max_delay: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    fn pause(&self, attempt: u32) -> Duration {
        let base =
            self.delay.as_secs_f64() * self.multiplier.powi(attempt.saturating_sub(1) as i32);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = self.jitter.as_secs_f64() * (nanos % 1000) as f64 / 1000.0;
        Duration::from_secs_f64((base + jitter).min(self.max_delay.as_secs_f64()))
    }
}

/// Caps on what the client reads from a registry: every answer is untrusted, so none is read
/// into memory without a bound, and a body stops being read as soon as it passes its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Manifests, indexes and image configs (default 4 MiB, as containerd allows).
    pub max_manifest_bytes: u64,
    /// One layer (or other blob) held in memory (default 1 GiB). A blob named by a descriptor
    /// is also held to the size the descriptor declares.
    pub max_layer_bytes: u64,
    /// Uncompressed bytes read out of one image's layers (default 2 GiB, what a large
    /// catalog may need); see [`RegistryClient::image_limits`].
    pub max_image_bytes: u64,
    /// What the caller's users know these limits as, for the error that refuses an answer.
    pub names: LimitNames,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 << 20,
            max_layer_bytes: 1 << 30,
            max_image_bytes: crate::unpack::Limits::default().max_bytes,
            names: LimitNames::default(),
        }
    }
}

/// The names a [`RegistryError::TooLarge`] gives the limit it hit, so that its message says
/// what to raise: a setting or command-line flag of the program using this crate. The
/// defaults name the [`ReadLimits`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitNames {
    /// The name of [`ReadLimits::max_manifest_bytes`].
    pub manifest: &'static str,
    /// The name of [`ReadLimits::max_layer_bytes`].
    pub layer: &'static str,
}

impl Default for LimitNames {
    fn default() -> Self {
        Self {
            manifest: "ReadLimits::max_manifest_bytes",
            layer: "ReadLimits::max_layer_bytes",
        }
    }
}

/// A token service's answer is a small JSON document.
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;
/// Of an error answer's body, only this much is read (its start goes into the error).
const MAX_ERROR_BODY_BYTES: usize = 4 << 10;
/// Tokens longer than this are used but not cached.
const MAX_CACHED_TOKEN_BYTES: usize = 64 << 10;
/// Bearer tokens cached at most (expired ones are dropped first).
const TOKEN_CACHE_ENTRIES: usize = 256;

/// Everything a [`RegistryClient`] is configured with. The crate reads no environment and no
/// files: the caller fills this in (its `Default` is a client with IIB's retry policy, no
/// credentials and the default limits).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// The timeout of one HTTP request, body included (default 5 minutes).
    pub timeout: Option<Duration>,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry host, e.g. from a Docker `config.json`.
    pub credentials: CredentialStore,
    pub limits: ReadLimits,
}

/// A client for OCI distribution (and Docker registry v2) registries. Cheap to clone: clones
/// share one connection pool, one bearer-token cache and one cache of manifests and image
/// configs by digest (content named by its digest never changes).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    /// Bearer tokens by (registry, scope, whose), with when they stop being good.
    tokens: Arc<Mutex<TokenCache>>,
    /// Manifests and image configs read by this client, by repository and digest: content
    /// named by its digest never changes, so reading it again costs no round trip.
    by_digest: Arc<Mutex<DigestCache>>,
}

/// (registry, repository, digest).
type DigestKey = (String, String, Digest);

/// Documents by [`DigestKey`] → (content type, bytes), within a budget of bytes: the oldest
/// go first when a new one does not fit.
#[derive(Default)]
struct DigestCache {
    entries: HashMap<DigestKey, (Option<String>, Bytes)>,
    order: std::collections::VecDeque<DigestKey>,
    bytes: usize,
}

/// What `by_digest` may hold in all.
const DIGEST_CACHE_BYTES: usize = 64 << 20;
/// Larger documents are read every time.
const MAX_CACHED_BYTES: usize = 1 << 20;

impl DigestCache {
    fn cost(key: &DigestKey, bytes: &Bytes) -> usize {
        key.0.len() + key.1.len() + key.2.as_str().len() + bytes.len()
    }

    fn get(&self, key: &DigestKey) -> Option<(Option<String>, Bytes)> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: DigestKey, content_type: Option<String>, bytes: Bytes) {
        let cost = Self::cost(&key, &bytes);
        if bytes.len() > MAX_CACHED_BYTES || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + cost > DIGEST_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, gone)) = self.entries.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &gone);
            }
        }
        self.bytes += cost;
        self.order.push_back(key.clone());
        self.entries.insert(key, (content_type, bytes));
    }
}

/// Which credentials a token was fetched with, so that a token granted to one request's
/// credentials (an `overwrite_from_index_token`, say) never serves a call made with others.
type TokenKey = (String, String, String);

/// Bearer tokens by (registry, scope, the digest of the credentials or "" for none): the
/// `Authorization` value and when it stops being good.
type TokenCache = HashMap<TokenKey, (String, Instant)>;

/// One registry call: sent again as it is on a retry.
struct Call<'a> {
    method: Method,
    url: &'a str,
    headers: HeaderMap,
    body: Option<Body>,
    /// `pull` or `pull,push`: the scope a bearer token is asked for.
    actions: &'a str,
}

impl<'a> Call<'a> {
    fn new(method: Method, url: &'a str, actions: &'a str) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            actions,
        }
    }
}

/// A body that can be sent again on a retry.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    content_type: Option<String>,
}

impl RegistryClient {
    /// A client with `options`; fails only when the TLS stack cannot be set up.
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout.unwrap_or(Duration::from_secs(300)))
            .connect_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("iib/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| RegistryError::Transport {
                url: "(client)".into(),
                source,
            })?;
        Ok(Self {
            http,
            options: Arc::new(options),
            tokens: Arc::default(),
            by_digest: Arc::default(),
        })
    }

    /// The caps on reading an image's layers: [`ReadLimits::max_image_bytes`].
    pub fn image_limits(&self) -> crate::unpack::Limits {
        crate::unpack::Limits {
            max_bytes: self.options.limits.max_image_bytes,
            ..Default::default()
        }
    }

    fn cached(&self, reference: &Reference, digest: &Digest) -> Option<(Option<String>, Bytes)> {
        let key = (
            reference.registry.clone(),
            reference.repository.clone(),
            digest.clone(),
        );
        self.by_digest.lock().ok()?.get(&key)
    }

    fn remember(
        &self,
        reference: &Reference,
        digest: &Digest,
        content_type: Option<String>,
        bytes: &Bytes,
    ) {
        if let Ok(mut cache) = self.by_digest.lock() {
            let key = (
                reference.registry.clone(),
                reference.repository.clone(),
                digest.clone(),
            );
            cache.insert(key, content_type, bytes.clone());
        }
    }

    fn base_url(&self, reference: &Reference) -> String {
        let host = reference.api_host();
        let plain = reference.is_loopback()
            || self
                .options
                .insecure_registries
                .iter()
                .any(|r| r == &reference.registry);
        format!(
            "{}://{host}/v2/{}",
            if plain { "http" } else { "https" },
            reference.repository
        )
    }

    /// Sends with retries and auth; `scope_actions` is `pull` or `pull,push`.
    async fn send(
        &self,
        reference: &Reference,
        override_credentials: Option<&Credentials>,
        call: Call<'_>,
    ) -> Result<reqwest::Response, RegistryError> {
        let Call {
            method,
            url,
            headers,
            body,
            actions: scope_actions,
        } = call;
        // A request's own credentials replace the service's for this call, never the other way
        // round: when they are refused, the call fails; the service's are not tried instead.
        let credentials =
            override_credentials.or_else(|| self.options.credentials.get(&reference.registry));
        let scope = format!("repository:{}:{scope_actions}", reference.repository);
        let whose = credentials
            .map(|c| Digest::of(c.basic_header().as_bytes()).to_string())
            .unwrap_or_default();
        let token_key = (reference.registry.clone(), scope.clone(), whose);
        let mut attempt = 0;
        let mut authorization: Option<String> = self.cached_token(&token_key);
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(auth) = &authorization {
                request = request.header(AUTHORIZATION, auth);
            }
            if let Some(body) = &body {
                if let Some(ct) = &body.content_type {
                    request = request.header(CONTENT_TYPE, ct);
                }
                request = request.body(body.bytes.clone());
            }
            crate::metrics::sent(
                &reference.registry,
                body.as_ref().map_or(0, |b| b.bytes.len()),
            );
            let sent_at = Instant::now();
            let outcome = request.send().await;
            crate::metrics::call(
                &reference.registry,
                method.as_str(),
                outcome.as_ref().ok().map(|r| r.status().as_u16()),
                sent_at.elapsed(),
            );
            let retry = match &outcome {
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
                Ok(r) => {
                    r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error()
                }
            };
            if retry && attempt < self.options.retry.attempts {
                let pause = self.options.retry.pause(attempt);
                tracing::warn!(%url, attempt, ?pause, "registry call failed; retrying");
                crate::metrics::retry(&reference.registry);
                tokio::time::sleep(pause).await;
                continue;
            }
            let response = outcome.map_err(|source| RegistryError::Transport {
                url: url.to_string(),
                source,
            })?;
            if response.status() == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .and_then(parse_challenge);
                authorization = match challenge {
                    Some(Challenge::Basic) => credentials.map(Credentials::basic_header),
                    Some(Challenge::Bearer { realm, service, .. }) => Some(
                        self.fetch_token(
                            &realm,
                            service.as_deref(),
                            &scope,
                            credentials,
                            &token_key,
                        )
                        .await?,
                    ),
                    None => None,
                };
                if authorization.is_some() {
                    attempt = 0;
                    continue;
                }
            }
            if response.status() == StatusCode::UNAUTHORIZED
                || response.status() == StatusCode::FORBIDDEN
            {
                let status = response.status();
                return Err(RegistryError::Unauthorized {
                    what: format!("{method} {url}"),
                    registry: reference.registry.clone(),
                    reason: format!(
                        "{status}{}",
                        if credentials.is_none() {
                            ", no credentials for it"
                        } else {
                            ""
                        }
                    ),
                });
            }
            return Ok(response);
        }
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        tokens
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(token, _)| token.clone())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
        key: &TokenKey,
    ) -> Result<String, RegistryError> {
        let mut request = self.http.get(realm).query(&[("scope", scope)]);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if let Some(credentials) = credentials {
            request = request.header(AUTHORIZATION, credentials.basic_header());
        }
        let response = request.send().await;
        crate::metrics::token(&key.0, response.as_ref().ok().map(|r| r.status().as_u16()));
        let response = response.map_err(|source| RegistryError::Transport {
            url: realm.to_string(),
            source,
        })?;
        if !response.status().is_success() {
            return Err(RegistryError::Unauthorized {
                what: format!("token for {scope}"),
                registry: key.0.clone(),
                reason: format!("the token service answered {}", response.status()),
            });
        }
        let what = format!("token for {scope}");
        let body = read_capped(
            &key.0,
            response,
            MAX_TOKEN_RESPONSE_BYTES,
            &what,
            realm,
            "the limit for a token service's answer",
        )
        .await?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                what: what.clone(),
                reason: format!("the token service answered with something other than JSON: {e}"),
            })?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| RegistryError::Protocol {
                what: format!("token for {scope}"),
                reason: "the token service answered without a token".into(),
            })?;
        let lifetime = body
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(10);
        let header = format!("Bearer {token}");
        if header.len() <= MAX_CACHED_TOKEN_BYTES {
            if let Ok(mut tokens) = self.tokens.lock() {
                let now = Instant::now();
                // Renew a little early; a huge `expires_in` must not overflow the clock.
                let until = now
                    .checked_add(Duration::from_secs(lifetime.saturating_sub(5)))
                    .unwrap_or(now + Duration::from_secs(3600));
                tokens.retain(|_, (_, good_until)| *good_until > now);
                if tokens.len() >= TOKEN_CACHE_ENTRIES {
                    // Full of live tokens: the one that expires first goes.
                    if let Some(first) = tokens
                        .iter()
                        .min_by_key(|(_, (_, good_until))| *good_until)
                        .map(|(k, _)| k.clone())
                    {
                        tokens.remove(&first);
                    }
                }
                tokens.insert(key.clone(), (header.clone(), until));
            }
        }
        Ok(header)
    }

    async fn check(
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(what.to_string()));
        }
        let body = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
        Err(RegistryError::Status {
            what: what.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(500).collect(),
        })
    }

    /// The manifest `reference` names, its digest and its raw bytes.
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<(Manifest, Digest, Bytes), RegistryError> {
        if let Some(digest) = &reference.digest {
            if let Some((content_type, bytes)) = self.cached(reference, digest) {
                let manifest =
                    Manifest::parse(content_type.as_deref(), &bytes, &reference.to_string())?;
                return Ok((manifest, digest.clone(), bytes));
            }
        }
        let url = format!(
            "{}/manifests/{}",
            self.base_url(reference),
            reference.target()
        );
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_HEADER, HeaderValue::from_static(ACCEPT));
        let response = self
            .send(
                reference,
                None,
                Call {
                    headers,
                    ..Call::new(Method::GET, &url, "pull")
                },
            )
            .await?;
        let response = Self::check(response, &reference.to_string()).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_capped(
            &reference.registry,
            response,
            self.options.limits.max_manifest_bytes,
            &reference.to_string(),
            &url,
            &format!(
                "the limit {} sets for a manifest (raise it if the image is genuine)",
                self.options.limits.names.manifest
            ),
        )
        .await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = &reference.digest {
            if *expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what: reference.to_string(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let manifest = Manifest::parse(content_type.as_deref(), &bytes, &reference.to_string())?;
        self.remember(reference, &digest, content_type, &bytes);
        Ok((manifest, digest, bytes))
    }

    /// A small blob (an image config, held to the manifest limit), read once per client.
    pub(crate) async fn small_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Bytes, RegistryError> {
        if let Some((_, bytes)) = self.cached(reference, digest) {
            return Ok(bytes);
        }
        let bytes = self
            .blob_within(
                reference,
                digest,
                Some(size),
                self.options.limits.max_manifest_bytes,
                self.options.limits.names.manifest,
            )
            .await?;
        self.remember(reference, digest, None, &bytes);
        Ok(bytes)
    }

    /// Resolves a tag (or digest) to the digest of its manifest.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        Ok(self.manifest(reference).await?.1)
    }

    /// A blob of unknown size, checked against its digest; at most
    /// [`ReadLimits::max_layer_bytes`] are read.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        self.blob_within(
            reference,
            digest,
            None,
            self.options.limits.max_layer_bytes,
            self.options.limits.names.layer,
        )
        .await
    }

    /// A blob a descriptor names, checked against its digest: no more than the `size` the
    /// descriptor declares is read, and nothing when that is over [`ReadLimits::max_layer_bytes`].
    pub async fn blob_sized(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Bytes, RegistryError> {
        self.blob_within(
            reference,
            digest,
            Some(size),
            self.options.limits.max_layer_bytes,
            self.options.limits.names.layer,
        )
        .await
    }

    /// A blob held to its declared size (if known) and to `limit`, which `setting` sets.
    async fn blob_within(
        &self,
        reference: &Reference,
        digest: &Digest,
        declared: Option<u64>,
        limit: u64,
        setting: &str,
    ) -> Result<Bytes, RegistryError> {
        let what = format!("{}@{digest}", reference.repository);
        let over_limit = || format!("the limit {setting} sets (raise it if the image is genuine)");
        let (cap, why) = match declared {
            Some(size) if size > limit => {
                return Err(RegistryError::TooLarge {
                    what,
                    limit,
                    why: format!(
                        "its descriptor declares {size} bytes, over {}",
                        over_limit()
                    ),
                })
            }
            Some(size) => (size, "the size its descriptor declares".to_string()),
            None => (limit, over_limit()),
        };
        let url = format!("{}/blobs/{digest}", self.base_url(reference));
        let response = self
            .send(reference, None, Call::new(Method::GET, &url, "pull"))
            .await?;
        let response = Self::check(response, &what).await?;
        let bytes = read_capped(&reference.registry, response, cap, &what, &url, &why).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Streams a blob into `out`, hashing as it goes; fails on a digest mismatch or when it
    /// grows past `max_bytes`. Returns the bytes written.
    pub async fn blob_to<W: std::io::Write>(
        &self,
        reference: &Reference,
        digest: &Digest,
        out: &mut W,
        max_bytes: u64,
    ) -> Result<u64, RegistryError> {
        use futures_util::StreamExt;
        let url = format!("{}/blobs/{digest}", self.base_url(reference));
        let response = self
            .send(reference, None, Call::new(Method::GET, &url, "pull"))
            .await?;
        let what = format!("{}@{digest}", reference.repository);
        let response = Self::check(response, &what).await?;
        let mut hasher = crate::digest::Hasher::default();
        let mut written = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Transport {
                url: url.clone(),
                source,
            })?;
            crate::metrics::received(&reference.registry, chunk.len());
            written = written.saturating_add(chunk.len() as u64);
            if written > max_bytes {
                return Err(RegistryError::Protocol {
                    what,
                    reason: format!("the blob is larger than the {max_bytes} bytes allowed"),
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).map_err(|e| RegistryError::Protocol {
                what: what.clone(),
                reason: format!("cannot write the blob: {e}"),
            })?;
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(written)
    }

    /// Uploads a blob in chunks of `chunk_size` (POST, PATCH per chunk, PUT to finish), for
    /// registries or proxies that limit request sizes. Skipped when the blob is there.
    pub async fn push_blob_chunked(
        &self,
        reference: &Reference,
        digest: &Digest,
        bytes: Bytes,
        chunk_size: usize,
        credentials: Option<&Credentials>,
    ) -> Result<u64, RegistryError> {
        if self.blob_exists(reference, digest, credentials).await? {
            return Ok(0);
        }
        let mut location = self.start_upload(reference, credentials).await?;
        let mut offset = 0usize;
        for chunk in bytes.chunks(chunk_size.max(1)) {
            let mut headers = HeaderMap::new();
            let range = format!("{offset}-{}", offset + chunk.len() - 1);
            headers.insert(
                "Content-Range",
                HeaderValue::from_str(&range).expect("ascii"),
            );
            let body = Body {
                bytes: bytes.slice(offset..offset + chunk.len()),
                content_type: Some("application/octet-stream".into()),
            };
            let response = self
                .send(
                    reference,
                    credentials,
                    Call {
                        headers,
                        body: Some(body),
                        ..Call::new(Method::PATCH, &location, "pull,push")
                    },
                )
                .await?;
            let response = Self::check(response, &format!("chunk {range} of {digest}")).await?;
            location = self.upload_location(reference, response, &location)?;
            offset += chunk.len();
        }
        self.finish_upload(reference, &location, digest, None, credentials)
            .await?;
        Ok(bytes.len() as u64)
    }

    /// Starts an upload session; returns its URL.
    async fn start_upload(
        &self,
        reference: &Reference,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let start = format!("{}/blobs/uploads/", self.base_url(reference));
        let response = self
            .send(
                reference,
                credentials,
                Call::new(Method::POST, &start, "pull,push"),
            )
            .await?;
        let response = Self::check(response, &start).await?;
        self.upload_location(reference, response, &start)
    }

    /// Ends an upload session with a PUT naming the digest (and carrying the last bytes).
    async fn finish_upload(
        &self,
        reference: &Reference,
        location: &str,
        digest: &Digest,
        body: Option<Body>,
        credentials: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        let mut url = location.to_string();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let response = self
            .send(
                reference,
                credentials,
                Call {
                    body,
                    ..Call::new(Method::PUT, &url, "pull,push")
                },
            )
            .await?;
        Self::check(response, &format!("upload of {digest}")).await?;
        Ok(())
    }

    /// The absolute URL of an upload from a response's `Location`.
    fn upload_location(
        &self,
        reference: &Reference,
        response: reqwest::Response,
        what: &str,
    ) -> Result<String, RegistryError> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                reason: "the registry answered an upload without a Location".into(),
            })?;
        Ok(if location.starts_with("http") {
            location.to_string()
        } else {
            let base = self.base_url(reference);
            let origin = &base[..base.find("/v2/").unwrap_or(base.len())];
            format!("{origin}{location}")
        })
    }

    /// Adds `tag` to the manifest (or index) `reference` names, without re-uploading anything.
    pub async fn tag(
        &self,
        reference: &Reference,
        tag: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Digest, RegistryError> {
        let (manifest, _, raw) = self.manifest(reference).await?;
        self.push_manifest(
            &reference.with_tag(tag),
            tag,
            manifest.media_type(),
            raw,
            credentials,
        )
        .await
    }

    /// Whether the repository has the blob already.
    pub async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &Digest,
        credentials: Option<&Credentials>,
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base_url(reference));
        let response = self
            .send(
                reference,
                credentials,
                Call::new(Method::HEAD, &url, "pull"),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Self::check(response, &url).await.map(|_| false),
        }
    }

    /// Asks the registry to link a blob from another repository of the same registry;
    /// returns whether it did (no bytes cross the wire then).
    pub async fn mount_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        from_repository: &str,
        credentials: Option<&Credentials>,
    ) -> Result<bool, RegistryError> {
        let url = format!(
            "{}/blobs/uploads/?mount={digest}&from={from_repository}",
            self.base_url(reference)
        );
        let response = self
            .send(
                reference,
                credentials,
                Call::new(Method::POST, &url, "pull,push"),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            // The registry started an upload instead: it could not mount.
            StatusCode::ACCEPTED => Ok(false),
            _ => Self::check(response, &url).await.map(|_| false),
        }
    }

    /// Uploads a blob (monolithic: one POST, one PUT) unless the repository has it.
    /// Returns the number of bytes sent.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        bytes: Bytes,
        credentials: Option<&Credentials>,
    ) -> Result<u64, RegistryError> {
        if self.blob_exists(reference, digest, credentials).await? {
            return Ok(0);
        }
        let location = self.start_upload(reference, credentials).await?;
        let size = bytes.len() as u64;
        let body = Body {
            bytes,
            content_type: Some("application/octet-stream".into()),
        };
        self.finish_upload(reference, &location, digest, Some(body), credentials)
            .await?;
        Ok(size)
    }

    /// Pushes a manifest or index under `tag_or_digest`; returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: Bytes,
        credentials: Option<&Credentials>,
    ) -> Result<Digest, RegistryError> {
        let url = format!("{}/manifests/{tag_or_digest}", self.base_url(reference));
        let digest = Digest::of(&bytes);
        let body = Body {
            bytes,
            content_type: Some(media_type.to_string()),
        };
        let response = self
            .send(
                reference,
                credentials,
                Call {
                    body: Some(body),
                    ..Call::new(Method::PUT, &url, "pull,push")
                },
            )
            .await?;
        Self::check(
            response,
            &format!("{}:{tag_or_digest}", reference.repository),
        )
        .await?;
        Ok(digest)
    }

    /// Copies an image, every arch, from one reference to another. Blobs are mounted across
    /// repositories of one registry (never re-uploaded) and skipped when already there.
    /// Returns the digest of the copied manifest (or index) and the blob bytes uploaded.
    pub async fn copy(
        &self,
        from: &Reference,
        to: &Reference,
        credentials: Option<&Credentials>,
    ) -> Result<(Digest, u64), RegistryError> {
        let (manifest, digest, raw) = self.manifest(from).await?;
        let mut uploaded = 0;
        let images = match &manifest {
            Manifest::Image(_) => vec![(manifest.clone(), raw.clone(), digest.clone())],
            Manifest::Index(index) => {
                let mut images = Vec::new();
                for entry in &index.manifests {
                    let child = from.with_digest(entry.digest.clone());
                    let (m, d, r) = self.manifest(&child).await?;
                    images.push((m, r, d));
                }
                images
            }
        };
        for (image, raw_image, image_digest) in &images {
            let Manifest::Image(image) = image else {
                return Err(RegistryError::Protocol {
                    what: from.to_string(),
                    reason: "an index inside an index is not supported".into(),
                });
            };
            for blob in std::iter::once(&image.config).chain(image.layers.iter()) {
                uploaded += self
                    .transfer_blob(from, to, &blob.digest, blob.size, credentials)
                    .await?;
            }
            if matches!(manifest, Manifest::Index(_)) {
                self.push_manifest(
                    to,
                    image_digest.as_str(),
                    &media_type_of(raw_image),
                    raw_image.clone(),
                    credentials,
                )
                .await?;
            }
        }
        let pushed = self
            .push_manifest(to, &to.target(), manifest.media_type(), raw, credentials)
            .await?;
        Ok((pushed, uploaded))
    }

    /// Gets a blob into `to`: already there, mounted, or downloaded and uploaded.
    pub(crate) async fn transfer_blob(
        &self,
        from: &Reference,
        to: &Reference,
        digest: &Digest,
        size: u64,
        credentials: Option<&Credentials>,
    ) -> Result<u64, RegistryError> {
        if self.blob_exists(to, digest, credentials).await? {
            return Ok(0);
        }
        if from.registry == to.registry
            && self
                .mount_blob(to, digest, &from.repository, credentials)
                .await?
        {
            return Ok(0);
        }
        let bytes = self.blob_sized(from, digest, size).await?;
        self.push_blob(to, digest, bytes, credentials).await
    }
}

/// Reads a body into memory, refusing it as soon as it would pass `limit` bytes (at once when
/// its `Content-Length` says so): nothing past the limit is ever buffered. `why` says where the
/// limit comes from.
async fn read_capped(
    registry: &str,
    response: reqwest::Response,
    limit: u64,
    what: &str,
    url: &str,
    why: &str,
) -> Result<Bytes, RegistryError> {
    use futures_util::StreamExt;
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        limit,
        why: why.to_string(),
    };
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    // A declared length only sizes the first allocation, and never beyond 1 MiB: it may lie.
    let capacity = declared.unwrap_or(0).min(limit).min(1 << 20) as usize;
    let mut body = bytes::BytesMut::with_capacity(capacity);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| RegistryError::Transport {
            url: url.to_string(),
            source,
        })?;
        crate::metrics::received(registry, chunk.len());
        let total = (body.len() as u64).checked_add(chunk.len() as u64);
        if total.is_none_or(|total| total > limit) {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The first `limit` bytes of a body (an error answer), or fewer; the rest is never read.
async fn read_prefix(response: reqwest::Response, limit: usize) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

fn media_type_of(raw: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| crate::manifest::OCI_MANIFEST.to_string())
}
