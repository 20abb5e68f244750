//! The load generator against the real binary and the fake intake: what the generator says it sent is
//! exactly what reaches the intake — count values, histogram counts, distribution sample counts, and
//! contexts — once SIGTERM has flushed everything.

use std::process::Command;

use offpath_proto::metric_payload::MetricType;
use offpath_tests::fake_intake::FakeIntake;
use offpath_tests::support::Offpath;
use serde_json::Value;

const API_KEY: &str = "0123456789abcdef0123456789abcdef";

fn sum_of_rates(intake: &FakeIntake, prefix: &str, suffix: &str) -> f64 {
    intake
        .all_series()
        .iter()
        .filter(|s| s.metric.starts_with(prefix) && s.metric.ends_with(suffix))
        .map(|s| {
            assert_eq!(s.metric_type, MetricType::Rate, "{}", s.metric);
            s.points
                .iter()
                .map(|(_, v)| v * s.interval as f64)
                .sum::<f64>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_the_generator_sends_over_a_unix_socket_reaches_the_intake() {
    let intake = FakeIntake::start(API_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dsd.sock");
    let url = intake.url();
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", API_KEY),
            ("DD_DD_URL", &url),
            ("DD_DOGSTATSD_SOCKET", sock.to_str().unwrap()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "off"),
        ],
    );
    // 20,000 lines in 8 KiB packets are fewer packets than offpath's queue holds, and the Unix datagram
    // socket blocks the sender when full: nothing can be lost, however slow the machine is.
    let out = tokio::task::spawn_blocking({
        let sock = sock.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_offpath-loadgen"))
                .args([
                    "--transport",
                    "unixgram",
                    "--socket",
                    sock.to_str().unwrap(),
                ])
                .args([
                    "--lines",
                    "20000",
                    "--packet",
                    "8k",
                    "--contexts",
                    "500",
                    "--threads",
                    "2",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lines"], 20_000);

    let code = tokio::task::spawn_blocking(move || {
        let code = offpath.stop();
        (code, offpath.stderr())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1);

    let by_type = &report["lines_by_type"];
    let sent = |t: &str| by_type[t].as_u64().unwrap() as f64;
    assert_eq!(sum_of_rates(&intake, "loadgen.count.", ""), sent("count"));
    assert_eq!(
        sum_of_rates(&intake, "loadgen.histogram.", ".count"),
        sent("histogram")
    );
    let sketch_count: i64 = (0..500)
        .filter_map(|n| intake.sketch_totals(&format!("loadgen.distribution.m{n}"), &[]))
        .map(|t| t.cnt)
        .sum();
    assert_eq!(sketch_count as f64, sent("distribution"));
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    assert!(
        code.1.contains("points received=20000 delivered=20000"),
        "the ledger balances: {}",
        code.1
    );
}
