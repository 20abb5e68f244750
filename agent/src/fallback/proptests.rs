//! Property test over the record writer and reader: whatever a flush holds (any strings, any float
//! including NaN, ±inf and subnormals, any timestamps), every line the writer produces in every format is
//! one `offpath replay` reads (an `offpath` record, or a line it skips as not being one), holds no JSON
//! `null`, and the samples of what was written plus what was left out add up to the flush's samples.

use proptest::prelude::*;

use super::records::{Formatter, Parsed, RecordError, parse_record};
use crate::config::{FallbackConfig, FallbackFormat, FallbackSink};
use crate::model::{
    AlertType, DogSketch, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};

/// Floats with the awkward ones well represented.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::NAN),
        1 => Just(f64::MAX),
        1 => Just(-f64::MAX),
        1 => Just(5e-324),
        1 => Just(-0.0),
        2 => -1e6..1e6f64,
    ]
}

/// Strings with JSON's special characters, control bytes, non-ASCII and the names records use.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z._:]{0,12}",
        2 => any::<String>(),
        1 => Just("offpath".to_owned()),
        1 => Just("_aws".to_owned()),
        1 => Just("host".to_owned()),
        1 => Just("offpath:1".to_owned()),
        1 => Just("\"\\\n\u{0}\u{1f}\u{7f}é😀".to_owned()),
    ]
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn series() -> impl Strategy<Value = Series> {
    (
        text(),
        tags(),
        text(),
        prop_oneof![
            Just(SeriesKind::Rate),
            Just(SeriesKind::Count),
            Just(SeriesKind::Gauge)
        ],
        prop_oneof![Just(10u32), any::<u32>()],
        prop::collection::vec((any::<i64>(), float()), 1..6),
        0u64..1_000_000,
    )
        .prop_map(
            |(name, tags, host, kind, interval, points, samples)| Series {
                name,
                tags,
                host,
                kind,
                interval,
                points,
                samples,
            },
        )
}

fn dogsketch() -> impl Strategy<Value = DogSketch> {
    (
        any::<i64>(),
        any::<i64>(),
        (float(), float(), float(), float()),
        prop::collection::vec((-4096i32..4096, 0u32..70_000), 0..6),
    )
        .prop_map(|(ts, cnt, (min, max, sum, avg), bins)| {
            let mut bins = bins;
            bins.sort_by_key(|b| b.0);
            bins.dedup_by_key(|b| b.0);
            DogSketch {
                ts,
                cnt,
                min,
                max,
                sum,
                avg,
                k: bins.iter().map(|b| b.0).collect(),
                n: bins.iter().map(|b| b.1.min(65_535)).collect(),
            }
        })
}

fn sketch_series() -> impl Strategy<Value = SketchSeries> {
    (
        text(),
        tags(),
        text(),
        prop::collection::vec(dogsketch(), 1..4),
        0u64..1_000_000,
    )
        .prop_map(|(name, tags, host, sketches, samples)| SketchSeries {
            name,
            tags,
            host,
            sketches,
            samples,
        })
}

fn event() -> impl Strategy<Value = Event> {
    (
        (text(), text(), any::<i64>()),
        (any::<bool>(), 0u8..4),
        (text(), text(), text(), tags()),
    )
        .prop_map(
            |((title, text, ts), (low, alert), (aggregation_key, source_type_name, host, tags))| {
                Event {
                    title,
                    text,
                    ts,
                    priority: if low { Priority::Low } else { Priority::Normal },
                    alert_type: match alert {
                        0 => AlertType::Info,
                        1 => AlertType::Error,
                        2 => AlertType::Warning,
                        _ => AlertType::Success,
                    },
                    aggregation_key,
                    source_type_name,
                    host,
                    tags,
                }
            },
        )
}

fn service_check() -> impl Strategy<Value = ServiceCheck> {
    (text(), 0u8..4, any::<i64>(), text(), text(), tags()).prop_map(
        |(check, status, ts, message, host, tags)| ServiceCheck {
            check,
            status,
            ts,
            message,
            host,
            tags,
        },
    )
}

fn flush() -> impl Strategy<Value = Flush> {
    (
        prop::collection::vec(series(), 0..5),
        prop::collection::vec(sketch_series(), 0..3),
        prop::collection::vec(event(), 0..3),
        prop::collection::vec(service_check(), 0..3),
    )
        .prop_map(|(series, sketches, events, service_checks)| Flush {
            series,
            sketches,
            events,
            service_checks,
        })
}

fn formatter(format: FallbackFormat, dims: Vec<String>) -> Formatter {
    Formatter::new(&FallbackConfig {
        sink: FallbackSink::Stdout,
        log_group: None,
        log_stream: None,
        format,
        emf_dimensions: dims,
        emf_namespace: "offpath".to_owned(),
    })
}

fn has_null(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.iter().any(has_null),
        serde_json::Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replay_reads_every_line_the_writer_produces_in_every_format(
        flush in flush(),
        dims in tags(),
        small in any::<bool>(),
    ) {
        for format in [FallbackFormat::Offpath, FallbackFormat::Forwarder, FallbackFormat::Emf] {
            let mut f = formatter(format, dims.clone());
            if small {
                f = f.with_max_bytes(600);
            }
            let mut records = Vec::new();
            let over = f.write_flush(&flush, &mut records);
            let written: u64 = records.iter().map(|r| r.samples).sum();
            prop_assert_eq!(written + over.samples + over.non_finite, flush.samples());
            for r in &records {
                let v: serde_json::Value = serde_json::from_str(&r.line)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", r.line)))?;
                prop_assert!(!has_null(&v), "{:?} wrote null: {}", format, r.line);
                match parse_record(&r.line) {
                    Ok(Parsed::Series(s)) => {
                        prop_assert!(s.points.iter().all(|p| p.1.is_finite()), "{}", r.line);
                    }
                    Ok(Parsed::Sketch(s)) => {
                        prop_assert!(
                            s.sketches.iter().all(|d| [d.min, d.max, d.sum, d.avg]
                                .iter()
                                .all(|v| v.is_finite())),
                            "{}",
                            r.line
                        );
                    }
                    Ok(Parsed::Event(_) | Parsed::ServiceCheck(_)) => {}
                    Err(RecordError::NotARecord) if format != FallbackFormat::Offpath => {}
                    Err(e) => {
                        prop_assert!(false, "{:?} wrote a line replay cannot read ({}): {}", format, e, r.line);
                    }
                }
            }
        }
    }
}
