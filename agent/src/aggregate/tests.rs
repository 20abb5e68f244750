//! Aggregator behaviour, one case per row (or edge) of the table in `docs/protocols.md`, "What the Agent
//! ships per type".

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::sketch::AgentSketch;
use super::{Aggregator, OwnPoint};
use crate::config::{AggregateConfig, HistogramAggregate, MetricMapping};
use crate::dogstatsd::{self, Message, ParseError, Tags};
use crate::model::{AlertType, Flush, Priority, Series, SeriesKind, SketchSeries};
use crate::telemetry::{PointDrop, Telemetry};

/// The start of a bucket, as a wall clock would give it.
const T0: i64 = 1_700_000_000;

fn config() -> AggregateConfig {
    AggregateConfig {
        namespace: String::new(),
        tags: Vec::new(),
        hostname: "box".to_owned(),
        histogram_aggregates: HistogramAggregate::AGENT_DEFAULT.to_vec(),
        histogram_percentiles: HistogramAggregate::AGENT_DEFAULT_PERCENTILES.to_vec(),
        context_limit: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
        mapping: MetricMapping::Agent,
        workers: NonZeroUsize::MIN,
        own_names: Vec::new(),
        filter: crate::enrich::FilterConfig::default(),
        context_stats: false,
    }
}

/// One line, parsed by the real parser.
#[track_caller]
fn line(s: &str) -> Message<'_> {
    dogstatsd::parse_line(s.as_bytes()).unwrap()
}

struct Harness {
    agg: Aggregator,
    telemetry: Arc<Telemetry>,
    /// Samples of every flush so far.
    flushed: u64,
}

impl Harness {
    fn new(cfg: AggregateConfig) -> Self {
        let telemetry = Arc::new(Telemetry::default());
        Self {
            agg: Aggregator::new(&cfg, Arc::clone(&telemetry)),
            telemetry,
            flushed: 0,
        }
    }

    fn send(&mut self, lines: &[&str], now: i64) {
        for l in lines {
            self.agg.insert(&line(l), now);
        }
    }

    /// Flush as the aggregator orders it (one context's series stay together, in order).
    fn flush_unsorted(&mut self, now: i64, final_flush: bool) -> Flush {
        let f = self.agg.flush(now, final_flush);
        self.flushed += f.samples();
        f
    }

    /// Flush, with series and sketches sorted by name, host and tags (the aggregator emits contexts in table
    /// order).
    fn flush(&mut self, now: i64, final_flush: bool) -> Flush {
        let mut f = self.flush_unsorted(now, final_flush);
        f.series
            .sort_by(|a, b| (&a.name, &a.host, &a.tags).cmp(&(&b.name, &b.host, &b.tags)));
        f.sketches
            .sort_by(|a, b| (&a.name, &a.host, &a.tags).cmp(&(&b.name, &b.host, &b.tags)));
        f
    }

    fn dropped(&self, reason: PointDrop) -> u64 {
        self.telemetry.points.dropped[reason as usize].load(Relaxed)
    }

    /// Every received point is either in a flush or dropped with a reason.
    #[track_caller]
    fn assert_ledger_balances(&self) {
        let received = self.telemetry.points.received.load(Relaxed);
        let dropped = self.telemetry.points.dropped_total();
        assert_eq!(
            self.flushed,
            received - dropped,
            "received {received} dropped {dropped}"
        );
    }
}

#[track_caller]
fn only_series(f: &Flush) -> &Series {
    assert_eq!(f.series.len(), 1, "{:#?}", f.series);
    &f.series[0]
}

#[track_caller]
fn series<'f>(f: &'f Flush, name: &str) -> &'f Series {
    f.series
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no series {name} in {:#?}", f.series))
}

#[track_caller]
fn only_sketch(f: &Flush) -> &SketchSeries {
    assert_eq!(f.sketches.len(), 1, "{:#?}", f.sketches);
    &f.sketches[0]
}

