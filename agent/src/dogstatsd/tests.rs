//! Unit tests: the grammar piece by piece, and datagrams as real clients send them.

use std::borrow::Cow;

use super::*;
use crate::model::{AlertType, Priority};

#[track_caller]
fn metric(line: &str) -> MetricSample<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::Metric(m)) => m,
        other => panic!("{line:?}: expected a metric, got {other:?}"),
    }
}

#[track_caller]
fn event(line: &str) -> Event<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::Event(e)) => e,
        other => panic!("{line:?}: expected an event, got {other:?}"),
    }
}

#[track_caller]
fn service_check(line: &str) -> ServiceCheck<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::ServiceCheck(sc)) => sc,
        other => panic!("{line:?}: expected a service check, got {other:?}"),
    }
}

fn values(value: &MetricValue<'_>) -> Vec<f64> {
    match value {
        MetricValue::Single(v) => vec![*v],
        MetricValue::Packed(p) => p.iter().collect(),
        MetricValue::Set(_) => Vec::new(),
    }
}

fn tags<'a>(tags: &Tags<'a>) -> Vec<&'a str> {
    tags.iter().collect()
}

#[test]
fn every_metric_type_is_recognised_case_sensitively() {
    let cases = [
        ("a:1|c", Ok(MetricKind::Count)),
        ("a:1|g", Ok(MetricKind::Gauge)),
        ("a:1|h", Ok(MetricKind::Histogram)),
        ("a:1|ms", Ok(MetricKind::Timer)),
        ("a:1|s", Ok(MetricKind::Set)),
        ("a:1|d", Ok(MetricKind::Distribution)),
        ("a:1|G", Err(ParseError::UnknownType)),
        ("a:1|m", Err(ParseError::UnknownType)),
        ("a:1|cc", Err(ParseError::UnknownType)),
        ("a:1|", Err(ParseError::UnknownType)),
        ("a:1||c", Err(ParseError::UnknownType)),
    ];
    for (line, want) in cases {
        let got = parse_line(line.as_bytes()).map(|m| match m {
            Message::Metric(m) => m.kind,
            other => panic!("{line:?}: {other:?}"),
        });
        assert_eq!(got, want, "{line:?}");
    }
}

#[test]
fn malformed_metric_lines_are_rejected_with_their_reason() {
    let cases = [
        ("daemon:666", ParseError::BadFormat),
        ("abc666|g", ParseError::BadFormat),
        ("a|b:1|c", ParseError::BadFormat),
        (":1|c", ParseError::EmptyName),
        ("a:|c", ParseError::EmptyValue),
        ("a:::|c", ParseError::EmptyValue),
        ("a:abc|g", ParseError::BadValue),
        ("a: 5|g", ParseError::BadValue),
        ("a:5 |g", ParseError::BadValue),
        ("a:1:x:2|d", ParseError::BadValue),
        ("a:0x10|g", ParseError::BadValue),
        ("a:1|c|@abc", ParseError::BadSampleRate),
        ("a:1|c|@", ParseError::BadSampleRate),
        ("a:1|c|T", ParseError::BadTimestamp),
        ("a:1|c|T0", ParseError::BadTimestamp),
        ("a:1|c|T-5", ParseError::BadTimestamp),
        ("a:1|c|T1.5", ParseError::BadTimestamp),
        ("a:1|c|Tfoo", ParseError::BadTimestamp),
        ("a:1|c|T99999999999999999999", ParseError::BadTimestamp),
        ("_sc.foo:1|c", ParseError::BadServiceCheck),
        ("_e:title|text", ParseError::UnknownType),
        ("_e|text", ParseError::BadFormat),
    ];
    for (line, want) in cases {
        assert_eq!(parse_line(line.as_bytes()), Err(want), "{line:?}");
    }
}

