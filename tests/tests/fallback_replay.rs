//! The forwarder's overflow goes through the fallback task to CloudWatch Logs (moto) or a writer, and
//! `replay` brings it back to a fake Datadog intake with the original types, timestamps and sketches.

use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offpath::config::{FallbackConfig, FallbackFormat, FallbackSink, ForwardConfig};
use offpath::encode::Encoder;
use offpath::fallback::records::{Formatter, Parsed, Record, parse_record};
use offpath::fallback::replay::{ReplayOptions, ReplaySource, replay};
use offpath::fallback::{Fallback, spawn};
use offpath::forward::{Backoff, RetryPolicy};
use offpath::model::{
    AlertType, DogSketch, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};
use offpath::telemetry::{PointDrop, Telemetry};
use offpath_proto::metric_payload::MetricType;
use offpath_tests::cloudwatch::Moto;
use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::edge_sketches;
use tokio::sync::mpsc;
use tokio::time::Instant;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const GROUP: &str = "/offpath/replay-test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn forward_config(url: &str) -> ForwardConfig {
    offpath_tests::support::forward_config(url, KEY)
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        breaker_threshold: 2,
        probe: Backoff {
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
    }
}

fn fallback_config(sink: FallbackSink) -> FallbackConfig {
    FallbackConfig {
        sink,
        log_group: Some(GROUP.to_owned()),
        log_stream: None,
        format: FallbackFormat::Offpath,
        emf_dimensions: vec![],
        emf_namespace: "offpath".to_owned(),
    }
}

/// What a statsd workload flushed: every series kind, sketches over two buckets, an event and a check.
fn workload(t: i64) -> Flush {
    let b = t - t % 10;
    Flush {
        series: vec![
            Series {
                name: "shop.checkout".into(),
                tags: vec!["env:prod".into(), "service:shop".into()],
                host: "web-1".into(),
                kind: SeriesKind::Rate,
                interval: 10,
                points: vec![(b - 20, 0.3), (b - 10, 1.7)],
                samples: 20,
            },
            Series {
                name: "shop.queue".into(),
                tags: vec!["env:prod".into()],
                host: String::new(),
                kind: SeriesKind::Gauge,
                interval: 0,
                points: vec![(b - 10, 42.0)],
                samples: 3,
            },
            Series {
                name: "shop.bytes".into(),
                tags: vec![],
                host: "web-1".into(),
                kind: SeriesKind::Count,
                interval: 10,
                points: vec![(b - 10, 123_456.0)],
                samples: 9,
            },
        ],
        sketches: vec![SketchSeries {
            name: "shop.latency".into(),
            tags: vec!["env:prod".into(), "service:shop".into()],
            host: "web-1".into(),
            sketches: edge_sketches(b),
            samples: 70_003,
        }],
        events: vec![Event {
            title: "Deploy finished".into(),
            text: "version 42".into(),
            ts: t - 5,
            priority: Priority::Low,
            alert_type: AlertType::Success,
            aggregation_key: "deploy".into(),
            source_type_name: "ci".into(),
            host: "web-1".into(),
            tags: vec!["env:prod".into()],
        }],
        service_checks: vec![ServiceCheck {
            check: "shop.db".into(),
            status: 2,
            ts: t - 5,
            message: "connection refused".into(),
            host: "web-1".into(),
            tags: vec!["env:prod".into()],
        }],
    }
}

fn metric_type(kind: SeriesKind) -> MetricType {
    match kind {
        SeriesKind::Count => MetricType::Count,
        SeriesKind::Rate => MetricType::Rate,
        SeriesKind::Gauge => MetricType::Gauge,
    }
}

