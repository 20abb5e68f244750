//! DogStatsD parse throughput on one core over a realistic corpus (see `corpus/mod.rs`).
//!
//! `cargo bench -p offpath --bench parse`; criterion reports lines per second ("elem/s").
//! The baselines show where the time goes: splitting packets into lines, and the once-per-packet UTF-8 check.
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a shared machine the time the
//! benchmark spends descheduled is not counted, so the figure stays "lines per second on one core".

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use offpath::dogstatsd::{Message, MetricValue, parse_packet};
use offpath::enrich::{Filter, FilterConfig, Verdict, parse_profiles};

mod corpus;

const LINES: usize = 20_000;
const PACKET: usize = 8192;

fn parse(c: &mut Criterion<ThreadCpuTime>) {
    let packets = corpus::packets(42, LINES, PACKET);
    let lines = corpus::line_count(&packets);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {lines} lines in {} packets, {bytes} bytes ({} bytes/line)",
        packets.len(),
        bytes / lines
    );

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines as u64));

    group.bench_function("parse_packet", |b| {
        b.iter(|| {
            for packet in &packets {
                for message in parse_packet(black_box(packet)) {
                    let _ = black_box(message);
                }
            }
        });
    });

    // What the aggregator does on top: walk every value and every tag.
    group.bench_function("parse_packet+values+tags", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            let mut tag_bytes = 0;
            for packet in &packets {
                for message in parse_packet(black_box(packet)) {
                    if let Ok(Message::Metric(m)) = message {
                        match m.value {
                            MetricValue::Single(v) => sum += v,
                            MetricValue::Packed(p) => sum += p.iter().sum::<f64>(),
                            MetricValue::Set(s) => tag_bytes += s.len(),
                        }
                        tag_bytes += m.tags.iter().map(str::len).sum::<usize>();
                    }
                }
            }
            black_box((sum, tag_bytes))
        });
    });

    // With mapper profiles and a blocklist (`dogstatsd_mapper_profiles`, `metric_filterlist`): what the
    // aggregator adds per metric line when they are configured (a cache lookup for names under a
    // profile's prefix, a binary search in the list). Unconfigured, the aggregator holds no filter.
    let mut filter = corpus_filter();
    group.bench_function("parse_packet+map+blocklist", |b| {
        b.iter(|| {
            let (mut kept, mut tag_bytes) = (0usize, 0usize);
            for packet in &packets {
                for message in parse_packet(black_box(packet)) {
                    if let Ok(Message::Metric(m)) = message {
                        match filter.check(m.name, |_| true) {
                            Verdict::Keep => kept += m.name.len(),
                            Verdict::Mapped(slot) => {
                                if let Some((name, tags)) = filter.mapped(slot) {
                                    kept += name.len();
                                    tag_bytes += tags.iter().map(String::len).sum::<usize>();
                                }
                            }
                            Verdict::Drop => {}
                        }
                        tag_bytes += m.tags.iter().map(str::len).sum::<usize>();
                    }
                }
            }
            black_box((kept, tag_bytes))
        });
    });

    // Baselines.
    group.bench_function("baseline_split_lines", |b| {
        b.iter(|| {
            let mut n = 0;
            for packet in &packets {
                n += memchr::memchr_iter(b'\n', black_box(packet)).count() + 1;
            }
            black_box(n)
        });
    });
    group.bench_function("baseline_utf8_check", |b| {
        b.iter(|| {
            let mut ok = 0;
            for packet in &packets {
                ok += usize::from(std::str::from_utf8(black_box(packet)).is_ok());
            }
            black_box(ok)
        });
    });
    group.finish();
}

/// Two wildcard profiles and a regex one over the corpus's names (`<service>.<component>.<what>`), and a
/// prefix blocklist (under the namespace `app.`). Without the `mapper` feature, the blocklist alone.
fn corpus_filter() -> Box<Filter> {
    const PROFILES: &str = r#"[
        {"name": "payments", "prefix": "payments.", "mappings": [
            {"match": "payments.*.*.*", "name": "payments.$1.$3", "tags": {"part": "$2"}},
            {"match": "payments.*.*", "name": "payments.$2", "tags": {"component": "$1"}}]},
        {"name": "checkout", "prefix": "checkout.", "mappings": [
            {"match": "checkout.*.*", "name": "checkout.$2", "tags": {"component": "$1"}}]},
        {"name": "search", "prefix": "search.", "mappings": [
            {"match": "search\\.(?P<component>[a-z_.]+)\\.(?P<what>[a-z_]+)", "match_type": "regex",
             "name": "search.${what}", "tags": {"component": "${component}"}}]}
    ]"#;
    let cfg = FilterConfig {
        profiles: parse_profiles(PROFILES).unwrap_or_default(),
        blocklist: vec!["app.gateway.cache.".into(), "app.auth.api.in_flight".into()],
        match_prefix: true,
        ..FilterConfig::default()
    };
    match Filter::new(&cfg, "app.") {
        Some(f) => f,
        None => unreachable!("a blocklist is configured"),
    }
}

/// Thread CPU time as a criterion measurement (same units and formatting as wall time: nanoseconds).
struct ThreadCpuTime;

static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = parse
}
criterion_main!(benches);
