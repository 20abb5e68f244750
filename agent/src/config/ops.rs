//! Operational settings: logging, the flush period, shutdown, the status endpoint, self-telemetry.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

use super::ConfigError;
use super::key::Reader;
use super::keys as k;

/// Operational settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsConfig {
    /// Most verbose level logged (`DD_LOG_LEVEL`, `info`).
    pub log_level: LevelFilter,
    /// Time between periodic flushes of closed buckets in the sidecar (`OFFPATH_FLUSH_INTERVAL`,
    /// 15 s). The Lambda extension flushes around invocations instead (`DD_SERVERLESS_FLUSH_STRATEGY`).
    pub flush_interval: Duration,
    /// Deadline for drain and delivery on SIGTERM (`OFFPATH_SHUTDOWN_TIMEOUT`, 10 s).
    pub shutdown_timeout: Duration,
    /// `/health` and `/status` address (`OFFPATH_STATUS_ADDR`, `127.0.0.1:8126`; empty disables).
    pub status_addr: Option<SocketAddr>,
    /// True when `OFFPATH_STATUS_ADDR` was set (not the default): a taken address is then a start-up
    /// error rather than a warning.
    pub status_addr_set: bool,
    /// Ship offpath's own counters as `offpath.*` metrics (`OFFPATH_SELF_TELEMETRY`: true in the
    /// sidecar, false in Lambda).
    pub self_telemetry: bool,
    /// Page out what only start-up touched, once after the first flush (`OFFPATH_RELEASE_STARTUP_PAGES`:
    /// true in the sidecar, false in Lambda).
    pub release_startup_pages: bool,
}

impl OpsConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            log_level: r.value(&k::LOG_LEVEL)?,
            flush_interval: r.value(&k::FLUSH_INTERVAL)?,
            shutdown_timeout: r.value(&k::SHUTDOWN_TIMEOUT)?,
            status_addr: r.value(&k::STATUS_ADDR)?,
            status_addr_set: r.raw(&k::STATUS_ADDR.key).is_some(),
            self_telemetry: r.value(&k::SELF_TELEMETRY)?,
            release_startup_pages: r.value(&k::RELEASE_STARTUP_PAGES)?,
        })
    }

    /// Warnings about this configuration, for the log at start and for `offpath check`: a status
    /// endpoint reachable from other hosts.
    pub fn warnings(&self) -> Vec<String> {
        match self.status_addr {
            Some(addr) if !addr.ip().is_loopback() => vec![format!(
                "the status endpoint listens on {addr} (OFFPATH_STATUS_ADDR), not on loopback: other \
                 hosts can read /status; bind it to 127.0.0.1 unless they must"
            )],
            _ => Vec::new(),
        }
    }
}
