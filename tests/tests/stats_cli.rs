//! `offpath stats` against a live offpath: one metric name takes more than a quarter of the context limit
//! (and is warned about), another stays small; the view, as JSON and as a table, lists them largest
//! first with the limit, and `--watch` redraws.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use offpath_tests::support;
use serde_json::Value;

fn stats(status: &str, args: &[&str]) -> String {
    let out = Command::new(support::binary("offpath"))
        .args(["stats", "--addr", status])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "offpath stats {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn offpath_stats_shows_the_metric_names_with_the_most_contexts() {
    let offpath = support::Offpath::start(
        &[],
        &[
            ("DD_AGGREGATE_CONTEXT_LIMIT", "100"),
            ("OFFPATH_FLUSH_INTERVAL", "1"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "off"),
        ],
    );
    let udp = offpath.udp.unwrap();
    let status = offpath.status.unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 30 contexts for one name (over a quarter of 100), 2 for another; then 80 more for a third name,
    // of which only 68 fit under the limit.
    let send = |lines: Vec<String>| {
        for chunk in lines.chunks(20) {
            socket.send_to(chunk.join("\n").as_bytes(), udp).unwrap();
        }
    };
    let mut first: Vec<String> = (0..30)
        .map(|i| format!("big.metric:1|c|#user:{i}"))
        .collect();
    first.extend((0..2).map(|i| format!("small.metric:{i}|g|#shard:{i}")));
    send(first);
    // The late name comes once the view shows the first two (published at each flush, every second
    // here): the warning is then about big.metric, and later ones are rate-limited.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = serde_json::from_str(&stats(&status, &["--json"])).unwrap();
        if v["live"] == 32 && v["metrics"][0]["contexts"] == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view never showed the first 32 contexts: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send(
        (0..80)
            .map(|i| format!("late.metric:1|c|#id:{i}"))
            .collect(),
    );

    // Readiness: the view is published at each flush (every second here).
    let deadline = Instant::now() + Duration::from_secs(60);
    let view: Value = loop {
        let v: Value = serde_json::from_str(&stats(&status, &["--json", "--top", "2"])).unwrap();
        if v["live"] == 100 && v["metrics"][0]["dropped"].as_u64() == Some(12) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the view never showed 100 live contexts: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(view["limit"], 100, "{view}");
    let metrics = view["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "--top 2: {view}");
    assert_eq!(metrics[0]["name"], "late.metric", "{view}");
    assert_eq!(metrics[0]["contexts"], 68, "{view}");
    assert_eq!(metrics[1]["name"], "big.metric", "{view}");
    assert_eq!(metrics[1]["contexts"], 30, "{view}");
    assert!(metrics[1]["points_per_second"].as_f64().is_some(), "{view}");

    let table = stats(&status, &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("live contexts 100 of 100"), "{table}");
    assert!(
        lines[3].starts_with("late.metric") && lines[3].contains("68"),
        "{table}"
    );
    assert!(
        lines[4].starts_with("big.metric") && lines[4].contains("30"),
        "{table}"
    );
    assert!(lines[5].starts_with("small.metric"), "{table}");

    let watched = stats(&status, &["--watch", "--interval", "1", "--count", "2"]);
    assert_eq!(watched.matches("\x1b[2J").count(), 2, "{watched}");
    assert_eq!(watched.matches("live contexts").count(), 2, "{watched}");

    let stderr = offpath.stderr();
    assert!(
        stderr.contains("more than a quarter of the context limit")
            && stderr.contains("big.metric"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("more than a quarter").count(),
        1,
        "one warning in five minutes: {stderr}"
    );
}
