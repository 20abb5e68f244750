//! Encode + compress benchmarks: 10,000 series and 1,000 sketches at zstd levels 1 and 3.
//!
//! Run: `cargo bench -p offpath --bench encode`. Before timing, it prints the payloads' sizes and the
//! CPU time (thread CPU clock, so the figure holds on a busy machine) of one encode and of zstd alone.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use offpath::encode::{Encoder, Payload};
use offpath::model::{DogSketch, Flush, Series, SeriesKind, SketchSeries};

mod common;

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 10,000 series shaped like a service's DogStatsD traffic: 200 metric names × 50 tag combinations,
/// five tags each, one point per series (one 10 s bucket).
fn series_flush() -> Flush {
    let mut rng = Rng(7);
    let series = (0..10_000)
        .map(|i| Series {
            name: format!("myapp.http.request.metric_{}", i % 200),
            tags: vec![
                format!("endpoint:/api/v1/resource_{}", i / 200 % 25),
                format!("status_code:{}", [200, 201, 404, 500][i % 4]),
                "env:production".to_owned(),
                "service:checkout".to_owned(),
                format!("version:1.{}.0", i / 5000),
            ],
            host: "ip-10-0-12-34.ec2.internal".to_owned(),
            kind: if i % 3 == 0 {
                SeriesKind::Gauge
            } else {
                SeriesKind::Rate
            },
            interval: if i % 3 == 0 { 0 } else { 10 },
            points: vec![(1_700_000_000, (rng.unit() * 1000.0).round() / 10.0)],
            samples: 10,
        })
        .collect();
    Flush {
        series,
        ..Flush::default()
    }
}

/// 1,000 latency sketches of 200 log-normal values each, keyed exactly like the agent's DDSketch.
fn sketch_flush() -> Flush {
    let ln_gamma = (2.0f64 / 128.0).ln_1p();
    let mut rng = Rng(11);
    let sketches = (0..1_000)
        .map(|i| {
            let mut bins = std::collections::BTreeMap::<i32, u32>::new();
            let (mut min, mut max, mut sum) = (f64::MAX, f64::MIN, 0.0);
            for _ in 0..200 {
                // Box-Muller: ln(latency ms) ~ N(3.5, 0.8).
                let z = (-2.0 * rng.unit().max(1e-12).ln()).sqrt()
                    * (std::f64::consts::TAU * rng.unit()).cos();
                let v = (3.5 + 0.8 * z).exp();
                let k = ((v.ln() / ln_gamma).round_ties_even() as i32 + 1338).max(1);
                *bins.entry(k).or_default() += 1;
                min = min.min(v);
                max = max.max(v);
                sum += v;
            }
            SketchSeries {
                name: format!("myapp.request.latency_{}", i % 40),
                tags: vec![
                    format!("route:/r/{}", i / 40),
                    "env:production".to_owned(),
                    "service:checkout".to_owned(),
                ],
                host: "ip-10-0-12-34.ec2.internal".to_owned(),
                sketches: vec![DogSketch {
                    ts: 1_700_000_000,
                    cnt: 200,
                    min,
                    max,
                    sum,
                    avg: sum / 200.0,
                    k: bins.keys().copied().collect(),
                    n: bins.values().copied().collect(),
                }],
                samples: 200,
            }
        })
        .collect();
    Flush {
        sketches,
        ..Flush::default()
    }
}

/// CPU time of this thread.
/// Median CPU time of `f` over `n` runs.
fn cpu_median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = common::cpu_time();
            f();
            common::cpu_time() - t
        })
        .collect();
    times.sort();
    times[n / 2]
}

fn report(name: &str, enc: &Encoder, flush: &Flush) {
    let payloads: Vec<Payload> = enc.encode(flush).unwrap_or_default();
    let body: usize = payloads.iter().map(|p| p.body.len()).sum();
    let raw: usize = payloads.iter().map(|p| p.raw_len).sum();
    let encode = cpu_median(31, || {
        black_box(enc.encode(black_box(flush)).ok());
    });
    let raws: Vec<Vec<u8>> = payloads
        .iter()
        .filter_map(|p| zstd::stream::decode_all(&p.body[..]).ok())
        .collect();
    let zstd_only = cpu_median(31, || {
        for r in &raws {
            black_box(zstd::bulk::compress(r, enc.level()).ok());
        }
    });
    println!(
        "{name}, zstd {}: {} payload(s), {raw} B raw -> {body} B ({:.1}x); CPU encode+compress {:.2} ms \
         (zstd alone {:.2} ms)",
        enc.level(),
        payloads.len(),
        raw as f64 / body.max(1) as f64,
        encode.as_secs_f64() * 1e3,
        zstd_only.as_secs_f64() * 1e3,
    );
}

fn bench(c: &mut Criterion) {
    let series = series_flush();
    let sketches = sketch_flush();
    for level in [1, 3] {
        let enc = Encoder::new(level);
        report("10000 series", &enc, &series);
        report("1000 sketches", &enc, &sketches);
    }
    let mut g = c.benchmark_group("encode");
    for level in [1, 3] {
        let enc = Encoder::new(level);
        g.bench_function(format!("10000_series_zstd{level}"), |b| {
            b.iter(|| enc.encode(black_box(&series)))
        });
        g.bench_function(format!("1000_sketches_zstd{level}"), |b| {
            b.iter(|| enc.encode(black_box(&sketches)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
