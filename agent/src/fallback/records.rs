//! Fallback records: one JSON object per line (one CloudWatch log event or one stdout line).
//!
//! Three formats, chosen by `OFFPATH_FALLBACK_FORMAT`:
//!
//! * **`offpath`** (default, lossless, replayable by `offpath replay`). Exact shapes:
//!   ```text
//!   {"offpath":1,"kind":"series","metric":"m","type":"rate","interval":10,"points":[[1700000000,1.5]],"tags":["a:b"],"host":"h"}
//!   {"offpath":1,"kind":"sketch","metric":"m","tags":["a:b"],"host":"h","sketches":[{"ts":1700000000,"cnt":2,"min":1.0,"max":2.0,"sum":3.0,"avg":1.5,"k":[1338,1383],"n":[1,1]}]}
//!   {"offpath":1,"kind":"event","title":"t","text":"x","ts":1700000000,"priority":"normal","alert_type":"info","aggregation_key":"","source_type_name":"","host":"h","tags":[]}
//!   {"offpath":1,"kind":"service_check","check":"c","status":0,"ts":1700000000,"message":"","host":"h","tags":[]}
//!   ```
//!   `interval` is written only for `rate` and `count`; `host` is omitted when empty (every kind). Numbers
//!   are written in the shortest form that parses back to the same `f64`, so a record round-trips exactly.
//!
//! * **`forwarder`**: `{"m":name,"v":number,"e":unix seconds,"t":[tags]}` lines, which the Datadog Forwarder
//!   turns into **distribution** points (PROTOCOLS.md §4.1). The line cannot carry a type, an interval or a
//!   weight, so what goes out is a choice, and only distributions come through faithfully:
//!   - a `rate` point goes out as `value × interval` (the bucket's DogStatsD count, so `sum` of the
//!     distribution is the total count), a `count` point as its value, a `gauge` point as its value;
//!   - a sketch bucket goes out as one line per value it holds, each line carrying its bin's value
//!     (γ^(k−1338), within 1/128 of the original; the lowest line carries the exact `min`, the highest the
//!     exact `max`). Datadog rebuilds the same bins from these values, so count, min, max and the bins
//!     (hence percentiles) match the sketch's and the sum is within 1/128 — **exact only for
//!     distributions, and only up to [`EXPANDED_VALUES_MAX`] values per bucket**: above that the lines
//!     are allotted to bins in proportion (largest remainder), so percentiles stay within the sketch's
//!     precision plus 1/[`EXPANDED_VALUES_MAX`] of rank, while count and sum are scaled down. Each value
//!     is one log event (about 100 bytes), which is what this format costs;
//!   - a non-empty host becomes a `host:<host>` tag (the line has no host field);
//!   - the Forwarder types every name as a distribution: a name that Datadog already holds as a gauge or
//!     count conflicts (PROTOCOLS.md §4.1 "type-conflict caveat").
//!
//! * **`emf`**: CloudWatch Embedded Metric Format (PROTOCOLS.md §5). Metrics that share timestamp, host and
//!   tags go into one document: `_aws.Timestamp` in milliseconds, one directive with the configured
//!   namespace (`OFFPATH_FALLBACK_EMF_NAMESPACE`), at most [`EMF_MAX_METRICS`] metrics and
//!   [`EMF_MAX_VALUES`] values per metric per document (more become further documents, fullest metrics
//!   first as the awslabs libraries do). Dimensions are only the tag keys listed in
//!   `OFFPATH_FALLBACK_EMF_DIMENSIONS` (first [`EMF_MAX_DIMENSIONS`]) that the tags carry with exactly one
//!   non-empty ASCII value, plus `host` when listed; the other tags are plain root members (`key: value`,
//!   an array when a key repeats, `""` for a tag without `:`), and a tag member whose key collides with a
//!   metric name, `_aws` or `host` is left out. Values: `rate` → `value × interval` with `Unit: Count`,
//!   `count` → value with `Unit: Count`, `gauge` → value, sketch → the expanded values as above.
//!
//! Events and service checks are always written as `offpath` records: the Forwarder ships such a line as
//! a log, and EMF ignores it, so neither format loses them.
//!
//! **Size.** No record exceeds [`MAX_RECORD_BYTES`]: 256 KiB minus CloudWatch's 26 bytes of per-event
//! overhead. 256 KiB is the older PutLogEvents event limit (1 MiB today) and Lambda's log line limit, so
//! records fit every partition and stdout in Lambda. A series with many points or a sketch series with
//! many buckets becomes several records (each a valid record of the same kind). An event whose text does
//! not fit is cut at a character boundary; an item that cannot fit even alone (one point whose tags alone
//! pass the limit, one sketch bucket of more than ~20,000 bins, which takes over a billion values in one
//! 10 s bucket) is reported in [`Oversize`] and counted as dropped by the caller.
//!
//! [`parse_record`] is the inverse of the `offpath` format (used by replay).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::config::{FallbackConfig, FallbackFormat};
use crate::model::{
    AlertType, DogSketch, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};

