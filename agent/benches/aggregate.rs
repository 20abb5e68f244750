//! Aggregation throughput and memory per live context.
//!
//! `cargo bench -p offpath --bench aggregate` prints, besides criterion's timings (lines per second on one
//! core for 1k, 10k and 100k contexts), the heap bytes and RSS per live context at 100k contexts.
//! The cardinality view is on, as shipped; `OFFPATH_CONTEXT_STATS=false cargo bench ...` turns it off.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use offpath::aggregate::Aggregator;
use offpath::dogstatsd::{self, Message};
use offpath::ingest::Route;
use offpath::telemetry::Telemetry;

mod common;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: i64 = 1_700_000_000;

/// Lines cycling over `contexts` contexts, `total` lines long.
fn corpus(contexts: usize, total: usize) -> Vec<String> {
    (0..total)
        .map(|n| common::corpus_line(n % contexts, n / contexts))
        .collect()
}

/// The corpus parsed ahead of time.
fn messages(lines: &[String]) -> Vec<Message<'_>> {
    lines
        .iter()
        .map(|l| dogstatsd::parse_line(l.as_bytes()).unwrap())
        .collect()
}

fn throughput(c: &mut Criterion) {
    const LINES: usize = 100_000;
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(LINES as u64));
    group.sample_size(10);
    for contexts in [1_000, 10_000, 100_000] {
        let lines = corpus(contexts, LINES);
        let datagrams = common::packets(&lines);
        let msgs = messages(&lines);
        group.bench_function(format!("parse_and_insert/{contexts}_contexts"), |b| {
            let mut agg = Aggregator::new(
                &common::aggregate_config(200_000, context_stats()),
                Arc::new(Telemetry::default()),
            );
            b.iter_custom(|iters| {
                pass(&mut agg, iters, |agg, now| {
                    for p in &datagrams {
                        agg.insert_packet(p, now);
                    }
                })
            });
        });
        group.bench_function(format!("insert_parsed/{contexts}_contexts"), |b| {
            let mut agg = Aggregator::new(
                &common::aggregate_config(200_000, context_stats()),
                Arc::new(Telemetry::default()),
            );
            b.iter_custom(|iters| {
                pass(&mut agg, iters, |agg, now| {
                    for m in &msgs {
                        agg.insert(m, now);
                    }
                })
            });
        });
    }
    group.finish();
}

/// Run `work` once per iteration at one second per pass (a bucket sees ten passes), flushing untimed between.
fn pass(agg: &mut Aggregator, iters: u64, work: impl Fn(&mut Aggregator, i64)) -> Duration {
    let mut spent = Duration::ZERO;
    let mut now = T0;
    for _ in 0..iters {
        let start = common::cpu_time();
        work(agg, now);
        spent += common::cpu_time() - start;
        now += 1;
        std::hint::black_box(agg.flush(now, false));
    }
    spent
}

/// CPU time of this thread: the 2 shared cores of a busy machine make wall time meaningless.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Heap and RSS per live context at 100k contexts (one open bucket each).
fn memory_per_context() {
    const N: usize = 100_000;
    let lines = corpus(N, N);
    let msgs = messages(&lines);
    let (heap0, rss0) = (LIVE.load(Relaxed), rss_bytes());
    let mut agg = Aggregator::new(
        &common::aggregate_config(N, context_stats()),
        Arc::new(Telemetry::default()),
    );
    for m in &msgs {
        agg.insert(m, T0);
    }
    let (heap1, rss1) = (LIVE.load(Relaxed), rss_bytes());
    println!(
        "memory: {} live contexts: heap {} B/context, RSS {} B/context (identity and tables: {} B/context)",
        agg.context_count(),
        (heap1 - heap0) / N,
        rss1.saturating_sub(rss0) / N,
        agg.context_bytes() / N,
    );
    drop(agg);
}

/// The fastest of many passes: on a shared machine the best pass is the closest to an idle core.
fn best_passes() {
    const LINES: usize = 100_000;
    for contexts in [1_000, 10_000, 100_000] {
        let lines = corpus(contexts, LINES);
        let datagrams = common::packets(&lines);
        let msgs = messages(&lines);
        let mut best = [Duration::MAX; 2];
        let mut aggs = [(); 2].map(|()| {
            Aggregator::new(
                &common::aggregate_config(200_000, context_stats()),
                Arc::new(Telemetry::default()),
            )
        });
        for round in 0..30 {
            let now = T0 + round;
            for (i, agg) in aggs.iter_mut().enumerate() {
                let start = common::cpu_time();
                if i == 0 {
                    for p in &datagrams {
                        agg.insert_packet(p, now);
                    }
                } else {
                    for m in &msgs {
                        agg.insert(m, now);
                    }
                }
                best[i] = best[i].min(common::cpu_time() - start);
                std::hint::black_box(agg.flush(now + 1, false));
            }
        }
        let rate = |d: Duration| LINES as f64 / d.as_secs_f64() / 1e6;
        println!(
            "best pass, {contexts} contexts: parse+insert {:.2} M lines/s, insert parsed {:.2} M lines/s",
            rate(best[0]),
            rate(best[1])
        );
    }
}

