//! The ledger per destination (dual shipping, `DD_ADDITIONAL_ENDPOINTS`).
//!
//! Every payload goes to every destination, and each destination settles its copy once: delivered,
//! written to the fallback, or dropped with a reason. Each destination has its row here, with its
//! delivery state (retry queue bytes, breaker, last intake error) for `/status`. The process-wide
//! `points.*` ledger is the main destination's: what happens to the main destination's copies is
//! counted there too, as it was before there were several destinations, so for every destination `d`
//!
//! ```text
//! points.received = dropped before delivery + d.delivered + d.fell_back + d.dropped
//! ```
//!
//! where "dropped before delivery" (parse-side and aggregate drops) is `points.dropped` less the main
//! destination's `dropped`.
//!
//! Counting goes through [`Telemetry`](super::Telemetry)'s `delivered`, `fell_back` and `drop_for`,
//! which take the destination; code that handles payloads of several destinations at once adds up a
//! [`Tally`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::PointDrop;
use crate::forward::{Destination, DestinationId, MAX_DESTINATIONS};

/// Samples per destination: what a batch of records or payloads of several destinations accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally([u64; MAX_DESTINATIONS]);

impl Tally {
    /// `samples` of `dest`.
    pub fn of(dest: DestinationId, samples: u64) -> Self {
        let mut t = Self::default();
        t.add(dest, samples);
        t
    }

    /// Add `samples` of `dest`.
    pub fn add(&mut self, dest: DestinationId, samples: u64) {
        self.0[dest.index()] += samples;
    }

    /// Add another tally.
    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Samples over every destination.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(destination, samples)` for each destination with samples.
    pub fn iter(&self) -> impl Iterator<Item = (DestinationId, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(i, n)| DestinationId::new(i).map(|d| (d, *n)))
    }
}

/// One destination's ledger and delivery state.
#[derive(Debug)]
pub struct DestinationStats {
    /// Which destination.
    pub destination: Destination,
    /// Points in payloads its intake accepted.
    pub delivered: AtomicU64,
    /// Points of its copies written to the fallback.
    pub fell_back: AtomicU64,
    /// Points of its copies dropped, indexed like [`PointDrop::ALL`].
    pub dropped: [AtomicU64; PointDrop::ALL.len()],
    /// Payloads its intake accepted.
    pub payloads_delivered: AtomicU64,
    /// Requests retried.
    pub retries: AtomicU64,
    /// Bytes held in its retry queue.
    pub retry_queue_bytes: AtomicU64,
    /// Its circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker: AtomicU64,
    /// The last error its intake returned.
    pub last_intake_error: Mutex<Option<String>>,
}

impl DestinationStats {
    /// A row for `destination`, all zero.
    pub fn new(destination: Destination) -> Self {
        Self {
            destination,
            delivered: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            dropped: Default::default(),
            payloads_delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retry_queue_bytes: AtomicU64::new(0),
            breaker: AtomicU64::new(0),
            last_intake_error: Mutex::new(None),
        }
    }

    /// Dropped points over every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `name: delivered=… fell_back=… dropped=…`, for the shutdown line.
    pub fn summary(&self) -> String {
        format!(
            "{}: delivered={} fell_back={} dropped={}",
            self.destination.name(),
            self.delivered.load(Relaxed),
            self.fell_back.load(Relaxed),
            self.dropped_total()
        )
    }
}
