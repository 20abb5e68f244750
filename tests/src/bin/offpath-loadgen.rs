//! `offpath-loadgen`: a seeded DogStatsD load generator for loss curves, soaks and cardinality runs.
//!
//! It pre-generates every packet before the clock starts (so sending is one syscall per batch of
//! packets), then several sender threads replay the pool over UDP, a Unix datagram socket or a Unix
//! stream socket (u32 little-endian length framing), at a target rate (token bucket) or flat out.
//!
//! **Realistic mode** (default): contexts `0..N` each have a fixed type, chosen by `k % 100` so the
//! mix over contexts (and so over lines) is exactly counts 60 %, gauges 20 %, distributions 15 %,
//! sets 3 %, histograms 2 % when N is a multiple of 100. Each context has 2–20 tags, one of them
//! `ctx:<k>`, so contexts are distinct. Every count line carries the value `1` at sample rate 1, so
//! a receiver that lost nothing sums its counts to exactly the number of count lines sent
//! (`expected.count_value_sum` in the report), and holds exactly `expected.samples` values.
//!
//! **Hot mode** (`--mode hot`): the realistic mix for 20 % of the lines (`--hot-percent`), and for the
//! other 80 % one count name, `<prefix>.count.hot`, over `--hot-contexts` (10,000) tag sets
//! `endpoint:…,status_code:…` (the common `request.duration{endpoint,status}` shape): a skewed workload
//! where one name carries most contexts and most lines. Its count lines carry `1` too.
//!
//! **Garbage mode** (`--mode garbage`): random bytes, mutated valid lines and pathological
//! constructs (huge names, thousands of tags, broken event headers), for the malformed-packet soak.
//!
//! The final report is one JSON line on stdout; progress and warnings go to stderr.
//!
//! ```text
//! offpath-loadgen --transport udp --addr 127.0.0.1:8125 --rate 1000000 --duration 10 --packet 8k --threads 2
//! offpath-loadgen --transport unixgram --socket /tmp/dsd.sock --lines 100000 --contexts 1000
//! offpath-loadgen --contexts 1000000 --once --rate 16667 --max-tags 4      # cardinality explosion
//! offpath-loadgen --mode garbage --duration 300 --rate 200000                # malformed-packet soak
//! ```

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Lines generated at least, so that a small context count still yields varied values.
const MIN_POOL_LINES: usize = 20_000;
/// Bytes of the length prefix in front of every pooled packet (used as is by the stream transport).
const PREFIX: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    /// UDP datagrams to `--addr`.
    Udp,
    /// Unix datagrams to `--socket`.
    Unixgram,
    /// Unix stream to `--socket`, each packet framed by its u32 little-endian length.
    Unix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// The seeded realistic metric mix.
    Realistic,
    /// The realistic mix plus one hot count name with many tag sets carrying most lines.
    Hot,
    /// Random bytes, mutated valid lines and pathological constructs.
    Garbage,
}

/// `single` (one line per packet), `8k` (lines packed up to 8192 bytes) or a byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PacketSize(usize);

impl FromStr for PacketSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let n = match s.as_str() {
            "single" | "1" | "line" => 0,
            _ => match s.strip_suffix('k') {
                Some(k) => k.parse::<usize>().map(|k| k * 1024),
                None => s.parse::<usize>(),
            }
            .map_err(|_| format!("{s:?}: expected single, 8k or a number of bytes"))?,
        };
        if n > MAX_UDP_PAYLOAD {
            return Err(format!("{n} bytes: at most {MAX_UDP_PAYLOAD}"));
        }
        Ok(Self(n))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "offpath-loadgen",
    about = "Seeded DogStatsD load generator (UDP, Unix datagram, Unix stream); prints a JSON report"
)]
struct Args {
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// UDP destination.
    #[arg(long, default_value = "127.0.0.1:8125")]
    addr: SocketAddr,
    /// Unix socket path (unixgram and unix transports).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Target rate in lines per second over all threads; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send (unless --lines or --once).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Send this many lines over all threads, then stop (rounded up to a whole packet per thread).
    #[arg(long)]
    lines: Option<u64>,
    /// Send this many packets over all threads, then stop.
    #[arg(long, conflicts_with = "lines")]
    max_packets: Option<u64>,
    /// Send the pre-generated pool exactly once: every context exactly once (realistic mode).
    #[arg(long)]
    once: bool,
    /// Distinct contexts (metric name + tags); the type mix is exact for multiples of 100.
    #[arg(long, default_value_t = 1000)]
    contexts: u32,
    /// Packet size: `single` (one line per packet), `8k` (lines packed up to 8192 bytes) or bytes.
    #[arg(long, default_value = "single")]
    packet: PacketSize,
    /// Sender threads, each with its own socket and its own share of the pool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of everything generated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fewest tags per context (the `ctx:<k>` tag included).
    #[arg(long, default_value_t = 2)]
    min_tags: u32,
    /// Most tags per context.
    #[arg(long, default_value_t = 20)]
    max_tags: u32,
    /// Metric name prefix.
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Mode::Realistic)]
    mode: Mode,
    /// Hot mode: tag sets of the hot name.
    #[arg(long, default_value_t = 10_000)]
    hot_contexts: u32,
    /// Hot mode: share of the lines that carry the hot name, percent (1–99).
    #[arg(long, default_value_t = 80)]
    hot_percent: u32,
    /// Memory budget of the pre-generated pool, MiB.
    #[arg(long, default_value_t = 512)]
    pool_mib: usize,
    /// Datagram transports: drop and count a packet the kernel cannot take at once (as a
    /// non-blocking DogStatsD client does) instead of waiting.
    #[arg(long)]
    nonblocking: bool,
    /// The receiver's buffer size (`DD_DOGSTATSD_BUFFER_SIZE`): the report counts the packets over it
    /// (a receiver drops them whole) and the lines in the others.
    #[arg(long, default_value_t = 8192)]
    receiver_buffer: usize,
    /// Packets per `sendmmsg` call (datagram transports) or per write (stream).
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (stable across crate versions, so a seed always means the same load).

