//! `offpath-fake-intake`: the test suite's fake Datadog intake ([`offpath_tests::fake_intake`]) as a
//! process, for benchmarks (`packaging/bench/`).
//!
//! Prints `{"url":"http://127.0.0.1:<port>"}` on stdout once it listens (point `DD_DD_URL` at it).
//! When its stdin closes, it prints one JSON line of totals over what it accepted and exits:
//!
//! - `count_sum`: Σ value × interval over the series `<prefix>.count.*` (every loadgen count line
//!   carries 1, so this is the number of count lines delivered);
//! - `histogram_count_sum`: the same over `<prefix>.histogram.*.count` (histogram samples delivered);
//! - `sketch_count_sum`: Σ `cnt` over the sketches `<prefix>.distribution.*` (distribution samples);
//! - `contexts`: distinct (name, tags) of the generator's contexts seen (histogram contexts once);
//! - `series`, `sketches`, `points`, `requests`, `violations` as the intake counted them.

use std::collections::HashSet;
use std::io::Read;

use offpath_proto::metric_payload::MetricType;
use offpath_tests::fake_intake::FakeIntake;
use serde_json::json;

/// Metric names per type the generator uses (`<prefix>.<type>.m<0..500>`).
const NAMES_PER_TYPE: usize = 500;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: offpath-fake-intake [--prefix loadgen] [--api-key KEY]\n\nPrints {{\"url\":..}} when ready; prints totals as JSON and exits when stdin closes."
        );
        return Ok(());
    }
    let prefix = arg("--prefix", "loadgen");
    let intake = FakeIntake::start(&arg("--api-key", &"0".repeat(32))).await;
    println!("{}", json!({ "url": intake.url() }));
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;

    let (count, histogram, distribution) = (
        format!("{prefix}.count."),
        format!("{prefix}.histogram."),
        format!("{prefix}.distribution."),
    );
    let mut count_sum = 0.0;
    let mut histogram_count_sum = 0.0;
    let mut contexts = HashSet::new();
    let series = intake.all_series();
    for s in &series {
        let total = |s: &offpath_tests::fake_intake::ReceivedSeries| -> f64 {
            let per_point = match s.metric_type {
                MetricType::Rate => s.interval.max(1) as f64,
                _ => 1.0,
            };
            s.points.iter().map(|(_, v)| v * per_point).sum()
        };
        if s.metric.starts_with(&count) {
            count_sum += total(s);
        } else if s.metric.starts_with(&histogram) {
            if s.metric.ends_with(".count") {
                histogram_count_sum += total(s);
            } else {
                continue;
            }
        } else if !s.metric.starts_with(&format!("{prefix}.")) {
            continue;
        }
        contexts.insert((
            s.metric.trim_end_matches(".count").to_owned(),
            s.tags.clone(),
        ));
    }
    let mut sketch_count_sum = 0i64;
    let mut sketches = 0usize;
    for n in 0..NAMES_PER_TYPE {
        for s in intake.sketches(&format!("{distribution}m{n}"), &[]) {
            sketches += 1;
            sketch_count_sum += s.dogsketches.iter().map(|d| d.cnt).sum::<i64>();
            contexts.insert((s.metric.clone(), s.tags.clone()));
        }
    }
    println!(
        "{}",
        json!({
            "count_sum": count_sum.round() as u64,
            "histogram_count_sum": histogram_count_sum.round() as u64,
            "sketch_count_sum": sketch_count_sum,
            "contexts": contexts.len(),
            "series": series.len(),
            "sketches": sketches,
            "points": intake.series_point_count(),
            "requests": intake.requests().len(),
            "violations": intake.violations(),
        })
    );
    Ok(())
}
