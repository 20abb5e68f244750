//! Owned values that leave the aggregator at a flush: series, sketches, events and service checks.
//!
//! These are the hand-off between `aggregate` and `encode`, and what fallback records are made of.

/// How a series is typed at the intake (the agent-payload `MetricType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    /// `COUNT = 1`: a raw sum over `interval` seconds.
    Count,
    /// `RATE = 2`: a per-second rate over `interval` seconds (DogStatsD `c` in the agent).
    Rate,
    /// `GAUGE = 3`: a last value.
    Gauge,
}

impl SeriesKind {
    /// The lower-case name used in fallback records (`"count"`, `"rate"`, `"gauge"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Rate => "rate",
            Self::Gauge => "gauge",
        }
    }
}

/// One metric series as shipped to `/api/v2/series`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name, namespace already applied.
    pub name: String,
    /// Sorted, de-duplicated tags, global tags included.
    pub tags: Vec<String>,
    /// Host resource; empty when unknown.
    pub host: String,
    /// Intake type.
    pub kind: SeriesKind,
    /// Interval in seconds for `Rate`/`Count`; 0 for gauges.
    pub interval: u32,
    /// `(unix seconds, value)` points.
    pub points: Vec<(i64, f64)>,
    /// DogStatsD samples (values received) this series accounts for; used for the no-loss accounting.
    pub samples: u64,
}

/// One agent DDSketch bucket as shipped in a `Dogsketch` message.
#[derive(Debug, Clone, PartialEq)]
pub struct DogSketch {
    /// Bucket start, unix seconds.
    pub ts: i64,
    /// Number of values inserted (weighted by sample rate).
    pub cnt: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of values.
    pub sum: f64,
    /// Average value.
    pub avg: f64,
    /// Bin keys, ascending.
    pub k: Vec<i32>,
    /// Bin counts, each at most 65535.
    pub n: Vec<u32>,
}

/// A distribution series as shipped to `/api/beta/sketches`.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchSeries {
    /// Metric name, namespace already applied.
    pub name: String,
    /// Sorted, de-duplicated tags, global tags included.
    pub tags: Vec<String>,
    /// Host; empty when unknown.
    pub host: String,
    /// One sketch per 10 s bucket.
    pub sketches: Vec<DogSketch>,
    /// DogStatsD samples this series accounts for.
    pub samples: u64,
}

/// Event priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `normal` (default).
    #[default]
    Normal,
    /// `low`.
    Low,
}

impl Priority {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// Event alert type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertType {
    /// `info` (default).
    #[default]
    Info,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `success`.
    Success,
}

impl AlertType {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Success => "success",
        }
    }
}

/// A DogStatsD event, owned, global tags added.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Title (`\n` escapes already turned into newlines).
    pub title: String,
    /// Text.
    pub text: String,
    /// Unix seconds; the receive time when the client sent none.
    pub ts: i64,
    /// Priority.
    pub priority: Priority,
    /// Alert type.
    pub alert_type: AlertType,
    /// Aggregation key; empty when absent.
    pub aggregation_key: String,
    /// Source type name; empty when absent.
    pub source_type_name: String,
    /// Host; empty when unknown.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A DogStatsD service check, owned, global tags added.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck {
    /// Check name.
    pub check: String,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// Unix seconds; the receive time when the client sent none.
    pub ts: i64,
    /// Message; empty when absent.
    pub message: String,
    /// Host; empty when unknown.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// Everything one flush of the aggregator produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flush {
    /// Series for `/api/v2/series`.
    pub series: Vec<Series>,
    /// Sketches for `/api/beta/sketches`.
    pub sketches: Vec<SketchSeries>,
    /// Events for `/intake/` (batched).
    pub events: Vec<Event>,
    /// Service checks for `/api/v1/check_run`.
    pub service_checks: Vec<ServiceCheck>,
}

/// What [`Flush::retain_finite`] took out of a flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonFinite {
    /// Series points and sketch buckets removed.
    pub values: usize,
    /// The DogStatsD samples they accounted for (what `points.dropped.non_finite` counts).
    pub samples: u64,
    /// The name of the first series or sketch that lost a value (for the log line).
    pub example: Option<String>,
}

/// Whether a series point is finite as shipped: a rate becomes `value × interval` in the `forwarder` and
/// `emf` records (`scale_rates`), which can overflow although the rate itself did not.
fn point_is_finite(kind: SeriesKind, interval: u32, v: f64, scale_rates: bool) -> bool {
    match kind {
        SeriesKind::Rate if scale_rates => (v * f64::from(interval.max(1))).is_finite(),
        _ => v.is_finite(),
    }
}

