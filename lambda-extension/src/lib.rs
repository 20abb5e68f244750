//! offpath as an AWS Lambda external extension.
//!
//! ```text
//!  Lambda ──event/next──> extension (register, INVOKE, SHUTDOWN) ──> lifecycle ──flush per policy──> Flusher
//!  Lambda ──POST platform.runtimeDone──> telemetry listener ──────────┘            (the metrics pipeline)
//! ```
//!
//! [`lifecycle::run`] is the whole extension; the metrics pipeline ([`pipeline::LambdaPipeline`]) plugs
//! in through [`lifecycle::Flusher`]. [`flush_policy`] decides when to flush, [`tags`] what every metric is tagged
//! with, [`enhanced`] computes Datadog's `aws.lambda.enhanced.*` metrics from the events, and [`api`] answers
//! the Datadog libraries on 127.0.0.1:8124.
#![deny(missing_docs)]

pub mod api;
pub mod enhanced;
pub mod extension;
pub mod flush_policy;
pub mod http;
pub mod lifecycle;
pub mod pipeline;
pub mod tags;
pub mod telemetry;