#[test]
fn each_dogstatsd_type_ships_as_the_agent_ships_it() {
    struct Case {
        lines: &'static [&'static str],
        kind: SeriesKind,
        interval: u32,
        value: f64,
        samples: u64,
    }
    let cases = [
        // c: RATE, Σ(v/rate)/10.
        Case {
            lines: &["c:1|c", "c:2|c", "c:3|c"],
            kind: SeriesKind::Rate,
            interval: 10,
            value: 0.6,
            samples: 3,
        },
        Case {
            lines: &["c:1|c|@0.5", "c:1|c|@0.1"],
            kind: SeriesKind::Rate,
            interval: 10,
            value: 1.2,
            samples: 2,
        },
        Case {
            lines: &["c:1:2:3|c|@0.5"],
            kind: SeriesKind::Rate,
            interval: 10,
            value: 1.2,
            samples: 3,
        },
        Case {
            lines: &["c:-5|c"],
            kind: SeriesKind::Rate,
            interval: 10,
            value: -0.5,
            samples: 1,
        },
        // g: GAUGE, last value, rate ignored.
        Case {
            lines: &["g:1|g", "g:7|g|@0.5", "g:3|g"],
            kind: SeriesKind::Gauge,
            interval: 0,
            value: 3.0,
            samples: 3,
        },
        Case {
            lines: &["g:1:9:4|g"],
            kind: SeriesKind::Gauge,
            interval: 0,
            value: 4.0,
            samples: 3,
        },
        // s: GAUGE, distinct members.
        Case {
            lines: &["s:a|s", "s:b|s", "s:a|s", "s:a:b|s"],
            kind: SeriesKind::Gauge,
            interval: 0,
            value: 3.0,
            samples: 4,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut h = Harness::new(config());
        h.send(case.lines, T0 + 3);
        let f = h.flush(T0 + 10, false);
        let s = only_series(&f);
        assert_eq!((s.kind, s.interval), (case.kind, case.interval), "case {i}");
        assert_eq!(s.points.len(), 1, "case {i}");
        assert_eq!(s.points[0].0, T0, "case {i}");
        assert!(
            (s.points[0].1 - case.value).abs() < 1e-12,
            "case {i}: {:?}",
            s.points
        );
        assert_eq!(s.samples, case.samples, "case {i}");
        assert_eq!((s.host.as_str(), s.tags.len()), ("box", 0), "case {i}");
        h.assert_ledger_balances();
    }
}

#[test]
fn histograms_and_timers_ship_max_median_avg_count_and_95th_percentile() {
    for kind in ["h", "ms"] {
        let mut h = Harness::new(config());
        let lines: Vec<String> = (1..=100).map(|i| format!("lat:{i}|{kind}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        h.send(&refs, T0);
        let f = h.flush_unsorted(T0 + 10, false);
        let names: Vec<&str> = f.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lat.max",
                "lat.median",
                "lat.avg",
                "lat.count",
                "lat.95percentile"
            ]
        );
        let v = |n: &str| series(&f, n).points[0].1;
        assert_eq!(v("lat.max"), 100.0);
        assert_eq!(v("lat.median"), 50.0);
        assert_eq!(v("lat.avg"), 50.5);
        assert_eq!(v("lat.count"), 10.0);
        assert_eq!(v("lat.95percentile"), 95.0);
        assert_eq!(series(&f, "lat.count").kind, SeriesKind::Rate);
        assert_eq!(series(&f, "lat.count").interval, 10);
        assert_eq!(series(&f, "lat.max").kind, SeriesKind::Gauge);
        assert_eq!(
            series(&f, "lat.max").samples,
            100,
            "the first series carries the samples"
        );
        assert_eq!(f.samples(), 100);
        h.assert_ledger_balances();
    }
}

#[test]
fn histogram_sample_rates_weigh_count_and_sum_like_the_agent() {
    let mut h = Harness::new(config());
    h.send(&["h:10|h|@0.5", "h:20|h|@0.25", "h:30|h"], T0);
    let f = h.flush(T0 + 10, false);
    let v = |n: &str| series(&f, n).points[0].1;
    // Weights 2, 4, 1: count 7, sum 20 + 80 + 30.
    assert_eq!(v("h.count"), 0.7);
    assert_eq!(v("h.avg"), 130.0 / 7.0);
    // Median target (7-1)/2 = 3: weights 2 (10), 6 (20) -> 20.
    assert_eq!(v("h.median"), 20.0);
}

