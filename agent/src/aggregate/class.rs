//! The type class of a context: what it aggregates. Its own module because both a context (`context.rs`,
//! part of its identity) and its buckets (`bucket.rs`, what a bucket holds) need it.

/// What a context aggregates; part of its identity, so `x:1|c` and `x:1|g` never share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `c` in Agent mapping: RATE.
    Count,
    /// `g`: GAUGE, last value.
    Gauge,
    /// `s`: GAUGE, distinct members.
    Set,
    /// `h`, `ms` in Agent mapping: aggregates and percentiles.
    Histogram,
    /// `d` (and `c`, `h`, `ms` in Lambda mapping): an agent DDSketch per bucket.
    Distribution,
    /// `c` with `T`: points forwarded with their own timestamps as RATE value/10.
    TimestampedCount,
    /// `g` with `T`: points forwarded with their own timestamps as GAUGE.
    TimestampedGauge,
}