/// The intake holds exactly the workload's series, sketches, event and service check.
#[track_caller]
fn assert_intake_has_exactly(intake: &FakeIntake, want: &Flush) {
    let mut got = intake.all_series();
    got.sort_by(|a, b| a.metric.cmp(&b.metric));
    let mut series = want.series.clone();
    series.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got.len(), series.len(), "{got:?}");
    for (g, w) in got.iter().zip(&series) {
        assert_eq!(g.metric, w.name);
        assert_eq!(g.tags, w.tags);
        assert_eq!(g.host, w.host);
        assert_eq!(g.metric_type, metric_type(w.kind));
        assert_eq!(g.interval, i64::from(w.interval));
        assert_eq!(g.points, w.points);
    }
    for w in &want.sketches {
        let tags: Vec<&str> = w.tags.iter().map(String::as_str).collect();
        let got: Vec<DogSketch> = intake
            .sketches(&w.name, &tags)
            .into_iter()
            .inspect(|s| {
                assert_eq!(
                    (s.tags.clone(), s.host.clone()),
                    (w.tags.clone(), w.host.clone())
                )
            })
            .flat_map(|s| s.dogsketches)
            .map(|d| DogSketch {
                ts: d.ts,
                cnt: d.cnt,
                min: d.min,
                max: d.max,
                sum: d.sum,
                avg: d.avg,
                k: d.k,
                n: d.n,
            })
            .collect();
        assert_eq!(got, w.sketches);
    }
    let events = intake.events();
    assert_eq!(events.len(), want.events.len());
    for (g, w) in events.iter().zip(&want.events) {
        assert_eq!(g.title, w.title);
        assert_eq!(g.text, w.text);
        assert_eq!(g.date_happened, Some(w.ts));
        assert_eq!(g.tags, w.tags);
    }
    let checks = intake.service_checks();
    assert_eq!(checks.len(), want.service_checks.len());
    for (g, w) in checks.iter().zip(&want.service_checks) {
        assert_eq!(
            (g.check.as_str(), g.status, g.timestamp),
            (w.check.as_str(), w.status, Some(w.ts))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_goes_to_cloudwatch_and_replay_recreates_it_exactly_at_the_intake() {
    let moto = Moto::start();
    let aws = moto.sdk_config().await;
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(503));

    // The outage: the forwarder gives up, its breaker opens, the payloads go to the fallback task.
    let telemetry = Arc::new(Telemetry::default());
    let fb = Fallback::with_aws(
        &fallback_config(FallbackSink::CloudWatch),
        Arc::clone(&telemetry),
        &aws,
    )
    .unwrap();
    let (stream_group, stream) = fb
        .destination()
        .map(|(g, s)| (g.to_owned(), s.to_owned()))
        .unwrap();
    assert_eq!(stream_group, GROUP);
    assert!(stream.ends_with(&format!("-{}", std::process::id())));
    let (tx, rx) = mpsc::channel(64);
    let task = spawn(fb, rx);
    let mut fwd = offpath_tests::support::forwarder(
        &forward_config(&intake.url()),
        Arc::clone(&telemetry),
        Some(tx.clone()),
    )
    .unwrap()
    .with_retry_policy(fast_policy());
    let flush = workload(now());
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    fwd.send(payloads, Instant::now() + Duration::from_millis(500))
        .await;
    for p in fwd.take_queued() {
        tx.send(p).await.unwrap();
    }
    drop((fwd, tx));
    task.await.unwrap();

    let p = &telemetry.points;
    assert_eq!(p.delivered.load(Relaxed), 0);
    assert_eq!(p.dropped_total(), 0, "{}", telemetry.summary());
    assert_eq!(p.fell_back.load(Relaxed), flush.samples());

    // The records in the log group are the workload, exactly.
    let stored = moto.events(GROUP, Some(&stream)).await;
    assert!(!stored.is_empty());
    let mut points = 0;
    for (_, m) in &stored {
        if let Parsed::Series(s) = parse_record(m).unwrap() {
            points += s.points.len();
        }
    }
    assert_eq!(points, 4);

    // Datadog is back: replay the last hour of the log group.
    intake.set_default_reply(Reply::Status(202));
    let replay_telemetry = Arc::new(Telemetry::default());
    let mut fwd = offpath_tests::support::forwarder(
        &forward_config(&intake.url()),
        Arc::clone(&replay_telemetry),
        None,
    )
    .unwrap()
    .with_retry_policy(fast_policy());
    let mut opts = ReplayOptions::new(
        ReplaySource::log_group(GROUP, None, None, None, now() * 1000).unwrap(),
        now(),
    );
    opts.aws = Some(aws.clone());
    let report = replay(&opts, &Encoder::new(1), &mut fwd, &replay_telemetry)
        .await
        .unwrap();
    assert_eq!(report.records, stored.len() as u64);
    assert_eq!((report.skipped, report.invalid, report.too_old), (0, 0, 0));
    // 4 points + 2 sketch buckets + 1 event + 1 service check.
    assert_eq!(report.sent, 8);
    assert_eq!(report.delivered, 8);
    assert_eq!(report.not_delivered, 0);
    assert_intake_has_exactly(&intake, &flush);
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());

    // One stream only, and a range that holds nothing.
    let mut opts = ReplayOptions::new(
        ReplaySource::log_group(
            GROUP,
            Some("no-such-stream-yet"),
            Some("2h"),
            Some("90m"),
            now() * 1000,
        )
        .unwrap(),
        now(),
    );
    opts.aws = Some(aws);
    let err = replay(&opts, &Encoder::new(1), &mut fwd, &replay_telemetry).await;
    match err {
        Ok(r) => assert_eq!(r.records, 0),
        Err(e) => assert!(e.to_string().contains("--log-group"), "{e}"),
    }
}

