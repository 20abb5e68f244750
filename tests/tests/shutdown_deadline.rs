//! The real `offpath` binary at the edges of its life: SIGTERM while nobody reads its stdout (a stuck
//! log shipper) exits within `OFFPATH_SHUTDOWN_TIMEOUT` with a balanced ledger and `/health` says why
//! before; the intake's cause in the log line when the circuit breaker opens; offpath's own counters
//! shipped once when a flush and the shutdown fall in the same second.
//!
//! Waits are conditions (the fake intake's `wait_until`, stderr polls with a deadline); no timed
//! assertions.

use std::collections::BTreeMap;
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

/// `OFFPATH_SHUTDOWN_TIMEOUT` of the blocked-stdout tests, seconds.
const SHUTDOWN_TIMEOUT: u64 = 2;
/// Contexts per burst: their records (about 100 bytes each) are far more than a pipe holds (64 KiB).
const CONTEXTS: usize = 20_000;

/// `n` count lines named `<prefix>.m<i>`, packed into datagrams of at most 8 KB.
fn send_burst(offpath: &Offpath, prefix: &str, n: usize) {
    let udp = offpath.udp.expect("udp address");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = String::new();
    for i in 0..n {
        let line = format!("{prefix}.m{i}:1|c\n");
        if datagram.len() + line.len() > 8000 {
            s.send_to(datagram.as_bytes(), udp).unwrap();
            datagram.clear();
        }
        datagram.push_str(&line);
    }
    if !datagram.is_empty() {
        s.send_to(datagram.as_bytes(), udp).unwrap();
    }
}

fn received(offpath: &Offpath) -> u64 {
    let (_, body) = offpath.http_get("/status");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    s["points"]["received"].as_u64().unwrap_or(0)
}

/// Send `CONTEXTS` contexts (again when UDP lost some) until `received` reaches `want`.
fn send_until_received(offpath: &Offpath, prefix: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        send_burst(offpath, prefix, CONTEXTS);
        let resend_at = Instant::now() + Duration::from_secs(3);
        while Instant::now() < resend_at {
            if received(offpath) >= want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "received {} < {want}",
            received(offpath)
        );
    }
}

/// Poll `/health` until it answers 503 with a reason containing `needle`; returns the reason.
fn wait_unhealthy(offpath: &Offpath, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = offpath.http_get("/health");
        if code == 503 && body.contains(needle) {
            return body.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "/health never said {needle:?}: {code} {body}\nstderr:\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then wait for the exit; SIGKILL and fail if it takes longer than `limit`.
fn sigterm_and_wait(offpath: &mut Offpath, limit: Duration) -> (Option<i32>, Duration) {
    let pid = offpath.pid();
    let start = Instant::now();
    offpath.signal(libc::SIGTERM);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on the child we started; it has not been reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    });
    let code = offpath.wait();
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    assert!(
        elapsed < limit,
        "offpath did not exit within {limit:?} of SIGTERM (killed); stderr:\n{}",
        offpath.stderr()
    );
    (code, elapsed)
}

/// The shutdown ledger: the four totals and the drops by reason.
fn ledger(stderr: &str) -> (u64, u64, u64, u64, BTreeMap<String, u64>) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown ledger line:\n{stderr}"));
    let mut totals = BTreeMap::new();
    for w in line.split_whitespace() {
        if let Some((k, v)) = w.split_once('=')
            && let Ok(n) = v.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>()
        {
            totals.insert(k.to_owned(), n);
        }
    }
    let get = |k: &str| totals.get(k).copied().unwrap_or(0);
    let by_reason = totals
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("dropped.").map(|r| (r.to_owned(), *v)))
        .collect();
    (
        get("received"),
        get("delivered"),
        get("fell_back"),
        get("dropped"),
        by_reason,
    )
}

/// A stuck sink, records pending, SIGTERM: the exit comes within the shutdown timeout (plus the
/// process's own stop), and the ledger balances with what missed the deadline counted as
/// `shutdown_deadline`. With `stdout`, `/health` said why beforehand. Returns the time from SIGTERM to
/// exit.
fn blocked_sink_shutdown(offpath: &mut Offpath, stdout: bool) -> Duration {
    send_until_received(offpath, "blocked.a", CONTEXTS as u64);
    if stdout {
        let reason = wait_unhealthy(offpath, "stdout");
        assert!(reason.contains("blocked"), "{reason}");
    } else {
        wait_log_line(offpath, "circuit breaker open");
    }
    // Records pending behind the stuck ones.
    let before = received(offpath);
    send_until_received(offpath, "blocked.b", before + CONTEXTS as u64);
    let limit = Duration::from_secs(SHUTDOWN_TIMEOUT + 8);
    let (code, elapsed) = sigterm_and_wait(offpath, limit);
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "{stderr}");
    let (received, delivered, fell_back, dropped, by_reason) = ledger(&stderr);
    assert!(received >= 2 * CONTEXTS as u64, "{stderr}");
    assert_eq!(
        received,
        delivered + fell_back + dropped,
        "the ledger does not balance: {by_reason:?}\n{stderr}"
    );
    assert!(
        by_reason.get("shutdown_deadline").copied().unwrap_or(0) > 0,
        "nothing counted as shutdown_deadline: {by_reason:?}"
    );
    eprintln!(
        "SIGTERM to exit with a blocked sink (stdout: {stdout}): {elapsed:?} (OFFPATH_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}); \
         received={received} delivered={delivered} fell_back={fell_back} dropped={dropped} {by_reason:?}"
    );
    elapsed
}

#[test]
fn local_mode_with_a_stdout_nobody_reads_exits_within_the_shutdown_timeout_and_the_ledger_balances()
{
    let timeout = SHUTDOWN_TIMEOUT.to_string();
    let mut offpath = Offpath::start_unread_stdout(
        &[],
        &[
            ("OFFPATH_FLUSH_INTERVAL", "1"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", &timeout),
        ],
    );
    blocked_sink_shutdown(&mut offpath, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_key_a_down_intake_and_a_stdout_nobody_reads_sigterm_exits_within_the_shutdown_timeout()
 {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(503));
    let url = intake.url();
    let timeout = SHUTDOWN_TIMEOUT.to_string();
    tokio::task::block_in_place(|| {
        let mut offpath = Offpath::start_unread_stdout(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("OFFPATH_FLUSH_INTERVAL", "1"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_FALLBACK", "stdout"),
                ("OFFPATH_SHUTDOWN_TIMEOUT", &timeout),
            ],
        );
        blocked_sink_shutdown(&mut offpath, true);
    });
}

/// Accepts connections and never answers: a CloudWatch Logs endpoint that hangs.
fn hanging_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_down_intake_and_a_hanging_cloudwatch_sigterm_exits_within_the_shutdown_timeout() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Status(503));
    let url = intake.url();
    let cloudwatch = hanging_endpoint();
    let timeout = SHUTDOWN_TIMEOUT.to_string();
    tokio::task::block_in_place(|| {
        let mut offpath = Offpath::start(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("OFFPATH_FLUSH_INTERVAL", "1"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_FALLBACK", "cloudwatch"),
                ("OFFPATH_FALLBACK_LOG_GROUP", "/offpath/hang"),
                ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &cloudwatch),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("OFFPATH_SHUTDOWN_TIMEOUT", &timeout),
            ],
        );
        blocked_sink_shutdown(&mut offpath, false);
    });
}
