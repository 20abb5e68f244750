//! Metric lines: `name:value[:value…]|type[|@rate][|#tags][|T<ts>][|c:..][|e:..][|card:..]` (PROTOCOLS.md §1.3–1.4).

use memchr::memchr;

use super::line::{Line, field_end, fields, parse_i64};
use super::{
    Cardinality, MetricKind, MetricSample, MetricValue, Origin, PackedValues, ParseError, Tags,
};

/// Parse one metric line, following the Agent's `parseMetricSample` step by step.
pub(super) fn parse<'a, L: Line<'a>>(line: L) -> Result<MetricSample<'a>, ParseError> {
    let bytes = line.bytes();
    let pipe = memchr(b'|', bytes).ok_or(ParseError::BadFormat)?;
    let colon = memchr(b':', &bytes[..pipe]).ok_or(ParseError::BadFormat)?;
    if colon == 0 {
        return Err(ParseError::EmptyName);
    }
    if colon + 1 == pipe {
        return Err(ParseError::EmptyValue);
    }
    let type_end = field_end(bytes, pipe + 1);
    let kind = match &bytes[pipe + 1..type_end] {
        b"c" => MetricKind::Count,
        b"g" => MetricKind::Gauge,
        b"d" => MetricKind::Distribution,
        b"h" => MetricKind::Histogram,
        b"ms" => MetricKind::Timer,
        b"s" => MetricKind::Set,
        _ => return Err(ParseError::UnknownType),
    };
    let name = line.text(0, colon)?;
    let value = if kind == MetricKind::Set {
        MetricValue::Set(line.text(colon + 1, pipe)?)
    } else {
        parse_values(line, colon + 1, pipe)?
    };

    let mut sample = MetricSample {
        name,
        kind,
        value,
        sample_rate: 1.0,
        tags: Tags::default(),
        timestamp: None,
        origin: Origin::default(),
    };
    // Fields in any order; a repeated field: the last one wins; unknown and empty fields are ignored.
    for (start, end) in fields(bytes, type_end) {
        let field = &bytes[start..end];
        match field.first() {
            Some(b'#') => {
                sample.tags = Tags {
                    raw: line.text(start + 1, end)?,
                }
            }
            Some(b'@') => {
                let rate = parse_f64(&field[1..]).ok_or(ParseError::BadSampleRate)?;
                // Invalid rates (≤ 0, > 1, NaN) count as 1, as the Agent's sketches do for every type.
                sample.sample_rate = if rate > 0.0 && rate <= 1.0 { rate } else { 1.0 };
            }
            Some(b'T') => {
                let ts = parse_i64(&field[1..]).filter(|&ts| ts >= 1);
                sample.timestamp = Some(ts.ok_or(ParseError::BadTimestamp)?);
            }
            Some(b'c') if field.starts_with(b"c:") => {
                sample.origin.local_data = non_empty(line.text(start + 2, end)?);
            }
            Some(b'e') if field.starts_with(b"e:") => {
                sample.origin.external_data = non_empty(line.text(start + 2, end)?);
            }
            Some(b'c') if field.starts_with(b"card:") => {
                // An unknown cardinality is ignored, as the Agent logs and ignores bad origin fields.
                sample.origin.cardinality = cardinality(&field[5..]);
            }
            _ => {}
        }
    }
    Ok(sample)
}

/// The value list `bytes[start..end]` (not empty) of a non-set metric.
#[inline]
fn parse_values<'a, L: Line<'a>>(
    line: L,
    start: usize,
    end: usize,
) -> Result<MetricValue<'a>, ParseError> {
    let raw = &line.bytes()[start..end];
    if memchr(b':', raw).is_none() {
        return parse_f64(raw)
            .map(MetricValue::Single)
            .ok_or(ParseError::BadValue);
    }
    // Packed (v1.1): empty items are skipped; one bad item rejects the line.
    let mut count = 0usize;
    let mut first = 0.0;
    for item in raw.split(|&b| b == b':').filter(|item| !item.is_empty()) {
        let value = parse_f64(item).ok_or(ParseError::BadValue)?;
        if count == 0 {
            first = value;
        }
        count += 1;
    }
    match count {
        0 => Err(ParseError::EmptyValue),
        1 => Ok(MetricValue::Single(first)),
        _ => Ok(MetricValue::Packed(PackedValues {
            raw: line.text(start, end)?,
        })),
    }
}

/// A float as Go's `strconv.ParseFloat` reads it (decimal, exponent, `.5`, `5.`, `NaN`, `Inf`, `Infinity`; no
/// spaces). Hexadecimal floats (`0x1p-2`), which Go also accepts, are rejected.
#[inline]
pub(super) fn parse_f64(bytes: &[u8]) -> Option<f64> {
    // Fast path for the common short integer (`1`, `250`): exact in f64 up to 15 digits.
    if !bytes.is_empty() && bytes.len() <= 15 {
        let mut n: u64 = 0;
        let mut all_digits = true;
        for &b in bytes {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                all_digits = false;
                break;
            }
            n = n * 10 + u64::from(digit);
        }
        if all_digits {
            #[allow(clippy::cast_precision_loss)] // n < 10^15 < 2^53: exact
            return Some(n as f64);
        }
    }
    fast_float2::parse(bytes).ok()
}

/// `card:` values, case-insensitive as in the Agent's tagger.
fn cardinality(value: &[u8]) -> Option<Cardinality> {
    [
        (&b"none"[..], Cardinality::None),
        (b"low", Cardinality::Low),
        (b"orchestrator", Cardinality::Orchestrator),
        (b"high", Cardinality::High),
    ]
    .into_iter()
    .find(|(wire, _)| wire.eq_ignore_ascii_case(value))
    .map(|(_, card)| card)
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}
