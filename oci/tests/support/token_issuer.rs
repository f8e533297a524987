//! A small Docker token service for a registry with `auth: token`: it checks basic
//! credentials, grants what of the scope asked for the user may do (every action, or the
//! actions `start_with_users` gave them), and signs an RS256 JWT (with openssl) that carries
//! its certificate in `x5c`, as the registry's `rootcertbundle` expects.

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
    /// user → (password, the actions they may take; `None`: any).
    users: HashMap<String, (String, Option<Vec<String>>)>,
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
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let Some((user, allowed)) = given.as_deref().and_then(|given| {
        let (user, password) = given.split_once(':')?;
        let (expected, allowed) = issuer.users.get(user)?;
        (expected == password).then(|| (user.to_string(), allowed.clone()))
    }) else {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    };
    let mut access = Vec::new();
    if let Some(scope) = q.get("scope") {
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        if parts.len() == 3 {
            let actions: Vec<&str> = parts[2]
                .split(',')
                .filter(|a| allowed.as_ref().is_none_or(|ok| ok.iter().any(|o| o == a)))
                .collect();
            access.push(serde_json::json!({
                "type": parts[0], "name": parts[1], "actions": actions,
            }));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [issuer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
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
        Self::start_with_users(&[(user, password, None)]).await
    }

    /// A token service for several users, each with the actions it grants them (`None`: any).
    pub async fn start_with_users(users: &[(&str, &str, Option<&[&str]>)]) -> Self {
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
            users: users
                .iter()
                .map(|(user, password, actions)| {
                    (
                        user.to_string(),
                        (
                            password.to_string(),
                            actions.map(|a| a.iter().map(|s| s.to_string()).collect()),
                        ),
                    )
                })
                .collect(),
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
