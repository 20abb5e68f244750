//! Several aggregate workers flush exactly what one would: the receive side's split by name and tag set
//! ([`Sink`] with one queue per worker) feeding [`Aggregator::sharded`] gives, for any packet stream, the
//! same series, sketches, events, service checks and counters as one [`Aggregator`] (series in another
//! order).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_channel::Receiver;
use proptest::prelude::*;

use super::packet::{Pool, Sink};
use super::*;
use crate::aggregate::{Aggregator, Workers};
use crate::config::{AggregateConfig, HistogramAggregate, MetricMapping};
use crate::model::Flush;
use crate::telemetry::{ListenerStats, PacketDrop, Telemetry};

const T0: i64 = 1_700_000_000;
const BUFFER: usize = 8192;

fn config(context_limit: usize) -> AggregateConfig {
    AggregateConfig {
        namespace: "ns.".to_owned(),
        tags: vec!["env:prod".to_owned(), "team:a".to_owned()],
        hostname: "box".to_owned(),
        histogram_aggregates: vec![
            HistogramAggregate::Max,
            HistogramAggregate::Min,
            HistogramAggregate::Median,
            HistogramAggregate::Avg,
            HistogramAggregate::Sum,
            HistogramAggregate::Count,
        ],
        histogram_percentiles: vec![0.5, 0.95],
        context_limit: NonZeroUsize::new(context_limit).unwrap(),
        mapping: MetricMapping::Agent,
        workers: NonZeroUsize::MIN,
        own_names: Vec::new(),
        filter: crate::enrich::FilterConfig::default(),
        context_stats: false,
    }
}

/// A flush in a canonical order: series and sketches sorted by everything they hold.
fn canonical(mut f: Flush) -> Flush {
    f.series.sort_by_cached_key(|s| format!("{s:?}"));
    f.sketches.sort_by_cached_key(|s| format!("{s:?}"));
    f
}

/// The counters a flush's accounting is checked against.
fn counters(t: &Telemetry) -> Vec<u64> {
    let mut all = vec![
        t.points.received.load(Relaxed),
        t.parse.metrics.load(Relaxed),
        t.parse.events.load(Relaxed),
        t.parse.service_checks.load(Relaxed),
    ];
    all.extend(t.points.dropped.iter().map(|c| c.load(Relaxed)));
    all.extend(t.parse.errors.iter().map(|c| c.load(Relaxed)));
    all
}

/// One step of a stream: a datagram received at `T0 + at`, or a flush.
#[derive(Debug, Clone)]
enum Step {
    Packet { at: i64, data: Vec<u8> },
    Flush { at: i64, final_flush: bool },
}

/// A receive thread's sink over `n` queues, and the queues' consumer ends.
fn sink(n: usize) -> (Sink, Vec<Receiver<Packet>>, Arc<ListenerStats>) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::bounded(4096)).unzip();
    let stats = Arc::new(ListenerStats::default());
    (
        Sink::new(txs, Pool::new(BUFFER, 16), Arc::clone(&stats))
            .with_route(Route::new(&config(1).tags)),
        rxs,
        stats,
    )
}

/// The flushes (canonical) and counters of one aggregator fed every datagram whole.
fn single(steps: &[Step], limit: usize) -> (Vec<Flush>, Vec<u64>) {
    single_looking_ahead(steps, limit, false)
}

/// [`single`], inserting every packet looking ahead (as with many contexts) when `ahead`.
fn single_looking_ahead(steps: &[Step], limit: usize, ahead: bool) -> (Vec<Flush>, Vec<u64>) {
    let telemetry = Arc::new(Telemetry::default());
    let mut agg = Aggregator::new(&config(limit), Arc::clone(&telemetry));
    if ahead {
        agg.look_ahead_always();
    }
    let mut flushes = Vec::new();
    for step in steps {
        match step {
            Step::Packet { at, data } => agg.insert_packet(data, T0 + at),
            Step::Flush { at, final_flush } => {
                flushes.push(canonical(agg.flush(T0 + at, *final_flush)));
            }
        }
    }
    (flushes, counters(&telemetry))
}

