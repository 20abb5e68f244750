//! The intake checks of `offpath check`: the intake host resolves and accepts a TCP connection, and the
//! API key is valid (`GET /api/v1/validate`).

use std::net::SocketAddr;
use std::time::Duration;

use offpath::config::Config;
use offpath::errors::Chain;

use super::{Outcome, Report};

/// How long DNS resolution and the TCP connection to the intake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolve the intake host and open a TCP connection. Returns false when either fails.
pub(super) async fn check_reachable(report: &mut Report, url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let fix = "check DD_SITE (site) / DD_DD_URL (dd_url), DNS and the firewall";
    let lookup = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            report.push(
                "intake dns",
                Outcome::Fail,
                format!("cannot resolve {host}: {e}; {fix}"),
            );
            return false;
        }
        Err(_) => {
            report.push(
                "intake dns",
                Outcome::Fail,
                format!("resolving {host} timed out; {fix}"),
            );
            return false;
        }
    };
    let Some(first) = addrs.first().copied() else {
        report.push(
            "intake dns",
            Outcome::Fail,
            format!("{host} has no address; {fix}"),
        );
        return false;
    };
    report.push(
        "intake dns",
        Outcome::Ok,
        format!("{host} resolves to {}", first.ip()),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => {
            report.push("intake tcp", Outcome::Ok, format!("connected to {first}"));
            true
        }
        Ok(Err(e)) => {
            report.push(
                "intake tcp",
                Outcome::Fail,
                format!("cannot connect to {first}: {e}; {fix}"),
            );
            false
        }
        Err(_) => {
            report.push(
                "intake tcp",
                Outcome::Fail,
                format!("connecting to {first} timed out; {fix}"),
            );
            false
        }
    }
}

/// Validate `key` against the intake; `fix` says what to change when the intake refuses it.
pub(super) async fn check_api_key(
    report: &mut Report,
    config: &Config,
    url: &reqwest::Url,
    key: &str,
    fix: &str,
) {
    let fwd = &config.forward;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(fwd.timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .danger_accept_invalid_certs(fwd.skip_tls_verify)
        .user_agent(concat!("offpath/", env!("CARGO_PKG_VERSION")));
    if let Some(proxy) = fwd.proxy.as_deref() {
        match reqwest::Proxy::https(proxy) {
            Ok(p) => builder = builder.proxy(p),
            Err(e) => {
                report.push(
                    "api key",
                    Outcome::Fail,
                    format!("invalid proxy URL: {e}; fix DD_PROXY_HTTPS (proxy.https)"),
                );
                return;
            }
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            report.push(
                "api key",
                Outcome::Fail,
                format!("cannot build the HTTP client: {}", Chain(&e)),
            );
            return;
        }
    };
    let mut validate = url.clone();
    validate.set_path("/api/v1/validate");
    let response = client
        .get(validate.clone())
        .header("DD-API-KEY", key)
        .send()
        .await;
    let intake = url.as_str().trim_end_matches('/');
    // DD_DD_URL wins over DD_SITE: name the site only when the intake is the site's.
    let by_url = fwd.intake_url.trim_end_matches('/') != format!("https://api.{}", fwd.site);
    match response {
        Ok(r) if r.status().is_success() => {
            let detail = if by_url {
                format!("valid at {intake} (DD_DD_URL / dd_url)")
            } else {
                format!("valid for {} ({intake})", fwd.site)
            };
            report.push("api key", Outcome::Ok, detail);
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => report.push(
            "api key",
            Outcome::Fail,
            if by_url {
                format!(
                    "the intake at {intake} rejected the API key (HTTP {}): {fix} of the \
                     organisation behind that intake (DD_DD_URL / dd_url)",
                    r.status().as_u16()
                )
            } else {
                format!(
                    "the intake rejected the API key (HTTP {}): {fix} of the organisation on site \
                     {} (DD_SITE / site)",
                    r.status().as_u16(),
                    fwd.site
                )
            },
        ),
        Ok(r) => report.push(
            "api key",
            Outcome::Fail,
            format!(
                "unexpected HTTP {} from {validate}; check DD_DD_URL (dd_url) / DD_SITE (site)",
                r.status().as_u16()
            ),
        ),
        Err(e) => report.push(
            "api key",
            Outcome::Fail,
            format!(
                "request to {validate} failed: {}; check DD_DD_URL (dd_url), DD_PROXY_HTTPS \
                 (proxy.https) and TLS",
                Chain(&e)
            ),
        ),
    }
}
