//! The parse + aggregate hot path of one worker, for instruction counts and quick timings.
//!
//! `cargo bench -p offpath --bench hotpath -- [contexts] [passes] [uniform|hot] [stats-on|stats-off]`
//! (defaults 10000, 20, uniform, stats-on: the cardinality view as shipped, `OFFPATH_CONTEXT_STATS`)
//! inserts 100,000 lines as 8 KiB packets once (making the contexts), then `passes` more times in
//! [`measured`], and prints the best pass in lines per second of thread CPU time. For instruction counts
//! per line, run the built binary under callgrind with collection on in `measured` only:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='*hotpath*measured*' target/release/deps/hotpath-* 10000 3
//! ```
//!
//! and divide the total `Ir` by `passes × 100,000`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use offpath::aggregate::Aggregator;
use offpath::telemetry::Telemetry;

mod common;

const T0: i64 = 1_700_000_000;
const LINES: usize = 100_000;

/// 80 % of the lines one count name over `contexts` tag sets, the rest uniform lines.
fn hot_line(n: usize, contexts: usize) -> String {
    if n % 5 == 4 {
        return common::corpus_line((n / 5) % 1000, n);
    }
    let h = n % contexts;
    format!(
        "request.count:1|c|#endpoint:/api/v2/resource{}/items,status_code:{}",
        h / 10,
        [200, 201, 204, 301, 304, 400, 401, 404, 500, 503][h % 10]
    )
}

/// The measured work: every packet inserted once.
#[inline(never)]
fn measured(agg: &mut Aggregator, datagrams: &[Vec<u8>], now: i64) {
    for p in datagrams {
        agg.insert_packet(std::hint::black_box(p), now);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; take the numbers and the workload from what is left.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let contexts: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let passes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let hot = args.get(2).is_some_and(|a| a == "hot");
    let stats = args.get(3).is_none_or(|a| a != "stats-off");
    let lines: Vec<String> = (0..LINES)
        .map(|n| match hot {
            true => hot_line(n, contexts),
            false => common::corpus_line(n % contexts, n / contexts),
        })
        .collect();
    let datagrams = common::packets(&lines);
    let mut agg = Aggregator::new(
        &common::aggregate_config(1_000_000, stats),
        Arc::new(Telemetry::default()),
    );
    // Make every context first; the passes then find them (a bucket sees every pass: same `now`).
    warm_up(&mut agg, &datagrams);
    let mut best = Duration::MAX;
    for _ in 0..passes {
        let start = common::cpu_time();
        measured(&mut agg, &datagrams, T0);
        best = best.min(common::cpu_time() - start);
    }
    println!(
        "hotpath: {} {contexts} contexts ({} live, context stats {}), {passes} passes of {LINES} lines: best {:.2} M lines/s \
         ({:.0} ns/line)",
        if hot { "hot" } else { "uniform" },
        agg.context_count(),
        if stats { "on" } else { "off" },
        LINES as f64 / best.as_secs_f64() / 1e6,
        best.as_secs_f64() * 1e9 / LINES as f64
    );
}

#[inline(never)]
fn warm_up(agg: &mut Aggregator, datagrams: &[Vec<u8>]) {
    for p in datagrams {
        agg.insert_packet(p, T0);
    }
}