#[test]
fn configured_aggregates_and_percentiles_name_series_like_the_agent() {
    let mut cfg = config();
    cfg.histogram_aggregates = vec![HistogramAggregate::Min, HistogramAggregate::Sum];
    cfg.histogram_percentiles = vec![0.99, 0.299];
    let mut h = Harness::new(cfg);
    h.send(&["t:1|ms", "t:2|ms", "t:3|ms"], T0);
    let f = h.flush_unsorted(T0 + 10, false);
    let got: Vec<(&str, f64)> = f
        .series
        .iter()
        .map(|s| (s.name.as_str(), s.points[0].1))
        .collect();
    assert_eq!(
        got,
        [
            ("t.min", 1.0),
            ("t.sum", 6.0),
            ("t.30percentile", 1.0),
            ("t.99percentile", 3.0)
        ]
    );
}

#[test]
fn histograms_without_aggregates_or_percentiles_ship_nothing_and_their_values_are_counted_dropped()
{
    let mut cfg = config();
    cfg.histogram_aggregates = vec![];
    cfg.histogram_percentiles = vec![];
    let mut h = Harness::new(cfg.clone());
    h.send(&["t:1|ms", "t:2:3|h", "g:1|g", "d:1|d"], T0);
    let f = h.flush(T0 + 10, false);
    assert_eq!(only_series(&f).name, "g");
    assert_eq!(only_sketch(&f).name, "d");
    assert_eq!(h.dropped(PointDrop::HistogramNoOutput), 3);
    assert_eq!(h.agg.context_count(), 2, "no context is kept for them");
    h.assert_ledger_balances();

    // The Lambda mapping ships them as distributions, which need neither key.
    cfg.mapping = MetricMapping::LambdaDistribution;
    let mut h = Harness::new(cfg);
    h.send(&["t:1|ms", "h:2:3|h"], T0);
    let f = h.flush(T0 + 10, false);
    assert_eq!(f.sketches.len(), 2);
    assert_eq!(h.dropped(PointDrop::HistogramNoOutput), 0);
    h.assert_ledger_balances();
}

#[test]
fn distributions_become_one_agent_sketch_per_context_and_bucket() {
    let mut h = Harness::new(config());
    h.send(&["d:1|d", "d:2:3|d", "d:4|d|@0.5"], T0 + 1);
    h.send(&["d:100|d"], T0 + 12);
    let f = h.flush(T0 + 20, false);
    let s = only_sketch(&f);
    assert_eq!(s.sketches.len(), 2);
    assert_eq!(s.samples, 5);
    let mut expected = AgentSketch::new();
    for v in [1.0, 2.0, 3.0] {
        expected.insert(v);
    }
    expected.insert_with_rate(4.0, 0.5);
    assert_eq!(s.sketches[0], expected.to_dogsketch(T0));
    assert_eq!((s.sketches[1].ts, s.sketches[1].cnt), (T0 + 10, 1));
    assert!(f.series.is_empty());
    h.assert_ledger_balances();
}

#[test]
fn timestamped_counts_and_gauges_bypass_aggregation_with_their_own_timestamps() {
    let mut h = Harness::new(config());
    h.send(
        &[
            "c:5|c|T1600000000",
            "c:7|c|@0.5|T1600000003",
            "g:2|g|T1600000001",
        ],
        T0 + 2,
    );
    // Shipped at the next flush, even a periodic one in the same bucket.
    let f = h.flush(T0 + 5, false);
    let c = series(&f, "c");
    assert_eq!((c.kind, c.interval), (SeriesKind::Rate, 10));
    assert_eq!(c.points, [(1_600_000_000, 0.5), (1_600_000_003, 0.7)]);
    let g = series(&f, "g");
    assert_eq!(
        (g.kind, g.points.as_slice()),
        (SeriesKind::Gauge, &[(1_600_000_001, 2.0)][..])
    );
    assert_eq!(f.samples(), 3);
    h.assert_ledger_balances();
}

#[test]
fn timestamped_histograms_sets_and_distributions_are_dropped_and_counted() {
    let mut h = Harness::new(config());
    h.send(
        &[
            "h:1|h|T1600000000",
            "t:1:2|ms|T1600000000",
            "s:a|s|T1600000000",
            "d:1|d|T1600000000",
        ],
        T0,
    );
    assert!(h.flush(T0 + 10, true).is_empty());
    assert_eq!(h.dropped(PointDrop::TimestampUnsupported), 5);
    assert_eq!(h.agg.context_count(), 0);
    h.assert_ledger_balances();
}

