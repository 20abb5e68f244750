//! Conformance: every row of `testdata/dogstatsd.tsv` (the Agent's own parser tests plus rows derived from its
//! code; format in `docs/protocols.md`, "The conformance table") checked against the parser, row by row.
//!
//! A few rows describe the Agent under a configuration offpath does not have, or a deliberate difference. Those rows
//! are listed in [`NOTES`] with the reason and the answer offpath gives instead; they are checked, never skipped.
//! Notes also add checks for fields the table has no column for (event priority, service-check host, …).

use serde_json::Value;

use super::{Message, MetricValue, parse_packet};
use crate::model::{AlertType, Priority};

const VECTORS: &str = include_str!("testdata/dogstatsd.tsv");

/// What one message of a row should parse to.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    name: String,
    kind: String,
    values: Values,
    sample_rate: Option<f64>,
    tags: Vec<String>,
    timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    /// Numeric types: the values (NaN and infinities included).
    Numbers(Vec<f64>),
    /// A set member, an event text or a service-check status.
    Text(String),
}

/// A row that needs a word: a different answer from offpath, or extra checks.
struct Note {
    /// The `input` column exactly as written in the file.
    input: &'static str,
    /// Why offpath's answer differs from the row, when it does (the row then counts as interpreted).
    differs: Option<&'static str>,
    /// Turn the row's expectation into offpath's.
    adjust: fn(&mut Vec<Expected>),
    /// Checks of fields the table has no column for.
    extra: fn(&[Message<'_>]),
}

fn no_adjust(_: &mut Vec<Expected>) {}
fn no_extra(_: &[Message<'_>]) {}

const ORIGIN_CLIENT: &str = "the Agent reads c:/e:/card: only with dogstatsd_origin_detection_client=true (default \
     false); offpath always parses them and keeps them raw in MetricSample::origin (the aggregator does not use them)";

const NOTES: &[Note] = &[
    Note {
        input: "daemon:1|c|@0",
        differs: Some(
            "the Agent keeps rate 0 (a counter then becomes +Inf); offpath counts rates <= 0, > 1 or NaN as 1 \
             (offpath's choice, `docs/protocols.md`, \"Metric lines\")",
        ),
        adjust: |e| e[0].sample_rate = Some(1.0),
        extra: no_extra,
    },
    Note {
        input: r"a:1|c\nb:2|c",
        differs: Some(
            "the row shows dogstatsd_eol_required=[udp], which drops an unterminated last line; offpath does not \
             implement that key and behaves as the Agent's default: the last line may lack \\n, so both lines parse",
        ),
        adjust: |e| {
            let mut b = e[0].clone();
            b.name = "b".into();
            b.values = Values::Numbers(vec![2.0]);
            e.push(b);
        },
        extra: no_extra,
    },
    Note {
        input: "_sc|db_check|1|#env:prod|m:Error: timeout|retrying",
        differs: Some(
            "the Agent cuts m: at the next '|' (message 'Error: timeout'); offpath takes m: as the last field, as \
             the protocol says it must be, so the message keeps '|retrying'",
        ),
        adjust: no_adjust,
        extra: |m| {
            assert_eq!(
                service_check(m).message.as_deref(),
                Some("Error: timeout|retrying")
            )
        },
    },
    Note {
        input: "example.metric:2.39283|d|@1.000000|#environment:dev|c:2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f",
        differs: Some(ORIGIN_CLIENT),
        adjust: no_adjust,
        extra: |m| {
            assert_eq!(
                metric_local_data(m),
                Some("2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f")
            )
        },
    },
    Note {
        input: "example.metric:2.39283|d|T1657100540|@1.000000|#environment:dev|c:2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f",
        differs: Some(ORIGIN_CLIENT),
        adjust: no_adjust,
        extra: |m| {
            assert_eq!(
                metric_local_data(m),
                Some("2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f")
            )
        },
    },
    Note {
        input: "example.metric:2.39283|d|T1657100540|@1.000000|#environment:dev|c:2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f|f:wowthisisacoolfeature",
        differs: Some(ORIGIN_CLIENT),
        adjust: no_adjust,
        extra: |m| {
            assert_eq!(
                metric_local_data(m),
                Some("2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f")
            )
        },
    },
    Note {
        input: "metric:1234|g|c:1234567890abcdef",
        differs: Some(ORIGIN_CLIENT),
        adjust: no_adjust,
        extra: |m| assert_eq!(metric_local_data(m), Some("1234567890abcdef")),
    },
    Note {
        input: "_e{5,4}:title|text|t:test",
        differs: None,
        adjust: no_adjust,
        extra: |m| assert_eq!(event(m).alert_type, AlertType::Info),
    },
    Note {
        input: "_e{10,9}:test title|test text|t:warning|d:12345|p:low|h:some.host|k:aggKey|s:source test|#tag1,tag2:test",
        differs: None,
        adjust: no_adjust,
        extra: |m| {
            let e = event(m);
            assert_eq!(e.alert_type, AlertType::Warning);
            assert_eq!(e.priority, Priority::Low);
            assert_eq!(e.hostname, Some("some.host"));
            assert_eq!(e.aggregation_key, Some("aggKey"));
            assert_eq!(e.source_type_name, Some("source test"));
        },
    },
    Note {
        input: "_e{10,0}:test title||t:warning",
        differs: None,
        adjust: no_adjust,
        extra: |m| assert_eq!(event(m).alert_type, AlertType::Warning),
    },
    Note {
        input: "_sc|agent.up|0|d:21|h:localhost|#tag1:test,tag2|m:this is fine",
        differs: None,
        adjust: no_adjust,
        extra: |m| {
            let sc = service_check(m);
            assert_eq!(sc.hostname, Some("localhost"));
            assert_eq!(sc.message.as_deref(), Some("this is fine"));
        },
    },
    Note {
        input: "_sc|agent.up|0|d:21|h:localhost|h:localhost2|d:22",
        differs: None,
        adjust: no_adjust,
        extra: |m| assert_eq!(service_check(m).hostname, Some("localhost2")),
    },
];

#[track_caller]
fn event<'m, 'a>(messages: &'m [Message<'a>]) -> &'m super::Event<'a> {
    match messages {
        [Message::Event(e)] => e,
        other => panic!("expected one event, got {other:?}"),
    }
}

#[track_caller]
fn service_check<'m, 'a>(messages: &'m [Message<'a>]) -> &'m super::ServiceCheck<'a> {
    match messages {
        [Message::ServiceCheck(sc)] => sc,
        other => panic!("expected one service check, got {other:?}"),
    }
}

#[track_caller]
fn metric_local_data<'a>(messages: &[Message<'a>]) -> Option<&'a str> {
    match messages {
        [Message::Metric(m)] => m.origin.local_data,
        other => panic!("expected one metric, got {other:?}"),
    }
}

