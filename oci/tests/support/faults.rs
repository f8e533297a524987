//! A fault-injecting HTTP proxy: answers the first `failures` calls with 503, then forwards
//! every call to `upstream` as it came.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct FaultProxy {
    pub host: String,
    pub calls: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    failures: usize,
    calls: Arc<AtomicUsize>,
    client: reqwest::Client,
    delay: std::time::Duration,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = p.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(p.delay).await;
    if n < p.failures {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected fault").into_response();
    }
    let url = format!(
        "http://{}{}",
        p.upstream,
        uri.path_and_query().map(|q| q.as_str()).unwrap_or("/")
    );
    let mut request = p.client.request(method, url).body(body);
    for (name, value) in &headers {
        if name != "host" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl FaultProxy {
    pub async fn start(upstream: &str, failures: usize) -> Self {
        Self::start_with(upstream, failures, std::time::Duration::ZERO).await
    }

    /// A proxy that answers every call `delay` late (a slow registry).
    pub async fn start_with(upstream: &str, failures: usize, delay: std::time::Duration) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let state = Proxy {
            upstream: upstream.to_string(),
            failures,
            calls: calls.clone(),
            client: reqwest::Client::new(),
            delay,
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { host, calls }
    }
}
