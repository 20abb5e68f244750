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
//! (`PointDrop::RetryQueueOverflow`) when there is no fallback. After `BREAKER_THRESHOLD` consecutive
//! failed attempts the circuit breaker opens: payloads go straight to `overflow` instead of waiting for a
//! dead intake, and one payload probes the intake with a growing backoff until it answers again.
//!
//! The forwarder owns its [`ApiKeySource`]. With `DD_API_KEY_SECRET_ARN` instead of `DD_API_KEY` it starts
//! without a key: every delivery first asks the source for one (the secret is read at the first
//! delivery, within its deadline), and payloads wait in the retry queue until it has one. A 401/403
//! tells the source, which reads the secret again at the next delivery (the key may have been rotated).
//!
//! ## Every payload ends in exactly one place
//!
//! A payload handed to [`Forwarder::send`] is delivered (`points.delivered`), dropped with a reason, or
//! given to the fallback (which counts `points.fell_back` or its own drops); it is never cloned into two
//! of these. The forwarder owns it from the moment `send` is *called* (not first polled) until its fate
//! is settled, which happens in one step with no `.await` in between:
//!
//! - `pending` holds the payloads of the delivery in progress; the front one is being tried, and only a
//!   copy of its body (a `Bytes` reference) travels in the HTTP request.
//! - the retry queue holds what waits for a later delivery (capped in bytes);
//! - `spill` holds what goes to the fallback until the `overflow` channel has room (capped in bytes
//!   too; over the cap the oldest is dropped as `PointDrop::FallbackOverflow`).
//!
//! **Ending a delivery early.** The graceful way is a [`Deadline`] brought forward with its
//! [`DeadlineCut`]: every wait ends, an answer that arrived in time still counts, and what is left goes
//! to the retry queue as at any deadline. Dropping the future of `send` or `retry_queued` is also safe:
//! the next call (or [`Forwarder::take_queued`]) moves what it left in `pending` to the retry queue, and
//! a probe it left unanswered counts as a failed probe (the breaker never stays half-open).
//!
//! **At least once.** A request abandoned while in flight (its deadline reached, or its future dropped)
//! may have reached the intake. Its payload is not counted delivered and is sent again or written to the
//! fallback, so the intake can see it twice. This is the only duplication, and it is bounded to the
//! request in flight; the ledger (`received = delivered + fell_back + dropped`) stays exact, since the
//! payload is counted once, where it ended.

mod deadline;
mod destination;
mod queue;
mod retry;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

pub use deadline::{Deadline, DeadlineCut};
pub use destination::{
    Destination, DestinationId, KEY_SUFFIX_CHARS, MAX_DESTINATIONS, SECRET_KEY_NAME,
};
use queue::RetryQueue;
use retry::{Admission, Attempt, Breaker, Outcome, TransportError, classify};
pub use retry::{Backoff, BreakerState, RetryPolicy};

use crate::auth::{ApiKey, ApiKeySource};
use crate::config::ForwardConfig;
use crate::encode::{Encoder, Payload, PayloadKind, split};
use crate::errors::Chain;
use crate::telemetry::{PointDrop, Telemetry};

/// offpath's version, sent as `User-Agent: offpath/<version>` and `DD-Agent-Version`.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `DD-Agent-Payload` sent with protobuf bodies (the agent-payload schema version; Vector sends the same).
const AGENT_PAYLOAD_VERSION: &str = "4.87.0";

/// The intake path of the API key check.
pub(crate) const VALIDATE_PATH: &str = "/api/v1/validate";

/// A request is not started with less time than this left before the deadline: it could not be
/// answered in time, yet might reach the intake and be sent again later (see "At least once").
const MIN_ATTEMPT: Duration = Duration::from_millis(5);

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
    #[error("invalid proxy URL (check DD_PROXY_HTTPS / HTTPS_PROXY)")]
    Proxy(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
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
    #[error("could not reach the intake (check DD_DD_URL / DD_SITE / DD_PROXY_HTTPS)")]
    Transport(#[source] reqwest::Error),
}

/// What the intake made of the payload at the front of `pending` ([`Forwarder::deliver_front`]);
/// [`Forwarder::settle_front`] acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The intake accepted it.
    Delivered,
    /// Refused for good: drop and count under this reason.
    Drop(PointDrop),
    /// Too large (413): split it and send the parts.
    Split,
    /// Not delivered: to the retry queue, or to the fallback while the breaker is open.
    Undelivered,
}

/// What one HTTP request of the front payload carries: a reference to its body, never the payload.
#[derive(Debug)]
struct Request {
    kind: PayloadKind,
    body: Bytes,
    samples: u64,
}

impl Request {
    fn of(p: &Payload) -> Self {
        Self {
            kind: p.kind,
            body: p.body.clone(),
            samples: p.samples,
        }
    }
}

