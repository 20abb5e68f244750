//! `offpath health`: ask a running offpath for `GET /health` on its status address, for container
//! health checks (the image has no curl).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use offpath::config::{Config, LoadError};
use offpath::errors::Chain;

use super::args::HealthArgs;

/// Most bytes of an answer read: `/health` is a few hundred, `/status/contexts?top=1000` (`offpath
/// stats`) 1,000 names of a few hundred bytes at most.
const READ_MAX: usize = 1 << 20;

/// With `--wait`, the pause between two attempts.
const WAIT_RETRY: Duration = Duration::from_millis(100);

/// Why `offpath health` reports the agent unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The status endpoint is disabled in the configuration.
    #[error("the status endpoint is disabled (OFFPATH_STATUS_ADDR is empty); pass --addr")]
    Disabled,
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// No connection or no answer.
    #[error("no answer from http://{addr}{path}")]
    Request {
        /// The status address.
        addr: SocketAddr,
        /// The path asked for.
        path: &'static str,
        /// The connection or HTTP error.
        source: reqwest::Error,
    },
    /// No answer in time.
    #[error("no answer from http://{addr}{path} within {timeout:?}")]
    Timeout {
        /// The status address.
        addr: SocketAddr,
        /// The path asked for.
        path: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The endpoint answered something other than 200.
    #[error("unhealthy: {status_line} {body}")]
    Unhealthy {
        /// The HTTP status line.
        status_line: String,
        /// The body (the reason).
        body: String,
    },
}

/// `offpath health`: query `/health`, print one line, return the exit code (0 healthy, 1 not). The line
/// names the instance that answered (pid, version, listeners, from its `/status`): with two offpaths on
/// one machine, it shows which one holds the status address.
pub async fn health_command(args: &HealthArgs) -> i32 {
    let addr = match health_addr(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("offpath health: {}", Chain(&e));
            return 1;
        }
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let until = args
        .wait
        .map(|w| tokio::time::Instant::now() + Duration::from_secs(w));
    let mut result = probe_health(addr, timeout).await;
    // --wait: ask again until healthy (a starting offpath answers once its listeners are up).
    while let (Err(_), Some(until)) = (&result, until) {
        if tokio::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(WAIT_RETRY).await;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        result = probe_health(addr, timeout.min(left).max(WAIT_RETRY)).await;
    }
    let who = match &result {
        Ok(_) | Err(ProbeError::Unhealthy { .. }) => {
            match get(addr, "/status", "", timeout).await {
                Ok((reqwest::StatusCode::OK, body)) => instance(&body),
                _ => None,
            }
        }
        Err(_) => None,
    };
    let who = who.map_or_else(String::new, |w| format!(" [{w}]"));
    match result {
        Ok(body) => {
            println!("healthy: {body}{who}");
            0
        }
        Err(e) => {
            eprintln!("offpath health: {}{who}", Chain(&e));
            1
        }
    }
}

