use super::*;
use crate::model::{AlertType, DogSketch, Event, Priority, SeriesKind, ServiceCheck};

fn series(i: usize, tags: usize, points: usize) -> Series {
    Series {
        name: format!("app.requests.{}", i % 50),
        tags: (0..tags)
            .map(|t| format!("tag{t}:value-{}", i * 31 + t))
            .collect(),
        host: "i-0123456789".into(),
        kind: if i % 2 == 0 {
            SeriesKind::Rate
        } else {
            SeriesKind::Gauge
        },
        interval: if i % 2 == 0 { 10 } else { 0 },
        points: (0..points)
            .map(|p| (1_700_000_000 + 10 * p as i64, i as f64 * 0.5 + p as f64))
            .collect(),
        samples: 3,
    }
}

fn sketch(i: usize, bins: usize) -> SketchSeries {
    SketchSeries {
        name: format!("app.latency.{}", i % 20),
        tags: vec![format!("route:/r/{i}"), "env:prod".into()],
        host: "i-0123456789".into(),
        sketches: vec![DogSketch {
            ts: 1_700_000_000,
            cnt: bins as i64,
            min: 1.0,
            max: 100.0,
            sum: 5_000.0,
            avg: 50.0,
            k: (0..bins as i32).map(|k| 1338 + k).collect(),
            n: vec![1; bins],
        }],
        samples: bins as u64,
    }
}

fn event(i: usize) -> Event {
    Event {
        title: format!("deploy {i}"),
        text: "done".into(),
        ts: 1_700_000_000,
        priority: Priority::Normal,
        alert_type: AlertType::Success,
        aggregation_key: String::new(),
        source_type_name: "offpath".into(),
        host: "h".into(),
        tags: vec!["a:b".into()],
    }
}

fn check(i: usize) -> ServiceCheck {
    ServiceCheck {
        check: format!("app.up.{i}"),
        status: (i % 4) as u8,
        ts: 1_700_000_000,
        message: "ok".into(),
        host: "h".into(),
        tags: vec![],
    }
}

/// Decode every payload and put the items back together, checking each payload's limits on the way.
#[track_caller]
fn reassemble(payloads: &[Payload]) -> Flush {
    let mut all = Flush::default();
    for p in payloads {
        let limits = p.kind.limits();
        assert!(
            p.body.len() <= limits.compressed,
            "{} B compressed",
            p.body.len()
        );
        assert!(p.raw_len <= limits.raw, "{} B raw", p.raw_len);
        let f = decode(p).unwrap();
        assert_eq!(
            f.samples(),
            p.samples,
            "decoded samples sum to the payload's"
        );
        let points: usize = f.series.iter().map(|s| s.points.len()).sum();
        assert!(points <= limits.points, "{points} points");
        assert_eq!(
            p.items,
            f.series.len() + f.sketches.len() + f.events.len() + f.service_checks.len()
        );
        all.series.extend(f.series);
        all.sketches.extend(f.sketches);
        all.events.extend(f.events);
        all.service_checks.extend(f.service_checks);
    }
    all
}

fn without_samples(mut f: Flush) -> Flush {
    f.series.iter_mut().for_each(|s| s.samples = 0);
    f.sketches.iter_mut().for_each(|s| s.samples = 0);
    f
}

#[test]
fn a_mixed_flush_decodes_back_to_exactly_what_was_encoded() {
    let flush = Flush {
        series: (0..100).map(|i| series(i, 3, 1)).collect(),
        sketches: (0..10).map(|i| sketch(i, 20)).collect(),
        events: (0..3).map(event).collect(),
        service_checks: (0..5).map(check).collect(),
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    let kinds: Vec<PayloadKind> = payloads.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PayloadKind::Series,
            PayloadKind::Sketches,
            PayloadKind::ServiceChecks,
            PayloadKind::Events
        ]
    );
    assert_eq!(payloads[3].items, 3, "the three events travel together");
    let total: u64 = payloads.iter().map(|p| p.samples).sum();
    assert_eq!(total, flush.samples());
    assert_eq!(
        without_samples(reassemble(&payloads)),
        without_samples(flush)
    );
}

