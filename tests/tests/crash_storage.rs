//! Crash safety with the on-disk retry storage (`DD_FORWARDER_STORAGE_PATH`): the real `offpath`,
//! SIGKILLed while the intake hangs, loses nothing of what it had received: the next process sends
//! it when the intake answers again, and the ledger across both runs is exact.
//!
//! Waits are conditions (`/status`, the storage directory, the fake intake's `wait_until`); no timed
//! assertions.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use offpath::forward::store::format;
use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::support::{Offpath, status};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Upper bound of every condition wait (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(120);
/// Metric names the points are spread over.
const METRICS: usize = 50;
/// Datagrams sent; each carries one value of every metric.
const DATAGRAMS: usize = 2_000;

/// Poll `cond` every 20 ms until it holds; fail with `what` after [`WAIT`].
#[track_caller]
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_with(what, cond, String::new);
}

/// [`wait_for`], and on failure also says what `state` reports (what was seen instead).
#[track_caller]
fn wait_for_with(what: &str, mut cond: impl FnMut() -> bool, state: impl FnOnce() -> String) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}: {}", state());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Points in the stored payloads under `root` (every destination), read with the format's decoder.
fn stored_points(root: &Path) -> u64 {
    let mut total = 0;
    for dest in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dest.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "oprq") {
                if let Ok(p) = std::fs::read(file.path())
                    .map_err(|_| ())
                    .and_then(|b| format::decode(Bytes::from(b)).map_err(|_| ()))
                {
                    total += p.samples;
                }
            }
        }
    }
    total
}

/// Sum of the counts the intake accepted for `crash.*` (rates times their interval).
fn delivered_counts(intake: &FakeIntake) -> f64 {
    intake
        .all_series()
        .iter()
        .filter(|s| s.metric.starts_with("crash."))
        .flat_map(|s| s.points.iter().map(|p| p.1 * s.interval as f64))
        .sum()
}

fn env<'a>(url: &'a str, dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DD_API_KEY", KEY),
        ("DD_DD_URL", url),
        ("OFFPATH_FLUSH_INTERVAL", "1"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
        // No fallback: everything that is not delivered waits for the intake (in memory and on disk).
        ("OFFPATH_FALLBACK", "off"),
        ("DD_FORWARDER_TIMEOUT", "1"),
        ("DD_FORWARDER_STORAGE_PATH", dir),
        ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "104857600"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_hung_intake_outage_loses_no_point_with_retry_storage() {
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Hang);
    let url = intake.url();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_str().unwrap().to_owned();

    let mut first = tokio::task::block_in_place(|| Offpath::start(&[], &env(&url, &dir)));
    let udp = first.udp.expect("udp address");
    let received = tokio::task::block_in_place(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..DATAGRAMS {
            let datagram: String = (0..METRICS)
                .map(|m| format!("crash.m{m}:1|c|#run:one,d:{}\n", i % 7))
                .collect();
            s.send_to(datagram.as_bytes(), udp).unwrap();
        }
        let expected = (DATAGRAMS * METRICS) as u64;
        wait_for("every point received", || {
            status(&first)["points"]["received"].as_u64() == Some(expected)
        });
        // Everything received has failed at least once and sits on disk (the one request in flight
        // hangs, so nothing was delivered).
        wait_for_with(
            "every point on disk",
            || stored_points(root.path()) == expected,
            || {
                format!(
                    "{} of {expected} points on disk; /status: {}",
                    stored_points(root.path()),
                    status(&first)
                )
            },
        );
        expected
    });
    assert!(
        intake.all_series().is_empty(),
        "the hung intake accepted something"
    );
    // The OOM killer, kill -9, a reboot.
    first.signal(libc::SIGKILL);
    tokio::task::block_in_place(|| first.wait());

    // A second process on the same directory while the intake answers again.
    intake.set_default_reply(Reply::Status(202));
    let mut second = tokio::task::block_in_place(|| Offpath::start(&[], &env(&url, &dir)));
    assert!(
        intake
            .wait_until(WAIT, |i| delivered_counts(i) >= received as f64)
            .await,
        "the second run delivered {} of {received} points",
        delivered_counts(&intake)
    );
    tokio::task::block_in_place(|| {
        wait_for("the storage emptied", || stored_points(root.path()) == 0);
        let s = status(&second);
        assert_eq!(s["points"]["recovered"].as_u64(), Some(received), "{s}");
        assert_eq!(s["points"]["delivered"].as_u64(), Some(received), "{s}");
        assert_eq!(s["forward"]["storage_corrupt"].as_u64(), Some(0), "{s}");
        assert_eq!(second.stop(), Some(0), "stderr:\n{}", second.stderr());
    });
    // Exactly once: the requests the hung intake held were never answered, so none was accepted
    // twice. (A request that reached an intake which accepted it just before the kill would be sent
    // again: at least once, bounded to the request in flight.)
    assert_eq!(delivered_counts(&intake), received as f64);
    let ledger = second
        .stderr()
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_default()
        .to_owned();
    assert!(
        ledger.contains(&format!(
            "received=0 recovered={received} delivered={received} fell_back=0 dropped=0"
        )),
        "{ledger}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cannot_share_a_storage_directory() {
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_str().unwrap().to_owned();
    let mut first = tokio::task::block_in_place(|| Offpath::start(&[], &env(&url, &dir)));
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(offpath_tests::support::binary("offpath"))
            .env_clear()
            .envs(env(&url, &dir))
            .env("DD_DOGSTATSD_PORT", "__random__")
            .env("OFFPATH_STATUS_ADDR", "")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another offpath process")
            && stderr.contains("DD_FORWARDER_STORAGE_PATH"),
        "{stderr}"
    );
    tokio::task::block_in_place(|| assert_eq!(first.stop(), Some(0)));
}
