//! Listener tests on port 0 and temporary socket paths. Waits are on the queue (with a generous
//! failure deadline), never sleeps for readiness: sockets are bound when `start` returns.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::num::NonZeroUsize;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::*;
use crate::telemetry::PacketDrop;

/// Deadline for something that should happen at once; only reached when a test fails.
const FAIL_AFTER: Duration = Duration::from_secs(20);

fn config(buffer_size: usize, queue_size: usize) -> IngestConfig {
    IngestConfig {
        udp: None,
        socket: None,
        stream_socket: None,
        buffer_size: NonZeroUsize::new(buffer_size).unwrap(),
        so_rcvbuf: None,
        queue_size: NonZeroUsize::new(queue_size).unwrap(),
        receive_threads: 1,
        pace: None,
    }
}

fn udp_config(buffer_size: usize) -> IngestConfig {
    IngestConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..config(buffer_size, 1024)
    }
}

struct Running {
    listeners: Listeners,
    rx: Receiver<Packet>,
    telemetry: Arc<Telemetry>,
}

#[track_caller]
fn start(cfg: &IngestConfig) -> Running {
    let telemetry = Arc::new(Telemetry::default());
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue_size.get());
    let listeners = Listeners::start(cfg, &telemetry, tx).unwrap();
    Running {
        listeners,
        rx,
        telemetry,
    }
}

impl Running {
    /// Lines received until `n` non-empty lines have arrived.
    #[track_caller]
    fn lines(&self, n: usize) -> Vec<String> {
        let mut lines = Vec::new();
        while lines.len() < n {
            let p = self
                .rx
                .recv_timeout(FAIL_AFTER)
                .unwrap_or_else(|e| panic!("got {lines:?}, waiting for {n} lines: {e}"));
            lines.extend(split(p.data()));
        }
        lines
    }

    fn dropped(&self, reason: PacketDrop) -> u64 {
        self.telemetry.packets_dropped(reason)
    }

    /// `got` holds exactly the `expected` lines (in any order); then stop with nothing left over, `packets`
    /// datagrams counted.
    #[track_caller]
    fn expect_all_then_stop(self, mut got: Vec<String>, mut expected: Vec<String>, packets: u64) {
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        let (rest, t) = self.stop();
        assert!(rest.is_empty());
        assert_eq!(t.packets_received(), packets);
    }

    /// Stop, then everything still queued, as lines; the queue must be closed afterwards.
    #[track_caller]
    fn stop(self) -> (Vec<String>, Arc<Telemetry>) {
        self.listeners.stop();
        let lines = self.rx.try_iter().flat_map(|p| split(p.data())).collect();
        assert!(
            self.rx.recv().is_err(),
            "the queue is closed once stop returns"
        );
        (lines, self.telemetry)
    }
}

fn split(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[test]
fn udp_delivers_exactly_what_was_sent() {
    let r = start(&udp_config(8192));
    let addr = r.listeners.udp_addr().unwrap();
    assert_ne!(addr.port(), 0, "port 0 is resolved");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = ["a.b:1|c|#env:prod", "g:2.5|g\nh:3|h|@0.5", "s:x:y|s\n"];
    for d in sent {
        client.send_to(d.as_bytes(), addr).unwrap();
    }
    assert_eq!(
        r.lines(4),
        ["a.b:1|c|#env:prod", "g:2.5|g", "h:3|h|@0.5", "s:x:y|s"]
    );
    let (rest, t) = r.stop();
    assert!(rest.is_empty());
    assert_eq!(t.packets_received(), 3);
    let bytes: u64 = sent.iter().map(|d| d.len() as u64).sum();
    let listeners = t.listeners.lock().unwrap();
    assert_eq!(listeners[0].name, format!("udp {addr}"));
    assert_eq!(listeners[0].bytes.load(Relaxed), bytes);
}

#[test]
fn an_empty_udp_datagram_is_counted_and_not_delivered() {
    let r = start(&udp_config(8192));
    let addr = r.listeners.udp_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"", addr).unwrap();
    client.send_to(b"x:1|c", addr).unwrap();
    assert_eq!(r.lines(1), ["x:1|c"]);
    let (rest, t) = r.stop();
    assert!(rest.is_empty());
    assert_eq!(t.packets_received(), 2);
}

#[test]
fn the_receive_buffer_asked_for_is_granted_within_the_kernel_limit() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = datagram::set_rcvbuf(SockRef::from(&s), 256 << 10).unwrap();
    assert_eq!(r.asked, 256 << 10);
    assert!(r.granted >= r.asked, "{r:?}");
    assert!(!r.capped());
}

