//! Unix datagram and stream clients flooding offpath lose nothing inside it: with a one-packet queue per
//! aggregate worker, the listeners wait for room instead of dropping, so the kernel makes the blocking
//! clients wait (as with the Agent). The ledger is exact; nothing here depends on timing.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use offpath_tests::support::{Offpath, status};
use serde_json::Value;

/// Datagram client threads, datagrams each, lines per datagram.
const DGRAM_CLIENTS: usize = 4;
const DATAGRAMS: usize = 4000;
/// Stream connections, frames each, lines per frame.
const STREAM_CLIENTS: usize = 2;
const FRAMES: usize = 4000;
const LINES: usize = 20;

/// `LINES` count lines over several metric names (so both workers get some), `\n`-joined.
fn payload(client: usize, i: usize) -> Vec<u8> {
    (0..LINES)
        .map(|l| format!("flood.m{}:1|c|#client:{client}", (i + l) % 37))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn dgram_client(sock: &Path, client: usize) {
    let s = UnixDatagram::unbound().unwrap();
    s.connect(sock).unwrap();
    for i in 0..DATAGRAMS {
        // A blocking socket: when offpath stops reading, this send waits.
        s.send(&payload(client, i)).unwrap();
    }
}

fn stream_client(sock: &Path, client: usize) {
    let mut s = UnixStream::connect(sock).unwrap();
    let mut buf = Vec::new();
    for i in 0..FRAMES {
        let p = payload(client, i);
        buf.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        buf.extend_from_slice(&p);
        if buf.len() > 64 << 10 {
            s.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    s.write_all(&buf).unwrap();
}

/// The listeners' counters summed over those whose name starts with `kind`: (packets read, dropped).
fn listener(s: &Value, kind: &str) -> (u64, u64) {
    let mut read = 0;
    let mut dropped = 0;
    for l in s["listeners"].as_array().unwrap() {
        if l["name"].as_str().unwrap().starts_with(kind) {
            read += l["packets"].as_u64().unwrap();
            dropped += l["dropped"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>();
        }
    }
    (read, dropped)
}

/// The `points received=.. delivered=.. fell_back=.. dropped=..` summary logged at shutdown.
fn summary(stderr: &str) -> (u64, u64, u64) {
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
    (field("received="), field("fell_back="), field("dropped="))
}

#[test]
fn flooding_unix_datagram_and_stream_clients_lose_nothing_inside_offpath() {
    let dir = tempfile::tempdir().unwrap();
    let dgram = dir.path().join("dsd.socket");
    let stream = dir.path().join("dsd-stream.socket");
    let mut offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_SOCKET", dgram.to_str().unwrap()),
            ("DD_DOGSTATSD_STREAM_SOCKET", stream.to_str().unwrap()),
            // One packet of room per worker: without back-pressure most of the flood is dropped.
            ("DD_DOGSTATSD_QUEUE_SIZE", "1"),
            ("OFFPATH_AGGREGATE_WORKERS", "2"),
            ("DD_DOGSTATSD_PORT", "0"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
        ],
    );
    std::thread::scope(|scope| {
        for c in 0..DGRAM_CLIENTS {
            let dgram = &dgram;
            scope.spawn(move || dgram_client(dgram, c));
        }
        for c in 0..STREAM_CLIENTS {
            let stream = &stream;
            scope.spawn(move || stream_client(stream, DGRAM_CLIENTS + c));
        }
    });
    let datagrams = (DGRAM_CLIENTS * DATAGRAMS) as u64;
    let frames = (STREAM_CLIENTS * FRAMES) as u64;
    // Readiness: every datagram and frame has been read (the counters include dropped ones).
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        let s = status(&offpath);
        if listener(&s, "unixgram ").0 == datagrams && listener(&s, "unix ").0 == frames {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not every packet was read: {s}\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(listener(&s, "unixgram ").1, 0, "{s}");
    assert_eq!(listener(&s, "unix ").1, 0, "{s}");
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    let lines = (datagrams + frames) * LINES as u64;
    let (received, fell_back, dropped) = summary(&offpath.stderr());
    assert_eq!((received, dropped), (lines, 0), "{}", offpath.stderr());
    // Local mode: every point was written to stdout as a record.
    assert_eq!(fell_back, lines);
}
