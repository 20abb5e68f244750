//! What several benches share: the calling thread's CPU time and the aggregator settings and the metric
//! lines of the aggregate and hot-path benches. Not every bench uses every item.
#![allow(dead_code, clippy::unwrap_used)]

use std::num::NonZeroUsize;
use std::time::Duration;

use offpath::config::{AggregateConfig, HistogramAggregate, MetricMapping};

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): on a shared machine, time the thread
/// did not run is not counted.
pub fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One worker with the Agent's defaults (two global tags, max/median/avg/count and the 95th
/// percentile), `limit` live contexts and the cardinality view on or off.
pub fn aggregate_config(limit: usize, context_stats: bool) -> AggregateConfig {
    AggregateConfig {
        namespace: String::new(),
        tags: vec!["env:prod".into(), "service:checkout".into()],
        hostname: "bench-host".into(),
        histogram_aggregates: HistogramAggregate::AGENT_DEFAULT.to_vec(),
        histogram_percentiles: HistogramAggregate::AGENT_DEFAULT_PERCENTILES.to_vec(),
        context_limit: NonZeroUsize::new(limit).unwrap(),
        mapping: MetricMapping::Agent,
        filter: offpath::enrich::FilterConfig::default(),
        workers: NonZeroUsize::MIN,
        own_names: Vec::new(),
        context_stats,
    }
}

/// One line of context `i`: a realistic mix (60 % counts, 20 % gauges, 10 % timers, 10 % distributions), 4 tags.
pub fn corpus_line(i: usize, round: usize) -> String {
    let (kind, name) = match i % 10 {
        0..=5 => ("c", "http.requests"),
        6 | 7 => ("g", "queue.depth"),
        8 => ("ms", "http.latency"),
        _ => ("d", "db.query.time"),
    };
    let value = (i * 7 + round * 13) % 500;
    format!(
        "{name}.{}:{value}|{kind}|#endpoint:/api/v1/item{},status:{},region:eu-west-{},shard:{i}",
        i % 50,
        i % 97,
        200 + i % 5,
        i % 3
    )
}

/// Append `line` to the last datagram of `out` (after a `\n`), or to a new one when it would pass 8 KiB
/// (the Agent's default buffer).
pub fn push_line(out: &mut Vec<Vec<u8>>, line: &[u8]) {
    if out
        .last()
        .is_none_or(|c| !c.is_empty() && c.len() + 1 + line.len() > 8192)
    {
        out.push(Vec::new());
    }
    let cur = out.last_mut().unwrap();
    if !cur.is_empty() {
        cur.push(b'\n');
    }
    cur.extend_from_slice(line);
}

/// `lines` as datagrams of at most 8 KiB, lines separated by `\n`.
pub fn packets(lines: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for l in lines {
        push_line(&mut out, l.as_bytes());
    }
    out
}
