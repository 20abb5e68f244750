//! Receive path throughput: a loopback sender flat out (`sendmmsg`, 32 datagrams a call) into
//! offpath's UDP listeners, a consumer draining the packet queue; then the Unix stream listener, a
//! client writing length-prefixed frames flat out on one connection.
//!
//! `cargo bench --bench ingest` (seconds per case: `INGEST_BENCH_SECS`, default 2). For each case it
//! prints datagrams (frames) sent, read by the listeners and delivered to the queue per second, where
//! the rest went (kernel receive-buffer overflow or a full queue), and the CPU the receive threads used,
//! as ns per datagram (their cost independent of how the cores were shared with the sender). The `wrk`
//! column is the number of aggregate workers the listeners split lines over (one queue each).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use offpath::config::IngestConfig;
use offpath::ingest::{Listeners, Packet, Route};
use offpath::telemetry::{PacketDrop, Telemetry};

const SMALL: &str = "bench.requests.count:1|c|#env:prod,service:web,host:i-0a1b2c";

/// An 8 KB multi-line datagram of mixed metric lines (what a batching client sends).
fn big_datagram() -> (Vec<u8>, usize) {
    let kinds = ["c", "g", "d", "h", "ms"];
    let mut out = Vec::new();
    let mut lines = 0;
    for i in 0.. {
        let line = format!(
            "app.metric.{}:{}.5|{}|#env:prod,service:checkout,region:eu-west-1,version:1.{},shard:{}\n",
            i % 97,
            i,
            kinds[i % kinds.len()],
            i % 7,
            i % 13
        );
        if out.len() + line.len() > 8192 {
            break;
        }
        out.extend_from_slice(line.as_bytes());
        lines += 1;
    }
    (out, lines)
}

