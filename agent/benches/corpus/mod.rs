//! A realistic DogStatsD corpus for benchmarks, generated deterministically (no files, no randomness crate).
//!
//! Mix: counters 40 %, gauges 25 %, distributions 20 %, histograms 10 %, timers 5 %; 3–10 tags per line from
//! pools shaped like real service tags; about 10 % of non-counter lines pack 2–5 values; about 10 % carry a sample
//! rate. Lines are joined with `\n` into packets of at most 8 KB, as the Agent's packet assembler does.
//! Use it from a bench with `mod corpus;`.

#![allow(dead_code)]

/// Packets of at most `max_packet` bytes; `lines` lines in all. Same `seed`, same corpus.
pub fn packets(seed: u64, lines: usize, max_packet: usize) -> Vec<Vec<u8>> {
    let mut rng = SplitMix(seed);
    let mut packets = Vec::new();
    let mut packet = Vec::with_capacity(max_packet);
    let mut line = String::new();
    for _ in 0..lines {
        line.clear();
        write_line(&mut rng, &mut line);
        if !packet.is_empty() && packet.len() + 1 + line.len() > max_packet {
            packets.push(std::mem::replace(
                &mut packet,
                Vec::with_capacity(max_packet),
            ));
        }
        if !packet.is_empty() {
            packet.push(b'\n');
        }
        packet.extend_from_slice(line.as_bytes());
    }
    if !packet.is_empty() {
        packets.push(packet);
    }
    packets
}

/// The number of lines in `packets` (non-empty lines).
pub fn line_count(packets: &[Vec<u8>]) -> usize {
    packets
        .iter()
        .map(|p| p.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count())
        .sum()
}

const PREFIXES: &[&str] = &[
    "checkout",
    "payments",
    "search",
    "auth",
    "inventory",
    "gateway",
    "orders",
    "users",
];
const MIDDLES: &[&str] = &[
    "http.request",
    "db.query",
    "cache",
    "queue.consumer",
    "grpc.server",
    "worker.job",
    "api",
];
const SUFFIXES: &[&str] = &[
    "count",
    "duration",
    "errors",
    "bytes",
    "latency",
    "size",
    "hits",
    "in_flight",
];

const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "search",
    "auth",
    "inventory",
    "gateway",
];
const ENDPOINTS: &[&str] = &[
    "/api/v2/orders/{id}",
    "/api/v2/cart",
    "/healthz",
    "/api/v1/users/{id}/profile",
    "/graphql",
    "/api/v2/search",
];

fn write_line(rng: &mut SplitMix, out: &mut String) {
    use std::fmt::Write as _;
    let roll = rng.below(100);
    let kind = match roll {
        0..40 => "c",
        40..65 => "g",
        65..85 => "d",
        85..95 => "h",
        _ => "ms",
    };
    let _ = write!(
        out,
        "{}.{}.{}:",
        rng.pick(PREFIXES),
        rng.pick(MIDDLES),
        rng.pick(SUFFIXES)
    );
    let values = if kind != "c" && rng.below(10) == 0 {
        2 + rng.below(4)
    } else {
        1
    };
    for i in 0..values {
        if i > 0 {
            out.push(':');
        }
        match kind {
            "c" => {
                let _ = write!(
                    out,
                    "{}",
                    if rng.below(4) == 0 {
                        1 + rng.below(50)
                    } else {
                        1
                    }
                );
            }
            "g" if rng.below(2) == 0 => {
                let _ = write!(out, "{}", rng.below(100_000));
            }
            _ => {
                let _ = write!(out, "{}.{:03}", rng.below(2_000), rng.below(1_000));
            }
        }
    }
    out.push('|');
    out.push_str(kind);
    if rng.below(10) == 0 {
        out.push_str(if rng.below(2) == 0 { "|@0.5" } else { "|@0.1" });
    }
    out.push_str("|#");
    let tags = 3 + rng.below(8);
    for i in 0..tags {
        if i > 0 {
            out.push(',');
        }
        let _ = match i {
            0 => write!(out, "env:{}", rng.pick(&["prod", "staging", "dev"])),
            1 => write!(out, "service:{}", rng.pick(SERVICES)),
            2 => write!(out, "version:1.{}.{}", rng.below(20), rng.below(10)),
            3 => write!(
                out,
                "host:ip-10-0-{}-{}.ec2.internal",
                rng.below(256),
                rng.below(256)
            ),
            4 => write!(
                out,
                "region:{}",
                rng.pick(&["us-east-1", "eu-west-1", "ap-southeast-2"])
            ),
            5 => write!(out, "endpoint:{}", rng.pick(ENDPOINTS)),
            6 => write!(
                out,
                "status_code:{}",
                rng.pick(&["200", "201", "404", "500", "503"])
            ),
            7 => write!(
                out,
                "method:{}",
                rng.pick(&["GET", "POST", "PUT", "DELETE"])
            ),
            8 => write!(
                out,
                "pod_name:{}-7d9f8b6c5d-{:05x}",
                rng.pick(SERVICES),
                rng.below(1 << 20)
            ),
            _ => write!(
                out,
                "kube_namespace:{}",
                rng.pick(&["default", "platform", "payments"])
            ),
        };
    }
}

/// splitmix64: tiny, fast, good enough to shape a corpus.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}
