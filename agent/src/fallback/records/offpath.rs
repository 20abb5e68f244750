//! The `offpath` format: lossless and replayable ([`super::parse_record`] reads it back). Exact shapes:
//!
//! ```text
//! {"offpath":1,"kind":"series","metric":"m","type":"rate","interval":10,"points":[[1700000000,1.5]],"tags":["a:b"],"host":"h"}
//! {"offpath":1,"kind":"sketch","metric":"m","tags":["a:b"],"host":"h","sketches":[{"ts":1700000000,"cnt":2,"min":1.0,"max":2.0,"sum":3.0,"avg":1.5,"k":[1338,1383],"n":[1,1]}]}
//! {"offpath":1,"kind":"event","title":"t","text":"x","ts":1700000000,"priority":"normal","alert_type":"info","aggregation_key":"","source_type_name":"","host":"h","tags":[]}
//! {"offpath":1,"kind":"service_check","check":"c","status":0,"ts":1700000000,"message":"","host":"h","tags":[]}
//! ```
//!
//! `interval` is written only for `rate` and `count`; `host` is omitted when empty (every kind). Numbers
//! are written in the shortest form that parses back to the same `f64`, so a record round-trips exactly.
//! A series with many points or a sketch series with many buckets becomes several records; an event
//! whose text (a service check whose message) does not fit is cut at a character boundary. Events and
//! service checks are written in this format whatever `OFFPATH_FALLBACK_FORMAT` says.

use std::fmt::Write as _;

use super::json::{push_f64, push_host, push_str, push_tags};
use super::pack::Packer;
use super::{Format, MAX_RECORD_BYTES, Oversize, Record};
use crate::model::{DogSketch, Event, Flush, Series, SeriesKind, ServiceCheck, SketchSeries};

/// The `offpath` format.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offpath;

impl Format for Offpath {
    fn write_metrics(&self, flush: &Flush, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
        for s in &flush.series {
            series_into(s, max, out, over);
        }
        for s in &flush.sketches {
            sketch_into(s, max, out, over);
        }
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

pub(super) fn event_line(e: &Event, max: usize) -> Option<String> {
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

pub(super) fn service_check_line(c: &ServiceCheck, max: usize) -> Option<String> {
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
