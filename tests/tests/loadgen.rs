//! The load generator sends what its report says: exact per-type line counts, counts that sum to the
//! number of count lines, a seeded mix, and well-formed stream frames.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

const SENTINEL: &[u8] = b"--end-of-test--";

fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!(
        "offpath-loadgen-{}-{tag}-{n}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

#[track_caller]
fn run_loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_offpath-loadgen"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the generator against a Unix datagram socket and returns (report, every datagram in order).
fn over_unixgram(args: &[&str]) -> (Value, Vec<Vec<u8>>) {
    let path = socket_path("dgram");
    let rx = UnixDatagram::bind(&path).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        loop {
            let n = rx.recv(&mut buf).unwrap();
            if &buf[..n] == SENTINEL {
                return got;
            }
            got.push(buf[..n].to_vec());
        }
    });
    let p = path.to_str().unwrap();
    let mut all = vec!["--transport", "unixgram", "--socket", p];
    all.extend_from_slice(args);
    let report = run_loadgen(&all);
    // Datagrams on one Unix socket are delivered in order: the sentinel comes after all of them.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(SENTINEL, &path)
        .unwrap();
    let got = reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    (report, got)
}

/// What a receiver sees: lines per type letter, the sum of count values, distinct contexts.
#[derive(Debug, Default)]
struct Seen {
    lines: u64,
    by_type: HashMap<String, u64>,
    count_sum: f64,
    contexts: HashSet<String>,
}

fn tally(packets: &[Vec<u8>]) -> Seen {
    let mut s = Seen::default();
    for p in packets {
        for line in std::str::from_utf8(p)
            .unwrap()
            .split('\n')
            .filter(|l| !l.is_empty())
        {
            let mut fields = line.split('|');
            let (name, value) = fields.next().unwrap().split_once(':').unwrap();
            let ty = fields.next().unwrap();
            let tags = fields.next().unwrap().strip_prefix('#').unwrap();
            assert!(fields.next().is_none(), "{line}");
            let n = tags.split(',').count();
            assert!((2..=20).contains(&n), "{n} tags in {line}");
            s.lines += 1;
            *s.by_type.entry(ty.to_owned()).or_default() += 1;
            if ty == "c" {
                s.count_sum += value.parse::<f64>().unwrap();
            } else if ty != "s" {
                assert!(value.parse::<f64>().unwrap().is_finite(), "{line}");
            }
            s.contexts.insert(format!("{name}|{tags}"));
        }
    }
    s
}

#[test]
fn every_line_the_report_counts_arrives_and_counts_sum_to_the_count_lines() {
    let (report, got) = over_unixgram(&[
        "--lines",
        "30000",
        "--packet",
        "8k",
        "--threads",
        "2",
        "--contexts",
        "500",
    ]);
    let seen = tally(&got);
    assert_eq!(report["lines"], seen.lines);
    assert_eq!(report["packets"], got.len() as u64);
    assert_eq!(report["expected"]["samples"], seen.lines);
    assert_eq!(
        report["expected"]["count_value_sum"].as_u64().unwrap() as f64,
        seen.count_sum
    );
    for (name, letter) in [
        ("count", "c"),
        ("gauge", "g"),
        ("distribution", "d"),
        ("set", "s"),
        ("histogram", "h"),
    ] {
        assert_eq!(
            report["lines_by_type"][name], seen.by_type[letter],
            "{name}"
        );
    }
    assert!(seen.contexts.len() <= 500);
    assert!(got.iter().all(|p| p.len() <= 8192));
    assert!(
        got.iter().any(|p| p.len() > 4096),
        "8k packets hold many lines"
    );
}

#[test]
fn once_sends_every_context_exactly_once_in_the_exact_mix() {
    let (report, got) = over_unixgram(&["--once", "--contexts", "1000", "--threads", "2"]);
    let seen = tally(&got);
    assert_eq!(seen.lines, 1000);
    assert_eq!(seen.contexts.len(), 1000);
    assert_eq!(report["expected"]["distinct_contexts"], 1000);
    let mix: Vec<u64> = ["c", "g", "d", "s", "h"]
        .iter()
        .map(|t| seen.by_type[*t])
        .collect();
    assert_eq!(mix, [600, 200, 150, 30, 20]);
}

#[test]
fn the_same_seed_sends_the_same_packets() {
    let args = [
        "--once",
        "--contexts",
        "300",
        "--packet",
        "2048",
        "--seed",
        "7",
    ];
    let (_, a) = over_unixgram(&args);
    let (_, b) = over_unixgram(&args);
    assert_eq!(a, b);
    let (_, c) = over_unixgram(&[
        "--once",
        "--contexts",
        "300",
        "--packet",
        "2048",
        "--seed",
        "8",
    ]);
    assert_ne!(a, c);
}

#[test]
fn the_stream_transport_frames_each_packet_with_its_little_endian_length() {
    let path = socket_path("stream");
    let listener = UnixListener::bind(&path).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let report = run_loadgen(&[
        "--transport",
        "unix",
        "--socket",
        path.to_str().unwrap(),
        "--lines",
        "5000",
        "--packet",
        "8k",
    ]);
    let bytes = reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    let mut frames = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    let seen = tally(&frames);
    assert_eq!(report["packets"], frames.len() as u64);
    assert_eq!(report["lines"], seen.lines);
    assert_eq!(
        report["expected"]["count_value_sum"].as_u64().unwrap() as f64,
        seen.count_sum
    );
}

#[test]
fn garbage_mode_sends_random_mutated_and_pathological_packets_and_counts_their_lines() {
    let (report, got) = over_unixgram(&["--mode", "garbage", "--max-packets", "3000"]);
    assert_eq!(report["packets"], got.len() as u64);
    for kind in ["random_bytes", "mutated_lines", "pathological"] {
        assert!(
            report["packets_by_kind"][kind].as_u64().unwrap() > 100,
            "{kind}"
        );
    }
    assert!(got.iter().any(|p| std::str::from_utf8(p).is_err()));
    assert!(
        got.iter().any(|p| p.len() > 8192),
        "some datagrams exceed offpath's buffer"
    );
    let lines = |p: &Vec<u8>| {
        p.split(|&b| b == b'\n')
            .filter(|l| !matches!(l, [] | [b'\r']))
            .count() as u64
    };
    assert_eq!(report["lines"], got.iter().map(lines).sum::<u64>());
    assert_eq!(
        report["receiver"]["oversize_packets"],
        got.iter().filter(|p| p.len() > 8192).count() as u64
    );
    assert_eq!(
        report["receiver"]["lines"],
        got.iter()
            .filter(|p| p.len() <= 8192)
            .map(lines)
            .sum::<u64>()
    );
}
