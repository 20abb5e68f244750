//! The CloudWatch Logs fallback against a real moto server, with a fault-injecting proxy in front that
//! records every call so the tests can check the PutLogEvents limits offpath must respect itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offpath::config::{FallbackConfig, FallbackFormat, FallbackSink};
use offpath::fallback::Fallback;
use offpath::fallback::records::{MAX_RECORD_BYTES, Parsed, parse_record};
use offpath::model::{
    AlertType, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};
use offpath::telemetry::{PointDrop, Telemetry};
use offpath_tests::cloudwatch::{Fault, FaultProxy, Moto, PutCall};
use offpath_tests::support::edge_sketches;
use serde_json::Value;
use tokio::time::Instant;

const GROUP: &str = "/offpath/fallback-test";
const STREAM: &str = "host-1";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config(format: FallbackFormat) -> FallbackConfig {
    FallbackConfig {
        sink: FallbackSink::CloudWatch,
        log_group: Some(GROUP.to_owned()),
        log_stream: Some(STREAM.to_owned()),
        format,
        emf_dimensions: vec!["env".to_owned(), "service".to_owned()],
        emf_namespace: "offpath-test".to_owned(),
    }
}

async fn fallback(
    format: FallbackFormat,
    proxy: &FaultProxy,
    telemetry: &Arc<Telemetry>,
) -> Fallback {
    let fb = Fallback::with_aws(
        &config(format),
        Arc::clone(telemetry),
        &proxy.sdk_config().await,
    )
    .unwrap();
    assert_eq!(fb.sink(), FallbackSink::CloudWatch);
    fb
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// A flush of `n` distinct series, about `now`, each with 3 samples.
fn series_burst(n: usize, ts: i64) -> Flush {
    Flush {
        series: (0..n)
            .map(|i| Series {
                name: format!("burst.metric.{}", i % 50),
                tags: vec![
                    "env:prod".to_owned(),
                    "service:web".to_owned(),
                    format!("shard:{i}"),
                ],
                host: "i-0123456789abcdef0".to_owned(),
                kind: if i % 2 == 0 {
                    SeriesKind::Rate
                } else {
                    SeriesKind::Gauge
                },
                interval: if i % 2 == 0 { 10 } else { 0 },
                points: vec![(ts - ts % 10 - 10 * (i as i64 % 3), i as f64 * 0.25)],
                samples: 3,
            })
            .collect(),
        ..Flush::default()
    }
}

#[track_caller]
fn assert_call_within_limits(call: &PutCall) {
    assert!(!call.events.is_empty(), "empty PutLogEvents call");
    assert!(
        call.events.len() <= 10_000,
        "{} events in one call",
        call.events.len()
    );
    assert!(
        call.batch_bytes() <= 1_048_576,
        "{} bytes in one call",
        call.batch_bytes()
    );
    for (_, m) in &call.events {
        assert!(m.len() + 26 <= 256 * 1024, "event of {} bytes", m.len());
    }
    assert!(
        call.events.windows(2).all(|w| w[0].0 <= w[1].0),
        "events out of chronological order"
    );
    let span = call.events.last().unwrap().0 - call.events[0].0;
    assert!(span < 24 * 3600 * 1000, "batch spans {span} ms");
}

fn fell_back(t: &Telemetry) -> u64 {
    t.points.fell_back.load(Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50000_series_goes_out_in_calls_that_respect_every_put_log_events_limit() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry).await;

    let t = now();
    let mut flush = series_burst(50_000, t);
    // A day and a half of history on a few series, and one series too long for one event.
    for (i, s) in flush.series.iter_mut().take(40).enumerate() {
        s.points = vec![(t - 36 * 3600 + i as i64 * 3600, 1.0)];
    }
    flush.series[40].points = (0..40_000).map(|i| (t - 40_000 + i, i as f64)).collect();
    fb.write_flush(&flush).await;
    fb.flush(deadline(120)).await;

    let calls = proxy.put_calls();
    assert!(calls.len() > 1);
    for c in &calls {
        assert_eq!((c.group.as_str(), c.stream.as_str()), (GROUP, STREAM));
        assert_call_within_limits(c);
    }
    let sent: usize = calls
        .iter()
        .filter(|c| c.accepted())
        .map(|c| c.events.len())
        .sum();
    let stored = moto.events(GROUP, Some(STREAM)).await;
    assert_eq!(stored.len(), sent);
    assert_eq!(
        telemetry.forward.fallback_records.load(Relaxed),
        sent as u64
    );
    assert_eq!(fell_back(&telemetry), flush.samples());
    assert_eq!(telemetry.points.dropped_total(), 0);
    assert_eq!(fb.buffered_bytes(), 0);

    // Every point of every series is in the log group exactly once.
    let mut points = 0;
    for (_, m) in &stored {
        let Parsed::Series(s) = parse_record(m).unwrap() else {
            panic!("not a series record: {m}")
        };
        points += s.points.len();
    }
    assert_eq!(
        points,
        flush.series.iter().map(|s| s.points.len()).sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_bytes_per_10000_series_are_measured() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry).await;
    fb.write_flush(&series_burst(10_000, now())).await;
    fb.flush(deadline(60)).await;
    let calls: Vec<PutCall> = proxy
        .put_calls()
        .into_iter()
        .filter(PutCall::accepted)
        .collect();
    let records: usize = calls.iter().map(|c| c.events.len()).sum();
    let bytes: usize = calls.iter().map(PutCall::batch_bytes).sum();
    eprintln!(
        "10,000 series -> {records} records, {bytes} PutLogEvents bytes, {} calls",
        calls.len()
    );
    assert_eq!(records, 10_000);
    assert_eq!(fell_back(&telemetry), 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_unavailability_on_the_first_calls_lose_nothing() {
    let moto = Moto::start();
    let faults = vec![
        Fault::Throttle,
        Fault::Unavailable,
        Fault::Bare503,
        Fault::Throttle,
    ];
    let proxy = FaultProxy::start(&moto.endpoint, faults.clone()).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry).await;

    let flush = series_burst(25_000, now());
    fb.write_flush(&flush).await;
    fb.flush(deadline(120)).await;

    let calls = proxy.put_calls();
    let faulted: Vec<Fault> = calls.iter().filter_map(|c| c.fault).collect();
    assert_eq!(faulted, faults);
    for c in &calls {
        assert_call_within_limits(c);
    }
    let mut want: Vec<String> = Vec::new();
    let mut records = Vec::new();
    offpath::fallback::records::Formatter::default().write_flush(&flush, &mut records);
    want.extend(records.into_iter().map(|r| r.line));
    let mut got: Vec<String> = moto
        .events(GROUP, Some(STREAM))
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the stored records differ from those written");
    assert_eq!(fell_back(&telemetry), flush.samples());
    assert_eq!(telemetry.points.dropped_total(), 0);
}

fn mixed_flush(t: i64) -> Flush {
    Flush {
        series: vec![
            Series {
                name: "app.requests".into(),
                tags: vec!["env:prod".into(), "service:web".into()],
                host: "h1".into(),
                kind: SeriesKind::Rate,
                interval: 10,
                points: vec![(t - 20, 0.1), (t - 10, 12.5)],
                samples: 126,
            },
            Series {
                name: "app.temperature".into(),
                tags: vec![],
                host: String::new(),
                kind: SeriesKind::Gauge,
                interval: 0,
                points: vec![(t - 10, -3.75)],
                samples: 4,
            },
            Series {
                name: "app.bytes".into(),
                tags: vec!["env:prod".into(), "quote:\"x\"".into()],
                host: "h1".into(),
                kind: SeriesKind::Count,
                interval: 10,
                points: vec![(t - 10, 1e300)],
                samples: 1,
            },
        ],
        sketches: vec![SketchSeries {
            name: "app.latency".into(),
            tags: vec!["env:prod".into(), "service:web".into()],
            host: "h1".into(),
            sketches: edge_sketches(t),
            samples: 70003,
        }],
        events: vec![Event {
            title: "Deploy finished".into(),
            text: "version 42\nall good".into(),
            ts: t - 5,
            priority: Priority::Low,
            alert_type: AlertType::Success,
            aggregation_key: "deploy".into(),
            source_type_name: "ci".into(),
            host: "h1".into(),
            tags: vec!["env:prod".into()],
        }],
        service_checks: vec![ServiceCheck {
            check: "app.db".into(),
            status: 2,
            ts: t - 5,
            message: "connection refused".into(),
            host: String::new(),
            tags: vec!["env:prod".into()],
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_in_a_new_log_group_with_exact_values() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry).await;
    let flush = mixed_flush(now());
    fb.write_flush(&flush).await;
    fb.flush(deadline(60)).await;

    let ops: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| r.operation().to_owned())
        .collect();
    assert_eq!(
        ops,
        [
            "PutLogEvents",
            "CreateLogGroup",
            "CreateLogStream",
            "PutLogEvents"
        ]
    );
    let mut back = Flush::default();
    for (_, m) in moto.events(GROUP, Some(STREAM)).await {
        match parse_record(&m).unwrap() {
            Parsed::Series(s) => back.series.push(s),
            Parsed::Sketch(s) => back.sketches.push(s),
            Parsed::Event(e) => back.events.push(e),
            Parsed::ServiceCheck(c) => back.service_checks.push(c),
        }
    }
    let mut want = flush.clone();
    // Records carry points, not DogStatsD samples: a parsed record counts one per point or bucket.
    for s in &mut want.series {
        s.samples = s.points.len() as u64;
    }
    for s in &mut want.sketches {
        s.samples = s.sketches.len() as u64;
    }
    let key = |s: &Series| s.name.clone();
    back.series.sort_by_key(key);
    want.series.sort_by_key(key);
    assert_eq!(back, want);
    assert_eq!(fell_back(&telemetry), flush.samples());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_lines_are_exactly_what_the_datadog_forwarder_parses_as_metrics() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Forwarder, &proxy, &telemetry).await;
    let flush = mixed_flush(now());
    fb.write_flush(&flush).await;
    fb.flush(deadline(60)).await;

    let stored = moto.events(GROUP, Some(STREAM)).await;
    let mut per_metric: HashMap<String, Vec<f64>> = HashMap::new();
    let mut logs = 0;
    for (_, m) in &stored {
        let v: Value = serde_json::from_str(m).unwrap();
        let obj = v.as_object().unwrap();
        if obj.contains_key("offpath") {
            // Events and service checks stay offpath records (the Forwarder ships them as logs).
            assert!(parse_record(m).is_ok());
            logs += 1;
            continue;
        }
        // splitting.py: all four keys, t a list, v a number; we also keep e an integer and t strings.
        let keys: HashSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, HashSet::from(["m", "v", "e", "t"]), "{m}");
        assert!(obj["v"].is_number(), "{m}");
        assert!(obj["e"].is_i64(), "{m}");
        assert!(
            obj["t"].as_array().unwrap().iter().all(Value::is_string),
            "{m}"
        );
        per_metric
            .entry(obj["m"].as_str().unwrap().to_owned())
            .or_default()
            .push(obj["v"].as_f64().unwrap());
    }
    assert_eq!(logs, 2);
    // Rates go out as the bucket's count (value × interval).
    assert_eq!(per_metric["app.requests"], [1.0, 125.0]);
    assert_eq!(per_metric["app.temperature"], [-3.75]);
    // The sketches: 3 values, then 70,000 capped at 1,000 lines, min and max exact.
    let lat = &per_metric["app.latency"];
    assert_eq!(lat.len(), 3 + 1000);
    assert_eq!(lat[..3], [0.5, 1.0, 1000.0]);
    assert_eq!(lat[3], -10.0);
    assert_eq!(lat[1002], 2.0);
    assert_eq!(fell_back(&telemetry), flush.samples());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_documents_follow_the_embedded_metric_format_spec() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Emf, &proxy, &telemetry).await;
    let mut flush = mixed_flush(now());
    flush.series.extend(series_burst(500, now()).series);
    fb.write_flush(&flush).await;
    fb.flush(deadline(60)).await;

    for c in proxy.put_calls().iter().filter(|c| c.accepted()) {
        assert_eq!(c.logs_format.as_deref(), Some("json/emf"));
    }
    let stored = moto.events(GROUP, Some(STREAM)).await;
    let mut values: HashMap<String, usize> = HashMap::new();
    for (ts_ms, m) in &stored {
        let v: Value = serde_json::from_str(m).unwrap();
        if v.get("offpath").is_some() {
            continue;
        }
        let aws = &v["_aws"];
        let stamp = aws["Timestamp"].as_i64().unwrap();
        assert!(
            stamp > 1_000_000_000_000,
            "Timestamp must be in ms: {stamp}"
        );
        assert_eq!(stamp, *ts_ms);
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let d = &directives[0];
        assert_eq!(d["Namespace"], "offpath-test");
        let sets = d["Dimensions"].as_array().unwrap();
        assert!(!sets.is_empty());
        for set in sets {
            let keys = set.as_array().unwrap();
            assert!(keys.len() <= 30);
            for k in keys {
                let k = k.as_str().unwrap();
                assert!(["env", "service"].contains(&k), "{k} is not configured");
                assert!(
                    v[k].is_string(),
                    "dimension {k} must be a string root member"
                );
            }
        }
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for def in metrics {
            let name = def["Name"].as_str().unwrap();
            let n = match &v[name] {
                Value::Number(_) => 1,
                Value::Array(a) => {
                    assert!(a.len() <= 100, "{name} has {} values", a.len());
                    assert!(a.iter().all(Value::is_number));
                    a.len()
                }
                other => panic!("metric {name} is not a number: {other}"),
            };
            *values.entry(name.to_owned()).or_default() += n;
        }
    }
    assert_eq!(values["app.requests"], 2);
    assert_eq!(values["app.latency"], 3 + 1000);
    assert_eq!(fell_back(&telemetry), flush.samples());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_while_cloudwatch_fails_and_only_an_overflow_drops_them() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    proxy.fail_every_put(Some(Fault::Bare503));
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry)
        .await
        .with_buffer_max_bytes(200_000);

    let first = series_burst(1000, now());
    fb.write_flush(&first).await;
    // Not enough time for three backoffs: the records stay buffered, nothing is lost yet.
    fb.flush(Instant::now() + Duration::from_millis(150)).await;
    assert!(fb.buffered_bytes() > 0);
    assert_eq!(telemetry.points.dropped_total(), 0);

    // More than the buffer holds: the oldest records give way and are counted.
    let second = series_burst(1000, now() + 10);
    fb.write_flush(&second).await;
    let overflow = telemetry.points.dropped[PointDrop::FallbackOverflow as usize].load(Relaxed);
    assert!(overflow > 0);

    proxy.fail_every_put(None);
    fb.flush(deadline(60)).await;
    assert_eq!(fb.buffered_bytes(), 0);
    assert_eq!(
        fell_back(&telemetry) + overflow,
        first.samples() + second.samples()
    );
    let stored = moto.events(GROUP, Some(STREAM)).await;
    assert_eq!(
        stored.len() as u64,
        telemetry.forward.fallback_records.load(Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_buffer_is_sent_rather_than_dropped_while_cloudwatch_answers() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry)
        .await
        .with_buffer_max_bytes(300_000);
    let flush = series_burst(20_000, now());
    fb.write_flush(&flush).await;
    fb.flush(deadline(60)).await;
    assert_eq!(telemetry.points.dropped_total(), 0);
    assert_eq!(fell_back(&telemetry), flush.samples());
    for c in proxy.put_calls() {
        assert_call_within_limits(&c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_still_held_when_the_fallback_is_dropped_are_counted_as_shutdown_drops() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, vec![Fault::Throttle; 100]).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = fallback(FallbackFormat::Offpath, &proxy, &telemetry).await;
    let flush = series_burst(100, now());
    fb.write_flush(&flush).await;
    fb.flush(Instant::now() + Duration::from_millis(300)).await;
    drop(fb);
    assert_eq!(fell_back(&telemetry), 0);
    assert_eq!(
        telemetry.points.dropped[PointDrop::ShutdownDeadline as usize].load(Relaxed),
        flush.samples()
    );
    let _ = MAX_RECORD_BYTES;
}
