//! Service-check lines: `_sc|<name>|<status>[|d:<ts>][|h:<host>][|#tags][|m:<message>]` (`docs/protocols.md`,
//! "Events and service checks").

use memchr::memchr;

use super::event::optional_text;
use super::line::{Line, field_end, fields, parse_i64, unescape_newlines};
use super::{ParseError, ServiceCheck, Tags};

/// Parse one service-check line (it starts with `_sc`), following the Agent's `parseServiceCheck`.
///
/// One difference: `m:` is taken as the last field, so the message is the rest of the line and may contain `|`
/// (the Agent cuts it at the next `|`; the protocol says `m:` must come last).
pub(super) fn parse<'a, L: Line<'a>>(line: L) -> Result<ServiceCheck<'a>, ParseError> {
    let bytes = line.bytes();
    if !bytes.starts_with(b"_sc|") {
        return Err(ParseError::BadServiceCheck);
    }
    let name_end = memchr(b'|', &bytes[4..]).ok_or(ParseError::BadServiceCheck)? + 4;
    if name_end == 4 {
        return Err(ParseError::BadServiceCheck);
    }
    let status_end = field_end(bytes, name_end + 1);
    let status = match &bytes[name_end + 1..status_end] {
        [digit @ b'0'..=b'3'] => digit - b'0',
        _ => return Err(ParseError::BadServiceCheckStatus),
    };
    let mut check = ServiceCheck {
        name: line.text(4, name_end)?,
        status,
        timestamp: None,
        hostname: None,
        message: None,
        tags: Tags::default(),
    };
    // Optional fields: a repeated field: the last one wins; a bad value is ignored (the Agent logs it).
    for (start, end) in fields(bytes, status_end) {
        let field = &bytes[start..end];
        match field {
            [b'#', ..] => {
                check.tags = Tags {
                    raw: line.text(start + 1, end)?,
                }
            }
            [b'd', b':', value @ ..] => {
                if let Some(ts) = parse_i64(value) {
                    check.timestamp = Some(ts);
                }
            }
            [b'h', b':', ..] => check.hostname = optional_text(line, start + 2, end)?,
            [b'm', b':', ..] => {
                check.message = Some(unescape_newlines(line.text(start + 2, bytes.len())?));
                break;
            }
            _ => {}
        }
    }
    Ok(check)
}