/// The file's escapes, decoded left to right: `\n` LF, `\r` CR, `\\` one backslash; anything else is kept.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn json_number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse::<f64>().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

/// The messages a row's columns describe (`;` separates messages).
fn expected(cols: &[&str]) -> Vec<Expected> {
    let [_, _, name, values, kind, rate, tags, timestamp, _] = cols else {
        panic!("expected 9 columns, got {}", cols.len())
    };
    if name.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = name.split(';').collect();
    let per_message = |column: &str, i: usize| column.split(';').nth(i).unwrap_or("").to_string();
    let values_json: Option<Vec<Value>> = if names.len() > 1 {
        let all: Value = serde_json::from_str(values).unwrap();
        Some(all.as_array().unwrap().clone())
    } else {
        None
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let kind = per_message(kind, i);
            let values = match kind.as_str() {
                "s" | "event" | "service_check" => Values::Text(unescape(values)),
                _ => {
                    let list = match &values_json {
                        Some(all) => all[i].clone(),
                        None => serde_json::from_str(values).unwrap(),
                    };
                    Values::Numbers(list.as_array().unwrap().iter().map(json_number).collect())
                }
            };
            let rate = per_message(rate, i);
            let tags = per_message(tags, i);
            let timestamp = per_message(timestamp, i);
            Expected {
                name: unescape(name),
                values,
                sample_rate: (!rate.is_empty()).then(|| rate.parse().unwrap()),
                tags: if tags.is_empty() {
                    Vec::new()
                } else {
                    serde_json::from_str(&tags).unwrap()
                },
                timestamp: (!timestamp.is_empty()).then(|| timestamp.parse().unwrap()),
                kind,
            }
        })
        .collect()
}

