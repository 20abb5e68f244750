//! The cardinality view: live contexts, points per second and drops per metric name. Each aggregate
//! worker keeps its own per-name counts and publishes its largest names here at each flush (the only
//! time it takes this lock); `/status/contexts` and `offpath stats` read the merged view. Metric names
//! are routed to exactly one worker, so merging is concatenating.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Names each worker publishes at most (its largest by live contexts); also the largest `top`.
pub const PUBLISHED_NAMES: usize = 1000;

/// One metric name in the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameRow {
    /// The metric name as shipped (mapped, namespace applied).
    pub name: String,
    /// Its live contexts (distinct host and tag sets).
    pub contexts: u64,
    /// Points received for it per second, over the worker's last flush interval.
    pub points_per_second: f64,
    /// Points refused for it because the context limit was reached, since it was first seen (a name
    /// is forgotten once it has no context left).
    pub dropped: u64,
}

/// What `/status/contexts` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextsView {
    /// `DD_AGGREGATE_CONTEXT_LIMIT`.
    pub limit: usize,
    /// Live contexts, as of the workers' last flush.
    pub live: usize,
    /// The names with the most contexts, largest first.
    pub metrics: Vec<NameRow>,
}

/// The workers' published counts.
#[derive(Debug, Default)]
pub struct ContextBoard {
    limit: AtomicUsize,
    workers: Mutex<Vec<Published>>,
}

#[derive(Debug, Default)]
struct Published {
    live: usize,
    names: Vec<NameRow>,
}

impl ContextBoard {
    /// A worker joins under the context `limit`; returns its slot.
    pub fn register(&self, limit: usize) -> usize {
        self.limit.store(limit, Relaxed);
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.push(Published::default());
        workers.len() - 1
    }

    /// Replace what worker `slot` published.
    pub fn publish(&self, slot: usize, live: usize, names: Vec<NameRow>) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = workers.get_mut(slot) {
            *p = Published { live, names };
        }
    }

    /// The `top` names with the most live contexts (at most [`PUBLISHED_NAMES`]), largest first.
    pub fn view(&self, top: usize) -> ContextsView {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut metrics: Vec<NameRow> = workers
            .iter()
            .flat_map(|w| w.names.iter().cloned())
            .collect();
        let live = workers.iter().map(|w| w.live).sum();
        drop(workers);
        metrics.sort_by(|a, b| {
            b.contexts
                .cmp(&a.contexts)
                .then_with(|| a.name.cmp(&b.name))
        });
        metrics.truncate(top.min(PUBLISHED_NAMES));
        ContextsView {
            limit: self.limit.load(Relaxed),
            live,
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, contexts: u64) -> NameRow {
        NameRow {
            name: name.into(),
            contexts,
            points_per_second: 0.0,
            dropped: 0,
        }
    }

    #[test]
    fn the_view_merges_the_workers_largest_first() {
        let board = ContextBoard::default();
        let (a, b) = (board.register(100), board.register(100));
        board.publish(a, 5, vec![row("a.small", 1), row("a.big", 4)]);
        board.publish(b, 3, vec![row("b.mid", 3)]);
        let v = board.view(2);
        assert_eq!((v.limit, v.live), (100, 8));
        let names: Vec<&str> = v.metrics.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a.big", "b.mid"]);
        board.publish(a, 0, Vec::new());
        assert_eq!(board.view(10).live, 3);
    }
}
