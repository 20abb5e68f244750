//! `Encoder` + `Forwarder` against the fake intake: delivery, retries, splitting, drops, the retry
//! queue and the circuit breaker.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use offpath::auth::ApiKey;
use offpath::config::ForwardConfig;
use offpath::encode::{Encoder, Payload};
use offpath::forward::{Backoff, BreakerState, Deadline, Forwarder, RetryPolicy};
use offpath::model::{
    AlertType, DogSketch, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};
use offpath::telemetry::{PointDrop, Telemetry};
use offpath_proto::metric_payload::MetricType;
use offpath_tests::fake_intake::{Answer, FakeIntake, Reply};
use tokio::sync::mpsc;
use tokio::time::Instant;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

fn config(url: &str) -> ForwardConfig {
    offpath_tests::support::forward_config(url, KEY)
}

/// Short waits so that the tests run fast; the logic is the production one.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        breaker_threshold: 5,
        probe: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
    }
}

/// One attempt per payload and delivery (the backoff outlasts any deadline of these tests), so every
/// request is answered and none is abandoned in flight at a deadline: such a request may still reach
/// the intake later (at least once), after a test has switched the intake to accepting.
fn one_attempt_policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff {
            base: Duration::from_secs(600),
            max: Duration::from_secs(600),
        },
        breaker_threshold: 1_000,
        ..fast_policy()
    }
}

struct Rig {
    intake: FakeIntake,
    telemetry: Arc<Telemetry>,
    fwd: Forwarder,
    overflow: Option<mpsc::Receiver<Payload>>,
}

async fn rig_with(
    cfg: impl FnOnce(&mut ForwardConfig),
    policy: RetryPolicy,
    with_fallback: bool,
) -> Rig {
    let intake = FakeIntake::start(KEY).await;
    let mut c = config(&intake.url());
    cfg(&mut c);
    let telemetry = Arc::new(Telemetry::default());
    let (tx, rx) = mpsc::channel(1024);
    let fwd =
        offpath_tests::support::forwarder(&c, Arc::clone(&telemetry), with_fallback.then_some(tx))
            .unwrap()
            .with_retry_policy(policy);
    Rig {
        intake,
        telemetry,
        fwd,
        overflow: with_fallback.then_some(rx),
    }
}

async fn rig() -> Rig {
    rig_with(|_| {}, fast_policy(), false).await
}

fn deadline() -> Instant {
    Instant::now() + WAIT
}

fn series(i: usize) -> Series {
    Series {
        name: format!("test.metric.{}", i % 100),
        tags: vec![format!("i:{i}"), "env:test".to_owned()],
        host: "test-host".to_owned(),
        kind: if i % 2 == 0 {
            SeriesKind::Rate
        } else {
            SeriesKind::Gauge
        },
        interval: if i % 2 == 0 { 10 } else { 0 },
        points: vec![(1_700_000_000, i as f64 + 0.5)],
        samples: 2,
    }
}

fn sketch(i: usize, bins: usize) -> SketchSeries {
    SketchSeries {
        name: format!("test.dist.{}", i % 10),
        tags: vec![format!("i:{i}")],
        host: "test-host".to_owned(),
        sketches: vec![DogSketch {
            ts: 1_700_000_000,
            cnt: bins as i64,
            min: 1.0,
            max: bins as f64,
            sum: (bins * (bins + 1) / 2) as f64,
            avg: (bins + 1) as f64 / 2.0,
            k: (0..bins as i32).map(|b| 1338 + b).collect(),
            n: vec![1; bins],
        }],
        samples: bins as u64,
    }
}

fn series_flush(n: usize) -> Flush {
    Flush {
        series: (0..n).map(series).collect(),
        ..Flush::default()
    }
}

fn encode(flush: &Flush) -> Vec<Payload> {
    Encoder::new(1).encode(flush).unwrap()
}

fn dropped(t: &Telemetry, reason: PointDrop) -> u64 {
    t.points.dropped[reason as usize].load(Relaxed)
}

fn drain(rx: &mut mpsc::Receiver<Payload>) -> Vec<Payload> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

