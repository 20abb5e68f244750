//! Listeners: UDP, Unix datagram and Unix stream sockets to packets on a bounded queue. No parsing here.
//!
//! ```text
//!  UDP  ──SO_REUSEPORT──> N receive threads ─┐   recvmmsg (32 datagrams a call) into pooled buffers,
//!  Unix datagram ───────> 1 receive thread  ─┼─> small datagrams joined by '\n' into one packet,
//!  Unix stream ──poll───> 1 thread, ≤128 conn┘   bounded queue per worker (full: UDP drops + counts,
//!                                                 Unix waits up to 1 s, then drops + counts)
//! ```
//!
//! - **Threads.** UDP gets `OFFPATH_RECEIVE_THREADS` threads (0 = one per core, at most 4), each with
//!   its own socket bound to the same address with `SO_REUSEPORT`, so the kernel spreads senders over
//!   them and no receive queue or counter is shared. The Unix datagram socket has one thread (readers of
//!   one socket would only wake each other), and the Unix stream listener one thread that polls every
//!   connection ([`MAX_STREAM_CONNECTIONS`] at most).
//! - **Buffers.** Every datagram is read into a pooled buffer of `DD_DOGSTATSD_BUFFER_SIZE` bytes. A
//!   datagram that did not fit is detected by `MSG_TRUNC` and counted as
//!   [`PacketDrop::Truncated`](crate::telemetry::PacketDrop::Truncated), never forwarded (a cut line
//!   could parse to a wrong value or tag). Small datagrams from one batch are joined with `\n` into one
//!   packet (as the Agent's packet assembler does), so a queue slot carries up to a buffer of lines; a
//!   [`Packet`] gives its buffer back to the pool when it drops. An empty pool allocates (it never drops
//!   data); a full one frees what is returned, so memory is bounded by the queues, the batches and what the
//!   consumer holds. The sidecar frees half the free buffers once per flush period
//!   ([`Listeners::trim_buffers`]), so what a burst made goes back once bursts stop.
//! - **Workers.** With several aggregate workers (`OFFPATH_AGGREGATE_WORKERS`), there is one queue
//!   per worker ([`Listeners::start_sharded`]) and each receive thread splits what it read into lines
//!   and copies each to the packet of its worker, chosen by metric name and tag set ([`Route`]): every
//!   context is aggregated by exactly one worker, with no merge at flush, and the contexts of one hot
//!   name spread over all the workers. With one worker datagrams go whole,
//!   without a copy.
//! - **Backpressure.** UDP: packets go to the queue with `try_send`; a full queue drops the packet and
//!   counts each datagram in it as [`PacketDrop::QueueFull`](crate::telemetry::PacketDrop::QueueFull)
//!   (a UDP sender cannot be made to wait). Unix datagram and stream: the clients are local and can
//!   wait, as the Agent makes them: on a full queue the receive thread waits for room up to
//!   [`UNIX_QUEUE_WAIT`] and reads nothing meanwhile, so the socket buffer fills and the kernel blocks
//!   the client's `send`/`write` (a non-blocking client gets `EAGAIN`). Only a queue still full after
//!   that wait drops (counted `queue_full`), and it drops at once until its worker takes a packet again,
//!   so a stuck worker costs one wait.
//! - **Counters.** Each receive thread owns a [`ListenerStats`](crate::telemetry::ListenerStats):
//!   `packets` and `bytes` count every datagram or frame read (dropped ones included), added once per
//!   batch.
//! - **Receive buffer.** UDP asks for `DD_DOGSTATSD_SO_RCVBUF` or `DEFAULT_SO_RCVBUF` and logs what the
//!   kernel granted; when `net.core.rmem_max` caps it (and `SO_RCVBUFFORCE` is not permitted) it warns
//!   with the `sysctl` to run. The Unix datagram socket only sets it when the key is set, like the Agent.
//! - **Unix socket files.** A stale socket file (nobody listening) is removed at start; a live one, or a
//!   path that is not a socket, is an error. Files are created mode `0722` like the Agent's (anyone local
//!   may write, only the owner may read) and removed at stop.
//! - **Stop.** Receive threads block for at most `READ_TIMEOUT` (`SO_RCVTIMEO`, poll timeout) before
//!   they look at the stop flag; then they drain what their socket already holds without blocking
//!   (bounded), hand it to the queue and exit. [`Listeners::stop`] joins them, so when it returns every
//!   `Sender` of the queue is dropped and the consumer sees the queue close after the last packet.