#[test]
fn non_finite_values_are_dropped_and_counted_and_the_rest_of_a_packed_line_kept() {
    let mut h = Harness::new(config());
    h.send(&["c:NaN|c", "c:1:inf:-inf:2|c", "g:NaN|g", "d:inf|d"], T0);
    let f = h.flush(T0 + 10, false);
    let c = only_series(&f);
    assert_eq!((c.name.as_str(), c.points[0].1, c.samples), ("c", 0.3, 2));
    assert_eq!(h.dropped(PointDrop::NonFinite), 5);
    assert_eq!(h.agg.context_count(), 1, "an all-NaN line makes no context");
    h.assert_ledger_balances();
}

#[test]
fn tag_order_and_duplicates_do_not_make_new_contexts() {
    let mut h = Harness::new(config());
    h.send(
        &[
            "c:1|c|#b:2,a:1",
            "c:1|c|#a:1,b:2",
            "c:1|c|#a:1,b:2,a:1,,b:2",
            "c:1|c|#a:1",
        ],
        T0,
    );
    let f = h.flush(T0 + 10, false);
    let got: Vec<(&[String], f64)> = f
        .series
        .iter()
        .map(|s| (s.tags.as_slice(), s.points[0].1))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (&["a:1".to_owned()][..], 0.1));
    assert_eq!(got[1], (&["a:1".to_owned(), "b:2".to_owned()][..], 0.3));
}

#[test]
fn the_namespace_prefixes_names_except_the_agents_exempt_prefixes() {
    let mut cfg = config();
    cfg.namespace = "app.".to_owned();
    let mut h = Harness::new(cfg);
    h.send(
        &[
            "req:1|c",
            "jvm.heap:1|g",
            "datadog.dogstatsd.client.metrics:1|c",
        ],
        T0,
    );
    let f = h.flush(T0 + 10, false);
    let names: Vec<&str> = f.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["app.req", "datadog.dogstatsd.client.metrics", "jvm.heap"]
    );
}

#[test]
fn a_host_tag_sets_the_host_and_leaves_the_tags() {
    let mut h = Harness::new(config());
    h.send(
        &[
            "c:1|c|#host:web1,a",
            "c:1|c|#a,host:box",
            "c:1|c|#a",
            "c:1|c|#host:,a",
            "c:1|c|#dd.internal.entity_id:abc,dd.internal.card:low,a",
        ],
        T0,
    );
    let f = h.flush(T0 + 10, false);
    let got: Vec<(&str, f64)> = f
        .series
        .iter()
        .map(|s| (s.host.as_str(), s.points[0].1))
        .collect();
    assert_eq!(got, [("", 0.1), ("box", 0.3), ("web1", 0.1)]);
    assert!(f.series.iter().all(|s| s.tags == ["a"]));
}

#[test]
fn global_tags_are_added_sorted_and_not_duplicated() {
    let mut cfg = config();
    cfg.tags = vec![
        "env:prod".to_owned(),
        "b:1".to_owned(),
        "env:prod".to_owned(),
    ];
    let mut h = Harness::new(cfg);
    h.send(&["c:1|c|#z,env:prod", "c:1|c|#z", "c:1|c|#a"], T0);
    let f = h.flush(T0 + 10, false);
    assert_eq!(
        f.series.len(),
        2,
        "a line tag equal to a global tag is the same context"
    );
    assert_eq!(f.series[0].tags, ["a", "b:1", "env:prod"]);
    assert_eq!(f.series[1].tags, ["b:1", "env:prod", "z"]);
    assert_eq!(f.series[1].points[0].1, 0.2);
}

#[test]
fn samples_at_second_9_and_second_10_land_in_different_buckets() {
    let mut h = Harness::new(config());
    h.send(&["c:1|c"], T0 + 9);
    h.send(&["c:2|c"], T0 + 10);
    let f = h.flush(T0 + 20, false);
    assert_eq!(only_series(&f).points, [(T0, 0.1), (T0 + 10, 0.2)]);
}

