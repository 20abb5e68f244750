//! With no API key, offpath writes every flush to stdout as offpath records; SIGTERM flushes the open
//! bucket too. A real statsd client library (cadence) sends the workload over UDP and a Unix socket.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;

use cadence::prelude::*;
use cadence::{StatsdClient, UdpMetricSink, UnixMetricSink};
use offpath_tests::support::Offpath;
use serde_json::Value;

fn records<'a>(all: &'a [Value], kind: &str, metric: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|r| {
            r["kind"] == kind
                && (r["metric"] == metric || r["check"] == metric || r["title"] == metric)
        })
        .collect()
}

fn points_sum(recs: &[&Value]) -> f64 {
    recs.iter()
        .flat_map(|r| r["points"].as_array().unwrap().iter())
        .map(|p| p[1].as_f64().unwrap())
        .sum()
}

#[test]
fn a_statsd_workload_over_udp_and_a_unix_socket_is_printed_as_exact_records_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dsd.socket");
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_SOCKET", sock.to_str().unwrap()),
            ("DD_TAGS", "team:core"),
            ("DD_ENV", "test"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
        ],
    );
    let udp = offpath.udp.expect("udp address");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = UdpMetricSink::from(udp, socket).unwrap();
    let client = StatsdClient::from_sink("e2e", sink);
    for _ in 0..5 {
        client
            .count_with_tags("requests", 2)
            .with_tag("route", "/a")
            .send();
    }
    client.gauge_with_tags("temperature", 20.0).send();
    client.gauge_with_tags("temperature", 21.5).send();
    for member in [1i64, 2, 1, 3] {
        client.set_with_tags("users", member).send();
    }
    for v in [1u64, 2, 3, 4, 100] {
        client.histogram_with_tags("latency", v).send();
    }
    for v in [0.5f64, 1.5, 2.5] {
        client
            .distribution_with_tags("payload", v)
            .with_tag("kind", "json")
            .send();
    }

    let uds = UnixDatagram::unbound().unwrap();
    let uds_client = StatsdClient::from_sink("e2e", UnixMetricSink::from(&sock, uds));
    for _ in 0..3 {
        uds_client.count_with_tags("uds.requests", 1).send();
    }

    // An event and a service check exactly as the Python `datadog` client sends them.
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.send_to(
        b"_e{15,24}:Deploy finished|line1\\nline2 with | pipe|h:h1|k:agg|p:low|s:my_apps|t:success|#ev:1",
        udp,
    )
    .unwrap();
    raw.send_to(b"_sc|e2e.db|2|h:db1|#shard:1|m:connection refused", udp)
        .unwrap();
    // The last datagram acts as a marker: once it is counted, everything before it was read.
    raw.send_to(b"e2e.marker:1|c", udp).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = offpath.http_get("/status");
        let status: Value = serde_json::from_str(&body).unwrap();
        // 5 counts, 2 gauges, 4 set members, 5 histogram values, 3 distribution values,
        // 3 counts over the Unix socket, 1 event, 1 service check, 1 marker.
        let expected = 5 + 2 + 4 + 5 + 3 + 3 + 1 + 1 + 1;
        if status["points"]["received"].as_u64().unwrap_or(0) >= expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "offpath did not receive the workload: {body}"
        );
        std::thread::yield_now();
    }

    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let all = offpath.stdout_json();
    let global = |tags: &Value| {
        let t: Vec<&str> = tags
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            t.contains(&"team:core") && t.contains(&"env:test"),
            "global tags missing: {t:?}"
        );
    };

    let counts = records(&all, "series", "e2e.requests");
    assert!(!counts.is_empty(), "no e2e.requests in {all:?}");
    for r in &counts {
        assert_eq!(r["type"], "rate");
        assert_eq!(r["interval"], 10);
        global(&r["tags"]);
        assert!(
            r["tags"]
                .as_array()
                .unwrap()
                .contains(&Value::from("route:/a"))
        );
    }
    assert!((points_sum(&counts) * 10.0 - 10.0).abs() < 1e-9);
    assert!((points_sum(&records(&all, "series", "e2e.uds.requests")) * 10.0 - 3.0).abs() < 1e-9);

    let gauge = records(&all, "series", "e2e.temperature");
    let last = gauge.last().unwrap()["points"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()[1]
        .as_f64();
    assert_eq!(last, Some(21.5));
    assert_eq!(gauge[0]["type"], "gauge");
    assert!(
        gauge[0].get("interval").is_none(),
        "gauges carry no interval"
    );

    let users = records(&all, "series", "e2e.users");
    assert_eq!(points_sum(&users), 3.0, "three distinct members");

    let max = records(&all, "series", "e2e.latency.max");
    assert_eq!(max.last().unwrap()["points"][0][1].as_f64(), Some(100.0));
    assert!((points_sum(&records(&all, "series", "e2e.latency.count")) * 10.0 - 5.0).abs() < 1e-9);
    assert!(!records(&all, "series", "e2e.latency.avg").is_empty());
    assert!(!records(&all, "series", "e2e.latency.median").is_empty());
    assert!(!records(&all, "series", "e2e.latency.95percentile").is_empty());

    let sketches = records(&all, "sketch", "e2e.payload");
    let buckets: Vec<&Value> = sketches
        .iter()
        .flat_map(|r| r["sketches"].as_array().unwrap().iter())
        .collect();
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["cnt"].as_i64().unwrap())
            .sum::<i64>(),
        3
    );
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["sum"].as_f64().unwrap())
            .sum::<f64>(),
        4.5
    );
    let min = buckets
        .iter()
        .map(|b| b["min"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    let max = buckets
        .iter()
        .map(|b| b["max"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((min, max), (0.5, 2.5));

    let events = records(&all, "event", "Deploy finished");
    assert_eq!(events.len(), 1, "{all:?}");
    let e = events[0];
    assert_eq!(e["text"], "line1\nline2 with | pipe");
    assert_eq!(e["priority"], "low");
    assert_eq!(e["alert_type"], "success");
    assert_eq!(e["aggregation_key"], "agg");
    assert_eq!(e["source_type_name"], "my_apps");
    assert_eq!(e["host"], "h1");
    assert!(e["tags"].as_array().unwrap().contains(&Value::from("ev:1")));

    let checks = records(&all, "service_check", "e2e.db");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["status"], 2);
    assert_eq!(checks[0]["message"], "connection refused");
    assert_eq!(checks[0]["host"], "db1");
}

/// The count of one `dropped.<reason>=N` field of the shutdown summary (0 when absent).
fn summary_dropped(stderr: &str, reason: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown summary in stderr:\n{stderr}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("dropped.{reason}=")))
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn with_the_fallback_off_local_mode_counts_its_points_as_fallback_off_and_empty_histograms_apart() {
    let mut offpath = Offpath::start(
        &[],
        &[
            ("OFFPATH_FALLBACK", "off"),
            ("DD_HISTOGRAM_AGGREGATES", "[]"),
            ("DD_HISTOGRAM_PERCENTILES", "[]"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
        ],
    );
    let udp = offpath.udp.expect("udp address");
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.send_to(b"e2e.count:1|c\ne2e.gauge:2|g\ne2e.latency:3:4|ms", udp)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = offpath.http_get("/status");
        let status: Value = serde_json::from_str(&body).unwrap();
        if status["points"]["received"].as_u64().unwrap_or(0) >= 4 {
            assert_eq!(
                status["points"]["dropped"]["histogram_no_output"], 2,
                "{body}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not received: {body}");
        std::thread::yield_now();
    }
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let stderr = offpath.stderr();
    assert!(
        stderr.contains("points received=4 delivered=0 fell_back=0 dropped=4"),
        "{stderr}"
    );
    assert_eq!(summary_dropped(&stderr, "fallback_off"), 2, "{stderr}");
    assert_eq!(
        summary_dropped(&stderr, "histogram_no_output"),
        2,
        "{stderr}"
    );
    assert_eq!(
        summary_dropped(&stderr, "retry_queue_overflow"),
        0,
        "{stderr}"
    );
    assert!(
        stderr.contains("DD_HISTOGRAM_PERCENTILES"),
        "the startup warning names both keys"
    );
    assert!(offpath.stdout_json().is_empty());
}
