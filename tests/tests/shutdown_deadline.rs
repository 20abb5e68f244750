//! The real `offpath` binary at the edges of its life: the intake's cause in the log line when the
//! circuit breaker opens, and offpath's own counters shipped once when a flush and the shutdown fall
//! in the same second.
//!
//! Waits are conditions (the fake intake's `wait_until`, stderr polls with a deadline); no timed
//! assertions.

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::Offpath;

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Upper bound of every condition wait (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(60);

/// Send `lines` as one UDP datagram each.
fn send(offpath: &Offpath, lines: &[&str]) {
    let udp = offpath.udp.expect("udp address");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in lines {
        s.send_to(l.as_bytes(), udp).unwrap();
    }
}

/// Poll stderr until a line contains `needle`; returns that line.
fn wait_log_line(offpath: &Offpath, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = offpath.stderr().lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}; stderr:\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nobody listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn the_breaker_open_line_names_the_connection_error_of_an_unreachable_intake() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", &url),
            ("OFFPATH_FLUSH_INTERVAL", "1"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "stdout"),
        ],
    );
    send(&offpath, &["breaker.cause:1|c"]);
    let line = wait_log_line(&offpath, "circuit breaker open");
    assert!(
        line.to_lowercase().contains("connection refused"),
        "the breaker line does not say why: {line}"
    );
    offpath.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_open_line_names_the_http_status_the_intake_answered() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(503));
    let url = intake.url();
    let mut offpath = tokio::task::block_in_place(|| {
        Offpath::start(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("OFFPATH_FLUSH_INTERVAL", "1"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_FALLBACK", "stdout"),
            ],
        )
    });
    send(&offpath, &["breaker.cause:1|c"]);
    let line = tokio::task::block_in_place(|| wait_log_line(&offpath, "circuit breaker open"));
    assert!(
        line.contains("503"),
        "the breaker line does not carry the intake's answer: {line}"
    );
    tokio::task::block_in_place(|| offpath.stop());
}

/// Sum and timestamps of `offpath.points_received` as the intake got it.
fn self_received(intake: &FakeIntake) -> Vec<(i64, f64)> {
    let mut points: Vec<(i64, f64)> = intake
        .series("offpath.points_received")
        .iter()
        .flat_map(|s| s.points.clone())
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_in_the_second_of_a_flush_ships_each_self_telemetry_count_once_per_timestamp() {
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let mut offpath = tokio::task::block_in_place(|| {
        Offpath::start(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("OFFPATH_FLUSH_INTERVAL", "1"),
                ("OFFPATH_SELF_TELEMETRY", "true"),
            ],
        )
    });
    send(&offpath, &["selftel.a:1|c"]);
    // The first flush that carries the point: its self-telemetry counts it.
    assert!(
        intake
            .wait_until(WAIT, |i| self_received(i).iter().any(|p| p.1 >= 1.0))
            .await
    );
    // More points, then SIGTERM right after the next periodic flush, in the same second.
    send(&offpath, &["selftel.a:1|c", "selftel.a:1|c"]);
    let flushes = self_received(&intake).len();
    assert!(
        intake
            .wait_until(WAIT, |i| self_received(i).len() > flushes)
            .await
    );
    let code = tokio::task::block_in_place(|| offpath.stop());
    assert_eq!(code, Some(0), "{}", offpath.stderr());

    let points = self_received(&intake);
    let mut stamps: Vec<i64> = points.iter().map(|p| p.0).collect();
    stamps.dedup();
    assert_eq!(
        stamps.len(),
        points.len(),
        "two offpath.points_received points share a timestamp (the intake keeps only the last): {points:?}"
    );
    let total: f64 = points.iter().map(|p| p.1).sum();
    assert_eq!(total, 3.0, "{points:?}");
}