/// Largest record in bytes: 256 KiB minus the 26 bytes CloudWatch adds per event.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 - 26;
/// The record version written in the `offpath` key.
pub const VERSION: u64 = 1;
/// Most values a sketch bucket expands into in the `forwarder` and `emf` formats.
pub const EXPANDED_VALUES_MAX: u64 = 1000;
/// Most metrics in one EMF directive (EMF spec).
pub const EMF_MAX_METRICS: usize = 100;
/// Most values of one metric in one EMF document (EMF spec).
pub const EMF_MAX_VALUES: usize = 100;
/// Most keys in one EMF dimension set (CloudWatch's current limit).
pub const EMF_MAX_DIMENSIONS: usize = 30;

/// agent DDSketch γ = 1 + 2/128, as `ln γ`.
const LN_GAMMA: f64 = 0.015_504_186_535_965_254;
/// agent DDSketch key bias.
const BIAS: i32 = 1338;

/// One line for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unix seconds the record is about (its earliest point); the CloudWatch event timestamp.
    pub ts: i64,
    /// The JSON object, without a trailing newline.
    pub line: String,
    /// DogStatsD samples this record accounts for (an item's samples are shared among its records).
    pub samples: u64,
}

/// What could not be written because a single item does not fit in [`MAX_RECORD_BYTES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Oversize {
    /// Items left out: points, sketch buckets (in `emf`, expanded values), events, service checks.
    pub items: usize,
    /// Their samples.
    pub samples: u64,
    /// Samples of series points and sketch buckets left out because a value is not finite (an
    /// overflowed sum or rate; in `forwarder` and `emf` also a rate whose `value × interval` overflows):
    /// JSON has no ±inf, and `null` would not replay. Counted apart (`non_finite`), not in `items`.
    pub non_finite: u64,
}

/// Turns a [`Flush`] into records of the configured format.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: FallbackFormat,
    emf_namespace: String,
    emf_dimensions: Vec<String>,
    max_bytes: usize,
}

impl Default for Formatter {
    fn default() -> Self {
        Self {
            format: FallbackFormat::Offpath,
            emf_namespace: "offpath".to_owned(),
            emf_dimensions: Vec::new(),
            max_bytes: MAX_RECORD_BYTES,
        }
    }
}

impl Formatter {
    /// The formatter for `OFFPATH_FALLBACK_FORMAT` and the EMF settings of `cfg`.
    pub fn new(cfg: &FallbackConfig) -> Self {
        Self {
            format: cfg.format,
            emf_namespace: cfg.emf_namespace.clone(),
            emf_dimensions: cfg
                .emf_dimensions
                .iter()
                .take(EMF_MAX_DIMENSIONS)
                .cloned()
                .collect(),
            max_bytes: MAX_RECORD_BYTES,
        }
    }

    /// Use a smaller record limit (tests of the splitting; never above [`MAX_RECORD_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.min(MAX_RECORD_BYTES);
        self
    }

    /// The format this formatter writes.
    pub fn format(&self) -> FallbackFormat {
        self.format
    }

    /// Append the records of `flush` to `out`; returns what did not fit.
    pub fn write_flush(&self, flush: &Flush, out: &mut Vec<Record>) -> Oversize {
        let mut over = Oversize::default();
        let scale_rates = self.format != FallbackFormat::Offpath;
        let finite;
        let flush = if flush.has_non_finite(scale_rates) {
            let mut copy = flush.clone();
            over.non_finite = copy.retain_finite(scale_rates).samples;
            finite = copy;
            &finite
        } else {
            flush
        };
        match self.format {
            FallbackFormat::Offpath => {
                for s in &flush.series {
                    series_into(s, self.max_bytes, out, &mut over);
                }
                for s in &flush.sketches {
                    sketch_into(s, self.max_bytes, out, &mut over);
                }
            }
            FallbackFormat::Forwarder => {
                for s in &flush.series {
                    forwarder_series_into(s, self.max_bytes, out, &mut over);
                }
                for s in &flush.sketches {
                    forwarder_sketch_into(s, self.max_bytes, out, &mut over);
                }
            }
            FallbackFormat::Emf => self.emf_into(flush, out, &mut over),
        }
        for e in &flush.events {
            match event_line(e, self.max_bytes) {
                Some(line) => out.push(Record {
                    ts: e.ts,
                    line,
                    samples: 1,
                }),
                None => over.add(1, 1),
            }
        }
        for c in &flush.service_checks {
            match service_check_line(c, self.max_bytes) {
                Some(line) => out.push(Record {
                    ts: c.ts,
                    line,
                    samples: 1,
                }),
                None => over.add(1, 1),
            }
        }
        over
    }
}

