//! The parsers shared by several keys: pure functions from a trimmed raw value to a typed one, or the
//! text saying what the key accepts (the [`ConfigError`](super::ConfigError) around it names the key).

use std::path::PathBuf;
use std::time::Duration;

/// Longest duration any setting accepts, in seconds: one hour. Deadlines and periods are added to
/// clock readings; a bound keeps that arithmetic far from overflowing.
pub const MAX_SECONDS: f64 = 3600.0;

/// Any text.
#[allow(clippy::unnecessary_wraps)] // a Parser: every parser returns a Result
pub fn text(v: &str) -> Result<String, &'static str> {
    Ok(v.to_owned())
}

/// A filesystem path.
#[allow(clippy::unnecessary_wraps)]
pub fn path(v: &str) -> Result<PathBuf, &'static str> {
    Ok(PathBuf::from(v))
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, in any case.
pub fn boolean(v: &str) -> Result<bool, &'static str> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("true or false"),
    }
}

/// A list, separated by commas and/or whitespace.
#[allow(clippy::unnecessary_wraps)]
pub fn list(v: &str) -> Result<Vec<String>, &'static str> {
    Ok(split_list(v))
}

/// A positive number of seconds, at most [`MAX_SECONDS`] (fractions allowed).
pub fn seconds(v: &str) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "a positive number of seconds, at most 3600";
    v.parse::<f64>()
        .ok()
        .filter(|s| *s <= MAX_SECONDS)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or(EXPECTED)
}

/// An integer in `min..=max`, or `expected`.
pub fn in_range(v: &str, min: u64, max: u64, expected: &'static str) -> Result<u64, &'static str> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or(expected)
}

/// [`in_range`] as a `usize`.
pub fn usize_in_range(
    v: &str,
    min: usize,
    max: usize,
    expected: &'static str,
) -> Result<usize, &'static str> {
    in_range(v, min as u64, max as u64, expected).map(|n| n as usize)
}

/// Split a list the way the Agent accepts it: separated by commas and/or whitespace; a YAML or JSON
/// style `[a, b]` is accepted too.
pub fn split_list(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|s| s.trim_matches(|c| c == '"' || c == '\''))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