#[tokio::test]
async fn a_healthy_intake_receives_series_sketches_events_and_checks_exactly() {
    let mut r = rig().await;
    let flush = Flush {
        series: (0..3).map(series).collect(),
        sketches: vec![sketch(0, 5)],
        events: vec![Event {
            title: "deploy".into(),
            text: "v2".into(),
            ts: 1_700_000_000,
            priority: Priority::Low,
            alert_type: AlertType::Success,
            aggregation_key: "agg".into(),
            source_type_name: String::new(),
            host: "test-host".into(),
            tags: vec!["env:test".into()],
        }],
        service_checks: vec![ServiceCheck {
            check: "app.up".into(),
            status: 1,
            ts: 1_700_000_000,
            message: "slow".into(),
            host: "test-host".into(),
            tags: vec!["env:test".into()],
        }],
    };
    // On a spawned task, as the pipeline runs it (the future is Send).
    let mut fwd = r.fwd;
    let payloads = encode(&flush);
    let fwd_task = tokio::spawn(async move {
        fwd.send(payloads, deadline()).await;
        fwd
    });
    r.fwd = fwd_task.await.unwrap();

    let rate = r
        .intake
        .series_tagged("test.metric.0", &["i:0", "env:test"]);
    assert_eq!(rate.len(), 1);
    assert_eq!(rate[0].metric_type, MetricType::Rate);
    assert_eq!(rate[0].interval, 10);
    assert_eq!(rate[0].host, "test-host");
    assert_eq!(rate[0].points, [(1_700_000_000, 0.5)]);
    let gauge = r.intake.series("test.metric.1");
    assert_eq!(gauge[0].metric_type, MetricType::Gauge);
    assert_eq!(gauge[0].interval, 0);

    let t = r.intake.sketch_totals("test.dist.0", &["i:0"]).unwrap();
    assert_eq!(
        (t.cnt, t.min, t.max, t.sum, t.bin_count),
        (5, 1.0, 5.0, 15.0, 5)
    );

    let events = r.intake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].title.as_str(),
            events[0].priority.as_deref(),
            events[0].alert_type.as_deref()
        ),
        ("deploy", Some("low"), Some("success"))
    );
    let checks = r.intake.service_checks();
    assert_eq!(
        (
            checks[0].check.as_str(),
            checks[0].status,
            checks[0].host_name.as_str()
        ),
        ("app.up", 1, "test-host")
    );

    assert_eq!(r.intake.violations(), Vec::<String>::new());
    for req in r.intake.requests() {
        assert_eq!(req.answer, Answer::Status(202), "{req:?}");
        assert!(req.api_key_ok);
        assert_eq!(req.content_encoding.as_deref(), Some("zstd"));
        assert!(req.user_agent.unwrap().starts_with("offpath/"));
    }
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), flush.samples());
    assert_eq!(r.telemetry.forward.payloads_delivered.load(Relaxed), 4);
}

#[tokio::test]
async fn a_500_then_202_delivers_once_without_duplicates() {
    let mut r = rig().await;
    r.intake.push_replies([Reply::Status(500)]);
    let flush = series_flush(10);
    r.fwd.send(encode(&flush), deadline()).await;

    let answers: Vec<Answer> = r.intake.requests().iter().map(|q| q.answer).collect();
    assert_eq!(answers, [Answer::Status(500), Answer::Status(202)]);
    assert_eq!(r.intake.all_series().len(), 10, "each series once");
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 20);
    assert_eq!(r.telemetry.forward.retries.load(Relaxed), 1);
    assert_eq!(r.fwd.queued_bytes(), 0);
    assert!(
        r.telemetry
            .forward
            .last_intake_error
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .contains("500")
    );
}

