//! offpath: DogStatsD in, Datadog out, off the request path.
//!
//! ```text
//!  statsd client ──UDP / Unix dgram / Unix stream──> ingest ─(bounded queue, drop + count)─> dogstatsd (parse)
//!        ─> aggregate (10 s buckets, contexts, sketches) ─flush─> encode (protobuf, zstd, intake limits)
//!        ─> forward (HTTP, retry, byte-capped queue) ─give up─> fallback (CloudWatch Logs / stdout records)
//! ```
//!
//! [`pipeline`] wires the stages together in one function; [`config`] is loaded once, for a deployment
//! (sidecar or Lambda), and is all the stages read; [`auth`] holds the credentials. The design, the
//! threads and queues, the accounting contract and where to add things: `docs/architecture.md`.
//!
//! The public surface is what the two binaries (`offpath`, whose command line lives in the binary, and
//! `offpath-lambda`), the benchmarks and the end-to-end tests in `tests/` use; everything else is
//! private to the crate. It is not a stable API for other programs.
#![deny(missing_docs)]

pub mod aggregate;
pub mod auth;
mod backoff;
pub mod config;
pub mod control;
pub mod destination;
pub mod dogstatsd;
pub mod encode;
pub mod enrich;
pub mod errors;
pub mod fallback;
pub mod forward;
pub mod host;
pub mod http;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod telemetry;
