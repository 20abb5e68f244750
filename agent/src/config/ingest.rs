//! Listener settings: where DogStatsD is received and how much is queued.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::ConfigError;
use super::key::Reader;
use super::keys as k;
use super::parse;

/// Largest `DD_DOGSTATSD_BUFFER_SIZE`: 1 MiB (a datagram is at most 64 KiB; a stream frame larger than
/// this is not DogStatsD).
pub const MAX_BUFFER_SIZE: usize = 1 << 20;
/// Largest `DD_DOGSTATSD_QUEUE_SIZE`: 256 Ki packets per aggregate worker (the queue's slots are
/// allocated at start).
pub const MAX_QUEUE_SIZE: usize = 1 << 18;
/// Most packets queued over all aggregate workers, `DD_DOGSTATSD_QUEUE_SIZE` × `OFFPATH_AGGREGATE_WORKERS`
/// (each worker's queue slots are allocated at start): the largest queue with the sidecar's default
/// workers (at most 4).
pub const MAX_QUEUED_PACKETS: usize = 1 << 20;
/// Largest `DD_DOGSTATSD_SO_RCVBUF`: 1 GiB (the kernel takes a C int, doubled).
pub const MAX_SO_RCVBUF: usize = 1 << 30;
/// Most `OFFPATH_RECEIVE_THREADS`.
pub const MAX_RECEIVE_THREADS: usize = 64;

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

/// `DD_DOGSTATSD_PORT`: a port, `0` to disable UDP (`None`), or `__random__` (as in the Agent) for an
/// ephemeral port (`Some(0)`; the bound address is logged).
pub(super) fn udp_port(v: &str) -> Result<Option<u16>, &'static str> {
    match v {
        "__random__" => Ok(Some(0)),
        _ => match v.parse::<u16>() {
            Ok(0) => Ok(None),
            Ok(p) => Ok(Some(p)),
            Err(_) => Err("a UDP port 0-65535 (0 disables UDP) or __random__"),
        },
    }
}

/// `DD_BIND_HOST`: an IP address; `localhost` is 127.0.0.1.
pub(super) fn bind_host(v: &str) -> Result<IpAddr, &'static str> {
    if v == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    v.parse().map_err(|_| "an IP address such as 127.0.0.1")
}

pub(super) fn buffer_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    parse::usize_in_range(v, 1, MAX_BUFFER_SIZE, "a size in bytes from 1 to 1048576")
        .and_then(|n| NonZeroUsize::new(n).ok_or("a positive size"))
}

pub(super) fn queue_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    parse::usize_in_range(v, 1, MAX_QUEUE_SIZE, "a number of packets from 1 to 262144")
        .and_then(|n| NonZeroUsize::new(n).ok_or("a positive number"))
}

/// `DD_DOGSTATSD_SO_RCVBUF`: bytes; `0` keeps offpath's default.
pub(super) fn so_rcvbuf(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(v, 0, MAX_SO_RCVBUF, "a size in bytes, at most 1073741824")
}

pub(super) fn receive_threads(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(
        v,
        0,
        MAX_RECEIVE_THREADS,
        "a number of threads from 1 to 64, or 0 for one per core (at most 4)",
    )
}