#[test]
fn a_periodic_flush_emits_closed_buckets_only_and_a_final_flush_everything() {
    let mut h = Harness::new(config());
    h.send(&["c:1|c"], T0 + 5);
    h.send(&["c:2|c"], T0 + 12);
    assert!(
        h.flush(T0 + 9, false).is_empty(),
        "the bucket [0, 10) is still open at :09"
    );
    let f = h.flush(T0 + 15, false);
    assert_eq!(only_series(&f).points, [(T0, 0.1)]);
    assert!(h.flush(T0 + 19, false).is_empty());
    let f = h.flush(T0 + 19, true);
    assert_eq!(only_series(&f).points, [(T0 + 10, 0.2)]);
    assert!(h.flush(T0 + 100, true).is_empty());
    h.assert_ledger_balances();
}

#[test]
fn the_context_limit_drops_new_contexts_and_counts_them() {
    let mut cfg = config();
    cfg.context_limit = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
    let mut h = Harness::new(cfg);
    h.send(&["a:1|c", "b:1|c", "c:1:2|c", "a:1|c", "s:x|s"], T0);
    assert_eq!(h.agg.context_count(), 2);
    assert_eq!(h.dropped(PointDrop::ContextLimit), 3);
    let f = h.flush(T0 + 10, false);
    assert_eq!(f.series.len(), 2);
    h.assert_ledger_balances();
}

#[test]
fn idle_contexts_expire_and_make_room_for_new_ones() {
    let mut cfg = config();
    cfg.context_limit = NonZeroUsize::new(1).unwrap_or(NonZeroUsize::MIN);
    let mut h = Harness::new(cfg);
    h.send(&["a:1|c"], T0);
    h.flush(T0 + 15, false);
    assert_eq!(
        h.agg.context_count(),
        1,
        "kept while it may get more samples"
    );
    h.send(&["b:1|c"], T0 + 20);
    assert_eq!(h.dropped(PointDrop::ContextLimit), 1);
    h.flush(T0 + 30, false);
    assert_eq!(
        h.agg.context_count(),
        0,
        "20 s after its last bucket closed"
    );
    h.send(&["b:1|c"], T0 + 31);
    assert_eq!(h.agg.context_count(), 1);
    assert_eq!(h.flush(T0 + 31, true).series.len(), 1);
    assert_eq!(
        h.agg.context_count(),
        1,
        "an early final flush keeps the context for more samples"
    );
    h.send(&["b:2|c"], T0 + 32);
    assert_eq!(
        only_series(&h.flush(T0 + 40, false)).points,
        [(T0 + 30, 0.2)]
    );
    h.flush(T0 + 60, false);
    assert_eq!(h.agg.context_count(), 0);
    h.assert_ledger_balances();
}

#[test]
fn memory_stays_flat_under_a_cardinality_explosion() {
    let mut cfg = config();
    cfg.context_limit = NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN);
    let mut h = Harness::new(cfg);
    let mut sizes = Vec::new();
    for round in 0..5 {
        let now = T0 + round * 100;
        for i in 0..5000 {
            let l = format!("m:1|c|#id:{round}-{i}");
            h.agg.insert(&line(&l), now);
        }
        assert_eq!(h.agg.context_count(), 1000);
        sizes.push(h.agg.context_bytes());
        h.flush(now + 50, false);
        assert_eq!(h.agg.context_count(), 0);
    }
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= min / 10),
        "{sizes:?}"
    );
    assert_eq!(h.dropped(PointDrop::ContextLimit), 5 * 4000);
    h.assert_ledger_balances();
}

#[test]
fn lambda_mapping_ships_counts_histograms_and_timers_as_distributions() {
    let mut cfg = config();
    cfg.mapping = MetricMapping::LambdaDistribution;
    let mut h = Harness::new(cfg);
    h.send(
        &[
            "c:1|c|@0.5",
            "h:2|h",
            "t:3|ms",
            "d:4|d",
            "g:5|g",
            "s:x|s",
            "s:y|s",
        ],
        T0,
    );
    h.send(
        &[
            "datadog.dogstatsd.client.metrics:10|c",
            "datadog.dogstatsd.client.bytes_sent:1:2|c",
        ],
        T0,
    );
    let f = h.flush(T0 + 10, false);
    let sketches: Vec<(&str, i64, f64)> = f
        .sketches
        .iter()
        .map(|s| (s.name.as_str(), s.sketches[0].cnt, s.sketches[0].sum))
        .collect();
    assert_eq!(
        sketches,
        [("c", 2, 2.0), ("d", 1, 4.0), ("h", 1, 2.0), ("t", 1, 3.0)]
    );
    let gauges: Vec<(&str, SeriesKind, f64)> = f
        .series
        .iter()
        .map(|s| (s.name.as_str(), s.kind, s.points[0].1))
        .collect();
    assert_eq!(
        gauges,
        [("g", SeriesKind::Gauge, 5.0), ("s", SeriesKind::Gauge, 2.0)]
    );
    assert_eq!(h.dropped(PointDrop::ClientTelemetry), 3);
    h.assert_ledger_balances();
}