/// The same through a sink splitting datagrams over `n` queues into `n` sharded aggregators; several
/// datagrams are joined per batch, as a receive thread does.
fn sharded(steps: &[Step], limit: usize, n: usize) -> (Vec<Flush>, Vec<u64>) {
    let telemetry = Arc::new(Telemetry::default());
    let mut aggs = Aggregator::sharded(&config(limit), &telemetry, n);
    let (mut sink, queues, stats) = sink(n);
    let mut flushes = Vec::new();
    let mut last_at = 0;
    let drain = |sink: &mut Sink, aggs: &mut [Aggregator], at: i64| {
        sink.commit();
        for (agg, q) in aggs.iter_mut().zip(&queues) {
            for p in q.try_iter() {
                agg.insert_packet(p.data(), T0 + at);
            }
        }
    };
    for step in steps {
        match step {
            Step::Packet { at, data } => {
                // Datagrams of one second form one batch.
                if *at != last_at {
                    drain(&mut sink, &mut aggs, last_at);
                    last_at = *at;
                }
                sink.push_copy(data);
            }
            Step::Flush { at, final_flush } => {
                drain(&mut sink, &mut aggs, last_at);
                let mut merged = Flush::default();
                for agg in &mut aggs {
                    let f = agg.flush(T0 + at, *final_flush);
                    merged.series.extend(f.series);
                    merged.sketches.extend(f.sketches);
                    merged.events.extend(f.events);
                    merged.service_checks.extend(f.service_checks);
                }
                flushes.push(canonical(merged));
            }
        }
    }
    assert_eq!(
        stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed),
        0
    );
    (flushes, counters(&telemetry))
}

fn metric_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "req",
        "lat",
        "a.b.c",
        "jvm.heap",
        "datadog.agent.up",
        "q",
        "_sc_not",
    ]);
    let kind = prop::sample::select(vec!["c", "g", "s", "h", "ms", "d"]);
    let value = prop_oneof![
        4 => (-20i32..200).prop_map(|v| v.to_string()),
        2 => (0u32..1000).prop_map(|v| format!("{}", f64::from(v) / 7.0)),
        1 => prop::collection::vec(0u32..50, 2..5).prop_map(|v| {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
        }),
        1 => Just("nan".to_owned()),
    ];
    let rate = prop::sample::select(vec!["", "", "|@0.5", "|@0.1"]);
    let tags = prop::collection::vec(
        prop::sample::select(vec![
            "a:1",
            "a:2",
            "b",
            "host:h1",
            "host:h2",
            "host:box",
            "env:prod",
            "dd.internal.card:low",
            "",
        ]),
        0..5,
    );
    let ts = prop::sample::select(vec![None, None, None, Some(T0 - 30), Some(T0 + 3)]);
    (name, kind, value, rate, tags, ts).prop_map(|(name, kind, value, rate, tags, ts)| {
        let mut line = format!("{name}:{value}|{kind}{rate}");
        if !tags.is_empty() {
            line.push_str("|#");
            line.push_str(&tags.join(","));
        }
        if let Some(ts) = ts {
            line.push_str(&format!("|T{ts}"));
        }
        line
    })
}

