//! DogStatsD protocol v1.0–v1.6: `&[u8]` packets to borrowed metric, event and service-check values.
//!
//! Pure and zero-copy: no tokio, no I/O, no allocation on the happy path (an event title or text, or a service
//! check message, allocates only when it holds a `\n` escape). See `docs/protocols.md`, "DogStatsD".
//!
//! ```text
//! packet ──split on \n, drop \r, skip empty──> line ──prefix──> `_e{` event | `_sc` service check | metric
//! ```
//!
//! UTF-8 is checked once per packet. When a packet is not valid UTF-8, each line is checked on its own, and a line
//! that is not valid UTF-8 is parsed byte-wise: only the parts it uses (name, value list, set member, tags, origin,
//! event and service-check texts) must be UTF-8, as in the Agent, which ignores unknown fields.

mod event;
mod line;
mod metric;
mod service_check;
mod types;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::str;

use memchr::memchr;

pub use types::{
    Cardinality, Event, Message, MetricKind, MetricSample, MetricValue, Origin, PackedValues,
    ParseError, ServiceCheck, Tags,
};

use line::{Line, RawLine};

/// Parse a packet: one message per non-empty line.
///
/// Lines are split on `\n`; a trailing `\r` is dropped; empty lines are skipped; the last line may lack `\n`.
/// A bad line yields its [`ParseError`] and the iterator goes on with the next line.
pub fn parse_packet(packet: &[u8]) -> Lines<'_> {
    Lines {
        packet,
        text: simdutf8::basic::from_utf8(packet).ok(),
        pos: 0,
    }
}

/// Parse one line (without its `\n`; a `\r` here is part of the line).
///
/// # Errors
///
/// The [`ParseError`] reason the line is rejected for.
pub fn parse_line(line: &[u8]) -> Result<Message<'_>, ParseError> {
    match str::from_utf8(line) {
        Ok(text) => parse(text),
        Err(_) => parse(RawLine(line)),
    }
}

/// The messages of one packet, see [`parse_packet`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    /// The whole packet.
    packet: &'a [u8],
    /// The whole packet as text, when it is valid UTF-8 (checked once).
    text: Option<&'a str>,
    /// Where the next line starts.
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Message<'a>, ParseError>;

    // Inlined into every caller's loop, so a message (136 bytes) is built where it is used rather than
    // copied out of a call per line (a `memcpy` call per line, about 4 % of the hot path).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self
                .packet
                .get(self.pos..)
                .filter(|rest| !rest.is_empty())?;
            let start = self.pos;
            let newline = memchr(b'\n', rest).map_or(self.packet.len(), |i| start + i);
            self.pos = newline + 1;
            let mut end = newline;
            if end > start && self.packet[end - 1] == b'\r' {
                end -= 1;
            }
            if end == start {
                continue;
            }
            // `\n` and `\r` are ASCII, so `start..end` is on character boundaries of a valid packet.
            return Some(match self.text.and_then(|text| text.get(start..end)) {
                Some(line) => parse(line),
                None => parse_line(&self.packet[start..end]),
            });
        }
    }
}

impl std::iter::FusedIterator for Lines<'_> {}

/// Classify a line by prefix, as the Agent does (`findMessageType`), and parse it.
fn parse<'a, L: Line<'a>>(line: L) -> Result<Message<'a>, ParseError> {
    let bytes = line.bytes();
    if bytes.first() == Some(&b'_') {
        if bytes.starts_with(b"_e{") {
            return event::parse(line).map(Message::Event);
        }
        if bytes.starts_with(b"_sc") {
            return service_check::parse(line).map(Message::ServiceCheck);
        }
    }
    metric::parse(line).map(Message::Metric)
}