#[test]
fn values_parse_as_go_parse_float_does() {
    let cases: [(&str, f64); 10] = [
        ("1", 1.0),
        ("-3", -3.0),
        ("+3", 3.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("-2.5E-1", -0.25),
        ("123456789012345678", 123_456_789_012_345_678.0),
        ("Infinity", f64::INFINITY),
    ];
    for (text, want) in cases {
        let line = format!("a:{text}|g");
        assert_eq!(values(&metric(&line).value), vec![want], "{line:?}");
    }
    for text in ["NaN", "nan", "-Inf", "inf", "+Inf"] {
        let line = format!("a:{text}|g");
        let got = values(&metric(&line).value);
        assert!(got.len() == 1 && !got[0].is_finite(), "{line:?}: {got:?}");
    }
}

#[test]
fn packed_values_skip_empty_items_and_keep_their_order() {
    let m = metric("m:1.1234::41:|d");
    assert_eq!(values(&m.value), vec![1.1234, 41.0]);
    assert_eq!(m.value.len(), 2);
    assert!(matches!(m.value, MetricValue::Packed(_)));
    // One value left after skipping empties is a single value.
    assert_eq!(metric("m::5:|c").value, MetricValue::Single(5.0));
}

#[test]
fn a_set_member_is_everything_after_the_first_colon() {
    let m = metric("users:a:b::c|s");
    assert_eq!(m.value, MetricValue::Set("a:b::c"));
    assert_eq!(m.value.len(), 1);
    assert_eq!(metric("users:12.5|s").value, MetricValue::Set("12.5"));
}

#[test]
fn sample_rates_outside_zero_to_one_count_as_one() {
    let cases = [
        ("@0.5", 0.5),
        ("@1", 1.0),
        ("@0", 1.0),
        ("@-0.5", 1.0),
        ("@2", 1.0),
        ("@NaN", 1.0),
        ("@1e-3", 0.001),
    ];
    for (field, want) in cases {
        let line = format!("a:1|c|{field}");
        assert_eq!(metric(&line).sample_rate, want, "{line:?}");
    }
}

#[test]
fn tags_are_split_on_commas_and_empty_tags_are_skipped() {
    let m = metric("a:1|c|#env:prod,,role, spaced ,:,novalue,");
    assert_eq!(
        tags(&m.tags),
        vec!["env:prod", "role", " spaced ", ":", "novalue"]
    );
    assert!(!m.tags.is_empty());
    assert!(metric("a:1|c|#").tags.is_empty());
    assert!(metric("a:1|c|#,,").tags.is_empty());
    assert!(metric("a:1|c").tags.is_empty());
}

#[test]
fn fields_come_in_any_order_and_the_last_repeat_wins() {
    let m = metric("a:1|c|T5|#x|@0.5|future:1||#y,z|T7|@0.25|");
    assert_eq!(tags(&m.tags), vec!["y", "z"]);
    assert_eq!(m.sample_rate, 0.25);
    assert_eq!(m.timestamp, Some(7));
}

#[test]
fn origin_fields_are_kept_raw() {
    let m = metric("a:1|c|c:ci-abc,in-42|e:it-false,cn-app,pu-uid|card:Orchestrator");
    assert_eq!(
        m.origin,
        Origin {
            local_data: Some("ci-abc,in-42"),
            external_data: Some("it-false,cn-app,pu-uid"),
            cardinality: Some(Cardinality::Orchestrator),
        }
    );
    let m = metric("a:1|c|c:|card:bogus");
    assert_eq!(m.origin, Origin::default());
}

#[test]
fn a_packet_splits_on_newlines_drops_cr_and_skips_empty_lines() {
    let packet = b"\n\na:1|c\r\nb:2|g\n\r\n\nbad\nc:3|d";
    let got: Vec<_> = parse_packet(packet)
        .map(|r| {
            r.map(|m| match m {
                Message::Metric(m) => m.name,
                _ => "?",
            })
        })
        .collect();
    assert_eq!(
        got,
        vec![Ok("a"), Ok("b"), Err(ParseError::BadFormat), Ok("c")]
    );
    assert_eq!(parse_packet(b"").count(), 0);
    assert_eq!(parse_packet(b"\r\n\n\r").count(), 0); // the last line loses its `\r` too
}

#[test]
fn invalid_utf8_rejects_a_line_only_where_the_line_uses_it() {
    let cases: [(&[u8], Result<&str, ParseError>); 6] = [
        (b"a\xff:1|c", Err(ParseError::InvalidUtf8)),
        (b"a:1|c|#t\xff", Err(ParseError::InvalidUtf8)),
        (b"a:\xff|s", Err(ParseError::InvalidUtf8)),
        (b"a:1|c|c:\xc3", Err(ParseError::InvalidUtf8)),
        (b"a:1|c|x:\xff\xfe|#ok", Ok("a")),
        (b"\xc3\xa9t\xc3\xa9:1|c|z\xff", Ok("\u{e9}t\u{e9}")),
    ];
    for (line, want) in cases {
        let got = parse_line(line).map(|m| match m {
            Message::Metric(m) => m.name,
            _ => "?",
        });
        assert_eq!(got, want, "{line:?}");
        // Inside a packet that is invalid elsewhere, and in one that is invalid only here.
        let mut packet = b"ok:1|c\n".to_vec();
        packet.extend_from_slice(line);
        packet.extend_from_slice(b"\nz:\xff|s\n");
        let got: Vec<_> = parse_packet(&packet).map(|r| r.is_ok()).collect();
        assert_eq!(got, vec![true, want.is_ok(), false], "{line:?}");
    }
}

#[test]
fn python_datadog_event_with_escapes_and_a_pipe_in_the_text() {
    let e = event(
        r"_e{15,24}:Deploy finished|line1\nline2 with | pipe|h:h1|k:agg|p:low|s:my_apps|t:success|#ev:1",
    );
    assert_eq!(e.title, "Deploy finished");
    assert_eq!(e.text, "line1\nline2 with | pipe");
    assert!(matches!(e.text, Cow::Owned(_)));
    assert!(matches!(e.title, Cow::Borrowed(_)));
    assert_eq!(e.hostname, Some("h1"));
    assert_eq!(e.aggregation_key, Some("agg"));
    assert_eq!(e.priority, Priority::Low);
    assert_eq!(e.source_type_name, Some("my_apps"));
    assert_eq!(e.alert_type, AlertType::Success);
    assert_eq!(tags(&e.tags), vec!["ev:1"]);
    assert_eq!(e.timestamp, None);
}

#[test]
fn event_lengths_are_bytes_not_characters() {
    // "héllo" is 6 bytes, "wörld|" 7.
    let e = event("_e{6,7}:héllo|wörld||d:1700000000|t:error|p:normal|#a,b");
    assert_eq!((e.title.as_ref(), e.text.as_ref()), ("héllo", "wörld|"));
    assert_eq!(e.timestamp, Some(1_700_000_000));
    assert_eq!(e.alert_type, AlertType::Error);
    assert_eq!(tags(&e.tags), vec!["a", "b"]);
    // A length that cuts a character in two is not UTF-8.
    assert_eq!(
        parse_line("_e{1,1}:é|x".as_bytes()),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn bad_event_headers_and_lengths_are_rejected() {
    let cases = [
        ("_e{0,0}:a|a", ParseError::EmptyEventTitle),
        ("_e{5555:title|text", ParseError::BadEvent),
        ("_e{a,1}:title|text", ParseError::BadEvent),
        ("_e{5,}:title|text", ParseError::BadEvent),
        ("_e{-5,4}:title|text", ParseError::BadEvent),
        ("_e{}:title|text", ParseError::BadEvent),
        ("_e{5,4]:title|text", ParseError::BadEvent),
        ("_e{5,5}:title|text", ParseError::BadEvent),
        ("_e{5,0}:title", ParseError::BadEvent),
        ("_e{5,4}title|text", ParseError::BadEvent),
        ("_e{18446744073709551615,1}:a|b", ParseError::BadEvent),
        ("_e{1,18446744073709551615}:a|b", ParseError::BadEvent),
        ("_e{99999999999999999999999,1}:a|b", ParseError::BadEvent),
    ];
    for (line, want) in cases {
        assert_eq!(parse_line(line.as_bytes()), Err(want), "{line:?}");
    }
}

#[test]
fn bad_optional_event_fields_are_ignored() {
    let e = event("_e{5,4}:title|text|d:abc|p:urgent|t:test|h:|k:|s:|zz:1");
    assert_eq!(e.timestamp, None);
    assert_eq!(e.priority, Priority::Normal);
    assert_eq!(e.alert_type, AlertType::Info);
    assert_eq!(
        (e.hostname, e.aggregation_key, e.source_type_name),
        (None, None, None)
    );
}

#[test]
fn service_check_message_is_the_rest_of_the_line() {
    let sc = service_check(
        r"_sc|Redis connection|2|#env:dev|d:12|h:db1|m:timed out | retrying\nnow|#ignored",
    );
    assert_eq!(sc.name, "Redis connection");
    assert_eq!(sc.status, 2);
    assert_eq!(sc.timestamp, Some(12));
    assert_eq!(sc.hostname, Some("db1"));
    assert_eq!(
        sc.message.as_deref(),
        Some("timed out | retrying\nnow|#ignored")
    );
    assert_eq!(tags(&sc.tags), vec!["env:dev"]);
}

#[test]
fn bad_service_checks_are_rejected_with_their_reason() {
    let cases = [
        ("_sc", ParseError::BadServiceCheck),
        ("_sc|", ParseError::BadServiceCheck),
        ("_sc|name", ParseError::BadServiceCheck),
        ("_sc||0", ParseError::BadServiceCheck),
        ("_sc|name|", ParseError::BadServiceCheckStatus),
        ("_sc|name|4", ParseError::BadServiceCheckStatus),
        ("_sc|name|OK", ParseError::BadServiceCheckStatus),
        ("_sc|name|21", ParseError::BadServiceCheckStatus),
    ];
    for (line, want) in cases {
        assert_eq!(parse_line(line.as_bytes()), Err(want), "{line:?}");
    }
    let sc = service_check("_sc|name|3|d:soon");
    assert_eq!((sc.status, sc.timestamp), (3, None));
}

#[test]
fn hot_shots_metric_with_an_entity_id_tag_and_an_inode_container() {
    let m = metric("hs.origin:1|c|#dd.internal.entity_id:pod-uid-2,env:prod|c:in-5315");
    assert_eq!(
        (m.name, m.kind, m.value),
        ("hs.origin", MetricKind::Count, MetricValue::Single(1.0))
    );
    assert_eq!(
        tags(&m.tags),
        vec!["dd.internal.entity_id:pod-uid-2", "env:prod"]
    );
    assert_eq!(m.origin.local_data, Some("in-5315"));
}

#[test]
fn cadence_gauge_with_legacy_container_id_and_timestamp() {
    let m = metric("pfx.rs.gauge.ts:9|g|#global:1|c:cid-global|T1700000000");
    assert_eq!(
        (m.name, m.kind, m.value),
        (
            "pfx.rs.gauge.ts",
            MetricKind::Gauge,
            MetricValue::Single(9.0)
        )
    );
    assert_eq!(tags(&m.tags), vec!["global:1"]);
    assert_eq!(m.origin.local_data, Some("cid-global"));
    assert_eq!(m.timestamp, Some(1_700_000_000));
}

#[test]
fn cadence_meter_type_m_is_an_unknown_type() {
    assert_eq!(
        parse_line(b"pfx.meter:1|m|#global:1"),
        Err(ParseError::UnknownType)
    );
}

#[test]
fn datadog_go_client_packet_with_a_trailing_newline() {
    let packet =
        b"app.req:1|c|#env:prod,svc:a\napp.lat:12.5:13:14|d|@0.5|#env:prod\napp.users:u42|s\n";
    let got: Vec<_> = parse_packet(packet)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    assert_eq!(got.len(), 3);
    let Message::Metric(lat) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(values(&lat.value), vec![12.5, 13.0, 14.0]);
    assert_eq!(lat.sample_rate, 0.5);
}

#[test]
fn docs_wire_examples_parse() {
    for line in [
        "page.views:1|c",
        "fuel.level:0.5|g",
        "song.length:240|h|@0.5",
        "users.uniques:1234|s",
        "users.online:1|c|@0.5|#country:china",
        "page.views:1:2:32|d",
        "page.views:1|g|#env:dev|c:83c0a99c0a54c0c187f461c7980e9b57f3f6a8b0c918c8d93df19a9de6f3fe1d",
        "page.views:15|c|#env:dev|T1656581400",
        "_e{21,36}:An exception occurred|Cannot parse CSV file from 10.0.0.17|t:warning|#err_type:bad_file",
        "_sc|Redis connection|2|#env:dev|m:Redis connection timed out after 10s",
    ] {
        assert!(parse_line(line.as_bytes()).is_ok(), "{line:?}");
    }
}
