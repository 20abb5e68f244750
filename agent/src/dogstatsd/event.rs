//! Event lines: `_e{<title bytes>,<text bytes>}:<title>|<text>[|d:][|h:][|k:][|p:][|s:][|t:][|#tags]`
//! (`docs/protocols.md`, "Events and service checks").

use memchr::memchr;

use super::line::{Line, fields, parse_i64, parse_len, unescape_newlines};
use super::{Event, ParseError, Tags};
use crate::model::{AlertType, Priority};

/// Parse one event line (it starts with `_e{`), following the Agent's `parseEvent`.
pub(super) fn parse<'a, L: Line<'a>>(line: L) -> Result<Event<'a>, ParseError> {
    let bytes = line.bytes();
    let colon = memchr(b':', bytes).ok_or(ParseError::BadEvent)?;
    let (title_len, text_len) = header(&bytes[..colon]).ok_or(ParseError::BadEvent)?;
    if title_len == 0 {
        return Err(ParseError::EmptyEventTitle);
    }
    // Byte lengths over the still-escaped text; the byte between title and text is not checked (as in the Agent).
    let title_start = colon + 1;
    let title_end = title_start
        .checked_add(title_len)
        .ok_or(ParseError::BadEvent)?;
    let text_start = title_end.checked_add(1).ok_or(ParseError::BadEvent)?;
    let text_end = text_start
        .checked_add(text_len)
        .ok_or(ParseError::BadEvent)?;
    if text_end > bytes.len() {
        return Err(ParseError::BadEvent);
    }
    let mut event = Event {
        title: unescape_newlines(line.text(title_start, title_end)?),
        text: unescape_newlines(line.text(text_start, text_end)?),
        timestamp: None,
        hostname: None,
        aggregation_key: None,
        priority: Priority::Normal,
        source_type_name: None,
        alert_type: AlertType::Info,
        tags: Tags::default(),
    };
    // Optional fields: a repeated field: the last one wins; a bad value is ignored (the Agent logs it).
    for (start, end) in fields(bytes, text_end) {
        let field = &bytes[start..end];
        match field {
            [b'#', ..] => {
                event.tags = Tags {
                    raw: line.text(start + 1, end)?,
                }
            }
            [b'd', b':', value @ ..] => {
                if let Some(ts) = parse_i64(value) {
                    event.timestamp = Some(ts);
                }
            }
            [b'h', b':', ..] => event.hostname = optional_text(line, start + 2, end)?,
            [b'k', b':', ..] => event.aggregation_key = optional_text(line, start + 2, end)?,
            [b's', b':', ..] => event.source_type_name = optional_text(line, start + 2, end)?,
            [b'p', b':', value @ ..] => match value {
                b"normal" => event.priority = Priority::Normal,
                b"low" => event.priority = Priority::Low,
                _ => {}
            },
            [b't', b':', value @ ..] => match value {
                b"error" => event.alert_type = AlertType::Error,
                b"warning" => event.alert_type = AlertType::Warning,
                b"info" => event.alert_type = AlertType::Info,
                b"success" => event.alert_type = AlertType::Success,
                _ => {}
            },
            _ => {}
        }
    }
    Ok(event)
}

/// `_e{12,34}` → `(12, 34)`: two non-negative decimal lengths.
fn header(header: &[u8]) -> Option<(usize, usize)> {
    let inner = header.strip_prefix(b"_e{")?.strip_suffix(b"}")?;
    let comma = memchr(b',', inner)?;
    Some((parse_len(&inner[..comma])?, parse_len(&inner[comma + 1..])?))
}

/// A text field value; empty means "not set".
pub(super) fn optional_text<'a, L: Line<'a>>(
    line: L,
    start: usize,
    end: usize,
) -> Result<Option<&'a str>, ParseError> {
    let text = line.text(start, end)?;
    Ok((!text.is_empty()).then_some(text))
}
