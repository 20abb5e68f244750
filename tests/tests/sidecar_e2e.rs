//! The `offpath` sidecar binary as an operator runs it: a config file under environment overrides,
//! invalid configuration, `offpath check` against the fake intake, SIGTERM under load, a second signal
//! during a stuck shutdown, `/health` and `/status`, and the API key never being printed.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::{Offpath, run_once, status, wait_status};
use serde_json::Value;

/// A distinctive API key: if any output contains it, it leaked.
const SECRET_KEY: &str = "0ff9a7e2e5ec2e7k3y7b1d4c8a9f6e0d";

/// The fake intake needs a runtime to serve; the tests themselves are plain blocking code.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn received(s: &Value) -> u64 {
    s["points"]["received"].as_u64().unwrap()
}

/// Wait until the process exits; SIGKILL it and fail if it takes longer than `limit`.
fn wait_within(offpath: &mut Offpath, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    let pid = offpath.pid();
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
        "offpath did not exit within {limit:?} (killed); stderr:\n{}",
        offpath.stderr()
    );
    (code, elapsed)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("offpath.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn tags(record: &Value) -> Vec<String> {
    record["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// The `points received=.. delivered=.. fell_back=.. dropped=..` summary logged at shutdown.
fn summary(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown summary in stderr:\n{stderr}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (
        field("received="),
        field("delivered="),
        field("fell_back="),
        field("dropped="),
    )
}

fn assert_no_secret(what: &str, haystack: &str) {
    assert!(
        !haystack.contains(SECRET_KEY),
        "the API key appears in {what}:\n{haystack}"
    );
}

#[test]
fn a_config_file_is_read_and_environment_variables_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "\
dogstatsd_port: 8125
dogstatsd_tags:
  - from:file
tags: team:file
env: fromfile
histogram_aggregates: [max]
offpath:
  flush_interval: 3600
  self_telemetry: false
",
    );
    let mut offpath = Offpath::start(
        &["run", "--config", &config],
        &[("DD_DOGSTATSD_TAGS", "from:env"), ("DD_ENV", "fromenv")],
    );
    // DD_DOGSTATSD_PORT=__random__ (set by the harness) wins over `dogstatsd_port: 8125`.
    let udp = offpath.udp.expect("udp address");
    assert_ne!(udp.port(), 8125);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"cfg.count:3|c", udp).unwrap();
    client.send_to(b"cfg.hist:7|h", udp).unwrap();
    wait_status(&offpath, "2 points received", |s| received(s) >= 2);
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());

    let all = offpath.stdout_json();
    let count = all
        .iter()
        .find(|r| r["metric"] == "cfg.count")
        .unwrap_or_else(|| panic!("no cfg.count record in {all:?}"));
    let t = tags(count);
    assert!(t.contains(&"from:env".to_owned()), "{t:?}");
    assert!(!t.contains(&"from:file".to_owned()), "{t:?}");
    assert!(t.contains(&"team:file".to_owned()), "{t:?}");
    assert!(t.contains(&"env:fromenv".to_owned()), "{t:?}");
    assert!(!t.contains(&"env:fromfile".to_owned()), "{t:?}");
    // `histogram_aggregates: [max]` from the file (no environment override): only .max and the
    // default percentile.
    let names: Vec<&str> = all.iter().filter_map(|r| r["metric"].as_str()).collect();
    assert!(names.contains(&"cfg.hist.max"), "{names:?}");
    assert!(!names.contains(&"cfg.hist.avg"), "{names:?}");
    assert!(!names.contains(&"cfg.hist.count"), "{names:?}");
}

#[test]
fn an_invalid_environment_value_exits_non_zero_naming_the_key() {
    let out = run_once(
        &["run"],
        &[
            ("DD_DOGSTATSD_PORT", "eighty"),
            ("OFFPATH_STATUS_ADDR", ""),
            ("DD_API_KEY", SECRET_KEY),
        ],
    );
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(out.status.code().is_some(), "killed by a signal: {all}");
    assert!(all.contains("DD_DOGSTATSD_PORT"), "{all}");
    assert!(all.contains("eighty"), "{all}");
    assert_no_secret("the configuration error", &all);

    let out = run_once(
        &["run"],
        &[
            ("DD_DOGSTATSD_PORT", "__random__"),
            ("OFFPATH_STATUS_ADDR", ""),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "-3"),
        ],
    );
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("OFFPATH_SHUTDOWN_TIMEOUT"), "{all}");
}

