//! Retry as data: what an intake answer means, how long to wait, and when to stop trying.
//!
//! Everything here is pure (no I/O, no clock reads): the forwarder passes `now` and a jitter value in,
//! which keeps the policy table-testable.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::backoff::Backoff;
use crate::telemetry::PointDrop;

/// What went wrong below HTTP, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// No connection could be made (refused, DNS, TLS handshake, proxy).
    Connect,
    /// The request timed out (`DD_FORWARDER_TIMEOUT` or the flush deadline).
    Timeout,
    /// The connection failed after it was established: reset, closed before the response, broken pipe.
    /// This is what a stale pooled connection looks like (for example after a Lambda freeze).
    Closed,
}

/// The result of one attempt: an HTTP status or a transport error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The intake answered with this status.
    Status(u16),
    /// No answer.
    Transport(TransportError),
}

/// What to do with a payload after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the intake has it.
    Delivered,
    /// Never going to be accepted: drop and count under this reason (400).
    Drop(PointDrop),
    /// Too large (413): split and resend the parts.
    Split,
    /// The API key was refused (401/403): no retry loop; the payload waits in the retry queue or goes to
    /// the fallback, and the circuit breaker opens.
    KeyProblem,
    /// Transient (404, 408, 429, 5xx, other statuses, transport errors): retry after a backoff.
    Retry {
        /// The connection may have been a stale pooled one: retry once at once on a new connection
        /// before backing off.
        stale: bool,
    },
}

/// Classify one attempt (`docs/protocols.md`, "Answers").
pub const fn classify(attempt: Attempt) -> Outcome {
    match attempt {
        Attempt::Status(200..=299) => Outcome::Delivered,
        Attempt::Status(400) => Outcome::Drop(PointDrop::IntakeRejected),
        Attempt::Status(413) => Outcome::Split,
        Attempt::Status(401 | 403) => Outcome::KeyProblem,
        Attempt::Status(_) => Outcome::Retry { stale: false },
        Attempt::Transport(TransportError::Closed) => Outcome::Retry { stale: true },
        Attempt::Transport(TransportError::Connect | TransportError::Timeout) => {
            Outcome::Retry { stale: false }
        }
    }
}

/// Retry and circuit-breaker tuning of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff between attempts at one payload inside a flush deadline (default 100 ms doubling to 5 s).
    pub backoff: Backoff,
    /// Consecutive failed attempts that open the circuit breaker (default `BREAKER_THRESHOLD`).
    pub breaker_threshold: u32,
    /// Backoff between probes of an open breaker (default 1 s doubling to 60 s).
    pub probe: Backoff,
}

/// Consecutive failed attempts (transport errors, 404/408/429/5xx) after which the breaker opens.
///
/// Five attempts take about 1.5 s with the default backoff, so one failing flush opens it in the sidecar
/// and two or three short Lambda flush budgets do. A 401/403 opens it at once.
pub const BREAKER_THRESHOLD: u32 = 5;

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            breaker_threshold: BREAKER_THRESHOLD,
            probe: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        }
    }
}

/// Circuit breaker state, as stored in `telemetry.forward.breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow (0).
    Closed = 0,
    /// The intake is considered down: payloads go to the fallback; a probe is sent when due (1).
    Open = 1,
    /// One probe request is in flight (2).
    HalfOpen = 2,
}

/// What the breaker allows for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send normally (retries allowed).
    Send,
    /// Send one attempt as a probe: success closes the breaker, failure re-opens it with a longer wait.
    Probe,
    /// Do not send; divert the payload.
    Divert,
}

/// The circuit breaker, pure state.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    failures: u32,
    threshold: u32,
    probe: Backoff,
    failed_probes: u32,
    next_probe: Option<Instant>,
}

impl Breaker {
    /// A closed breaker opening after `threshold` consecutive failures and probing with `probe`.
    pub fn new(threshold: u32, probe: Backoff) -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            threshold: threshold.max(1),
            probe,
            failed_probes: 0,
            next_probe: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the next probe may go (open breaker only).
    pub fn next_probe(&self) -> Option<Instant> {
        self.next_probe
    }

