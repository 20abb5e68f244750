//! Property tests: no input makes the parser panic; generated well-formed metrics round-trip.

use proptest::prelude::*;

use super::*;

/// Use every part of every message, so lazy iterators run too.
fn consume(packet: &[u8]) -> usize {
    let mut seen = 0;
    for result in parse_packet(packet) {
        let Ok(message) = result else {
            seen += 1;
            continue;
        };
        seen += match message {
            Message::Metric(m) => {
                let values = match m.value {
                    MetricValue::Packed(p) => p.iter().count(),
                    MetricValue::Single(_) | MetricValue::Set(_) => 1,
                };
                assert_eq!(values, m.value.len());
                assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0);
                assert!(m.timestamp.is_none_or(|ts| ts >= 1));
                m.tags.iter().count() + usize::from(m.tags.is_empty()) + m.name.len()
            }
            Message::Event(e) => e.title.len() + e.text.len() + e.tags.iter().count(),
            Message::ServiceCheck(sc) => sc.name.len() + sc.message.map_or(0, |m| m.len()),
        };
    }
    seen
}

/// Pieces of the grammar, so random packets reach deep into the parsers.
const TOKENS: &[&[u8]] = &[
    b"a",
    b"x.y",
    "é".as_bytes(),
    b"\xff",
    b"\xc3",
    b":",
    b"|",
    b"#",
    b"@",
    b",",
    b"T",
    b"c:",
    b"e:",
    b"card:",
    b"low",
    b"_e{",
    b"_sc",
    b"}",
    b"{",
    b"1",
    b"0",
    b"3",
    b"12",
    b"-",
    b"0.5",
    b"1e9",
    b"NaN",
    b"Inf",
    b"\n",
    b"\r",
    b"\\n",
    b"d:",
    b"h:",
    b"k:",
    b"p:",
    b"s:",
    b"t:",
    b"m:",
    b"c",
    b"g",
    b"ms",
    b"h",
    b"s",
    b"d",
];

fn token_packet() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|tokens| tokens.concat())
}

/// A well-formed metric and the line that carries it.
#[derive(Debug, Clone)]
struct Generated {
    name: String,
    kind: MetricKind,
    values: Vec<f64>,
    member: String,
    sample_rate: Option<f64>,
    tags: Option<Vec<String>>,
    timestamp: Option<i64>,
    local_data: Option<String>,
    line: String,
}

fn kind() -> impl Strategy<Value = MetricKind> {
    prop::sample::select(vec![
        MetricKind::Count,
        MetricKind::Gauge,
        MetricKind::Histogram,
        MetricKind::Timer,
        MetricKind::Set,
        MetricKind::Distribution,
    ])
}

fn value_text(value: f64, style: u8) -> String {
    match style % 3 {
        0 => format!("{value}"),
        1 => format!("{value:e}"),
        _ => format!("{value:?}"),
    }
}

/// The parts of a metric before its fields are put in a random order.
type Parts = (
    String,
    MetricKind,
    Vec<f64>,
    Vec<u8>,
    bool,
    String,
    Option<f64>,
    Option<Vec<String>>,
    Option<i64>,
    Option<String>,
    Vec<String>,
);

fn generated() -> impl Strategy<Value = Generated> {
    let parts = (
        "[^:|\r\n_][^:|\r\n]{0,30}",
        kind(),
        prop::collection::vec(any::<f64>(), 1..6),
        prop::collection::vec(any::<u8>(), 6),
        any::<bool>(),
        "[^|\r\n]{1,20}",
        prop::option::of(0.000_001f64..=1.0),
        prop::option::of(prop::collection::vec("[^,|\r\n]{0,15}", 0..10)),
        prop::option::of(1i64..=i64::MAX),
        prop::option::of("[^|\r\n]{1,20}"),
        prop::collection::vec("([abdfghxyz][a-z0-9:]{0,10})?", 0..3),
    );
    parts
        .prop_flat_map(|parts: Parts| {
            let (_, _, _, _, _, _, rate, tags, ts, local, unknown) = &parts;
            let mut fields: Vec<String> = Vec::new();
            if let Some(rate) = rate {
                fields.push(format!("@{rate}"));
            }
            if let Some(tags) = tags {
                fields.push(format!("#{}", tags.join(",")));
            }
            if let Some(ts) = ts {
                fields.push(format!("T{ts}"));
            }
            if let Some(local) = local {
                fields.push(format!("c:{local}"));
            }
            fields.extend(unknown.iter().cloned());
            (Just(parts), Just(fields).prop_shuffle())
        })
        .prop_map(|(parts, fields)| {
            let (
                name,
                kind,
                values,
                styles,
                empty_items,
                member,
                sample_rate,
                tags,
                timestamp,
                local_data,
                _,
            ) = parts;
            let value = if kind == MetricKind::Set {
                member.clone()
            } else {
                let separator = if empty_items { "::" } else { ":" };
                let list: Vec<String> = values
                    .iter()
                    .zip(&styles)
                    .map(|(v, s)| value_text(*v, *s))
                    .collect();
                list.join(separator)
            };
            let mut line = format!("{name}:{value}|{}", kind.as_str());
            for field in fields {
                line.push('|');
                line.push_str(&field);
            }
            Generated {
                name,
                kind,
                values,
                member,
                sample_rate,
                tags,
                timestamp,
                local_data,
                line,
            }
        })
}

fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[track_caller]
fn check_round_trip(g: &Generated, message: Result<Message<'_>, ParseError>) {
    let Ok(Message::Metric(m)) = message else {
        panic!("{:?}: {message:?}", g.line)
    };
    assert_eq!(m.name, g.name);
    assert_eq!(m.kind, g.kind);
    match m.value {
        MetricValue::Set(member) => assert_eq!(member, g.member),
        MetricValue::Single(v) => assert!(
            g.values.len() == 1 && same_f64(v, g.values[0]),
            "{v} vs {:?}",
            g.values
        ),
        MetricValue::Packed(p) => {
            let got: Vec<f64> = p.iter().collect();
            assert!(
                got.len() == g.values.len()
                    && got.iter().zip(&g.values).all(|(a, b)| same_f64(*a, *b)),
                "{got:?} vs {:?}",
                g.values
            );
        }
    }
    assert_eq!(m.sample_rate, g.sample_rate.unwrap_or(1.0));
    let want_tags: Vec<&str> = g
        .tags
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), want_tags);
    assert_eq!(m.tags.is_empty(), want_tags.is_empty());
    assert_eq!(m.timestamp, g.timestamp);
    assert_eq!(m.origin.local_data, g.local_data.as_deref());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..600)) {
        consume(&packet);
        let _ = parse_line(&packet);
    }

    #[test]
    fn packets_made_of_grammar_pieces_never_panic(packet in token_packet()) {
        consume(&packet);
        let _ = parse_line(&packet);
    }

    #[test]
    fn values_parse_to_the_correctly_rounded_float(
        text in "[-+]?[0-9]{0,18}(\\.[0-9]{0,18})?([eE][-+]?[0-9]{1,3})?",
    ) {
        // Rust's own parser rounds correctly; ours must agree bit for bit (fast path and fallback alike).
        let ours = super::metric::parse_f64(text.as_bytes()).map(f64::to_bits);
        prop_assert_eq!(ours, text.parse::<f64>().ok().map(f64::to_bits), "{}", text);
    }

    #[test]
    fn find_byte_finds_the_first_occurrence(haystack in prop::collection::vec(prop::sample::select(b",a\x80\xff".to_vec()), 0..40)) {
        let want = haystack.iter().position(|&b| b == b',');
        prop_assert_eq!(super::line::find_byte(&haystack, b','), want);
    }

    #[test]
    fn a_well_formed_metric_round_trips(g in generated(), ending in prop::sample::select(vec!["", "\n", "\r\n"])) {
        check_round_trip(&g, parse_line(g.line.as_bytes()));
        // The same line inside a packet, after another line, with any line ending.
        let packet = format!("other:1|c\n{}{ending}", g.line);
        let messages: Vec<_> = parse_packet(packet.as_bytes()).collect();
        prop_assert_eq!(messages.len(), 2);
        check_round_trip(&g, messages[1].clone());
        // And in a packet that is not valid UTF-8 elsewhere (the per-line path).
        let mut packet = b"bad:\xff|s\n".to_vec();
        packet.extend_from_slice(g.line.as_bytes());
        let messages: Vec<_> = parse_packet(&packet).collect();
        prop_assert_eq!(messages.len(), 2);
        check_round_trip(&g, messages[1].clone());
    }
}