#[test]
fn an_invalid_config_file_value_exits_non_zero_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("api_key: {SECRET_KEY}\ndogstatsd_queue_size: lots\n"),
    );
    let out = run_once(
        &["run", "--config", &config],
        &[
            ("DD_DOGSTATSD_PORT", "__random__"),
            ("OFFPATH_STATUS_ADDR", ""),
        ],
    );
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(out.status.code().is_some(), "killed by a signal: {all}");
    assert!(all.contains("dogstatsd_queue_size"), "{all}");
    assert!(all.contains("offpath.yaml"), "names the file: {all}");
    assert_no_secret("the configuration error", &all);

    // A value of the wrong shape in the offpath section.
    let config = write_config(dir.path(), "offpath:\n  flush_interval: [1, 2]\n");
    let out = run_once(
        &["run", "--config", &config],
        &[
            ("DD_DOGSTATSD_PORT", "__random__"),
            ("OFFPATH_STATUS_ADDR", ""),
        ],
    );
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("flush_interval"), "{all}");

    // A file that does not exist.
    let missing = dir.path().join("missing.yaml");
    let out = run_once(
        &["run", "--config", missing.to_str().unwrap()],
        &[
            ("DD_DOGSTATSD_PORT", "__random__"),
            ("OFFPATH_STATUS_ADDR", ""),
        ],
    );
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("missing.yaml"), "{all}");
}

#[test]
fn check_passes_with_a_valid_key_and_fails_with_a_rejected_key_or_an_unreachable_intake() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    let url = intake.url();

    let ok = run_once(
        &["check"],
        &[("DD_API_KEY", SECRET_KEY), ("DD_DD_URL", &url)],
    );
    let all = text(&ok);
    assert_eq!(ok.status.code(), Some(0), "{all}");
    assert!(all.contains("api key"), "{all}");
    assert!(all.contains("all checks passed"), "{all}");
    assert_no_secret("offpath check (valid key)", &all);
    assert_eq!(intake.requests_to("/api/v1/validate").len(), 1);
    assert!(intake.requests_to("/api/v1/validate")[0].api_key_ok);

    // The intake knows another key: 403.
    let other = rt.block_on(FakeIntake::start("some-other-key"));
    let rejected = run_once(
        &["check"],
        &[("DD_API_KEY", SECRET_KEY), ("DD_DD_URL", &other.url())],
    );
    let all = text(&rejected);
    assert_eq!(rejected.status.code(), Some(1), "{all}");
    assert!(all.contains("403"), "{all}");
    assert!(all.contains("DD_API_KEY"), "says what to fix: {all}");
    assert_no_secret("offpath check (403)", &all);

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = run_once(
        &["check"],
        &[("DD_API_KEY", SECRET_KEY), ("DD_DD_URL", &dead)],
    );
    let all = text(&unreachable);
    assert_eq!(unreachable.status.code(), Some(1), "{all}");
    assert!(all.contains("DD_DD_URL"), "says what to fix: {all}");
    assert_no_secret("offpath check (unreachable)", &all);

    // An invalid configuration: exit 2, naming the key.
    let invalid = run_once(
        &["check"],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &url),
            ("DD_FORWARDER_TIMEOUT", "soon"),
        ],
    );
    let all = text(&invalid);
    assert_eq!(invalid.status.code(), Some(2), "{all}");
    assert!(all.contains("DD_FORWARDER_TIMEOUT"), "{all}");
    assert_no_secret("offpath check (invalid config)", &all);
}

