//! What one context holds for one 10 s bucket, and how a closed bucket becomes series or sketches.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use hashbrown::HashTable;

use super::class::Class;
use super::sketch::AgentSketch;
use crate::config::{HistogramAggregate, percentile_name};
use crate::model::{Series, SeriesKind, SketchSeries};

/// Bucket width and the interval of every RATE shipped, in seconds.
pub(super) const BUCKET_SECS: i64 = 10;

/// Distinct members a set remembers per context and bucket (about 16 bytes each); further new members are
/// dropped and counted (`PointDrop::AggregateLimit`).
pub(super) const SET_MEMBER_LIMIT: usize = 16_384;

/// Timestamped points a context holds between two flushes; further points are dropped and counted.
pub(super) const TIMESTAMPED_POINT_LIMIT: usize = 16_384;

/// Histogram samples kept exactly per context and bucket (16 bytes each). Beyond it the samples move into an
/// agent DDSketch (at most 4096 bins): `.max .min .avg .sum .count` stay exact, the median and percentiles
/// become accurate to 1/128 relative.
pub(super) const HISTOGRAM_EXACT_LIMIT: usize = 1024;

/// The start of the bucket holding second `ts`.
pub(super) fn bucket_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(BUCKET_SECS)
}

/// One context's data for one bucket (32 bytes).
#[derive(Debug)]
pub(super) struct Bucket {
    /// Bucket start, unix seconds.
    pub ts: i64,
    /// DogStatsD values this bucket accounts for (a bucket holds at most 10 s of one context).
    pub samples: u32,
    pub value: Value,
}

impl Bucket {
    /// A bucket holding nothing yet.
    pub fn idle(ts: i64) -> Self {
        Self {
            ts,
            samples: 0,
            value: Value::Idle,
        }
    }

    /// Make an idle bucket ready for data of `class`.
    pub fn start(&mut self, class: Class) {
        if matches!(self.value, Value::Idle) {
            self.value = Value::new(class);
        }
    }

    pub fn has_data(&self) -> bool {
        !matches!(self.value, Value::Idle)
    }

    /// Take the data out, leaving the bucket idle.
    pub fn take(&mut self) -> Bucket {
        Bucket {
            ts: self.ts,
            samples: std::mem::take(&mut self.samples),
            value: std::mem::replace(&mut self.value, Value::Idle),
        }
    }

