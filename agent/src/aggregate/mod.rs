//! Contexts, 10 s buckets and sketches with Datadog Agent semantics: pure state plus a thin driver.
//!
//! [`Aggregator`] is plain state that takes `now` (unix seconds) as an argument: parsed lines go in with
//! [`Aggregator::insert_packet`] or [`Aggregator::insert`], and [`Aggregator::flush`] turns closed 10 s buckets
//! into a [`Flush`](crate::model::Flush) (DESIGN.md §2). [`spawn_worker`] runs one on its own thread, fed by the
//! ingest queue and driven by [`Control`] messages from the flush driver.

mod aggregator;
mod bucket;
mod context;
pub mod sketch;
#[cfg(test)]
mod tests;
mod worker;

pub use aggregator::Aggregator;
pub use worker::{Control, spawn_worker};
