//! Events are batched as the Datadog Agent batches them (`POST /intake/`, many events per request, split
//! at the intake's limits): a burst of 10,000 events and the ordinary metrics sent after it all reach
//! the intake in a handful of requests, and nothing goes to the fallback.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use offpath_tests::fake_intake::FakeIntake;
use offpath_tests::support::{Offpath, status};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(120);
const EVENTS: usize = 10_000;
const METRICS: usize = 100;

/// Write `lines` as stream frames (u32 little-endian length + payload) of at most 8,000 bytes.
fn send_frames(path: &std::path::Path, lines: impl Iterator<Item = String>) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut frame = String::new();
    let mut put = |frame: &mut String| {
        s.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
        s.write_all(frame.as_bytes()).unwrap();
        frame.clear();
    };
    for l in lines {
        if frame.len() + l.len() + 1 > 8000 {
            put(&mut frame);
        }
        frame.push_str(&l);
        frame.push('\n');
    }
    if !frame.is_empty() {
        put(&mut frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_events_and_the_metrics_after_it_reach_the_intake_in_a_handful_of_requests()
 {
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dsd.stream");
    let socket_str = socket.to_str().unwrap().to_owned();
    let mut offpath = tokio::task::block_in_place(|| {
        Offpath::start(
            &[],
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", &url),
                ("DD_HOSTNAME", "burst-host"),
                ("DD_DOGSTATSD_STREAM_SOCKET", &socket_str),
                // A delivery may take up to a flush interval: room for a large payload on a busy
                // machine, so no request is abandoned and sent twice.
                ("OFFPATH_FLUSH_INTERVAL", "5"),
                ("OFFPATH_SELF_TELEMETRY", "false"),
                ("OFFPATH_FALLBACK", "stdout"),
            ],
        )
    });
    tokio::task::block_in_place(|| {
        send_frames(
            &socket,
            (0..EVENTS).map(|i| {
                let (title, text) = (format!("deploy {i}"), format!("build {i} went out"));
                let source = if i % 2 == 0 { "|s:jenkins" } else { "" };
                format!(
                    "_e{{{},{}}}:{title}|{text}|p:low|t:warning{source}|#burst:1",
                    title.len(),
                    text.len()
                )
            }),
        );
        send_frames(&socket, (0..METRICS).map(|i| format!("after.m{i}:1|c")));
    });
    assert!(
        intake
            .wait_until(WAIT, |i| i.events().len() >= EVENTS
                && (0..METRICS)
                    .all(|m| !i.series(&format!("after.m{m}")).is_empty()))
            .await,
        "events {} of {EVENTS}; /status {}",
        intake.events().len(),
        status(&offpath)
    );
    let code = tokio::task::block_in_place(|| offpath.stop());
    assert_eq!(code, Some(0), "{}", offpath.stderr());

    let events = intake.events();
    assert_eq!(events.len(), EVENTS, "each event once");
    let e = events.iter().find(|e| e.title == "deploy 42").unwrap();
    assert_eq!(e.text, "build 42 went out");
    assert_eq!(e.priority.as_deref(), Some("low"));
    assert_eq!(e.alert_type.as_deref(), Some("warning"));
    assert_eq!(e.source_type_name.as_deref(), Some("jenkins"));
    assert_eq!(e.host.as_deref(), Some("burst-host"));
    assert!(e.tags.iter().any(|t| t == "burst:1"), "{:?}", e.tags);
    let event_requests: Vec<_> = intake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/intake/" || r.path == "/api/v1/events")
        .collect();
    eprintln!(
        "{EVENTS} events in {} requests ({:?} bytes compressed)",
        event_requests.len(),
        event_requests
            .iter()
            .map(|r| r.compressed_len)
            .collect::<Vec<_>>()
    );
    assert!(
        event_requests.len() <= 10,
        "{} requests for {EVENTS} events",
        event_requests.len()
    );
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    let stderr = offpath.stderr();
    let ledger = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap();
    assert!(
        ledger.contains(&format!(
            "received={t} delivered={t} fell_back=0 dropped=0",
            t = EVENTS + METRICS
        )),
        "{ledger}"
    );
    assert!(offpath.stdout().is_empty(), "nothing fell back");
}
