//! DogStatsD protocol v1.0–v1.6: `&[u8]` packets to borrowed metric, event and service-check values.
//!
//! Pure and zero-copy: no tokio, no I/O, no allocation on the happy path. See PROTOCOLS.md §1.

mod types;

pub use types::{
    Cardinality, Event, Message, MetricKind, MetricSample, MetricValue, Origin, PackedValues,
    ParseError, ServiceCheck, Tags,
};
