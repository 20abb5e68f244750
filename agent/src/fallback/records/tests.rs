use super::expand::{BIAS, LN_GAMMA};
use super::*;
use crate::model::{
    AlertType, DogSketch, Event, Flush, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashSet;

fn series(kind: SeriesKind, points: Vec<(i64, f64)>, host: &str) -> Series {
    Series {
        name: "app.requests".into(),
        tags: vec!["env:prod".into(), "team:a".into()],
        host: host.into(),
        kind,
        interval: if kind == SeriesKind::Gauge { 0 } else { 10 },
        points,
        samples: 7,
    }
}

fn dog(ts: i64, k: Vec<i32>, n: Vec<u32>) -> DogSketch {
    let cnt: u32 = n.iter().sum();
    DogSketch {
        ts,
        cnt: i64::from(cnt),
        min: 1.0,
        max: 2.0,
        sum: 3.0,
        avg: 1.5,
        k,
        n,
    }
}

fn sketch_series(sketches: Vec<DogSketch>) -> SketchSeries {
    SketchSeries {
        name: "app.latency".into(),
        tags: vec!["a:b".into()],
        host: "h".into(),
        sketches,
        samples: 5,
    }
}

fn flush_of(series: Vec<Series>, sketches: Vec<SketchSeries>) -> Flush {
    Flush {
        series,
        sketches,
        ..Flush::default()
    }
}

fn fmt(format: FallbackFormat, dims: &[&str]) -> Formatter {
    Formatter::new(&FallbackConfig {
        sink: crate::config::FallbackSink::Stdout,
        log_group: None,
        log_stream: None,
        format,
        emf_dimensions: dims.iter().map(|d| (*d).to_owned()).collect(),
        emf_namespace: "ns".into(),
    })
}

#[test]
fn offpath_records_have_the_exact_shapes_of_the_spec() {
    let cases: Vec<(Flush, &str)> = vec![
        (
            flush_of(
                vec![series(SeriesKind::Rate, vec![(1_700_000_000, 1.5)], "h")],
                vec![],
            ),
            r#"{"offpath":1,"kind":"series","metric":"app.requests","type":"rate","interval":10,"points":[[1700000000,1.5]],"tags":["env:prod","team:a"],"host":"h"}"#,
        ),
        (
            flush_of(
                vec![series(SeriesKind::Count, vec![(1_700_000_000, 3.0)], "")],
                vec![],
            ),
            r#"{"offpath":1,"kind":"series","metric":"app.requests","type":"count","interval":10,"points":[[1700000000,3.0]],"tags":["env:prod","team:a"]}"#,
        ),
        (
            flush_of(
                vec![series(SeriesKind::Gauge, vec![(1, -0.25), (11, 1e21)], "")],
                vec![],
            ),
            r#"{"offpath":1,"kind":"series","metric":"app.requests","type":"gauge","points":[[1,-0.25],[11,1e21]],"tags":["env:prod","team:a"]}"#,
        ),
        (
            flush_of(
                vec![],
                vec![sketch_series(vec![dog(
                    1_700_000_000,
                    vec![1338, 1383],
                    vec![1, 1],
                )])],
            ),
            r#"{"offpath":1,"kind":"sketch","metric":"app.latency","tags":["a:b"],"host":"h","sketches":[{"ts":1700000000,"cnt":2,"min":1.0,"max":2.0,"sum":3.0,"avg":1.5,"k":[1338,1383],"n":[1,1]}]}"#,
        ),
        (
            Flush {
                events: vec![Event {
                    title: "Deploy \"x\"".into(),
                    text: "line1\nline2".into(),
                    ts: 1_700_000_000,
                    priority: Priority::Low,
                    alert_type: AlertType::Warning,
                    aggregation_key: "k".into(),
                    source_type_name: "s".into(),
                    host: "h".into(),
                    tags: vec!["a:b".into()],
                }],
                ..Flush::default()
            },
            r#"{"offpath":1,"kind":"event","title":"Deploy \"x\"","text":"line1\nline2","ts":1700000000,"priority":"low","alert_type":"warning","aggregation_key":"k","source_type_name":"s","host":"h","tags":["a:b"]}"#,
        ),
        (
            Flush {
                service_checks: vec![ServiceCheck {
                    check: "db.up".into(),
                    status: 2,
                    ts: 1_700_000_000,
                    message: "down".into(),
                    host: String::new(),
                    tags: vec![],
                }],
                ..Flush::default()
            },
            r#"{"offpath":1,"kind":"service_check","check":"db.up","status":2,"ts":1700000000,"message":"down","tags":[]}"#,
        ),
    ];
    for (flush, want) in cases {
        let mut out = Vec::new();
        let over = Formatter::default().write_flush(&flush, &mut out);
        assert_eq!(over, Oversize::default());
        assert_eq!(out.len(), 1, "{want}");
        assert_eq!(out[0].line, want);
        assert_eq!(out[0].samples, flush.samples());
        let _: Value = serde_json::from_str(&out[0].line).unwrap();
    }
}

#[test]
fn every_record_parses_back_to_the_value_it_was_made_from() {
    let flush = Flush {
        series: vec![
            series(SeriesKind::Rate, vec![(10, 0.1), (20, 1e-300)], "h"),
            series(SeriesKind::Gauge, vec![(10, f64::MAX)], ""),
        ],
        sketches: vec![sketch_series(vec![dog(
            10,
            vec![-1487, 0, 1338],
            vec![1, 2, 65535],
        )])],
        events: vec![Event {
            title: "t\u{1}\u{7f}é".into(),
            text: "\\ \" \t".into(),
            ts: 5,
            priority: Priority::Normal,
            alert_type: AlertType::Success,
            aggregation_key: String::new(),
            source_type_name: String::new(),
            host: String::new(),
            tags: vec!["x".into()],
        }],
        service_checks: vec![ServiceCheck {
            check: "c".into(),
            status: 3,
            ts: 6,
            message: String::new(),
            host: "h".into(),
            tags: vec!["y:z".into()],
        }],
    };
    let mut out = Vec::new();
    Formatter::default().write_flush(&flush, &mut out);
    let parsed: Vec<Parsed> = out.iter().map(|r| parse_record(&r.line).unwrap()).collect();
    let mut back = Flush::default();
    for p in parsed {
        match p {
            Parsed::Series(mut s) => {
                s.samples = 7;
                back.series.push(s);
            }
            Parsed::Sketch(mut s) => {
                s.samples = 5;
                back.sketches.push(s);
            }
            Parsed::Event(e) => back.events.push(e),
            Parsed::ServiceCheck(c) => back.service_checks.push(c),
        }
    }
    assert_eq!(back, flush);
}

#[test]
fn a_series_with_many_points_becomes_several_records_under_the_limit() {
    let points: Vec<(i64, f64)> = (0..100_000)
        .map(|i| (1_700_000_000 + i, i as f64 / 3.0))
        .collect();
    let mut s = series(SeriesKind::Rate, points.clone(), "h");
    s.samples = 1_000_003;
    let mut out = Vec::new();
    let over = Formatter::default().write_flush(&flush_of(vec![s], vec![]), &mut out);
    assert_eq!(over, Oversize::default());
    assert!(out.len() > 1);
    let mut back = Vec::new();
    for r in &out {
        assert!(r.line.len() <= MAX_RECORD_BYTES);
        let Parsed::Series(p) = parse_record(&r.line).unwrap() else {
            panic!()
        };
        assert_eq!(r.ts, p.points[0].0);
        back.extend(p.points);
    }
    assert!(back == points, "points differ after the round trip");
    assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 1_000_003);
}

