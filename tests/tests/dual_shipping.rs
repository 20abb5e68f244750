//! Dual shipping (`DD_ADDITIONAL_ENDPOINTS`): the real `offpath` binary ships to two fake intakes, one
//! healthy and one that never answers. The healthy one gets everything while the other hangs; the
//! failing one's copy falls back to stdout as records naming it; the ledger is exact per destination
//! (`/status` and the shutdown line), and `offpath replay` re-sends the records to that destination alone.

use std::net::UdpSocket;
use std::time::Duration;

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::{Offpath, status};

const KEY_A: &str = "0123456789abcdef0123456789aaaaa1";
const KEY_B: &str = "0123456789abcdef0123456789bbbbb2";
/// Generous: closed 10 s buckets and a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);
/// 20 counts, 3 distribution values, one service check.
const POINTS: u64 = 24;

fn lines() -> Vec<String> {
    let mut lines: Vec<String> = (0..20)
        .map(|_| "dual.requests:1|c|#route:a".to_owned())
        .collect();
    for v in ["0.5", "1.5", "2.5"] {
        lines.push(format!("dual.latency:{v}|d|#route:a"));
    }
    lines.push("_sc|dual.check|1|#route:a".to_owned());
    lines
}

/// Everything of [`lines`] arrived at `intake`.
fn complete(intake: &FakeIntake) -> bool {
    // Counts travel as rates: value × interval is the DogStatsD count.
    let count: f64 = intake
        .series_tagged("dual.requests", &["route:a"])
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1 * s.interval as f64))
        .sum();
    let dist = intake
        .sketch_totals("dual.latency", &["route:a"])
        .map_or(0, |t| t.cnt);
    let checks = intake
        .service_checks()
        .iter()
        .filter(|c| c.check == "dual.check")
        .count();
    (count - 20.0).abs() < 1e-9 && dist == 3 && checks == 1
}

