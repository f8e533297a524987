//! A stand-in registry for what a real one never does: answers far larger than they should be
//! (a 100 MB manifest, blobs longer than their descriptors say, huge error bodies and token
//! answers). Bodies are streamed from one static chunk, without a `Content-Length`, so the
//! server itself holds no memory and the client cannot tell the size in advance.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub const BUNDLE_PACKAGE: &str = "hostile";
pub const MIB: u64 = 1 << 20;

static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// `bytes` bytes of spaces, streamed in 64 KiB chunks, length unannounced.
fn endless(bytes: u64) -> Body {
    let chunks = bytes.div_ceil(CHUNK.len() as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let left = bytes - i * CHUNK.len() as u64;
        let n = left.min(CHUNK.len() as u64) as usize;
        Ok::<_, std::io::Error>(Bytes::from_static(&CHUNK[..n]))
    }));
    Body::from_stream(stream)
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[derive(Clone)]
struct Site {
    origin: String,
    config: Bytes,
}

impl Site {
    /// A bundle image's manifest whose one layer declares 1,000 bytes.
    fn bundle_manifest(&self) -> String {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&self.config),
                "size": self.config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{}", "ab".repeat(32)),
                "size": 1000,
            }],
        })
        .to_string()
    }
}

pub struct HostileRegistry {
    /// `127.0.0.1:port`, a loopback registry the client speaks plain HTTP to.
    pub host: String,
    task: tokio::task::JoinHandle<()>,
}

impl HostileRegistry {
    /// Serves, under any repository:
    /// - manifests `huge`: 100 MB; `error`: a 400 with a 100 MB body; `authed`: a bearer
    ///   challenge whose token service answers 100 MB; `bundle`: a bundle image whose layer
    ///   declares 1,000 bytes;
    /// - blobs: the bundle's config, else 200 MB whatever the digest.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {
                "operators.operatorframework.io.bundle.package.v1": BUNDLE_PACKAGE,
            }},
            "rootfs": {"type": "layers", "diff_ids": []},
        })
        .to_string();
        let site = Site {
            origin: format!("http://{host}"),
            config: Bytes::from(config),
        };
        let app = Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route("/v2/{repo}/manifests/{reference}", get(manifest))
            .route("/v2/{repo}/blobs/{digest}", get(blob))
            .route("/token", get(|| async { endless(100 * MIB) }))
            .with_state(site);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { host, task }
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn manifest(
    State(site): State<Site>,
    Path((_, reference)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let oci = [(
        header::CONTENT_TYPE,
        "application/vnd.oci.image.manifest.v1+json",
    )];
    match reference.as_str() {
        "huge" => (oci, endless(100 * MIB)).into_response(),
        "error" => (StatusCode::BAD_REQUEST, endless(100 * MIB)).into_response(),
        "authed" if !headers.contains_key(header::AUTHORIZATION) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!(r#"Bearer realm="{}/token",service="hostile""#, site.origin),
            )],
        )
            .into_response(),
        "bundle" => (oci, site.bundle_manifest()).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn blob(State(site): State<Site>, Path((_, digest)): Path<(String, String)>) -> Response {
    if digest == sha256(&site.config) {
        return site.config.clone().into_response();
    }
    endless(200 * MIB).into_response()
}
