//! Dual shipping (`DD_ADDITIONAL_ENDPOINTS`): the real `offpath` binary ships to two fake intakes, one
//! healthy and one that never answers. The healthy one gets everything while the other hangs; the
//! failing one's copy falls back to stdout as records naming it; the ledger is exact per destination
//! (`/status` and the shutdown line), and `offpath replay` re-sends the records to that destination alone.

use std::net::UdpSocket;
use std::time::Duration;

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::Offpath;
use serde_json::Value;

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

fn status(offpath: &Offpath) -> Value {
    let (code, body) = offpath.http_get("/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
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
    let s = status(&offpath);
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