#[test]
fn sigterm_under_load_delivers_everything_received_and_exits_zero_within_the_deadline() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    let shutdown_timeout = Duration::from_secs(10);
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &intake.url()),
            ("OFFPATH_FLUSH_INTERVAL", "1"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "10"),
        ],
    );
    let udp = offpath.udp.expect("udp address");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = {
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // One value per packet, over a few contexts; paced so the shared machine keeps up.
                let line = format!("load.requests:1|c|#shard:{}", i % 8);
                if socket.send_to(line.as_bytes(), udp).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };

    wait_status(&offpath, "2000 points received under load", |s| {
        received(s) >= 2000
    });
    // The client keeps sending while the signal arrives and until the process is gone.
    offpath.signal(libc::SIGTERM);
    let (code, _) = wait_within(&mut offpath, shutdown_timeout + Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "stderr:\n{stderr}");

    let (received, delivered, fell_back, dropped) = summary(&stderr);
    assert!(received >= 2000, "{stderr}");
    assert!(received <= sent.load(Ordering::Relaxed));
    assert_eq!(
        (delivered, fell_back, dropped),
        (received, 0, 0),
        "everything received is delivered:\n{stderr}"
    );
    // What the intake holds adds up to the same count: Σ rate × interval.
    let total: f64 = intake
        .series("load.requests")
        .iter()
        .flat_map(|s| s.points.iter().map(move |p| p.1 * s.interval as f64))
        .sum();
    assert!(
        (total - received as f64).abs() < 1e-6 * received as f64,
        "the intake got {total} requests, offpath received {received}"
    );
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    assert!(offpath.stdout().trim().is_empty(), "nothing fell back");
    // Self-telemetry is on by default and ships with the rest; it is not counted as points.
    let names = intake.series_names();
    assert!(
        names.iter().any(|n| n.starts_with("offpath.")),
        "no offpath.* self-telemetry in {names:?}"
    );
}

#[test]
fn sigterm_with_a_hung_intake_falls_back_and_exits_zero_within_the_deadline() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    intake.set_default_reply(Reply::Hang);
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &intake.url()),
            ("DD_FORWARDER_TIMEOUT", "60"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "stdout"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "3"),
        ],
    );
    let udp = offpath.udp.expect("udp address");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        client.send_to(b"hung.count:1|c", udp).unwrap();
    }
    wait_status(&offpath, "10 points received", |s| received(s) >= 10);
    offpath.signal(libc::SIGTERM);
    let (code, _) = wait_within(&mut offpath, Duration::from_secs(3 + 2));
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let (received, delivered, fell_back, dropped) = summary(&stderr);
    assert_eq!(
        (received, delivered, fell_back, dropped),
        (10, 0, 10, 0),
        "{stderr}"
    );
    let records = offpath.stdout_json();
    let total: f64 = records
        .iter()
        .filter(|r| r["metric"] == "hung.count")
        .flat_map(|r| {
            let interval = r["interval"].as_f64().unwrap();
            r["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| p[1].as_f64().unwrap() * interval)
                .collect::<Vec<_>>()
        })
        .sum();
    assert!((total - 10.0).abs() < 1e-9, "{records:?}");
    assert!(!intake.requests().is_empty(), "the intake was tried");
}

#[test]
fn a_second_signal_during_a_stuck_shutdown_exits_at_once() {
    for second in [libc::SIGINT, libc::SIGTERM] {
        let rt = runtime();
        let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
        intake.set_default_reply(Reply::Hang);
        let mut offpath = Offpath::start(
            &[],
            &[
                ("DD_API_KEY", SECRET_KEY),
                ("DD_DD_URL", &intake.url()),
                ("DD_FORWARDER_TIMEOUT", "120"),
                ("OFFPATH_FLUSH_INTERVAL", "3600"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_SHUTDOWN_TIMEOUT", "120"),
            ],
        );
        let udp = offpath.udp.expect("udp address");
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"stuck.count:1|c", udp)
            .unwrap();
        wait_status(&offpath, "1 point received", |s| received(s) >= 1);
        offpath.signal(libc::SIGTERM);
        // The shutdown is stuck once the final flush hangs on the intake.
        assert!(
            rt.block_on(intake.wait_requests(1, Duration::from_secs(60))),
            "the final flush never reached the intake; stderr:\n{}",
            offpath.stderr()
        );
        assert!(offpath.stderr().contains("shutting down"));
        let (code, body) = offpath.http_get("/health");
        assert_eq!(
            (code, body.contains("shutting down")),
            (503, true),
            "orchestrators stop routing during shutdown: {body}"
        );
        offpath.signal(second);
        // Far below the 120 s shutdown deadline.
        let (code, _) = wait_within(&mut offpath, Duration::from_secs(10));
        let stderr = offpath.stderr();
        assert_eq!(code, Some(130), "stderr:\n{stderr}");
        assert!(stderr.contains("second signal"), "{stderr}");
    }
}