/// Ships payloads to the Datadog intake; see the module documentation.
#[derive(Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    intake_url: String,
    /// Where the key comes from (asked before every delivery).
    key: ApiKeySource,
    /// The key in use as a header; `None` until the key from `DD_API_KEY_SECRET_ARN` is known (payloads
    /// wait in the queue meanwhile).
    api_key: Option<HeaderValue>,
    timeout: Duration,
    telemetry: Arc<Telemetry>,
    overflow: Option<mpsc::Sender<Payload>>,
    queue: RetryQueue,
    /// The delivery in progress, in order; the front payload is being tried. A payload leaves only when
    /// its fate is settled, so a dropped `send` future loses nothing (see the module documentation).
    pending: VecDeque<Payload>,
    /// Payloads on their way to the fallback, oldest first, waiting for room in `overflow`; capped in
    /// bytes like the retry queue (over the cap the oldest are dropped, never the newest).
    spill: VecDeque<Payload>,
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

/// Read at most [`RESPONSE_READ_MAX`] bytes of an answer (what a transport error cut short is lost:
/// the status is the answer, the body only goes to the log).
async fn read_body(resp: reqwest::Response) -> Vec<u8> {
    crate::http::read_body(resp, RESPONSE_READ_MAX)
        .await
        .unwrap_or_default()
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_MAX)]);
    s.trim().to_owned()
}

