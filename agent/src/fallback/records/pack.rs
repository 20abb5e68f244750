//! Sharing a series' samples among its records, and packing fragments (points, sketch buckets) into
//! records of at most the record limit.

use super::{Oversize, Record};

/// Samples of parts `[done, done + n)` out of `total` parts when `samples` are shared in proportion.
pub(super) fn share(samples: u64, done: usize, n: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    let at = |k: usize| (u128::from(samples) * k as u128 / total as u128) as u64;
    at(done + n) - at(done)
}

/// Packs fragments (points, sketch buckets) between a head and a tail into records of at most `max`
/// bytes, sharing `samples` among the records in proportion to their fragments.
pub(super) struct Packer<'a> {
    head: &'a str,
    tail: &'a str,
    max: usize,
    samples: u64,
    total: usize,
    line: String,
    in_line: usize,
    line_ts: i64,
    done: usize,
}

impl<'a> Packer<'a> {
    pub(super) fn new(
        head: &'a str,
        tail: &'a str,
        max: usize,
        samples: u64,
        total: usize,
    ) -> Self {
        Self {
            head,
            tail,
            max,
            samples,
            total,
            line: String::new(),
            in_line: 0,
            line_ts: i64::MAX,
            done: 0,
        }
    }

    /// Add one fragment written by `write`; `ts` is the fragment's timestamp.
    pub(super) fn push(
        &mut self,
        ts: i64,
        out: &mut Vec<Record>,
        over: &mut Oversize,
        write: impl Fn(&mut String),
    ) {
        if self.in_line == 0 {
            self.line.clear();
            self.line.push_str(self.head);
        }
        let mark = self.line.len();
        if self.in_line > 0 {
            self.line.push(',');
        }
        write(&mut self.line);
        if self.line.len() + self.tail.len() <= self.max {
            self.in_line += 1;
            self.line_ts = self.line_ts.min(ts);
            return;
        }
        self.line.truncate(mark);
        if self.in_line > 0 {
            self.finish(out);
            self.push(ts, out, over, write);
        } else {
            // Alone it does not fit: leave it out and count it.
            over.add(1, share(self.samples, self.done, 1, self.total));
            self.done += 1;
        }
    }

    pub(super) fn finish(&mut self, out: &mut Vec<Record>) {
        if self.in_line == 0 {
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        line.push_str(self.tail);
        out.push(Record {
            ts: self.line_ts,
            line,
            samples: share(self.samples, self.done, self.in_line, self.total),
        });
        self.done += self.in_line;
        self.in_line = 0;
        self.line_ts = i64::MAX;
    }
}
