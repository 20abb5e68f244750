//! Inputs the fuzz targets (`fuzz/`) found, replayed through the public API so they stay fixed.
//!
//! Each test names the target and what went wrong; the bytes are the minimised reproducer where the
//! input matters byte for byte.

use offpath::config::Config;

fn load(pairs: &[(&str, &str)]) -> Result<Config, offpath::config::ConfigError> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load(&move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

/// `config` target: `DD_DD_URL=https://` (any number of trailing `/`) passed the scheme check and
/// then lost its slashes, so the intake URL became `https:` and every request failed at run time.
#[test]
fn an_intake_url_without_a_host_is_rejected_naming_the_key() {
    for url in ["https://", "https:///", "http://", "http:////"] {
        for key in ["DD_DD_URL", "DD_URL"] {
            let e = load(&[(key, url)]).expect_err(url);
            assert_eq!(e.key, "DD_DD_URL", "{key}={url}");
        }
    }
}

/// Accepted intake URLs keep their scheme and host (the invariant the `config` target checks).
#[test]
fn an_accepted_intake_url_keeps_its_scheme_and_host() {
    for (url, want) in [
        ("https://api.datadoghq.eu/", "https://api.datadoghq.eu"),
        ("http://127.0.0.1:8080///", "http://127.0.0.1:8080"),
    ] {
        assert_eq!(
            load(&[("DD_DD_URL", url)]).unwrap().forward.intake_url,
            want
        );
    }
}
