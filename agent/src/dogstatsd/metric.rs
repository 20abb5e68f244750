//! Metric lines: `name:value[:value…]|type[|@rate][|#tags][|T<ts>][|c:..][|e:..][|card:..]` (`docs/protocols.md`,
//! "Metric lines").

use memchr::memchr2;

use super::line::{Line, fields, parse_i64};
use super::{
    Cardinality, MetricKind, MetricSample, MetricValue, Origin, PackedValues, ParseError, Tags,
};

/// Parse one metric line, following the Agent's `parseMetricSample` step by step.
#[inline]
pub(super) fn parse<'a, L: Line<'a>>(line: L) -> Result<MetricSample<'a>, ParseError> {
    let bytes = line.bytes();
    // The name ends at the first `:`, which must come before the first `|`.
    let colon = match memchr2(b':', b'|', bytes) {
        Some(i) if bytes[i] == b':' => i,
        _ => return Err(ParseError::BadFormat),
    };
    // The value list is short: scan it by hand for its `|`, noting any `:` (packed values) on the way.
    let mut pipe = colon + 1;
    let mut packed = false;
    loop {
        match bytes.get(pipe) {
            Some(b'|') => break,
            Some(b':') => packed = true,
            Some(_) => {}
            None => return Err(ParseError::BadFormat),
        }
        pipe += 1;
    }
    if colon == 0 {
        return Err(ParseError::EmptyName);
    }
    if colon + 1 == pipe {
        return Err(ParseError::EmptyValue);
    }
    let type_start = pipe + 1;
    let type_end = bytes[type_start..]
        .iter()
        .position(|&b| b == b'|')
        .map_or(bytes.len(), |i| type_start + i);
    let kind = match &bytes[type_start..type_end] {
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
    } else if packed {
        parse_packed(line, colon + 1, pipe)?
    } else {
        MetricValue::Single(parse_f64(&bytes[colon + 1..pipe]).ok_or(ParseError::BadValue)?)
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

/// The packed value list `bytes[start..end]` (v1.1): empty items are skipped; one bad item rejects the line.
fn parse_packed<'a, L: Line<'a>>(
    line: L,
    start: usize,
    end: usize,
) -> Result<MetricValue<'a>, ParseError> {
    let mut count = 0usize;
    let mut first = 0.0;
    for item in line.bytes()[start..end]
        .split(|&b| b == b':')
        .filter(|item| !item.is_empty())
    {
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
    match parse_short_decimal(bytes) {
        Some(value) => Some(value),
        None => fast_float2::parse(bytes).ok(),
    }
}

/// Exact powers of ten up to 10^15.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common value shapes (`1`, `-3`, `250.125`, `.5`) with at most 15 digits, else `None`.
///
/// Correctly rounded: the digits form an integer below 2^53 and 10^k (k ≤ 15) is exact, so the one IEEE division
/// rounds once (Clinger's fast path, also the first path of `fast-float`).
#[inline]
fn parse_short_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, bytes),
    };
    if digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut dot = None;
    for (i, &b) in digits.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit <= 9 {
            mantissa = mantissa * 10 + u64::from(digit);
            count += 1;
        } else if b == b'.' && dot.is_none() {
            dot = Some(i);
        } else {
            return None;
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    let scale = dot.map_or(0, |dot| digits.len() - dot - 1);
    #[allow(clippy::cast_precision_loss)] // mantissa < 10^15 < 2^53: exact
    let value = mantissa as f64 / POW10[scale];
    Some(if negative { -value } else { value })
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
