//! A small Docker token service for a registry with `auth: token`: it checks basic
//! credentials, grants the scope asked for, and signs an RS256 JWT (with openssl) that
//! carries its certificate in `x5c`, as the registry's `rootcertbundle` expects.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const SERVICE: &str = "iib-test-registry";
pub const ISSUER: &str = "iib-test-issuer";

pub struct TokenIssuer {
    pub realm: String,
    pub cert: PathBuf,
    pub tokens_issued: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct Issuer {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    password: String,
    issued: Arc<AtomicUsize>,
    dir: PathBuf,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn token(
    State(issuer): State<Issuer>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", issuer.user, issuer.password))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let mut access = Vec::new();
    if let Some(scope) = q.get("scope") {
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        if parts.len() == 3 {
            access.push(serde_json::json!({
                "type": parts[0], "name": parts[1],
                "actions": parts[2].split(',').collect::<Vec<_>>(),
            }));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [issuer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": issuer.user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", issuer.issued.load(Ordering::SeqCst)), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let n = issuer.issued.fetch_add(1, Ordering::SeqCst);
    let input = issuer.dir.join(format!("input-{n}"));
    std::fs::write(&input, &signing_input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&issuer.key)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let jwt = format!("{signing_input}.{}", b64url(&out.stdout));
    axum::Json(serde_json::json!({"token": jwt, "expires_in": 300})).into_response()
}

impl TokenIssuer {
    pub async fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=iib test token issuer",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let issued = Arc::new(AtomicUsize::new(0));
        let state = Issuer {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
            user: user.into(),
            password: password.into(),
            issued: issued.clone(),
            dir: dir.path().to_path_buf(),
        };
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            realm,
            cert,
            tokens_issued: issued,
            _dir: dir,
        }
    }

    pub fn registry_auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }
}
