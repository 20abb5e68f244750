//! `Config::load` over arbitrary maps of known keys to arbitrary values: it never panics, every
//! error names a real key, and every accepted configuration holds the invariants the stages rely on.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use offpath::config::{Config, KEYS};

#[derive(Debug, Arbitrary)]
struct Input {
    /// (key selector, value): the selector picks a key of `KEYS` and one of its environment names.
    pairs: Vec<(u8, String)>,
}

fuzz_target!(|input: Input| {
    let mut map = HashMap::new();
    for (k, v) in input.pairs {
        let key = KEYS[usize::from(k) % KEYS.len()].key();
        let env = key.envs[(usize::from(k) / KEYS.len()) % key.envs.len()];
        map.insert(env.to_owned(), v);
    }
    match Config::load(&|k: &str| map.get(k).cloned()) {
        Err(e) => {
            assert!(KEYS.iter().any(|k| k.key().envs.contains(&e.key)), "unknown key {}", e.key);
            assert!(e.to_string().contains(e.key));
        }
        Ok(c) => {
            let a = &c.aggregate;
            assert!(a.namespace.is_empty() || a.namespace.ends_with('.'));
            assert!(a.histogram_percentiles.iter().all(|p| *p > 0.0 && *p < 1.0));
            assert!(!c.ops.flush_interval.is_zero());
            assert!(!c.ops.shutdown_timeout.is_zero());
            let url = &c.forward.intake_url;
            assert!(
                url.starts_with("https://") || url.starts_with("http://"),
                "intake url {url:?}"
            );
            if let Some(key) = &c.forward.api_key {
                assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
            }
        }
    }
});
