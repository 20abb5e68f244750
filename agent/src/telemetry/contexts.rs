//! The cardinality view: live contexts, points per second and drops per metric name. Each aggregate
//! worker keeps its own per-name counts and publishes its largest names here at each flush (the only
//! time it takes this lock); `/status/contexts` and `offpath stats` read the merged view. Lines are
//! routed by name and tag set, so one name's contexts are spread over the workers: merging sums them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Names each worker publishes at most (its largest by live contexts); also the largest `top`.
pub const PUBLISHED_NAMES: usize = 1000;
/// At most one warning this often about a name holding over a quarter of the context limit.
const WARNING_INTERVAL_SECS: i64 = 300;

/// One metric name in the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameRow {
    /// The metric name as shipped (mapped, namespace applied).
    pub name: String,
    /// Its live contexts (distinct host and tag sets).
    pub contexts: u64,
    /// Points received for it per second, over the workers' last flush interval.
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
    workers: Mutex<Workers>,
}

#[derive(Debug, Default)]
struct Workers {
    published: Vec<Published>,
    /// No warning before this time (seconds).
    next_warning: i64,
}

#[derive(Debug, Default)]
struct Published {
    live: usize,
    names: Vec<NameRow>,
}

impl ContextBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker joins under the context `limit`; returns its slot.
    pub fn register(&self, limit: usize) -> usize {
        self.limit.store(limit, Relaxed);
        let mut workers = self.lock();
        workers.published.push(Published::default());
        workers.published.len() - 1
    }

    /// Replace what worker `slot` published at `now` (seconds), and log a warning, at most once per
    /// five minutes, when one name holds more than a quarter of the context limit over all workers.
    pub fn publish(&self, slot: usize, live: usize, names: Vec<NameRow>, now: i64) {
        let quarter = (self.limit.load(Relaxed) / 4) as u64;
        let mut workers = self.lock();
        let n = workers.published.len() as u64;
        let mut warn = None;
        if now >= workers.next_warning {
            // A name over the quarter holds more than quarter / n in at least one worker: only the
            // names that do here are summed (when this worker publishes, or the other one does).
            warn = names
                .iter()
                .filter(|r| r.contexts.saturating_mul(n) > quarter)
                .find_map(|r| {
                    let others: u64 = workers
                        .published
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != slot)
                        .flat_map(|(_, p)| p.names.iter().filter(|o| o.name == r.name))
                        .map(|o| o.contexts)
                        .sum();
                    let total = r.contexts + others;
                    (total > quarter).then(|| (r.name.clone(), total))
                });
            if warn.is_some() {
                workers.next_warning = now.saturating_add(WARNING_INTERVAL_SECS);
            }
        }
        if let Some(p) = workers.published.get_mut(slot) {
            *p = Published { live, names };
        }
        drop(workers);
        if let Some((metric, contexts)) = warn {
            tracing::warn!(
                metric = %metric,
                contexts,
                limit = self.limit.load(Relaxed),
                "one metric name holds more than a quarter of the context limit \
                 (DD_AGGREGATE_CONTEXT_LIMIT); its tags probably carry unbounded values (ids, \
                 timestamps): see `offpath stats`"
            );
        }
    }

    /// The `top` names with the most live contexts (at most [`PUBLISHED_NAMES`]), largest first, each
    /// summed over the workers.
    pub fn view(&self, top: usize) -> ContextsView {
        let workers = self.lock();
        let live = workers.published.iter().map(|w| w.live).sum();
        let mut merged: HashMap<&str, NameRow> = HashMap::new();
        for row in workers.published.iter().flat_map(|w| w.names.iter()) {
            merged
                .entry(row.name.as_str())
                .and_modify(|m| {
                    m.contexts += row.contexts;
                    m.points_per_second += row.points_per_second;
                    m.dropped += row.dropped;
                })
                .or_insert_with(|| row.clone());
        }
        let mut metrics: Vec<NameRow> = merged.into_values().collect();
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
        board.publish(a, 5, vec![row("small", 1), row("big", 4)], 0);
        board.publish(b, 3, vec![row("mid", 3)], 0);
        let v = board.view(2);
        assert_eq!((v.limit, v.live), (100, 8));
        let names: Vec<&str> = v.metrics.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["big", "mid"]);
        board.publish(a, 0, Vec::new(), 10);
        assert_eq!(board.view(10).live, 3);
    }

    #[test]
    fn a_name_spread_over_workers_is_summed() {
        let board = ContextBoard::default();
        let (a, b) = (board.register(100), board.register(100));
        let spread = |contexts, pps, dropped| NameRow {
            points_per_second: pps,
            dropped,
            ..row("spread", contexts)
        };
        board.publish(a, 20, vec![spread(15, 1.5, 2), row("alone", 5)], 0);
        board.publish(b, 10, vec![spread(10, 0.5, 1)], 0);
        let v = board.view(10);
        assert_eq!(v.live, 30);
        assert_eq!(v.metrics[0], spread(25, 2.0, 3));
        assert_eq!(v.metrics[1], row("alone", 5));
        assert_eq!(v.metrics.len(), 2);
    }

    #[test]
    fn the_quarter_warning_sums_the_workers_and_waits_five_minutes() {
        let board = ContextBoard::default();
        let (a, b) = (board.register(100), board.register(100));
        board.publish(a, 15, vec![row("spread", 15)], 0);
        assert_eq!(board.lock().next_warning, 0, "15 of 100 is under a quarter");
        board.publish(b, 15, vec![row("spread", 15)], 10);
        assert_eq!(
            board.lock().next_warning,
            10 + WARNING_INTERVAL_SECS,
            "30 of 100 warns"
        );
        board.publish(a, 15, vec![row("spread", 15)], 20);
        assert_eq!(
            board.lock().next_warning,
            10 + WARNING_INTERVAL_SECS,
            "rate-limited"
        );
    }
}