impl Oversize {
    fn add(&mut self, items: usize, samples: u64) {
        self.items += items;
        self.samples += samples;
    }
}

/// The `offpath` records of one series (several when its points do not fit in one).
pub fn series_records(s: &Series) -> Vec<String> {
    let mut out = Vec::new();
    series_into(s, MAX_RECORD_BYTES, &mut out, &mut Oversize::default());
    out.into_iter().map(|r| r.line).collect()
}

/// The `offpath` records of one sketch series (several when its buckets do not fit in one).
pub fn sketch_records(s: &SketchSeries) -> Vec<String> {
    let mut out = Vec::new();
    sketch_into(s, MAX_RECORD_BYTES, &mut out, &mut Oversize::default());
    out.into_iter().map(|r| r.line).collect()
}

/// The `offpath` record of one event (text cut to fit); `None` when even that does not fit.
pub fn event_record(e: &Event) -> Option<String> {
    event_line(e, MAX_RECORD_BYTES)
}

/// The `offpath` record of one service check (message cut to fit); `None` when even that does not fit.
pub fn service_check_record(c: &ServiceCheck) -> Option<String> {
    service_check_line(c, MAX_RECORD_BYTES)
}

// ---------------------------------------------------------------------------------------------------
// JSON writing helpers

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Shortest text that parses back to the same `f64` (Rust's `Debug`); `null` for NaN and ±Inf, which
/// [`Formatter::write_flush`] never lets through (they are left out and counted as `non_finite`).
fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str("null");
    }
}

fn push_tags(out: &mut String, tags: &[String]) {
    out.push('[');
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, t);
    }
    out.push(']');
}

fn push_host(out: &mut String, host: &str) {
    if !host.is_empty() {
        out.push_str(",\"host\":");
        push_str(out, host);
    }
}

/// Samples of parts `[done, done + n)` out of `total` parts when `samples` are shared in proportion.
fn share(samples: u64, done: usize, n: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    let at = |k: usize| (u128::from(samples) * k as u128 / total as u128) as u64;
    at(done + n) - at(done)
}