#[tokio::test]
async fn a_413_splits_the_payload_and_every_series_arrives_once() {
    let mut r = rig().await;
    r.intake
        .push_replies([Reply::Status(413), Reply::Status(413)]);
    let flush = series_flush(10);
    r.fwd.send(encode(&flush), deadline()).await;

    let items: Vec<(Answer, usize)> = r
        .intake
        .requests()
        .iter()
        .map(|q| (q.answer, q.items))
        .collect();
    assert_eq!(
        items,
        [
            (Answer::Status(413), 10),
            (Answer::Status(413), 5),
            (Answer::Status(202), 2),
            (Answer::Status(202), 3),
            (Answer::Status(202), 5),
        ]
    );
    let mut names: Vec<String> = r
        .intake
        .all_series()
        .into_iter()
        .map(|s| s.tags[0].clone())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 10);
    assert_eq!(r.intake.all_series().len(), 10);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 20);
}

#[tokio::test]
async fn a_413_on_a_single_point_drops_it_as_too_large() {
    let mut r = rig().await;
    r.intake.push_replies([Reply::Status(413)]);
    r.fwd.send(encode(&series_flush(1)), deadline()).await;
    assert_eq!(r.intake.requests().len(), 1);
    assert_eq!(dropped(&r.telemetry, PointDrop::TooLarge), 2);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 0);
    assert_eq!(r.fwd.queued_bytes(), 0);
}

#[tokio::test]
async fn a_400_is_dropped_and_counted_and_the_rest_is_delivered() {
    let mut r = rig().await;
    r.intake.push_replies([Reply::Status(400)]);
    let flush = Flush {
        series: (0..4).map(series).collect(),
        sketches: vec![sketch(1, 3)],
        ..Flush::default()
    };
    r.fwd.send(encode(&flush), deadline()).await;
    assert_eq!(r.intake.requests().len(), 2, "no retry of the 400");
    assert_eq!(dropped(&r.telemetry, PointDrop::IntakeRejected), 8);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 3);
    assert_eq!(r.fwd.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_403_is_not_retried_in_a_loop_and_the_payloads_wait_in_the_queue() {
    let mut r = rig().await;
    r.intake.set_default_reply(Reply::Status(403));
    let flush = Flush {
        series: (0..4).map(series).collect(),
        sketches: vec![sketch(1, 3)],
        ..Flush::default()
    };
    let payloads = encode(&flush);
    let bytes: usize = payloads.iter().map(|p| p.body.len()).sum();
    r.fwd.send(payloads, deadline()).await;

    assert_eq!(
        r.intake.requests().len(),
        1,
        "one attempt, then the breaker is open"
    );
    assert_eq!(r.fwd.breaker_state(), BreakerState::Open);
    assert_eq!(r.telemetry.forward.breaker.load(Relaxed), 1);
    assert_eq!(r.fwd.queued_bytes(), bytes);
    assert_eq!(
        r.telemetry.forward.retry_queue_bytes.load(Relaxed),
        bytes as u64
    );
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 0);
    let queued = r.fwd.take_queued();
    assert_eq!(
        queued.iter().map(|p| p.samples).sum::<u64>(),
        flush.samples()
    );
    assert_eq!(r.telemetry.forward.retry_queue_bytes.load(Relaxed), 0);
}

#[tokio::test]
async fn a_403_with_a_fallback_hands_every_payload_to_it_at_once() {
    let mut r = rig_with(|_| {}, fast_policy(), true).await;
    r.intake.set_default_reply(Reply::Status(403));
    let flush = Flush {
        series: (0..4).map(series).collect(),
        sketches: vec![sketch(1, 3)],
        ..Flush::default()
    };
    r.fwd.send(encode(&flush), deadline()).await;
    assert_eq!(r.intake.requests().len(), 1);
    let diverted = drain(r.overflow.as_mut().unwrap());
    assert_eq!(diverted.len(), 2);
    assert_eq!(
        diverted.iter().map(|p| p.samples).sum::<u64>(),
        flush.samples()
    );
    assert_eq!(r.fwd.queued_bytes(), 0);
}

#[tokio::test]
async fn a_dropped_connection_is_retried_at_once_and_delivered() {
    let mut r = rig().await;
    r.intake.push_replies([Reply::Drop]);
    r.fwd.send(encode(&series_flush(5)), deadline()).await;
    let answers: Vec<Answer> = r.intake.requests().iter().map(|q| q.answer).collect();
    assert_eq!(answers, [Answer::Dropped, Answer::Status(202)]);
    assert_eq!(r.intake.all_series().len(), 5);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 10);
}