/// SplitMix64: tiny, fast, and good enough for load shapes.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

// ---------------------------------------------------------------------------------------------
// The realistic mix.

/// Metric types in report order; `tally` indexes follow it.
const TYPES: [(&str, &str); 5] = [
    ("count", "c"),
    ("gauge", "g"),
    ("distribution", "d"),
    ("set", "s"),
    ("histogram", "h"),
];

/// The type index of context `k`: 60 / 20 / 15 / 3 / 2 per hundred contexts.
fn context_type(k: u32) -> usize {
    match k % 100 {
        0..60 => 0,
        60..80 => 1,
        80..95 => 2,
        95..98 => 3,
        _ => 4,
    }
}

const TAG_KEYS: [&str; 19] = [
    "env",
    "service",
    "version",
    "region",
    "availability-zone",
    "endpoint",
    "method",
    "status_code",
    "customer_tier",
    "shard",
    "kube_namespace",
    "pod_name",
    "container_name",
    "team",
    "db.instance",
    "queue",
    "cache",
    "feature_flag",
    "build_id",
];

/// Writes context `k`'s name and tag list (everything but the value and type).
struct ContextWriter<'a> {
    prefix: &'a str,
    seed: u64,
    min_tags: u32,
    max_tags: u32,
}

impl ContextWriter<'_> {
    fn name(&self, out: &mut Vec<u8>, k: u32) {
        let (ty, _) = TYPES[context_type(k)];
        // 500 names per type; the ctx tag keeps contexts distinct.
        let _ = write!(out, "{}.{ty}.m{}", self.prefix, (k / 100) % 500);
    }

    fn tags(&self, out: &mut Vec<u8>, k: u32) {
        let mut r = Rng::new(self.seed.rotate_left(17) ^ u64::from(k).wrapping_mul(0xA24B_AED4));
        let span = u64::from(self.max_tags.saturating_sub(self.min_tags)) + 1;
        let n = u64::from(self.min_tags.max(1)) + r.below(span) - 1;
        let _ = write!(out, "ctx:{k}");
        for j in 0..n as usize {
            out.push(b',');
            match TAG_KEYS.get(j) {
                Some(key) => {
                    let _ = write!(out, "{key}:");
                }
                None => {
                    let _ = write!(out, "tag{j}:");
                }
            }
            match j {
                0 => out
                    .extend_from_slice(["prod", "staging", "dev"][r.below(3) as usize].as_bytes()),
                1 => {
                    let _ = write!(out, "svc-{}", r.below(40));
                }
                2 => {
                    let _ = write!(out, "1.{}.{}", r.below(20), r.below(10));
                }
                5 => {
                    let _ = write!(out, "/api/v2/resource{}/items", r.below(200));
                }
                7 => {
                    let _ = write!(
                        out,
                        "{}",
                        [200, 201, 204, 400, 404, 500][r.below(6) as usize]
                    );
                }
                _ => {
                    let _ = write!(out, "v{}", r.below(100));
                }
            }
        }
    }

    /// One line of the hot name's tag set `h`.
    fn hot_line(&self, out: &mut Vec<u8>, h: u32) {
        const STATUS: [u16; 10] = [200, 201, 204, 301, 304, 400, 401, 404, 500, 503];
        let _ = write!(
            out,
            "{}.count.hot:1|c|#endpoint:/api/v2/resource{}/items,status_code:{}",
            self.prefix,
            h / 10,
            STATUS[(h % 10) as usize]
        );
    }

    /// One full line for context `k`.
    fn line(&self, out: &mut Vec<u8>, k: u32, rng: &mut Rng) {
        let t = context_type(k);
        self.name(out, k);
        out.push(b':');
        match t {
            0 => out.push(b'1'),
            1 => {
                let _ = write!(out, "{}.{:02}", rng.below(100_000), rng.below(100));
            }
            3 => {
                let _ = write!(out, "user{}", rng.below(1000));
            }
            _ => {
                // Latency-like: mostly small, a long tail.
                let base = if rng.chance(90) {
                    rng.below(200)
                } else {
                    rng.below(20_000)
                };
                let _ = write!(out, "{base}.{:03}", rng.below(1000));
            }
        }
        out.push(b'|');
        out.extend_from_slice(TYPES[t].1.as_bytes());
        out.extend_from_slice(b"|#");
        self.tags(out, k);
    }
}

