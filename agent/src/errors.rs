//! How an error is shown: its message and its causes on one line, the way every log line and report
//! of offpath prints them.
//!
//! An error that wraps another keeps it as its `source()` and does not repeat it in its own message;
//! [`Chain`] appends the causes, `: `-separated. (A cause whose text is already part of what is shown
//! is skipped, so an error from a library that does repeat its source is not printed twice either.)

use std::error::Error;
use std::fmt;

/// `error: cause: cause…` on one line. Use it wherever an error is logged or reported:
/// `tracing::warn!(error = %Chain(&e), …)`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = e.source();
        }
        f.write_str(&shown)
    }
}

/// [`Chain`] as a `String`.
pub fn chain(e: &dyn Error) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind UDP 127.0.0.1:8125 (DD_DOGSTATSD_PORT / DD_BIND_HOST)")]
    struct Bind(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_are_appended_once() {
        let e = Bind(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        let shown = chain(&e);
        assert_eq!(
            shown,
            "cannot bind UDP 127.0.0.1:8125 (DD_DOGSTATSD_PORT / DD_BIND_HOST): address in use"
        );
        // anyhow's alternate form, which main prints, agrees.
        let any = anyhow::Error::from(Bind(std::io::Error::from(std::io::ErrorKind::AddrInUse)));
        assert_eq!(format!("{any:#}"), shown);
    }

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated() {
        let e = Repeats(std::io::Error::other("disk full"));
        assert_eq!(chain(&e), "outer: disk full");
    }
}