#[test]
fn an_oversize_udp_datagram_is_counted_as_truncated_and_not_delivered() {
    let r = start(&udp_config(64));
    let addr = r.listeners.udp_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = format!("big:1|c|#{}", "t".repeat(100));
    client.send_to(big.as_bytes(), addr).unwrap();
    let exact = format!("x:1|c|#{}", "e".repeat(64 - 7));
    assert_eq!(exact.len(), 64);
    client.send_to(exact.as_bytes(), addr).unwrap();
    client.send_to(b"ok:1|c", addr).unwrap();
    assert_eq!(r.lines(2), [exact.as_str(), "ok:1|c"]);
    let (rest, t) = r.stop();
    assert!(rest.is_empty());
    assert_eq!(t.packets_dropped(PacketDrop::Truncated), 1);
    assert_eq!(t.packets_received(), 3);
}

#[test]
fn several_udp_receive_threads_share_the_port_and_deliver_everything() {
    let cfg = IngestConfig {
        receive_threads: 3,
        ..udp_config(8192)
    };
    let r = start(&cfg);
    let addr = r.listeners.udp_addr().unwrap();
    assert_eq!(r.telemetry.listeners.lock().unwrap().len(), 3);
    let clients: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut expected = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for j in 0..10 {
            let line = format!("m{i}:{j}|c");
            c.send_to(line.as_bytes(), addr).unwrap();
            expected.push(line);
        }
    }
    let got = r.lines(expected.len());
    r.expect_all_then_stop(got, expected, 80);
}

#[test]
fn paced_udp_threads_hand_over_what_their_sockets_hold_when_a_flush_syncs() {
    // An hour's pace: after its first drain a thread sleeps until a sync (or the stop) wakes it.
    let cfg = IngestConfig {
        receive_threads: 2,
        pace: Some(Duration::from_secs(3600)),
        ..udp_config(8192)
    };
    let r = start(&cfg);
    let syncer = r.listeners.syncer().expect("paced listeners can be synced");
    assert!(syncer.sync(Duration::ZERO), "idle threads hold nothing");
    let addr = r.listeners.udp_addr().unwrap();
    // Several clients, so both sockets of the port get some.
    let clients: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for c in &clients {
        c.send_to(b"first:1|c", addr).unwrap();
    }
    // A thread that woke for the first of these may be asleep for the hour with the rest in its socket,
    // or not yet awake for them: only a sync promises they are all in the queue.
    assert!(syncer.sync(FAIL_AFTER), "every paced thread answered");
    let first: Vec<String> = r.rx.try_iter().flat_map(|p| split(p.data())).collect();
    assert_eq!(first, vec!["first:1|c"; 8]);
    let mut expected = Vec::new();
    for i in 0..300 {
        let line = format!("paced{i}:1|c|#k:v");
        clients[i % 8].send_to(line.as_bytes(), addr).unwrap();
        expected.push(line);
    }
    // Everything sent before the sync is in the queue when it returns.
    assert!(syncer.sync(FAIL_AFTER), "every paced thread answered");
    let got: Vec<String> = r.rx.try_iter().flat_map(|p| split(p.data())).collect();
    r.expect_all_then_stop(got, expected, 308);
}

#[test]
fn without_pacing_there_is_nothing_to_sync() {
    let r = start(&udp_config(8192));
    assert!(r.listeners.syncer().is_none());
    r.stop();
}

#[test]
fn a_udp_port_in_use_is_an_error_naming_the_key() {
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    for threads in [1, 2] {
        let cfg = IngestConfig {
            udp: Some(held.local_addr().unwrap()),
            receive_threads: threads,
            ..udp_config(8192)
        };
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let e = Listeners::start(&cfg, &Arc::new(Telemetry::default()), tx).unwrap_err();
        let msg = crate::errors::chain(&e);
        assert!(
            msg.starts_with(&format!(
                "cannot bind UDP {} (DD_DOGSTATSD_PORT / DD_BIND_HOST): ",
                held.local_addr().unwrap()
            )),
            "{msg}"
        );
        // The cause once, not twice.
        assert_eq!(msg.matches("os error").count(), 1, "{msg}");
        assert!(
            matches!(&e, IngestError::Udp { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
        );
    }
}

#[test]
fn unix_datagrams_are_delivered_and_stop_drains_and_closes_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsd.sock");
    let cfg = IngestConfig {
        socket: Some(path.clone()),
        ..config(8192, 1024)
    };
    let r = start(&cfg);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o722);
    let client = UnixDatagram::unbound().unwrap();
    client.send_to(b"first:1|c", &path).unwrap();
    assert_eq!(r.lines(1), ["first:1|c"]);
    // Sent, then stop at once: they are in the socket and must be drained into the queue.
    let mut expected = Vec::new();
    for i in 0..200 {
        let line = format!("drain{i}:1|c|#k:v");
        client.send_to(line.as_bytes(), &path).unwrap();
        expected.push(line);
    }
    let (rest, t) = r.stop();
    assert_eq!(rest, expected);
    assert_eq!(t.packets_received(), 201);
    assert!(!path.exists(), "the socket file is removed at stop");
}

