//! The HTTP side of the forwarder: the one client and its default headers, one request of a payload to
//! the intake (bounded by the request timeout and the delivery's deadline), and the API key check.
//! What the answer means for the payload is decided in `retry::classify` and acted on in `delivery`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

use super::retry::{Attempt, TransportError};
use super::{Deadline, ForwardError, Forwarder, VALIDATE_PATH, VERSION};
use crate::config::ForwardConfig;
use crate::encode::{Payload, PayloadKind};
use crate::errors::Chain;

/// `DD-Agent-Payload` sent with protobuf bodies (the agent-payload schema version; Vector sends the same).
const AGENT_PAYLOAD_VERSION: &str = "4.87.0";

/// How much of an error answer is kept for logs and `/status`.
const ERROR_BODY_MAX: usize = 512;

/// Most bytes of an answer read (so that the connection can be reused); the rest is discarded.
const RESPONSE_READ_MAX: usize = 64 * 1024;

/// What one HTTP request of the front payload carries: a reference to its body, never the payload.
#[derive(Debug)]
pub(super) struct Request {
    kind: PayloadKind,
    body: Bytes,
    samples: u64,
}

impl Request {
    pub(super) fn of(p: &Payload) -> Self {
        Self {
            kind: p.kind,
            body: p.body.clone(),
            samples: p.samples,
        }
    }
}

/// The HTTP client of a forwarder (rustls, webpki roots), kept for the life of the process: default
/// headers, timeouts, proxy and TLS settings from `cfg`.
pub(super) fn client(cfg: &ForwardConfig) -> Result<reqwest::Client, ForwardError> {
    let mut headers = HeaderMap::new();
    let ua = format!("offpath/{VERSION}");
    headers.insert(
        USER_AGENT,
        HeaderValue::from_str(&ua).unwrap_or(HeaderValue::from_static("offpath")),
    );
    headers.insert("DD-Agent-Version", HeaderValue::from_static(VERSION));
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        // Only the configured proxy, never one picked up from HTTP_PROXY & co. behind our back.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .timeout(cfg.timeout);
    if !cfg.keep_idle_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    if let Some(proxy) = &cfg.proxy {
        builder = builder.proxy(reqwest::Proxy::https(proxy).map_err(ForwardError::Proxy)?);
    }
    if cfg.skip_tls_verify {
        tracing::warn!(
            "TLS certificate verification of the intake is DISABLED (DD_SKIP_SSL_VALIDATION=true); \
             anyone on the path can read the API key and the metrics. Never use this in production."
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(ForwardError::Client)
}

fn transport_error(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Connect
    } else {
        TransportError::Closed
    }
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_MAX)]);
    s.trim().to_owned()
}

impl Forwarder {
    /// One HTTP request, bounded by the request timeout and the deadline (also when the deadline is
    /// brought forward while the request is in flight: the request is abandoned as timed out).
    pub(super) async fn attempt(&mut self, p: &Request, deadline: &Deadline) -> Attempt {
        let timeout = self
            .timeout
            .min(deadline.remaining())
            .max(Duration::from_millis(1));
        let mut req = self
            .client
            .post(format!("{}{}", self.intake_url, p.kind.path()));
        if let Some(key) = &self.api_key {
            req = req.header("DD-API-KEY", key.clone());
        }
        req = req
            .header(CONTENT_TYPE, p.kind.content_type())
            .header(CONTENT_ENCODING, "zstd")
            .timeout(timeout)
            .body(p.body.clone());
        if matches!(p.kind, PayloadKind::Series | PayloadKind::Sketches) {
            req = req.header("DD-Agent-Payload", AGENT_PAYLOAD_VERSION);
        }
        match deadline.bound(req.send()).await {
            Some(Ok(resp)) => {
                let status = resp.status().as_u16();
                // The status is the answer; a body cut short by the deadline or a transport error only
                // loses the log text.
                let body = deadline
                    .bound(crate::http::read_body(resp, RESPONSE_READ_MAX))
                    .await
                    .and_then(Result::ok)
                    .unwrap_or_default();
                if !(200..300).contains(&status) {
                    let text = excerpt(&body);
                    if status == 400 && !self.logged_rejection {
                        self.logged_rejection = true;
                        tracing::error!(
                            kind = p.kind.as_str(),
                            samples = p.samples,
                            answer = %text,
                            "the intake rejected a payload as invalid (HTTP 400); it is dropped \
                             (logged once)"
                        );
                    } else {
                        tracing::debug!(kind = p.kind.as_str(), status, answer = %text, "intake error");
                    }
                    self.last_error(format!("{} {status}: {text}", p.kind.path()));
                }
                Attempt::Status(status)
            }
            Some(Err(e)) => {
                let kind = transport_error(&e);
                let msg = Chain(&e).to_string();
                tracing::debug!(kind = p.kind.as_str(), error = %msg, "intake request failed");
                self.last_error(format!("{} {kind:?}: {msg}", p.kind.path()));
                Attempt::Transport(kind)
            }
            None => {
                tracing::debug!(
                    kind = p.kind.as_str(),
                    "intake request abandoned: the delivery deadline was brought forward"
                );
                self.last_error(format!(
                    "{} Timeout: abandoned at the deadline",
                    p.kind.path()
                ));
                Attempt::Transport(TransportError::Timeout)
            }
        }
    }

    /// Check the API key with `GET /api/v1/validate`.
    ///
    /// # Errors
    /// [`ForwardError::KeyRejected`] on 401/403, [`ForwardError::Status`] on another non-2xx answer,
    /// [`ForwardError::Transport`] when the intake cannot be reached.
    pub async fn validate_api_key(&self) -> Result<(), ForwardError> {
        let key = self.api_key.clone().ok_or(ForwardError::NoApiKey)?;
        let resp = self
            .client
            .get(format!("{}{VALIDATE_PATH}", self.intake_url))
            .header("DD-API-KEY", key)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(ForwardError::Transport)?;
        let status = resp.status().as_u16();
        let body = crate::http::read_body(resp, RESPONSE_READ_MAX)
            .await
            .unwrap_or_default();
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(ForwardError::KeyRejected { status }),
            _ => Err(ForwardError::Status {
                status,
                body: excerpt(&body),
            }),
        }
    }

    pub(super) fn last_error(&self, msg: String) {
        if self.dest.is_main()
            && let Ok(mut last) = self.telemetry.forward.last_intake_error.lock()
        {
            *last = Some(msg.clone());
        }
        if let Ok(mut last) = self.row.last_intake_error.lock() {
            *last = Some(msg);
        }
    }
}
