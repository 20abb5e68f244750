//! `offpath health`: ask a running offpath for `GET /health` on its status address, for container
//! health checks (the image has no curl).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use offpath::config::{Config, LoadError};
use offpath::errors::Chain;

use super::args::HealthArgs;

/// Most bytes of the answer read (it is a few hundred).
const READ_MAX: usize = 64 * 1024;

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
    #[error("no answer from http://{addr}/health")]
    Request {
        /// The status address.
        addr: SocketAddr,
        /// The connection or HTTP error.
        source: reqwest::Error,
    },
    /// No answer in time.
    #[error("no answer from http://{addr}/health within {timeout:?}")]
    Timeout {
        /// The status address.
        addr: SocketAddr,
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

/// `offpath health`: query `/health`, print one line, return the exit code (0 healthy, 1 not).
pub async fn health_command(args: &HealthArgs) -> i32 {
    let result = async {
        let addr = health_addr(args)?;
        probe_health(addr, Duration::from_secs(args.timeout.max(1))).await
    }
    .await;
    match result {
        Ok(body) => {
            println!("healthy: {body}");
            0
        }
        Err(e) => {
            eprintln!("offpath health: {}", Chain(&e));
            1
        }
    }
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
    let request = |source| ProbeError::Request { addr, source };
    let exchange = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(request)?;
        let resp = client
            .get(format!("http://{addr}/health"))
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
        .map_err(|_| ProbeError::Timeout { addr, timeout })??;
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if status == reqwest::StatusCode::OK {
        Ok(body)
    } else {
        Err(ProbeError::Unhealthy {
            status_line: format!("HTTP {status}"),
            body,
        })
    }
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