// ---------------------------------------------------------------------------------------------
// The pool: every packet pre-generated, prefixed by its u32 LE length, back to back.

#[derive(Debug, Clone, Copy)]
struct PacketMeta {
    /// Offset of the length prefix in `Pool::buf`.
    off: u32,
    /// Payload length (without prefix).
    len: u32,
    /// Realistic mode: lines per type (`TYPES` order). Garbage mode: 1 at the packet's `GARBAGE` kind.
    tally: [u16; 5],
    /// Non-empty lines, as a DogStatsD parser splits them (`\n`, a trailing `\r` dropped).
    lines: u16,
}

impl PacketMeta {
    fn lines(&self) -> u64 {
        u64::from(self.lines)
    }
}

/// Non-empty lines of a packet as the parser sees them.
fn count_lines(payload: &[u8]) -> u16 {
    let n = payload
        .split(|&b| b == b'\n')
        .filter(|l| !matches!(l, [] | [b'\r']))
        .count();
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[derive(Debug, Default)]
struct Pool {
    buf: Vec<u8>,
    packets: Vec<PacketMeta>,
    /// Longest line count of one packet (for the token bucket's burst).
    max_lines: u64,
}

impl Pool {
    fn payload(&self, p: &PacketMeta) -> &[u8] {
        let start = p.off as usize + PREFIX;
        &self.buf[start..start + p.len as usize]
    }

    /// Packets `from..to` (contiguous in the buffer) as stream frames.
    fn frames(&self, from: usize, to: usize) -> &[u8] {
        let first = self.packets[from];
        let last = self.packets[to - 1];
        &self.buf[first.off as usize..last.off as usize + PREFIX + last.len as usize]
    }

    fn push(&mut self, payload: &[u8], tally: [u16; 5]) -> anyhow::Result<()> {
        let off = u32::try_from(self.buf.len()).context("pool over 4 GiB: lower --pool-mib")?;
        let len = u32::try_from(payload.len()).context("packet over 4 GiB")?;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(payload);
        let meta = PacketMeta {
            off,
            len,
            tally,
            lines: count_lines(payload),
        };
        self.max_lines = self.max_lines.max(meta.lines());
        self.packets.push(meta);
        Ok(())
    }
}

/// Packs lines into packets of at most `size` bytes (`0`: one line per packet).
struct Packer {
    size: usize,
    cur: Vec<u8>,
    tally: [u16; 5],
}

impl Packer {
    fn add(&mut self, pool: &mut Pool, line: &[u8], ty: usize) -> anyhow::Result<()> {
        let fits = self.size > 0 && self.cur.len() + 1 + line.len() <= self.size;
        if !self.cur.is_empty() && (!fits || self.tally[ty] == u16::MAX) {
            self.finish(pool)?;
        }
        if !self.cur.is_empty() {
            self.cur.push(b'\n');
        }
        self.cur.extend_from_slice(line);
        self.tally[ty] += 1;
        if self.size == 0 {
            self.finish(pool)?;
        }
        Ok(())
    }

    fn finish(&mut self, pool: &mut Pool) -> anyhow::Result<()> {
        if !self.cur.is_empty() {
            pool.push(&self.cur, self.tally)?;
            self.cur.clear();
            self.tally = [0; 5];
        }
        Ok(())
    }
}

fn realistic_pool(a: &Args) -> anyhow::Result<Pool> {
    if a.contexts == 0 {
        bail!("--contexts must be at least 1");
    }
    let cw = ContextWriter {
        prefix: &a.prefix,
        seed: a.seed,
        min_tags: a.min_tags.max(1),
        max_tags: a.max_tags.max(a.min_tags.max(1)),
    };
    let budget = a.pool_mib.saturating_mul(1 << 20);
    let mut rng = Rng::new(a.seed);
    let mut order: Vec<u32> = (0..a.contexts).collect();
    let mut pool = Pool::default();
    let mut packer = Packer {
        size: a.packet.0,
        cur: Vec::with_capacity(a.packet.0.max(512)),
        tally: [0; 5],
    };
    let mut line = Vec::with_capacity(512);
    let mut generated = 0usize;
    // Hot mode: the hot name's tag sets in a fresh order each time round, and how many hot lines are due
    // (`hot_percent` per line, paid by `100 - hot_percent` per hot line).
    let hot_percent = if a.mode == Mode::Hot {
        if a.hot_contexts == 0 || !(1..=99).contains(&a.hot_percent) {
            bail!("--mode hot needs --hot-contexts ≥ 1 and --hot-percent in 1..=99");
        }
        a.hot_percent
    } else {
        0
    };
    let mut hot_order: Vec<u32> = (0..a.hot_contexts).collect();
    let (mut hot_next, mut hot_due) = (hot_order.len(), 0u32);
    // Whole cycles over every context, each in a fresh order; one only with --once.
    loop {
        shuffle(&mut order, &mut rng);
        for &k in &order {
            line.clear();
            cw.line(&mut line, k, &mut rng);
            packer.add(&mut pool, &line, context_type(k))?;
            hot_due += hot_percent;
            while hot_percent > 0 && hot_due >= 100 - hot_percent {
                hot_due -= 100 - hot_percent;
                if hot_next == hot_order.len() {
                    shuffle(&mut hot_order, &mut rng);
                    hot_next = 0;
                }
                line.clear();
                cw.hot_line(&mut line, hot_order[hot_next]);
                hot_next += 1;
                packer.add(&mut pool, &line, 0)?;
            }
            if pool.buf.len() > budget {
                bail!(
                    "one cycle over {} contexts needs more than --pool-mib {}: raise it or lower --max-tags",
                    a.contexts,
                    a.pool_mib
                );
            }
        }
        packer.finish(&mut pool)?;
        let cycle = order.len() * 100 / (100 - hot_percent as usize);
        generated += cycle;
        let next_cycle_fits = pool.buf.len() / generated * (generated + cycle) <= budget;
        if a.once || generated >= MIN_POOL_LINES || !next_cycle_fits {
            return Ok(pool);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage.

/// Garbage kinds, in `tally` order.
const GARBAGE: [&str; 3] = ["random_bytes", "mutated_lines", "pathological"];

const PATHOLOGICAL: &[&[u8]] = &[
    b"_e{99999,1}:x|y",
    b"_e{-1,-1}:|",
    b"_e{0,0}:|",
    b"_e{3,3}:abc|de",
    b"_e{,}:a|b",
    b"_e{5,5}:ab|cd",
    b"_sc|",
    b"_sc|name|9",
    b"_sc|name|0|d:notanumber|h:|#",
    b"_sc||0",
    b":|",
    b"|",
    b":",
    b"#",
    b"name:|c",
    b"name:1|",
    b"name:1|c|@",
    b"name:1|c|@nan",
    b"name:1|c|@-1",
    b"name:1|c|@1e400",
    b"name:1|c|T",
    b"name:1|c|T-5",
    b"name:1|c|T99999999999999999999999",
    b"name:nan|g",
    b"name:inf|d",
    b"name:-inf|h",
    b"name:1e400|g",
    b"name:-0|c",
    b"name:0x10|c",
    b"name:1_000|c",
    b"name:::|d",
    b"name:1::2:|d",
    b"name:1|ms|#,,,,",
    b"name:1|c|#a:b|c:ci-|e:|card:bogus",
    b"name:1|m",
    b"name:1|C",
    b"\r\n\r\n\n\n\r",
    b"name:1|c\r",
    b"\xff\xfe:1|c",
    b"name:\xc3\x28|s",
    b"name:1|c|#\xe2\x82",
    b"name:1|c|c:in-99999999999999999999",
];

fn garbage_pool(a: &Args) -> anyhow::Result<Pool> {
    let max = match a.packet.0 {
        0 => 8192,
        n => n,
    };
    let cw = ContextWriter {
        prefix: &a.prefix,
        seed: a.seed,
        min_tags: a.min_tags.max(1),
        max_tags: a.max_tags.max(a.min_tags.max(1)),
    };
    let budget = a.pool_mib.saturating_mul(1 << 20).min(64 << 20);
    let mut rng = Rng::new(a.seed);
    let mut pool = Pool::default();
    let mut pkt = Vec::with_capacity(MAX_UDP_PAYLOAD);
    let mut line = Vec::with_capacity(512);
    while pool.packets.len() < 50_000 && pool.buf.len() < budget {
        pkt.clear();
        let kind = match rng.below(100) {
            0..30 => 0,
            30..85 => 1,
            _ => 2,
        };
        match kind {
            0 => {
                // Mostly small; sometimes larger than offpath's buffer (counted as truncated).
                let len = match rng.below(20) {
                    0 => 1 + rng.below(MAX_UDP_PAYLOAD as u64 - 1),
                    1..5 => 1 + rng.below(max as u64),
                    _ => 1 + rng.below(256),
                } as usize;
                pkt.extend((0..len).map(|_| rng.next() as u8));
            }
            1 => {
                for _ in 0..1 + rng.below(20) {
                    line.clear();
                    let k = rng.below(u64::from(a.contexts.max(1))) as u32;
                    cw.line(&mut line, k, &mut rng);
                    mutate(&mut line, &mut rng);
                    if !pkt.is_empty() {
                        pkt.push(b'\n');
                    }
                    pkt.extend_from_slice(&line);
                }
            }
            _ => pathological(&mut pkt, &mut rng, max),
        }
        pkt.truncate(MAX_UDP_PAYLOAD);
        let mut tally = [0; 5];
        tally[kind] = 1;
        pool.push(&pkt, tally)?;
    }
    Ok(pool)
}

fn mutate(line: &mut Vec<u8>, rng: &mut Rng) {
    const SPECIAL: &[u8] = b":|#@,\n\r\0 .-eE+_{}Tcgdhms\xff\x80";
    for _ in 0..1 + rng.below(6) {
        if line.is_empty() {
            line.push(b':');
        }
        let i = rng.below(line.len() as u64) as usize;
        match rng.below(7) {
            0 => line[i] ^= 1 << rng.below(8),
            1 => line[i] = SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
            2 => line.insert(i, SPECIAL[rng.below(SPECIAL.len() as u64) as usize]),
            3 => {
                let end = (i + 1 + rng.below(16) as usize).min(line.len());
                line.drain(i..end);
            }
            4 => line.truncate(i),
            5 => {
                let end = (i + 1 + rng.below(32) as usize).min(line.len());
                let dup = line[i..end].to_vec();
                line.splice(i..i, dup);
            }
            _ => {
                let numbers: [&[u8]; 8] = [
                    b"1e308",
                    b"-1e308",
                    b"NaN",
                    b"+Inf",
                    b"99999999999999999999999",
                    b"-",
                    b".",
                    b"1.2.3",
                ];
                line.splice(i..i, numbers[rng.below(8) as usize].iter().copied());
            }
        }
    }
}

fn pathological(pkt: &mut Vec<u8>, rng: &mut Rng, max: usize) {
    match rng.below(5) {
        0 => {
            // A name as long as the packet allows.
            let n = max.saturating_sub(16).max(1);
            pkt.extend((0..n).map(|i| b'a' + (i % 26) as u8));
            pkt.extend_from_slice(b":1|c");
        }
        1 => {
            // Thousands of tags, some repeated, some empty.
            pkt.extend_from_slice(b"many.tags:1|c|#");
            while pkt.len() + 12 < max {
                let _ = write!(pkt, "t{}:{},", rng.below(50), rng.below(3));
                if rng.chance(5) {
                    pkt.push(b',');
                }
            }
        }
        2 => {
            // Thousands of packed values, some empty or bad.
            pkt.extend_from_slice(b"packed:");
            while pkt.len() + 12 < max {
                let _ = write!(pkt, "{}:", rng.below(1000));
                if rng.chance(3) {
                    pkt.extend_from_slice(b"x:");
                }
            }
            pkt.extend_from_slice(b"|d");
        }
        _ => {
            for _ in 0..1 + rng.below(30) {
                if !pkt.is_empty() {
                    pkt.push(b'\n');
                }
                pkt.extend_from_slice(PATHOLOGICAL[rng.below(PATHOLOGICAL.len() as u64) as usize]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending.

/// Lines-per-second token bucket; the burst is 10 ms of tokens, at least one packet.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, max_packet_lines: u64) -> Option<Self> {
        (rate > 0.0).then(|| {
            let burst = (rate * 0.010).max(max_packet_lines as f64);
            Self {
                rate,
                burst,
                tokens: 0.0,
                last: Instant::now(),
            }
        })
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Waits until `lines` tokens are available.
    fn wait_for(&mut self, lines: f64) {
        loop {
            self.refill();
            if self.tokens >= lines {
                return;
            }
            let wait = (lines - self.tokens) / self.rate;
            if wait > 200e-6 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// What one thread sent.
#[derive(Debug, Default, Clone)]
struct Sent {
    packets: u64,
    bytes: u64,
    tally: [u64; 5],
    lines: u64,
    /// Packets larger than `--receiver-buffer` (a receiver drops them whole as truncated).
    oversize_packets: u64,
    /// Lines in the packets that fit the receiver's buffer.
    fitting_lines: u64,
    would_block_packets: u64,
    would_block_lines: u64,
    error_packets: u64,
    error_lines: u64,
    reconnects: u64,
    last_error: Option<String>,
}

impl Sent {
    fn ok(&mut self, p: &PacketMeta, receiver_buffer: usize) {
        self.packets += 1;
        self.bytes += u64::from(p.len);
        for (t, n) in self.tally.iter_mut().zip(p.tally) {
            *t += u64::from(n);
        }
        self.lines += p.lines();
        if p.len as usize > receiver_buffer {
            self.oversize_packets += 1;
        } else {
            self.fitting_lines += p.lines();
        }
    }
    fn lines(&self) -> u64 {
        self.lines
    }
    fn merge(&mut self, o: &Sent) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.lines += o.lines;
        self.oversize_packets += o.oversize_packets;
        self.fitting_lines += o.fitting_lines;
        for (t, n) in self.tally.iter_mut().zip(o.tally) {
            *t += n;
        }
        self.would_block_packets += o.would_block_packets;
        self.would_block_lines += o.would_block_lines;
        self.error_packets += o.error_packets;
        self.error_lines += o.error_lines;
        self.reconnects += o.reconnects;
        if self.last_error.is_none() {
            self.last_error.clone_from(&o.last_error);
        }
    }
}

/// When a thread stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// After this instant.
    At(Instant),
    /// After this many lines (counted when handed to the kernel or dropped).
    Lines(u64),
    /// After this many packets (counted when handed to the kernel or dropped).
    Packets(u64),
    /// After one pass over the thread's chunk.
    Once,
}

enum Sock {
    Dgram(OwnedFd),
    Stream(UnixStream),
}

fn connect(a: &Args) -> anyhow::Result<Sock> {
    let path = || {
        a.socket
            .clone()
            .context("--socket PATH is required for the unixgram and unix transports")
    };
    Ok(match a.transport {
        Transport::Udp => {
            let bind = if a.addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(a.addr)?;
            Sock::Dgram(OwnedFd::from(s))
        }
        Transport::Unixgram => {
            let p = path()?;
            let s = UnixDatagram::unbound()?;
            s.connect(&p)
                .with_context(|| format!("connect to {}", p.display()))?;
            Sock::Dgram(OwnedFd::from(s))
        }
        Transport::Unix => {
            let p = path()?;
            Sock::Stream(
                UnixStream::connect(&p).with_context(|| format!("connect to {}", p.display()))?,
            )
        }
    })
}

struct Sender<'a> {
    args: &'a Args,
    pool: &'a Pool,
    /// Packet indexes of this thread's chunk.
    range: std::ops::Range<usize>,
    bucket: Option<Bucket>,
    stop: Stop,
    sent: Sent,
}

impl Sender<'_> {
    fn done(&self, pos: usize, passes: u64) -> bool {
        match self.stop {
            Stop::At(t) => Instant::now() >= t,
            Stop::Lines(n) => {
                self.sent.lines() + self.sent.would_block_lines + self.sent.error_lines >= n
            }
            Stop::Packets(n) => self.handled_packets() >= n,
            Stop::Once => passes > 0 || pos >= self.range.end,
        }
    }

    /// Packets sent or dropped by this thread.
    fn handled_packets(&self) -> u64 {
        self.sent.packets + self.sent.would_block_packets + self.sent.error_packets
    }

    /// The next batch `pos..end`: at most `--batch` packets, within the tokens and the line quota.
    fn next_batch(&mut self, pos: usize) -> usize {
        let mut end = pos;
        let mut lines = 0u64;
        let quota = match self.stop {
            Stop::Lines(n) => n.saturating_sub(
                self.sent.lines() + self.sent.would_block_lines + self.sent.error_lines,
            ),
            _ => u64::MAX,
        };
        let max_packets = match self.stop {
            Stop::Packets(n) => n.saturating_sub(self.handled_packets()) as usize,
            _ => usize::MAX,
        };
        let tokens = self.bucket.as_mut().map_or(f64::INFINITY, |b| {
            b.refill();
            b.tokens
        });
        while end < self.range.end
            && end - pos < self.args.batch.max(1).min(max_packets)
            && lines < quota
        {
            let l = self.pool.packets[end].lines().max(1);
            if end > pos && (lines + l) as f64 > tokens {
                break;
            }
            lines += l;
            end += 1;
        }
        if let Some(b) = self.bucket.as_mut() {
            b.wait_for(lines as f64);
            b.tokens -= lines as f64;
        }
        end
    }

    fn run(mut self) -> Sent {
        let mut sock = match connect(self.args) {
            Ok(s) => s,
            Err(e) => {
                self.sent.last_error = Some(format!("{e:#}"));
                return self.sent;
            }
        };
        let flags = if self.args.nonblocking {
            libc::MSG_DONTWAIT
        } else {
            0
        };
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(self.args.batch.max(1));
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(self.args.batch.max(1));
        let mut pos = self.range.start;
        let mut passes = 0u64;
        while !self.done(pos, passes) {
            if pos >= self.range.end {
                pos = self.range.start;
                passes += 1;
                continue;
            }
            let end = self.next_batch(pos);
            match &mut sock {
                Sock::Dgram(fd) => {
                    self.send_dgrams(fd.as_raw_fd(), pos, end, flags, &mut msgs, &mut iovs)
                }
                Sock::Stream(s) => {
                    if let Err(e) = s.write_all(self.pool.frames(pos, end)) {
                        for p in &self.pool.packets[pos..end] {
                            self.sent.error_packets += 1;
                            self.sent.error_lines += p.lines();
                        }
                        self.sent.last_error = Some(e.to_string());
                        match connect(self.args) {
                            Ok(s) => {
                                sock = s;
                                self.sent.reconnects += 1;
                            }
                            Err(_) => return self.sent,
                        }
                    } else {
                        for p in &self.pool.packets[pos..end] {
                            self.sent.ok(p, self.args.receiver_buffer);
                        }
                    }
                }
            }
            pos = end;
        }
        self.sent
    }

    fn send_dgrams(
        &mut self,
        fd: RawFd,
        mut pos: usize,
        end: usize,
        flags: libc::c_int,
        msgs: &mut Vec<libc::mmsghdr>,
        iovs: &mut Vec<libc::iovec>,
    ) {
        while pos < end {
            iovs.clear();
            msgs.clear();
            for p in &self.pool.packets[pos..end] {
                let payload = self.pool.payload(p);
                iovs.push(libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                });
            }
            for iov in iovs.iter_mut() {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no name, no control).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                msgs.push(m);
            }
            // SAFETY: `msgs` holds `msgs.len()` initialised headers whose iovecs point into the pool,
            // which outlives the call; the kernel only reads the buffers.
            let n =
                unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, flags) };
            if n > 0 {
                for p in &self.pool.packets[pos..pos + n as usize] {
                    self.sent.ok(p, self.args.receiver_buffer);
                }
                pos += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            let p = self.pool.packets[pos];
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.sent.would_block_packets += 1;
                    self.sent.would_block_lines += p.lines();
                }
                _ => {
                    self.sent.error_packets += 1;
                    self.sent.error_lines += p.lines();
                    self.sent.last_error = Some(err.to_string());
                }
            }
            pos += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    transport: Transport,
    threads: usize,
    seed: u64,
    contexts: u32,
    /// Hot mode: tag sets of the hot name (on top of `contexts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    hot_contexts: Option<u32>,
    /// 0 = one line per packet.
    packet_bytes: usize,
    /// Rate asked for (lines/s); 0 = flat out.
    target_rate: u64,
    /// Non-empty lines in the packets handed to the kernel.
    lines: u64,
    /// Realistic mode: lines per metric type.
    #[serde(skip_serializing_if = "Option::is_none")]
    lines_by_type: Option<serde_json::Map<String, serde_json::Value>>,
    /// Garbage mode: packets per kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    packets_by_kind: Option<serde_json::Map<String, serde_json::Value>>,
    packets: u64,
    bytes: u64,
    elapsed_s: f64,
    lines_per_s: f64,
    packets_per_s: f64,
    /// Non-blocking datagram sends the kernel refused at once (the client's own drops).
    would_block: Counted,
    /// Sends that failed (no listener, broken stream).
    send_errors: Counted,
    reconnects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// What a receiver that lost nothing holds (realistic mode).
    expected: Expected,
    /// What a receiver with a `--receiver-buffer` buffer can parse.
    receiver: Receiver,
    pool: PoolInfo,
}

#[derive(Debug, Serialize)]
struct Receiver {
    /// `--receiver-buffer`.
    buffer: usize,
    /// Packets larger than the buffer: dropped whole (counted as truncated), never parsed.
    oversize_packets: u64,
    /// Non-empty lines in the other packets: a lossless receiver parses exactly these.
    lines: u64,
}

#[derive(Debug, Serialize)]
struct Counted {
    packets: u64,
    lines: u64,
}

#[derive(Debug, Serialize)]
struct Expected {
    /// Sum of every count value received (each count line carries 1 at rate 1).
    count_value_sum: u64,
    /// Metric values received (one per line).
    samples: u64,
    /// Distinct contexts sent, when known exactly (`--once`).
    #[serde(skip_serializing_if = "Option::is_none")]
    distinct_contexts: Option<u32>,
}

#[derive(Debug, Serialize)]
struct PoolInfo {
    packets: usize,
    bytes: usize,
    lines: u64,
    build_s: f64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.transport != Transport::Udp && a.socket.is_none() {
        bail!(
            "--socket PATH is required with --transport {:?}",
            a.transport
        );
    }
    let threads = a.threads.max(1);
    let t0 = Instant::now();
    let pool = match a.mode {
        Mode::Realistic | Mode::Hot => realistic_pool(&a)?,
        Mode::Garbage => garbage_pool(&a)?,
    };
    let build_s = t0.elapsed().as_secs_f64();
    let pool_lines: u64 = pool.packets.iter().map(PacketMeta::lines).sum();
    eprintln!(
        "offpath-loadgen: pool of {} packets, {} lines, {:.1} MiB built in {build_s:.2}s",
        pool.packets.len(),
        pool_lines,
        pool.buf.len() as f64 / (1 << 20) as f64
    );
    if pool.packets.len() < threads {
        bail!("the pool has fewer packets than --threads");
    }
    let pool = Arc::new(pool);
    let start = Instant::now();
    let n = pool.packets.len();
    let results: Vec<Sent> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let range = n * i / threads..n * (i + 1) / threads;
                let stop = if a.once {
                    Stop::Once
                } else if let Some(total) = a.lines {
                    let share =
                        total / threads as u64 + u64::from((i as u64) < total % threads as u64);
                    Stop::Lines(share)
                } else if let Some(total) = a.max_packets {
                    let share =
                        total / threads as u64 + u64::from((i as u64) < total % threads as u64);
                    Stop::Packets(share)
                } else {
                    Stop::At(start + Duration::from_secs_f64(a.duration.max(0.0)))
                };
                let rate = a.rate as f64 / threads as f64;
                let sender = Sender {
                    args: &a,
                    pool: &pool,
                    range,
                    bucket: Bucket::new(rate, pool.max_lines),
                    stop,
                    sent: Sent::default(),
                };
                s.spawn(move || sender.run())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = Sent::default();
    for r in &results {
        total.merge(r);
    }
    if total.packets == 0 {
        if let Some(e) = &total.last_error {
            bail!("nothing sent: {e}");
        }
    }
    let names: Vec<&str> = match a.mode {
        Mode::Realistic | Mode::Hot => TYPES.iter().map(|t| t.0).collect(),
        Mode::Garbage => GARBAGE.to_vec(),
    };
    let tally: serde_json::Map<_, _> = names
        .iter()
        .zip(total.tally)
        .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(v)))
        .collect();
    let realistic = a.mode != Mode::Garbage;
    let (lines_by_type, packets_by_kind) = match realistic {
        true => (Some(tally), None),
        false => (None, Some(tally)),
    };
    let report = Report {
        mode: a.mode,
        transport: a.transport,
        threads,
        seed: a.seed,
        contexts: a.contexts,
        hot_contexts: (a.mode == Mode::Hot).then_some(a.hot_contexts),
        packet_bytes: a.packet.0,
        target_rate: a.rate,
        lines: total.lines(),
        lines_by_type,
        packets_by_kind,
        packets: total.packets,
        bytes: total.bytes,
        elapsed_s: elapsed,
        lines_per_s: total.lines() as f64 / elapsed,
        packets_per_s: total.packets as f64 / elapsed,
        would_block: Counted {
            packets: total.would_block_packets,
            lines: total.would_block_lines,
        },
        send_errors: Counted {
            packets: total.error_packets,
            lines: total.error_lines,
        },
        reconnects: total.reconnects,
        last_error: total.last_error.clone(),
        expected: Expected {
            count_value_sum: if realistic { total.tally[0] } else { 0 },
            samples: if realistic { total.lines() } else { 0 },
            distinct_contexts: (a.mode == Mode::Realistic
                && a.once
                && total.would_block_packets == 0
                && total.error_packets == 0)
                .then_some(a.contexts),
        },
        receiver: Receiver {
            buffer: a.receiver_buffer,
            oversize_packets: total.oversize_packets,
            lines: total.fitting_lines,
        },
        pool: PoolInfo {
            packets: pool.packets.len(),
            bytes: pool.buf.len(),
            lines: pool_lines,
            build_s,
        },
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
