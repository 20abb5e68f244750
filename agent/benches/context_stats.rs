//! What the cardinality view's bookkeeping (`OFFPATH_CONTEXT_STATS`) costs the aggregator: the same
//! fixed workload with it off and on, flushes included (the view is kept when contexts are made and
//! forgotten and at flush). 10,000 steady contexts plus 1,000 new ones every 10 s bucket, so contexts
//! are made and expire all along.
//!
//! `cargo bench -p offpath --bench context_stats` prints the best of 5 runs of each (thread CPU time).
//! For instruction counts, run one side under callgrind:
//! `valgrind --tool=callgrind target/release/deps/context_stats-<hash> off` (and `on`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use offpath::aggregate::Aggregator;
use offpath::config::{AggregateConfig, HistogramAggregate, MetricMapping};
use offpath::telemetry::Telemetry;

mod common;

const T0: i64 = 1_700_000_000;
const STEADY: usize = 10_000;
const CHURN: usize = 1_000;
const LINES_PER_ROUND: usize = 55_000;
const ROUNDS: usize = 12;

fn config(context_stats: bool) -> AggregateConfig {
    AggregateConfig {
        namespace: String::new(),
        tags: vec!["env:prod".into()],
        hostname: "bench-host".into(),
        histogram_aggregates: vec![HistogramAggregate::Max, HistogramAggregate::Count],
        histogram_percentiles: vec![0.95],
        context_limit: NonZeroUsize::new(200_000).unwrap(),
        mapping: MetricMapping::Agent,
        workers: NonZeroUsize::MIN,
        own_names: Vec::new(),
        filter: offpath::enrich::FilterConfig::default(),
        context_stats,
    }
}

/// The packets of one 10 s round: every steady context and this round's new ones, several lines each.
fn round_packets(round: usize) -> Vec<Vec<u8>> {
    let contexts = STEADY + CHURN;
    let mut out = Vec::new();
    for n in 0..LINES_PER_ROUND {
        let i = n % contexts;
        let id = if i < STEADY {
            i
        } else {
            STEADY + round * CHURN + (i - STEADY)
        };
        let (kind, name) = match id % 10 {
            0..=5 => ("c", "http.requests"),
            6 | 7 => ("g", "queue.depth"),
            8 => ("ms", "http.latency"),
            _ => ("d", "db.query.time"),
        };
        let line = format!(
            "{name}.{}:{}|{kind}|#endpoint:/api/v1/item{},status:{},shard:{id}",
            id % 50,
            (n * 7) % 500,
            id % 97,
            200 + id % 5
        );
        common::push_line(&mut out, line.as_bytes());
    }
    out
}

/// Run the workload once; returns the thread CPU time and the series flushed.
fn run(rounds: &[Vec<Vec<u8>>], context_stats: bool) -> (Duration, usize) {
    let mut agg = Aggregator::new(&config(context_stats), Arc::new(Telemetry::default()));
    let mut series = 0;
    let start = common::cpu_time();
    for (r, packets) in rounds.iter().enumerate() {
        let now = T0 + 10 * r as i64;
        for p in packets {
            agg.insert_packet(p, now);
        }
        series += agg.flush(now + 10, false).series.len();
    }
    (common::cpu_time() - start, series)
}

fn main() {
    let rounds: Vec<Vec<Vec<u8>>> = (0..ROUNDS).map(round_packets).collect();
    let lines = (ROUNDS * LINES_PER_ROUND) as f64;
    // One side only (for callgrind): `off` or `on`.
    if let Some(side) = std::env::args().skip(1).find(|a| a == "on" || a == "off") {
        let (t, series) = run(&rounds, side == "on");
        println!(
            "context stats {side}: {series} series, {:.2} M lines/s",
            lines / t.as_secs_f64() / 1e6
        );
        return;
    }
    let mut best = [Duration::MAX; 2];
    for _ in 0..5 {
        for (i, on) in [false, true].into_iter().enumerate() {
            best[i] = best[i].min(run(&rounds, on).0);
        }
    }
    let rate = |d: Duration| lines / d.as_secs_f64() / 1e6;
    println!(
        "aggregate with flushes, {STEADY} contexts + {CHURN} new per bucket: context stats off {:.2} M \
         lines/s, on {:.2} M lines/s ({:+.1} % CPU time)",
        rate(best[0]),
        rate(best[1]),
        (best[1].as_secs_f64() / best[0].as_secs_f64() - 1.0) * 100.0
    );
}
