//! The YAML config file loader over arbitrary text (after a line holding an API key): it never
//! panics, never puts the key in an error message or a `Debug` output, and whatever it accepts
//! either loads into a `Config` or fails with an error naming a real key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offpath::config::yaml::YamlFile;
use offpath::config::{Config, KEYS};

const SECRET: &str = "s3cr3t0api0key0value0never0printed";

fuzz_target!(|text: &str| {
    if text.contains(SECRET) {
        return; // the fuzzer may learn the secret from the comparisons below; only the file's own line counts
    }
    let text = format!("api_key: {SECRET}\n{text}");
    match YamlFile::parse(&text, "fuzz.yaml") {
        Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        Ok((file, warnings)) => {
            assert!(!format!("{file:?}").contains(SECRET));
            assert!(warnings.iter().all(|w| !w.contains(SECRET)));
            if let Err(e) = Config::load(&file) {
                assert!(KEYS.iter().any(|k| k.key().envs.contains(&e.key)), "unknown key {}", e.key);
                assert!(!e.to_string().contains(SECRET), "{e}");
            }
        }
    }
});
