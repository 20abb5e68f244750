//! The real `offpath` binary delivering to the fake Datadog intake (`DD_API_KEY` set, `DD_DD_URL` pointing
//! at the fake): a statsd workload arrives exact, failure scripts (5xx, 413, 400, 403, dropped
//! connections, a hung intake) are handled as documented, a large burst is split within the limits, and
//! SIGTERM delivers everything with a balanced point ledger.
//!
//! Waits are conditions: the fake intake's `wait_until` (woken by every request) or `/status` polls with
//! a deadline; no timed assertions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cadence::prelude::*;
use cadence::{StatsdClient, UdpMetricSink};
use offpath_proto::metric_payload::MetricType;
use offpath_tests::fake_intake::{Answer, FakeIntake, Reply};
use offpath_tests::support::{Offpath, status};
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "e2e-host";
/// Upper bound of every condition wait (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(60);
const SERIES: &str = "/api/v2/series";

/// Start offpath against `intake` with a 1 s flush interval, no self-telemetry, stdout fallback.
fn start(intake: &FakeIntake, extra: &[(&str, &str)]) -> Offpath {
    let url = intake.url();
    let mut env: Vec<(&str, &str)> = vec![
        ("DD_API_KEY", KEY),
        ("DD_DD_URL", &url),
        ("DD_HOSTNAME", HOST),
        ("DD_TAGS", "team:core"),
        ("OFFPATH_FLUSH_INTERVAL", "1"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
        ("OFFPATH_FALLBACK", "stdout"),
    ];
    env.extend_from_slice(extra);
    tokio::task::block_in_place(|| Offpath::start(&[], &env))
}

/// Poll `/status` until offpath has received `n` points (metric values, events, service checks).
fn wait_received(offpath: &Offpath, n: u64) {
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status(offpath);
            if s["points"]["received"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "offpath did not receive {n} points: {s}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// The shutdown summary `points received=.. delivered=.. fell_back=.. dropped=.. dropped.<reason>=..`.
#[derive(Debug, Default)]
struct Ledger {
    received: u64,
    delivered: u64,
    fell_back: u64,
    dropped: u64,
    dropped_by: BTreeMap<String, u64>,
}

impl Ledger {
    fn parse(stderr: &str) -> Self {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.contains("points received="))
            .unwrap_or_else(|| panic!("no shutdown summary on stderr:\n{stderr}"));
        let mut l = Self::default();
        for word in line.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let Ok(n) = v.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>() else {
                continue;
            };
            match k {
                "received" => l.received = n,
                "delivered" => l.delivered = n,
                "fell_back" => l.fell_back = n,
                "dropped" => l.dropped = n,
                _ => {
                    if let Some(reason) = k.strip_prefix("dropped.") {
                        l.dropped_by.insert(reason.to_owned(), n);
                    }
                }
            }
        }
        l
    }

    fn assert_balanced(&self) {
        assert!(self.received > 0, "nothing received: {self:?}");
        assert_eq!(
            self.received,
            self.delivered + self.fell_back + self.dropped,
            "the ledger does not balance: {self:?}"
        );
    }
}

/// SIGTERM, expect exit code 0, and return the shutdown ledger.
fn stop(offpath: &mut Offpath) -> Ledger {
    let code = tokio::task::block_in_place(|| offpath.stop());
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "offpath exit code; stderr:\n{stderr}");
    Ledger::parse(&stderr)
}

fn client(udp: SocketAddr) -> StatsdClient {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    StatsdClient::from_sink("e2e", UdpMetricSink::from(udp, socket).unwrap())
}

fn raw_send(udp: SocketAddr, datagrams: &[&[u8]]) {
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        raw.send_to(d, udp).unwrap();
    }
}

fn points_sum(points: &[(i64, f64)]) -> f64 {
    points.iter().map(|p| p.1).sum()
}

fn answers(intake: &FakeIntake, path: &str) -> Vec<Answer> {
    intake.requests_to(path).iter().map(|r| r.answer).collect()
}

