//! Every value leaving offpath is finite: sums and rates that overflow `f64` (`x:1|c|@1e-320`, two
//! `1.79e308|c`) are dropped and counted as `non_finite` instead of reaching the intake as ±inf, the
//! stdout records of every format never carry `null`, and `offpath replay` reads back every record the
//! stdout fallback wrote.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use offpath_tests::fake_intake::FakeIntake;
use offpath_tests::support::{self, Offpath};
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(60);

/// Values that overflow once aggregated, one datagram each, and one ordinary point. Samples: 1 + 2 + 2
/// + 2 + 2 + 2 overflowing, 1 ordinary.
const LINES: &[&str] = &[
    "nf.tiny_rate:1|c|@1e-320",
    "nf.zero_tiny_rate:0|c|@1e-320",
    "nf.big:1.79e308|c",
    "nf.big:1.79e308|c",
    "nf.negative:-1.79e308|c",
    "nf.negative:-1.79e308|c",
    "nf.hist:1.79e308|h",
    "nf.hist:1.79e308|h",
    "nf.dist:1.79e308|d",
    "nf.dist:1.79e308|d",
    "nf.ok:1|c",
];
/// Samples whose aggregate overflows and that no other series carries (the histogram's samples travel
/// with its finite `.max`, only its `.avg` overflows).
const NON_FINITE_SAMPLES: u64 = 1 + 1 + 2 + 2 + 2;

fn send(offpath: &Offpath) {
    let udp = offpath.udp.expect("udp address");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in LINES {
        s.send_to(l.as_bytes(), udp).unwrap();
    }
}

fn wait_received(offpath: &Offpath, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = offpath.http_get("/status");
        let s: Value = serde_json::from_str(&body).unwrap();
        if s["points"]["received"].as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "not received: {s}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The shutdown ledger line: (received, delivered, fell_back, dropped, dropped.non_finite).
fn ledger(stderr: &str) -> (u64, u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no ledger line:\n{stderr}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map_or(0, |v| {
                v.trim_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap()
            })
    };
    (
        field("received="),
        field("delivered="),
        field("fell_back="),
        field("dropped="),
        field("dropped.non_finite="),
    )
}

/// Every JSON number in `v` as f64 (serde_json has no ±inf; `null` is reported as NaN).
fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Null => out.push(f64::NAN),
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        Value::Bool(_) | Value::String(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_sums_and_rates_never_reach_the_intake_and_are_counted_as_non_finite() {
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let mut offpath = tokio::task::block_in_place(|| {
        Offpath::start(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("OFFPATH_FLUSH_INTERVAL", "3600"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_FALLBACK", "stdout"),
            ],
        )
    });
    send(&offpath);
    tokio::task::block_in_place(|| wait_received(&offpath, LINES.len() as u64));
    let code = tokio::task::block_in_place(|| offpath.stop());
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "{stderr}");

    for s in intake.all_series() {
        for (ts, v) in &s.points {
            assert!(
                v.is_finite(),
                "{} {:?} reached the intake with {v} at {ts}",
                s.metric,
                s.tags
            );
        }
    }
    for s in intake.all_sketches() {
        for d in &s.dogsketches {
            for (what, v) in [
                ("min", d.min),
                ("max", d.max),
                ("sum", d.sum),
                ("avg", d.avg),
            ] {
                assert!(v.is_finite(), "{} sketch {what} = {v}", s.metric);
            }
        }
    }
    assert_eq!(
        intake.points("nf.ok", &[]),
        [(intake.points("nf.ok", &[])[0].0, 0.1)]
    );
    assert_eq!(
        intake.series("nf.hist.max").len(),
        1,
        "the finite aggregates still go"
    );
    let (received, delivered, fell_back, dropped, non_finite) = ledger(&stderr);
    assert_eq!(received, LINES.len() as u64);
    assert_eq!(received, delivered + fell_back + dropped, "{stderr}");
    assert_eq!(non_finite, NON_FINITE_SAMPLES, "{stderr}");
    assert!(offpath.stdout().is_empty(), "nothing fell back");
}

/// Local mode with `format`: run, send, stop; returns (stdout, stderr).
fn local_run(format: &str) -> (String, String) {
    let mut offpath = Offpath::start(
        &[],
        &[
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_FALLBACK_FORMAT", format),
        ],
    );
    send(&offpath);
    wait_received(&offpath, LINES.len() as u64);
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    (offpath.stdout(), offpath.stderr())
}

#[test]
fn local_mode_records_of_every_format_hold_only_finite_numbers_and_the_ledger_balances() {
    for format in ["offpath", "forwarder", "emf"] {
        let (stdout, stderr) = local_run(format);
        assert!(!stdout.trim().is_empty(), "{format}: nothing written");
        for line in stdout.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{format}: not JSON ({e}): {line}"));
            let mut nums = Vec::new();
            numbers(&v, &mut nums);
            assert!(
                nums.iter().all(|n| n.is_finite()),
                "{format}: a record carries null or a non-finite number: {line}"
            );
        }
        let (received, delivered, fell_back, dropped, non_finite) = ledger(&stderr);
        assert_eq!(
            received,
            delivered + fell_back + dropped,
            "{format}: {stderr}"
        );
        assert!(non_finite >= NON_FINITE_SAMPLES, "{format}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offpath_replay_reads_back_every_record_local_mode_wrote() {
    let (stdout, _) = tokio::task::block_in_place(|| local_run("offpath"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    std::fs::write(&file, &stdout).unwrap();

    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let out = tokio::task::block_in_place(|| {
        Command::new(support::binary("offpath"))
            .args(["replay", "--from-file", file.to_str().unwrap()])
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .env("DD_API_KEY", KEY)
            .env("DD_DD_URL", &url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("invalid=0"),
        "replay met a record offpath wrote and could not read: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
}