fn any_line() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => metric_line(),
        1 => (0u32..3).prop_map(|i| format!("_e{{5,4}}:title|tex{i}|#a:1,host:h1")),
        1 => (0u32..3).prop_map(|s| format!("_sc|check|{s}|#b,a:2")),
        1 => prop::sample::select(vec!["nocolon", "x:|c", "y:1|q", "_sc|bad", "\r", ""])
            .prop_map(str::to_owned),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let datagram = (
        prop::collection::vec(any_line(), 1..12),
        prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
    )
        .prop_map(|(lines, sep)| lines.join(sep).into_bytes());
    let step = prop_oneof![
        12 => (0i64..4, datagram).prop_map(|(dt, data)| Step::Packet { at: dt, data }),
        1 => (0i64..15, any::<bool>()).prop_map(|(dt, final_flush)| Step::Flush { at: dt, final_flush }),
    ];
    prop::collection::vec(step, 1..60).prop_map(|raw| {
        // Make time move forward: each step's `at` is a delta.
        let mut at = 0;
        let mut out: Vec<Step> = raw
            .into_iter()
            .map(|s| match s {
                Step::Packet { at: dt, data } => {
                    at += dt;
                    Step::Packet { at, data }
                }
                Step::Flush {
                    at: dt,
                    final_flush,
                } => {
                    at += dt;
                    Step::Flush { at, final_flush }
                }
            })
            .collect();
        out.push(Step::Flush {
            at: at + 1,
            final_flush: true,
        });
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn two_and_three_workers_flush_what_one_flushes(steps in steps()) {
        let (want, want_counters) = single(&steps, 100_000);
        for n in [2, 3] {
            let (got, got_counters) = sharded(&steps, 100_000, n);
            prop_assert_eq!(&got, &want, "{} workers", n);
            prop_assert_eq!(&got_counters, &want_counters, "{} workers", n);
        }
    }

    #[test]
    fn looking_ahead_flushes_what_inserting_line_by_line_flushes(steps in steps()) {
        // A large limit, and one that refuses contexts.
        for limit in [100_000, 5] {
            let (want, want_counters) = single(&steps, limit);
            let (got, got_counters) = single_looking_ahead(&steps, limit, true);
            prop_assert_eq!(&got, &want, "limit {}", limit);
            prop_assert_eq!(&got_counters, &want_counters, "limit {}", limit);
        }
    }
}

#[test]
fn one_queue_keeps_datagrams_whole() {
    let (mut sink, queues, _) = sink(1);
    sink.push_copy(b"a:1|c\nb:2|c");
    sink.push_copy(b"c:3|c");
    sink.commit();
    let got: Vec<Vec<u8>> = queues[0].try_iter().map(|p| p.data().to_vec()).collect();
    assert_eq!(got, [b"a:1|c\nb:2|c\nc:3|c".to_vec()]);
}

#[test]
fn several_queues_get_every_line_of_their_names_and_nothing_else() {
    let n = 3;
    let (mut sink, queues, _) = sink(n);
    let lines: Vec<String> = (0..300)
        .map(|i| format!("m{}:{i}|c|#t:{i}", i % 17))
        .collect();
    for chunk in lines.chunks(7) {
        sink.push_copy(chunk.join("\n").as_bytes());
    }
    sink.push_copy(b"_e{1,1}:a|b\n_sc|x|0");
    sink.commit();
    let mut seen = 0;
    for (q, rx) in queues.iter().enumerate() {
        for p in rx.try_iter() {
            assert!(p.data().len() <= BUFFER);
            for line in p.data().split(|&b| b == b'\n') {
                assert_eq!(shard_of(line, n), q);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 302);
}

#[test]
fn a_full_queue_counts_each_datagram_it_held_lines_of_once() {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| crossbeam_channel::bounded(1)).unzip();
    let stats = Arc::new(ListenerStats::default());
    let mut sink = Sink::new(txs, Pool::new(64, 4), Arc::clone(&stats));
    // Find two names, one per queue.
    let name = |q: usize| {
        (0..)
            .map(|i| format!("n{i}"))
            .find(|n| shard_of(format!("{n}:1|c").as_bytes(), 2) == q)
            .unwrap()
    };
    let (a, b) = (name(0), name(1));
    // Three datagrams with lines for both queues in one batch, then one more batch: the second batch's
    // packets find both queues full.
    for _ in 0..3 {
        sink.push_copy(format!("{a}:1|c\n{b}:1|c\n{a}:2|c").as_bytes());
    }
    sink.commit();
    sink.push_copy(format!("{a}:1|c\n{b}:1|c").as_bytes());
    sink.commit();
    assert_eq!(rxs.iter().map(|q| q.try_iter().count()).sum::<usize>(), 2);
    // Two packets of one datagram each dropped.
    assert_eq!(
        stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed),
        2
    );
}

#[test]
fn sharded_aggregators_share_one_context_limit() {
    let telemetry = Arc::new(Telemetry::default());
    let mut aggs = Aggregator::sharded(&config(10), &telemetry, 3);
    for i in 0..40 {
        let line = format!("m{i}:1|c");
        let q = shard_of(line.as_bytes(), 3);
        aggs[q].insert_packet(line.as_bytes(), T0);
    }
    assert_eq!(
        aggs.iter().map(Aggregator::context_count).sum::<usize>(),
        10
    );
    assert_eq!(
        telemetry.points.dropped[crate::telemetry::PointDrop::ContextLimit as usize].load(Relaxed),
        30
    );
    // Expired contexts give their room back to every shard.
    for agg in &mut aggs {
        agg.flush(T0 + 100, true);
        agg.flush(T0 + 100, false);
    }
    assert_eq!(aggs.iter().map(Aggregator::context_count).sum::<usize>(), 0);
    for i in 100..120 {
        let line = format!("m{i}:1|c");
        aggs[shard_of(line.as_bytes(), 3)].insert_packet(line.as_bytes(), T0 + 100);
    }
    assert_eq!(
        aggs.iter().map(Aggregator::context_count).sum::<usize>(),
        10
    );
}

static CLOCK: AtomicI64 = AtomicI64::new(T0);

fn clock() -> i64 {
    CLOCK.load(Relaxed)
}

#[test]
fn worker_threads_answer_one_merged_flush_covering_everything_queued() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let lines: Vec<String> = (0..2000)
        .map(|i| match i % 4 {
            0 => format!("c{}:1|c|#k:{}", i % 31, i % 5),
            1 => format!("g{}:{i}|g", i % 13),
            2 => format!("d{}:{}|d", i % 7, i % 100),
            _ => format!("s{}:{}|s", i % 3, i % 50),
        })
        .collect();
    let datagrams: Vec<String> = lines.chunks(20).map(|c| c.join("\n")).collect();
    let telemetry = Arc::new(Telemetry::default());
    let mut one = Aggregator::new(&config(100_000), Arc::clone(&telemetry));
    for d in &datagrams {
        one.insert_packet(d.as_bytes(), T0);
    }
    let want = canonical(one.flush(T0, true));

    let telemetry = Arc::new(Telemetry::default());
    let (workers, queues) = Workers::start::<Packet>(
        Aggregator::sharded(&config(100_000), &telemetry, 3),
        // Room for everything: the whole stream is queued before the flush.
        1024,
        clock,
    )
    .unwrap();
    assert_eq!(workers.count(), 3);
    let stats = Arc::new(ListenerStats::default());
    let mut sink =
        Sink::new(queues, Pool::new(BUFFER, 16), Arc::clone(&stats)).with_route(workers.route());
    for d in &datagrams {
        sink.push_copy(d.as_bytes());
        sink.commit();
    }
    // The listeners stop: the queues close after the last packet.
    drop(sink);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = runtime.block_on(workers.flush(true, deadline));
    assert_eq!((got.answered, got.asked), (3, 3));
    assert_eq!(canonical(got.flush), want);
    assert_eq!(telemetry.points.received.load(Relaxed), 2000);
    assert!(
        runtime
            .block_on(workers.flush(true, deadline))
            .flush
            .is_empty()
    );
    workers.join();
}