/// The hot workload: 80 % of the lines one name over 10,000 tag sets, the rest the usual corpus.
fn hot_corpus(contexts: usize, total: usize) -> Vec<String> {
    (0..total)
        .map(|n| {
            if n % 5 == 4 {
                common::corpus_line((n / 5) % contexts, n / contexts)
            } else {
                let h = (n - n / 5) % 10_000;
                format!(
                    "request.duration:{}|d|#endpoint:/api/v2/resource{}/items,status_code:{}",
                    n % 300,
                    h / 10,
                    [200, 201, 204, 301, 304, 400, 401, 404, 500, 503][h % 10]
                )
            }
        })
        .collect()
}

/// Several workers: the datagrams split by name and tag set as the receive threads split them, each share
/// aggregated by its own aggregator. Prints the routing cost and, per worker count, the best pass of the
/// busiest worker: the parse + aggregate capacity with one free core per worker. The hot workload shows
/// one name's contexts spread over the workers.
fn sharded_passes() {
    const LINES: usize = 100_000;
    for (workload, contexts) in [
        ("uniform", 1_000),
        ("uniform", 10_000),
        ("uniform", 100_000),
        ("hot", 1_000),
    ] {
        let lines = match workload {
            "hot" => hot_corpus(contexts, LINES),
            _ => corpus(contexts, LINES),
        };
        let datagrams = common::packets(&lines);
        for n in [2usize, 4] {
            let mut route_best = Duration::MAX;
            let mut shards: Vec<Vec<Vec<u8>>> = Vec::new();
            for _ in 0..10 {
                let start = common::cpu_time();
                shards = split(&datagrams, n);
                route_best = route_best.min(common::cpu_time() - start);
            }
            let telemetry = Arc::new(Telemetry::default());
            let mut aggs = Aggregator::sharded(
                &common::aggregate_config(200_000, context_stats()),
                &telemetry,
                n,
            );
            let mut best = vec![Duration::MAX; n];
            for round in 0..30 {
                let now = T0 + round;
                for (i, agg) in aggs.iter_mut().enumerate() {
                    let start = common::cpu_time();
                    for p in &shards[i] {
                        agg.insert_packet(p, now);
                    }
                    best[i] = best[i].min(common::cpu_time() - start);
                    std::hint::black_box(agg.flush(now + 1, false));
                }
            }
            let busiest = best.iter().max().copied().unwrap_or(Duration::MAX);
            let share: Vec<String> = shards
                .iter()
                .map(|s| {
                    let l: usize = s.iter().map(|p| p.split(|&b| b == b'\n').count()).sum();
                    format!("{:.0}%", 100.0 * l as f64 / LINES as f64)
                })
                .collect();
            println!(
                "sharded, {workload} {contexts} contexts, {n} workers: routing {:.1} ns/line, lines per worker {}, \
                 all workers' CPU {:.2} M lines/s per core; busiest worker done at {:.2} M lines/s \
                 (the rate with {n} free cores)",
                route_best.as_secs_f64() * 1e9 / LINES as f64,
                share.join("/"),
                LINES as f64 / best.iter().sum::<Duration>().as_secs_f64() / 1e6,
                LINES as f64 / busiest.as_secs_f64() / 1e6,
            );
        }
    }
}

/// The datagrams' lines, split by [`Route`] into per-worker packets of at most 8 KiB as a receive
/// thread splits them: one `memchr` per line, one copy per run of consecutive lines of one worker.
fn split(datagrams: &[Vec<u8>], n: usize) -> Vec<Vec<Vec<u8>>> {
    let route = Route::new(&common::aggregate_config(1, context_stats()).tags);
    let mut out: Vec<Vec<Vec<u8>>> = vec![vec![Vec::with_capacity(8192)]; n];
    let mut put = |q: usize, run: &[u8]| {
        let shard = &mut out[q];
        if shard.last().unwrap().len() + 1 + run.len() > 8192 {
            shard.push(Vec::with_capacity(8192));
        }
        let cur = shard.last_mut().unwrap();
        if !cur.is_empty() {
            cur.push(b'\n');
        }
        cur.extend_from_slice(run);
    };
    for d in datagrams {
        let (mut run_q, mut start, mut end, mut pos) = (0, 0, 0, 0);
        while pos < d.len() {
            let line_end = memchr::memchr(b'\n', &d[pos..]).map_or(d.len(), |i| pos + i);
            let q = route.shard(&d[pos..line_end], n);
            if q != run_q || start == end {
                if start < end {
                    put(run_q, &d[start..end]);
                }
                (run_q, start) = (q, pos);
            }
            end = line_end;
            pos = line_end + 1;
        }
        if start < end {
            put(run_q, &d[start..end]);
        }
    }
    out
}

fn memory(_: &mut Criterion) {
    memory_per_context();
    best_passes();
    sharded_passes();
}

criterion_group!(benches, memory, throughput);
criterion_main!(benches);

/// `OFFPATH_CONTEXT_STATS=false` turns the cardinality view off (on by default, as shipped).
fn context_stats() -> bool {
    std::env::var("OFFPATH_CONTEXT_STATS").map_or(true, |v| v != "false")
}