fn sketch_is_finite(d: &DogSketch) -> bool {
    d.min.is_finite() && d.max.is_finite() && d.sum.is_finite() && d.avg.is_finite()
}

/// The samples of item `i` of `n` when `samples` are shared among the items in proportion (the same
/// sharing the fallback records use).
fn share_of(samples: u64, i: usize, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let at = |k: usize| (u128::from(samples) * k as u128 / n as u128) as u64;
    at(i + 1) - at(i)
}

impl Flush {
    /// True when some series point or sketch bucket holds a value that is not finite (NaN, ±inf); see
    /// [`Flush::retain_finite`] for `scale_rates`.
    pub fn has_non_finite(&self, scale_rates: bool) -> bool {
        self.series.iter().any(|s| {
            s.points
                .iter()
                .any(|&(_, v)| !point_is_finite(s.kind, s.interval, v, scale_rates))
        }) || self
            .sketches
            .iter()
            .any(|s| !s.sketches.iter().all(sketch_is_finite))
    }

    /// Remove every series point and sketch bucket that is not finite: a sum or rate that overflowed
    /// `f64` (two `1.79e308|c`, `x:1|c|@1e-320`), or a sketch whose sum or average did. Such a value
    /// cannot travel (the intake would get ±inf, a JSON record `null`). With `scale_rates`, a rate point
    /// counts as `value × interval`, as the `forwarder` and `emf` records write it. A series or sketch
    /// left empty is removed; the samples of what was removed are taken from the item's samples (shared
    /// among its points or buckets in proportion) and returned, for the caller to count as dropped.
    pub fn retain_finite(&mut self, scale_rates: bool) -> NonFinite {
        let mut out = NonFinite::default();
        if !self.has_non_finite(scale_rates) {
            return out;
        }
        for s in &mut self.series {
            let (kind, interval, n) = (s.kind, s.interval, s.points.len());
            let mut i = 0;
            let mut removed = 0;
            s.points.retain(|&(_, v)| {
                let keep = point_is_finite(kind, interval, v, scale_rates);
                if !keep {
                    removed += share_of(s.samples, i, n);
                    out.values += 1;
                    out.example.get_or_insert_with(|| s.name.clone());
                }
                i += 1;
                keep
            });
            s.samples -= removed;
            out.samples += removed;
        }
        self.series.retain(|s| !s.points.is_empty());
        for s in &mut self.sketches {
            let n = s.sketches.len();
            let mut i = 0;
            let mut removed = 0;
            s.sketches.retain(|d| {
                let keep = sketch_is_finite(d);
                if !keep {
                    removed += share_of(s.samples, i, n);
                    out.values += 1;
                    out.example.get_or_insert_with(|| s.name.clone());
                }
                i += 1;
                keep
            });
            s.samples -= removed;
            out.samples += removed;
        }
        self.sketches.retain(|s| !s.sketches.is_empty());
        out
    }

