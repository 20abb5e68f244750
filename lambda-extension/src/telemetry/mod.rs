//! The Lambda Telemetry API: a local HTTP listener and the `platform` subscription.
//!
//! The listener is started first, then `PUT /2022-07-01/telemetry` asks Lambda to POST `platform`
//! events to it in batches (`timeoutMs` 25, the minimum). The listener parses each batch ([`events`])
//! and hands the init, start, `runtimeDone` and report events to the lifecycle over a bounded
//! channel; other events are ignored. If the subscription is refused (an error status, or a 202 whose
//! body says `Telemetry.NotSupported`, as some emulators answer), the lifecycle runs without
//! `runtimeDone` and flushes at the next event instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::extension::ExtensionClient;
use crate::http::HttpError;

mod events;
pub use events::{InitReport, Report, RuntimeDone, TelemetryEvent, parse_batch};

const SUBSCRIBE_PATH: &str = "/2022-07-01/telemetry";
/// Largest batch accepted; Lambda's own `maxBytes` ceiling is 1 MiB.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Concurrent connections served; Lambda uses one or two.
const MAX_CONNECTIONS: usize = 16;
/// Telemetry events queued for the lifecycle; at most a few arrive per invocation.
pub const EVENT_QUEUE: usize = 1024;

/// Counters of the telemetry listener.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Batches received.
    pub batches: AtomicU64,
    /// Events handed to the lifecycle.
    pub events: AtomicU64,
    /// Events dropped because the lifecycle's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Batches that were not valid telemetry JSON (answered 200 all the same, so Lambda moves on).
    pub malformed: AtomicU64,
}

/// A listener start-up or subscription failure.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The listener could not bind (`OFFPATH_LAMBDA_TELEMETRY_PORT` in use?).
    #[error("cannot listen for telemetry on {addr} (OFFPATH_LAMBDA_TELEMETRY_PORT)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The Telemetry API is not available here (an emulator's `Telemetry.NotSupported`).
    #[error("the Telemetry API is not supported here: {body}")]
    NotSupported {
        /// The answer's body.
        body: String,
    },
    /// Lambda refused the subscription.
    #[error("the Telemetry API refused the subscription with HTTP {status}: {body}")]
    Refused {
        /// The status code.
        status: StatusCode,
        /// The answer's body.
        body: String,
    },
    /// The subscription call failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// The running telemetry listener. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct TelemetryListener {
    addr: SocketAddr,
    stats: Arc<TelemetryStats>,
    task: JoinHandle<()>,
}

impl TelemetryListener {
    /// Bind `addr` (port 0 picks a free port) and serve batches; events go to the returned receiver.
    ///
    /// # Errors
    /// [`TelemetryError::Bind`] if the address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<TelemetryEvent>), TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let stats = Arc::new(TelemetryStats::default());
        let task = tokio::spawn(accept_loop(listener, tx, Arc::clone(&stats)));
        Ok((
            Self {
                addr: bound,
                stats,
                task,
            },
            rx,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<TelemetryStats> {
        &self.stats
    }
}

impl Drop for TelemetryListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<TelemetryEvent>,
    stats: Arc<TelemetryStats>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "telemetry listener accept failed");
                continue;
            }
        };
        let tx = tx.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, tx.clone(), Arc::clone(&stats)));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "telemetry connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    tx: mpsc::Sender<TelemetryEvent>,
    stats: Arc<TelemetryStats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let body = match Limited::new(req.into_body(), MAX_BATCH_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            stats.malformed.fetch_add(1, Relaxed);
            return Ok(status(StatusCode::PAYLOAD_TOO_LARGE));
        }
    };
    stats.batches.fetch_add(1, Relaxed);
    match parse_batch(&body) {
        Ok(events) => {
            for event in events {
                match tx.try_send(event) {
                    Ok(()) => stats.events.fetch_add(1, Relaxed),
                    Err(_) => stats.dropped_queue_full.fetch_add(1, Relaxed),
                };
            }
        }
        Err(e) => {
            if stats.malformed.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(error = %e, "ignoring a telemetry batch that is not valid JSON");
            }
        }
    }
    Ok(status(StatusCode::OK))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

/// The subscription request body: `platform` events, buffered at most 25 ms, sent to `destination`.
pub fn subscription_body(destination: &str) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": "2022-12-13",
        "destination": { "protocol": "HTTP", "URI": destination },
        "types": ["platform"],
        "buffering": { "maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25 },
    })
}

/// Subscribe to `platform` events, delivered to `destination` (e.g. `http://sandbox.localdomain:8999`).
///
/// # Errors
/// [`TelemetryError::NotSupported`] or [`TelemetryError::Refused`] when Lambda declines,
/// [`TelemetryError::Http`] when the call fails.
pub async fn subscribe(client: &ExtensionClient, destination: &str) -> Result<(), TelemetryError> {
    let body = subscription_body(destination).to_string().into_bytes();
    let resp = client
        .http()
        .send_within(
            crate::extension::CALL_TIMEOUT,
            Method::PUT,
            SUBSCRIBE_PATH,
            &[("Lambda-Extension-Identifier", client.id())],
            Some(body),
        )
        .await?;
    classify(resp.status, &resp.body)
}

/// Decide from the subscription answer whether telemetry will flow.
///
/// # Errors
/// [`TelemetryError::NotSupported`] or [`TelemetryError::Refused`].
pub fn classify(status: StatusCode, body: &[u8]) -> Result<(), TelemetryError> {
    let text: String = String::from_utf8_lossy(body).chars().take(512).collect();
    if !status.is_success() {
        return Err(TelemetryError::Refused { status, body: text });
    }
    if text.contains("Telemetry.NotSupported") {
        return Err(TelemetryError::NotSupported { body: text });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_asks_for_platform_events_buffered_25_ms() {
        let b = subscription_body("http://sandbox.localdomain:8999");
        assert_eq!(b["types"], serde_json::json!(["platform"]));
        assert_eq!(b["buffering"]["timeoutMs"], 25);
        assert_eq!(b["buffering"]["maxItems"], 1000);
        assert_eq!(b["buffering"]["maxBytes"], 262_144);
        assert_eq!(b["destination"]["protocol"], "HTTP");
        assert_eq!(b["destination"]["URI"], "http://sandbox.localdomain:8999");
    }

    #[test]
    fn subscription_answers_are_classified() {
        let cases: &[(u16, &str, bool)] = &[
            (200, "OK", true),
            (
                202,
                r#"{"errorType":"Telemetry.NotSupported","errorMessage":"not supported"}"#,
                false,
            ),
            (202, "", true),
            (
                400,
                r#"{"errorType":"ValidationError","errorMessage":"bad"}"#,
                false,
            ),
            (500, "", false),
        ];
        for (status, body, ok) in cases {
            let got = classify(StatusCode::from_u16(*status).unwrap(), body.as_bytes());
            assert_eq!(got.is_ok(), *ok, "{status} {body}: {got:?}");
        }
        assert!(matches!(
            classify(StatusCode::ACCEPTED, b"Telemetry.NotSupported"),
            Err(TelemetryError::NotSupported { .. })
        ));
    }
}
