//! offpath: DogStatsD in, Datadog out, off the request path.
//!
//! ```text
//!  statsd client ──UDP / Unix dgram / Unix stream──> ingest ─(bounded queue, drop + count)─> dogstatsd (parse)
//!        ─> aggregate (10 s buckets, contexts, sketches) ─flush─> encode (protobuf, zstd, intake limits)
//!        ─> forward (HTTP, retry, byte-capped queue) ─give up─> fallback (CloudWatch Logs / stdout records)
//! ```
//!
//! The modules below are listed in data-path order. [`pipeline`] wires them together in one function.
#![deny(missing_docs)]

pub mod aggregate;
pub mod auth;
mod backoff;
pub mod check;
pub mod cli;
pub mod config;
pub mod dogstatsd;
pub mod encode;
pub mod errors;
pub mod fallback;
pub mod forward;
pub mod host;
mod http;
pub mod ingest;
pub mod lifecycle;
pub mod model;
pub mod pipeline;
pub mod telemetry;