struct Case {
    name: &'static str,
    payload: Vec<u8>,
    lines: usize,
    receive_threads: usize,
    senders: usize,
    workers: usize,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("INGEST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 2.0 } else { 0.05 });
    let (big, big_lines) = big_datagram();
    let cases = [
        ("small (1 line)", SMALL.as_bytes().to_vec(), 1, 1, 1, 1),
        ("small (1 line)", SMALL.as_bytes().to_vec(), 1, 2, 4, 1),
        ("small (1 line)", SMALL.as_bytes().to_vec(), 1, 1, 1, 2),
        ("8 KB", big.clone(), big_lines, 1, 1, 1),
        ("8 KB", big.clone(), big_lines, 2, 4, 1),
        ("8 KB", big.clone(), big_lines, 1, 1, 2),
        ("8 KB", big, big_lines, 2, 4, 2),
    ]
    .map(
        |(name, payload, lines, receive_threads, senders, workers)| Case {
            name,
            payload,
            lines,
            receive_threads,
            senders,
            workers,
        },
    );
    println!(
        "{:<15} {:>4} {:>4} {:>9} {:>12} {:>12} {:>12} {:>7} {:>9} {:>9} {:>10} {:>9}",
        "datagrams",
        "rcv",
        "wrk",
        "bytes",
        "sent/s",
        "read/s",
        "queued/s",
        "loss%",
        "kernel",
        "qfull",
        "lines/s",
        "ns/dgram"
    );
    for case in &cases {
        run(case, Duration::from_secs_f64(secs));
    }
    println!(
        "\n{:<15} {:>9} {:>12} {:>12} {:>7} {:>9} {:>10} {:>9}",
        "unix stream", "bytes", "sent/s", "queued/s", "loss%", "qfull", "lines/s", "ns/frame"
    );
    let (big, big_lines) = big_datagram();
    for (name, payload, lines) in [
        ("small (1 line)", SMALL.as_bytes().to_vec(), 1),
        ("8 KB", big, big_lines),
    ] {
        run_stream(name, &payload, lines, Duration::from_secs_f64(secs));
    }
}

/// One client writes `payload` as frames (u32 little-endian length, then the bytes) flat out on one
/// connection to the Unix stream listener; the socket blocks it when the listener falls behind.
fn run_stream(name: &str, payload: &[u8], lines: usize, duration: Duration) {
    let dir = std::env::temp_dir().join(format!("offpath-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("stream.sock");
    let cfg = IngestConfig {
        udp: None,
        socket: None,
        stream_socket: Some(path.clone()),
        buffer_size: NonZeroUsize::new(8192).unwrap_or(NonZeroUsize::MIN),
        so_rcvbuf: None,
        queue_size: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
        receive_threads: 1,
        pace: None,
    };
    let telemetry = Arc::new(Telemetry::default());
    let (tx, rx) = crossbeam_channel::bounded::<Packet>(cfg.queue_size.get());
    let listeners = match Listeners::start(&cfg, &telemetry, tx) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let consumer = std::thread::spawn(move || rx.into_iter().count());
    // 64 KiB of whole frames per write.
    let mut chunk = Vec::new();
    while chunk.len() < 64 * 1024 {
        chunk.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        chunk.extend_from_slice(payload);
    }
    let per_chunk = chunk.len() / (payload.len() + 4);
    let cpu_before = thread_cpu("offpath-unix");
    let start = Instant::now();
    let mut sent = 0u64;
    if let Ok(mut client) = UnixStream::connect(&path) {
        while start.elapsed() < duration {
            if client.write_all(&chunk).is_err() {
                break;
            }
            sent += per_chunk as u64;
        }
    }
    // Let the listener read what the connection still holds (every frame counts as read, queued or
    // not), then take its CPU time while its thread still exists.
    let settle = Instant::now() + Duration::from_secs(10);
    while telemetry.packets_received() < sent && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu("offpath-unix") - cpu_before;
    listeners.stop();
    let _ = consumer.join();
    let _ = std::fs::remove_dir_all(&dir);

    let read = telemetry.packets_received();
    let qfull = telemetry.packets_dropped(PacketDrop::QueueFull);
    let queued = read - qfull;
    let per_s = |n: u64| n as f64 / elapsed;
    println!(
        "{:<15} {:>9} {:>12.0} {:>12.0} {:>7.2} {:>9} {:>10.0} {:>9.0}",
        name,
        payload.len(),
        per_s(sent),
        per_s(queued),
        100.0 * (sent - queued.min(sent)) as f64 / sent.max(1) as f64,
        qfull,
        per_s(queued) * lines as f64,
        cpu * 1e9 / read.max(1) as f64,
    );
}

fn run(case: &Case, duration: Duration) {
    let cfg = IngestConfig {
        udp: Some("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())),
        socket: None,
        stream_socket: None,
        buffer_size: NonZeroUsize::new(8192).unwrap_or(NonZeroUsize::MIN),
        so_rcvbuf: None,
        queue_size: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
        receive_threads: case.receive_threads,
        pace: None,
    };
    let telemetry = Arc::new(Telemetry::default());
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..case.workers)
        .map(|_| crossbeam_channel::bounded::<Packet>(cfg.queue_size.get()))
        .unzip();
    let listeners = match Listeners::start_sharded(&cfg, &telemetry, txs, Route::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let Some(addr) = listeners.udp_addr() else {
        return;
    };
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            std::thread::spawn(move || {
                let (mut packets, mut bytes) = (0u64, 0u64);
                for p in rx {
                    packets += 1;
                    bytes += p.data().len() as u64;
                }
                (packets, bytes)
            })
        })
        .collect();
    let cpu_before = receive_cpu();
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| send(addr, &case.payload, case.senders, &stop));
        std::thread::sleep(duration);
        stop.store(true, Relaxed);
        sender.join().unwrap_or(0)
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = receive_cpu() - cpu_before;
    listeners.stop();
    for c in consumers {
        let _ = c.join();
    }

    let read = telemetry.packets_received();
    let qfull = telemetry.packets_dropped(PacketDrop::QueueFull);
    let queued = read - qfull;
    let kernel = sent.saturating_sub(read);
    let per_s = |n: u64| n as f64 / elapsed;
    println!(
        "{:<15} {:>4} {:>4} {:>9} {:>12.0} {:>12.0} {:>12.0} {:>7.2} {:>9} {:>9} {:>10.0} {:>9.0}",
        case.name,
        case.receive_threads,
        case.workers,
        case.payload.len(),
        per_s(sent),
        per_s(read),
        per_s(queued),
        100.0 * (sent - queued.min(sent)) as f64 / sent.max(1) as f64,
        kernel,
        qfull,
        per_s(queued) * case.lines as f64,
        cpu * 1e9 / read.max(1) as f64,
    );
}

/// Send `payload` flat out from `senders` sockets (so `SO_REUSEPORT` spreads them) until `stop`.
fn send(addr: SocketAddr, payload: &[u8], senders: usize, stop: &AtomicBool) -> u64 {
    const BATCH: usize = 32;
    let sockets: Vec<UdpSocket> = (0..senders)
        .filter_map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.connect(addr).ok()?;
            Some(s)
        })
        .collect();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            // SAFETY: all-zero is a valid mmsghdr (no name, no control data).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &raw mut iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut sent = 0u64;
    let mut i = 0;
    while !stop.load(Relaxed) {
        let Some(s) = sockets.get(i % sockets.len().max(1)) else {
            break;
        };
        i += 1;
        // SAFETY: `hdrs` holds BATCH initialized headers pointing to `iov`, which spans `payload`;
        // the kernel only reads them. The socket is open.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as _, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    sent
}

/// CPU seconds used so far by offpath's UDP receive threads (from /proc, 100 ticks a second).
fn receive_cpu() -> f64 {
    thread_cpu("offpath-udp")
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" closing the name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        ticks += f.iter().sum::<u64>();
    }
    ticks as f64 / 100.0
}