    /// May a request go now?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Send,
            BreakerState::HalfOpen => Admission::Divert,
            BreakerState::Open => {
                if self.next_probe.is_none_or(|t| now >= t) {
                    self.state = BreakerState::HalfOpen;
                    Admission::Probe
                } else {
                    Admission::Divert
                }
            }
        }
    }

    /// The intake answered (2xx, 400, 413): close.
    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.failed_probes = 0;
        self.next_probe = None;
    }

    /// An attempt failed. Returns true when this opened the breaker.
    pub fn record_failure(&mut self, now: Instant, jitter: f64) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.open(now, jitter);
                    return true;
                }
                false
            }
            BreakerState::HalfOpen => {
                self.failed_probes += 1;
                self.open(now, jitter);
                false
            }
            BreakerState::Open => false,
        }
    }

    /// Open at once (the API key was refused). Returns true when the breaker was closed before.
    pub fn trip(&mut self, now: Instant, jitter: f64) -> bool {
        let was_closed = self.state == BreakerState::Closed;
        if self.state == BreakerState::HalfOpen {
            self.failed_probes += 1;
        }
        self.open(now, jitter);
        was_closed
    }

    fn open(&mut self, now: Instant, jitter: f64) {
        self.state = BreakerState::Open;
        self.failures = 0;
        self.next_probe = Some(now + self.probe.delay(self.failed_probes, jitter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            3,
            Backoff {
                base: Duration::from_secs(2),
                max: Duration::from_secs(8),
            },
        )
    }

    #[test]
    fn every_status_and_transport_error_has_one_outcome() {
        use Attempt::{Status, Transport};
        let table = [
            (Status(200), Outcome::Delivered),
            (Status(202), Outcome::Delivered),
            (Status(204), Outcome::Delivered),
            (Status(400), Outcome::Drop(PointDrop::IntakeRejected)),
            (Status(401), Outcome::KeyProblem),
            (Status(403), Outcome::KeyProblem),
            (Status(404), Outcome::Retry { stale: false }),
            (Status(408), Outcome::Retry { stale: false }),
            (Status(413), Outcome::Split),
            (Status(429), Outcome::Retry { stale: false }),
            (Status(500), Outcome::Retry { stale: false }),
            (Status(502), Outcome::Retry { stale: false }),
            (Status(503), Outcome::Retry { stale: false }),
            (Status(504), Outcome::Retry { stale: false }),
            (Status(302), Outcome::Retry { stale: false }),
            (
                Transport(TransportError::Connect),
                Outcome::Retry { stale: false },
            ),
            (
                Transport(TransportError::Timeout),
                Outcome::Retry { stale: false },
            ),
            (
                Transport(TransportError::Closed),
                Outcome::Retry { stale: true },
            ),
        ];
        for (attempt, expected) in table {
            assert_eq!(classify(attempt), expected, "{attempt:?}");
        }
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert!(!b.record_failure(t0, 0.0));
        b.record_success();
        assert!(!b.record_failure(t0, 0.0));
        assert!(!b.record_failure(t0, 0.0));
        assert_eq!(b.admit(t0), Admission::Send);
        assert!(b.record_failure(t0, 0.0));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t0), Admission::Divert);
    }

    #[test]
    fn an_open_breaker_probes_with_growing_waits_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.trip(t0, 0.0);
        // First wait: half of 2 s with no jitter.
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), Admission::Divert);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(t1), Admission::Divert, "one probe at a time");
        b.record_failure(t1, 0.0);
        assert_eq!(b.state(), BreakerState::Open);
        // Second wait: half of 4 s.
        assert_eq!(b.next_probe(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t2), Admission::Send);
    }

    #[test]
    fn a_refused_key_opens_the_breaker_at_once() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert!(b.trip(t0, 0.5));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.trip(t0, 0.5), "already open");
    }
}