    /// Count values into the bucket.
    pub fn count(&mut self, n: u64) {
        self.samples = self
            .samples
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// The aggregate of one bucket, by class.
#[derive(Debug)]
pub(super) enum Value {
    /// Nothing yet (or already flushed).
    Idle,
    /// Σ v/rate.
    Count(f64),
    /// Last value.
    Gauge(f64),
    Set(Box<SetMembers>),
    Histogram(Box<Histogram>),
    Sketch(Box<AgentSketch>),
    Points(Box<Points>),
}

impl Value {
    pub fn new(class: Class) -> Self {
        match class {
            Class::Count => Self::Count(0.0),
            Class::Gauge => Self::Gauge(0.0),
            Class::Set => Self::Set(Box::default()),
            Class::Histogram => Self::Histogram(Box::default()),
            Class::Distribution => Self::Sketch(Box::default()),
            Class::TimestampedCount | Class::TimestampedGauge => Self::Points(Box::default()),
        }
    }

    /// Add one finite numeric value sent with `rate` (already in `(0, 1]`).
    pub fn add(&mut self, v: f64, rate: f64) {
        match self {
            Self::Count(sum) => *sum += v * (1.0 / rate),
            Self::Gauge(last) => *last = v,
            Self::Histogram(h) => h.add(v, rate),
            Self::Sketch(s) => s.insert_with_rate(v, rate),
            // Set members and timestamped points have their own entry points.
            Self::Idle | Self::Set(_) | Self::Points(_) => {}
        }
    }
}

/// Timestamped points waiting for the next flush.
#[derive(Debug, Default)]
pub(super) struct Points(pub Vec<(i64, f64)>);

/// Distinct set members, remembered by a 64-bit hash (two members collide with probability ~2⁻⁶⁴).
#[derive(Debug, Default)]
pub(super) struct SetMembers {
    seen: HashTable<u64>,
}

impl SetMembers {
    /// Remember a member; false when it is new and the set is full.
    pub fn insert(&mut self, member: &str) -> bool {
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(member);
        if self.seen.find(h, |&m| m == h).is_some() {
            return true;
        }
        if self.seen.len() >= SET_MEMBER_LIMIT {
            return false;
        }
        self.seen.insert_unique(h, h, |&m| m);
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Histogram samples of one bucket, with the Agent's weights: `trunc(1/rate)` for the count and the
/// percentiles, `1/rate` for the sum.
#[derive(Debug)]
pub(super) struct Histogram {
    samples: Vec<(f64, u64)>,
    /// Where the samples go once there are more than [`HISTOGRAM_EXACT_LIMIT`].
    sketch: Option<AgentSketch>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            sketch: None,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Histogram {
    fn add(&mut self, v: f64, rate: f64) {
        let n = 1.0 / rate;
        // `n` is in [1, 2⁶³): the rate is in (0, 1]; saturating like Go's int64 conversion on amd64 would not.
        let weight = (n as u64).max(1);
        self.sum += v * n;
        self.count = self.count.saturating_add(weight);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if let Some(s) = &mut self.sketch {
            s.insert_n(v, u32::try_from(weight).unwrap_or(u32::MAX));
            return;
        }
        self.samples.push((v, weight));
        if self.samples.len() > HISTOGRAM_EXACT_LIMIT {
            let mut s = AgentSketch::new();
            for (v, w) in self.samples.drain(..) {
                s.insert_n(v, u32::try_from(w).unwrap_or(u32::MAX));
            }
            self.samples = Vec::new();
            self.sketch = Some(s);
        }
    }

    /// The value where the running weight first exceeds `target` (the Agent's percentile walk).
    fn value_at(&self, target: u64) -> f64 {
        if let Some(s) = &self.sketch {
            return s.value_at_rank(target);
        }
        let mut seen = 0u64;
        for &(v, w) in &self.samples {
            seen += w;
            if seen > target {
                return v;
            }
        }
        self.max
    }
}

/// The series a histogram context ships: configured aggregates first, then percentiles ascending.
#[derive(Debug, Clone)]
pub(super) struct HistogramShape {
    aggregates: Vec<HistogramAggregate>,
    /// `(percent as an integer 0..=100, name suffix)`.
    percentiles: Vec<(u64, String)>,
}

impl HistogramShape {
    pub fn new(aggregates: &[HistogramAggregate], percentiles: &[f64]) -> Self {
        let mut p: Vec<(u64, String)> = percentiles
            .iter()
            .map(|&p| {
                (
                    (p * 100.0).round().clamp(0.0, 100.0) as u64,
                    percentile_name(p),
                )
            })
            .collect();
        p.sort_by_key(|(n, _)| *n);
        p.dedup_by_key(|(n, _)| *n);
        let mut aggregates = aggregates.to_vec();
        let mut seen = Vec::new();
        aggregates.retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        Self {
            aggregates,
            percentiles: p,
        }
    }

    fn len(&self) -> usize {
        self.aggregates.len() + self.percentiles.len()
    }

    /// No aggregate and no percentile: a histogram context would ship nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A context's identity as shipped.
#[derive(Debug)]
pub(super) struct Identity {
    pub name: String,
    pub tags: Vec<String>,
    pub host: String,
}

/// Turn one context's closed buckets (oldest first) into series or sketches.
pub(super) fn emit(
    class: Class,
    id: Identity,
    buckets: impl Iterator<Item = Bucket>,
    shape: &HistogramShape,
    series: &mut Vec<Series>,
    sketches: &mut Vec<SketchSeries>,
) {
    let one = |kind: SeriesKind, points: Vec<(i64, f64)>, samples: u64, id: Identity| Series {
        name: id.name,
        tags: id.tags,
        host: id.host,
        kind,
        interval: if kind == SeriesKind::Gauge {
            0
        } else {
            BUCKET_SECS as u32
        },
        points,
        samples,
    };
    let interval = BUCKET_SECS as f64;
    match class {
        Class::Count | Class::Gauge | Class::Set => {
            let (mut points, mut samples) = (Vec::new(), 0);
            for b in buckets {
                samples += u64::from(b.samples);
                let v = match b.value {
                    Value::Count(sum) => sum / interval,
                    Value::Gauge(last) => last,
                    Value::Set(members) => members.len() as f64,
                    _ => continue,
                };
                points.push((b.ts, v));
            }
            let kind = if class == Class::Count {
                SeriesKind::Rate
            } else {
                SeriesKind::Gauge
            };
            series.push(one(kind, points, samples, id));
        }
        Class::TimestampedCount | Class::TimestampedGauge => {
            let (mut points, mut samples) = (Vec::new(), 0);
            let divisor = if class == Class::TimestampedCount {
                interval
            } else {
                1.0
            };
            for b in buckets {
                samples += u64::from(b.samples);
                if let Value::Points(p) = b.value {
                    points.extend(p.0.into_iter().map(|(ts, v)| (ts, v / divisor)));
                }
            }
            let kind = if class == Class::TimestampedCount {
                SeriesKind::Rate
            } else {
                SeriesKind::Gauge
            };
            series.push(one(kind, points, samples, id));
        }
        Class::Distribution => {
            let (mut out, mut samples) = (Vec::new(), 0);
            for b in buckets {
                samples += u64::from(b.samples);
                if let Value::Sketch(s) = b.value {
                    out.push(s.to_dogsketch(b.ts));
                }
            }
            sketches.push(SketchSeries {
                name: id.name,
                tags: id.tags,
                host: id.host,
                sketches: out,
                samples,
            });
        }
        Class::Histogram => emit_histogram(id, buckets, shape, series),
    }
}

fn emit_histogram(
    id: Identity,
    buckets: impl Iterator<Item = Bucket>,
    shape: &HistogramShape,
    series: &mut Vec<Series>,
) {
    let mut points: Vec<Vec<(i64, f64)>> = vec![Vec::new(); shape.len()];
    let mut samples = 0;
    for b in buckets {
        samples += u64::from(b.samples);
        let Value::Histogram(mut h) = b.value else {
            continue;
        };
        if h.count == 0 {
            continue;
        }
        h.samples.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut out = points.iter_mut();
        for agg in &shape.aggregates {
            let v = match agg {
                HistogramAggregate::Max => h.max,
                HistogramAggregate::Min => h.min,
                HistogramAggregate::Median => h.value_at((h.count - 1) / 2),
                HistogramAggregate::Avg => h.sum / h.count as f64,
                HistogramAggregate::Sum => h.sum,
                HistogramAggregate::Count => h.count as f64 / BUCKET_SECS as f64,
            };
            if let Some(p) = out.next() {
                p.push((b.ts, v));
            }
        }
        for (pct, _) in &shape.percentiles {
            // The Agent's target: (p·count - 1) / 100 in integers.
            let target = (pct * h.count).saturating_sub(1) / 100;
            if let Some(p) = out.next() {
                p.push((b.ts, h.value_at(target)));
            }
        }
    }
    let suffixes = shape
        .aggregates
        .iter()
        .map(|a| (a.as_str(), *a == HistogramAggregate::Count))
        .chain(shape.percentiles.iter().map(|(_, s)| (s.as_str(), false)));
    let mut carried = false;
    for ((suffix, is_count), points) in suffixes.zip(points) {
        let (kind, interval) = if is_count {
            (SeriesKind::Rate, BUCKET_SECS as u32)
        } else {
            (SeriesKind::Gauge, 0)
        };
        series.push(Series {
            name: format!("{}.{suffix}", id.name),
            tags: id.tags.clone(),
            host: id.host.clone(),
            kind,
            interval,
            points,
            // The first series carries the samples, so a flush sums to what it accounts for.
            samples: if carried { 0 } else { samples },
        });
        carried = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[(f64, f64)]) -> Histogram {
        let mut h = Histogram::default();
        for &(v, rate) in values {
            h.add(v, rate);
        }
        h.samples.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    #[test]
    fn buckets_start_on_multiples_of_ten_seconds() {
        for (ts, start) in [
            (0, 0),
            (9, 0),
            (10, 10),
            (19, 10),
            (-1, -10),
            (1_700_000_005, 1_700_000_000),
        ] {
            assert_eq!(bucket_start(ts), start, "{ts}");
        }
    }

    #[test]
    fn histogram_percentiles_walk_the_weighted_samples_like_the_agent() {
        // 1..=100 once each: median target 49 -> 50; 95th target (95*100-1)/100 = 94 -> 95.
        let h = hist(&(1..=100).map(|i| (f64::from(i), 1.0)).collect::<Vec<_>>());
        assert_eq!(h.value_at((h.count - 1) / 2), 50.0);
        assert_eq!(h.value_at((95 * h.count - 1) / 100), 95.0);
        // A weight of 4 (rate 0.25) on the smallest value moves the median down.
        let h = hist(&[(1.0, 0.25), (2.0, 1.0), (3.0, 1.0)]);
        assert_eq!(h.count, 6);
        assert_eq!(h.value_at((h.count - 1) / 2), 1.0);
        assert_eq!(h.sum, 4.0 + 2.0 + 3.0);
    }

    #[test]
    fn a_rate_weighs_the_sum_exactly_and_the_count_truncated() {
        let h = hist(&[(10.0, 0.3)]);
        assert_eq!(h.count, 3);
        assert_eq!(h.sum, 10.0 * (1.0 / 0.3));
    }

    #[test]
    fn a_big_histogram_moves_into_a_sketch_and_keeps_exact_summaries() {
        let n = HISTOGRAM_EXACT_LIMIT as u64 * 3;
        let h = hist(&(1..=n).map(|i| (i as f64, 1.0)).collect::<Vec<_>>());
        assert!(h.sketch.is_some() && h.samples.is_empty());
        assert_eq!((h.count, h.min, h.max), (n, 1.0, n as f64));
        assert_eq!(h.sum, (n * (n + 1) / 2) as f64);
        let median = h.value_at((h.count - 1) / 2);
        let exact = ((n - 1) / 2 + 1) as f64;
        assert!(
            (median - exact).abs() / exact <= 1.0 / 128.0,
            "{median} vs {exact}"
        );
    }

    #[test]
    fn sets_count_distinct_members_up_to_their_limit() {
        let mut s = SetMembers::default();
        for m in ["a", "b", "a", "c", "b"] {
            assert!(s.insert(m));
        }
        assert_eq!(s.len(), 3);
        for i in 0..SET_MEMBER_LIMIT {
            s.insert(&i.to_string());
        }
        assert_eq!(s.len(), SET_MEMBER_LIMIT);
        assert!(!s.insert("one more"));
        assert!(s.insert("a"), "a member already seen is still accepted");
    }

    #[test]
    fn histogram_shape_sorts_percentiles_and_names_them_like_the_agent() {
        let shape = HistogramShape::new(
            &[HistogramAggregate::Max, HistogramAggregate::Max],
            &[0.99, 0.5, 0.299],
        );
        assert_eq!(shape.aggregates, [HistogramAggregate::Max]);
        let names: Vec<_> = shape
            .percentiles
            .iter()
            .map(|(p, s)| (*p, s.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (30, "30percentile"),
                (50, "50percentile"),
                (99, "99percentile")
            ]
        );
    }
}