impl Forwarder {
    /// A forwarder for `cfg.intake_url` with the key from `key`, with one HTTP client (rustls, webpki
    /// roots) kept for the life of the process.
    ///
    /// `overflow` receives what the retry queue cannot hold and, while the breaker is open, everything;
    /// `None` drops and counts it instead (`OFFPATH_FALLBACK=off`).
    ///
    /// With a secret as `key`, the forwarder starts keyless: what it is given waits in the retry queue
    /// until the secret is read (at the first delivery).
    ///
    /// # Errors
    /// An invalid key, intake URL or proxy, or a client that cannot be built.
    pub fn new(
        cfg: &ForwardConfig,
        key: ApiKeySource,
        telemetry: Arc<Telemetry>,
        overflow: Option<mpsc::Sender<Payload>>,
    ) -> Result<Self, ForwardError> {
        let api_key = match key.initial() {
            Some(key) => Some(key.header_value().ok_or(ForwardError::ApiKeyFormat)?),
            None => None,
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
            key,
            api_key,
            timeout: cfg.timeout,
            telemetry,
            overflow,
            queue: RetryQueue::new(cfg.retry_queue_max_bytes),
            pending: VecDeque::new(),
            spill: VecDeque::new(),
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

    /// Ask the key source for a new key before a delivery (the secret is read when its key is unknown
    /// or was refused), waiting until `deadline` at most.
    async fn refresh_key(&mut self, deadline: Instant) {
        if let Some(key) = self.key.refresh(deadline).await {
            if let Err(e) = self.use_key(&key) {
                tracing::error!(error = %e, "DD_API_KEY_SECRET_ARN: unusable API key");
            }
        }
    }

    /// Use `key` from now on (read from `DD_API_KEY_SECRET_ARN`). A key that differs from the one in use
    /// closes the circuit breaker: a refused key is no reason to wait for a probe once replaced.
    fn use_key(&mut self, key: &ApiKey) -> Result<(), ForwardError> {
        let value = key.header_value().ok_or(ForwardError::ApiKeyFormat)?;
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
    ///
    /// The forwarder owns `payloads` as soon as this is called, before the future is polled: dropping
    /// the future loses nothing (see the module documentation). To end a delivery early and keep exact
    /// accounting for the answers already on their way, bring a movable [`Deadline`] forward instead.
    pub fn send(
        &mut self,
        payloads: Vec<Payload>,
        deadline: impl Into<Deadline>,
    ) -> impl Future<Output = ()> + '_ {
        self.settle_abandoned();
        self.pending.extend(payloads);
        let deadline = deadline.into();
        async move {
            self.refresh_key(deadline.at()).await;
            self.run(&deadline).await;
            if self.breaker.state() == BreakerState::Closed && !self.queue.is_empty() {
                self.pending.extend(self.queue.drain());
                self.sync_queue_bytes();
                self.run(&deadline).await;
            }
        }
    }

    /// Retry what waits in the retry queue, oldest first, before `deadline`. Like [`Forwarder::send`],
    /// it takes the queued payloads over when called, so dropping the future loses nothing.
    pub fn retry_queued(&mut self, deadline: impl Into<Deadline>) -> impl Future<Output = ()> + '_ {
        self.settle_abandoned();
        self.pending.extend(self.queue.drain());
        self.sync_queue_bytes();
        let deadline = deadline.into();
        async move {
            self.refresh_key(deadline.at()).await;
            self.run(&deadline).await;
        }
    }

    /// Take everything not yet delivered (at shutdown, for the fallback): what waits for room in the
    /// fallback channel, then the retry queue, then what a dropped delivery left behind.
    pub fn take_queued(&mut self) -> Vec<Payload> {
        self.settle_abandoned();
        let mut all: Vec<Payload> = self.spill.drain(..).collect();
        all.extend(self.queue.drain());
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

    /// Settle what a dropped `send` / `retry_queued` future left behind: its payloads join the retry
    /// queue (the one that was in flight may have reached the intake: at least once), and a probe left
    /// unanswered counts as a failed probe, so the breaker does not stay half-open.
    fn settle_abandoned(&mut self) {
        if self.breaker.state() == BreakerState::HalfOpen {
            self.breaker.record_failure(Instant::now(), rand::random());
            self.publish_breaker();
        }
        if !self.pending.is_empty() {
            tracing::debug!(
                payloads = self.pending.len(),
                "a delivery was cancelled; its payloads wait in the retry queue"
            );
        }
        while let Some(p) = self.pending.pop_front() {
            self.undelivered(p);
        }
    }

    /// Work through `pending` until it is empty. Every payload leaves it only when its fate is settled.
    async fn run(&mut self, deadline: &Deadline) {
        loop {
            self.drain_spill(deadline).await;
            let Some(front) = self.pending.front() else {
                break;
            };
            if front.exceeds_limits() {
                // Only a single item that the encoder could not cut gets here; never send it.
                self.settle_front(Verdict::Split);
                continue;
            }
            let now = Instant::now();
            if deadline.at().saturating_duration_since(now) < MIN_ATTEMPT || self.api_key.is_none()
            {
                self.settle_front(Verdict::Undelivered);
                continue;
            }
            let probe = match self.breaker.admit(now) {
                Admission::Divert => {
                    self.settle_front(Verdict::Undelivered);
                    continue;
                }
                Admission::Probe => {
                    self.publish_breaker();
                    tracing::debug!(kind = front.kind.as_str(), "probing the intake");
                    true
                }
                Admission::Send => false,
            };
            // The verdict is acted on in the same poll that produced it: no payload is ever both
            // settled and left in `pending`.
            let verdict = self.deliver_front(deadline, probe).await;
            self.settle_front(verdict);
        }
        self.drain_spill(deadline).await;
    }

    /// Take the front payload out of `pending` and put it where `verdict` says, counting it.
    fn settle_front(&mut self, verdict: Verdict) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        match verdict {
            Verdict::Delivered => {
                let t = &self.telemetry;
                t.points.delivered.fetch_add(p.samples, Relaxed);
                t.forward.payloads_delivered.fetch_add(1, Relaxed);
            }
            Verdict::Drop(reason) => self.telemetry.points.drop_points(reason, p.samples),
            Verdict::Split => self.split_or_drop(p),
            Verdict::Undelivered => self.undelivered(p),
        }
    }

    /// Replace `p` at the front of `pending` by its halves (their samples add up to its samples), or
    /// drop and count a single item that cannot be cut.
    fn split_or_drop(&mut self, p: Payload) {
        match split(&p, &self.encoder) {
            Ok(parts) => {
                for part in parts.into_iter().rev() {
                    self.pending.push_front(part);
                }
            }
            Err(e) => {
                tracing::warn!(
                    kind = p.kind.as_str(),
                    bytes = p.body.len(),
                    raw_bytes = p.raw_len,
                    samples = p.samples,
                    error = %Chain(&e),
                    "dropping a payload too large for the intake"
                );
                self.telemetry
                    .points
                    .drop_points(PointDrop::TooLarge, p.samples);
            }
        }
    }

    /// Try the front payload of `pending` until it is delivered, refused for good, or the deadline /
    /// breaker stops it. A probe gets one attempt (plus the at-once retry of a stale connection). The
    /// payload stays in `pending` meanwhile; only a copy of its body is sent.
    async fn deliver_front(&mut self, deadline: &Deadline, probe: bool) -> Verdict {
        let Some(req) = self.pending.front().map(Request::of) else {
            return Verdict::Undelivered;
        };
        let mut backoff_attempt = 0u32;
        let mut stale_retried = false;
        let mut retry = false;
        loop {
            if retry {
                if deadline.remaining() < MIN_ATTEMPT {
                    return Verdict::Undelivered;
                }
                self.telemetry.forward.retries.fetch_add(1, Relaxed);
            }
            retry = true;
            let outcome = classify(self.attempt(&req, deadline).await);
            match outcome {
                Outcome::Delivered => {
                    self.intake_answered();
                    return Verdict::Delivered;
                }
                Outcome::Drop(reason) => {
                    self.intake_answered();
                    return Verdict::Drop(reason);
                }
                Outcome::Split => {
                    self.intake_answered();
                    return Verdict::Split;
                }
                Outcome::KeyProblem => {
                    self.key.rejected(Instant::now());
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
                    return Verdict::Undelivered;
                }
                Outcome::Retry { stale } => {
                    if stale && !stale_retried {
                        // A connection that died under us says nothing about the intake: once, at once.
                        stale_retried = true;
                        continue;
                    }
                    let opened = self.breaker.record_failure(Instant::now(), rand::random());
                    if opened {
                        self.breaker_opened();
                    }
                    self.publish_breaker();
                    if probe || self.breaker.state() != BreakerState::Closed {
                        return Verdict::Undelivered;
                    }
                    let delay = self.policy.backoff.delay(backoff_attempt, rand::random());
                    backoff_attempt += 1;
                    if Instant::now() + delay >= deadline.at() {
                        return Verdict::Undelivered;
                    }
                    if deadline.bound(tokio::time::sleep(delay)).await.is_none() {
                        // The deadline was brought forward during the backoff.
                        return Verdict::Undelivered;
                    }
                }
            }
        }
    }

    /// One HTTP request, bounded by the request timeout and the deadline (also when the deadline is
    /// brought forward while the request is in flight: the request is abandoned as timed out).
    async fn attempt(&mut self, p: &Request, deadline: &Deadline) -> Attempt {
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
                // The status is the answer; a body cut short by the deadline only loses the log text.
                let body = deadline.bound(read_body(resp)).await.unwrap_or_default();
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

    /// Log the opening with the intake's last error (DNS, TLS, refused connection, HTTP status and
    /// answer), so the cause is in the log and not only in `/status`.
    fn breaker_opened(&self) {
        let next = self
            .breaker
            .next_probe()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let cause = self
            .telemetry
            .forward
            .last_intake_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        tracing::warn!(
            probe_in = ?next,
            fallback = self.overflow.is_some(),
            cause = %cause,
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
    /// else into the retry queue, whose evictions go to the fallback.
    fn undelivered(&mut self, p: Payload) {
        if self.breaker.state() != BreakerState::Closed && self.overflow.is_some() {
            // The intake is known to be down: nothing waits for it, queued payloads included.
            for old in self.queue.drain() {
                self.divert(old);
            }
            self.sync_queue_bytes();
            self.divert(p);
            return;
        }
        let evicted = self.queue.push(p);
        self.sync_queue_bytes();
        for old in evicted {
            self.divert(old);
        }
    }

    /// Give a payload to the fallback (in order: after what already waits in `spill`), or drop and
    /// count it when there is none. When the fallback channel is full it waits in `spill`; the
    /// delivery then waits for room ([`Forwarder::drain_spill`]).
    fn divert(&mut self, p: Payload) {
        let Some(tx) = &self.overflow else {
            self.telemetry
                .points
                .drop_points(PointDrop::RetryQueueOverflow, p.samples);
            return;
        };
        let p = if self.spill.is_empty() {
            match tx.try_send(p) {
                Ok(()) => return,
                Err(TrySendError::Full(p)) => p,
                Err(TrySendError::Closed(p)) => {
                    // The fallback task is gone (it only ends when the forwarder is dropped).
                    self.telemetry
                        .points
                        .drop_points(PointDrop::FallbackOverflow, p.samples);
                    return;
                }
            }
        } else {
            p
        };
        self.spill.push_back(p);
        // The fallback is behind by a whole channel: keep at most a retry queue's worth waiting.
        let mut bytes: usize = self.spill.iter().map(|p| p.body.len()).sum();
        while bytes > self.queue.max_bytes() && self.spill.len() > 1 {
            if let Some(old) = self.spill.pop_front() {
                bytes -= old.body.len();
                self.telemetry
                    .points
                    .drop_points(PointDrop::FallbackOverflow, old.samples);
            }
        }
    }

    /// Hand what waits in `spill` to the fallback channel, waiting for room until `deadline`; what is
    /// still waiting then stays for the next delivery or [`Forwarder::take_queued`]. A payload leaves
    /// `spill` only together with a reserved slot of the channel, so cancelling this loses nothing.
    async fn drain_spill(&mut self, deadline: &Deadline) {
        while !self.spill.is_empty() {
            let Some(tx) = &self.overflow else {
                return;
            };
            let permit = match tx.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => match deadline.bound(tx.reserve()).await {
                    Some(Ok(permit)) => permit,
                    Some(Err(_)) => break,
                    None => return,
                },
                Err(TrySendError::Closed(())) => break,
            };
            if let Some(p) = self.spill.pop_front() {
                permit.send(p);
            }
        }
        // The fallback task is gone (it only ends when the forwarder is dropped, or crashed).
        for p in self.spill.drain(..) {
            self.telemetry
                .points
                .drop_points(PointDrop::FallbackOverflow, p.samples);
        }
    }
}
