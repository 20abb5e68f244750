//! One delivery: work through `pending` payload by payload, try the front one until the intake answers,
//! the deadline or the circuit breaker stops it, and settle its fate in the same step (see "Every payload
//! ends in exactly one place" in the module above).

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use super::intake::Request;
use super::retry::{Admission, Outcome, classify};
use super::{BreakerState, Deadline, Forwarder, MIN_ATTEMPT};
use crate::encode::{Payload, split};
use crate::errors::Chain;
use crate::telemetry::PointDrop;

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

impl Forwarder {
    /// Work through `pending` until it is empty. Every payload leaves it only when its fate is settled.
    pub(super) async fn run(&mut self, deadline: &Deadline) {
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
        self.sync_storage();
        self.drain_spill(deadline).await;
    }

    /// Take the front payload out of `pending` and put it where `verdict` says, counting it.
    fn settle_front(&mut self, verdict: Verdict) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        match verdict {
            Verdict::Delivered => {
                self.settled(&p);
                self.telemetry.delivered(self.dest, p.samples);
                self.row.payloads_delivered.fetch_add(1, Relaxed);
                if self.dest.is_main() {
                    self.telemetry
                        .forward
                        .payloads_delivered
                        .fetch_add(1, Relaxed);
                }
            }
            Verdict::Drop(reason) => {
                self.settled(&p);
                self.telemetry.drop_for(self.dest, reason, p.samples);
            }
            Verdict::Split => self.split_or_drop(p),
            Verdict::Undelivered => self.undelivered(p),
        }
    }

    /// Replace `p` at the front of `pending` by its halves (their samples add up to its samples), or
    /// drop and count a single item that cannot be cut.
    fn split_or_drop(&mut self, p: Payload) {
        match split(&p, &self.encoder) {
            Ok(parts) => {
                if self.storage.as_ref().is_some_and(|s| s.has(&p)) {
                    for part in &parts {
                        self.keep(part);
                    }
                    self.settled(&p);
                }
                for part in parts.into_iter().rev() {
                    self.pending.push_front(part);
                }
            }
            Err(e) => {
                self.settled(&p);
                tracing::warn!(
                    kind = p.kind.as_str(),
                    bytes = p.body.len(),
                    raw_bytes = p.raw_len,
                    samples = p.samples,
                    error = %Chain(&e),
                    "dropping a payload too large for the intake"
                );
                self.telemetry
                    .drop_for(self.dest, PointDrop::TooLarge, p.samples);
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
                self.row.retries.fetch_add(1, Relaxed);
                if self.dest.is_main() {
                    self.telemetry.forward.retries.fetch_add(1, Relaxed);
                }
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
            .row
            .last_intake_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        tracing::warn!(
            intake = %self.intake_url,
            probe_in = ?next,
            fallback = self.overflow.is_some(),
            cause = %cause,
            "the intake keeps failing; circuit breaker open: payloads go to the fallback until a probe succeeds"
        );
    }
}
