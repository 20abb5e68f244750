//! Listener settings: where DogStatsD is received and how much is queued.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::key::Reader;
use super::keys as k;

/// Most packets queued over all aggregate workers, `DD_DOGSTATSD_QUEUE_SIZE` × `OFFPATH_AGGREGATE_WORKERS`
/// (each worker's queue slots are allocated at start): the largest queue with the sidecar's default
/// workers (at most 4).
pub const MAX_QUEUED_PACKETS: usize = 1 << 20;

/// Listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// UDP address; `None` when `DD_DOGSTATSD_PORT=0`. Default `127.0.0.1:8125`.
    pub udp: Option<SocketAddr>,
    /// Unix datagram socket path (`DD_DOGSTATSD_SOCKET`).
    pub socket: Option<PathBuf>,
    /// Unix stream socket path (`DD_DOGSTATSD_STREAM_SOCKET`).
    pub stream_socket: Option<PathBuf>,
    /// Largest datagram or stream frame accepted (`DD_DOGSTATSD_BUFFER_SIZE`, 8192).
    pub buffer_size: NonZeroUsize,
    /// Requested `SO_RCVBUF` (`DD_DOGSTATSD_SO_RCVBUF`); `None` = offpath's default (8 MiB asked).
    pub so_rcvbuf: Option<usize>,
    /// Packets queued between listeners and each aggregate worker (`DD_DOGSTATSD_QUEUE_SIZE`, 1024).
    pub queue_size: NonZeroUsize,
    /// Receive threads for UDP (`SO_REUSEPORT` sockets) (`OFFPATH_RECEIVE_THREADS`, 0 = one per core up to 4).
    pub receive_threads: usize,
    /// Sleep between drains of a datagram socket while traffic is light (`OFFPATH_RECEIVE_PACE`; `None`:
    /// block for every datagram).
    pub pace: Option<Duration>,
}

impl IngestConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let port = r.value(&k::DOGSTATSD_PORT)?;
        let ip = if r.value(&k::DOGSTATSD_NON_LOCAL_TRAFFIC)? {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            r.value(&k::BIND_HOST)?
        };
        Ok(Self {
            udp: port.map(|p| SocketAddr::new(ip, p)),
            socket: r.get(&k::DOGSTATSD_SOCKET)?,
            stream_socket: r.get(&k::DOGSTATSD_STREAM_SOCKET)?,
            buffer_size: r.value(&k::DOGSTATSD_BUFFER_SIZE)?,
            so_rcvbuf: r.get(&k::DOGSTATSD_SO_RCVBUF)?.filter(|n| *n > 0),
            queue_size: r.value(&k::DOGSTATSD_QUEUE_SIZE)?,
            receive_threads: r.value(&k::RECEIVE_THREADS)?,
            pace: r.value(&k::RECEIVE_PACE)?,
        })
    }
}

/// `DD_DOGSTATSD_QUEUE_SIZE` × `workers` must stay within [`MAX_QUEUED_PACKETS`]: the error names
/// `DD_DOGSTATSD_QUEUE_SIZE` and the workers it was multiplied by.
pub(super) fn check_queued_packets(
    queue_size: NonZeroUsize,
    workers: NonZeroUsize,
) -> Result<(), ConfigError> {
    if queue_size.get().saturating_mul(workers.get()) <= MAX_QUEUED_PACKETS {
        return Ok(());
    }
    Err(ConfigError {
        key: k::DOGSTATSD_QUEUE_SIZE.key.envs[0],
        value: format!("{queue_size} (with {workers} OFFPATH_AGGREGATE_WORKERS)"),
        expected: "at most 1048576 packets queued over all aggregate workers \
                   (DD_DOGSTATSD_QUEUE_SIZE x OFFPATH_AGGREGATE_WORKERS): lower either",
    })
}