#[tokio::test]
async fn repeated_dropped_connections_are_retried_with_backoff_until_delivered() {
    let mut r = rig().await;
    r.intake
        .push_replies([Reply::Drop, Reply::Drop, Reply::Drop]);
    r.fwd.send(encode(&series_flush(5)), deadline()).await;
    assert_eq!(r.intake.requests().len(), 4);
    assert_eq!(r.intake.all_series().len(), 5);
    assert_eq!(r.fwd.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_hung_intake_times_out_and_the_retry_delivers() {
    let mut r = rig_with(|c| c.timeout = Duration::from_secs(1), fast_policy(), false).await;
    r.intake.push_replies([Reply::Hang]);
    r.fwd.send(encode(&series_flush(5)), deadline()).await;
    let answers: Vec<Answer> = r.intake.requests().iter().map(|q| q.answer).collect();
    assert_eq!(answers, [Answer::Hung, Answer::Status(202)]);
    assert_eq!(r.intake.all_series().len(), 5);
    assert!(
        r.telemetry
            .forward
            .last_intake_error
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .contains("Timeout")
    );
}

#[tokio::test]
async fn an_unreachable_intake_leaves_the_payloads_in_the_retry_queue_by_the_deadline() {
    // A port that was bound and released: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let telemetry = Arc::new(Telemetry::default());
    let policy = RetryPolicy {
        breaker_threshold: 1_000,
        ..fast_policy()
    };
    let mut fwd = offpath_tests::support::forwarder(&config(&url), Arc::clone(&telemetry), None)
        .unwrap()
        .with_retry_policy(policy);
    let payloads = encode(&series_flush(3));
    let bytes: usize = payloads.iter().map(|p| p.body.len()).sum();
    // Long enough for a retry however slow the machine (backoff 10 ms, doubling to 100 ms).
    fwd.send(payloads, Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(fwd.queued_bytes(), bytes);
    assert!(telemetry.forward.retries.load(Relaxed) >= 1);
    assert_eq!(telemetry.points.delivered.load(Relaxed), 0);
}

#[tokio::test]
async fn a_large_burst_is_cut_into_payloads_that_each_respect_the_limits() {
    let mut r = rig().await;
    let flush = Flush {
        series: (0..50_000).map(series).collect(),
        sketches: (0..1_500).map(|i| sketch(i, 1_000)).collect(),
        ..Flush::default()
    };
    let payloads = encode(&flush);
    let n = payloads.len();
    r.fwd.send(payloads, deadline()).await;

    assert_eq!(r.intake.violations(), Vec::<String>::new());
    let requests = r.intake.requests();
    assert_eq!(requests.len(), n);
    assert!(
        requests
            .iter()
            .filter(|q| q.path == "/api/v2/series")
            .count()
            >= 5
    );
    assert!(
        requests
            .iter()
            .filter(|q| q.path == "/api/beta/sketches")
            .count()
            >= 2
    );
    for q in &requests {
        assert_eq!(q.answer, Answer::Status(202), "{q:?}");
        assert!(q.points <= 10_000);
    }
    assert_eq!(r.intake.all_series().len(), 50_000);
    assert_eq!(r.intake.series_point_count(), 50_000);
    let cnt: i64 = (0..10)
        .map(|m| {
            r.intake
                .sketch_totals(&format!("test.dist.{m}"), &[])
                .unwrap()
                .cnt
        })
        .sum();
    assert_eq!(cnt, 1_500_000);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), flush.samples());
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_closes_when_the_intake_recovers() {
    let mut r = rig_with(|_| {}, fast_policy(), true).await;
    r.intake.set_default_reply(Reply::Status(503));

    // Five failed attempts open the breaker; the payload goes to the fallback.
    r.fwd.send(encode(&series_flush(2)), deadline()).await;
    assert_eq!(r.intake.requests().len(), 5);
    assert_eq!(r.fwd.breaker_state(), BreakerState::Open);
    assert_eq!(r.telemetry.forward.breaker.load(Relaxed), 1);
    let rx = r.overflow.as_mut().unwrap();
    assert_eq!(drain(rx).len(), 1);

    // While open and before the probe is due, payloads go straight to the fallback: no request.
    if r.fwd.next_probe().unwrap() > Instant::now() + Duration::from_millis(5) {
        r.fwd.send(encode(&series_flush(3)), deadline()).await;
        assert_eq!(r.intake.requests().len(), 5);
        assert_eq!(drain(rx).len(), 1);
    }

    // A failed probe re-opens it with a longer wait.
    tokio::time::sleep_until(r.fwd.next_probe().unwrap()).await;
    r.fwd.send(encode(&series_flush(4)), deadline()).await;
    assert_eq!(r.intake.requests().len(), 6, "exactly one probe");
    assert_eq!(r.fwd.breaker_state(), BreakerState::Open);
    assert_eq!(drain(rx).len(), 1);

    // The intake recovers: the next probe closes the breaker and the payload is delivered.
    r.intake.set_default_reply(Reply::Status(202));
    tokio::time::sleep_until(r.fwd.next_probe().unwrap()).await;
    r.fwd.send(encode(&series_flush(5)), deadline()).await;
    assert_eq!(r.fwd.breaker_state(), BreakerState::Closed);
    assert_eq!(r.telemetry.forward.breaker.load(Relaxed), 0);
    assert_eq!(r.intake.all_series().len(), 5);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 10);
}

#[tokio::test]
async fn the_retry_queue_keeps_payloads_across_calls_and_overflows_oldest_first() {
    let one = encode(&series_flush(50));
    let cap = one[0].body.len() * 2 + 1;
    let mut r = rig_with(
        |c| c.retry_queue_max_bytes = cap,
        one_attempt_policy(),
        true,
    )
    .await;
    r.intake.set_default_reply(Reply::Status(503));
    for i in 0..3 {
        let mut p = one.clone();
        p[0].samples = i;
        r.fwd.send(p, deadline()).await;
    }
    let over = drain(r.overflow.as_mut().unwrap());
    assert_eq!(over.iter().map(|p| p.samples).collect::<Vec<_>>(), [0]);
    assert_eq!(r.fwd.queued_bytes(), one[0].body.len() * 2);
    assert_eq!(
        r.telemetry.forward.retry_queue_bytes.load(Relaxed),
        r.fwd.queued_bytes() as u64
    );

    r.intake.set_default_reply(Reply::Status(202));
    r.fwd.retry_queued(deadline()).await;
    assert_eq!(r.fwd.queued_bytes(), 0);
    assert_eq!(r.telemetry.forward.retry_queue_bytes.load(Relaxed), 0);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 1 + 2);
    assert_eq!(r.intake.all_series().len(), 100);
}

