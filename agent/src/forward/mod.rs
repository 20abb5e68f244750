//! Datadog HTTP transport, retry classification and backoff, byte-capped retry queue, circuit breaker.
//!
//! [`Forwarder::send`] delivers payloads one after the other on one long-lived HTTP client, inside the
//! caller's deadline:
//!
//! - 2xx: delivered, `points.delivered += samples`.
//! - 400: dropped and counted (`PointDrop::IntakeRejected`); the intake's answer is logged once.
//! - 413: split in halves and resent; a single item that cannot be split is dropped (`PointDrop::TooLarge`).
//! - 401/403: the API key was refused: logged once, no retry loop; the breaker opens and the payload
//!   goes to the fallback (or waits in the retry queue when there is none).
//! - 404/408/429/5xx and transport errors: retried with jittered exponential backoff while the deadline
//!   allows; a connection that fails after it was established (a stale pooled connection, e.g. after a
//!   Lambda freeze) is retried once at once on a new connection.
//!
//! What is not delivered by the deadline waits in the retry queue, capped in bytes; the oldest payloads
//! leave it through the `overflow` channel (the fallback), or are dropped and counted
//! (`PointDrop::RetryQueueOverflow`) when there is no fallback. After [`BREAKER_THRESHOLD`] consecutive
//! failed attempts the circuit breaker opens: payloads go straight to `overflow` instead of waiting for a
//! dead intake, and one payload probes the intake with a growing backoff until it answers again.
//!
//! With `DD_API_KEY_SECRET_ARN` instead of `DD_API_KEY` the forwarder starts without a key: payloads wait
//! in the retry queue until [`secret::ApiKeySecret`] hands one over with [`Forwarder::set_api_key`].

mod queue;
mod retry;
pub mod secret;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

pub use queue::RetryQueue;
pub use retry::{
    Admission, Attempt, BREAKER_THRESHOLD, Backoff, Breaker, BreakerState, Outcome, RetryPolicy,
    TransportError, classify,
};

use crate::config::{ApiKey, ForwardConfig};
use crate::encode::{Encoder, Payload, PayloadKind, split};
use crate::telemetry::{PointDrop, Telemetry};

/// offpath's version, sent as `User-Agent: offpath/<version>` and `DD-Agent-Version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `DD-Agent-Payload` sent with protobuf bodies (the agent-payload schema version; Vector sends the same).
const AGENT_PAYLOAD_VERSION: &str = "4.87.0";

/// The intake path of the API key check.
pub const VALIDATE_PATH: &str = "/api/v1/validate";

/// How much of an error answer is kept for logs and `/status`.
const ERROR_BODY_MAX: usize = 512;

/// Most bytes of an answer read (so that the connection can be reused); the rest is discarded.
const RESPONSE_READ_MAX: usize = 64 * 1024;

/// Errors building the forwarder or checking the API key.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No API key was configured.
    #[error("no API key: set DD_API_KEY (or DD_API_KEY_SECRET_ARN)")]
    NoApiKey,
    /// The API key cannot travel in an HTTP header.
    #[error("DD_API_KEY contains characters that are not allowed in an HTTP header")]
    ApiKeyFormat,
    /// The intake URL does not parse.
    #[error("invalid intake URL {url:?}: {reason} (check DD_DD_URL / DD_URL / DD_SITE)")]
    IntakeUrl {
        /// The URL as configured.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The proxy URL does not parse.
    #[error("invalid proxy URL (check DD_PROXY_HTTPS / HTTPS_PROXY): {0}")]
    Proxy(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The intake refused the API key.
    #[error("the intake refused the API key with HTTP {status} (check DD_API_KEY and DD_SITE)")]
    KeyRejected {
        /// 401 or 403.
        status: u16,
    },
    /// The intake answered with an unexpected status.
    #[error("the intake answered HTTP {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The intake could not be reached.
    #[error("could not reach the intake (check DD_DD_URL / DD_SITE / DD_PROXY_HTTPS): {0}")]
    Transport(#[source] reqwest::Error),
}

/// What became of one payload after [`Forwarder::deliver`].
enum Fate {
    /// Delivered, or dropped and counted.
    Done,
    /// Split after a 413: send these instead.
    Parts(Vec<Payload>),
    /// Not delivered: queue or divert it.
    Undelivered(Payload),
}

/// Ships payloads to the Datadog intake; see the module documentation.
#[derive(Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    intake_url: String,
    /// `None` until the key from `DD_API_KEY_SECRET_ARN` is known; payloads wait in the queue meanwhile.
    api_key: Option<HeaderValue>,
    /// The intake refused the key (401/403) since [`Forwarder::take_key_rejected`] was last called.
    key_rejected: bool,
    timeout: Duration,
    telemetry: Arc<Telemetry>,
    overflow: Option<mpsc::Sender<Payload>>,
    queue: RetryQueue,
    breaker: Breaker,
    policy: RetryPolicy,
    encoder: Encoder,
    /// A 400 answer is logged once per process (the same bug would repeat at every flush).
    logged_rejection: bool,
    /// A refused key is logged once until a payload is delivered again.
    logged_key_problem: bool,
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

/// The full error chain of `e` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Read at most [`RESPONSE_READ_MAX`] bytes of an answer.
async fn read_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= RESPONSE_READ_MAX {
            break;
        }
    }
    body
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_MAX)]);
    s.trim().to_owned()
}