#[test]
fn health_is_200_and_status_matches_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dsd.socket");
    let stream_sock = dir.path().join("dsd-stream.socket");
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_SOCKET", sock.to_str().unwrap()),
            ("DD_DOGSTATSD_STREAM_SOCKET", stream_sock.to_str().unwrap()),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
        ],
    );
    let udp = offpath.udp.expect("udp address");
    let (code, body) = offpath.http_get("/health");
    assert_eq!(code, 200, "{body}");

    let before = status(&offpath);
    assert_eq!(before["packets_received"], 0);
    assert_eq!(received(&before), 0);
    assert_eq!(before["health"]["ok"], true);
    assert_eq!(before["breaker"], "closed");

    // UDP: 4 packets, 1 + 3 + 3 (packed) + 1 points; one malformed line is not a point.
    let udp_packets: [&[u8]; 4] = [
        b"st.a:1|c",
        b"st.a:1|c\nst.b:2|g\nst.c:3|h",
        b"st.d:1:2:3|d",
        b"st.e:1|c\nnot a metric",
    ];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in udp_packets {
        client.send_to(p, udp).unwrap();
    }
    // Unix socket: 2 packets, an event and a service check (one point each).
    let uds_packets: [&[u8]; 2] = [b"_e{2,3}:ti|txt", b"_sc|st.check|0"];
    let uds = UnixDatagram::unbound().unwrap();
    for p in uds_packets {
        uds.send_to(p, &sock).unwrap();
    }
    // Unix stream socket: 2 frames (u32 little-endian length + payload), 1 + 2 points.
    let stream_frames: [&[u8]; 2] = [b"st.f:1|c", b"st.g:5|ms\nst.h:x|s"];
    let mut stream = UnixStream::connect(&stream_sock).unwrap();
    for f in stream_frames {
        stream
            .write_all(&u32::try_from(f.len()).unwrap().to_le_bytes())
            .unwrap();
        stream.write_all(f).unwrap();
    }
    stream.flush().unwrap();
    let packets = (udp_packets.len() + uds_packets.len() + stream_frames.len()) as u64;
    let points = 1 + 3 + 3 + 1 + 2 + 3;
    let s = wait_status(&offpath, "every packet parsed", |s| {
        s["packets_received"].as_u64() == Some(packets)
            && received(s) >= points
            && s["parse"]["errors"]
                .as_object()
                .is_some_and(|e| e.values().filter_map(Value::as_u64).sum::<u64>() >= 1)
    });
    assert_eq!(received(&s), points, "{s}");
    assert_eq!(s["points"]["dropped_total"], 0, "{s}");
    assert_eq!(s["parse"]["events"], 1, "{s}");
    assert_eq!(s["parse"]["service_checks"], 1, "{s}");
    assert!(s["uptime_seconds"].is_u64(), "{s}");
    assert_eq!(s["retry_queue_bytes"], 0, "{s}");
    assert!(s["last_intake_error"].is_null(), "{s}");

    let listeners = s["listeners"].as_array().unwrap();
    // UDP may have several receive threads (SO_REUSEPORT sockets): one entry each, summed.
    let sum = |kind: &str, field: &str| -> u64 {
        let of_kind: Vec<&Value> = listeners
            .iter()
            .filter(|l| l["name"].as_str().unwrap().starts_with(kind))
            .collect();
        assert!(!of_kind.is_empty(), "no {kind} listener in {s}");
        of_kind.iter().map(|l| l[field].as_u64().unwrap()).sum()
    };
    let udp_bytes: usize = udp_packets.iter().map(|p| p.len()).sum();
    let uds_bytes: usize = uds_packets.iter().map(|p| p.len()).sum();
    assert_eq!(sum("udp ", "packets"), udp_packets.len() as u64, "{s}");
    assert_eq!(sum("udp ", "bytes"), udp_bytes as u64, "{s}");
    assert_eq!(sum("unixgram ", "packets"), uds_packets.len() as u64, "{s}");
    assert_eq!(sum("unixgram ", "bytes"), uds_bytes as u64, "{s}");
    let stream_bytes: usize = stream_frames.iter().map(|f| f.len()).sum();
    assert_eq!(sum("unix ", "packets"), stream_frames.len() as u64, "{s}");
    assert_eq!(sum("unix ", "bytes"), stream_bytes as u64, "{s}");
    for l in listeners {
        let dropped: u64 = l["dropped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(dropped, 0, "{l}");
    }

    let (code, body) = offpath.http_get("/health");
    assert_eq!(code, 200, "{body}");
    drop(stream);
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    assert!(
        !offpath.stderr().contains('\u{1b}'),
        "stderr is not a terminal (journald, docker logs): no colour escape codes:\n{}",
        offpath.stderr()
    );
    // The local-mode ledger at exit: every point was written as a record.
    let (received, delivered, fell_back, dropped) = summary(&offpath.stderr());
    assert_eq!(received, points);
    assert_eq!((delivered, dropped), (0, 0));
    assert_eq!(fell_back, points, "{}", offpath.stderr());
}

