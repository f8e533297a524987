//! A gated HTTP proxy: forwards every call to `upstream` as it came, except the calls a rule
//! picks, which it holds until the test opens the gate. It counts the calls it held and those
//! whose client went away while held, so a test can tell that a worker was stopped mid-call.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

pub struct GateProxy {
    pub host: String,
    counts: Arc<Counts>,
    open: watch::Sender<bool>,
}

#[derive(Default)]
struct Counts {
    held: AtomicUsize,
    abandoned: AtomicUsize,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    /// Holds calls whose method is `.0` and whose path contains `.1`.
    rule: Arc<(Method, String)>,
    counts: Arc<Counts>,
    open: watch::Receiver<bool>,
    client: reqwest::Client,
}

/// Counts a held call as abandoned when its handler is dropped before the gate opened: hyper
/// drops it when the client closes the connection.
struct Waiting {
    counts: Arc<Counts>,
    released: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.released {
            self.counts.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn forward(
    State(mut p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == p.rule.0 && uri.path().contains(&p.rule.1) && !*p.open.borrow() {
        p.counts.held.fetch_add(1, Ordering::SeqCst);
        let mut waiting = Waiting {
            counts: p.counts.clone(),
            released: false,
        };
        let _ = p.open.wait_for(|open| *open).await;
        waiting.released = true;
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

impl GateProxy {
    /// A closed gate in front of `upstream` for calls with `method` whose path contains
    /// `path_part` (e.g. `PUT`, `/iib-build/manifests/`).
    pub async fn start(upstream: &str, method: Method, path_part: &str) -> Self {
        let counts = Arc::new(Counts::default());
        let (open, receiver) = watch::channel(false);
        let state = Proxy {
            upstream: upstream.to_string(),
            rule: Arc::new((method, path_part.to_string())),
            counts: counts.clone(),
            open: receiver,
            client: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { host, counts, open }
    }

    /// Calls held so far.
    pub fn held(&self) -> usize {
        self.counts.held.load(Ordering::SeqCst)
    }

    /// Held calls whose client gave up on them before the gate opened.
    pub fn abandoned(&self) -> usize {
        self.counts.abandoned.load(Ordering::SeqCst)
    }

    /// Lets the held calls and every later one through.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }
}