/// Which offpath a `/status` document comes from: `pid 4242, offpath 0.1.0, listeners udp
/// 127.0.0.1:8125`; `None` when the document is not offpath's.
pub fn instance(status: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    let version = v.get("version")?.as_str()?;
    let pid = v
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"));
    // One entry per socket: the UDP receive threads' sockets (`udp 127.0.0.1:8125 #0`, `#1`, …) share
    // one address, shown once.
    let mut listeners: Vec<&str> = Vec::new();
    let names = v
        .get("listeners")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("name").and_then(serde_json::Value::as_str));
    for name in names {
        let name = match name.rsplit_once(" #") {
            Some((addr, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => addr,
            _ => name,
        };
        if !listeners.contains(&name) {
            listeners.push(name);
        }
    }
    let listeners = if listeners.is_empty() {
        "none".to_owned()
    } else {
        listeners.join(", ")
    };
    Some(format!("{pid}, offpath {version}, listeners {listeners}"))
}

/// The address `offpath health` queries: `--addr`, else the configured status address; an
/// unspecified IP (`0.0.0.0`) is queried on loopback.
///
/// # Errors
/// [`ProbeError::Config`] when the configuration does not load, [`ProbeError::Disabled`] when the
/// endpoint is disabled.
pub fn health_addr(args: &HealthArgs) -> Result<SocketAddr, ProbeError> {
    let mut addr = match args.addr {
        Some(a) => a,
        None => {
            let config = match args.config.as_deref() {
                Some(p) => Config::from_file_and_env(p)?.0,
                None => Config::from_env().map_err(|error| LoadError::Invalid {
                    error,
                    origin: "in the environment".to_owned(),
                })?,
            };
            config.ops.status_addr.ok_or(ProbeError::Disabled)?
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET /health` with the HTTP client offpath links anyway (no proxy, no TLS: the status endpoint is
/// local). Returns the body on 200.
///
/// # Errors
/// [`ProbeError`] when there is no answer in time or the status is not 200.
pub async fn probe_health(addr: SocketAddr, timeout: Duration) -> Result<String, ProbeError> {
    get_ok(addr, "/health", "", timeout).await
}

/// [`get`], and its body when the status is 200.
///
/// # Errors
/// [`ProbeError`] when there is no answer in time or the status is not 200.
pub(super) async fn get_ok(
    addr: SocketAddr,
    path: &'static str,
    query: &str,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let (status, body) = get(addr, path, query, timeout).await?;
    if status == reqwest::StatusCode::OK {
        Ok(body)
    } else {
        Err(ProbeError::Unhealthy {
            status_line: format!("HTTP {status}"),
            body,
        })
    }
}

/// `GET path` (with `query`, `""` or `?…`) on the status endpoint: the status and the body (trimmed).
pub(super) async fn get(
    addr: SocketAddr,
    path: &'static str,
    query: &str,
    timeout: Duration,
) -> Result<(reqwest::StatusCode, String), ProbeError> {
    let request = |source| ProbeError::Request { addr, path, source };
    let exchange = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(request)?;
        let resp = client
            .get(format!("http://{addr}{path}{query}"))
            .send()
            .await
            .map_err(request)?;
        let status = resp.status();
        let body = offpath::http::read_body(resp, READ_MAX)
            .await
            .map_err(request)?;
        Ok::<_, ProbeError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr,
            path,
            timeout,
        })??;
    Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_server::fake_server;

    #[tokio::test]
    async fn the_health_probe_reads_the_status_and_body() {
        let ok = fake_server(|p, _, _| match p {
            "/health" => (200, "ok".into()),
            _ => (404, String::new()),
        })
        .await;
        assert_eq!(
            probe_health(ok, Duration::from_secs(5)).await.unwrap(),
            "ok"
        );
        let bad = fake_server(|_, _, _| (503, "listeners down".into())).await;
        let e = probe_health(bad, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        assert!(e.to_string().contains("listeners down"), "{e}");
    }

    #[tokio::test]
    async fn the_health_probe_fails_when_nothing_listens() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let e = probe_health(addr, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Request { .. }), "{e}");
    }

    #[test]
    fn the_instance_is_named_from_its_status() {
        let status = r#"{"version":"0.1.0","pid":4242,"uptime_seconds":3,
            "listeners":[{"name":"udp 127.0.0.1:8125 #0"},{"name":"udp 127.0.0.1:8125 #1"},
            {"name":"unixgram /run/offpath/dsd.socket"}]}"#;
        assert_eq!(
            instance(status).unwrap(),
            "pid 4242, offpath 0.1.0, listeners udp 127.0.0.1:8125, unixgram /run/offpath/dsd.socket"
        );
        assert_eq!(
            instance(r#"{"version":"0.0.9","listeners":[]}"#).unwrap(),
            "pid unknown, offpath 0.0.9, listeners none"
        );
        assert_eq!(instance("ok"), None);
        assert_eq!(instance(r#"{"status":"up"}"#), None);
    }

    #[test]
    fn health_queries_loopback_when_the_status_address_is_unspecified() {
        let args = HealthArgs {
            addr: Some("0.0.0.0:8126".parse().unwrap()),
            ..HealthArgs::default()
        };
        assert_eq!(
            health_addr(&args).unwrap(),
            "127.0.0.1:8126".parse().unwrap()
        );
    }
}
