//! Writing JSON by hand: strings escaped, numbers in the shortest form that reads back the same, tags,
//! the optional host. Every format writes its lines with these (serde would allocate a value tree per
//! line, and could not cut a line to fit).

use std::fmt::Write as _;

pub(super) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Shortest text that parses back to the same `f64` (Rust's `Debug`); `null` for NaN and ±Inf, which
/// [`super::Formatter::write_flush`] never lets through (they are left out and counted as `non_finite`).
pub(super) fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str("null");
    }
}

pub(super) fn push_tags(out: &mut String, tags: &[String]) {
    out.push('[');
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, t);
    }
    out.push(']');
}

pub(super) fn push_host(out: &mut String, host: &str) {
    if !host.is_empty() {
        out.push_str(",\"host\":");
        push_str(out, host);
    }
}