/// What the parser gave, in the same shape.
fn actual(message: &Message<'_>) -> Expected {
    match message {
        Message::Metric(m) => Expected {
            name: m.name.to_string(),
            kind: m.kind.as_str().to_string(),
            values: match m.value {
                MetricValue::Single(v) => Values::Numbers(vec![v]),
                MetricValue::Packed(p) => Values::Numbers(p.iter().collect()),
                MetricValue::Set(member) => Values::Text(member.to_string()),
            },
            sample_rate: Some(m.sample_rate),
            tags: m.tags.iter().map(str::to_string).collect(),
            timestamp: m.timestamp,
        },
        Message::Event(e) => Expected {
            name: e.title.to_string(),
            kind: "event".into(),
            values: Values::Text(e.text.to_string()),
            sample_rate: None,
            tags: e.tags.iter().map(str::to_string).collect(),
            timestamp: e.timestamp,
        },
        Message::ServiceCheck(sc) => Expected {
            name: sc.name.to_string(),
            kind: "service_check".into(),
            values: Values::Text(sc.status.to_string()),
            sample_rate: None,
            tags: sc.tags.iter().map(str::to_string).collect(),
            timestamp: sc.timestamp,
        },
    }
}

/// Equal, with NaN equal to NaN (`NaN` rows).
fn same(want: &Expected, got: &Expected) -> bool {
    let values = match (&want.values, &got.values) {
        (Values::Numbers(w), Values::Numbers(g)) => {
            w.len() == g.len()
                && w.iter()
                    .zip(g)
                    .all(|(w, g)| w == g || (w.is_nan() && g.is_nan()))
        }
        (w, g) => w == g,
    };
    values
        && want.name == got.name
        && want.kind == got.kind
        && want.tags == got.tags
        && want.timestamp == got.timestamp
        && (want.sample_rate.is_none() || want.sample_rate == got.sample_rate)
}

#[test]
fn every_vector_row_parses_as_the_agent_does_or_as_documented() {
    let mut lines = VECTORS.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        "input\texpect\tname\tvalues\ttype\tsample_rate\ttags\ttimestamp\tnotes"
    );
    let (mut literal, mut interpreted) = (0, 0);
    let mut notes_used = vec![false; NOTES.len()];
    for (i, row) in lines.enumerate() {
        let number = i + 2;
        let cols: Vec<&str> = row.split('\t').collect();
        let input = unescape(cols[0]);
        let results: Vec<_> = parse_packet(input.as_bytes()).collect();
        let note = NOTES.iter().position(|n| n.input == cols[0]);
        if let Some(n) = note {
            notes_used[n] = true;
        }
        let note = note.map(|n| &NOTES[n]);
        match cols[1] {
            "err" => {
                assert!(
                    !results.is_empty() && results.iter().all(Result::is_err),
                    "line {number}: expected an error, got {results:?}\nrow: {row}"
                );
                let reasons: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
                eprintln!("line {number}: rejected ({reasons:?}) {:?}", cols[0]);
            }
            "ok" => {
                let messages: Vec<Message<'_>> = match results.into_iter().collect() {
                    Ok(m) => m,
                    Err(e) => panic!("line {number}: expected ok, got {e:?}\nrow: {row}"),
                };
                let mut want = expected(&cols);
                if let Some(note) = note {
                    (note.adjust)(&mut want);
                }
                let got: Vec<Expected> = messages.iter().map(actual).collect();
                assert!(
                    want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| same(w, g)),
                    "line {number}: mismatch\n want {want:?}\n  got {got:?}\nrow: {row}"
                );
                if let Some(note) = note {
                    (note.extra)(&messages);
                }
            }
            other => panic!("line {number}: bad expect column {other:?}\nrow: {row}"),
        }
        match note.and_then(|n| n.differs) {
            Some(why) => {
                interpreted += 1;
                eprintln!("line {number}: interpreted: {why}");
            }
            None => literal += 1,
        }
    }
    let unused: Vec<_> = NOTES
        .iter()
        .zip(&notes_used)
        .filter(|(_, used)| !**used)
        .map(|(n, _)| n.input)
        .collect();
    assert!(
        unused.is_empty(),
        "notes for rows not in the file: {unused:?}"
    );
    eprintln!("{literal} rows as the Agent, {interpreted} interpreted");
    assert_eq!(literal + interpreted, 75, "the vector file has 75 rows");
}