#[tokio::test]
async fn without_a_fallback_queue_overflow_is_dropped_and_counted() {
    let one = encode(&series_flush(50));
    let policy = RetryPolicy {
        breaker_threshold: 1_000,
        ..fast_policy()
    };
    let cap = one[0].body.len();
    let mut r = rig_with(|c| c.retry_queue_max_bytes = cap, policy, false).await;
    r.intake.set_default_reply(Reply::Status(500));
    r.fwd
        .send(one.clone(), Instant::now() + Duration::from_millis(50))
        .await;
    r.fwd
        .send(one, Instant::now() + Duration::from_millis(50))
        .await;
    assert_eq!(dropped(&r.telemetry, PointDrop::RetryQueueOverflow), 100);
    assert_eq!(r.fwd.queued_bytes(), cap);
}

#[tokio::test]
async fn a_healthy_send_also_drains_what_waited_in_the_retry_queue() {
    let mut r = rig_with(|_| {}, one_attempt_policy(), false).await;
    r.intake.set_default_reply(Reply::Status(500));
    r.fwd.send(encode(&series_flush(3)), deadline()).await;
    assert!(r.fwd.queued_bytes() > 0);
    r.intake.set_default_reply(Reply::Status(202));
    r.fwd.send(encode(&series_flush(4)), deadline()).await;
    assert_eq!(r.fwd.queued_bytes(), 0);
    assert_eq!(r.intake.all_series().len(), 7);
}

