//! Where a payload goes: an intake endpoint with one API key.
//!
//! The main destination is the intake of `DD_SITE` / `DD_DD_URL` with `DD_API_KEY` (or the key of
//! `DD_API_KEY_SECRET_ARN`); `DD_ADDITIONAL_ENDPOINTS` adds one destination per (endpoint, key) pair
//! (see `docs/architecture.md`, "How to add a destination"). Every payload goes to every destination,
//! and each destination settles its copy once: the ledger is kept per destination.
//!
//! A destination is named without its key: the endpoint URL and the last characters of the key, as
//! the Datadog Agent shows a key in its status (`https://app.datadoghq.eu#…f00d5`). The name is what a
//! fallback record carries and what `offpath replay` matches; it is safe to log.

use std::fmt;

/// Most destinations one process ships to: the main one and up to seven (endpoint, key) pairs from
/// `DD_ADDITIONAL_ENDPOINTS`.
pub const MAX_DESTINATIONS: usize = 8;

/// How many trailing characters of a key name its destination (as the Datadog Agent shows a key).
pub const KEY_SUFFIX_CHARS: usize = 5;

/// What names the key of a destination whose key is only known once a secret is read
/// (`DD_API_KEY_SECRET_ARN`).
pub const SECRET_KEY_NAME: &str = "secret";

/// A destination's place in the process's list; [`DestinationId::MAIN`] is the main endpoint. Small
/// and `Copy`: every payload carries one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationId(u8);

impl DestinationId {
    /// The main endpoint (`DD_SITE` / `DD_DD_URL` with `DD_API_KEY`).
    pub const MAIN: Self = Self(0);

    /// The destination at `index`, if it is below [`MAX_DESTINATIONS`].
    pub const fn new(index: usize) -> Option<Self> {
        if index < MAX_DESTINATIONS {
            Some(Self(index as u8))
        } else {
            None
        }
    }

    /// Its index (below [`MAX_DESTINATIONS`]).
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// True for the main endpoint.
    pub const fn is_main(self) -> bool {
        self.0 == 0
    }
}

/// An intake endpoint with one API key, named without the key (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    id: DestinationId,
    endpoint: String,
    key_name: String,
}

impl Destination {
    /// Destination `id`: `endpoint` (an intake base URL, a trailing `/` is removed) with the key `key`;
    /// `None` as the key names a key read from a secret ([`SECRET_KEY_NAME`]).
    pub fn new(id: DestinationId, endpoint: &str, key: Option<&str>) -> Self {
        Self {
            id,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            key_name: key.map_or_else(|| SECRET_KEY_NAME.to_owned(), key_suffix),
        }
    }

    /// Its place in the process's list.
    pub fn id(&self) -> DestinationId {
        self.id
    }

    /// The intake base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The last characters of its key, or [`SECRET_KEY_NAME`].
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The stable name, `<endpoint>#<key name>`: what fallback records carry and replay matches.
    pub fn name(&self) -> String {
        format!("{}#{}", self.endpoint, self.key_name)
    }

    /// True when `name` (from [`Destination::name`], e.g. in a fallback record) names this destination.
    pub fn is_named(&self, name: &str) -> bool {
        name.split_once('#')
            .is_some_and(|(e, k)| e.trim_end_matches('/') == self.endpoint && k == self.key_name)
    }

    /// The name reduced to `[A-Za-z0-9._-]`, for a file or directory name (on-disk storage keyed by
    /// destination): `https://api.datadoghq.com#f00d5` is `api.datadoghq.com-f00d5`; a port or path
    /// becomes `_`, and `http://` is kept apart from `https://` (`http_` in front).
    pub fn slug(&self) -> String {
        let (plain, rest) = match self.endpoint.strip_prefix("https://") {
            Some(rest) => (false, rest),
            None => (
                true,
                self.endpoint
                    .strip_prefix("http://")
                    .unwrap_or(&self.endpoint),
            ),
        };
        let mut out = String::with_capacity(rest.len() + self.key_name.len() + 6);
        if plain {
            out.push_str("http_");
        }
        for c in rest
            .chars()
            .chain(std::iter::once('-'))
            .chain(self.key_name.chars())
        {
            out.push(if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            });
        }
        out
    }
}

/// The last [`KEY_SUFFIX_CHARS`] characters of `key` (all of a shorter key).
fn key_suffix(key: &str) -> String {
    let key = key.trim();
    let n = key.chars().count();
    key.chars()
        .skip(n.saturating_sub(KEY_SUFFIX_CHARS))
        .collect()
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("id", &self.id.0)
            .field("name", &self.name())
            .finish()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.endpoint, self.key_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_named_by_its_endpoint_and_the_end_of_its_key_never_the_key() {
        let d = Destination::new(
            DestinationId::MAIN,
            "https://api.datadoghq.com/",
            Some("0123456789abcdef0123456789af00d5"),
        );
        assert_eq!(d.name(), "https://api.datadoghq.com#f00d5");
        assert_eq!(d.to_string(), d.name());
        assert!(!format!("{d:?}").contains("0123456789"));
        assert!(d.is_named("https://api.datadoghq.com#f00d5"));
        assert!(d.is_named("https://api.datadoghq.com/#f00d5"));
        assert!(!d.is_named("https://api.datadoghq.eu#f00d5"));
        assert!(!d.is_named("https://api.datadoghq.com#f00d6"));
        assert!(!d.is_named("https://api.datadoghq.com"));
        assert_eq!(d.key_name(), "f00d5");
        assert_eq!(d.endpoint(), "https://api.datadoghq.com");
    }

    #[test]
    fn a_short_key_is_named_whole_and_a_secret_as_secret() {
        let id = DestinationId::new(3).unwrap();
        assert_eq!(
            Destination::new(id, "https://x", Some("abc")).name(),
            "https://x#abc"
        );
        let s = Destination::new(DestinationId::MAIN, "https://x", None);
        assert_eq!(s.key_name(), SECRET_KEY_NAME);
        assert_eq!(s.id(), DestinationId::MAIN);
    }

    #[test]
    fn ids_are_bounded_and_the_first_is_main() {
        assert!(DestinationId::MAIN.is_main());
        assert_eq!(DestinationId::default(), DestinationId::MAIN);
        assert_eq!(DestinationId::new(7).map(DestinationId::index), Some(7));
        assert!(!DestinationId::new(1).unwrap().is_main());
        assert_eq!(DestinationId::new(MAX_DESTINATIONS), None);
    }

    #[test]
    fn the_slug_is_a_safe_file_name_that_keeps_destinations_apart() {
        let id = DestinationId::MAIN;
        let a = Destination::new(id, "https://api.datadoghq.com", Some("kkkkkf00d5"));
        assert_eq!(a.slug(), "api.datadoghq.com-f00d5");
        let b = Destination::new(id, "http://127.0.0.1:8080/", Some("k/../x"));
        assert_eq!(b.slug(), "http_127.0.0.1_8080-_.._x");
        let c = Destination::new(id, "https://127.0.0.1:8080", Some("k/../x"));
        assert_ne!(b.slug(), c.slug());
        for s in [a.slug(), b.slug(), c.slug()] {
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            );
            assert!(!s.contains('/'));
        }
    }
}
