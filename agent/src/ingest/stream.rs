//! The Unix stream listener: one thread polls the listening socket and every connection.
//!
//! Framing (as the Agent, `docs/protocols.md`, "Transports and framing"): each frame is a `u32` little-endian payload length then
//! the payload. A frame longer than `DD_DOGSTATSD_BUFFER_SIZE` closes its connection and is counted
//! as [`PacketDrop::OversizeFrame`](crate::telemetry::PacketDrop::OversizeFrame); other connections
//! are unaffected. At most [`MAX_CONNECTIONS`] connections are served at once, shared fairly between the
//! local users that connect ([`fair`](super::fair)): when every slot is taken, a new connection from a
//! uid holding fewer than another takes the slot of that uid's longest idle connection (counted in
//! `ListenerStats::connections_evicted`); otherwise it is accepted and closed at once (counted in
//! `connections_refused`). A frame trickled for longer than 10 s, or a connection silent for 60 s while
//! slots are short, is closed (`connections_timed_out`). Every connection gets one read per round and
//! the listening socket is served every round, so no client starves another or the accept.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::READ_TIMEOUT;
use super::fair::{self, Admit, Expiry, Meta, UNKNOWN_UID};
use super::frame::FrameDecoder;
use super::packet::Sink;

/// Connections served at once by one Unix stream listener.
pub const MAX_CONNECTIONS: usize = 128;

/// Connections accepted (or refused) per round at most: a client connecting in a loop cannot keep the
/// listener from reading the connections it serves; the rest wait in the backlog for the next round.
const ACCEPTS_PER_ROUND: usize = 2 * MAX_CONNECTIONS;

/// Reads per connection when draining at stop (each up to one buffer), so a client that keeps
/// writing cannot hold shutdown.
const DRAIN_READS: usize = 256;

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read1 {
    /// Bytes arrived (frames may have been handed over).
    Data,
    /// Nothing to read now.
    Idle,
    /// The peer closed, an error occurred, or a frame was too large: drop the connection.
    Closed,
}

/// One client connection, its frame decoder (which holds the bytes not yet forming a frame) and what
/// fairness needs to know of it.
struct Conn {
    stream: UnixStream,
    frames: FrameDecoder,
    meta: Meta,
}

impl Conn {
    fn new(stream: UnixStream, frame_max: usize, meta: Meta) -> Conn {
        Conn {
            stream,
            frames: FrameDecoder::new(frame_max),
            meta,
        }
    }

    /// One `read` straight into the decoder's free space, then hand over every whole frame.
    fn read_once(&mut self, sink: &mut Sink, now: Instant) -> Read1 {
        let free = self.frames.spare();
        if free.is_empty() {
            return Read1::Closed;
        }
        match self.stream.read(free) {
            Ok(0) => {
                if self.frames.buffered() > 0 {
                    tracing::debug!(
                        bytes = self.frames.buffered(),
                        "Unix stream connection closed partway through a frame"
                    );
                }
                Read1::Closed
            }
            Ok(n) => {
                self.frames.filled(n);
                let (keep, completed) = hand_over(&mut self.frames, sink);
                self.meta
                    .data(now, completed > 0, self.frames.buffered() > 0);
                if keep { Read1::Data } else { Read1::Closed }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read1::Idle,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Read1::Data,
            Err(e) => {
                tracing::debug!(error = %e, "Unix stream connection failed");
                Read1::Closed
            }
        }
    }
}

/// Hand every whole frame to `sink`, counting frames and bytes. Returns whether to keep the connection
/// (false on a frame longer than the buffer size, counted as `oversize_frame`) and the frames taken.
fn hand_over(frames: &mut FrameDecoder, sink: &mut Sink) -> (bool, u64) {
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut keep = true;
    while let Some(next) = frames.next_frame() {
        count += 1;
        match next {
            Ok(payload) => {
                bytes += payload.len() as u64;
                if !payload.is_empty() {
                    sink.push_copy(payload);
                }
            }
            Err(e) => {
                sink.oversize_frame();
                tracing::warn!(error = %e, "dropping Unix stream connection");
                keep = false;
                break;
            }
        }
    }
    sink.received(count, bytes);
    (keep, count)
}

/// When the listening socket is watched again after `accept` failed: an exponential backoff from
/// [`AcceptBackoff::MIN`] to [`AcceptBackoff::MAX`], reset by the next accepted connection.
///
/// Out of file descriptors (`EMFILE`, `ENFILE`) the pending connection stays pending, so the socket
/// stays readable: without a pause the thread would spin on `accept` (and on warnings). Pure state: the
/// caller passes `now`.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// Consecutive failures.
    failures: u32,
    /// The listening socket is not watched before this.
    resume_at: Option<Instant>,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// `accept` failed at `now`: returns how long the listening socket now rests.
    fn failed(&mut self, now: Instant) -> Duration {
        let pause = Self::MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        self.resume_at = Some(now + pause);
        pause
    }

