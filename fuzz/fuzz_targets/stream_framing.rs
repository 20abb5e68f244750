//! The Unix stream listener's framing (u32 little-endian length, then the payload) over arbitrary
//! byte streams written in arbitrary pieces, through the public `Listeners` API.
//!
//! Every input is one connection to a live listener with a small buffer (so oversize frames are
//! common). Checked against a reference decoder: every whole frame before the first oversize one
//! arrives, in order, nothing else does (compared as the non-empty lines the parser would see, since
//! the listener joins frames into packets with `\n`), an oversize frame is counted, and a partial
//! trailing frame is dropped. The listener thread must survive all of it.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::NonZeroUsize;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use crossbeam_channel::Receiver;
use libfuzzer_sys::fuzz_target;
use offpath::config::IngestConfig;
use offpath::ingest::{Listeners, Packet};
use offpath::telemetry::{PacketDrop, Telemetry};

/// `DD_DOGSTATSD_BUFFER_SIZE` of the listener under test: small, so that length prefixes over it are
/// easy for the fuzzer to produce.
const FRAME_MAX: usize = 512;

struct Harness {
    path: PathBuf,
    packets: Receiver<Packet>,
    telemetry: Arc<Telemetry>,
    _listeners: Listeners,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("offpath-fuzz-stream-{}.sock", std::process::id()));
        let cfg = IngestConfig {
            udp: None,
            socket: None,
            stream_socket: Some(path.clone()),
            buffer_size: NonZeroUsize::new(FRAME_MAX).unwrap(),
            so_rcvbuf: None,
            queue_size: NonZeroUsize::new(65_536).unwrap(),
            receive_threads: 1,
        };
        let telemetry = Arc::new(Telemetry::default());
        let (tx, rx) = crossbeam_channel::bounded(65_536);
        let listeners = Listeners::start(&cfg, &telemetry, tx).unwrap();
        Mutex::new(Harness { path, packets: rx, telemetry, _listeners: listeners })
    })
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// The byte stream, as written: one `write` per piece.
    pieces: Vec<Vec<u8>>,
}

/// Reference decoder: the payloads of the whole frames before the first oversize one, and whether
/// there is an oversize one.
fn reference(stream: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while let Some((header, after)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*header) as usize;
        if len > FRAME_MAX {
            return (frames, true);
        }
        let Some(payload) = after.get(..len) else { break };
        frames.push(payload);
        rest = &after[len..];
    }
    (frames, false)
}

/// What the parser would see: the non-empty `\n`-separated lines.
fn lines<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<Vec<u8>>) {
    for c in chunks {
        out.extend(c.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
}

fuzz_target!(|input: Input| {
    let h = harness().lock().unwrap();
    let stream: Vec<u8> = input.pieces.concat();
    let (frames, oversize) = reference(&stream);
    let mut expected = Vec::new();
    lines(frames.iter().copied(), &mut expected);
    let oversize_before = h.telemetry.packets_dropped(PacketDrop::OversizeFrame);
    let deadline = Instant::now() + Duration::from_secs(10);

    let mut conn = UnixStream::connect(&h.path).unwrap();
    for piece in &input.pieces {
        if conn.write_all(piece).is_err() {
            break; // closed by the listener after an oversize frame
        }
    }
    // Wait until the listener has closed its side: it has read everything it will ever read from this
    // connection, and connections never pile up past its maximum.
    let _ = conn.shutdown(Shutdown::Write);
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 64];
    loop {
        match conn.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => panic!("the listener wrote to a client"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // libFuzzer's timer signal
            Err(e) => panic!("the listener did not close the connection: {e}"),
        }
    }

    let mut got = Vec::new();
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let packet = h.packets.recv_timeout(left).unwrap_or_else(|_| {
            panic!("the listener delivered {} of {} lines: {got:?}", got.len(), expected.len())
        });
        lines([packet.data()], &mut got);
        assert!(
            got.len() <= expected.len() && got[..] == expected[..got.len()],
            "delivered lines differ from the frames sent: {got:?} vs {expected:?}"
        );
    }
    if oversize {
        while h.telemetry.packets_dropped(PacketDrop::OversizeFrame) == oversize_before {
            assert!(Instant::now() < deadline, "the oversize frame was not counted");
            std::thread::yield_now();
        }
    }
});