#[tokio::test]
async fn the_api_key_check_tells_a_valid_key_from_a_refused_one() {
    let r = rig().await;
    r.fwd.validate_api_key().await.unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let mut c = config(&r.intake.url());
    c.api_key = Some(ApiKey::new("wrong"));
    let bad = offpath_tests::support::forwarder(&c, telemetry, None).unwrap();
    let err = bad.validate_api_key().await.unwrap_err();
    assert!(err.to_string().contains("DD_API_KEY"), "{err}");
    let paths: Vec<String> = r.intake.requests().into_iter().map(|q| q.path).collect();
    assert_eq!(paths, ["/api/v1/validate", "/api/v1/validate"]);
}

#[tokio::test]
async fn a_forwarder_with_an_unusable_api_key_or_a_bad_url_is_refused_with_the_key_to_fix() {
    let telemetry = Arc::new(Telemetry::default());
    let mut c = config("http://127.0.0.1:1");
    c.api_key = Some(ApiKey::new("two\nlines"));
    let e = offpath_tests::support::forwarder(&c, Arc::clone(&telemetry), None).unwrap_err();
    assert!(e.to_string().contains("DD_API_KEY"));
    let mut c = config("not a url");
    c.api_key = Some(ApiKey::new(KEY));
    let e = offpath_tests::support::forwarder(&c, Arc::clone(&telemetry), None).unwrap_err();
    assert!(e.to_string().contains("DD_DD_URL"));
    let mut c = config("http://127.0.0.1:1");
    c.proxy = Some("::not a proxy::".into());
    let e = offpath_tests::support::forwarder(&c, telemetry, None).unwrap_err();
    assert!(e.to_string().contains("DD_PROXY_HTTPS"), "{e}");
}

/// Three payloads of different sizes and kinds, and the samples they carry.
fn three_payloads() -> (Vec<Payload>, u64) {
    let mut payloads = encode(&series_flush(3));
    payloads.extend(encode(&Flush {
        sketches: vec![sketch(0, 5)],
        ..Flush::default()
    }));
    payloads.extend(encode(&series_flush(7)));
    assert_eq!(payloads.len(), 3);
    let samples = payloads.iter().map(|p| p.samples).sum();
    (payloads, samples)
}

fn samples(payloads: &[Payload]) -> u64 {
    payloads.iter().map(|p| p.samples).sum()
}

#[tokio::test]
async fn a_send_dropped_while_its_request_hangs_leaves_every_payload_with_the_forwarder_once() {
    let mut r = rig().await;
    r.intake.set_default_reply(Reply::Hang);
    let (payloads, total) = three_payloads();
    {
        let send = r.fwd.send(payloads, deadline());
        tokio::pin!(send);
        tokio::select! {
            () = &mut send => panic!("a hung intake cannot complete the delivery"),
            arrived = r.intake.wait_requests(1, WAIT) => assert!(arrived),
        }
    }
    // The send future is gone with the first request in flight: nothing is lost, nothing doubled.
    let left = r.fwd.take_queued();
    assert_eq!(left.len(), 3);
    assert_eq!(samples(&left), total);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 0);
    assert_eq!(r.telemetry.points.dropped_total(), 0);
}

#[tokio::test]
async fn a_send_that_was_never_polled_still_hands_its_payloads_to_the_forwarder() {
    let mut r = rig().await;
    let (payloads, total) = three_payloads();
    drop(r.fwd.send(payloads, deadline()));
    let left = r.fwd.take_queued();
    assert_eq!(samples(&left), total);
    assert!(r.intake.requests().is_empty());
}