#[test]
fn client_telemetry_is_kept_in_agent_mapping() {
    let mut h = Harness::new(config());
    h.send(&["datadog.dogstatsd.client.metrics:10|c"], T0);
    assert_eq!(h.flush(T0 + 10, false).series.len(), 1);
}

#[test]
fn events_and_service_checks_pass_through_with_global_tags_and_host() {
    let mut cfg = config();
    cfg.tags = vec!["env:prod".to_owned()];
    let mut h = Harness::new(cfg);
    let event = Message::Event(dogstatsd::Event {
        title: "deploy".into(),
        text: "line1\nline2".into(),
        timestamp: None,
        hostname: None,
        aggregation_key: Some("k"),
        priority: Priority::Low,
        source_type_name: Some("jenkins"),
        alert_type: AlertType::Success,
        tags: Tags {
            raw: "b,a,host:web2",
        },
    });
    let check = Message::ServiceCheck(dogstatsd::ServiceCheck {
        name: "db.up",
        status: 2,
        timestamp: Some(1_600_000_000),
        hostname: Some("db1"),
        message: Some("down".into()),
        tags: Tags { raw: "host:web2" },
    });
    h.agg.insert(&event, T0 + 3);
    h.agg.insert(&check, T0 + 3);
    let f = h.flush(T0 + 4, false);
    assert_eq!(f.events.len(), 1);
    let e = &f.events[0];
    assert_eq!(
        (e.title.as_str(), e.text.as_str(), e.ts),
        ("deploy", "line1\nline2", T0 + 3)
    );
    assert_eq!(
        (e.priority, e.alert_type),
        (Priority::Low, AlertType::Success)
    );
    assert_eq!(
        (e.aggregation_key.as_str(), e.source_type_name.as_str()),
        ("k", "jenkins")
    );
    assert_eq!(
        (e.host.as_str(), e.tags.as_slice()),
        ("web2", &["a", "b", "env:prod"].map(String::from)[..])
    );
    let sc = &f.service_checks[0];
    assert_eq!(
        (sc.check.as_str(), sc.status, sc.ts),
        ("db.up", 2, 1_600_000_000)
    );
    assert_eq!((sc.message.as_str(), sc.host.as_str()), ("down", "db1"));
    assert_eq!(sc.tags, ["env:prod"]);
    assert_eq!(f.samples(), 2);
    h.assert_ledger_balances();
}

#[test]
fn a_set_drops_and_counts_members_beyond_its_limit() {
    let mut h = Harness::new(config());
    let n = super::bucket::SET_MEMBER_LIMIT + 10;
    for i in 0..n {
        h.agg.insert(&line(&format!("s:{i}|s")), T0);
    }
    let f = h.flush(T0 + 10, false);
    assert_eq!(
        only_series(&f).points[0].1,
        super::bucket::SET_MEMBER_LIMIT as f64
    );
    assert_eq!(h.dropped(PointDrop::AggregateLimit), 10);
    h.assert_ledger_balances();
}

#[test]
fn a_packet_is_parsed_and_counted_once_per_kind_and_error() {
    let mut h = Harness::new(config());
    let packet = b"a:1|c\nb:2:3|d\n_e{1,2}:t|xy\n_sc|chk|0\nbad\nc:x|c\n\nd:1|q\n";
    h.agg.insert_packet(packet, T0);
    let p = &h.telemetry.parse;
    assert_eq!(p.metrics.load(Relaxed), 2);
    assert_eq!(p.events.load(Relaxed), 1);
    assert_eq!(p.service_checks.load(Relaxed), 1);
    let errors = |e: ParseError| p.errors[e.index()].load(Relaxed);
    assert_eq!(errors(ParseError::BadFormat), 1);
    assert_eq!(errors(ParseError::BadValue), 1);
    assert_eq!(errors(ParseError::UnknownType), 1);
    assert_eq!(h.telemetry.points.received.load(Relaxed), 1 + 2 + 1 + 1);
    let f = h.flush(T0 + 10, false);
    assert_eq!(
        (
            f.series.len(),
            f.sketches.len(),
            f.events.len(),
            f.service_checks.len()
        ),
        (1, 1, 1, 1)
    );
    h.assert_ledger_balances();
}