#[test]
fn an_empty_flush_makes_no_payloads() {
    assert!(
        Encoder::new(1)
            .encode(&Flush::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn series_payloads_hold_at_most_ten_thousand_points() {
    let flush = Flush {
        series: (0..25_000).map(|i| series(i, 2, 1)).collect(),
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    let items: Vec<usize> = payloads.iter().map(|p| p.items).collect();
    assert_eq!(items, [10_000, 10_000, 5_000]);
    assert_eq!(reassemble(&payloads).series.len(), 25_000);
    assert_eq!(payloads.iter().map(|p| p.samples).sum::<u64>(), 75_000);
}

#[test]
fn incompressible_series_are_cut_to_the_compressed_limit() {
    // Random-looking tags compress poorly: ~3.5 MB raw, well over 512,000 B compressed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand_tag = || {
        (0..4)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    let flush = Flush {
        series: (0..9_000)
            .map(|i| Series {
                tags: (0..5).map(|_| rand_tag()).collect(),
                ..series(i, 0, 1)
            })
            .collect(),
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    assert!(payloads.len() >= 4, "{} payloads", payloads.len());
    assert_eq!(
        without_samples(reassemble(&payloads)),
        without_samples(flush)
    );
}

#[test]
fn compressible_series_are_cut_to_the_raw_limit() {
    // One long repeated tag: tiny compressed, ~9 MB raw.
    let long = "x".repeat(1_000);
    let flush = Flush {
        series: (0..9_000)
            .map(|i| Series {
                tags: vec![long.clone()],
                ..series(i, 0, 1)
            })
            .collect(),
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    assert!(payloads.len() >= 2);
    assert!(payloads.iter().all(|p| p.raw_len > 1_000_000));
    assert_eq!(reassemble(&payloads).series.len(), 9_000);
}

#[test]
fn a_series_with_more_points_than_a_payload_holds_is_cut_by_points() {
    let flush = Flush {
        series: vec![Series {
            samples: 25_000,
            ..series(0, 1, 25_000)
        }],
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    let back = reassemble(&payloads);
    let points: Vec<(i64, f64)> = back.series.iter().flat_map(|s| s.points.clone()).collect();
    assert_eq!(points, flush.series[0].points);
    assert_eq!(payloads.iter().map(|p| p.samples).sum::<u64>(), 25_000);
}

#[test]
fn sketches_with_many_bins_are_cut_to_the_sketch_limits() {
    let flush = Flush {
        sketches: (0..600).map(|i| sketch(i, 4096)).collect(),
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    assert!(payloads.len() >= 2, "{} payloads", payloads.len());
    assert_eq!(
        without_samples(reassemble(&payloads)),
        without_samples(flush)
    );
}

#[test]
fn one_item_too_large_for_any_payload_travels_alone_and_is_flagged() {
    let huge = Series {
        tags: vec!["y".repeat(6_000_000)],
        ..series(0, 0, 1)
    };
    let flush = Flush {
        series: vec![series(1, 1, 1), huge, series(2, 1, 1)],
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    let items: Vec<usize> = payloads.iter().map(|p| p.items).collect();
    assert_eq!(items, [1, 1, 1]);
    let flagged: Vec<bool> = payloads.iter().map(Payload::exceeds_limits).collect();
    assert_eq!(flagged, [false, true, false]);
}

#[test]
fn split_halves_items_and_keeps_every_sample() {
    let flush = Flush {
        series: (0..7).map(|i| series(i, 2, 1)).collect(),
        ..Flush::default()
    };
    let enc = Encoder::new(1);
    let payload = enc.encode(&flush).unwrap().remove(0);
    let parts = split(&payload, &enc).unwrap();
    let items: Vec<usize> = parts.iter().map(|p| p.items).collect();
    assert_eq!(items, [3, 4]);
    assert_eq!(parts.iter().map(|p| p.samples).sum::<u64>(), 21);
    assert_eq!(without_samples(reassemble(&parts)), without_samples(flush));
}

#[test]
fn split_cuts_a_single_series_by_points_and_refuses_a_single_point() {
    let enc = Encoder::new(1);
    let two = Flush {
        series: vec![series(0, 1, 2)],
        ..Flush::default()
    };
    let parts = split(&enc.encode(&two).unwrap()[0], &enc).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts.iter().map(|p| p.samples).sum::<u64>(), 3);

    let one = Flush {
        series: vec![series(0, 1, 1)],
        ..Flush::default()
    };
    let err = split(&enc.encode(&one).unwrap()[0], &enc).unwrap_err();
    assert!(matches!(err, EncodeError::Unsplittable { kind: "series" }));
}

#[test]
fn split_refuses_a_single_event_and_halves_service_checks() {
    let enc = Encoder::new(1);
    let flush = Flush {
        events: vec![event(0)],
        service_checks: (0..4).map(check).collect(),
        ..Flush::default()
    };
    let payloads = enc.encode(&flush).unwrap();
    let checks = payloads
        .iter()
        .find(|p| p.kind == PayloadKind::ServiceChecks)
        .unwrap();
    let parts = split(checks, &enc).unwrap();
    assert_eq!(reassemble(&parts).service_checks, flush.service_checks);
    let ev = payloads
        .iter()
        .find(|p| p.kind == PayloadKind::Events)
        .unwrap();
    assert!(matches!(
        split(ev, &enc),
        Err(EncodeError::Unsplittable { .. })
    ));
}

#[test]
fn events_go_in_one_payload_per_source_type_and_host_and_split_in_halves() {
    let enc = Encoder::new(1);
    let mut events: Vec<Event> = (0..6).map(event).collect();
    events[1].source_type_name = String::new();
    events[2].host = "other".into();
    events[4].source_type_name = String::new();
    let flush = Flush {
        events,
        ..Flush::default()
    };
    let payloads = enc.encode(&flush).unwrap();
    let items: Vec<usize> = payloads.iter().map(|p| p.items).collect();
    assert_eq!(
        items,
        [2, 3, 1],
        "no source type, offpath on h, offpath on other"
    );
    assert_eq!(payloads.iter().map(|p| p.samples).sum::<u64>(), 6);
    let mut back = reassemble(&payloads).events;
    back.sort_by(|a, b| a.title.cmp(&b.title));
    assert_eq!(back, flush.events);

    let parts = split(&payloads[1], &enc).unwrap();
    assert_eq!(parts.iter().map(|p| p.items).collect::<Vec<_>>(), [1, 2]);
    let halves = reassemble(&parts).events;
    assert!(
        halves
            .iter()
            .all(|e| e.host == "h" && e.source_type_name == "offpath")
    );
}

#[test]
fn ten_thousand_events_fit_in_one_payload_within_the_generic_limits() {
    let flush = Flush {
        events: (0..10_000).map(event).collect(),
        ..Flush::default()
    };
    let payloads = Encoder::new(1).encode(&flush).unwrap();
    assert_eq!(payloads.len(), 1);
    assert_eq!(payloads[0].items, 10_000);
    assert!(!payloads[0].exceeds_limits());
}

#[test]
fn decode_spreads_payload_samples_over_items_in_proportion_to_points() {
    assert_eq!(distribute(10, &[1, 1, 2]), [2, 2, 6]);
    assert_eq!(distribute(10, &[1, 1, 1]), [3, 3, 4]);
    assert_eq!(distribute(5, &[0, 0]), [2, 3]);
    assert_eq!(distribute(0, &[]), Vec::<u64>::new());
    assert_eq!(share(7, 1, 2), (3, 4));
}

#[test]
fn a_garbage_body_is_a_decode_error_not_a_panic() {
    let p = Payload {
        kind: PayloadKind::Series,
        body: Bytes::from_static(b"not zstd"),
        raw_len: 8,
        items: 1,
        samples: 1,
        destination: crate::forward::DestinationId::MAIN,
    };
    assert!(matches!(decode(&p), Err(EncodeError::Decompress(_))));
}

#[test]
fn kinds_name_their_endpoint_and_content_type() {
    let table = [
        (
            PayloadKind::Series,
            "/api/v2/series",
            "application/x-protobuf",
        ),
        (
            PayloadKind::Sketches,
            "/api/beta/sketches",
            "application/x-protobuf",
        ),
        (PayloadKind::Events, "/intake/", "application/json"),
        (
            PayloadKind::ServiceChecks,
            "/api/v1/check_run",
            "application/json",
        ),
    ];
    for (kind, path, ct) in table {
        assert_eq!((kind.path(), kind.content_type()), (path, ct), "{kind:?}");
    }
}