    /// True when the flush carries nothing.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
            && self.sketches.is_empty()
            && self.events.is_empty()
            && self.service_checks.is_empty()
    }

    /// DogStatsD samples (plus one per event and service check) this flush accounts for.
    pub fn samples(&self) -> u64 {
        self.series.iter().map(|s| s.samples).sum::<u64>()
            + self.sketches.iter().map(|s| s.samples).sum::<u64>()
            + self.events.len() as u64
            + self.service_checks.len() as u64
    }

    /// Add `tags` (sorted, de-duplicated) to every series, sketch, event and service check that does
    /// not carry them yet, keeping series and sketch tags sorted.
    pub fn add_tags(&mut self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        fn sorted_insert(into: &mut Vec<String>, tags: &[String]) {
            for t in tags {
                if let Err(at) = into.binary_search(t) {
                    into.insert(at, t.clone());
                }
            }
        }
        fn append(into: &mut Vec<String>, tags: &[String]) {
            for t in tags {
                if !into.contains(t) {
                    into.push(t.clone());
                }
            }
        }
        for s in &mut self.series {
            sorted_insert(&mut s.tags, tags);
        }
        for s in &mut self.sketches {
            sorted_insert(&mut s.tags, tags);
        }
        for e in &mut self.events {
            append(&mut e.tags, tags);
        }
        for c in &mut self.service_checks {
            append(&mut c.tags, tags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(tags: &[&str]) -> Series {
        Series {
            name: "m".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            host: String::new(),
            kind: SeriesKind::Gauge,
            interval: 0,
            points: vec![(1, 1.0)],
            samples: 1,
        }
    }

    fn sketch(sum: f64) -> DogSketch {
        DogSketch {
            ts: 10,
            cnt: 2,
            min: 1.0,
            max: 2.0,
            sum,
            avg: sum / 2.0,
            k: vec![1338],
            n: vec![2],
        }
    }

    #[test]
    fn non_finite_points_and_buckets_leave_the_flush_with_their_share_of_samples() {
        let mut rate = series(&[]);
        rate.kind = SeriesKind::Rate;
        rate.interval = 10;
        rate.points = vec![(10, 1.0), (20, f64::INFINITY), (30, f64::NAN), (40, 2.0)];
        rate.samples = 8;
        let mut gone = series(&["g"]);
        gone.points = vec![(10, f64::NEG_INFINITY)];
        gone.samples = 3;
        let mut flush = Flush {
            series: vec![rate, gone],
            sketches: vec![SketchSeries {
                name: "d".into(),
                tags: vec![],
                host: String::new(),
                sketches: vec![sketch(3.0), sketch(f64::INFINITY)],
                samples: 4,
            }],
            ..Flush::default()
        };
        let before = flush.samples();
        assert!(flush.has_non_finite(false));
        let out = flush.retain_finite(false);
        assert_eq!((out.values, out.samples), (4, 4 + 3 + 2));
        assert_eq!(out.example.as_deref(), Some("m"));
        assert_eq!(flush.samples() + out.samples, before);
        assert_eq!(flush.series.len(), 1, "an emptied series is removed");
        assert_eq!(flush.series[0].points, [(10, 1.0), (40, 2.0)]);
        assert_eq!(flush.sketches[0].sketches, [sketch(3.0)]);
        assert!(!flush.has_non_finite(false));
        assert_eq!(flush.clone().retain_finite(false), NonFinite::default());
    }

    #[test]
    fn a_finite_rate_that_overflows_times_its_interval_is_removed_only_when_scaled() {
        let mut s = series(&[]);
        s.kind = SeriesKind::Rate;
        s.interval = 10;
        s.points = vec![(10, 1.0e308)];
        let mut flush = Flush {
            series: vec![s],
            ..Flush::default()
        };
        assert!(!flush.has_non_finite(false));
        assert!(flush.has_non_finite(true));
        assert_eq!(flush.retain_finite(true).samples, 1);
        assert!(flush.is_empty());
    }

    #[test]
    fn added_tags_join_every_item_once_and_series_tags_stay_sorted() {
        let mut flush = Flush {
            series: vec![
                series(&["a:1", "z:9"]),
                series(&["runtime:python3.12"]),
                series(&[]),
            ],
            sketches: vec![SketchSeries {
                name: "d".into(),
                tags: vec!["env:prod".into()],
                host: String::new(),
                sketches: Vec::new(),
                samples: 0,
            }],
            events: vec![Event {
                title: "t".into(),
                text: String::new(),
                ts: 1,
                priority: Priority::Normal,
                alert_type: AlertType::Info,
                aggregation_key: String::new(),
                source_type_name: String::new(),
                host: String::new(),
                tags: vec!["b:2".into()],
            }],
            service_checks: vec![ServiceCheck {
                check: "c".into(),
                status: 0,
                ts: 1,
                message: String::new(),
                host: String::new(),
                tags: vec!["runtime:python3.12".into()],
            }],
        };
        let before = flush.samples();
        flush.add_tags(&["runtime:python3.12".to_owned()]);
        assert_eq!(flush.series[0].tags, ["a:1", "runtime:python3.12", "z:9"]);
        assert_eq!(flush.series[1].tags, ["runtime:python3.12"]);
        assert_eq!(flush.series[2].tags, ["runtime:python3.12"]);
        assert_eq!(flush.sketches[0].tags, ["env:prod", "runtime:python3.12"]);
        assert_eq!(flush.events[0].tags, ["b:2", "runtime:python3.12"]);
        assert_eq!(flush.service_checks[0].tags, ["runtime:python3.12"]);
        assert_eq!(flush.samples(), before);
        let copy = flush.clone();
        flush.add_tags(&[]);
        assert_eq!(flush, copy);
    }
}