#[test]
fn the_api_key_never_appears_in_output_status_check_or_help() {
    let rt = runtime();
    // The intake accepts another key: every post is answered 403, and the error is logged.
    let intake = rt.block_on(FakeIntake::start("the-intake-expects-another-key"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("api_key: {SECRET_KEY}\n"));
    let env = [
        ("DD_DD_URL", intake.url()),
        ("OFFPATH_FLUSH_INTERVAL", "1".to_owned()),
        ("OFFPATH_FALLBACK", "stdout".to_owned()),
        ("DD_LOG_LEVEL", "debug".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut offpath = Offpath::start(&["run", "--config", &config], &env);
    let udp = offpath.udp.expect("udp address");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // An event is shipped at the next flush (no bucket to close).
    client
        .send_to(b"_e{6,4}:leak?|body\nkey.count:1|c", udp)
        .unwrap();
    let s = wait_status(&offpath, "a 403 from the intake", |s| {
        !s["last_intake_error"].is_null()
    });
    let s = s.to_string();
    assert!(s.contains("403"), "{s}");
    assert_no_secret("/status", &s);
    let (_, health) = offpath.http_get("/health");
    assert_no_secret("/health", &health);
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let stderr = offpath.stderr();
    assert!(stderr.contains("403"), "the rejection is logged:\n{stderr}");
    assert_no_secret("stderr", &stderr);
    assert_no_secret("stdout", &offpath.stdout());
    assert!(
        intake.requests().iter().any(|r| !r.api_key_ok),
        "the key was sent (and refused)"
    );

    // The key given in the environment, to one-shot commands.
    let with_key = [("DD_API_KEY", SECRET_KEY), ("DD_DD_URL", &intake.url())];
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["replay", "--help"],
        &["health", "--help"],
        &["--version"],
        &["check"],
        &["check", "--config", &config],
    ] {
        let out = run_once(args, &with_key);
        assert_no_secret(&format!("offpath {args:?}"), &text(&out));
    }
    let out = run_once(&["check"], &with_key);
    assert!(text(&out).contains("403"), "{}", text(&out));
}

#[test]
fn disabling_tls_verification_is_logged_as_a_warning() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &intake.url()),
            ("DD_SKIP_SSL_VALIDATION", "true"),
        ],
    );
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    let stderr = offpath.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("DD_SKIP_SSL_VALIDATION")),
        "{stderr}"
    );
    assert_no_secret("stderr", &stderr);

    // Without it, no such warning.
    let mut offpath = Offpath::start(
        &[],
        &[("DD_API_KEY", SECRET_KEY), ("DD_DD_URL", &intake.url())],
    );
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    assert!(!offpath.stderr().contains("DD_SKIP_SSL_VALIDATION"));
}

/// A signal during a periodic flush stuck on a hung intake brings that flush's deadline forward (half
/// the shutdown time) instead of waiting for it (one flush interval): the hung request is abandoned,
/// its payload waits in the retry queue and the shutdown hands it to the fallback, within the deadline.
#[test]
fn sigterm_during_a_periodic_flush_stuck_on_the_intake_still_exits_within_the_deadline() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    intake.set_default_reply(Reply::Hang);
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &intake.url()),
            ("DD_FORWARDER_TIMEOUT", "120"),
            ("OFFPATH_FLUSH_INTERVAL", "8"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "stdout"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "1"),
        ],
    );
    let udp = offpath.udp.expect("udp address");
    // Events are shipped at the next periodic flush (no bucket to close).
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"_e{5,4}:stuck|body", udp)
        .unwrap();
    wait_status(&offpath, "the event received", |s| received(s) >= 1);
    // The periodic flush (after 8 s) hangs on the intake; then the signal comes.
    assert!(
        rt.block_on(intake.wait_requests(1, Duration::from_secs(60))),
        "the periodic flush never reached the intake; stderr:\n{}",
        offpath.stderr()
    );
    offpath.signal(libc::SIGTERM);
    // OFFPATH_SHUTDOWN_TIMEOUT=1, plus process teardown on a loaded machine; far below the 8 s that
    // the periodic flush would otherwise keep waiting.
    let (code, _) = wait_within(&mut offpath, Duration::from_secs(1 + 3));
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let (received, delivered, fell_back, dropped) = summary(&stderr);
    assert_eq!(
        (received, delivered, fell_back, dropped),
        (1, 0, 1, 0),
        "the event falls back to stdout:\n{stderr}"
    );
}