#[test]
fn own_points_are_distributions_in_the_bucket_of_their_time_counted_like_received_ones() {
    let mut cfg = config();
    cfg.namespace = "ns.".to_owned();
    cfg.tags = vec!["functionname:f".to_owned()];
    let mut h = Harness::new(cfg);
    let own = |value: f64, ts: i64| OwnPoint {
        name: "aws.lambda.enhanced.duration".to_owned(),
        value,
        tags: "cold_start:true".to_owned(),
        ts,
    };
    h.agg.insert_own(&own(0.25, T0 + 3));
    h.agg.insert_own(&own(0.75, T0 + 5));
    // A point measured earlier than what the context holds goes in its own, older bucket.
    h.agg.insert_own(&own(1.0, T0 - 20));
    h.agg.insert_own(&own(f64::NAN, T0 + 5));
    let f = h.flush(T0 + 30, true);
    let s = only_sketch(&f);
    // No namespace: the name is used as is; the global tags are added.
    assert_eq!(s.name, "aws.lambda.enhanced.duration");
    assert_eq!(s.tags, ["cold_start:true", "functionname:f"]);
    let buckets: Vec<(i64, i64, f64)> = s.sketches.iter().map(|d| (d.ts, d.cnt, d.sum)).collect();
    assert_eq!(buckets, [(T0 - 20, 1, 1.0), (T0, 2, 1.0)]);
    assert_eq!(h.dropped(PointDrop::NonFinite), 1);
    h.assert_ledger_balances();
}

#[test]
fn a_received_line_named_like_an_own_metric_is_dropped_and_counted() {
    let mut cfg = config();
    cfg.own_names = vec!["aws.lambda.enhanced.invocations".to_owned()];
    let mut h = Harness::new(cfg);
    h.send(
        &[
            "aws.lambda.enhanced.invocations:1|d|#runtime:nodejs20.x",
            "aws.lambda.enhanced.invocations_other:1|d",
            "aws.lambda.enhanced.errors:1|d",
        ],
        T0,
    );
    h.agg.insert_own(&OwnPoint {
        name: "aws.lambda.enhanced.invocations".to_owned(),
        value: 1.0,
        tags: String::new(),
        ts: T0,
    });
    let f = h.flush(T0 + 20, true);
    assert_eq!(h.dropped(PointDrop::OwnMetric), 1);
    let names: Vec<&str> = f.sketches.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aws.lambda.enhanced.errors",
            "aws.lambda.enhanced.invocations",
            "aws.lambda.enhanced.invocations_other"
        ]
    );
    assert!(
        f.sketches[1].tags.is_empty(),
        "the own point, not the client's line"
    );
    h.assert_ledger_balances();
}

mod worker {
    use super::*;
    use crate::aggregate::{Control, spawn_worker};

    fn clock() -> i64 {
        T0 + 5
    }

    fn flush(control: &crossbeam_channel::Sender<Control>, final_flush: bool) -> Flush {
        let (reply, rx) = tokio::sync::oneshot::channel();
        control.send(Control::Flush { final_flush, reply }).unwrap();
        rx.blocking_recv().unwrap()
    }

    #[test]
    fn the_worker_inserts_queued_packets_before_it_flushes() {
        let (packets, packets_rx) = crossbeam_channel::bounded::<Vec<u8>>(16);
        let (control, control_rx) = crossbeam_channel::bounded(1);
        let telemetry = Arc::new(Telemetry::default());
        let agg = Aggregator::new(&config(), Arc::clone(&telemetry));
        let worker = spawn_worker(agg, packets_rx, control_rx, clock);
        for i in 0..10 {
            packets
                .send(format!("m:{i}|c\ng:{i}|g").into_bytes())
                .unwrap();
        }
        let f = flush(&control, true);
        assert_eq!(f.samples(), 20);
        let total: f64 = f
            .series
            .iter()
            .filter(|s| s.name == "m")
            .map(|s| s.points[0].1)
            .sum();
        assert_eq!(total, 4.5);
        // Packets disconnect: the worker keeps answering flushes.
        drop(packets);
        assert!(flush(&control, true).is_empty());
        // Control disconnects: the worker returns.
        drop(control);
        assert!(worker.join().is_ok());
        assert_eq!(telemetry.points.received.load(Relaxed), 20);
    }