#[test]
fn a_hot_names_contexts_spread_over_the_workers_and_flush_what_one_flushes() {
    // One name, 600 tag sets, each sent in both tag orders, with a global tag, the configured host and a
    // metadata tag on some lines.
    let mut lines = Vec::new();
    for endpoint in 0..60 {
        for status in 0..10 {
            lines.push(format!("hot:1|c|#endpoint:e{endpoint},status:{status}"));
            lines.push(format!(
                "hot:2|c|#status:{status},env:prod,endpoint:e{endpoint},host:box,dd.internal.card:low"
            ));
        }
    }
    let datagrams: Vec<Vec<u8>> = lines.chunks(9).map(|c| c.join("\n").into_bytes()).collect();
    let mut steps: Vec<Step> = datagrams
        .iter()
        .map(|d| Step::Packet {
            at: 0,
            data: d.clone(),
        })
        .collect();
    steps.push(Step::Flush {
        at: 20,
        final_flush: true,
    });
    let (want, want_counters) = single(&steps, 100_000);
    assert_eq!(want[0].series.len(), 600);
    let (got, got_counters) = sharded(&steps, 100_000, 3);
    assert_eq!(got, want);
    assert_eq!(got_counters, want_counters);
    // Every worker gets a fair share of the name's lines.
    let (mut sink, queues, _) = sink(3);
    for d in &datagrams {
        sink.push_copy(d);
    }
    sink.commit();
    for q in &queues {
        let n: usize = q
            .try_iter()
            .map(|p| p.data().split(|&b| b == b'\n').count())
            .sum();
        assert!((250..550).contains(&n), "{n} of 1200 lines in one queue");
    }
}
