//! The `emf` format: CloudWatch Embedded Metric Format (`docs/protocols.md`, "CloudWatch Embedded Metric
//! Format"). Metrics that share timestamp,
//! host and tags go into one document: `_aws.Timestamp` in milliseconds, one directive with the configured
//! namespace (`OFFPATH_FALLBACK_EMF_NAMESPACE`), at most [`EMF_MAX_METRICS`] metrics and
//! [`EMF_MAX_VALUES`] values per metric per document (more become further documents, fullest metrics
//! first as the awslabs libraries do). Dimensions are only the tag keys listed in
//! `OFFPATH_FALLBACK_EMF_DIMENSIONS` (first [`EMF_MAX_DIMENSIONS`]) that the tags carry with exactly one
//! non-empty ASCII value, plus `host` when listed; the other tags are plain root members (`key: value`,
//! an array when a key repeats, `""` for a tag without `:`), and a tag member whose key collides with a
//! metric name, `_aws` or `host` is left out. Values: `rate` → `value × interval` with `Unit: Count`,
//! `count` → value with `Unit: Count`, `gauge` → value, sketch → the expanded values as in the
//! `forwarder` format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use super::expand::{EXPANDED_VALUES_MAX, sketch_values};
use super::json::{push_f64, push_str};
use super::pack::share;
use super::{Format, Oversize, Record};
use crate::model::{Flush, SeriesKind};

/// Most metrics in one EMF directive (EMF spec).
pub const EMF_MAX_METRICS: usize = 100;
/// Most values of one metric in one EMF document (EMF spec).
pub const EMF_MAX_VALUES: usize = 100;
/// Most keys in one EMF dimension set (CloudWatch's current limit).
pub const EMF_MAX_DIMENSIONS: usize = 30;

/// The `emf` format with its namespace and the tag keys that may become dimensions.
#[derive(Debug, Clone)]
pub(super) struct Emf {
    /// `OFFPATH_FALLBACK_EMF_NAMESPACE`.
    pub(super) namespace: String,
    /// `OFFPATH_FALLBACK_EMF_DIMENSIONS`, at most [`EMF_MAX_DIMENSIONS`].
    pub(super) dimensions: Vec<String>,
}

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

impl Format for Emf {
    fn write_metrics(&self, flush: &Flush, max: usize, out: &mut Vec<Record>, over: &mut Oversize) {
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
            self.emf_group(g, max, out, over);
        }
    }
}

impl Emf {
    /// Write the documents of one group (split at ≤100 metrics, ≤100 values each: `docs/protocols.md`, "CloudWatch
    /// Embedded Metric Format").
    fn emf_group(
        &self,
        mut g: EmfGroup<'_>,
        max: usize,
        out: &mut Vec<Record>,
        over: &mut Oversize,
    ) {
        // Tag members: key -> values, in tag order.
        let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in g.tags {
            let (k, v) = t.split_once(':').unwrap_or((t.as_str(), ""));
            members.entry(k).or_default().push(v);
        }
        let names: HashSet<&str> = g.metrics.iter().map(|m| m.name).collect();
        let host_member = !g.host.is_empty();
        let dims: Vec<&str> = self
            .dimensions
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
        push_str(&mut prefix, &self.namespace);
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
                    if base + defs.len() + vals.len() + def.len() + val.len() + 2 * sep <= max
                        || take == 1
                    {
                        break;
                    }
                    take = take.div_ceil(2);
                }
                let sep = usize::from(count > 0);
                if base + defs.len() + vals.len() + def.len() + val.len() + 2 * sep > max {
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