/// Packs fragments (points, sketch buckets) between a head and a tail into records of at most `max`
/// bytes, sharing `samples` among the records in proportion to their fragments.
struct Packer<'a> {
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
    fn new(head: &'a str, tail: &'a str, max: usize, samples: u64, total: usize) -> Self {
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
    fn push(
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

    fn finish(&mut self, out: &mut Vec<Record>) {
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

// ---------------------------------------------------------------------------------------------------
// offpath format

fn series_into(s: &Series, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
    let mut head = String::with_capacity(64 + s.name.len());
    head.push_str("{\"offpath\":1,\"kind\":\"series\",\"metric\":");
    push_str(&mut head, &s.name);
    head.push_str(",\"type\":\"");
    head.push_str(s.kind.as_str());
    head.push('"');
    if matches!(s.kind, SeriesKind::Rate | SeriesKind::Count) {
        let _ = write!(head, ",\"interval\":{}", s.interval);
    }
    head.push_str(",\"points\":[");
    let mut tail = String::with_capacity(16 + s.tags.len() * 16);
    tail.push_str("],\"tags\":");
    push_tags(&mut tail, &s.tags);
    push_host(&mut tail, &s.host);
    tail.push('}');

    let mut p = Packer::new(&head, &tail, max, s.samples, s.points.len());
    for &(ts, v) in &s.points {
        p.push(ts, out, over, |l| {
            let _ = write!(l, "[{ts},");
            push_f64(l, v);
            l.push(']');
        });
    }
    p.finish(out);
}

fn push_sketch(l: &mut String, d: &DogSketch) {
    let _ = write!(l, "{{\"ts\":{},\"cnt\":{},\"min\":", d.ts, d.cnt);
    push_f64(l, d.min);
    l.push_str(",\"max\":");
    push_f64(l, d.max);
    l.push_str(",\"sum\":");
    push_f64(l, d.sum);
    l.push_str(",\"avg\":");
    push_f64(l, d.avg);
    l.push_str(",\"k\":[");
    for (i, k) in d.k.iter().enumerate() {
        if i > 0 {
            l.push(',');
        }
        let _ = write!(l, "{k}");
    }
    l.push_str("],\"n\":[");
    for (i, n) in d.n.iter().enumerate() {
        if i > 0 {
            l.push(',');
        }
        let _ = write!(l, "{n}");
    }
    l.push_str("]}");
}

fn sketch_into(s: &SketchSeries, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
    let mut head = String::with_capacity(64 + s.name.len());
    head.push_str("{\"offpath\":1,\"kind\":\"sketch\",\"metric\":");
    push_str(&mut head, &s.name);
    head.push_str(",\"tags\":");
    push_tags(&mut head, &s.tags);
    push_host(&mut head, &s.host);
    head.push_str(",\"sketches\":[");
    let tail = "]}";

    let mut p = Packer::new(&head, tail, max, s.samples, s.sketches.len());
    for d in &s.sketches {
        p.push(d.ts, out, over, |l| push_sketch(l, d));
    }
    p.finish(out);
}

/// Cut `s` to at most `len` bytes at a character boundary.
fn cut(s: &str, len: usize) -> &str {
    if s.len() <= len {
        return s;
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a record whose one long field (`text`, `message`) may be cut to fit: the longest prefix of
/// it, found by bisection, that keeps the line within `max`.
fn fit_line(max: usize, long: &str, write: impl Fn(&mut String, &str)) -> Option<String> {
    let mut line = String::new();
    write(&mut line, long);
    if line.len() <= max {
        return Some(line);
    }
    let (mut lo, mut hi) = (0usize, long.len());
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        line.clear();
        write(&mut line, cut(long, mid));
        if line.len() <= max {
            best = Some(std::mem::take(&mut line));
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    best
}

fn event_line(e: &Event, max: usize) -> Option<String> {
    fit_line(max, &e.text, |l, text| {
        l.push_str("{\"offpath\":1,\"kind\":\"event\",\"title\":");
        push_str(l, &e.title);
        l.push_str(",\"text\":");
        push_str(l, text);
        let _ = write!(
            l,
            ",\"ts\":{},\"priority\":\"{}\",\"alert_type\":\"{}\",\"aggregation_key\":",
            e.ts,
            e.priority.as_str(),
            e.alert_type.as_str()
        );
        push_str(l, &e.aggregation_key);
        l.push_str(",\"source_type_name\":");
        push_str(l, &e.source_type_name);
        push_host(l, &e.host);
        l.push_str(",\"tags\":");
        push_tags(l, &e.tags);
        l.push('}');
    })
}

fn service_check_line(c: &ServiceCheck, max: usize) -> Option<String> {
    fit_line(max, &c.message, |l, message| {
        l.push_str("{\"offpath\":1,\"kind\":\"service_check\",\"check\":");
        push_str(l, &c.check);
        let _ = write!(l, ",\"status\":{},\"ts\":{},\"message\":", c.status, c.ts);
        push_str(l, message);
        push_host(l, &c.host);
        l.push_str(",\"tags\":");
        push_tags(l, &c.tags);
        l.push('}');
    })
}

// ---------------------------------------------------------------------------------------------------
// forwarder format

/// The value of an agent DDSketch bin key: γ^(k−1338), mirrored for negative keys, 0 for key 0.
pub fn bin_value(k: i32) -> f64 {
    match k {
        0 => 0.0,
        k if k > 0 => (f64::from(k - BIAS) * LN_GAMMA).exp(),
        k => -(f64::from(-k - BIAS) * LN_GAMMA).exp(),
    }
}

/// The values a sketch bucket stands for, ascending: each bin's value repeated by its count, at most
/// `cap` values (allotted to bins by largest remainder above that), the first and last replaced by the
/// exact `min` and `max`.
pub fn sketch_values(d: &DogSketch, cap: u64) -> Vec<f64> {
    let total: u64 = d.n.iter().map(|&n| u64::from(n)).sum();
    let counts: Vec<u64> = if total <= cap {
        d.n.iter().map(|&n| u64::from(n)).collect()
    } else {
        let mut c: Vec<u64> = d.n.iter().map(|&n| u64::from(n) * cap / total).collect();
        let mut rest: Vec<(u64, usize)> =
            d.n.iter()
                .enumerate()
                .map(|(i, &n)| (u64::from(n) * cap % total, i))
                .collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let missing = cap - c.iter().sum::<u64>();
        for &(_, i) in rest.iter().take(missing as usize) {
            c[i] += 1;
        }
        c
    };
    let mut values = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
    for (&k, &c) in d.k.iter().zip(&counts) {
        let v = bin_value(k);
        values.extend(std::iter::repeat_n(v, c as usize));
    }
    if let Some(first) = values.first_mut()
        && d.min.is_finite()
    {
        *first = d.min;
    }
    if let Some(last) = values.last_mut()
        && d.max.is_finite()
    {
        *last = d.max;
    }
    values
}

fn forwarder_tail(tags: &[String], host: &str) -> String {
    let mut tail = String::from(",\"t\":[");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            tail.push(',');
        }
        push_str(&mut tail, t);
    }
    if !host.is_empty() {
        if !tags.is_empty() {
            tail.push(',');
        }
        push_str(&mut tail, &format!("host:{host}"));
    }
    tail.push_str("]}");
    tail
}

fn forwarder_line(head: &str, v: f64, ts: i64, tail: &str) -> String {
    let mut l = String::with_capacity(head.len() + tail.len() + 40);
    l.push_str(head);
    push_f64(&mut l, v);
    let _ = write!(l, ",\"e\":{ts}");
    l.push_str(tail);
    l
}

fn forwarder_head(name: &str) -> String {
    let mut head = String::from("{\"m\":");
    push_str(&mut head, name);
    head.push_str(",\"v\":");
    head
}

fn forwarder_series_into(s: &Series, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
    let head = forwarder_head(&s.name);
    let tail = forwarder_tail(&s.tags, &s.host);
    let n = s.points.len();
    for (i, &(ts, v)) in s.points.iter().enumerate() {
        let v = match s.kind {
            SeriesKind::Rate => v * f64::from(s.interval.max(1)),
            SeriesKind::Count | SeriesKind::Gauge => v,
        };
        let line = forwarder_line(&head, v, ts, &tail);
        let samples = share(s.samples, i, 1, n);
        if line.len() > max {
            over.add(1, samples);
        } else {
            out.push(Record { ts, line, samples });
        }
    }
}

fn forwarder_sketch_into(s: &SketchSeries, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
    let head = forwarder_head(&s.name);
    let tail = forwarder_tail(&s.tags, &s.host);
    let n = s.sketches.len();
    for (i, d) in s.sketches.iter().enumerate() {
        let samples = share(s.samples, i, 1, n);
        let values = sketch_values(d, EXPANDED_VALUES_MAX);
        // A bucket without bins stands for no value: nothing to write, but its samples are counted.
        if values.is_empty() || head.len() + tail.len() + 48 > max {
            over.add(1, samples);
            continue;
        }
        let m = values.len();
        for (j, &v) in values.iter().enumerate() {
            out.push(Record {
                ts: d.ts,
                line: forwarder_line(&head, v, d.ts, &tail),
                samples: share(samples, j, 1, m),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// EMF format

/// One metric of an EMF group: its name, unit, values and samples.
struct EmfMetric<'a> {
    name: &'a str,
    unit: Option<&'static str>,
    values: Vec<f64>,
    samples: u64,
}

/// Metrics that share a timestamp, host and tags.
struct EmfGroup<'a> {
    ts: i64,
    host: &'a str,
    tags: &'a [String],
    metrics: Vec<EmfMetric<'a>>,
}

impl Formatter {
    fn emf_into(&self, flush: &Flush, out: &mut Vec<Record>, over: &mut Oversize) {
        let mut groups: Vec<EmfGroup<'_>> = Vec::new();
        let mut index = HashMap::new();
        for s in &flush.series {
            let n = s.points.len();
            for (i, &(ts, v)) in s.points.iter().enumerate() {
                let (v, unit) = match s.kind {
                    SeriesKind::Rate => (v * f64::from(s.interval.max(1)), Some("Count")),
                    SeriesKind::Count => (v, Some("Count")),
                    SeriesKind::Gauge => (v, None),
                };
                emf_add(
                    &mut groups,
                    &mut index,
                    ts,
                    &s.host,
                    &s.tags,
                    EmfMetric {
                        name: &s.name,
                        unit,
                        values: vec![v],
                        samples: share(s.samples, i, 1, n),
                    },
                );
            }
        }
        for s in &flush.sketches {
            let n = s.sketches.len();
            for (i, d) in s.sketches.iter().enumerate() {
                let values = sketch_values(d, EXPANDED_VALUES_MAX);
                let samples = share(s.samples, i, 1, n);
                if values.is_empty() {
                    // No bins, no value to write; its samples are still counted.
                    over.add(1, samples);
                    continue;
                }
                emf_add(
                    &mut groups,
                    &mut index,
                    d.ts,
                    &s.host,
                    &s.tags,
                    EmfMetric {
                        name: &s.name,
                        unit: None,
                        values,
                        samples,
                    },
                );
            }
        }
        for g in groups {
            self.emf_group(g, out, over);
        }
    }

    /// Write the documents of one group (PROTOCOLS.md §5 splitting: ≤100 metrics, ≤100 values each).
    fn emf_group(&self, mut g: EmfGroup<'_>, out: &mut Vec<Record>, over: &mut Oversize) {
        // Tag members: key -> values, in tag order.
        let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in g.tags {
            let (k, v) = t.split_once(':').unwrap_or((t.as_str(), ""));
            members.entry(k).or_default().push(v);
        }
        let names: HashSet<&str> = g.metrics.iter().map(|m| m.name).collect();
        let host_member = !g.host.is_empty();
        let dims: Vec<&str> = self
            .emf_dimensions
            .iter()
            .map(String::as_str)
            .filter(|&d| {
                if names.contains(d) {
                    return false;
                }
                if d == "host" {
                    return host_member && dimension_value_ok(g.host);
                }
                matches!(members.get(d), Some(v) if v.len() == 1 && dimension_value_ok(v[0]))
            })
            .collect();

        let mut prefix = String::new();
        let _ = write!(
            prefix,
            "{{\"_aws\":{{\"Timestamp\":{},",
            g.ts.saturating_mul(1000)
        );
        prefix.push_str("\"CloudWatchMetrics\":[{\"Namespace\":");
        push_str(&mut prefix, &self.emf_namespace);
        prefix.push_str(",\"Dimensions\":[[");
        for (i, d) in dims.iter().enumerate() {
            if i > 0 {
                prefix.push(',');
            }
            push_str(&mut prefix, d);
        }
        prefix.push_str("]],\"Metrics\":[");
        let mut mid = String::from("]}]}");
        if host_member {
            mid.push_str(",\"host\":");
            push_str(&mut mid, g.host);
        }
        for (k, vs) in &members {
            if *k == "_aws" || (*k == "host" && host_member) || names.contains(k) {
                continue;
            }
            mid.push(',');
            push_str(&mut mid, k);
            mid.push(':');
            if let [v] = vs.as_slice() {
                push_str(&mut mid, v);
            } else {
                mid.push('[');
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        mid.push(',');
                    }
                    push_str(&mut mid, v);
                }
                mid.push(']');
            }
        }
        // The document is prefix, definitions, mid, `,`, members, `}`.
        let base = prefix.len() + mid.len() + 2;

        // Fullest metrics first (awslabs LogSerializer).
        g.metrics.sort_by_key(|m| std::cmp::Reverse(m.values.len()));
        let mut offsets = vec![0usize; g.metrics.len()];
        let mut defs = String::new();
        let mut vals = String::new();
        let mut def = String::new();
        let mut val = String::new();
        loop {
            defs.clear();
            vals.clear();
            let mut count = 0;
            let mut samples = 0;
            for (m, off) in g.metrics.iter().zip(offsets.iter_mut()) {
                if *off >= m.values.len() || count == EMF_MAX_METRICS {
                    continue;
                }
                let mut take = (m.values.len() - *off).min(EMF_MAX_VALUES);
                loop {
                    emf_metric(m, &m.values[*off..*off + take], &mut def, &mut val);
                    let sep = usize::from(count > 0);
                    if base + defs.len() + vals.len() + def.len() + val.len() + 2 * sep
                        <= self.max_bytes
                        || take == 1
                    {
                        break;
                    }
                    take = take.div_ceil(2);
                }
                let sep = usize::from(count > 0);
                if base + defs.len() + vals.len() + def.len() + val.len() + 2 * sep > self.max_bytes
                {
                    if count == 0 {
                        // Not even one value of this metric fits beside the tags.
                        let samples = if *off == 0 { m.samples } else { 0 };
                        over.add(m.values.len() - *off, samples);
                        *off = m.values.len();
                    }
                    continue;
                }
                if count > 0 {
                    defs.push(',');
                    vals.push(',');
                }
                defs.push_str(&def);
                vals.push_str(&val);
                if *off == 0 {
                    samples += m.samples;
                }
                *off += take;
                count += 1;
            }
            if count == 0 {
                break;
            }
            let mut line = String::with_capacity(base + defs.len() + vals.len() + 1);
            line.push_str(&prefix);
            line.push_str(&defs);
            line.push_str(&mid);
            line.push(',');
            line.push_str(&vals);
            line.push('}');
            out.push(Record {
                ts: g.ts,
                line,
                samples,
            });
        }
    }
}

/// Add a metric to the group of its (timestamp, host, tags), creating the group on first use.
fn emf_add<'a>(
    groups: &mut Vec<EmfGroup<'a>>,
    index: &mut HashMap<(i64, &'a str, &'a [String]), usize>,
    ts: i64,
    host: &'a str,
    tags: &'a [String],
    metric: EmfMetric<'a>,
) {
    let i = *index.entry((ts, host, tags)).or_insert_with(|| {
        groups.push(EmfGroup {
            ts,
            host,
            tags,
            metrics: Vec::new(),
        });
        groups.len() - 1
    });
    groups[i].metrics.push(metric);
}

fn dimension_value_ok(v: &str) -> bool {
    !v.trim().is_empty() && v.len() <= 1024 && v.is_ascii()
}

/// The metric definition and the root member of one EMF metric slice.
fn emf_metric(m: &EmfMetric<'_>, values: &[f64], def: &mut String, val: &mut String) {
    def.clear();
    def.push_str("{\"Name\":");
    push_str(def, m.name);
    if let Some(u) = m.unit {
        def.push_str(",\"Unit\":\"");
        def.push_str(u);
        def.push('"');
    }
    def.push('}');
    val.clear();
    push_str(val, m.name);
    val.push(':');
    if let [v] = values {
        push_f64(val, *v);
    } else {
        val.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                val.push(',');
            }
            push_f64(val, *v);
        }
        val.push(']');
    }
}

// ---------------------------------------------------------------------------------------------------
// parsing (replay)

/// One parsed `offpath` record.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A series record; `samples` is its number of points.
    Series(Series),
    /// A sketch record; `samples` is its number of sketch buckets.
    Sketch(SketchSeries),
    /// An event record.
    Event(Event),
    /// A service-check record.
    ServiceCheck(ServiceCheck),
}

/// Why a line is not a usable `offpath` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line is not a JSON object with an `offpath` key (another log line): skipped, not an error.
    #[error("not an offpath record")]
    NotARecord,
    /// An `offpath` version this build does not read.
    #[error("unsupported offpath record version {0} (this build reads version 1)")]
    Version(u64),
    /// An unknown `kind`.
    #[error("unknown record kind {0:?}")]
    Kind(String),
    /// A field that this kind needs is missing.
    #[error("{kind} record without {field:?}")]
    Missing {
        /// The record kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field has a value this kind does not accept.
    #[error("invalid {field:?} in record: {value}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What was found.
        value: String,
    },
    /// The JSON is malformed or a field has the wrong JSON type.
    #[error("malformed offpath record: {0}")]
    Json(String),
}

