//! Which records a replay sends: other lines skipped, damaged records counted, duplicates skipped with
//! `--dedupe`, and what the intake would refuse as too old left out (see "Requests" in
//! `docs/protocols.md`). Pure: the time is passed in.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::ReplayReport;
use crate::fallback::destination::{DestinationFilter, Verdict};
use crate::fallback::records::{Parsed, RecordError, parse_record};
use crate::model::Flush;

/// Series points older than this (seconds) are refused by the intake.
pub(crate) const SERIES_MAX_AGE: i64 = 3600;
/// Sketch buckets older than this (seconds) are not sent (the series rule).
pub(crate) const SKETCH_MAX_AGE: i64 = 3600;
/// Events older than this (seconds) are refused by the intake.
pub(crate) const EVENT_MAX_AGE: i64 = 18 * 3600;
/// Service checks older than this (seconds) are refused by the intake.
pub(crate) const SERVICE_CHECK_MAX_AGE: i64 = 600;
/// Most record digests `--dedupe` remembers (16 bytes each, about 40 MiB in all); past it, records are
/// still checked against those remembered but no more are added.
pub(crate) const DEDUPE_MAX: usize = 2_000_000;
/// Items (points, sketch buckets, events, service checks) gathered before a batch is encoded and sent.
pub(crate) const BATCH_ITEMS: usize = 10_000;

/// Gathers records into a [`Flush`]: skips other lines, duplicates (with dedupe) and what is too old.
#[derive(Debug)]
pub(crate) struct Collector {
    now: i64,
    flush: Flush,
    items: usize,
    seen: Option<HashSet<u128>>,
    pub report: ReplayReport,
    /// Which destination's records are kept (dual shipping).
    pub destinations: DestinationFilter,
}

fn digest(line: &str) -> u128 {
    let mut a = DefaultHasher::new();
    line.hash(&mut a);
    let mut b = DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15_u64.hash(&mut b);
    line.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

impl Collector {
    pub fn new(now: i64, dedupe: bool) -> Self {
        Self {
            now,
            flush: Flush::default(),
            items: 0,
            seen: dedupe.then(HashSet::new),
            report: ReplayReport::default(),
            destinations: DestinationFilter::default(),
        }
    }

    /// Read one line.
    pub fn line(&mut self, line: &str) {
        self.report.lines += 1;
        match self.destinations.check(line) {
            Verdict::Keep => {}
            Verdict::Other => {
                self.report.other_destination += 1;
                return;
            }
            Verdict::Unknown => {
                self.report.unknown_destination += 1;
                return;
            }
        }
        let parsed = match parse_record(line) {
            Ok(p) => p,
            Err(RecordError::NotARecord) => {
                self.report.skipped += 1;
                return;
            }
            Err(e) => {
                self.report.invalid += 1;
                if self.report.invalid <= 5 {
                    tracing::warn!(error = %e, "skipping an offpath record that cannot be read");
                }
                return;
            }
        };
        self.report.records += 1;
        if let Some(seen) = &mut self.seen {
            let key = digest(
                line.get(line.find('{').unwrap_or(0)..)
                    .unwrap_or(line)
                    .trim_end(),
            );
            if seen.contains(&key) {
                self.report.duplicates += 1;
                return;
            }
            if seen.len() < DEDUPE_MAX {
                seen.insert(key);
            } else {
                self.report.dedupe_full = true;
            }
        }
        let now = self.now;
        match parsed {
            Parsed::Series(mut s) => {
                let before = s.points.len();
                s.points.retain(|&(ts, _)| ts >= now - SERIES_MAX_AGE);
                self.report.too_old += (before - s.points.len()) as u64;
                if !s.points.is_empty() {
                    s.samples = s.points.len() as u64;
                    self.items += s.points.len();
                    self.flush.series.push(s);
                }
            }
            Parsed::Sketch(mut s) => {
                let before = s.sketches.len();
                s.sketches.retain(|d| d.ts >= now - SKETCH_MAX_AGE);
                self.report.too_old += (before - s.sketches.len()) as u64;
                if !s.sketches.is_empty() {
                    s.samples = s.sketches.len() as u64;
                    self.items += s.sketches.len();
                    self.flush.sketches.push(s);
                }
            }
            Parsed::Event(e) => {
                if e.ts < now - EVENT_MAX_AGE {
                    self.report.too_old += 1;
                } else {
                    self.items += 1;
                    self.flush.events.push(e);
                }
            }
            Parsed::ServiceCheck(c) => {
                if c.ts < now - SERVICE_CHECK_MAX_AGE {
                    self.report.too_old += 1;
                } else {
                    self.items += 1;
                    self.flush.service_checks.push(c);
                }
            }
        }
    }

    /// True when a batch is ready to send.
    pub fn full(&self) -> bool {
        self.items >= BATCH_ITEMS
    }

    /// Take what has been gathered.
    pub fn take(&mut self) -> Flush {
        self.items = 0;
        std::mem::take(&mut self.flush)
    }
}
