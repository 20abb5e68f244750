//! The values the parser hands out. They borrow the packet buffer.

use std::borrow::Cow;

use super::line::find_byte;
use super::metric::parse_f64;
use crate::model::{AlertType, Priority};

/// DogStatsD metric type, exactly as on the wire (case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `c`
    Count,
    /// `g`
    Gauge,
    /// `h`
    Histogram,
    /// `ms` (a histogram with unit millisecond)
    Timer,
    /// `s`
    Set,
    /// `d`
    Distribution,
}

impl MetricKind {
    /// The wire letter(s): `c`, `g`, `h`, `ms`, `s`, `d`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Count => "c",
            Self::Gauge => "g",
            Self::Histogram => "h",
            Self::Timer => "ms",
            Self::Set => "s",
            Self::Distribution => "d",
        }
    }
}

/// Packed values (`name:1:2:3|d`), already validated by the parser; iterating yields each `f64`.
///
/// Empty items (`1::2`, a leading or trailing `:`) are skipped, as the Agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedValues<'a> {
    /// The raw, validated value list (between the first `:` and the first `|`).
    pub raw: &'a str,
}

impl<'a> PackedValues<'a> {
    /// Each packed value in order, empty items skipped.
    ///
    /// The parser only hands out lists whose every item is a number, so nothing is lost here; an item that is not
    /// a number (only possible for a hand-built value) is skipped.
    pub fn iter(&self) -> impl Iterator<Item = f64> + 'a {
        Split {
            rest: self.raw,
            separator: b':',
        }
        .filter_map(|item| parse_f64(item.as_bytes()))
    }

    /// The number of values (empty items are not values).
    pub fn len(&self) -> usize {
        Split {
            rest: self.raw,
            separator: b':',
        }
        .count()
    }

    /// True when the list holds no value (never the case for a list the parser handed out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value part of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue<'a> {
    /// One number (the common case; parsed once).
    Single(f64),
    /// Several packed numbers (v1.1).
    Packed(PackedValues<'a>),
    /// A set member: everything after the first `:` (may itself contain `:`).
    Set(&'a str),
}

impl MetricValue<'_> {
    /// The number of values: packed values each count, a single value or a set member counts 1.
    pub fn len(&self) -> usize {
        match self {
            Self::Single(_) | Self::Set(_) => 1,
            Self::Packed(values) => values.len(),
        }
    }

    /// True when there is no value (never the case for a value the parser handed out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The raw tag list after `#`; iterating yields each non-empty tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tags<'a> {
    /// The raw text after `#` (tags separated by `,`); empty when there are no tags.
    pub raw: &'a str,
}

impl<'a> Tags<'a> {
    /// Each tag as sent (no trimming, no de-duplication); empty tags (`#a,,b`) are skipped.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        Split {
            rest: self.raw,
            separator: b',',
        }
    }

    /// True when there is no non-empty tag (`#`, `#,,` or no `#` field at all).
    pub fn is_empty(&self) -> bool {
        self.raw.bytes().all(|b| b == b',')
    }
}

/// The non-empty items of a list split on one ASCII byte.
///
/// Not `str::split`: items are short (a tag, a number), where a search routine's set-up costs more than the scan.
#[derive(Debug, Clone)]
struct Split<'a> {
    rest: &'a str,
    /// An ASCII byte, so every split is on a character boundary.
    separator: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            let end = find_byte(bytes, self.separator).unwrap_or(bytes.len());
            let (item, rest) = self.rest.split_at_checked(end)?;
            self.rest = rest.get(1..).unwrap_or_default();
            if !item.is_empty() {
                return Some(item);
            }
        }
        None
    }
}

/// Client cardinality (`card:`, v1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// `none`
    None,
    /// `low`
    Low,
    /// `orchestrator`
    Orchestrator,
    /// `high`
    High,
}

/// Client-sent origin fields (`c:`, `e:`, `card:`); parsed and kept, unused by the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin<'a> {
    /// `c:` local data: container id (`ci-`, legacy `cid-`, bare) and/or `in-<inode>`; raw.
    pub local_data: Option<&'a str>,
    /// `e:` external data, raw.
    pub external_data: Option<&'a str>,
    /// `card:` cardinality.
    pub cardinality: Option<Cardinality>,
}