/// Send `n` counts `e2e.<name>:1|c|#i:<k>` (k in 0..n), one context each, in one datagram.
fn send_contexts(udp: SocketAddr, name: &str, n: usize) {
    let mut d = String::new();
    for k in 0..n {
        d.push_str(&format!("e2e.{name}:1|c|#i:{k}\n"));
    }
    raw_send(udp, &[d.as_bytes()]);
}

/// Every `i:<k>` context of `e2e.<name>` arrived exactly once with the value 1 (rate 0.1).
fn assert_contexts_once(intake: &FakeIntake, name: &str, n: usize) {
    let series = intake.series(&format!("e2e.{name}"));
    let mut seen = BTreeSet::new();
    for s in &series {
        let i = s
            .tags
            .iter()
            .find(|t| t.starts_with("i:"))
            .unwrap_or_else(|| panic!("no i: tag in {s:?}"))
            .clone();
        assert!(seen.insert(i.clone()), "{i} arrived twice: {series:?}");
        assert_eq!(s.points.len(), 1, "{s:?}");
        assert!((s.points[0].1 * 10.0 - 1.0).abs() < 1e-9, "{s:?}");
    }
    assert_eq!(seen.len(), n, "contexts that arrived: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statsd_workload_arrives_with_exact_values_types_tags_hosts_and_10s_timestamps() {
    let intake = FakeIntake::start(KEY).await;
    let mut offpath = start(&intake, &[]);
    let udp = offpath.udp.expect("udp address");
    let c = client(udp);
    for _ in 0..5 {
        c.count_with_tags("requests", 2)
            .with_tag("route", "/a")
            .send();
    }
    c.gauge_with_tags("temperature", 20.0).send();
    c.gauge_with_tags("temperature", 21.5).send();
    c.count_with_tags("moved", 3)
        .with_tag("host", "web2")
        .send();
    for v in [0.5f64, 1.5, 2.5, 7.0] {
        c.distribution_with_tags("payload", v)
            .with_tag("kind", "json")
            .send();
    }
    raw_send(
        udp,
        &[
            b"_e{15,24}:Deploy finished|line1\\nline2 with | pipe|h:h1|k:agg|p:low|s:my_apps|t:success|#ev:1",
            b"_sc|e2e.db|2|h:db1|#shard:1|m:connection refused",
        ],
    );
    // 5 counts + 2 gauges + 1 count + 4 distribution values + 1 event + 1 service check.
    let received = 5 + 2 + 1 + 4 + 1 + 1;
    wait_received(&offpath, received);

    // Only closed 10 s buckets flush periodically: wait for them (woken by every request).
    let arrived = intake
        .wait_until(WAIT, |i| {
            (points_sum(&i.points("e2e.requests", &[])) * 10.0 - 10.0).abs() < 1e-9
                && !i.points("e2e.temperature", &[]).is_empty()
                && !i.series("e2e.moved").is_empty()
                && i.sketch_totals("e2e.payload", &[])
                    .is_some_and(|t| t.cnt == 4)
                && !i.events().is_empty()
                && !i.service_checks().is_empty()
        })
        .await;
    assert!(
        arrived,
        "the workload did not arrive: {:?}\nstderr:\n{}",
        intake.requests(),
        offpath.stderr()
    );

    for s in intake.series("e2e.requests") {
        assert_eq!(s.metric_type, MetricType::Rate, "{s:?}");
        assert_eq!(s.interval, 10, "{s:?}");
        assert_eq!(s.host, HOST, "{s:?}");
        assert!(s.tags.contains(&"route:/a".to_owned()), "{s:?}");
        assert!(s.tags.contains(&"team:core".to_owned()), "{s:?}");
        for (ts, _) in &s.points {
            assert_eq!(ts % 10, 0, "timestamp not on a 10 s boundary: {s:?}");
        }
    }
    let temps = intake.series("e2e.temperature");
    assert_eq!(temps.len(), 1, "one gauge context, one bucket: {temps:?}");
    assert_eq!(temps[0].metric_type, MetricType::Gauge);
    assert_eq!(temps[0].points.len(), 1);
    assert_eq!(temps[0].points[0].1, 21.5, "the last gauge value wins");
    assert_eq!(temps[0].points[0].0 % 10, 0);
    assert_eq!(temps[0].host, HOST);

    let moved = intake.series("e2e.moved");
    for s in &moved {
        assert_eq!(s.host, "web2", "a host: tag overrides DD_HOSTNAME: {s:?}");
        assert!(
            !s.tags.iter().any(|t| t.starts_with("host:")),
            "the host: tag becomes the host: {s:?}"
        );
    }
    assert!((points_sum(&intake.points("e2e.moved", &[])) * 10.0 - 3.0).abs() < 1e-9);

    let totals = intake.sketch_totals("e2e.payload", &["kind:json"]).unwrap();
    assert_eq!(totals.cnt, 4);
    assert_eq!(totals.min, 0.5);
    assert_eq!(totals.max, 7.0);
    assert_eq!(totals.sum, 11.5);
    assert_eq!(totals.bin_count, 4);
    for s in intake.sketches("e2e.payload", &[]) {
        assert_eq!(s.host, HOST);
        assert!(s.tags.contains(&"team:core".to_owned()), "{s:?}");
        for d in &s.dogsketches {
            assert_eq!(d.ts % 10, 0, "sketch timestamp not on a 10 s boundary");
        }
    }

    let events = intake.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.title, "Deploy finished");
    assert_eq!(e.text, "line1\nline2 with | pipe");
    assert_eq!(e.priority.as_deref(), Some("low"));
    assert_eq!(e.alert_type.as_deref(), Some("success"));
    assert_eq!(e.aggregation_key.as_deref(), Some("agg"));
    assert_eq!(e.source_type_name.as_deref(), Some("my_apps"));
    assert_eq!(e.host.as_deref(), Some("h1"));
    assert!(e.tags.contains(&"ev:1".to_owned()), "{e:?}");

    let checks = intake.service_checks();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].check, "e2e.db");
    assert_eq!(checks[0].status, 2);
    assert_eq!(checks[0].host_name, "db1");
    assert_eq!(checks[0].message.as_deref(), Some("connection refused"));
    assert!(checks[0].tags.contains(&"shard:1".to_owned()));

    let ledger = stop(&mut offpath);
    ledger.assert_balanced();
    assert_eq!(ledger.received, received);
    assert_eq!(ledger.delivered, received, "{ledger:?}");
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    for r in intake.requests() {
        assert!(r.api_key_ok, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_healthy_intake_delivers_everything_before_exit_and_the_ledger_balances() {
    let intake = FakeIntake::start(KEY).await;
    // A long flush interval: only the shutdown flush can deliver.
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    let udp = offpath.udp.expect("udp address");
    send_contexts(udp, "shutdown", 50);
    let c = client(udp);
    for v in [1u64, 2, 3] {
        c.distribution_with_tags("dist", v).send();
    }
    raw_send(udp, &[b"_sc|e2e.shutdown.check|0"]);
    wait_received(&offpath, 50 + 3 + 1);
    let before = status(&offpath);
    assert_eq!(before["points"]["delivered"], 0, "{before}");

    let ledger = stop(&mut offpath);
    assert_contexts_once(&intake, "shutdown", 50);
    assert_eq!(
        intake.sketch_totals("e2e.dist", &[]).map(|t| t.cnt),
        Some(3)
    );
    assert_eq!(intake.service_checks().len(), 1);
    ledger.assert_balanced();
    assert_eq!(ledger.received, 54);
    assert_eq!(ledger.delivered, 54, "{ledger:?}");
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_202_deliver_exactly_once_without_duplicates() {
    let intake = FakeIntake::start(KEY).await;
    // Fewer failures than the breaker threshold (5): the forwarder backs off and retries in the flush.
    intake.push_replies([Reply::Status(500), Reply::Status(503), Reply::Status(502)]);
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    send_contexts(offpath.udp.unwrap(), "retried", 20);
    wait_received(&offpath, 20);
    let ledger = stop(&mut offpath);

    assert_contexts_once(&intake, "retried", 20);
    assert_eq!(
        answers(&intake, SERIES),
        [500, 503, 502, 202].map(Answer::Status),
        "{:?}",
        intake.requests()
    );
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, 20, "{ledger:?}");
    assert_eq!(ledger.fell_back, 0, "{ledger:?}");
    assert!(offpath.stdout().trim().is_empty(), "nothing fell back");

    // The recovery latency, for the report (not asserted): last failure answer to the delivering request.
    let reqs = intake.requests_to(SERIES);
    let last_fail = reqs[2].arrived;
    let delivered = reqs[3].arrived;
    eprintln!(
        "recovery: first request after the 5xx streak {:?} after the last 5xx; whole streak {:?}",
        delivered.duration_since(last_fail),
        delivered.duration_since(reqs[0].arrived)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_that_recovers_after_the_breaker_opened_gets_new_data_again() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(500));
    let mut offpath = start(&intake, &[]);
    let udp = offpath.udp.unwrap();
    send_contexts(udp, "before", 5);
    wait_received(&offpath, 5);
    // Enough failures to open the breaker: the payload goes to the fallback (stdout).
    let opened = intake
        .wait_until(WAIT, |i| i.requests_to(SERIES).len() >= 5)
        .await;
    assert!(opened, "{:?}", intake.requests());
    let fell = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status(&offpath);
            if s["points"]["fell_back"].as_u64().unwrap_or(0) >= 5 {
                return s;
            }
            assert!(Instant::now() < deadline, "nothing fell back: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(fell["breaker"], "open", "{fell}");

    // The intake recovers; new data must reach it.
    let recovered_at = Instant::now();
    let recovered_wall = std::time::SystemTime::now();
    intake.set_default_reply(Reply::Status(202));
    send_contexts(udp, "after", 5);
    wait_received(&offpath, 10);
    let delivered = intake
        .wait_until(WAIT, |i| i.series("e2e.after").len() == 5)
        .await;
    assert!(
        delivered,
        "{:?}\nstderr:\n{}",
        intake.requests(),
        offpath.stderr()
    );
    let first_ok = intake
        .requests_to(SERIES)
        .iter()
        .find(|r| r.answer == Answer::Status(202))
        .map(|r| r.arrived)
        .unwrap();
    // The data waits for its 10 s bucket to close; measure from the close too.
    let bucket_end = intake.series("e2e.after")[0].points[0].0 + 10;
    let since_recovery = first_ok.duration_since(recovered_at);
    let recovered_unix = recovered_wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    eprintln!(
        "recovery: first 202 {since_recovery:?} after the intake recovered (breaker open), \
         {:.3} s after the bucket holding the new data closed",
        recovered_unix + since_recovery.as_secs_f64() - bucket_end as f64
    );

    let ledger = stop(&mut offpath);
    ledger.assert_balanced();
    assert_contexts_once(&intake, "after", 5);
    assert!(intake.series("e2e.before").is_empty());
    assert_eq!(ledger.fell_back, 5, "{ledger:?}");
    let stdout = offpath.stdout_json();
    let before: Vec<&Value> = stdout
        .iter()
        .filter(|r| r["kind"] == "series" && r["metric"] == "e2e.before")
        .collect();
    assert_eq!(before.len(), 5, "fallback records: {stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_payload_and_every_part_is_delivered() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([Reply::Status(413)]);
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    send_contexts(offpath.udp.unwrap(), "split", 40);
    wait_received(&offpath, 40);
    let ledger = stop(&mut offpath);

    assert_contexts_once(&intake, "split", 40);
    let reqs = intake.requests_to(SERIES);
    assert_eq!(reqs[0].answer, Answer::Status(413), "{reqs:?}");
    assert_eq!(reqs[0].items, 40);
    assert!(reqs.len() >= 3, "split in at least two parts: {reqs:?}");
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.answer == Answer::Status(202) && r.items < 40),
        "{reqs:?}"
    );
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, 40, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_drops_the_payload_and_counts_it_as_intake_rejected() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([Reply::Status(400)]);
    let mut offpath = start(&intake, &[]);
    let udp = offpath.udp.unwrap();
    send_contexts(udp, "rejected", 7);
    wait_received(&offpath, 7);
    // Wait for the periodic flush that gets the 400, and read the counter on /status.
    let answered = intake
        .wait_until(WAIT, |i| !i.requests_to(SERIES).is_empty())
        .await;
    assert!(answered, "{:?}", intake.requests());
    let s = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status(&offpath);
            if s["points"]["dropped_total"].as_u64().unwrap_or(0) > 0 {
                return s;
            }
            assert!(Instant::now() < deadline, "no drop counted: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(s["points"]["dropped"]["intake_rejected"], 7, "{s}");
    assert!(
        s["last_intake_error"]
            .as_str()
            .is_some_and(|e| e.contains("400")),
        "{s}"
    );

    // The intake is fine afterwards: later data is delivered, the rejected payload is not resent.
    send_contexts(udp, "later", 3);
    wait_received(&offpath, 10);
    let ledger = stop(&mut offpath);
    assert_contexts_once(&intake, "later", 3);
    assert!(intake.series("e2e.rejected").is_empty());
    assert_eq!(
        intake
            .requests_to(SERIES)
            .iter()
            .filter(|r| r.answer == Answer::Status(400))
            .count(),
        1
    );
    ledger.assert_balanced();
    assert_eq!(
        ledger.dropped_by.get("intake_rejected"),
        Some(&7),
        "{ledger:?}"
    );
    assert_eq!(ledger.delivered, 3, "{ledger:?}");
    assert!(
        offpath.stderr().contains("HTTP 400"),
        "the rejection is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_not_retried_in_a_loop_and_the_data_goes_to_the_stdout_fallback() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(403));
    let mut offpath = start(&intake, &[]);
    let udp = offpath.udp.unwrap();
    send_contexts(udp, "forbidden", 6);
    wait_received(&offpath, 6);
    let answered = intake
        .wait_until(WAIT, |i| !i.requests_to(SERIES).is_empty())
        .await;
    assert!(answered);
    // Let a few more flush periods pass (each tick is a chance to loop), then stop.
    let s = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status(&offpath);
            if s["points"]["fell_back"].as_u64().unwrap_or(0) >= 6 {
                return s;
            }
            assert!(Instant::now() < deadline, "nothing fell back: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(s["breaker"], "open", "{s}");
    let ledger = stop(&mut offpath);

    let reqs = intake.requests_to(SERIES);
    assert!(
        reqs.len() <= 3,
        "a refused key must not be retried in a loop: {reqs:?}"
    );
    assert!(intake.series("e2e.forbidden").is_empty());
    let stdout = offpath.stdout_json();
    let records: Vec<&Value> = stdout
        .iter()
        .filter(|r| r["kind"] == "series" && r["metric"] == "e2e.forbidden")
        .collect();
    assert_eq!(records.len(), 6, "fallback records: {stdout:?}");
    ledger.assert_balanced();
    assert_eq!(ledger.fell_back, 6, "{ledger:?}");
    let stderr = offpath.stderr();
    assert!(
        stderr.contains("refused the API key"),
        "the key problem is logged: {stderr}"
    );
    assert_eq!(
        stderr.matches("refused the API key").count(),
        1,
        "logged once: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_retried_and_deliver_exactly_once() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([Reply::Drop, Reply::Drop, Reply::Drop]);
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    send_contexts(offpath.udp.unwrap(), "dropped", 12);
    wait_received(&offpath, 12);
    let ledger = stop(&mut offpath);

    assert_contexts_once(&intake, "dropped", 12);
    assert_eq!(
        answers(&intake, SERIES),
        [
            Answer::Dropped,
            Answer::Dropped,
            Answer::Dropped,
            Answer::Status(202)
        ],
        "{:?}",
        intake.requests()
    );
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, 12, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_intake_times_out_and_the_retry_delivers() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([Reply::Hang]);
    let mut offpath = start(
        &intake,
        &[
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("DD_FORWARDER_TIMEOUT", "1"),
        ],
    );
    send_contexts(offpath.udp.unwrap(), "hung", 9);
    wait_received(&offpath, 9);
    let ledger = stop(&mut offpath);

    assert_contexts_once(&intake, "hung", 9);
    assert_eq!(
        answers(&intake, SERIES),
        [Answer::Hung, Answer::Status(202)],
        "{:?}",
        intake.requests()
    );
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, 9, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_30000_contexts_is_split_into_several_payloads_within_the_limits() {
    const CONTEXTS: usize = 30_000;
    const PER_DATAGRAM: usize = 150;
    let intake = FakeIntake::start(KEY).await;
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    let udp = offpath.udp.unwrap();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0usize;
    while sent < CONTEXTS {
        let mut d = String::new();
        for k in sent..(sent + PER_DATAGRAM).min(CONTEXTS) {
            d.push_str(&format!(
                "e2e.burst.gauge.{}:{k}|g|#i:{k},shard:{}\n",
                k % 7,
                k % 13
            ));
        }
        assert!(d.len() < 8192, "datagram of {} B", d.len());
        raw.send_to(d.as_bytes(), udp).unwrap();
        sent = (sent + PER_DATAGRAM).min(CONTEXTS);
        // Flow control: let offpath read what was sent every 20 datagrams (a socket buffer is finite).
        if (sent / PER_DATAGRAM) % 20 == 0 {
            wait_received(&offpath, sent as u64);
        }
    }
    wait_received(&offpath, CONTEXTS as u64);
    let ledger = stop(&mut offpath);

    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    let reqs = intake.requests_to(SERIES);
    assert!(
        reqs.len() >= 3,
        "30,000 points need several payloads: {reqs:?}"
    );
    for r in &reqs {
        assert_eq!(r.answer, Answer::Status(202), "{r:?}");
        assert!(r.points <= 10_000, "{r:?}");
        assert!(r.compressed_len <= 512_000, "{r:?}");
        assert!(r.raw_len <= 5_242_880, "{r:?}");
    }
    let all = intake.all_series();
    assert_eq!(all.len(), CONTEXTS);
    let mut seen = BTreeSet::new();
    for s in &all {
        let k: usize = s
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("i:"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s.metric, format!("e2e.burst.gauge.{}", k % 7));
        assert_eq!(s.points.len(), 1);
        assert_eq!(s.points[0].1, k as f64, "{s:?}");
        assert!(seen.insert(k), "context {k} arrived twice");
    }
    assert_eq!(seen.len(), CONTEXTS);
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, CONTEXTS as u64, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_kind_survives_server_errors_and_arrives_exactly_once() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([Reply::Status(500), Reply::Status(429)]);
    let mut offpath = start(&intake, &[("OFFPATH_FLUSH_INTERVAL", "3600")]);
    let udp = offpath.udp.unwrap();
    send_contexts(udp, "kinds", 4);
    let c = client(udp);
    for v in [10u64, 20] {
        c.distribution_with_tags("kinds.dist", v).send();
    }
    raw_send(
        udp,
        &[b"_e{4,4}:boom|text", b"_sc|e2e.kinds.check|1|m:warn"],
    );
    wait_received(&offpath, 4 + 2 + 1 + 1);
    let ledger = stop(&mut offpath);

    assert_contexts_once(&intake, "kinds", 4);
    let t = intake.sketch_totals("e2e.kinds.dist", &[]).unwrap();
    assert_eq!((t.cnt, t.min, t.max, t.sum), (2, 10.0, 20.0, 30.0));
    assert_eq!(intake.events().len(), 1, "{:?}", intake.events());
    assert_eq!(intake.service_checks().len(), 1);
    let failed = intake
        .requests()
        .iter()
        .filter(|r| !matches!(r.answer, Answer::Status(202)))
        .count();
    assert_eq!(failed, 2, "{:?}", intake.requests());
    ledger.assert_balanced();
    assert_eq!(ledger.delivered, 8, "{ledger:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_intake_falls_back_within_the_shutdown_timeout_and_the_ledger_balances()
{
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Hang);
    let mut offpath = start(
        &intake,
        &[
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "3"),
        ],
    );
    send_contexts(offpath.udp.unwrap(), "stuck", 8);
    wait_received(&offpath, 8);
    let ledger = stop(&mut offpath);

    assert!(intake.series("e2e.stuck").is_empty());
    let stdout = offpath.stdout_json();
    let records: Vec<&Value> = stdout
        .iter()
        .filter(|r| r["kind"] == "series" && r["metric"] == "e2e.stuck")
        .collect();
    assert_eq!(records.len(), 8, "fallback records: {stdout:?}");
    ledger.assert_balanced();
    assert_eq!(ledger.fell_back, 8, "{ledger:?}");
}
