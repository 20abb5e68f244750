//! Dual shipping: `DD_ADDITIONAL_ENDPOINTS` / `additional_endpoints`, merged with the main endpoint as
//! the Datadog Agent merges them.
//!
//! The value maps intake URLs to lists of API keys: JSON in the environment
//! (`{"https://app.datadoghq.eu": ["<key>"]}`), a YAML mapping in the file (or the same JSON as a
//! string). The merge follows the Agent's: the main endpoint (`DD_DD_URL`, else `https://api.<site>`)
//! starts with its key; an additional endpoint with the same URL adds its keys to it (the Agent's main
//! URL for a site, `https://app.<site>`, counts as the same); keys are trimmed, duplicates and empty
//! ones removed, and an endpoint left without a key is dropped. Every (endpoint, key) pair is then one
//! destination (`forward::Destination`); the endpoint's retry queue budget is shared by its keys.

use std::collections::BTreeMap;

use super::ConfigError;
use crate::auth::ApiKey;
use crate::forward::{Destination, DestinationId, MAX_DESTINATIONS};

/// The environment name of the key, for errors.
const KEY: &str = "DD_ADDITIONAL_ENDPOINTS";

/// What the key accepts (its parser's error text).
pub(super) const EXPECTED: &str = "a map of intake URL to a list of API keys: JSON such as \
    {\"https://app.datadoghq.eu\": [\"<api key>\"]} (a YAML mapping in the config file); each URL \
    http:// or https:// with a host and no path, each key a string";

/// `DD_ADDITIONAL_ENDPOINTS` as configured: intake URL → API keys, in URL order. `Debug` shows the URLs
/// and the number of keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdditionalEndpoints(pub Vec<(String, Vec<ApiKey>)>);

impl std::fmt::Debug for AdditionalEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(url, keys)| (url, keys.len())))
            .finish()
    }
}

/// Where one destination's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointKey {
    /// The main key: `DD_API_KEY`, or the secret of `DD_API_KEY_SECRET_ARN`.
    Main,
    /// A key from `DD_ADDITIONAL_ENDPOINTS`.
    Additional(ApiKey),
}

/// One intake endpoint after the merge, with its keys (never empty); the main endpoint is the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The intake base URL, without a trailing `/`.
    pub url: String,
    /// One destination per key, in order.
    pub keys: Vec<EndpointKey>,
}

/// Parse the value of `DD_ADDITIONAL_ENDPOINTS` (JSON; the YAML reader hands a mapping over as JSON).
/// A key may be given as a string of keys separated by spaces, as the Agent reads a string where it
/// expects a list.
pub(super) fn parse(v: &str) -> Result<AdditionalEndpoints, &'static str> {
    if v.trim().is_empty() {
        return Ok(AdditionalEndpoints::default());
    }
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(v).map_err(|_| EXPECTED)?;
    let mut out = Vec::with_capacity(map.len());
    for (url, keys) in map {
        let url = super::forward::intake_url(url.trim()).map_err(|_| EXPECTED)?;
        if has_path(&url) {
            return Err(EXPECTED);
        }
        let keys: Vec<ApiKey> = match keys {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|k| match k {
                    serde_json::Value::String(s) => Ok(ApiKey::new(s)),
                    _ => Err(EXPECTED),
                })
                .collect::<Result<_, _>>()?,
            serde_json::Value::String(s) => s.split_whitespace().map(ApiKey::new).collect(),
            serde_json::Value::Null => Vec::new(),
            _ => return Err(EXPECTED),
        };
        out.push((url, keys));
    }
    Ok(AdditionalEndpoints(out))
}

/// True when `url` (`scheme://host[:port]...`) has a path after its authority.
fn has_path(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.contains(['/', '?', '#'])
}

