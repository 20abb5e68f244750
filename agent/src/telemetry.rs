//! offpath's own counters: what came in, what went out, and every drop with its reason.
//!
//! Counters are relaxed atomics. Hot loops (receive, parse) count into locals and add once per packet
//! or batch, and each listener owns its own [`ListenerStats`], so no counter is shared between
//! receive threads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::dogstatsd::ParseError;

pub mod contexts;
mod destinations;
pub mod prometheus;
mod self_metrics;
pub use destinations::{DestinationStats, DestinationStatus, Tally};
pub(crate) use self_metrics::SelfMetrics;

use crate::destination::{Destination, DestinationId, MAX_DESTINATIONS};

/// Why whole packets were dropped before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketDrop {
    /// The queue from the listener to the parser was full.
    QueueFull,
    /// A datagram was larger than `DD_DOGSTATSD_BUFFER_SIZE` (detected, never parsed).
    Truncated,
    /// A Unix stream frame was larger than `DD_DOGSTATSD_BUFFER_SIZE`; the connection was closed.
    OversizeFrame,
}

impl PacketDrop {
    /// Every reason, in counter order.
    pub const ALL: [PacketDrop; 3] = [Self::QueueFull, Self::Truncated, Self::OversizeFrame];

    /// The counter label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Truncated => "truncated",
            Self::OversizeFrame => "oversize_frame",
        }
    }
}

/// Why accepted points (metric values, events, service checks) were dropped after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointDrop {
    /// A NaN or ±Inf value received, or an aggregate that overflowed `f64` (a count's sum or rate, a
    /// histogram's sum or average, a sketch's sum) and was left out of the flush.
    NonFinite,
    /// The live context limit (`DD_AGGREGATE_CONTEXT_LIMIT`) was reached.
    ContextLimit,
    /// `h`/`ms`/`s`/`d` with a `T` timestamp (the Agent discards these too).
    TimestampUnsupported,
    /// A DogStatsD client's own `datadog.dogstatsd.client.*` telemetry, dropped in Lambda mode.
    ClientTelemetry,
    /// The intake answered 400 (bad payload).
    IntakeRejected,
    /// A single item was larger than the intake accepts (413 with nothing left to split).
    TooLarge,
    /// The forwarder's retry queue overflowed and it was given no fallback channel.
    RetryQueueOverflow,
    /// The fallback fell behind: its own buffer overflowed while its sink kept failing, or the
    /// forwarder's hand-off to it stayed full.
    FallbackOverflow,
    /// CloudWatch Logs rejected the events (too old, too new, expired).
    FallbackRejected,
    /// Shutdown deadline passed before the data could be delivered or written.
    ShutdownDeadline,
    /// A per-context bound of the aggregator was reached (set members per bucket, timestamped points between
    /// flushes), or too many events and service checks waited for one flush.
    AggregateLimit,
    /// The fallback is off (`OFFPATH_FALLBACK=off`): what would have been written there (in local mode,
    /// every flush; with an API key, what the intake did not take) is dropped.
    FallbackOff,
    /// A histogram or timer value (`h`, `ms`) while `DD_HISTOGRAM_AGGREGATES` and
    /// `DD_HISTOGRAM_PERCENTILES` are both empty: nothing would be shipped for it (as in the Agent).
    HistogramNoOutput,
    /// A received line named like a metric this process emits itself (the Lambda extension's
    /// `aws.lambda.enhanced.invocations`), so the value is not counted twice.
    OwnMetric,
    /// A value produced inside the process found its aggregate worker's queue full.
    OwnQueueFull,
    /// The metric name is on the blocklist (`metric_filterlist`, `statsd_metric_blocklist`).
    Filtered,
}

