//! What the three message parsers share: the line being parsed, `|` fields, integers, `\n` escapes.

use std::borrow::Cow;
use std::str;

use memchr::{memchr, memmem};

use super::ParseError;

/// One line being parsed: its bytes, and its parts borrowed as text.
///
/// Two kinds: `&str` (the line is known to be UTF-8; borrowing a part costs a boundary check) and [`RawLine`] (it
/// is not; each part used is checked on its own, so invalid bytes in an ignored field do not reject the line).
pub(super) trait Line<'a>: Copy {
    /// The line's bytes.
    fn bytes(self) -> &'a [u8];

    /// The bytes `start..end` as text.
    ///
    /// # Errors
    ///
    /// [`ParseError::InvalidUtf8`] when they are not UTF-8 (or would cut a character in two).
    fn text(self, start: usize, end: usize) -> Result<&'a str, ParseError>;
}

impl<'a> Line<'a> for &'a str {
    #[inline]
    fn bytes(self) -> &'a [u8] {
        self.as_bytes()
    }

    #[inline]
    fn text(self, start: usize, end: usize) -> Result<&'a str, ParseError> {
        self.get(start..end).ok_or(ParseError::InvalidUtf8)
    }
}

/// A line that is not valid UTF-8 as a whole.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawLine<'a>(pub(super) &'a [u8]);

impl<'a> Line<'a> for RawLine<'a> {
    fn bytes(self) -> &'a [u8] {
        self.0
    }

    fn text(self, start: usize, end: usize) -> Result<&'a str, ParseError> {
        self.0
            .get(start..end)
            .and_then(|part| str::from_utf8(part).ok())
            .ok_or(ParseError::InvalidUtf8)
    }
}

/// The `|`-separated fields of `bytes` from `pos` on, as `(start, end)` offsets (the `|` excluded).
///
/// `pos` is at a `|` (or the end); a trailing `|` yields one last empty field, as in the Agent.
#[inline]
pub(super) fn fields(bytes: &[u8], pos: usize) -> Fields<'_> {
    Fields { bytes, pos }
}

/// Iterator of [`fields`].
#[derive(Debug)]
pub(super) struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Iterator for Fields<'_> {
    type Item = (usize, usize);

    #[inline]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let start = self.pos + 1;
        let end = self
            .bytes
            .get(start..)
            .and_then(|rest| memchr(b'|', rest))
            .map_or(self.bytes.len(), |i| start + i);
        self.pos = end;
        Some((start, end))
    }
}

/// The end of the `|`-field that starts at `start`: the next `|`, or the end of the line.
#[inline]
pub(super) fn field_end(bytes: &[u8], start: usize) -> usize {
    bytes
        .get(start..)
        .and_then(|rest| memchr(b'|', rest))
        .map_or(bytes.len(), |i| start + i)
}

/// A base-10 integer as Go's `strconv.ParseInt(s, 10, 64)` reads it: optional sign, digits, no overflow.
pub(super) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        let digit = i64::from(digit);
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// A length in an event header: digits only, no overflow.
pub(super) fn parse_len(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0usize, |acc, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// Turn each two-byte `\n` escape into a newline, borrowing when there is none (the Agent's `cleanEventText`).
pub(super) fn unescape_newlines(text: &str) -> Cow<'_, str> {
    if memmem::find(text.as_bytes(), b"\\n").is_some() {
        Cow::Owned(text.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The first `needle` in `haystack`, eight bytes at a time (SWAR).
///
/// For the short spans between tags and packed values, where `memchr`'s set-up costs more than it saves.
#[inline]
pub(super) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest byte flagged here is the first zero byte of `x` (flags above it may be false positives).
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(offset + (zero.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}