#[test]
fn a_full_queue_drops_and_counts_and_the_receive_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsd.sock");
    // 40-byte datagrams in 64-byte buffers: no two share a packet, so each needs its own queue slot.
    let cfg = IngestConfig {
        socket: Some(path.clone()),
        ..config(64, 2)
    };
    let r = start(&cfg);
    let client = UnixDatagram::unbound().unwrap();
    for i in 0..10 {
        client
            .send_to(format!("m:{i}|c|#{}", "x".repeat(33)).as_bytes(), &path)
            .unwrap();
    }
    let (rest, t) = r.stop();
    assert_eq!(rest.len(), 2);
    assert_eq!(t.packets_received(), 10);
    assert_eq!(t.packets_dropped(PacketDrop::QueueFull), 8);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    for stream in [false, true] {
        let path = dir.path().join(format!("stale-{stream}.sock"));
        drop(UnixDatagram::bind(&path).unwrap());
        assert!(path.exists());
        let cfg = if stream {
            IngestConfig {
                stream_socket: Some(path.clone()),
                ..config(8192, 16)
            }
        } else {
            IngestConfig {
                socket: Some(path.clone()),
                ..config(8192, 16)
            }
        };
        let r = start(&cfg);
        if stream {
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(&frame(b"fresh:1|c")).unwrap();
        } else {
            let c = UnixDatagram::unbound().unwrap();
            c.send_to(b"fresh:1|c", &path).unwrap();
        }
        assert_eq!(r.lines(1), ["fresh:1|c"]);
        r.stop();
    }
}

#[test]
fn a_live_socket_or_a_regular_file_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sock");
    let _held = UnixDatagram::bind(&live).unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"keep me").unwrap();
    for (path, stream, key) in [
        (&live, false, "DD_DOGSTATSD_SOCKET"),
        (&live, true, "DD_DOGSTATSD_STREAM_SOCKET"),
        (&file, false, "DD_DOGSTATSD_SOCKET"),
    ] {
        let cfg = if stream {
            IngestConfig {
                stream_socket: Some(path.clone()),
                ..config(8192, 16)
            }
        } else {
            IngestConfig {
                socket: Some(path.clone()),
                ..config(8192, 16)
            }
        };
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let e = Listeners::start(&cfg, &Arc::new(Telemetry::default()), tx).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn a_failed_start_stops_what_it_started_and_removes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sock");
    let bad = dir.path().join("file");
    fs::write(&bad, b"").unwrap();
    let cfg = IngestConfig {
        socket: Some(good.clone()),
        stream_socket: Some(bad),
        ..udp_config(8192)
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    assert!(Listeners::start(&cfg, &Arc::new(Telemetry::default()), tx).is_err());
    assert!(!good.exists());
    assert!(rx.recv().is_err(), "no sender is left running");
}

fn stream_config(dir: &tempfile::TempDir, buffer_size: usize) -> IngestConfig {
    IngestConfig {
        stream_socket: Some(dir.path().join("dsd-stream.sock")),
        ..config(buffer_size, 1024)
    }
}

/// The server closed `c`: a read ends (EOF, or a reset when the server left bytes unread).
#[track_caller]
fn assert_closed_by_server(c: &mut UnixStream) {
    c.set_read_timeout(Some(FAIL_AFTER)).unwrap();
    match c.read(&mut [0u8; 8]) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

#[test]
fn unix_stream_frames_are_delivered_including_one_split_across_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stream_config(&dir, 8192);
    let r = start(&cfg);
    let path = cfg.stream_socket.as_ref().unwrap();
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o722);
    let mut c = UnixStream::connect(path).unwrap();
    let mut bytes = Vec::new();
    for p in [&b"a:1|c"[..], b"b:2|g\nc:3|d", b"", b"d:4|ms|#x:y"] {
        bytes.extend(frame(p));
    }
    c.write_all(&bytes).unwrap();
    assert_eq!(r.lines(4), ["a:1|c", "b:2|g", "c:3|d", "d:4|ms|#x:y"]);

    // One frame written in three pieces, the header itself cut in two; each piece is read before
    // the next is written (the listener sees partial data).
    let split = frame(b"split.metric:42|c|#tag:value");
    for piece in [&split[..2], &split[2..9], &split[9..]] {
        c.write_all(piece).unwrap();
        c.flush().unwrap();
    }
    assert_eq!(r.lines(1), ["split.metric:42|c|#tag:value"]);

    // A frame exactly as large as the buffer is fine.
    let full = format!("f:1|c|#{}", "z".repeat(8192 - 7));
    c.write_all(&frame(full.as_bytes())).unwrap();
    assert_eq!(r.lines(1), [full]);
    drop(c);
    let (rest, t) = r.stop();
    assert!(rest.is_empty());
    assert_eq!(t.packets_received(), 6);
    assert!(!path.exists());
}