fn write_file(lines: &[String]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_file_refuses_what_is_too_old_and_dedupe_skips_repeated_records() {
    let t = now();
    let mut flush = workload(t);
    flush.series[0].points.insert(0, (t - 2 * 3600, 9.0)); // older than an hour
    flush.events[0].ts = t - 20 * 3600; // older than 18 hours
    let mut records: Vec<Record> = Vec::new();
    Formatter::default().write_flush(&flush, &mut records);
    let sketch_line = records
        .iter()
        .find(|r| r.line.contains("\"kind\":\"sketch\""))
        .unwrap()
        .line
        .clone();
    let mut lines: Vec<String> = records.into_iter().map(|r| r.line).collect();
    lines.push(sketch_line.clone()); // written twice (a PutLogEvents retry after a timeout)
    lines.push(format!("2026-01-01T00:00:00Z {sketch_line}"));
    lines.push("START RequestId: 8f5e Version: $LATEST".to_owned());
    let file = write_file(&lines);

    for (dedupe, copies) in [(true, 1usize), (false, 3)] {
        let intake = FakeIntake::start(KEY).await;
        let telemetry = Arc::new(Telemetry::default());
        let mut fwd = offpath_tests::support::forwarder(
            &forward_config(&intake.url()),
            Arc::clone(&telemetry),
            None,
        )
        .unwrap()
        .with_retry_policy(fast_policy());
        let mut opts = ReplayOptions::new(
            ReplaySource::from_file_arg(file.path().to_str().unwrap()),
            t,
        );
        opts.dedupe = dedupe;
        let report = replay(&opts, &Encoder::new(1), &mut fwd, &telemetry)
            .await
            .unwrap();
        assert_eq!(report.skipped, 1);
        assert_eq!(report.too_old, 2);
        assert_eq!(report.duplicates, if dedupe { 2 } else { 0 });
        assert_eq!(report.sent, 4 + 2 * copies as u64 + 1);
        assert_eq!(report.delivered, report.sent);
        assert!(intake.events().is_empty());
        assert_eq!(
            intake.series("shop.checkout")[0].points,
            flush.series[0].points[1..]
        );
        let buckets: usize = intake
            .sketches("shop.latency", &[])
            .iter()
            .map(|s| s.dogsketches.len())
            .sum();
        assert_eq!(buckets, 2 * copies);
    }

    let missing = ReplayOptions::new(
        ReplaySource::from_file_arg("/nonexistent/offpath.records"),
        t,
    );
    let intake = FakeIntake::start(KEY).await;
    let telemetry = Arc::new(Telemetry::default());
    let mut fwd = offpath_tests::support::forwarder(
        &forward_config(&intake.url()),
        Arc::clone(&telemetry),
        None,
    )
    .unwrap();
    let err = replay(&missing, &Encoder::new(1), &mut fwd, &telemetry)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--from-file"), "{err}");
}

/// A writer the test can read while the fallback owns it.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_fallback_task_writes_payloads_to_stdout_and_flushes_everything_when_its_channel_closes()
 {
    let telemetry = Arc::new(Telemetry::default());
    let out = SharedBuf::default();
    let fb = Fallback::with_writer(
        &fallback_config(FallbackSink::Stdout),
        Arc::clone(&telemetry),
        out.clone(),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let task = spawn(fb, rx);
    let flush = workload(now());
    for p in Encoder::new(1).encode(&flush).unwrap() {
        tx.send(p).await.unwrap();
    }
    drop(tx);
    task.await.unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let mut back = Flush::default();
    for line in text.lines() {
        match parse_record(line).unwrap() {
            Parsed::Series(s) => back.series.push(s),
            Parsed::Sketch(s) => back.sketches.push(s),
            Parsed::Event(e) => back.events.push(e),
            Parsed::ServiceCheck(c) => back.service_checks.push(c),
        }
    }
    back.series.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want = flush.clone();
    want.series.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &mut want.series {
        s.samples = s.points.len() as u64;
    }
    for s in &mut want.sketches {
        s.samples = s.sketches.len() as u64;
    }
    assert_eq!(back, want);
    assert_eq!(telemetry.points.fell_back.load(Relaxed), flush.samples());
    assert_eq!(
        telemetry.forward.fallback_bytes.load(Relaxed),
        text.len() as u64
    );
}

#[tokio::test]
async fn with_the_fallback_off_payloads_are_dropped_and_counted() {
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = Fallback::new(&fallback_config(FallbackSink::Off), Arc::clone(&telemetry))
        .await
        .unwrap();
    let flush = workload(now());
    fb.write_payloads(Encoder::new(1).encode(&flush).unwrap())
        .await;
    fb.flush(Instant::now()).await;
    assert_eq!(telemetry.points.fell_back.load(Relaxed), 0);
    assert_eq!(telemetry.points.dropped_total(), flush.samples());
    assert_eq!(
        telemetry.points.dropped[PointDrop::FallbackOff as usize].load(Relaxed),
        flush.samples()
    );
}