impl Forwarder {
    /// A forwarder for `cfg.intake_url`, with one HTTP client (rustls, webpki roots) kept for the life
    /// of the process.
    ///
    /// `overflow` receives what the retry queue cannot hold and, while the breaker is open, everything;
    /// `None` drops and counts it instead (`OFFPATH_FALLBACK=off`).
    ///
    /// Without `cfg.api_key` but with `cfg.api_key_secret_arn`, the forwarder starts keyless: what it is
    /// given waits in the retry queue until [`Forwarder::set_api_key`].
    ///
    /// # Errors
    /// Neither an API key nor a secret ARN (the caller runs local mode instead), an invalid key, intake
    /// URL or proxy, or a client that cannot be built.
    pub fn new(
        cfg: &ForwardConfig,
        telemetry: Arc<Telemetry>,
        overflow: Option<mpsc::Sender<Payload>>,
    ) -> Result<Self, ForwardError> {
        let api_key = match &cfg.api_key {
            Some(key) => Some(secret::header_value(key).ok_or(ForwardError::ApiKeyFormat)?),
            None if cfg.api_key_secret_arn.is_some() => None,
            None => return Err(ForwardError::NoApiKey),
        };
        let intake_url = cfg.intake_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&intake_url).map_err(|e| ForwardError::IntakeUrl {
            url: intake_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ForwardError::IntakeUrl {
                url: intake_url,
                reason: "the scheme must be https:// (or http:// for tests)".to_owned(),
            });
        }

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
        let client = builder.build().map_err(ForwardError::Client)?;
        let policy = RetryPolicy::default();
        Ok(Self {
            client,
            intake_url,
            api_key,
            key_rejected: false,
            timeout: cfg.timeout,
            telemetry,
            overflow,
            queue: RetryQueue::new(cfg.retry_queue_max_bytes),
            breaker: Breaker::new(policy.breaker_threshold, policy.probe),
            policy,
            encoder: Encoder::new(cfg.zstd_level),
            logged_rejection: false,
            logged_key_problem: false,
        })
    }

    /// Replace the retry and breaker tuning (tests, and the Lambda extension's short budgets).
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self.breaker = Breaker::new(policy.breaker_threshold, policy.probe);
        self.publish_breaker();
        self
    }

    /// Use `key` from now on (resolved from `DD_API_KEY_SECRET_ARN`). A key that differs from the one
    /// in use closes the circuit breaker: a refused key is no reason to wait for a probe once replaced.
    ///
    /// # Errors
    /// [`ForwardError::ApiKeyFormat`] when the key cannot travel in an HTTP header.
    pub fn set_api_key(&mut self, key: &ApiKey) -> Result<(), ForwardError> {
        let value = secret::header_value(key).ok_or(ForwardError::ApiKeyFormat)?;
        if self.api_key.as_ref() != Some(&value) {
            if self.api_key.is_some() {
                self.breaker = Breaker::new(self.policy.breaker_threshold, self.policy.probe);
                self.publish_breaker();
            }
            self.logged_key_problem = false;
            self.api_key = Some(value);
        }
        Ok(())
    }

    /// Whether an API key is set (it is not until `DD_API_KEY_SECRET_ARN` is resolved).
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// Whether the intake refused the key (401/403) since the last call.
    pub fn take_key_rejected(&mut self) -> bool {
        std::mem::take(&mut self.key_rejected)
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// When an open breaker lets the next probe go; `None` while it is closed.
    pub fn next_probe(&self) -> Option<Instant> {
        match self.breaker.state() {
            BreakerState::Closed => None,
            _ => self.breaker.next_probe(),
        }
    }

    /// Deliver `payloads` before `deadline`, retrying transient failures with backoff; what is not
    /// delivered by then joins the retry queue (or goes to `overflow` while the breaker is open).
    /// When everything went through and time is left, queued payloads are retried too.
    pub async fn send(&mut self, payloads: Vec<Payload>, deadline: Instant) {
        self.run(payloads.into(), deadline).await;
        if self.breaker.state() == BreakerState::Closed && !self.queue.is_empty() {
            self.retry_queued(deadline).await;
        }
    }

    /// Retry what waits in the retry queue, oldest first, before `deadline`.
    pub async fn retry_queued(&mut self, deadline: Instant) {
        let queued = self.queue.drain();
        self.sync_queue_bytes();
        self.run(queued.into(), deadline).await;
    }

    /// Take everything out of the retry queue (at shutdown, for the fallback).
    pub fn take_queued(&mut self) -> Vec<Payload> {
        let all = self.queue.drain();
        self.sync_queue_bytes();
        all
    }

    /// Bytes (compressed bodies) waiting in the retry queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
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
        let body = read_body(resp).await;
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(ForwardError::KeyRejected { status }),
            _ => Err(ForwardError::Status {
                status,
                body: excerpt(&body),
            }),
        }
    }

    async fn run(&mut self, mut work: VecDeque<Payload>, deadline: Instant) {
        while let Some(p) = work.pop_front() {
            if p.exceeds_limits() {
                // Only a single item that the encoder could not cut gets here; never send it.
                self.split_or_drop(&p, &mut work);
                continue;
            }
            let now = Instant::now();
            if now >= deadline || self.api_key.is_none() {
                self.undelivered(p, deadline).await;
                continue;
            }
            let fate = match self.breaker.admit(now) {
                Admission::Divert => Fate::Undelivered(p),
                Admission::Probe => {
                    self.publish_breaker();
                    tracing::debug!(kind = p.kind.as_str(), "probing the intake");
                    self.deliver(p, deadline, true).await
                }
                Admission::Send => self.deliver(p, deadline, false).await,
            };
            match fate {
                Fate::Done => {}
                Fate::Parts(parts) => {
                    for part in parts.into_iter().rev() {
                        work.push_front(part);
                    }
                }
                Fate::Undelivered(p) => self.undelivered(p, deadline).await,
            }
        }
    }

    fn split_or_drop(&mut self, p: &Payload, work: &mut VecDeque<Payload>) {
        match split(p, &self.encoder) {
            Ok(parts) => {
                for part in parts.into_iter().rev() {
                    work.push_front(part);
                }
            }
            Err(e) => {
                tracing::warn!(
                    kind = p.kind.as_str(),
                    bytes = p.body.len(),
                    raw_bytes = p.raw_len,
                    samples = p.samples,
                    error = %e,
                    "dropping a payload too large for the intake"
                );
                self.telemetry
                    .points
                    .drop_points(PointDrop::TooLarge, p.samples);
            }
        }
    }

    /// Try one payload until it is delivered, refused for good, or the deadline / breaker stops it.
    /// A probe gets one attempt (plus the at-once retry of a stale connection).
    async fn deliver(&mut self, p: Payload, deadline: Instant, probe: bool) -> Fate {
        let mut backoff_attempt = 0u32;
        let mut stale_retried = false;
        loop {
            let outcome = classify(self.attempt(&p, deadline).await);
            match outcome {
                Outcome::Delivered => {
                    let t = &self.telemetry;
                    t.points.delivered.fetch_add(p.samples, Relaxed);
                    t.forward.payloads_delivered.fetch_add(1, Relaxed);
                    self.intake_answered();
                    return Fate::Done;
                }
                Outcome::Drop(reason) => {
                    self.telemetry.points.drop_points(reason, p.samples);
                    self.intake_answered();
                    return Fate::Done;
                }
                Outcome::Split => {
                    self.intake_answered();
                    let mut parts = VecDeque::new();
                    self.split_or_drop(&p, &mut parts);
                    return Fate::Parts(parts.into());
                }
                Outcome::KeyProblem => {
                    self.key_rejected = true;
                    if !self.logged_key_problem {
                        self.logged_key_problem = true;
                        tracing::error!(
                            intake = %self.intake_url,
                            "the intake refused the API key (401/403): check DD_API_KEY (or the secret of \
                             DD_API_KEY_SECRET_ARN) and DD_SITE; \
                             payloads go to the fallback until a probe succeeds"
                        );
                    }
                    if self.breaker.trip(Instant::now(), rand::random()) {
                        self.breaker_opened();
                    }
                    self.publish_breaker();
                    return Fate::Undelivered(p);
                }
                Outcome::Retry { stale } => {
                    if stale && !stale_retried {
                        // A connection that died under us says nothing about the intake: once, at once.
                        stale_retried = true;
                        self.telemetry.forward.retries.fetch_add(1, Relaxed);
                        continue;
                    }
                    let opened = self.breaker.record_failure(Instant::now(), rand::random());
                    if opened {
                        self.breaker_opened();
                    }
                    self.publish_breaker();
                    if probe || self.breaker.state() != BreakerState::Closed {
                        return Fate::Undelivered(p);
                    }
                    let delay = self.policy.backoff.delay(backoff_attempt, rand::random());
                    backoff_attempt += 1;
                    if Instant::now() + delay >= deadline {
                        return Fate::Undelivered(p);
                    }
                    tokio::time::sleep(delay).await;
                    self.telemetry.forward.retries.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// One HTTP request for `p`, bounded by the request timeout and the deadline.
    async fn attempt(&mut self, p: &Payload, deadline: Instant) -> Attempt {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = self.timeout.min(remaining).max(Duration::from_millis(1));
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
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = read_body(resp).await;
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
            Err(e) => {
                let kind = transport_error(&e);
                let msg = error_chain(&e);
                tracing::debug!(kind = p.kind.as_str(), error = %msg, "intake request failed");
                self.last_error(format!("{} {kind:?}: {msg}", p.kind.path()));
                Attempt::Transport(kind)
            }
        }
    }

    fn last_error(&self, msg: String) {
        if let Ok(mut last) = self.telemetry.forward.last_intake_error.lock() {
            *last = Some(msg);
        }
    }

    /// The intake answered (2xx, 400 or 413): it is up.
    fn intake_answered(&mut self) {
        if self.breaker.state() != BreakerState::Closed {
            tracing::info!("the intake answers again; circuit breaker closed");
        }
        self.breaker.record_success();
        self.logged_key_problem = false;
        self.publish_breaker();
    }

    fn breaker_opened(&self) {
        let next = self
            .breaker
            .next_probe()
            .map(|t| t.saturating_duration_since(Instant::now()));
        tracing::warn!(
            probe_in = ?next,
            fallback = self.overflow.is_some(),
            "the intake keeps failing; circuit breaker open: payloads go to the fallback until a probe succeeds"
        );
    }

    fn publish_breaker(&self) {
        self.telemetry
            .forward
            .breaker
            .store(self.breaker.state() as u64, Relaxed);
    }

    fn sync_queue_bytes(&self) {
        self.telemetry
            .forward
            .retry_queue_bytes
            .store(self.queue.bytes() as u64, Relaxed);
    }

    /// A payload that was not delivered: to the fallback while the breaker is open (and there is one),
    /// else into the retry queue.
    async fn undelivered(&mut self, p: Payload, deadline: Instant) {
        if self.breaker.state() != BreakerState::Closed && self.overflow.is_some() {
            // The intake is known to be down: nothing waits for it, queued payloads included.
            for old in self.queue.drain() {
                self.hand_off(old, deadline).await;
            }
            self.sync_queue_bytes();
            self.hand_off(p, deadline).await;
            return;
        }
        let evicted = self.queue.push(p);
        self.sync_queue_bytes();
        for old in evicted {
            self.hand_off(old, deadline).await;
        }
    }

    /// Give a payload to the fallback, or drop and count it when there is none (or it stays full past
    /// the deadline, or it is gone).
    async fn hand_off(&mut self, p: Payload, deadline: Instant) {
        let samples = p.samples;
        let sent = match &self.overflow {
            None => false,
            Some(tx) => match tx.try_send(p) {
                Ok(()) => true,
                Err(TrySendError::Full(p)) => {
                    matches!(
                        tokio::time::timeout_at(deadline, tx.send(p)).await,
                        Ok(Ok(()))
                    )
                }
                Err(TrySendError::Closed(_)) => false,
            },
        };
        if !sent {
            self.telemetry
                .points
                .drop_points(PointDrop::RetryQueueOverflow, samples);
        }
    }
}