#[test]
fn an_oversize_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stream_config(&dir, 64);
    let r = start(&cfg);
    let path = cfg.stream_socket.as_ref().unwrap();
    let mut bad = UnixStream::connect(path).unwrap();
    let mut good = UnixStream::connect(path).unwrap();
    good.write_all(&frame(b"before:1|c")).unwrap();
    assert_eq!(r.lines(1), ["before:1|c"]);

    let mut oversize = frame(b"ok:1|c");
    oversize.extend(65u32.to_le_bytes());
    oversize.extend([b'x'; 65]);
    bad.write_all(&oversize).unwrap();
    assert_eq!(
        r.lines(1),
        ["ok:1|c"],
        "frames before the oversize one count"
    );
    assert_closed_by_server(&mut bad);

    good.write_all(&frame(b"after:1|c")).unwrap();
    assert_eq!(r.lines(1), ["after:1|c"]);
    let (_, t) = r.stop();
    assert_eq!(t.packets_dropped(PacketDrop::OversizeFrame), 1);
    assert_eq!(
        t.packets_received(),
        4,
        "the oversize frame is read, then dropped"
    );
}

#[test]
fn stop_drains_frames_already_written_to_stream_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stream_config(&dir, 8192);
    let r = start(&cfg);
    let path = cfg.stream_socket.as_ref().unwrap();
    let mut c = UnixStream::connect(path).unwrap();
    c.write_all(&frame(b"hello:1|c")).unwrap();
    assert_eq!(r.lines(1), ["hello:1|c"]);
    let mut expected = Vec::new();
    for i in 0..100 {
        let line = format!("late{i}:1|c");
        c.write_all(&frame(line.as_bytes())).unwrap();
        expected.push(line);
    }
    // A connection the listener has not accepted yet is drained too.
    let mut unseen = UnixStream::connect(path).unwrap();
    unseen.write_all(&frame(b"unseen:1|c")).unwrap();
    let (mut rest, _) = r.stop();
    // Connections are served in turn, so only the order within each connection is known.
    let at = rest.iter().position(|l| l == "unseen:1|c");
    assert!(at.is_some(), "{rest:?}");
    rest.retain(|l| l != "unseen:1|c");
    assert_eq!(rest, expected);
}

#[test]
fn stream_connections_past_the_limit_are_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stream_config(&dir, 256);
    let r = start(&cfg);
    let path = cfg.stream_socket.as_ref().unwrap();
    let mut conns: Vec<UnixStream> = (0..MAX_STREAM_CONNECTIONS)
        .map(|_| UnixStream::connect(path).unwrap())
        .collect();
    // Every served connection works (and so has been accepted) before one more connects.
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&frame(format!("c{i}:1|c").as_bytes())).unwrap();
    }
    assert_eq!(
        r.lines(MAX_STREAM_CONNECTIONS).len(),
        MAX_STREAM_CONNECTIONS
    );
    let mut extra = UnixStream::connect(path).unwrap();
    assert_closed_by_server(&mut extra);
    let refused: u64 = r
        .telemetry
        .listeners
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.connections_refused.load(Relaxed))
        .sum();
    assert_eq!(refused, 1);
    conns[0].write_all(&frame(b"still:1|c")).unwrap();
    assert_eq!(r.lines(1), ["still:1|c"]);
    assert_eq!(r.dropped(PacketDrop::QueueFull), 0);
    r.stop();
}

#[test]
fn with_no_listener_configured_the_queue_closes_at_once() {
    let r = start(&config(8192, 16));
    assert!(r.listeners.udp_addr().is_none());
    assert!(r.rx.recv().is_err());
    r.stop();
}