mod datagram;
mod fair;
mod frame;
mod pace;
mod packet;
mod route;
mod stream;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use socket2::SockRef;

use crate::config::IngestConfig;
use crate::telemetry::Telemetry;

pub use frame::{FRAME_HEADER, FrameDecoder, FrameError};
pub use packet::Packet;
pub use route::{Route, shard_of};
pub use stream::MAX_CONNECTIONS as MAX_STREAM_CONNECTIONS;

use datagram::{BATCH, RcvBuf};
use pace::Pacer;
use packet::{Pool, Sink};

/// How long a receive thread blocks before it looks at the stop flag.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a Unix listener waits for room in a full worker queue before it drops (see the module's
/// Backpressure): long enough for a worker's flush or a scheduling hiccup, short enough that a stuck
/// worker does not hold the listener (or shutdown) for long.
pub(crate) const UNIX_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// `SO_RCVBUF` asked for UDP when `DD_DOGSTATSD_SO_RCVBUF` is not set: 8 MiB, so a burst waits in the
/// kernel instead of being dropped there.
pub(crate) const DEFAULT_SO_RCVBUF: usize = 8 << 20;

/// Default receive threads for UDP at most (`OFFPATH_RECEIVE_THREADS=0`: one per core up to this).
const MAX_DEFAULT_THREADS: usize = 4;

/// Buffers a stopping datagram thread drains at least (also bounded by its `SO_RCVBUF`).
const DRAIN_MIN_BUFFERS: usize = 256;

/// Mode of the Unix socket files: anyone local may write, only the owner may read (as the Agent).
const SOCKET_MODE: u32 = 0o722;