#[test]
fn a_sketch_series_with_many_buckets_becomes_several_records_under_the_limit() {
    let keys: Vec<i32> = (1000..1400).collect();
    let sketches: Vec<DogSketch> = (0..200)
        .map(|i| dog(i * 10, keys.clone(), vec![3; 400]))
        .collect();
    let s = sketch_series(sketches.clone());
    let mut out = Vec::new();
    let f = Formatter::default().with_max_bytes(20_000);
    let over = f.write_flush(&flush_of(vec![], vec![s]), &mut out);
    assert_eq!(over, Oversize::default());
    assert!(out.len() > 1);
    let mut back = Vec::new();
    for r in &out {
        assert!(r.line.len() <= 20_000);
        let Parsed::Sketch(p) = parse_record(&r.line).unwrap() else {
            panic!()
        };
        back.extend(p.sketches);
    }
    assert_eq!(back, sketches);
    assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 5);
}

#[test]
fn items_that_cannot_fit_alone_are_reported_and_the_rest_is_written() {
    let mut s = series(SeriesKind::Gauge, vec![(1, 1.0), (2, 2.0)], "");
    s.tags = vec!["x".repeat(300)];
    let small = series(SeriesKind::Gauge, vec![(1, 1.0)], "");
    let mut out = Vec::new();
    let over = Formatter::default()
        .with_max_bytes(200)
        .write_flush(&flush_of(vec![s, small], vec![]), &mut out);
    assert_eq!(
        over,
        Oversize {
            items: 2,
            samples: 7,
            non_finite: 0
        }
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn an_event_whose_text_is_too_long_is_cut_at_a_character_boundary() {
    let e = Event {
        title: "t".into(),
        text: "é\"".repeat(200_000),
        ts: 1,
        priority: Priority::Normal,
        alert_type: AlertType::Info,
        aggregation_key: String::new(),
        source_type_name: String::new(),
        host: String::new(),
        tags: vec![],
    };
    let line = event_record(&e).unwrap();
    assert!(line.len() <= MAX_RECORD_BYTES);
    assert!(line.len() > MAX_RECORD_BYTES - 8);
    let Parsed::Event(back) = parse_record(&line).unwrap() else {
        panic!()
    };
    assert!(e.text.starts_with(&back.text));
}

#[test]
fn lines_that_are_not_offpath_records_are_told_apart_from_damaged_records() {
    let cases: &[(&str, RecordError)] = &[
        (
            "START RequestId: 1 Version: $LATEST",
            RecordError::NotARecord,
        ),
        (r#"{"level":"info","msg":"hello"}"#, RecordError::NotARecord),
        ("{not json", RecordError::NotARecord),
        (r#"{"offpath":2,"kind":"series"}"#, RecordError::Version(2)),
        (
            r#"{"offpath":1,"kind":"log"}"#,
            RecordError::Kind("log".into()),
        ),
        (
            r#"{"offpath":1,"kind":"series","metric":"m","type":"rate","points":[]}"#,
            RecordError::Missing {
                kind: "series",
                field: "interval",
            },
        ),
        (
            r#"{"offpath":1,"kind":"series","metric":"m","type":"histogram","points":[]}"#,
            RecordError::Invalid {
                field: "type",
                value: "histogram".into(),
            },
        ),
        (
            r#"{"offpath":1,"kind":"service_check","check":"c","status":4,"ts":1}"#,
            RecordError::Invalid {
                field: "status",
                value: "4".into(),
            },
        ),
        (
            r#"{"offpath":1,"kind":"sketch","metric":"m","sketches":[{"ts":1,"cnt":1,"min":1,"max":1,"sum":1,"avg":1,"k":[1],"n":[]}]}"#,
            RecordError::Invalid {
                field: "k",
                value: "1 keys for 0 counts".into(),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse_record(line).unwrap_err(), *want, "{line}");
    }
    assert!(matches!(
        parse_record(
            r#"{"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[1,null]]}"#
        ),
        Err(RecordError::Json(_))
    ));
}

#[test]
fn a_log_prefix_before_the_record_is_ignored() {
    let line = r#"2024-01-01T00:00:00Z {"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[1,2.0]],"tags":[]}"#;
    let Parsed::Series(s) = parse_record(line).unwrap() else {
        panic!()
    };
    assert_eq!(s.points, vec![(1, 2.0)]);
}

/// The agent's key function (`docs/protocols.md`, "Datadog's agent DDSketch"), to check `bin_value` against.
fn key(v: f64) -> i32 {
    if v < 0.0 {
        return -key(-v);
    }
    if v < 9.94185408912145e-10 {
        return 0;
    }
    (v.ln() / LN_GAMMA).round_ties_even() as i32 + BIAS
}

#[test]
fn bin_values_map_back_to_their_keys() {
    for (v, k) in [
        (1.0, 1338),
        (1000.0, 1784),
        (-10.0, -1487),
        (0.0, 0),
        (1e-9, 1),
        (2.0, 1383),
    ] {
        assert_eq!(key(v), k);
        assert_eq!(key(bin_value(k)), k);
    }
    for k in (-3000..3000).step_by(7) {
        if k == 0 || (-1..=0).contains(&k) {
            continue;
        }
        assert_eq!(key(bin_value(k)), k);
    }
}

#[test]
fn sketch_values_repeat_bins_and_keep_min_and_max_exact() {
    let mut d = dog(0, vec![1338, 1383], vec![2, 3]);
    d.min = 0.999;
    d.max = 2.01;
    let v = sketch_values(&d, 1000);
    assert_eq!(v.len(), 5);
    assert_eq!(v[0], 0.999);
    assert_eq!(v[1], bin_value(1338));
    assert_eq!(v[2..4], [bin_value(1383), bin_value(1383)]);
    assert_eq!(v[4], 2.01);
    assert!(v.iter().all(|&x| key(x) == 1338 || key(x) == 1383));
}

#[test]
fn sketch_values_above_the_cap_are_allotted_in_proportion() {
    let d = dog(0, vec![1, 2, 3], vec![65535, 65535, 3]);
    let v = sketch_values(&d, 10);
    assert_eq!(v.len(), 10);
    let in_bin = |k| v[1..9].iter().filter(|&&x| key(x) == k).count();
    assert_eq!(in_bin(1) + in_bin(2), 8);
    assert_eq!(in_bin(3), 0);
}

#[test]
fn forwarder_lines_carry_exactly_m_v_e_t() {
    let flush = flush_of(
        vec![
            series(SeriesKind::Rate, vec![(100, 0.5)], "h"),
            series(SeriesKind::Gauge, vec![(100, 7.0)], ""),
        ],
        vec![sketch_series(vec![dog(200, vec![1338], vec![3])])],
    );
    let mut out = Vec::new();
    fmt(FallbackFormat::Forwarder, &[]).write_flush(&flush, &mut out);
    let lines: Vec<String> = out.iter().map(|r| r.line.clone()).collect();
    assert_eq!(
        lines,
        [
            r#"{"m":"app.requests","v":5.0,"e":100,"t":["env:prod","team:a","host:h"]}"#,
            r#"{"m":"app.requests","v":7.0,"e":100,"t":["env:prod","team:a"]}"#,
            r#"{"m":"app.latency","v":1.0,"e":200,"t":["a:b","host:h"]}"#,
            r#"{"m":"app.latency","v":1.0,"e":200,"t":["a:b","host:h"]}"#,
            r#"{"m":"app.latency","v":2.0,"e":200,"t":["a:b","host:h"]}"#,
        ]
    );
    assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 7 + 7 + 5);
}

#[test]
fn emf_groups_metrics_of_one_context_and_makes_dimensions_only_of_configured_keys() {
    let mut a = series(SeriesKind::Rate, vec![(100, 0.5)], "h");
    a.name = "req.count".into();
    let mut b = series(SeriesKind::Gauge, vec![(100, 3.0)], "h");
    b.name = "req.max".into();
    let mut out = Vec::new();
    fmt(FallbackFormat::Emf, &["env", "missing", "host"])
        .write_flush(&flush_of(vec![a, b], vec![]), &mut out);
    assert_eq!(out.len(), 1);
    let v: Value = serde_json::from_str(&out[0].line).unwrap();
    assert_eq!(v["_aws"]["Timestamp"], 100_000);
    let d = &v["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(d["Namespace"], "ns");
    assert_eq!(d["Dimensions"], serde_json::json!([["env", "host"]]));
    assert_eq!(
        d["Metrics"],
        serde_json::json!([{"Name":"req.count","Unit":"Count"},{"Name":"req.max"}])
    );
    assert_eq!(v["env"], "prod");
    assert_eq!(v["team"], "a");
    assert_eq!(v["host"], "h");
    assert_eq!(v["req.count"], 5.0);
    assert_eq!(v["req.max"], 3.0);
    assert_eq!(out[0].samples, 14);
}

#[test]
fn emf_documents_hold_at_most_100_metrics_and_100_values_each() {
    let series: Vec<Series> = (0..250)
        .map(|i| {
            let mut s = series(SeriesKind::Gauge, vec![(100, f64::from(i))], "");
            s.name = format!("m{i}");
            s
        })
        .collect();
    let mut big = sketch_series(vec![dog(100, vec![1338, 1400], vec![150, 100])]);
    big.tags = vec!["env:prod".into(), "team:a".into()];
    big.host = String::new();
    let mut out = Vec::new();
    fmt(FallbackFormat::Emf, &[]).write_flush(&flush_of(series, vec![big]), &mut out);
    let mut values = 0;
    let mut metrics = HashSet::new();
    for r in &out {
        let v: Value = serde_json::from_str(&r.line).unwrap();
        let defs = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert!(defs.len() <= 100);
        for d in defs {
            let name = d["Name"].as_str().unwrap();
            metrics.insert(name.to_owned());
            match &v[name] {
                Value::Array(a) => {
                    assert!(a.len() <= 100);
                    values += a.len();
                }
                Value::Number(_) => values += 1,
                other => panic!("{other}"),
            }
        }
    }
    assert_eq!(metrics.len(), 251);
    assert_eq!(values, 250 + 250);
    assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 250 * 7 + 5);
}

#[test]
fn emf_leaves_out_tag_members_that_collide_and_keeps_repeated_keys_as_arrays() {
    let mut s = series(SeriesKind::Gauge, vec![(1, 1.0)], "");
    s.name = "role".into();
    s.tags = vec![
        "_aws:x".into(),
        "bare".into(),
        "k:1".into(),
        "k:2".into(),
        "role:db".into(),
    ];
    let mut out = Vec::new();
    fmt(FallbackFormat::Emf, &["k", "role"]).write_flush(&flush_of(vec![s], vec![]), &mut out);
    let v: Value = serde_json::from_str(&out[0].line).unwrap();
    assert_eq!(
        v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([[]])
    );
    assert_eq!(v["k"], serde_json::json!(["1", "2"]));
    assert_eq!(v["bare"], "");
    assert_eq!(v["role"], 1.0);
    assert!(v["_aws"].get("x").is_none());
}

#[test]
fn emf_documents_stay_under_the_record_limit() {
    let mut s = sketch_series(vec![dog(1, (1..=1000).collect(), vec![1; 1000])]);
    s.name = "n".repeat(1000);
    let mut out = Vec::new();
    let over = fmt(FallbackFormat::Emf, &[])
        .with_max_bytes(3000)
        .write_flush(&flush_of(vec![], vec![s.clone()]), &mut out);
    assert_eq!(over, Oversize::default());
    let mut values = 0;
    for r in &out {
        assert!(r.line.len() <= 3000, "{}", r.line.len());
        let v: Value = serde_json::from_str(&r.line).unwrap();
        values += v["n".repeat(1000)].as_array().map_or(1, Vec::len);
    }
    assert_eq!(values, 1000);
    assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 5);
    s.name = "n".repeat(2000);
    let over = fmt(FallbackFormat::Emf, &[])
        .with_max_bytes(3000)
        .write_flush(&flush_of(vec![], vec![s]), &mut Vec::new());
    assert_eq!(
        over,
        Oversize {
            items: 1000,
            samples: 5,
            non_finite: 0
        }
    );
}

proptest! {
    #[test]
    fn any_series_round_trips_through_records_of_any_limit(
        points in proptest::collection::vec((0i64..2_000_000_000, proptest::num::f64::NORMAL | proptest::num::f64::ZERO), 1..300),
        tags in proptest::collection::vec("[ -~é\n\"]{0,12}", 0..5),
        max in 300usize..4000,
    ) {
        let s = Series { name: "m".into(), tags, host: "h".into(), kind: SeriesKind::Count, interval: 10, points: points.clone(), samples: 1000 };
        let mut out = Vec::new();
        let over = Formatter::default().with_max_bytes(max).write_flush(&flush_of(vec![s], vec![]), &mut out);
        let mut back = Vec::new();
        for r in &out {
            prop_assert!(r.line.len() <= max);
            let Parsed::Series(p) = parse_record(&r.line).unwrap() else { panic!() };
            back.extend(p.points);
        }
        if over.items == 0 {
            prop_assert_eq!(back, points);
            prop_assert_eq!(out.iter().map(|r| r.samples).sum::<u64>(), 1000);
        } else {
            prop_assert_eq!(out.iter().map(|r| r.samples).sum::<u64>() + over.samples, 1000);
        }
    }
}