impl PointDrop {
    /// Every reason, in counter order.
    pub const ALL: [PointDrop; 16] = [
        Self::NonFinite,
        Self::ContextLimit,
        Self::TimestampUnsupported,
        Self::ClientTelemetry,
        Self::IntakeRejected,
        Self::TooLarge,
        Self::RetryQueueOverflow,
        Self::FallbackOverflow,
        Self::FallbackRejected,
        Self::ShutdownDeadline,
        Self::AggregateLimit,
        Self::FallbackOff,
        Self::HistogramNoOutput,
        Self::OwnMetric,
        Self::OwnQueueFull,
        Self::Filtered,
    ];

    /// The counter label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            Self::ContextLimit => "context_limit",
            Self::TimestampUnsupported => "timestamp_unsupported",
            Self::ClientTelemetry => "client_telemetry",
            Self::IntakeRejected => "intake_rejected",
            Self::TooLarge => "too_large",
            Self::RetryQueueOverflow => "retry_queue_overflow",
            Self::FallbackOverflow => "fallback_overflow",
            Self::FallbackRejected => "fallback_rejected",
            Self::ShutdownDeadline => "shutdown_deadline",
            Self::AggregateLimit => "aggregate_limit",
            Self::FallbackOff => "fallback_off",
            Self::HistogramNoOutput => "histogram_no_output",
            Self::OwnMetric => "own_metric",
            Self::OwnQueueFull => "own_queue_full",
            Self::Filtered => "filtered",
        }
    }
}

/// Counters of one listener (one socket, or one group of `SO_REUSEPORT` sockets' threads each).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// `udp`, `unixgram` or `unix`, plus the address.
    pub name: String,
    /// Packets read from the socket.
    pub packets: AtomicU64,
    /// Bytes read from the socket.
    pub bytes: AtomicU64,
    /// Packets dropped, indexed like [`PacketDrop::ALL`].
    pub dropped: [AtomicU64; 3],
    /// Unix stream connections closed at once: every slot was taken and the peer's user already held
    /// its share.
    pub connections_refused: AtomicU64,
    /// Unix stream connections closed to give their slot to another user's new connection.
    pub connections_evicted: AtomicU64,
    /// Unix stream connections closed for trickling a frame, or idle while slots were short.
    pub connections_timed_out: AtomicU64,
    /// Failed `accept` calls of the Unix stream listener (out of file descriptors, typically); new
    /// connections wait in the socket's backlog meanwhile.
    pub accept_errors: AtomicU64,
}

impl ListenerStats {
    /// Count one dropped packet.
    pub fn drop_packet(&self, reason: PacketDrop, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }
}

/// Lines parsed per kind and rejected per reason.
#[derive(Debug, Default)]
pub struct ParseStats {
    /// Metric lines parsed.
    pub metrics: AtomicU64,
    /// Event lines parsed.
    pub events: AtomicU64,
    /// Service-check lines parsed.
    pub service_checks: AtomicU64,
    /// Rejected lines, indexed like [`ParseError::ALL`].
    pub errors: [AtomicU64; ParseError::ALL.len()],
}

impl ParseStats {
    /// Count one rejected line.
    pub fn error(&self, reason: ParseError) {
        self.errors[reason.index()].fetch_add(1, Relaxed);
    }
}

/// The no-loss ledger: every point ends in exactly one of delivered, fell back, or dropped by reason.
#[derive(Debug, Default)]
pub struct PointStats {
    /// Metric values (each packed value counts), events and service checks accepted by the parser.
    pub received: AtomicU64,
    /// Points in payloads the intake accepted.
    pub delivered: AtomicU64,
    /// Points written to the fallback sink (CloudWatch Logs or stdout).
    pub fell_back: AtomicU64,
    /// Points read back at start from the retry storage a previous run left
    /// (`DD_FORWARDER_STORAGE_PATH`): received by that run, settled by this one.
    pub recovered: AtomicU64,
    /// Dropped points, indexed like [`PointDrop::ALL`].
    pub dropped: [AtomicU64; PointDrop::ALL.len()],
}

impl PointStats {
    /// Count dropped points.
    pub fn drop_points(&self, reason: PointDrop, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }

    /// Total dropped over every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Delivery-side state for `/status`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Payloads accepted by the intake.
    pub payloads_delivered: AtomicU64,
    /// Requests retried.
    pub retries: AtomicU64,
    /// Bytes currently held in the retry queue.
    pub retry_queue_bytes: AtomicU64,
    /// Circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker: AtomicU64,
    /// The last error the intake returned (status and short body), for `/status`.
    pub last_intake_error: Mutex<Option<String>>,
    /// Records written to the fallback sink.
    pub fallback_records: AtomicU64,
    /// Bytes written to the fallback sink.
    pub fallback_bytes: AtomicU64,
    /// Bytes in the on-disk retry storage (headers included).
    pub storage_bytes: AtomicU64,
    /// Payload files in the on-disk retry storage.
    pub storage_files: AtomicU64,
    /// Payloads written to the retry storage.
    pub storage_written: AtomicU64,
    /// Torn or corrupt storage files found at start (deleted, their points unknown).
    pub storage_corrupt: AtomicU64,
    /// Payloads that left the storage for the fallback because its size bound was reached.
    pub storage_overflow: AtomicU64,
    /// Payloads that could not be written (I/O error, larger than the bound) and failed fsyncs.
    pub storage_errors: AtomicU64,
}

/// The status endpoint's own connections.
#[derive(Debug, Default)]
pub struct StatusServerStats {
    /// Closed at once: every slot, the reserved one included, was busy.
    pub refused: AtomicU64,
    /// Closed by the header or connection timeout.
    pub timed_out: AtomicU64,
    /// Closed while waiting for their request headers, to make room for a new connection.
    pub evicted: AtomicU64,
}

/// All of offpath's counters; one per process, shared by `Arc`.
#[derive(Debug)]
pub struct Telemetry {
    /// When the process started.
    pub started: Instant,
    /// One entry per listener, registered at start.
    pub listeners: Mutex<Vec<Arc<ListenerStats>>>,
    /// Parser counters.
    pub parse: ParseStats,
    /// The point ledger.
    pub points: PointStats,
    /// Delivery counters.
    pub forward: ForwardStats,
    /// The ledger per destination, by [`DestinationId`] (dual shipping); see `telemetry/destinations.rs`.
    destinations: Mutex<[Option<Arc<DestinationStats>>; MAX_DESTINATIONS]>,
    /// The status endpoint's connections.
    pub status_server: StatusServerStats,
    /// The cardinality view the aggregate workers publish (`/status/contexts`).
    pub contexts: contexts::ContextBoard,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            listeners: Mutex::new(Vec::new()),
            parse: ParseStats::default(),
            points: PointStats::default(),
            forward: ForwardStats::default(),
            destinations: Mutex::new(Default::default()),
            status_server: StatusServerStats::default(),
            contexts: contexts::ContextBoard::default(),
        }
    }
}

impl Telemetry {
    /// Register a listener and get its counters.
    pub fn register_listener(&self, name: impl Into<String>) -> Arc<ListenerStats> {
        let stats = Arc::new(ListenerStats {
            name: name.into(),
            ..ListenerStats::default()
        });
        if let Ok(mut all) = self.listeners.lock() {
            all.push(Arc::clone(&stats));
        }
        stats
    }

    /// Register `destination` (replacing the row of its id) and get its row.
    pub fn register_destination(&self, destination: Destination) -> Arc<DestinationStats> {
        let id = destination.id();
        let row = Arc::new(DestinationStats::new(destination));
        if let Ok(mut all) = self.destinations.lock() {
            all[id.index()] = Some(Arc::clone(&row));
        }
        row
    }