#[derive(serde::Deserialize)]
struct WireSketch {
    ts: i64,
    cnt: i64,
    min: f64,
    max: f64,
    sum: f64,
    avg: f64,
    k: Vec<i32>,
    n: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Wire {
    offpath: u64,
    kind: String,
    metric: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    interval: Option<u32>,
    points: Option<Vec<(i64, f64)>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    host: String,
    sketches: Option<Vec<WireSketch>>,
    title: Option<String>,
    #[serde(default)]
    text: String,
    ts: Option<i64>,
    priority: Option<String>,
    alert_type: Option<String>,
    #[serde(default)]
    aggregation_key: String,
    #[serde(default)]
    source_type_name: String,
    check: Option<String>,
    status: Option<u8>,
    #[serde(default)]
    message: String,
}

#[derive(serde::Deserialize)]
struct Probe {
    offpath: Option<serde_json::Value>,
    /// Present in every EMF document, never in an `offpath` record: an EMF document whose metric or tag
    /// member happens to be called `offpath` is still not a record.
    _aws: Option<serde::de::IgnoredAny>,
}

/// Parse one line into an `offpath` record. Text before the first `{` (a log prefix) is ignored.
///
/// # Errors
/// [`RecordError::NotARecord`] for lines that are not `offpath` records (other logs), and the other
/// variants for records that are damaged or of an unknown version or kind.
pub fn parse_record(line: &str) -> Result<Parsed, RecordError> {
    let json = match line.find('{') {
        Some(i) => line[i..].trim_end(),
        None => return Err(RecordError::NotARecord),
    };
    match serde_json::from_str::<Probe>(json) {
        Ok(Probe {
            offpath: Some(_),
            _aws: None,
        }) => {}
        _ => return Err(RecordError::NotARecord),
    }
    let w: Wire = serde_json::from_str(json).map_err(|e| RecordError::Json(e.to_string()))?;
    if w.offpath != VERSION {
        return Err(RecordError::Version(w.offpath));
    }
    let missing = |kind, field| RecordError::Missing { kind, field };
    match w.kind.as_str() {
        "series" => {
            let name = w.metric.ok_or(missing("series", "metric"))?;
            let kind = match w.ty.as_deref() {
                Some("rate") => SeriesKind::Rate,
                Some("count") => SeriesKind::Count,
                Some("gauge") => SeriesKind::Gauge,
                Some(t) => {
                    return Err(RecordError::Invalid {
                        field: "type",
                        value: t.to_owned(),
                    });
                }
                None => return Err(missing("series", "type")),
            };
            let interval = match kind {
                SeriesKind::Gauge => 0,
                _ => w.interval.ok_or(missing("series", "interval"))?,
            };
            let points = w.points.ok_or(missing("series", "points"))?;
            Ok(Parsed::Series(Series {
                name,
                tags: w.tags,
                host: w.host,
                kind,
                interval,
                samples: points.len() as u64,
                points,
            }))
        }
        "sketch" => {
            let name = w.metric.ok_or(missing("sketch", "metric"))?;
            let wire = w.sketches.ok_or(missing("sketch", "sketches"))?;
            let mut sketches = Vec::with_capacity(wire.len());
            for s in wire {
                if s.k.len() != s.n.len() {
                    return Err(RecordError::Invalid {
                        field: "k",
                        value: format!("{} keys for {} counts", s.k.len(), s.n.len()),
                    });
                }
                sketches.push(DogSketch {
                    ts: s.ts,
                    cnt: s.cnt,
                    min: s.min,
                    max: s.max,
                    sum: s.sum,
                    avg: s.avg,
                    k: s.k,
                    n: s.n,
                });
            }
            Ok(Parsed::Sketch(SketchSeries {
                name,
                tags: w.tags,
                host: w.host,
                samples: sketches.len() as u64,
                sketches,
            }))
        }
        "event" => Ok(Parsed::Event(Event {
            title: w.title.ok_or(missing("event", "title"))?,
            text: w.text,
            ts: w.ts.ok_or(missing("event", "ts"))?,
            priority: match w.priority.as_deref() {
                None | Some("normal") => Priority::Normal,
                Some("low") => Priority::Low,
                Some(p) => {
                    return Err(RecordError::Invalid {
                        field: "priority",
                        value: p.to_owned(),
                    });
                }
            },
            alert_type: match w.alert_type.as_deref() {
                None | Some("info") => AlertType::Info,
                Some("error") => AlertType::Error,
                Some("warning") => AlertType::Warning,
                Some("success") => AlertType::Success,
                Some(a) => {
                    return Err(RecordError::Invalid {
                        field: "alert_type",
                        value: a.to_owned(),
                    });
                }
            },
            aggregation_key: w.aggregation_key,
            source_type_name: w.source_type_name,
            host: w.host,
            tags: w.tags,
        })),
        "service_check" => {
            let status = w.status.ok_or(missing("service_check", "status"))?;
            if status > 3 {
                return Err(RecordError::Invalid {
                    field: "status",
                    value: status.to_string(),
                });
            }
            Ok(Parsed::ServiceCheck(ServiceCheck {
                check: w.check.ok_or(missing("service_check", "check"))?,
                status,
                ts: w.ts.ok_or(missing("service_check", "ts"))?,
                message: w.message,
                host: w.host,
                tags: w.tags,
            }))
        }
        other => Err(RecordError::Kind(other.to_owned())),
    }
}

#[cfg(test)]
mod tests;
