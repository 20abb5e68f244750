//! The `forwarder` format: `{"m":name,"v":number,"e":unix seconds,"t":[tags]}` lines, which the Datadog
//! Forwarder turns into **distribution** points (`docs/protocols.md`, "Datadog Forwarder lines"). The
//! line cannot carry a type, an
//! interval or a weight, so what goes out is a choice, and only distributions come through faithfully:
//!
//! - a `rate` point goes out as `value × interval` (the bucket's DogStatsD count, so `sum` of the
//!   distribution is the total count), a `count` point as its value, a `gauge` point as its value;
//! - a sketch bucket goes out as one line per value it holds, each line carrying its bin's value
//!   (γ^(k−1338), within 1/128 of the original; the lowest line carries the exact `min`, the highest the
//!   exact `max`). Datadog rebuilds the same bins from these values, so count, min, max and the bins
//!   (hence percentiles) match the sketch's and the sum is within 1/128 — **exact only for
//!   distributions, and only up to [`EXPANDED_VALUES_MAX`] values per bucket**: above that the lines
//!   are allotted to bins in proportion (largest remainder), so percentiles stay within the sketch's
//!   precision plus 1/[`EXPANDED_VALUES_MAX`] of rank, while count and sum are scaled down. Each value
//!   is one log event (about 100 bytes), which is what this format costs;
//! - a non-empty host becomes a `host:<host>` tag (the line has no host field);
//! - the Forwarder types every name as a distribution: a name that Datadog already holds as a gauge or
//!   count conflicts (the same section of `docs/protocols.md`).

use std::fmt::Write as _;

use super::expand::{EXPANDED_VALUES_MAX, sketch_values};
use super::json::{push_f64, push_str};
use super::pack::share;
use super::{Format, Oversize, Record};
use crate::model::{Flush, Series, SeriesKind, SketchSeries};

/// The `forwarder` format.
#[derive(Debug, Clone, Copy)]
pub(super) struct ForwarderLines;

impl Format for ForwarderLines {
    fn write_metrics(&self, flush: &Flush, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
        for s in &flush.series {
            forwarder_series_into(s, max, out, over);
        }
        for s in &flush.sketches {
            forwarder_sketch_into(s, max, out, over);
        }
    }
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
