//! One worker's bookkeeping for the cardinality view (`/status/contexts`, `offpath stats`): live
//! contexts, points and context-limit drops per metric name.
//!
//! It is kept when a context is made or forgotten, when a line is refused at the context limit and at
//! flush (each due context adds its points), never on the lines of an existing context; the table is
//! the worker's own, so there is no lock until the worker publishes to the shared board after a flush
//! (which sums the workers' counts per name and warns about a name over a quarter of the limit).
//! Bounded: an entry has a live context, or is one of at most [`DROP_ONLY_NAMES`] names seen only
//! in drops; a name is forgotten at the first publication after its last context, unless some of its
//! points were refused at the limit since the previous one.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::telemetry::contexts::{ContextBoard, NameRow, PUBLISHED_NAMES};

/// Names tracked only because their lines were refused at the context limit, beyond the live ones.
const DROP_ONLY_NAMES: usize = 1024;

#[derive(Debug)]
struct Entry {
    name: Box<str>,
    hash: u64,
    contexts: u64,
    /// Points flushed since the last publication.
    points: u64,
    dropped: u64,
    /// Points were refused at the limit since the last publication (keeps a name without contexts).
    dropped_lately: bool,
}

/// Per-name counts of one aggregate worker.
#[derive(Debug)]
pub(super) struct NameStats {
    table: HashTable<Entry>,
    slot: usize,
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
                    dropped_lately: false,
                })
                .into_mut(),
        )
    }

    /// A context of `prefix` + `name` was made.
    pub fn added(&mut self, prefix: &str, name: &str) {
        if let Some(e) = self.entry(prefix, name, true) {
            e.contexts += 1;
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
            e.dropped_lately = true;
        }
    }

    /// Forget the names without a context or recent drops, and publish the largest of the others to
    /// `board` after a flush at `now` with `live` contexts.
    pub fn publish(&mut self, board: &ContextBoard, live: usize, now: i64) {
        // The first publication covers the buckets closed so far: one at least.
        let secs = self
            .last_publish
            .map_or(super::bucket::BUCKET_SECS, |t| now - t)
            .max(1) as f64;
        self.last_publish = Some(now);
        self.table.retain(|e| e.contexts > 0 || e.dropped_lately);
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
        board.publish(self.slot, live, rows, now);
        for e in &mut self.table {
            e.points = 0;
            e.dropped_lately = false;
        }
    }
}
