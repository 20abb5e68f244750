//! The endpoints Datadog's Lambda libraries call on `127.0.0.1:8124` (`OFFPATH_LAMBDA_API_PORT`), and the
//! trace intake their tracers use on `127.0.0.1:8126` (`OFFPATH_LAMBDA_TRACE_PORT`).
//!
//! | request | answer | effect |
//! | --- | --- | --- |
//! | `GET`/`POST /lambda/hello` | 200 `{}` | none: the libraries' check that an extension runs |
//! | `POST /lambda/start-invocation` | 200 `{}` | none (the body, the event, is read and dropped) |
//! | `POST /lambda/end-invocation` | 200 `{}` | `x-datadog-invocation-error: true` counts `errors` for the invocation |
//! | `GET`/`POST /lambda/flush` | 200 `{}` at once | a flush, started by the lifecycle off the caller's path |
//! | a known path with another method | 405 | none |
//! | any other path | 404 | none |
//!
//! On the trace port every request is answered 200 `{}` once its body is read, and the traces are dropped,
//! counted, and said once in the log: offpath ships metrics, not traces. A Datadog tracer (`ddtrace`) that
//! finds `/opt/extensions/datadog-agent` sends its traces there synchronously at the end of every
//! invocation, retrying for seconds when nothing answers; answering at once keeps the function as fast as
//! with Datadog's extension. `DD_TRACE_ENABLED=false` stops the tracer from sending them at all.
//!
//! Bodies are read up to 6 MiB (Lambda's largest synchronous payload), larger ones are answered 413. The server
//! runs in its own tasks and only hands [`ApiEvent`]s to the lifecycle through a bounded queue (full: the event
//! is dropped and counted), so no client, slow or hostile, ever holds the extension's loop: headers and bodies
//! must arrive within 5 s, and past 32 open connections new ones are closed at once (so a library's call fails
//! fast rather than waiting). It listens on the loopback interface only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The port the Datadog libraries call.
pub const DEFAULT_PORT: u16 = 8124;
/// The port Datadog's tracers send traces to.
pub const DEFAULT_TRACE_PORT: u16 = 8126;
/// Largest request body read: Lambda's largest synchronous invocation payload.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Open connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 32;
/// Time for a request's headers, then for its body, to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting for the lifecycle.
const EVENT_QUEUE: usize = 64;
/// The header the Datadog tracers set on `/lambda/end-invocation` when the invocation failed.
pub const INVOCATION_ERROR_HEADER: &str = "x-datadog-invocation-error";

/// What a library asked of the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEvent {
    /// `/lambda/flush`: flush now.
    Flush,
    /// `/lambda/end-invocation`, with whether `x-datadog-invocation-error: true` was set.
    InvocationEnd {
        /// The invocation failed.
        error: bool,
    },
}

/// Which endpoints a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// The libraries' `/lambda/*` endpoints.
    Libraries,
    /// A trace intake that drops what it receives.
    Traces,
}

/// Counters of the server.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Trace payloads received and dropped (trace port).
    pub traces_dropped: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Events dropped because the lifecycle's queue was full.
    pub events_dropped: AtomicU64,
    /// Connections closed on accept because [`MAX_CONNECTIONS`] were open.
    pub connections_refused: AtomicU64,
}

/// The running server; dropping it stops accepting connections.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stats: Arc<ApiStats>,
    task: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Serve `endpoints` on a bound `listener`; events go to the returned receiver.
    ///
    /// # Errors
    /// The socket error when the listener's address cannot be read.
    pub fn start(
        listener: TcpListener,
        endpoints: Endpoints,
    ) -> std::io::Result<(Self, mpsc::Receiver<ApiEvent>)> {
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let stats = Arc::new(ApiStats::default());
        let task = tokio::spawn(accept_loop(listener, endpoints, tx, Arc::clone(&stats)));
        Ok((Self { addr, stats, task }, rx))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &Arc<ApiStats> {
        &self.stats
    }
}

async fn accept_loop(
    listener: TcpListener,
    endpoints: Endpoints,
    tx: mpsc::Sender<ApiEvent>,
    stats: Arc<ApiStats>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "Datadog libraries' endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.fetch_add(1, Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Relaxed);
            stats.connections_refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (tx, stats, open) = (tx.clone(), Arc::clone(&stats), Arc::clone(&open));
        tokio::spawn(async move {
            let service = service_fn(|req| async {
                match endpoints {
                    Endpoints::Libraries => handle(req, &tx, &stats).await,
                    Endpoints::Traces => traces(req, &stats).await,
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "Datadog libraries' endpoint: connection ended");
            }
            open.fetch_sub(1, Relaxed);
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    tx: &mpsc::Sender<ApiEvent>,
    stats: &ApiStats,
) -> Result<Response<Full<Bytes>>, Infallible> {
    stats.requests.fetch_add(1, Relaxed);
    let get_or_post = matches!(*req.method(), Method::GET | Method::POST);
    let post = req.method() == Method::POST;
    let send = |event| {
        if tx.try_send(event).is_err() {
            stats.events_dropped.fetch_add(1, Relaxed);
        }
    };
    Ok(match req.uri().path() {
        "/lambda/hello" if get_or_post => json_ok(),
        "/lambda/flush" if get_or_post => {
            send(ApiEvent::Flush);
            json_ok()
        }
        "/lambda/start-invocation" if post => match read_body(req).await {
            Ok(_) => json_ok(),
            Err(status) => empty(status),
        },
        "/lambda/end-invocation" if post => {
            let error = req
                .headers()
                .get(INVOCATION_ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            match read_body(req).await {
                Ok(_) => {
                    send(ApiEvent::InvocationEnd { error });
                    json_ok()
                }
                Err(status) => empty(status),
            }
        }
        "/lambda/hello"
        | "/lambda/flush"
        | "/lambda/start-invocation"
        | "/lambda/end-invocation" => empty(StatusCode::METHOD_NOT_ALLOWED),
        _ => empty(StatusCode::NOT_FOUND),
    })
}

/// A trace payload: read, counted, dropped, answered.
async fn traces(
    req: Request<Incoming>,
    stats: &ApiStats,
) -> Result<Response<Full<Bytes>>, Infallible> {
    stats.requests.fetch_add(1, Relaxed);
    if req.method() == Method::GET {
        return Ok(json_ok());
    }
    let path = req.uri().path().to_owned();
    Ok(match read_body(req).await {
        Ok(_) => {
            if stats.traces_dropped.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(
                    %path,
                    "a Datadog tracer sends traces to this extension: offpath ships metrics, not traces, \
                     so they are dropped (set DD_TRACE_ENABLED=false to stop the tracer)"
                );
            }
            json_ok()
        }
        Err(status) => empty(status),
    })
}

/// Read a body of at most [`MAX_BODY_BYTES`] within [`READ_TIMEOUT`]: 413 when larger, 408 when too slow,
/// 400 when the connection broke.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, StatusCode> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    match tokio::time::timeout(READ_TIMEOUT, body).await {
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
    }
}

fn json_ok() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests;
