//! One worker's bookkeeping for the cardinality view (`/status/contexts`, `offpath stats`): live
//! contexts, points and context-limit drops per metric name.
//!
//! It is kept when a context is made or forgotten, when a line is refused at the context limit and at
//! flush (each due context adds its points), never on the lines of an existing context; the table is
//! the worker's own, so there is no lock until the worker publishes to the shared board after a flush.
//! Bounded: an entry has a live context, or is one of at most [`DROP_ONLY_NAMES`] names seen only
//! in drops; a name is forgotten at the first publication after its last context.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::telemetry::contexts::{ContextBoard, NameRow, PUBLISHED_NAMES};

/// Names tracked only because their lines were refused at the context limit, beyond the live ones.
const DROP_ONLY_NAMES: usize = 1024;
/// One warning per worker at most this often about a name holding over a quarter of the limit.
const WARNING_INTERVAL_SECS: i64 = 300;

#[derive(Debug)]
struct Entry {
    name: Box<str>,
    hash: u64,
    contexts: u64,
    /// Points flushed since the last publication.
    points: u64,
    dropped: u64,
}

/// Per-name counts of one aggregate worker.
#[derive(Debug)]
pub(super) struct NameStats {
    table: HashTable<Entry>,
    slot: usize,
    /// More live contexts than this for one name is worth a warning (a quarter of the limit).
    quarter: u64,
    limit: usize,
    next_warning: i64,
    last_publish: Option<i64>,
}

/// The hash of `prefix` followed by `name`, whether or not they are one string.
fn hash(prefix: &str, name: &str) -> u64 {
    let mut h = FxHasher::default();
    for b in prefix.bytes().chain(name.bytes()) {
        h.write_u8(b);
    }
    h.finish()
}

fn is(e: &Entry, prefix: &str, name: &str) -> bool {
    e.name.len() == prefix.len() + name.len()
        && e.name.starts_with(prefix)
        && e.name.ends_with(name)
}

impl NameStats {
    /// The counts of a worker that joins `board` under the context `limit`.
    pub fn new(board: &ContextBoard, limit: usize) -> Self {
        Self {
            table: HashTable::new(),
            slot: board.register(limit),
            quarter: (limit / 4) as u64,
            limit,
            next_warning: i64::MIN,
            last_publish: None,
        }
    }

    fn entry(&mut self, prefix: &str, name: &str, create: bool) -> Option<&mut Entry> {
        let h = hash(prefix, name);
        if !create {
            return self.table.find_mut(h, |e| is(e, prefix, name));
        }
        let entry = self.table.entry(h, |e| is(e, prefix, name), |e| e.hash);
        Some(
            entry
                .or_insert_with(|| Entry {
                    name: format!("{prefix}{name}").into_boxed_str(),
                    hash: h,
                    contexts: 0,
                    points: 0,
                    dropped: 0,
                })
                .into_mut(),
        )
    }

    /// A context of `prefix` + `name` was made at `now`.
    pub fn added(&mut self, prefix: &str, name: &str, now: i64) {
        let (quarter, limit, next_warning) = (self.quarter, self.limit, self.next_warning);
        let Some(e) = self.entry(prefix, name, true) else {
            return;
        };
        e.contexts += 1;
        if e.contexts > quarter && now >= next_warning {
            tracing::warn!(
                metric = %e.name,
                contexts = e.contexts,
                limit,
                "one metric name holds more than a quarter of the context limit \
                 (DD_AGGREGATE_CONTEXT_LIMIT); its tags probably carry unbounded values (ids, \
                 timestamps): see `offpath stats`"
            );
            self.next_warning = now + WARNING_INTERVAL_SECS;
        }
    }

    /// A context named `name` (namespace applied) was forgotten.
    pub fn removed(&mut self, name: &str) {
        if let Some(e) = self.entry("", name, false) {
            e.contexts = e.contexts.saturating_sub(1);
        }
    }

    /// A context named `name` flushed `points` points.
    pub fn flushed(&mut self, name: &str, points: u64) {
        if let Some(e) = self.entry("", name, false) {
            e.points += points;
        }
    }

    /// `n` points of `prefix` + `name` were refused at the context limit, with `live` contexts.
    pub fn dropped(&mut self, prefix: &str, name: &str, n: u64, live: usize) {
        let room = self.table.len() < live + DROP_ONLY_NAMES;
        if let Some(e) = self.entry(prefix, name, room) {
            e.dropped += n;
        }
    }

    /// Publish the largest names to `board` after a flush at `now` with `live` contexts, and forget the
    /// names without a context.
    pub fn publish(&mut self, board: &ContextBoard, live: usize, now: i64) {
        let secs = self.last_publish.map_or(0, |t| now - t).max(1) as f64;
        self.last_publish = Some(now);
        let mut rows: Vec<NameRow> = Vec::with_capacity(self.table.len().min(PUBLISHED_NAMES));
        let mut largest: Vec<&Entry> = self.table.iter().collect();
        if largest.len() > PUBLISHED_NAMES {
            largest.select_nth_unstable_by(PUBLISHED_NAMES, |a, b| b.contexts.cmp(&a.contexts));
            largest.truncate(PUBLISHED_NAMES);
        }
        rows.extend(largest.into_iter().map(|e| NameRow {
            name: e.name.to_string(),
            contexts: e.contexts,
            points_per_second: e.points as f64 / secs,
            dropped: e.dropped,
        }));
        board.publish(self.slot, live, rows);
        self.table.retain(|e| {
            e.points = 0;
            e.contexts > 0
        });
    }
}