    /// The registered destinations' rows, in id order.
    pub fn destinations(&self) -> Vec<Arc<DestinationStats>> {
        self.destinations
            .lock()
            .map(|all| all.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    fn row(&self, dest: DestinationId) -> Option<Arc<DestinationStats>> {
        self.destinations
            .lock()
            .ok()
            .and_then(|all| all[dest.index()].clone())
    }

    /// `samples` of `dest`'s copies were delivered (the main destination's also in `points.delivered`).
    pub fn delivered(&self, dest: DestinationId, samples: u64) {
        if let Some(row) = self.row(dest) {
            row.delivered.fetch_add(samples, Relaxed);
        }
        if dest.is_main() {
            self.points.delivered.fetch_add(samples, Relaxed);
        }
    }

    /// `samples` of `dest`'s copies were read back from its retry storage at start (the main
    /// destination's also in `points.recovered`).
    pub fn recovered(&self, dest: DestinationId, samples: u64) {
        if let Some(row) = self.row(dest) {
            row.recovered.fetch_add(samples, Relaxed);
        }
        if dest.is_main() {
            self.points.recovered.fetch_add(samples, Relaxed);
        }
    }

    /// `samples` of `dest`'s copies were written to the fallback (the main destination's also in
    /// `points.fell_back`).
    pub fn fell_back(&self, tally: &Tally) {
        for (dest, n) in tally.iter() {
            if let Some(row) = self.row(dest) {
                row.fell_back.fetch_add(n, Relaxed);
            }
            if dest.is_main() {
                self.points.fell_back.fetch_add(n, Relaxed);
            }
        }
    }

    /// `samples` of `dest`'s copies were dropped for `reason` (the main destination's also in
    /// `points.dropped`).
    pub fn drop_for(&self, dest: DestinationId, reason: PointDrop, samples: u64) {
        if samples == 0 {
            return;
        }
        if let Some(row) = self.row(dest) {
            row.dropped[reason as usize].fetch_add(samples, Relaxed);
        }
        if dest.is_main() {
            self.points.drop_points(reason, samples);
        }
    }

    /// [`Telemetry::drop_for`] for every destination of `tally`.
    pub fn drop_tally(&self, reason: PointDrop, tally: &Tally) {
        for (dest, n) in tally.iter() {
            self.drop_for(dest, reason, n);
        }
    }

    /// Sum of packets received over every listener.
    pub fn packets_received(&self) -> u64 {
        self.listeners
            .lock()
            .map(|l| l.iter().map(|s| s.packets.load(Relaxed)).sum())
            .unwrap_or(0)
    }

    /// Sum of dropped packets for one reason over every listener.
    pub fn packets_dropped(&self, reason: PacketDrop) -> u64 {
        self.listeners
            .lock()
            .map(|l| {
                l.iter()
                    .map(|s| s.dropped[reason as usize].load(Relaxed))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// One-line accounting summary (logged at shutdown).
    pub fn summary(&self) -> String {
        let p = &self.points;
        let recovered = p.recovered.load(Relaxed);
        let mut s = format!(
            "points received={}{} delivered={} fell_back={} dropped={}",
            p.received.load(Relaxed),
            if recovered > 0 {
                format!(" recovered={recovered}")
            } else {
                String::new()
            },
            p.delivered.load(Relaxed),
            p.fell_back.load(Relaxed),
            p.dropped_total()
        );
        for r in PointDrop::ALL {
            let n = p.dropped[r as usize].load(Relaxed);
            if n > 0 {
                s.push_str(&format!(" dropped.{}={n}", r.as_str()));
            }
        }
        for r in PacketDrop::ALL {
            let n = self.packets_dropped(r);
            if n > 0 {
                s.push_str(&format!(" packets_dropped.{}={n}", r.as_str()));
            }
        }
        let rows = self.destinations();
        if rows.len() > 1 {
            for row in rows {
                s.push_str(&format!("; {}", row.summary()));
            }
        }
        s
    }
}

/// The breaker state name for `telemetry.forward.breaker` (0 closed, 1 open, 2 half-open).
pub(crate) const fn breaker_name(state: u64) -> &'static str {
    match state {
        0 => "closed",
        1 => "open",
        2 => "half_open",
        _ => "unknown",
    }
}
