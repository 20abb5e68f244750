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
//!
//! ## Where things are
//!
//! This file holds the [`Forwarder`] and its public calls; `delivery` the delivery loop and the settling
//! of each payload; `intake` the HTTP client, one request and the API key check; `overflow` the way to
//! the retry queue and the fallback; `retry` the classification of answers, the backoff and the circuit
//! breaker; `queue` the byte-capped retry queue; `deadline` the movable [`Deadline`].

mod deadline;
mod delivery;
mod fanout;
mod intake;
mod overflow;
mod queue;
mod retry;
pub mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use deadline::{Deadline, DeadlineCut};
pub use fanout::Fanout;
use queue::RetryQueue;
use retry::Breaker;
pub use retry::{Backoff, BreakerState, RetryPolicy};

use crate::auth::{ApiKey, ApiKeySource};
use crate::config::{ForwardConfig, StorageConfig};
use crate::destination::{Destination, DestinationId};
use crate::encode::{Encoder, Payload};
use crate::telemetry::{DestinationStats, Telemetry};

/// offpath's version, sent as `User-Agent: offpath/<version>` and `DD-Agent-Version`.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The intake path of the API key check.
pub(crate) const VALIDATE_PATH: &str = "/api/v1/validate";

/// A request is not started with less time than this left before the deadline: it could not be
/// answered in time, yet might reach the intake and be sent again later (see "At least once").
const MIN_ATTEMPT: Duration = Duration::from_millis(5);

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
    /// The retry storage cannot be used (`DD_FORWARDER_STORAGE_PATH`).
    #[error(transparent)]
    Storage(#[from] store::StoreError),
}

/// Ships payloads to the Datadog intake; see the module documentation.
#[derive(Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    intake_url: String,
    /// Which destination this forwarder ships to (dual shipping); its copies are counted there.
    dest: DestinationId,
    /// The destination's ledger row and delivery state (`/status`).
    row: Arc<DestinationStats>,
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
    /// The on-disk copy of the retry queue (`DD_FORWARDER_STORAGE_PATH`), when on.
    storage: Option<store::Durable>,
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
        let main = Destination::new(
            DestinationId::MAIN,
            &cfg.intake_url,
            key.initial().map(ApiKey::expose),
        );
        Self::for_destination(main, cfg, key, telemetry, overflow)
    }

    /// A forwarder for `destination` (its endpoint, not `cfg.intake_url`), as [`Forwarder::new`]
    /// otherwise; it registers the destination's ledger row (replacing a row of the same id).
    ///
    /// # Errors
    /// As [`Forwarder::new`].
    pub fn for_destination(
        destination: Destination,
        cfg: &ForwardConfig,
        key: ApiKeySource,
        telemetry: Arc<Telemetry>,
        overflow: Option<mpsc::Sender<Payload>>,
    ) -> Result<Self, ForwardError> {
        let api_key = match key.initial() {
            Some(key) => Some(key.header_value().ok_or(ForwardError::ApiKeyFormat)?),
            None => None,
        };
        let intake_url = destination.endpoint().to_owned();
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

        let client = intake::client(cfg)?;
        let policy = RetryPolicy::default();
        let dest = destination.id();
        let row = telemetry.register_destination(destination);
        Ok(Self {
            client,
            intake_url,
            dest,
            row,
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
            storage: None,
        })
    }

    /// Keep what waits for a retry on disk too (see [`store`]), and take over what a previous run
    /// left there: it joins the retry queue, sent at the next delivery, oldest first; what no longer
    /// fits the size bound goes to the fallback.
    ///
    /// # Errors
    /// [`ForwardError::Storage`] when the directory cannot be used or another process holds it.
    ///
    /// Each destination has its own directory, named after [`Forwarder::storage_name`]: what is read
    /// back is this destination's and goes to it alone.
    pub fn with_storage(mut self, cfg: &StorageConfig) -> Result<Self, ForwardError> {
        let (durable, held, overflow) = store::Durable::open(
            cfg,
            &self.storage_name(),
            self.dest,
            Arc::clone(&self.telemetry),
        )?;
        self.storage = Some(durable);
        let dest = self.dest;
        for mut p in overflow {
            p.destination = dest;
            self.divert(p);
        }
        for mut p in held {
            // They have their files already: into the retry queue, sent at the next delivery.
            p.destination = dest;
            self.undelivered(p);
        }
        self.sync_storage();
        Ok(self)
    }

    /// What names this destination's retry storage directory (see `store::dir_name`): the intake URL
    /// for the main destination (as before there were several), the destination's name
    /// (`<endpoint>#<key end>`) for an additional one, so that two keys of one endpoint never share a
    /// directory.
    pub fn storage_name(&self) -> String {
        if self.dest.is_main() {
            self.intake_url.clone()
        } else {
            self.row.destination.name()
        }
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

    /// The destination this forwarder ships to.
    pub fn destination(&self) -> DestinationId {
        self.dest
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
        self.take_over(payloads);
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

    /// What waits in the retry queue, oldest first, then `payloads`, before `deadline`: a flush's
    /// delivery in one call ([`Forwarder::retry_queued`] then [`Forwarder::send`], with the new
    /// payloads owned from the call on too).
    pub fn deliver(
        &mut self,
        payloads: Vec<Payload>,
        deadline: impl Into<Deadline>,
    ) -> impl Future<Output = ()> + '_ {
        self.settle_abandoned();
        self.pending.extend(self.queue.drain());
        self.sync_queue_bytes();
        self.take_over(payloads);
        let deadline = deadline.into();
        async move {
            self.refresh_key(deadline.at()).await;
            self.run(&deadline).await;
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

    /// Own `payloads` (tagged with this forwarder's destination) for the delivery about to run.
    fn take_over(&mut self, payloads: Vec<Payload>) {
        let dest = self.dest;
        self.pending.extend(payloads.into_iter().map(|mut p| {
            p.destination = dest;
            p
        }));
    }

    /// Take everything not yet delivered (at shutdown, for the fallback): what waits for room in the
    /// fallback channel, then the retry queue, then what a dropped delivery left behind.
    pub fn take_queued(&mut self) -> Vec<Payload> {
        self.settle_abandoned();
        let mut all: Vec<Payload> = self.spill.drain(..).collect();
        let queued = self.queue.drain();
        // Handed to the caller for the fallback: settled here, as a diverted payload is.
        for p in &queued {
            self.settled(p);
        }
        self.sync_storage();
        all.extend(queued);
        self.sync_queue_bytes();
        all
    }

    /// Bytes (compressed bodies) waiting in the retry queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
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
        self.sync_storage();
    }

    fn publish_breaker(&self) {
        let state = self.breaker.state() as u64;
        self.row.breaker.store(state, Relaxed);
        if self.dest.is_main() {
            self.telemetry.forward.breaker.store(state, Relaxed);
        }
    }

    fn sync_queue_bytes(&self) {
        let bytes = self.queue.bytes() as u64;
        self.row.retry_queue_bytes.store(bytes, Relaxed);
        if self.dest.is_main() {
            self.telemetry
                .forward
                .retry_queue_bytes
                .store(bytes, Relaxed);
        }
    }
}