    #[test]
    fn own_points_reach_the_worker_of_their_name_and_are_in_the_next_flush() {
        use crate::aggregate::{Aggregator, Workers};
        let telemetry = Arc::new(Telemetry::default());
        let (workers, _queues) =
            Workers::start::<Vec<u8>>(Aggregator::sharded(&config(), &telemetry, 3), 16, clock)
                .unwrap();
        let own = workers.own_points(Arc::clone(&telemetry));
        let points: Vec<OwnPoint> = (0..30)
            .map(|i| OwnPoint {
                name: format!("own.{}", i % 5),
                value: f64::from(i),
                tags: String::new(),
                ts: T0,
            })
            .collect();
        own.send(points);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let collected = rt.block_on(workers.flush(true, deadline));
        assert_eq!(collected.answered, 3);
        let f = collected.flush;
        assert_eq!(
            f.sketches.len(),
            5,
            "one context per name, in one worker each"
        );
        assert_eq!(f.samples(), 30);
        workers.join();
        // The workers are gone: what is sent now is counted as dropped, never lost silently.
        own.send(vec![OwnPoint {
            name: "own.late".to_owned(),
            value: 1.0,
            tags: String::new(),
            ts: T0,
        }]);
        assert_eq!(telemetry.points.received.load(Relaxed), 31);
        assert_eq!(
            telemetry.points.dropped[PointDrop::ShutdownDeadline as usize].load(Relaxed),
            1
        );
    }

    #[test]
    fn a_flush_nobody_waits_for_is_counted_as_dropped() {
        let (packets, packets_rx) = crossbeam_channel::bounded::<Vec<u8>>(16);
        let (control, control_rx) = crossbeam_channel::bounded(1);
        let telemetry = Arc::new(Telemetry::default());
        let agg = Aggregator::new(&config(), Arc::clone(&telemetry));
        let worker = spawn_worker(agg, packets_rx, control_rx, clock);
        packets.send(b"m:1:2:3|d".to_vec()).unwrap();
        let (reply, rx) = tokio::sync::oneshot::channel();
        drop(rx);
        control
            .send(Control::Flush {
                final_flush: true,
                reply,
            })
            .unwrap();
        drop(control);
        assert!(worker.join().is_ok());
        let lost = telemetry.points.dropped[PointDrop::ShutdownDeadline as usize].load(Relaxed);
        assert_eq!(lost, 3);
        drop(packets);
    }
}

#[test]
fn the_cardinality_view_counts_contexts_points_and_limit_drops_per_shipped_name() {
    let mut h = Harness::new(AggregateConfig {
        namespace: "app.".to_owned(),
        context_limit: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
        context_stats: true,
        ..config()
    });
    h.send(
        &[
            "req:1|c|#id:1",
            "req:1|c|#id:2",
            "req:1|c|#id:3",
            "req:1|c|#id:3",
            "depth:5|g",
            "late:1|c|#id:1",
            "late:1|c|#id:2|@0.5",
        ],
        T0,
    );
    let telemetry = Arc::clone(&h.telemetry);
    let board = &telemetry.contexts;
    assert_eq!(board.view(10).live, 0, "published at flush only");
    h.flush(T0 + 10, false);
    let v = board.view(10);
    assert_eq!((v.limit, v.live), (4, 4));
    let rows: Vec<(&str, u64, f64, u64)> = v
        .metrics
        .iter()
        .map(|r| (r.name.as_str(), r.contexts, r.points_per_second, r.dropped))
        .collect();
    assert_eq!(
        rows,
        [
            ("app.req", 3, 0.4, 0),
            ("app.depth", 1, 0.1, 0),
            ("app.late", 0, 0.0, 2)
        ]
    );
    assert_eq!(board.view(1).metrics.len(), 1, "top");
    // No more lines: the contexts expire, and their names with them.
    h.flush(T0 + 60, false);
    let v = board.view(10);
    assert_eq!((v.live, v.metrics.len()), (0, 0), "{v:?}");
}
