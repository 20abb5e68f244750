//! The real `offpath` binary against a failing Datadog intake (503, unreachable, refused API key): what it
//! cannot deliver lands in CloudWatch Logs (a moto server) as exact offpath records, new data reaches the
//! intake again once it recovers, every point is accounted for once
//! (`received = delivered + fell_back + dropped`), and `offpath replay` brings the diverted data back.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use offpath_proto::metric_payload::MetricType;
use offpath_tests::cloudwatch::Moto;
use offpath_tests::fake_intake::{Answer, FakeIntake};
use offpath_tests::support::{Offpath, binary, status};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const BAD_KEY: &str = "ffffffffffffffffffffffffffffffff";
const STREAM: &str = "e2e-stream";
const HOST: &str = "e2e-host";
/// Generous: a closed 10 s bucket, the breaker's probe backoff and moto's latency on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// The environment of a sidecar shipping to `intake_url` with CloudWatch Logs (`moto`) as fallback.
fn sidecar_env(intake_url: &str, key: &str, moto: &Moto, group: &str) -> Vec<(String, String)> {
    [
        ("DD_API_KEY", key),
        ("DD_DD_URL", intake_url),
        ("DD_HOSTNAME", HOST),
        ("OFFPATH_FLUSH_INTERVAL", "1"),
        ("OFFPATH_FALLBACK", "cloudwatch"),
        ("OFFPATH_FALLBACK_LOG_GROUP", group),
        ("OFFPATH_FALLBACK_LOG_STREAM", STREAM),
        ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn start(env: &[(String, String)]) -> Offpath {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Offpath::start(&[], &env)
}

/// Send `lines` as one datagram each, then wait until `/status` counts `points` received in total.
async fn send(offpath: &Offpath, lines: &[String], points: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = offpath.udp.expect("udp address");
    for l in lines {
        socket.send_to(l.as_bytes(), udp).unwrap();
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let s = status(offpath);
        if s["points"]["received"].as_u64().unwrap_or(0) >= points {
            return;
        }
        assert!(
            Instant::now() < until,
            "offpath did not receive {points} points: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One phase of the workload: 20 counts, two gauges, three distribution values and a service check, all
/// named `e2e.<phase>.*`; 26 points.
fn workload(phase: &str) -> (Vec<String>, u64) {
    let mut lines: Vec<String> = (0..20)
        .map(|_| format!("e2e.{phase}.requests:1|c|#phase:{phase}"))
        .collect();
    lines.push(format!("e2e.{phase}.temp:20|g|#phase:{phase}"));
    lines.push(format!("e2e.{phase}.temp:21.5|g|#phase:{phase}"));
    for v in ["0.5", "1.5", "2.5"] {
        lines.push(format!("e2e.{phase}.latency:{v}|d|#phase:{phase}"));
    }
    lines.push(format!("_sc|e2e.{phase}.check|1|#phase:{phase}|m:degraded"));
    (lines, 26)
}

/// Every offpath record in the log group.
async fn records(moto: &Moto, group: &str) -> Vec<Value> {
    moto.events(group, Some(STREAM))
        .await
        .into_iter()
        .map(|(_, m)| serde_json::from_str(&m).unwrap_or_else(|e| panic!("bad record {m:?}: {e}")))
        .collect()
}

fn of<'a>(recs: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["kind"] == kind && (r["metric"] == name || r["check"] == name))
        .collect()
}

/// Σ value × interval over the points of `rate` records: the DogStatsD count.
fn count_total(recs: &[&Value]) -> f64 {
    recs.iter()
        .flat_map(|r| {
            assert_eq!(r["type"], "rate", "{r}");
            let interval = r["interval"].as_f64().unwrap();
            r["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| p[1].as_f64().unwrap() * interval)
        })
        .sum()
}

/// (cnt, min, max, sum) over every sketch bucket of the records.
fn sketch_total(recs: &[&Value]) -> (i64, f64, f64, f64) {
    recs.iter()
        .flat_map(|r| r["sketches"].as_array().unwrap().iter())
        .fold((0, f64::INFINITY, f64::NEG_INFINITY, 0.0), |t, b| {
            (
                t.0 + b["cnt"].as_i64().unwrap(),
                t.1.min(b["min"].as_f64().unwrap()),
                t.2.max(b["max"].as_f64().unwrap()),
                t.3 + b["sum"].as_f64().unwrap(),
            )
        })
}

/// The phase's whole workload is in the records.
fn phase_complete(recs: &[Value], phase: &str) -> bool {
    let requests = count_total(&of(recs, "series", &format!("e2e.{phase}.requests")));
    let latency = sketch_total(&of(recs, "sketch", &format!("e2e.{phase}.latency")));
    let checks = of(recs, "service_check", &format!("e2e.{phase}.check"));
    (requests - 20.0).abs() < 1e-9 && latency.0 == 3 && !checks.is_empty()
}

/// Wait until the log group holds the phase's whole workload; returns the records.
async fn wait_for_phase(moto: &Moto, group: &str, phase: &str, offpath: &Offpath) -> Vec<Value> {
    let until = Instant::now() + DEADLINE;
    let client = moto.client().await;
    loop {
        // Until the sink has created the stream, GetLogEvents fails: ask for the stream first.
        let created = client
            .describe_log_streams()
            .log_group_name(group)
            .log_stream_name_prefix(STREAM)
            .send()
            .await
            .is_ok_and(|r| !r.log_streams().is_empty());
        let recs = if created {
            records(moto, group).await
        } else {
            Vec::new()
        };
        if phase_complete(&recs, phase) {
            return recs;
        }
        assert!(
            Instant::now() < until,
            "the {phase} workload did not reach the log group; records: {recs:?}\nstatus: {}\nstderr:\n{}",
            status(offpath),
            offpath.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The records hold exactly the phase's values.
fn assert_phase_exact(recs: &[Value], phase: &str) {
    let requests = of(recs, "series", &format!("e2e.{phase}.requests"));
    assert!((count_total(&requests) - 20.0).abs() < 1e-9, "{requests:?}");
    for r in &requests {
        assert_eq!(r["interval"], 10);
        assert_eq!(r["host"], HOST);
        assert_eq!(r["tags"], serde_json::json!([format!("phase:{phase}")]));
    }
    let temp = of(recs, "series", &format!("e2e.{phase}.temp"));
    assert!(!temp.is_empty());
    assert!(temp.iter().all(|r| r["type"] == "gauge"));
    let last = temp
        .iter()
        .flat_map(|r| r["points"].as_array().unwrap().iter())
        .max_by_key(|p| p[0].as_i64().unwrap())
        .unwrap();
    assert_eq!(last[1].as_f64(), Some(21.5), "{temp:?}");
    let latency = of(recs, "sketch", &format!("e2e.{phase}.latency"));
    assert_eq!(sketch_total(&latency), (3, 0.5, 2.5, 4.5), "{latency:?}");
    let checks = of(recs, "service_check", &format!("e2e.{phase}.check"));
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0]["status"], 1);
    assert_eq!(checks[0]["message"], "degraded");
}

/// The intake holds exactly the phase's values.
fn assert_phase_delivered(intake: &FakeIntake, phase: &str) {
    let tag = format!("phase:{phase}");
    let requests = intake.series_tagged(&format!("e2e.{phase}.requests"), &[&tag]);
    let total: f64 = requests
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1 * s.interval as f64))
        .sum();
    assert!((total - 20.0).abs() < 1e-9, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|s| s.metric_type == MetricType::Rate && s.interval == 10 && s.host == HOST)
    );
    let temp = intake.points(&format!("e2e.{phase}.temp"), &[&tag]);
    assert_eq!(temp.iter().max_by_key(|p| p.0).map(|p| p.1), Some(21.5));
    let t = intake
        .sketch_totals(&format!("e2e.{phase}.latency"), &[&tag])
        .expect("sketches delivered");
    assert_eq!((t.cnt, t.min, t.max, t.sum), (3, 0.5, 2.5, 4.5));
    let checks: Vec<_> = intake
        .service_checks()
        .into_iter()
        .filter(|c| c.check == format!("e2e.{phase}.check"))
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].status, 1);
}

fn phase_delivered(intake: &FakeIntake, phase: &str) -> bool {
    let tag = format!("phase:{phase}");
    intake
        .sketch_totals(&format!("e2e.{phase}.latency"), &[&tag])
        .is_some_and(|t| t.cnt == 3)
        && intake
            .series_tagged(&format!("e2e.{phase}.requests"), &[&tag])
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1 * s.interval as f64))
            .sum::<f64>()
            >= 20.0 - 1e-9
        && intake
            .service_checks()
            .iter()
            .any(|c| c.check == format!("e2e.{phase}.check"))
}