/// Why the listeners could not start; each message names the key to change.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The UDP socket could not be bound or set up.
    #[error("cannot bind UDP {addr} (DD_DOGSTATSD_PORT / DD_BIND_HOST)")]
    Udp {
        /// The address asked for.
        addr: SocketAddr,
        /// The system error.
        source: io::Error,
    },
    /// The Unix datagram socket could not be created.
    #[error("cannot listen on Unix datagram socket {} (DD_DOGSTATSD_SOCKET)", path.display())]
    UnixDatagram {
        /// The socket path.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The Unix stream socket could not be created.
    #[error("cannot listen on Unix stream socket {} (DD_DOGSTATSD_STREAM_SOCKET)", path.display())]
    UnixStream {
        /// The socket path.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// A receive thread could not be started.
    #[error("cannot start a receive thread (OFFPATH_RECEIVE_THREADS)")]
    Thread {
        /// The system error.
        source: io::Error,
    },
}

/// Empties the paced datagram sockets into the queues on demand ([`Listeners::syncer`]).
#[derive(Debug, Clone)]
pub struct Syncer(Arc<Pacer>);

impl Syncer {
    /// Ask every paced thread to hand what its socket holds to the queues now, and block until each has
    /// (or has found its socket empty since), at most `wait`. Returns whether all did in time.
    pub fn sync(&self, wait: Duration) -> bool {
        self.0.sync(wait)
    }
}

/// The running listeners: their receive threads and socket files.
///
/// Dropping it stops them like [`Listeners::stop`].
#[derive(Debug)]
pub struct Listeners {
    /// The bound UDP address, port 0 resolved.
    udp_addr: Option<SocketAddr>,
    /// Set once to stop every receive thread.
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Unix socket files to remove at stop.
    socket_files: Vec<PathBuf>,
    /// The UDP threads' pacing (`OFFPATH_RECEIVE_PACE`), when on.
    pacer: Option<Arc<Pacer>>,
    /// The buffers every listener reads into.
    pool: Arc<Pool>,
}

impl Listeners {
    /// Bind every configured socket and start its receive threads; packets go to `queue`.
    ///
    /// Every socket is bound when this returns, so clients can send at once. With no listener
    /// configured, `queue` is dropped at once.
    ///
    /// # Errors
    /// An [`IngestError`] naming the key of the socket that could not be bound (address in use,
    /// permission denied, a live or non-socket file at a Unix socket path, ...). Listeners started
    /// before the failure are stopped again.
    pub fn start(
        cfg: &IngestConfig,
        telemetry: &Arc<Telemetry>,
        queue: Sender<Packet>,
    ) -> Result<Listeners, IngestError> {
        Self::start_sharded(cfg, telemetry, vec![queue], Route::default())
    }

    /// [`Listeners::start`] with one queue per aggregate worker: every line goes to the queue
    /// `route` names ([`Workers::route`](crate::aggregate::Workers::route)), so all the lines of a
    /// context reach the same worker. With one queue,
    /// the same as [`Listeners::start`]; with none, every packet is dropped and counted as `queue_full`.
    ///
    /// # Errors
    /// As [`Listeners::start`].
    pub fn start_sharded(
        cfg: &IngestConfig,
        telemetry: &Arc<Telemetry>,
        queues: Vec<Sender<Packet>>,
        route: Route,
    ) -> Result<Listeners, IngestError> {
        let udp_threads = match cfg.receive_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_DEFAULT_THREADS),
            n => n,
        };
        let buffer_size = cfg.buffer_size.get();
        // Enough free buffers to refill every batch, every open packet and a full queue without
        // allocating.
        let pool = Pool::new(
            buffer_size,
            cfg.queue_size.get() + (BATCH + queues.len()) * (udp_threads + 2),
        );
        let mut this = Listeners {
            udp_addr: None,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            socket_files: Vec::new(),
            pacer: cfg.pace.map(|pace| Arc::new(Pacer::new(pace))),
            pool: Arc::clone(&pool),
        };
        let sink = |name: String| {
            Sink::new(
                queues.clone(),
                Arc::clone(&pool),
                telemetry.register_listener(name),
            )
            .with_route(route.clone())
        };
        let drain_limit = |rcvbuf: usize| rcvbuf.max(DRAIN_MIN_BUFFERS * buffer_size);

        if let Some(addr) = cfg.udp {
            let err = |source| IngestError::Udp { addr, source };
            let (sockets, bound) = datagram::bind_udp(addr, udp_threads).map_err(err)?;
            let asked = cfg.so_rcvbuf.unwrap_or(DEFAULT_SO_RCVBUF);
            let mut rcvbuf = RcvBuf { asked, granted: 0 };
            for s in &sockets {
                rcvbuf = datagram::set_rcvbuf(SockRef::from(s), asked).map_err(err)?;
            }
            log_rcvbuf("UDP", rcvbuf);
            this.udp_addr = Some(bound);
            let n = sockets.len();
            for (i, socket) in sockets.into_iter().enumerate() {
                let name = match n {
                    1 => format!("udp {bound}"),
                    _ => format!("udp {bound} #{i}"),
                };
                let sink = sink(name);
                let (limit, granted) = (drain_limit(rcvbuf.granted), rcvbuf.granted);
                let paced = match &this.pacer {
                    Some(p) => {
                        let dup = socket.try_clone().map_err(err)?;
                        Some((p.join(dup.into()), Arc::clone(p)))
                    }
                    None => None,
                };
                this.spawn(format!("offpath-udp-{i}"), move |stop| match paced {
                    Some((me, p)) => {
                        datagram::run_paced(
                            socket.as_raw_fd(),
                            sink,
                            stop,
                            limit,
                            (&p, me),
                            granted,
                        );
                    }
                    None => datagram::run(socket.as_raw_fd(), sink, stop, limit),
                })?;
            }
            tracing::info!(addr = %bound, threads = n, "listening for DogStatsD on UDP");
        }

        if let Some(path) = &cfg.socket {
            let err = |source| IngestError::UnixDatagram {
                path: path.clone(),
                source,
            };
            remove_stale(path).map_err(err)?;
            let socket = UnixDatagram::bind(path).map_err(err)?;
            this.socket_files.push(path.clone());
            fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(err)?;
            socket.set_read_timeout(Some(READ_TIMEOUT)).map_err(err)?;
            let granted = match cfg.so_rcvbuf {
                Some(asked) => {
                    let r = datagram::set_rcvbuf(SockRef::from(&socket), asked).map_err(err)?;
                    log_rcvbuf("Unix datagram", r);
                    r.granted
                }
                None => SockRef::from(&socket).recv_buffer_size().unwrap_or(0),
            };
            let sink = sink(format!("unixgram {}", path.display())).waiting(UNIX_QUEUE_WAIT);
            let limit = drain_limit(granted);
            // Never paced: a Unix datagram client blocks while the socket is full, and the socket holds
            // few datagrams (`net.unix.max_dgram_qlen`), so a sleeping reader would make clients wait.
            this.spawn("offpath-unixgram".into(), move |stop| {
                datagram::run(socket.as_raw_fd(), sink, stop, limit);
            })?;
            tracing::info!(path = %path.display(), "listening for DogStatsD on a Unix datagram socket");
        }

        if let Some(path) = &cfg.stream_socket {
            let err = |source| IngestError::UnixStream {
                path: path.clone(),
                source,
            };
            remove_stale(path).map_err(err)?;
            let listener = UnixListener::bind(path).map_err(err)?;
            this.socket_files.push(path.clone());
            fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(err)?;
            listener.set_nonblocking(true).map_err(err)?;
            let sink = sink(format!("unix {}", path.display())).waiting(UNIX_QUEUE_WAIT);
            this.spawn("offpath-unix".into(), move |stop| {
                stream::run(listener, sink, stop);
            })?;
            tracing::info!(path = %path.display(), "listening for DogStatsD on a Unix stream socket");
        }
        Ok(this)
    }

    /// The bound UDP address (port 0 and `__random__` resolved); `None` when UDP is off.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// Free half the packet buffers the listeners hold free ([`Pool::trim`]); returns how many. Meant for
    /// once per flush period, so the buffers a burst made are given back once bursts stop needing them.
    pub fn trim_buffers(&self) -> usize {
        self.pool.trim()
    }

    /// What makes a flush see every datagram sent before it, when the UDP threads are paced
    /// (`OFFPATH_RECEIVE_PACE`: a thread may be sleeping with datagrams waiting in its socket); `None`
    /// without pacing, where every datagram is read as it arrives.
    pub fn syncer(&self) -> Option<Syncer> {
        self.pacer.clone().map(Syncer)
    }

    /// Stop reading, drain what the sockets already hold into the queue, join the threads and remove
    /// the socket files. When this returns, every `Sender` clone of the queue is dropped.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn spawn(
        &mut self,
        name: String,
        run: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<(), IngestError> {
        let stop = Arc::clone(&self.stop);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&stop))
            .map_err(|source| IngestError::Thread { source })?;
        self.threads.push(handle);
        Ok(())
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() && self.socket_files.is_empty() {
            return;
        }
        self.stop.store(true, Relaxed);
        if let Some(p) = &self.pacer {
            p.stop();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a receive thread panicked");
            }
        }
        for path in self.socket_files.drain(..) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
                }
            }
        }
        tracing::debug!("listeners stopped");
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn log_rcvbuf(what: &str, r: RcvBuf) {
    if r.capped() {
        tracing::warn!(
            asked = r.asked,
            granted = r.granted,
            "the kernel capped the {what} receive buffer (SO_RCVBUF, DD_DOGSTATSD_SO_RCVBUF) below what \
             was asked; bursts may be dropped by the kernel. Raise the limit with: \
             sysctl -w net.core.rmem_max={}",
            r.asked
        );
    } else {
        tracing::info!(
            asked = r.asked,
            granted = r.granted,
            "{what} receive buffer set"
        );
    }
}

/// Remove a socket file nobody listens on. A live socket or a path that is not a socket is an error.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; not replacing it",
        ));
    }
    // A datagram connect never blocks: refused means nobody is bound to the file (of either type).
    match UnixDatagram::unbound()?.connect(path) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path)?;
            tracing::debug!(path = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address in use: another process is listening on it",
        )),
    }
}

#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod tests;