/// Merge the main endpoint and the additional ones as the Agent does (see the module documentation).
///
/// `main_url` is the intake of `DD_DD_URL` / `DD_SITE`, `site` is `DD_SITE`, `main_key` the value of
/// `DD_API_KEY` when it is known (a key read from a secret is only known later, and is never merged
/// away). Returns the endpoints (main first) and notes to log (endpoints dropped for want of a key).
///
/// # Errors
/// More destinations than [`MAX_DESTINATIONS`], naming `DD_ADDITIONAL_ENDPOINTS`.
pub(super) fn merge(
    main_url: &str,
    site: &str,
    main_key: Option<&ApiKey>,
    additional: &AdditionalEndpoints,
) -> Result<(Vec<Endpoint>, Vec<String>), ConfigError> {
    let main_url = main_url.trim_end_matches('/');
    let agent_main = format!("https://app.{site}");
    let same_as_main = |url: &str| {
        url == main_url || (main_url == format!("https://api.{site}") && url == agent_main)
    };

    let mut endpoints = vec![Endpoint {
        url: main_url.to_owned(),
        keys: vec![EndpointKey::Main],
    }];
    let mut seen: Vec<Vec<String>> = vec![
        main_key
            .map(|k| k.expose().trim().to_owned())
            .into_iter()
            .collect(),
    ];
    let mut notes = Vec::new();
    for (url, keys) in &additional.0 {
        let url = url.trim_end_matches('/');
        let i = if same_as_main(url) {
            0
        } else if let Some(i) = endpoints.iter().position(|e| e.url == url) {
            i
        } else {
            endpoints.push(Endpoint {
                url: url.to_owned(),
                keys: Vec::new(),
            });
            seen.push(Vec::new());
            endpoints.len() - 1
        };
        for key in keys {
            let trimmed = key.expose().trim();
            if trimmed.is_empty() || seen[i].iter().any(|k| k == trimmed) {
                continue;
            }
            seen[i].push(trimmed.to_owned());
            endpoints[i]
                .keys
                .push(EndpointKey::Additional(ApiKey::new(trimmed)));
        }
    }
    endpoints.retain(|e| {
        let keep = !e.keys.is_empty();
        if !keep {
            notes.push(format!(
                "{KEY}: no API key for {}; that endpoint is not used (as in the Datadog Agent)",
                e.url
            ));
        }
        keep
    });
    // A destination is named by its endpoint and the end of its key (fallback records, replay,
    // `/status`, its storage directory): two keys of one endpoint must end differently.
    for e in &endpoints {
        let mut names: Vec<String> = Vec::with_capacity(e.keys.len());
        for k in &e.keys {
            let key = match k {
                EndpointKey::Main => main_key.map(ApiKey::expose),
                EndpointKey::Additional(k) => Some(k.expose()),
            };
            let name = Destination::new(DestinationId::MAIN, &e.url, key).name();
            if names.contains(&name) {
                return Err(ConfigError {
                    key: KEY,
                    value: format!("two API keys of {} end with the same characters", e.url),
                    expected: "API keys of one endpoint that differ in their last 5 characters \
                               (a destination is named by them)",
                });
            }
            names.push(name);
        }
    }
    let n: usize = endpoints.iter().map(|e| e.keys.len()).sum();
    if n > MAX_DESTINATIONS {
        return Err(ConfigError {
            key: KEY,
            value: format!("{n} destinations (not shown: the value holds API keys)"),
            expected: "at most 8 (endpoint, API key) pairs, the main endpoint's key included",
        });
    }
    Ok((endpoints, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(e: &Endpoint) -> Vec<String> {
        e.keys
            .iter()
            .map(|k| match k {
                EndpointKey::Main => "main".to_owned(),
                EndpointKey::Additional(k) => k.expose().to_owned(),
            })
            .collect()
    }

    fn merged(main_url: &str, main: &str, json: &str) -> Vec<(String, Vec<String>)> {
        let add = parse(json).unwrap();
        let (eps, _) = merge(main_url, "datadoghq.com", Some(&ApiKey::new(main)), &add).unwrap();
        eps.iter().map(|e| (e.url.clone(), keys(e))).collect()
    }

    #[test]
    fn two_keys_of_one_endpoint_ending_alike_are_refused_without_showing_them() {
        let add = parse(r#"{"https://b.example": ["secret1aaaaa", "secret2aaaaa"]}"#).unwrap();
        let err = merge(
            "https://api.datadoghq.com",
            "datadoghq.com",
            Some(&ApiKey::new("k0")),
            &add,
        )
        .unwrap_err();
        assert_eq!(err.key, KEY);
        assert!(!err.to_string().contains("secret"), "{err}");
        // Different endpoints may hold keys that end alike.
        let add = parse(r#"{"https://b.example": ["x1aaaaa"], "https://c.example": ["x2aaaaa"]}"#)
            .unwrap();
        assert!(merge("https://a.example", "datadoghq.com", None, &add).is_ok());
    }

    #[test]
    fn the_same_domain_shares_the_main_endpoint_and_duplicate_keys_go() {
        let m = merged(
            "https://api.datadoghq.com",
            "k0",
            r#"{"https://api.datadoghq.com/": ["k1", " k0 ", "k1", ""],
                "https://app.datadoghq.eu": ["k2", "k2", "k3"]}"#,
        );
        assert_eq!(
            m,
            vec![
                (
                    "https://api.datadoghq.com".into(),
                    vec!["main".into(), "k1".into()]
                ),
                (
                    "https://app.datadoghq.eu".into(),
                    vec!["k2".into(), "k3".into()]
                ),
            ]
        );
    }

    #[test]
    fn the_agents_main_url_for_the_site_is_the_main_endpoint() {
        // The Agent's main endpoint for DD_SITE is https://app.<site>; offpath's is https://api.<site>.
        let m = merged(
            "https://api.datadoghq.com",
            "k0",
            r#"{"https://app.datadoghq.com": ["k1"]}"#,
        );
        assert_eq!(
            m,
            vec![(
                "https://api.datadoghq.com".into(),
                vec!["main".into(), "k1".into()]
            )]
        );
        // With DD_DD_URL set, only that URL is the main endpoint.
        let m = merged(
            "https://intake.example",
            "k0",
            r#"{"https://app.datadoghq.com": ["k1"]}"#,
        );
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn an_endpoint_without_keys_is_dropped_with_a_note() {
        let add = parse(r#"{"https://a.example": [" ", ""], "https://b.example": null}"#).unwrap();
        let (eps, notes) = merge("https://api.datadoghq.com", "datadoghq.com", None, &add).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].contains("DD_ADDITIONAL_ENDPOINTS") && notes[0].contains("https://a.example")
        );
    }

    #[test]
    fn a_key_string_is_split_on_spaces_and_empty_means_none() {
        let add = parse(r#"{"https://a.example": "k1 k2"}"#).unwrap();
        assert_eq!(add.0[0].1, vec![ApiKey::new("k1"), ApiKey::new("k2")]);
        assert_eq!(parse("").unwrap(), AdditionalEndpoints::default());
        assert_eq!(parse("{}").unwrap(), AdditionalEndpoints::default());
    }

    #[test]
    fn malformed_maps_are_refused() {
        for bad in [
            "[]",
            "not json",
            r#"{"https://a.example": [1]}"#,
            r#"{"https://a.example": {"k": "v"}}"#,
            r#"{"ftp://a.example": ["k"]}"#,
            r#"{"https://": ["k"]}"#,
            r#"{"https://a.example/api/v2/series": ["k"]}"#,
            r#"{"https://a.example": 5}"#,
        ] {
            assert_eq!(parse(bad), Err(EXPECTED), "{bad}");
        }
    }

    #[test]
    fn too_many_destinations_are_refused_naming_the_key_without_the_keys() {
        let add =
            parse(r#"{"https://a.example": ["k1","k2","k3","k4","k5","k6","k7","k8"]}"#).unwrap();
        let err = merge("https://api.datadoghq.com", "datadoghq.com", None, &add).unwrap_err();
        assert_eq!(err.key, "DD_ADDITIONAL_ENDPOINTS");
        assert!(!err.to_string().contains("k8"));
    }

    #[test]
    fn debug_shows_no_key() {
        let add = parse(r#"{"https://a.example": ["secretkey1"]}"#).unwrap();
        let d = format!("{add:?}");
        assert!(d.contains("https://a.example") && !d.contains("secretkey1"));
    }
}