/// One metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSample<'a> {
    /// Metric name as sent (no namespace yet).
    pub name: &'a str,
    /// Type.
    pub kind: MetricKind,
    /// Value(s).
    pub value: MetricValue<'a>,
    /// Sample rate; invalid rates (≤ 0, > 1, NaN) are already clamped to 1.
    pub sample_rate: f64,
    /// Tags as sent.
    pub tags: Tags<'a>,
    /// `T<unix seconds>` when present.
    pub timestamp: Option<i64>,
    /// Client-sent origin fields.
    pub origin: Origin<'a>,
}

/// One event line (`_e{..}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Title, `\n` escapes turned into newlines.
    pub title: Cow<'a, str>,
    /// Text, `\n` escapes turned into newlines.
    pub text: Cow<'a, str>,
    /// `d:` unix seconds.
    pub timestamp: Option<i64>,
    /// `h:` host.
    pub hostname: Option<&'a str>,
    /// `k:` aggregation key.
    pub aggregation_key: Option<&'a str>,
    /// `p:` priority (normal by default).
    pub priority: Priority,
    /// `s:` source type name.
    pub source_type_name: Option<&'a str>,
    /// `t:` alert type (info by default).
    pub alert_type: AlertType,
    /// Tags.
    pub tags: Tags<'a>,
}

/// One service-check line (`_sc|..`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck<'a> {
    /// Check name.
    pub name: &'a str,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// `d:` unix seconds.
    pub timestamp: Option<i64>,
    /// `h:` host.
    pub hostname: Option<&'a str>,
    /// `m:` message (`\n` escapes turned into newlines).
    pub message: Option<Cow<'a, str>>,
    /// Tags.
    pub tags: Tags<'a>,
}

/// One parsed DogStatsD message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// A metric line.
    Metric(MetricSample<'a>),
    /// An event.
    Event(Event<'a>),
    /// A service check.
    ServiceCheck(ServiceCheck<'a>),
}

/// Why a line was rejected. Each variant is one counted reason (`offpath.parse_errors{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// No `|` in a metric line, or no `:` between name and value.
    #[error("invalid metric line: expected name:value|type")]
    BadFormat,
    /// Empty metric name.
    #[error("empty metric name")]
    EmptyName,
    /// Empty value, or no value left after skipping empty packed items.
    #[error("empty metric value")]
    EmptyValue,
    /// A value that is not a number.
    #[error("metric value is not a number")]
    BadValue,
    /// A type other than `c g ms h s d` (e.g. cadence's `m`).
    #[error("unknown metric type")]
    UnknownType,
    /// `@` followed by something that is not a number.
    #[error("sample rate is not a number")]
    BadSampleRate,
    /// `T` followed by something that is not a positive integer.
    #[error("timestamp is not a positive integer")]
    BadTimestamp,
    /// A name, tag or value that is not UTF-8.
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    /// `_e{..}` with a bad header or lengths that do not fit.
    #[error("invalid event header or lengths")]
    BadEvent,
    /// Event title length 0.
    #[error("event title is empty")]
    EmptyEventTitle,
    /// `_sc|..` without name and status.
    #[error("invalid service check format")]
    BadServiceCheck,
    /// Service check status other than 0, 1, 2, 3.
    #[error("service check status must be 0, 1, 2 or 3")]
    BadServiceCheckStatus,
}

impl ParseError {
    /// Every reason, in counter order.
    pub const ALL: [ParseError; 12] = [
        Self::BadFormat,
        Self::EmptyName,
        Self::EmptyValue,
        Self::BadValue,
        Self::UnknownType,
        Self::BadSampleRate,
        Self::BadTimestamp,
        Self::InvalidUtf8,
        Self::BadEvent,
        Self::EmptyEventTitle,
        Self::BadServiceCheck,
        Self::BadServiceCheckStatus,
    ];

    /// The counter label (`reason`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad_format",
            Self::EmptyName => "empty_name",
            Self::EmptyValue => "empty_value",
            Self::BadValue => "bad_value",
            Self::UnknownType => "unknown_type",
            Self::BadSampleRate => "bad_sample_rate",
            Self::BadTimestamp => "bad_timestamp",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::BadEvent => "bad_event",
            Self::EmptyEventTitle => "empty_event_title",
            Self::BadServiceCheck => "bad_service_check",
            Self::BadServiceCheckStatus => "bad_service_check_status",
        }
    }

    /// Index into [`ParseError::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}