/// The shutdown summary: (received, delivered, fell_back, dropped).
fn ledger(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown summary in stderr:\n{stderr}"));
    let field = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    (
        field("received="),
        field("delivered="),
        field("fell_back="),
        field("dropped="),
    )
}

/// Relay every connection to `listener` on to `to` (an intake that comes back on the same address).
fn relay(listener: TcpListener, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut a, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(async move {
                if let Ok(mut b) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    })
}

fn first_delivery(intake: &FakeIntake) -> bool {
    intake
        .requests()
        .iter()
        .any(|r| r.method == "POST" && matches!(r.answer, Answer::Status(200..=299)))
}

/// How the intake fails during the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// It answers 503.
    Unavailable,
    /// Nothing listens on its port (connection refused).
    Unreachable,
}

/// Outage → the workload lands in the log group → the intake recovers → new data is delivered; the
/// ledger balances. Returns how long the outage lasted and the time from the recovery to the first
/// delivered payload.
async fn outage_then_recovery(outage: Outage) -> (Duration, Duration) {
    let moto = Moto::start();
    let intake = FakeIntake::start(KEY).await;
    let group = format!("/offpath/e2e-{outage:?}").to_lowercase();
    // The port offpath ships to: the intake itself, or a port nobody listens on until the recovery.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let url = match outage {
        Outage::Unavailable => {
            intake.set_default_reply(offpath_tests::fake_intake::Reply::Status(503));
            intake.url()
        }
        Outage::Unreachable => format!("http://{closed_addr}"),
    };
    let mut offpath = start(&sidecar_env(&url, KEY, &moto, &group));
    let outage_started = Instant::now();

    let (lines, outage_points) = workload("outage");
    send(&offpath, &lines, outage_points).await;
    let recs = wait_for_phase(&moto, &group, "outage", &offpath).await;
    assert_phase_exact(&recs, "outage");
    assert!(
        !first_delivery(&intake),
        "nothing is delivered during the outage"
    );

    // Recovery.
    let recovered_at = Instant::now();
    let outage_lasted = recovered_at - outage_started;
    let _relay = match outage {
        Outage::Unavailable => {
            intake.set_default_reply(offpath_tests::fake_intake::Reply::Status(202));
            None
        }
        Outage::Unreachable => Some(relay(
            TcpListener::bind(closed_addr).await.unwrap(),
            intake.addr(),
        )),
    };
    assert!(
        intake.wait_until(DEADLINE, first_delivery).await,
        "nothing reached the intake after it recovered; stderr:\n{}",
        offpath.stderr()
    );
    let recovery = recovered_at.elapsed();

    let (lines, after_points) = workload("after");
    send(&offpath, &lines, outage_points + after_points).await;
    assert!(
        intake
            .wait_until(DEADLINE, |i| phase_delivered(i, "after"))
            .await,
        "the data sent after the recovery did not reach the intake; stderr:\n{}",
        offpath.stderr()
    );
    assert_phase_delivered(&intake, "after");

    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let (received, delivered, fell_back, dropped) = ledger(&offpath.stderr());
    assert_eq!(received, outage_points + after_points);
    assert_eq!(
        received,
        delivered + fell_back + dropped,
        "every point ends in one place"
    );
    assert_eq!(dropped, 0, "nothing is lost");
    assert_eq!(fell_back, outage_points, "the outage's points fell back");
    assert_eq!(delivered, after_points, "the later points were delivered");

    // The outage's data went to CloudWatch only, the later data to Datadog only.
    assert!(
        intake
            .series_names()
            .iter()
            .all(|m| !m.starts_with("e2e.outage.")),
        "{:?}",
        intake.series_names()
    );
    let recs = records(&moto, &group).await;
    assert_phase_exact(&recs, "outage");
    assert!(
        recs.iter().all(|r| !r["metric"]
            .as_str()
            .or(r["check"].as_str())
            .unwrap_or("")
            .starts_with("e2e.after.")),
        "data sent after the recovery fell back"
    );
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    (outage_lasted, recovery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_answering_503_diverts_to_cloudwatch_and_new_data_returns_to_datadog_after_recovery()
 {
    let (outage, recovery) = outage_then_recovery(Outage::Unavailable).await;
    println!(
        "time from the intake's recovery to the first delivered payload (503 outage of {} ms): {} ms",
        outage.as_millis(),
        recovery.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_intake_diverts_to_cloudwatch_and_new_data_returns_to_datadog_once_it_listens()
 {
    let (outage, recovery) = outage_then_recovery(Outage::Unreachable).await;
    println!(
        "time from the intake's recovery to the first delivered payload (connection refused of {} ms): {} ms",
        outage.as_millis(),
        recovery.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_diverts_everything_to_cloudwatch_and_nothing_is_lost() {
    let moto = Moto::start();
    let intake = FakeIntake::start(KEY).await;
    let group = "/offpath/e2e-bad-key";
    let mut offpath = start(&sidecar_env(&intake.url(), BAD_KEY, &moto, group));

    let (lines, points) = workload("refused");
    send(&offpath, &lines, points).await;
    let recs = wait_for_phase(&moto, group, "refused", &offpath).await;
    assert_phase_exact(&recs, "refused");

    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let (received, delivered, fell_back, dropped) = ledger(&offpath.stderr());
    assert_eq!(received, points);
    assert_eq!(received, delivered + fell_back + dropped);
    assert_eq!((delivered, fell_back, dropped), (0, points, 0));
    let requests = intake.requests();
    assert!(!requests.is_empty(), "offpath tried the intake");
    assert!(
        requests
            .iter()
            .all(|r| !r.api_key_ok && r.answer == Answer::Status(403)),
        "{requests:?}"
    );
    assert!(
        offpath.stderr().contains("403"),
        "the refusal is logged:\n{}",
        offpath.stderr()
    );
    assert_phase_exact(&records(&moto, group).await, "refused");
}

/// A series as compared between records and the intake: (metric, sorted tags, host, type, interval).
type SeriesKey = (String, Vec<String>, String, MetricType, i64);
/// A sketch bucket: (ts, cnt, min, max, sum, avg, keys, counts), floats as bits for exact comparison.
type Bucket = (i64, i64, u64, u64, u64, u64, Vec<i32>, Vec<u32>);

fn sorted(tags: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut t: Vec<String> = tags.into_iter().collect();
    t.sort();
    t
}

fn record_tags(r: &Value) -> Vec<String> {
    sorted(
        r["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_log_group_recreates_exactly_the_series_and_sketches_the_outage_diverted() {
    let moto = Moto::start();
    let down = FakeIntake::start(KEY).await;
    down.set_default_reply(offpath_tests::fake_intake::Reply::Status(503));
    let group = "/offpath/e2e-replay";
    let env = sidecar_env(&down.url(), KEY, &moto, group);
    let mut offpath = start(&env);
    let (mut lines, mut points) = workload("replayed");
    // Histograms and more contexts, so that every series type and several sketches are diverted.
    for v in [1, 2, 3, 4, 100] {
        lines.push(format!("e2e.replayed.hist:{v}|h|#route:/a"));
    }
    for i in 0..5 {
        lines.push(format!("e2e.replayed.dist:{i}.25|d|#shard:{i}"));
    }
    points += 10;
    send(&offpath, &lines, points).await;
    // SIGTERM flushes the open buckets; the intake is down, so everything goes to the log group.
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let (received, delivered, fell_back, dropped) = ledger(&offpath.stderr());
    assert_eq!(
        (received, delivered, fell_back, dropped),
        (points, 0, points, 0)
    );
    let recs = records(&moto, group).await;
    assert_phase_exact(&recs, "replayed");

    let mut want_series: BTreeMap<SeriesKey, Vec<(i64, u64)>> = BTreeMap::new();
    let mut want_sketches: BTreeMap<(String, Vec<String>, String), Vec<Bucket>> = BTreeMap::new();
    for r in &recs {
        let metric = r["metric"].as_str().unwrap_or_default().to_owned();
        let host = r["host"].as_str().unwrap_or_default().to_owned();
        match r["kind"].as_str().unwrap() {
            "series" => {
                let ty = match r["type"].as_str().unwrap() {
                    "rate" => MetricType::Rate,
                    "count" => MetricType::Count,
                    "gauge" => MetricType::Gauge,
                    other => panic!("unknown type {other}"),
                };
                let key = (
                    metric,
                    record_tags(r),
                    host,
                    ty,
                    r["interval"].as_i64().unwrap_or(0),
                );
                want_series.entry(key).or_default().extend(
                    r["points"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap().to_bits())),
                );
            }
            "sketch" => {
                let key = (metric, record_tags(r), host);
                want_sketches.entry(key).or_default().extend(
                    r["sketches"].as_array().unwrap().iter().map(|b| {
                        let f = |k: &str| b[k].as_f64().unwrap().to_bits();
                        (
                            b["ts"].as_i64().unwrap(),
                            b["cnt"].as_i64().unwrap(),
                            f("min"),
                            f("max"),
                            f("sum"),
                            f("avg"),
                            b["k"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|k| k.as_i64().unwrap() as i32)
                                .collect(),
                            b["n"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|n| n.as_u64().unwrap() as u32)
                                .collect(),
                        )
                    }),
                );
            }
            _ => {}
        }
    }
    assert!(
        want_series
            .keys()
            .any(|k| k.0 == "e2e.replayed.hist.95percentile")
    );
    assert_eq!(
        want_sketches
            .keys()
            .filter(|k| k.0 == "e2e.replayed.dist")
            .count(),
        5
    );

    // Replay into a healthy intake with the binary.
    let up = FakeIntake::start(KEY).await;
    let mut replay_env = sidecar_env(&up.url(), KEY, &moto, group);
    replay_env.retain(|(k, _)| !k.starts_with("OFFPATH_"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary("offpath"))
            .args(["replay", "--log-group", group, "--since", "1h"])
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(replay_env)
            .output()
            .expect("run offpath replay")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "offpath replay failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let mut got_series: BTreeMap<SeriesKey, Vec<(i64, u64)>> = BTreeMap::new();
    for s in up.all_series() {
        let interval = if s.metric_type == MetricType::Gauge {
            0
        } else {
            s.interval
        };
        let key = (s.metric, sorted(s.tags), s.host, s.metric_type, interval);
        got_series
            .entry(key)
            .or_default()
            .extend(s.points.iter().map(|p| (p.0, p.1.to_bits())));
    }
    let mut got_sketches: BTreeMap<(String, Vec<String>, String), Vec<Bucket>> = BTreeMap::new();
    for s in up.all_sketches() {
        got_sketches
            .entry((s.metric, sorted(s.tags), s.host))
            .or_default()
            .extend(s.dogsketches.iter().map(|d| {
                (
                    d.ts,
                    d.cnt,
                    d.min.to_bits(),
                    d.max.to_bits(),
                    d.sum.to_bits(),
                    d.avg.to_bits(),
                    d.k.clone(),
                    d.n.clone(),
                )
            }));
    }
    for v in want_series.values_mut().chain(got_series.values_mut()) {
        v.sort();
    }
    for v in want_sketches.values_mut().chain(got_sketches.values_mut()) {
        v.sort();
    }
    assert_eq!(got_series, want_series, "replayed series differ\n{stdout}");
    assert_eq!(
        got_sketches, want_sketches,
        "replayed sketches differ\n{stdout}"
    );
    let checks: Vec<_> = up
        .service_checks()
        .into_iter()
        .filter(|c| c.check == "e2e.replayed.check")
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(
        (checks[0].status, checks[0].message.as_deref()),
        (1, Some("degraded"))
    );
    assert!(up.violations().is_empty(), "{:?}", up.violations());
}