#[tokio::test]
async fn a_probe_dropped_in_flight_counts_as_failed_and_the_breaker_still_recovers() {
    let mut r = rig_with(|_| {}, fast_policy(), true).await;
    r.intake.set_default_reply(Reply::Status(503));
    r.fwd.send(encode(&series_flush(2)), deadline()).await;
    assert_eq!(r.fwd.breaker_state(), BreakerState::Open);
    assert_eq!(drain(r.overflow.as_mut().unwrap()).len(), 1);

    r.intake.set_default_reply(Reply::Hang);
    tokio::time::sleep_until(r.fwd.next_probe().unwrap()).await;
    {
        let send = r.fwd.send(encode(&series_flush(3)), deadline());
        tokio::pin!(send);
        tokio::select! {
            () = &mut send => panic!("the probe cannot complete on a hung intake"),
            arrived = r.intake.wait_requests(6, WAIT) => assert!(arrived),
        }
    }
    assert_eq!(r.fwd.breaker_state(), BreakerState::HalfOpen);
    // The next call settles the abandoned probe as a failed one (the breaker does not stay half-open,
    // which would divert everything forever); its payload goes to the fallback, the breaker being open.
    r.fwd.retry_queued(deadline()).await;
    assert_eq!(r.fwd.breaker_state(), BreakerState::Open);
    let fell = drain(r.overflow.as_mut().unwrap());
    assert_eq!(samples(&fell), 6);

    r.intake.set_default_reply(Reply::Status(202));
    tokio::time::sleep_until(r.fwd.next_probe().unwrap()).await;
    r.fwd.send(encode(&series_flush(4)), deadline()).await;
    assert_eq!(r.fwd.breaker_state(), BreakerState::Closed);
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), 8);
}

#[tokio::test]
async fn bringing_the_deadline_forward_ends_a_hung_request_and_keeps_its_payload_queued() {
    let mut r = rig().await;
    r.intake.set_default_reply(Reply::Hang);
    let (payloads, total) = three_payloads();
    let (d, cut) = Deadline::movable(deadline());
    {
        let send = r.fwd.send(payloads, d);
        tokio::pin!(send);
        tokio::select! {
            () = &mut send => panic!("a hung intake cannot complete the delivery"),
            arrived = r.intake.wait_requests(1, WAIT) => assert!(arrived),
        }
        cut.bring_forward(Instant::now());
        send.await;
    }
    assert_eq!(
        r.intake.requests().len(),
        1,
        "nothing is sent after the deadline"
    );
    let left = r.fwd.take_queued();
    assert_eq!(samples(&left), total);
    assert_eq!(r.telemetry.points.dropped_total(), 0);
}

#[tokio::test]
async fn an_answer_that_comes_before_a_brought_forward_deadline_counts_as_delivered() {
    let mut r = rig().await;
    r.intake
        .set_default_reply(Reply::Delay(Duration::from_millis(200), 202));
    let (payloads, total) = three_payloads();
    let (d, cut) = Deadline::movable(Instant::now() + Duration::from_secs(600));
    {
        let send = r.fwd.send(payloads, d);
        tokio::pin!(send);
        // Brought forward while the first request is on its way, to a deadline its answer still meets.
        tokio::select! {
            () = &mut send => {}
            () = tokio::task::yield_now() => cut.bring_forward(deadline()),
        }
        send.await;
    }
    assert_eq!(r.telemetry.points.delivered.load(Relaxed), total);
    assert!(r.fwd.take_queued().is_empty());
    assert_eq!(r.intake.requests().len(), 3, "each payload sent once");
}

#[tokio::test]
async fn a_send_dropped_while_the_fallback_channel_is_full_loses_nothing() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(403));
    let telemetry = Arc::new(Telemetry::default());
    let (tx, mut rx) = mpsc::channel(1);
    let mut fwd =
        offpath_tests::support::forwarder(&config(&intake.url()), Arc::clone(&telemetry), Some(tx))
            .unwrap()
            .with_retry_policy(fast_policy());
    let (payloads, total) = three_payloads();
    {
        let send = fwd.send(payloads, deadline());
        tokio::pin!(send);
        // The refused key opens the breaker: all three go to the fallback, whose channel holds one.
        let one_handed_over = async {
            while rx.is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            () = &mut send => panic!("the channel of one cannot take three payloads"),
            () = one_handed_over => {}
        }
    }
    let mut all = drain(&mut rx);
    assert_eq!(all.len(), 1);
    all.extend(fwd.take_queued());
    assert_eq!(samples(&all), total);
    assert_eq!(telemetry.points.dropped_total(), 0);
}
