//! The ledger per destination (dual shipping, `DD_ADDITIONAL_ENDPOINTS`).
//!
//! Every payload goes to every destination, and each destination settles its copy once: delivered,
//! written to the fallback, or dropped with a reason. Each destination has its row here, with its
//! delivery state (retry queue bytes, breaker, last intake error) for `/status`. The process-wide
//! `points.*` ledger is the main destination's: what happens to the main destination's copies is
//! counted there too, as it was before there were several destinations, so for every destination `d`
//!
//! ```text
//! points.received + d.recovered = dropped before delivery + d.delivered + d.fell_back + d.dropped
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
use crate::destination::{Destination, DestinationId, MAX_DESTINATIONS};

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
    /// Points of its copies read back at start from its retry storage (a previous run's).
    pub recovered: AtomicU64,
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
            recovered: AtomicU64::new(0),
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

    /// `name: [recovered=… ]delivered=… fell_back=… dropped=…`, for the shutdown line.
    pub fn summary(&self) -> String {
        let recovered = self.recovered.load(Relaxed);
        format!(
            "{}: {}delivered={} fell_back={} dropped={}",
            self.destination.name(),
            if recovered > 0 {
                format!("recovered={recovered} ")
            } else {
                String::new()
            },
            self.delivered.load(Relaxed),
            self.fell_back.load(Relaxed),
            self.dropped_total()
        )
    }
}

/// One destination in `/status` (`destinations`, in id order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DestinationStatus {
    /// `<endpoint>#<last characters of the key>` (what fallback records name).
    pub name: String,
    /// The intake base URL.
    pub endpoint: String,
    /// Points of its copies the intake accepted.
    pub delivered: u64,
    /// Points of its copies read back at start from its retry storage (a previous run's).
    pub recovered: u64,
    /// Points of its copies written to the fallback.
    pub fell_back: u64,
    /// Points of its copies dropped, over every reason.
    pub dropped: u64,
    /// Payloads the intake accepted.
    pub payloads_delivered: u64,
    /// Requests retried.
    pub retries: u64,
    /// Bytes waiting in its retry queue.
    pub retry_queue_bytes: u64,
    /// Its circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The last error its intake returned, if any.
    pub last_intake_error: Option<String>,
}

impl DestinationStatus {
    /// Read a row now.
    pub fn of(row: &DestinationStats) -> Self {
        Self {
            name: row.destination.name(),
            endpoint: row.destination.endpoint().to_owned(),
            delivered: row.delivered.load(Relaxed),
            recovered: row.recovered.load(Relaxed),
            fell_back: row.fell_back.load(Relaxed),
            dropped: row.dropped_total(),
            payloads_delivered: row.payloads_delivered.load(Relaxed),
            retries: row.retries.load(Relaxed),
            retry_queue_bytes: row.retry_queue_bytes.load(Relaxed),
            breaker: super::breaker_name(row.breaker.load(Relaxed)),
            last_intake_error: row.last_intake_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn each_destination_keeps_its_own_ledger_and_the_main_one_is_the_process_ledger() {
        let t = Telemetry::default();
        let main = DestinationId::MAIN;
        let other = DestinationId::new(1).unwrap();
        t.register_destination(Destination::new(main, "https://a.example", Some("kkkk1")));
        t.register_destination(Destination::new(other, "https://b.example", Some("kkkk2")));
        t.delivered(main, 10);
        t.delivered(other, 4);
        let mut fell = Tally::of(other, 6);
        fell.add(main, 0);
        t.fell_back(&fell);
        t.drop_for(other, PointDrop::FallbackOverflow, 0);
        let rows: Vec<DestinationStatus> = t
            .destinations()
            .iter()
            .map(|r| DestinationStatus::of(r))
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].delivered, rows[0].fell_back), (10, 0));
        assert_eq!((rows[1].delivered, rows[1].fell_back), (4, 6));
        assert_eq!(rows[1].name, "https://b.example#kkkk2");
        assert_eq!(t.points.delivered.load(Relaxed), 10);
        assert_eq!(t.points.fell_back.load(Relaxed), 0);
        let mut lost = Tally::default();
        lost.add(main, 1);
        lost.add(other, 2);
        t.drop_tally(PointDrop::ShutdownDeadline, &lost);
        assert_eq!(t.points.dropped_total(), 1);
        assert_eq!(t.destinations()[1].dropped_total(), 2);
        assert_eq!(lost.total(), 3);
        assert!(
            t.summary()
                .contains("https://b.example#kkkk2: delivered=4 fell_back=6 dropped=2")
        );
    }
}