/// A signal while the answer to a periodic delivery is on its way: the delivery is not dropped (which
/// would send the payload to the fallback too), it only gets a shorter deadline, which the answer meets.
/// The event is delivered once and counted delivered, not fallen back.
#[test]
fn sigterm_while_an_answer_is_on_its_way_counts_the_payload_delivered_once() {
    let rt = runtime();
    let intake = rt.block_on(FakeIntake::start(SECRET_KEY));
    // The answer comes 1 s after the request, well within the periodic flush's own deadline (one
    // interval, 3 s): only the signal could cut the delivery short.
    intake.set_default_reply(Reply::Delay(Duration::from_secs(1), 202));
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_API_KEY", SECRET_KEY),
            ("DD_DD_URL", &intake.url()),
            ("OFFPATH_FLUSH_INTERVAL", "3"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FALLBACK", "stdout"),
            ("OFFPATH_SHUTDOWN_TIMEOUT", "30"),
        ],
    );
    let udp = offpath.udp.expect("udp address");
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"_e{5,4}:reply|body", udp)
        .unwrap();
    wait_status(&offpath, "the event received", |s| received(s) >= 1);
    assert!(
        rt.block_on(intake.wait_arrivals(1, Duration::from_secs(60))),
        "the periodic flush never reached the intake; stderr:\n{}",
        offpath.stderr()
    );
    offpath.signal(libc::SIGTERM);
    let code = offpath.wait();
    let stderr = offpath.stderr();
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(summary(&stderr), (1, 1, 0, 0), "delivered once:\n{stderr}");
    assert_eq!(intake.events().len(), 1);
    assert!(offpath.stdout_json().is_empty(), "nothing fell back");
}

/// `RLIMIT_NOFILE` of process `pid`: (soft, hard).
fn nofile(pid: i32) -> (u64, u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reading the limit of our own child into a valid struct.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    (old.rlim_cur, old.rlim_max)
}

fn set_nofile(pid: i32, soft: u64, hard: u64) {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit(2) setting the limit of our own child from a valid struct.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Out of file descriptors, the Unix stream listener rests between `accept` attempts (10 ms doubling
/// to 1 s) instead of spinning on them, counts the failures, logs only the 1st, 2nd, 4th… one, and
/// serves the connections that waited once descriptors are free again.
#[test]
fn a_stream_listener_out_of_file_descriptors_backs_off_counts_and_then_serves_the_waiting_client() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dsd.stream");
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_STREAM_SOCKET", sock.to_str().unwrap()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
        ],
    );
    let pid = offpath.pid() as i32;
    let (soft, hard) = nofile(pid);
    // No descriptor to spare: accept fails with EMFILE once the holes below the limit are used.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    set_nofile(pid, open, hard);
    let warning = "cannot accept a Unix stream connection";
    let mut clients = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The 4th failure is logged (the 3rd is not): the listener kept trying, resting in between.
    while !offpath.stderr().contains("errors=4 ") {
        if clients.len() < 64 {
            clients.push(UnixStream::connect(&sock).unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "accept never failed:\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // This one waits in the backlog: the listener cannot accept it now.
    let mut waiting = UnixStream::connect(&sock).unwrap();
    let line = b"e2e.waited:1|c";
    waiting
        .write_all(&(line.len() as u32).to_le_bytes())
        .unwrap();
    waiting.write_all(line).unwrap();
    drop(clients);
    set_nofile(pid, soft, hard);

    let s = wait_status(&offpath, "the waiting client's frame", |s| received(s) >= 1);
    let unix = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"].as_str().unwrap().starts_with("unix "))
        .unwrap();
    let errors = unix["accept_errors"].as_u64().unwrap();
    assert!(errors >= 4, "{s}");
    let logged = offpath.stderr().matches(warning).count() as u32;
    assert!(
        logged <= errors.ilog2() + 1,
        "{logged} warnings for {errors} failed accepts: not rate-limited"
    );
    assert_eq!(offpath.stop(), Some(0), "stderr:\n{}", offpath.stderr());
    assert_eq!(summary(&offpath.stderr()).0, 1);
}