/// `name: delivered=… fell_back=… dropped=…` of `name` in the shutdown line.
fn destination_ledger(stderr: &str, name: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown summary in stderr:\n{stderr}"));
    let part = line
        .split("; ")
        .find_map(|p| p.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"));
    let field = |key: &str| -> u64 {
        part.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| {
                v.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {key} in {part:?}"))
    };
    (field("delivered="), field("fell_back="), field("dropped="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_falls_back_alone_while_the_healthy_one_gets_everything() {
    let healthy = FakeIntake::start(KEY_A).await;
    let failing = FakeIntake::start(KEY_B).await;
    failing.set_default_reply(Reply::Hang);
    let healthy_url = healthy.url();
    let failing_url = failing.url();
    let extra = format!(r#"{{"{failing_url}": ["{KEY_B}", "{KEY_B}"]}}"#);
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", KEY_A),
            ("DD_DD_URL", healthy_url.as_str()),
            ("DD_ADDITIONAL_ENDPOINTS", extra.as_str()),
            ("DD_HOSTNAME", "dual-host"),
            ("OFFPATH_FLUSH_INTERVAL", "1"),
            ("OFFPATH_FALLBACK", "stdout"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "4"),
        ],
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in lines() {
        socket.send_to(l.as_bytes(), offpath.udp.unwrap()).unwrap();
    }

    // The healthy intake gets everything while the other one hangs on every request.
    assert!(
        healthy.wait_until(DEADLINE, complete).await,
        "the healthy intake did not get everything: {}",
        status(&offpath)
    );
    // The intake stores a payload before offpath reads its answer: wait for the count.
    let wait_until = std::time::Instant::now() + DEADLINE;
    let mut s = status(&offpath);
    while s["destinations"][0]["delivered"] != POINTS {
        assert!(std::time::Instant::now() < wait_until, "{s}");
        std::thread::sleep(Duration::from_millis(20));
        s = status(&offpath);
    }
    let dests = s["destinations"]
        .as_array()
        .expect("destinations in /status");
    assert_eq!(dests.len(), 2, "{s}");
    let main_name = format!("{healthy_url}#aaaa1");
    let failing_name = format!("{failing_url}#bbbb2");
    assert_eq!(dests[0]["name"], main_name.as_str());
    assert_eq!(dests[1]["name"], failing_name.as_str());
    assert_eq!(dests[0]["delivered"], POINTS, "{s}");
    assert_eq!(dests[1]["delivered"], 0, "{s}");

    offpath.stop();
    let stderr = offpath.stderr();
    assert_eq!(
        destination_ledger(&stderr, &main_name),
        (POINTS, 0, 0),
        "{stderr}"
    );
    assert_eq!(
        destination_ledger(&stderr, &failing_name),
        (0, POINTS, 0),
        "{stderr}"
    );
    // The process ledger is the main destination's.
    let summary = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap();
    assert!(
        summary.contains(&format!(
            "points received={POINTS} delivered={POINTS} fell_back=0 dropped=0"
        )),
        "{summary}"
    );
    assert!(complete(&healthy));
    assert!(!complete(&failing));

    // Every record on stdout is the failing destination's copy, and says so.
    let records = offpath.stdout_json();
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r["dest"], failing_name.as_str(), "{r}");
    }

    // `offpath replay` re-sends them to that destination alone.
    failing.set_default_reply(Reply::Status(202));
    let healthy_before = healthy.requests().len();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    std::fs::write(&file, offpath.stdout()).unwrap();
    let out = std::process::Command::new(offpath_tests::support::binary("offpath"))
        .args(["replay", "--from-file"])
        .arg(&file)
        .env_clear()
        .env("DD_API_KEY", KEY_A)
        .env("DD_DD_URL", &healthy_url)
        .env("DD_ADDITIONAL_ENDPOINTS", &extra)
        .output()
        .expect("run offpath replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "offpath replay failed\n{stdout}\n{stderr}"
    );
    assert!(
        complete(&failing),
        "the failing destination did not get its data back\n{stdout}\n{stderr}"
    );
    assert_eq!(
        healthy.requests().len(),
        healthy_before,
        "replay sent to the healthy destination"
    );
    assert!(
        stdout.contains(&format!("{failing_name}: replay:")),
        "{stdout}"
    );
    assert!(
        failing.violations().is_empty(),
        "{:?}",
        failing.violations()
    );
}

/// A flush of `n` gauges named `name` (one point, one sample each).
fn flush_of(name: &str, n: usize) -> offpath::model::Flush {
    use offpath::model::{Flush, Series, SeriesKind};
    Flush {
        series: (0..n)
            .map(|i| Series {
                name: name.to_owned(),
                tags: vec![format!("i:{i}")],
                host: "fan-host".to_owned(),
                kind: SeriesKind::Gauge,
                interval: 0,
                points: vec![(1_700_000_000, i as f64)],
                samples: 1,
            })
            .collect(),
        ..Flush::default()
    }
}

/// Whether `intake` accepted a series named `name`.
fn got(intake: &FakeIntake, name: &str) -> bool {
    !intake.series(name).is_empty()
}

/// A destination that hangs, or answers 500, never holds up another: while its delivery waits (for
/// its answer, or its backoff), the healthy destination's intake already has the flush; at the next
/// flush, while it retries what it queued, the healthy one gets the new payloads; once it answers, it
/// gets every payload too, and each destination's ledger counts each of its copies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_failing_destination_never_holds_up_the_other() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use offpath::auth::{ApiKey, ApiKeySource};
    use offpath::config::{Endpoint, EndpointKey};
    use offpath::encode::Encoder;
    use offpath::forward::{Backoff, Deadline, Fanout, RetryPolicy};
    use offpath::telemetry::Telemetry;
    use offpath_tests::fake_intake::Answer;
    use tokio::time::Instant;

    const WAIT: Duration = Duration::from_secs(60);
    // A failed attempt waits 30 s before the next one, within the deadline: a delivery to the failing
    // destination lasts until its deadline is brought forward.
    let policy = RetryPolicy {
        backoff: Backoff {
            base: Duration::from_secs(30),
            max: Duration::from_secs(30),
        },
        breaker_threshold: 1_000,
        probe: Backoff {
            base: Duration::from_secs(600),
            max: Duration::from_secs(600),
        },
    };
    for failure in [Reply::Hang, Reply::Status(500)] {
        let healthy = FakeIntake::start(KEY_A).await;
        let failing = FakeIntake::start(KEY_B).await;
        failing.set_default_reply(failure);
        let mut cfg = offpath_tests::support::forward_config(&healthy.url(), KEY_A);
        cfg.endpoints = vec![
            Endpoint {
                url: healthy.url(),
                keys: vec![EndpointKey::Main],
            },
            Endpoint {
                url: failing.url(),
                keys: vec![EndpointKey::Additional(ApiKey::new(KEY_B))],
            },
        ];
        let telemetry = Arc::new(Telemetry::default());
        let (tx, mut fallback) = tokio::sync::mpsc::channel(64);
        let mut fanout = Fanout::build(
            &cfg,
            ApiKeySource::Fixed(ApiKey::new(KEY_A)),
            &telemetry,
            Some(&tx),
        )
        .unwrap()
        .with_retry_policy(policy);
        let enc = Encoder::new(1);

        for (round, name) in [(1, "fan.one"), (2, "fan.two")] {
            let payloads = enc.encode(&flush_of(name, 10)).unwrap();
            let (deadline, cut) = Deadline::movable(Instant::now() + WAIT);
            let delivery = fanout.deliver(payloads, deadline);
            tokio::pin!(delivery);
            // Both conditions are awaited while the delivery is polled (it drives the requests).
            let (healthy_first, reached) = tokio::select! {
                () = &mut delivery => (false, false),
                r = async {
                    let healthy_got = healthy.wait_until(WAIT, |i| got(i, name)).await;
                    // The failing destination is being tried meanwhile (flush 2: its queue first).
                    let reached = failing.wait_arrivals(round, WAIT).await;
                    // The intake storing the payload is not the client reading its answer: cutting the
                    // deadline in between would leave the healthy copy undelivered and queued for a
                    // retry (at least once), and the intake would get it twice. Wait for the count.
                    let counted = counted_delivered(&telemetry, 0, 10 * round as u64, WAIT).await;
                    (healthy_got && counted, reached)
                } => r,
            };
            assert!(
                healthy_first,
                "{failure:?}, flush {round}: the healthy intake did not get {name} while the other \
                 destination was failing"
            );
            assert!(reached, "{failure:?}: nothing reached the failing intake");
            cut.bring_forward(Instant::now());
            delivery.await;
        }
        let rows = telemetry.destinations();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].delivered.load(Relaxed), 20, "{failure:?}");
        assert_eq!(rows[1].delivered.load(Relaxed), 0, "{failure:?}");
        assert!(rows[1].retry_queue_bytes.load(Relaxed) > 0, "{failure:?}");
        assert!(!got(&failing, "fan.one"));
        if matches!(failure, Reply::Status(_)) {
            assert!(
                failing
                    .requests()
                    .iter()
                    .all(|r| r.answer == Answer::Status(500))
            );
        }

        // It answers again: its queue goes out, and every payload reached every destination once.
        failing.set_default_reply(Reply::Status(202));
        fanout.deliver(Vec::new(), Instant::now() + WAIT).await;
        assert!(
            got(&failing, "fan.one") && got(&failing, "fan.two"),
            "{failure:?}"
        );
        for (row, intake) in rows.iter().zip([&healthy, &failing]) {
            assert_eq!(
                row.delivered.load(Relaxed),
                20,
                "{failure:?} {}",
                row.summary()
            );
            assert_eq!(row.fell_back.load(Relaxed) + row.dropped_total(), 0);
            assert_eq!(row.retry_queue_bytes.load(Relaxed), 0);
            for name in ["fan.one", "fan.two"] {
                assert_eq!(intake.series(name).len(), 10, "{failure:?} {name}");
            }
            assert!(intake.violations().is_empty(), "{:?}", intake.violations());
            assert!(intake.requests().iter().all(|r| r.api_key_ok));
        }
        assert!(fallback.try_recv().is_err(), "nothing went to the fallback");
    }
}