    /// A connection was accepted: no pause any more.
    fn accepted(&mut self) {
        *self = Self::default();
    }

    /// How long the listening socket still rests at `now`; `None` when it is watched.
    fn resting(&self, now: Instant) -> Option<Duration> {
        self.resume_at
            .map(|t| t.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// Serve `listener` until `stop`, then drain: accept what is pending, read what every connection
/// already holds (bounded by `DRAIN_READS`), hand over whole frames and return.
pub(crate) fn run(listener: UnixListener, mut sink: Sink, stop: &AtomicBool) {
    let frame_max = sink.pool().buf_size();
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
    let mut backoff = AcceptBackoff::default();
    let mut errors = 0u64;
    while !stop.load(Relaxed) {
        let resting = backoff.resting(Instant::now());
        fds.clear();
        // A negative descriptor is ignored by poll: the listening socket rests after accept failed.
        fds.push(pollfd(resting.map_or(listener.as_raw_fd(), |_| -1)));
        fds.extend(conns.iter().map(|c| pollfd(c.stream.as_raw_fd())));
        let wait = resting.map_or(READ_TIMEOUT, |r| r.min(READ_TIMEOUT));
        // Round up: a pause of 0.3 ms must not become a busy 0 ms poll.
        let timeout = libc::c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(100);
        // SAFETY: `fds` holds `fds.len()` initialized pollfd entries for open descriptors owned by
        // this thread (or -1, ignored); the vector is not touched during the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            let e = io::Error::last_os_error();
            expire(&mut conns, &mut sink, Instant::now());
            if n < 0 && e.kind() != io::ErrorKind::Interrupted {
                errors += 1;
                if errors == 1 || errors.is_power_of_two() {
                    tracing::warn!(error = %e, errors, "poll of Unix stream connections failed");
                }
            }
            continue;
        }
        let now = Instant::now();
        // Back to front: `swap_remove(i)` moves an already served connection into slot i.
        for i in (0..conns.len()).rev() {
            let ready = fds.get(i + 1).is_some_and(|p| p.revents != 0);
            if ready && conns.get_mut(i).map(|c| c.read_once(&mut sink, now)) == Some(Read1::Closed)
            {
                conns.swap_remove(i);
            }
        }
        sink.commit();
        expire(&mut conns, &mut sink, Instant::now());
        if fds.first().is_some_and(|p| p.revents != 0) {
            match accept(&listener, &mut conns, &mut sink, frame_max) {
                Ok(0) => {}
                Ok(_) => backoff.accepted(),
                Err(e) => accept_failed(&e, &mut backoff, &sink),
            }
        }
    }
    let _ = accept(&listener, &mut conns, &mut sink, frame_max);
    for conn in &mut conns {
        drain(conn, &mut sink);
    }
    sink.commit();
}

/// Read what `conn` already holds without waiting (at most `DRAIN_READS` reads) and hand it over.
fn drain(conn: &mut Conn, sink: &mut Sink) {
    for _ in 0..DRAIN_READS {
        if conn.read_once(sink, Instant::now()) != Read1::Data {
            break;
        }
    }
}

/// Close the connections that trickle a frame, or sit idle while slots are short ([`fair::expired`]).
fn expire(conns: &mut Vec<Conn>, sink: &mut Sink, now: Instant) {
    let crowded = conns.len() > MAX_CONNECTIONS / 2;
    for i in (0..conns.len()).rev() {
        let Some(why) = conns
            .get(i)
            .and_then(|c| fair::expired(&c.meta, now, crowded))
        else {
            continue;
        };
        let mut conn = conns.swap_remove(i);
        if why == Expiry::Idle {
            drain(&mut conn, sink);
        }
        let uid = conn.meta.uid;
        let n = sink.stats().connections_timed_out.fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() {
            let what = match why {
                Expiry::SlowFrame => "a frame did not arrive whole within 10 s",
                Expiry::Idle => "idle for 60 s while connection slots are short",
            };
            tracing::warn!(
                uid,
                timed_out = n,
                "closing a Unix stream connection: {what}"
            );
        }
    }
}

/// Count a failed `accept`, rest the listening socket, and log the 1st, 2nd, 4th, 8th… failure.
fn accept_failed(e: &io::Error, backoff: &mut AcceptBackoff, sink: &Sink) {
    let pause = backoff.failed(Instant::now());
    let errors = sink.stats().accept_errors.fetch_add(1, Relaxed) + 1;
    if errors.is_power_of_two() {
        tracing::warn!(
            error = %e,
            errors,
            retry_in = ?pause,
            "cannot accept a Unix stream connection (out of file descriptors? raise `ulimit -n`); \
             new connections wait"
        );
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Accept the pending connections (at most [`ACCEPTS_PER_ROUND`]); past [`MAX_CONNECTIONS`], give each
/// the slot of another uid's connection when that is fair ([`fair::admit`]), else close it; both
/// counted. Returns how many were accepted (refused ones included), or the error that stopped it.
fn accept(
    listener: &UnixListener,
    conns: &mut Vec<Conn>,
    sink: &mut Sink,
    frame_max: usize,
) -> io::Result<usize> {
    let mut accepted = 0;
    while accepted < ACCEPTS_PER_ROUND {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let uid = peer_uid(&stream).unwrap_or(UNKNOWN_UID);
                let metas: Vec<Meta> = conns.iter().map(|c| c.meta).collect();
                match fair::admit(&metas, uid, MAX_CONNECTIONS) {
                    Admit::Accept => {}
                    Admit::Evict(i) => {
                        // What it already sent is read first: only the slot is taken from it.
                        let mut old = conns.swap_remove(i);
                        drain(&mut old, sink);
                        let old = old.meta.uid;
                        let n = sink.stats().connections_evicted.fetch_add(1, Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(
                                max = MAX_CONNECTIONS,
                                uid,
                                evicted_uid = old,
                                evicted = n,
                                "every Unix stream connection slot is taken: closing the longest \
                                 idle connection of the user holding the most for a new user's"
                            );
                        }
                    }
                    Admit::Refuse => {
                        let refused = sink.stats().connections_refused.fetch_add(1, Relaxed);
                        if refused == 0 || (refused + 1).is_power_of_two() {
                            tracing::warn!(
                                max = MAX_CONNECTIONS,
                                uid,
                                refused = refused + 1,
                                "too many Unix stream connections for this user's share; closing new ones"
                            );
                        }
                        continue;
                    }
                }
                if let Err(e) = stream.set_nonblocking(true) {
                    tracing::debug!(error = %e, "cannot make a Unix stream connection non-blocking");
                    continue;
                }
                conns.push(Conn::new(stream, frame_max, Meta::new(uid, Instant::now())));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The client gave up before it was accepted.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(accepted),
            Err(e) => return Err(e),
        }
    }
    Ok(accepted)
}

/// The uid of the process that connected (`SO_PEERCRED`, taken at `connect`).
#[cfg(target_os = "linux")]
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `stream` is an open Unix socket; `cred` and `len` outlive the call and `len` is the
    // exact size of `cred`, which the kernel fills.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

#[cfg(not(target_os = "linux"))]
fn peer_uid(_stream: &UnixStream) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_from_10_ms_doubling_to_1_s_and_an_accept_resets_it() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::default();
        assert_eq!(b.resting(t0), None);
        let pauses: Vec<u64> = (0..10).map(|_| b.failed(t0).as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(b.resting(t0), Some(Duration::from_secs(1)));
        assert_eq!(
            b.resting(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            b.resting(t0 + Duration::from_secs(1)),
            None,
            "then it is watched again"
        );
        b.accepted();
        assert_eq!(b.resting(t0), None);
        assert_eq!(b.failed(t0), Duration::from_millis(10));
    }

    #[test]
    fn a_client_connecting_in_a_loop_cannot_hold_the_listener_in_accept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, _rx) = crossbeam_channel::bounded(4);
        let stats = std::sync::Arc::new(crate::telemetry::ListenerStats::default());
        let pool = super::super::packet::Pool::new(64, 4);
        let mut sink = Sink::new(vec![tx], pool, std::sync::Arc::clone(&stats));
        let pending = ACCEPTS_PER_ROUND + 10;
        let clients: Vec<UnixStream> = (0..pending)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let mut conns = Vec::new();
        // One round takes at most its share, the next one the rest.
        assert_eq!(
            accept(&listener, &mut conns, &mut sink, 64).unwrap(),
            ACCEPTS_PER_ROUND
        );
        assert_eq!(accept(&listener, &mut conns, &mut sink, 64).unwrap(), 10);
        assert_eq!(conns.len(), MAX_CONNECTIONS);
        assert_eq!(
            stats.connections_refused.load(Relaxed),
            (pending - MAX_CONNECTIONS) as u64
        );
        drop(clients);
    }

    #[test]
    fn the_backoff_stays_capped_after_very_many_failures() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::default();
        for _ in 0..100_000 {
            b.failed(t0);
        }
        assert_eq!(b.failed(t0), AcceptBackoff::MAX);
    }
}
