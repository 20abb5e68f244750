//! Contexts, 10 s buckets and sketches with Datadog Agent semantics: pure state plus a thin driver.
//!
//! [`Aggregator`] is plain state that takes `now` (unix seconds) as an argument: parsed lines go in with
//! [`Aggregator::insert_packet`] or [`Aggregator::insert`], and [`Aggregator::flush`] turns closed 10 s buckets
//! into a [`Flush`](crate::model::Flush) (`docs/protocols.md`, "What the Agent ships per type"). [`Workers`] runs one or more on their own threads
//! (`OFFPATH_AGGREGATE_WORKERS`), each fed by its own ingest queue and driven by [`Control`] messages from the
//! flush driver; the listeners route lines by metric name and tag set, so every context lives in one worker and the
//! flushed output is the same whatever the number of workers. [`Aggregator::sharded`] makes the aggregators,
//! which share one `DD_AGGREGATE_CONTEXT_LIMIT`.
//!
//! What ships (Agent mapping; `MetricMapping::LambdaDistribution` turns `c`, `h`, `ms` into distributions too
//! and drops `datadog.dogstatsd.client.*`):
//!
//! | line | shipped |
//! | --- | --- |
//! | `c` | RATE, interval 10, Σ(v · 1/rate) / 10 |
//! | `g` | GAUGE, last value (rate ignored) |
//! | `s` | GAUGE, distinct members |
//! | `h`, `ms` | `.max .median .avg .count` and `.95percentile` (configurable); weight `trunc(1/rate)`, sum `v/rate` |
//! | `d` | an agent DDSketch per context and bucket ([`sketch`]) |
//! | `c`, `g` with `T` | one point per value at its own timestamp (a count as RATE value/10), next flush |
//! | `h`, `ms`, `s`, `d` with `T` | dropped, `PointDrop::TimestampUnsupported` |
//!
//! A context is (type class, name with the namespace, host, tags sorted and de-duplicated with the global tags);
//! the type class is part of it, so a name sent as both `c` and `g` gives two series. A `host:` tag sets the
//! host and is removed, as are the Agent's `dd.internal.entity_id:`, `dd.internal.card:` and
//! `dd.internal.jmx_check_name:` tags; the namespace skips the Agent's exempt prefixes (`datadog.agent`,
//! `jvm`, …). Every value received is counted once in `points.received`, and ends either in a flushed series'
//! or sketch's `samples` or in a `points.dropped` reason.

mod aggregator;
mod bucket;
mod cardinality;
mod class;
mod context;
pub mod sketch;
#[cfg(test)]
mod tests;
mod worker;

pub use aggregator::{Aggregator, OwnPoint};
pub use worker::{Collected, Control, OwnPoints, WorkerError, Workers, spawn_worker};
