//! Admission control: how much of the service one client, or many, can hold at once.
//!
//! - Connections are capped (`IIB_HTTP_MAX_CONNECTIONS`): one over the cap is closed as soon
//!   as it is accepted, before any TLS handshake, so idle sockets cannot exhaust file
//!   descriptors.
//! - A connection must send its request headers within `IIB_HTTP_HEADER_TIMEOUT_SECONDS`
//!   (set on the HTTP server in `main.rs`), so a client trickling headers (slowloris) holds
//!   nothing for long.
//! - Calls in progress are capped (`IIB_HTTP_MAX_CONCURRENT_REQUESTS`): a call that finds no
//!   free slot within a second is answered 503 with `Retry-After`, so a flood queues at the
//!   door instead of inside the database pool.
//! - Every call must be answered within `IIB_HTTP_REQUEST_TIMEOUT_SECONDS`, body included
//!   (event streams answer at once and are bounded on their own, see `events`).

use crate::api::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The HTTP server's limits, from the settings (`crate::settings` reads and checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    /// `IIB_MAX_EVENT_STREAMS`: open Server-Sent Events streams.
    pub max_event_streams: usize,
}

/// The per-call gate: a slot among `IIB_HTTP_MAX_CONCURRENT_REQUESTS`, and the time limit.
#[derive(Clone)]
pub struct CallGate {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl CallGate {
    pub fn new(limits: &HttpLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            timeout: limits.request_timeout,
        }
    }
}

/// Middleware: admits a call when a slot frees up within a second, and bounds its time.
pub async fn admit(State(gate): State<CallGate>, request: Request, next: Next) -> Response {
    let permit = match tokio::time::timeout(
        Duration::from_secs(1),
        gate.slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return busy(
                "The service is handling as many calls as it allows right now; retry in a moment",
            )
        }
    };
    let answer = tokio::time::timeout(gate.timeout, next.run(request)).await;
    drop(permit);
    match answer {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                seconds = gate.timeout.as_secs(),
                "a call was not answered in time"
            );
            busy(&format!(
                "The call was not answered within {} seconds (IIB_HTTP_REQUEST_TIMEOUT_SECONDS); retry it",
                gate.timeout.as_secs()
            ))
        }
    }
}

fn busy(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Wraps an acceptor: a connection over `IIB_HTTP_MAX_CONNECTIONS` is closed at once; the
/// others hold a permit for as long as they stay open.
#[derive(Clone)]
pub struct LimitedAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
}

impl<A> LimitedAcceptor<A> {
    pub fn new(inner: A, max_connections: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

impl<A, I, S> axum_server::accept::Accept<I, S> for LimitedAcceptor<A>
where
    A: axum_server::accept::Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Permitted<A::Stream>;
    type Service = A::Service;
    type Future =
        Pin<Box<dyn std::future::Future<Output = io::Result<(Self::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let inner = self.inner.clone();
        Box::pin(async move {
            let Ok(permit) = permit else {
                tracing::warn!("refused a connection: IIB_HTTP_MAX_CONNECTIONS are open");
                return Err(io::Error::other("too many open connections"));
            };
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((
                Permitted {
                    inner: stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection and its permit, released when the connection closes.
pub struct Permitted<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Permitted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Permitted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