/// Wait until destination `row` has counted at least `points` delivered, at most `wait`. The counter has
/// no notification, so it is read every 2 ms while the caller's delivery is polled beside this wait.
async fn counted_delivered(
    telemetry: &offpath::telemetry::Telemetry,
    row: usize,
    points: u64,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let rows = telemetry.destinations();
        if rows
            .get(row)
            .is_some_and(|r| r.delivered.load(std::sync::atomic::Ordering::Relaxed) >= points)
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Points in the stored payloads under `root` (every destination's directory).
fn stored_points(root: &std::path::Path) -> u64 {
    let mut total = 0;
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "oprq") {
                if let Ok(p) = std::fs::read(file.path()).map_err(|_| ()).and_then(|b| {
                    offpath::forward::store::format::decode(bytes::Bytes::from(b)).map_err(|_| ())
                }) {
                    total += p.samples;
                }
            }
        }
    }
    total
}

/// Poll `cond` every 20 ms until it holds; fail with `what` after [`DEADLINE`].
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With the retry storage on, each destination keeps its own directory: what the failing destination
/// had on disk when the process was killed goes, at the next start, to that destination alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_storage_sends_a_destinations_payloads_back_to_it_alone() {
    let healthy = FakeIntake::start(KEY_A).await;
    let failing = FakeIntake::start(KEY_B).await;
    failing.set_default_reply(Reply::Hang);
    let healthy_url = healthy.url();
    let extra = format!(r#"{{"{}": ["{KEY_B}"]}}"#, failing.url());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_str().unwrap().to_owned();
    let env = [
        ("DD_API_KEY", KEY_A),
        ("DD_DD_URL", healthy_url.as_str()),
        ("DD_ADDITIONAL_ENDPOINTS", extra.as_str()),
        ("DD_HOSTNAME", "dual-host"),
        // Every flush's hung request counts as a failure: after 5 in a row the hung destination's
        // breaker opens and its payloads leave the disk for the fallback. 5 s flushes leave some 25 s
        // to see its copies on disk, even on a loaded machine.
        ("OFFPATH_FLUSH_INTERVAL", "5"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
        // No fallback: what the hung destination did not deliver waits for it (in memory and on disk).
        ("OFFPATH_FALLBACK", "off"),
        ("DD_FORWARDER_TIMEOUT", "60"),
        ("DD_FORWARDER_STORAGE_PATH", dir.as_str()),
        ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "104857600"),
    ];
    let mut first = tokio::task::block_in_place(|| Offpath::start(&[], &env));
    tokio::task::block_in_place(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for l in lines() {
            socket.send_to(l.as_bytes(), first.udp.unwrap()).unwrap();
        }
        wait_for("the main destination's delivery", || {
            status(&first)["destinations"][0]["delivered"] == POINTS
        });
        // The failing destination's copies: on disk, in its own directory.
        wait_for("the failing destination's copies on disk", || {
            stored_points(root.path()) == POINTS
        });
    });
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);
    first.signal(libc::SIGKILL);
    tokio::task::block_in_place(|| first.wait());
    assert!(complete(&healthy));
    let healthy_requests = healthy.requests().len();

    failing.set_default_reply(Reply::Status(202));
    let mut second = tokio::task::block_in_place(|| Offpath::start(&[], &env));
    assert!(
        failing.wait_until(DEADLINE, complete).await,
        "the failing destination did not get its stored payloads"
    );
    tokio::task::block_in_place(|| {
        wait_for("the storage emptied", || stored_points(root.path()) == 0);
        wait_for("the count of the recovered delivery", || {
            status(&second)["destinations"][1]["delivered"] == POINTS
        });
        let s = status(&second);
        assert_eq!(s["destinations"][1]["recovered"], POINTS, "{s}");
        assert_eq!(s["destinations"][0]["recovered"], 0, "{s}");
        assert_eq!(s["destinations"][0]["delivered"], 0, "{s}");
        // The process ledger is the main destination's: nothing of it was recovered.
        assert_eq!(s["points"]["recovered"], 0, "{s}");
        assert_eq!(second.stop(), Some(0), "stderr:\n{}", second.stderr());
    });
    // The main destination got nothing again (exactly once: `complete` checks the sums).
    assert_eq!(healthy.requests().len(), healthy_requests);
    assert!(complete(&healthy) && complete(&failing));
    assert!(
        failing.violations().is_empty(),
        "{:?}",
        failing.violations()
    );
}
