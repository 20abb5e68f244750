//! The Unix stream listener: one thread polls the listening socket and every connection.
//!
//! Framing (as the Agent, `docs/protocols.md`, "Transports and framing"): each frame is a `u32` little-endian payload length then
//! the payload. A frame longer than `DD_DOGSTATSD_BUFFER_SIZE` closes its connection and is counted
//! as [`PacketDrop::OversizeFrame`](crate::telemetry::PacketDrop::OversizeFrame); other connections
//! are unaffected. At most [`MAX_CONNECTIONS`] connections are served at once; one more is accepted and
//! closed at once, and counted in `ListenerStats::connections_refused`.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::READ_TIMEOUT;
use super::frame::FrameDecoder;
use super::packet::Sink;

/// Connections served at once by one Unix stream listener.
pub const MAX_CONNECTIONS: usize = 128;

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

/// One client connection and its frame decoder (which holds the bytes not yet forming a frame).
struct Conn {
    stream: UnixStream,
    frames: FrameDecoder,
}

impl Conn {
    fn new(stream: UnixStream, frame_max: usize) -> Conn {
        Conn {
            stream,
            frames: FrameDecoder::new(frame_max),
        }
    }

    /// One `read` straight into the decoder's free space, then hand over every whole frame.
    fn read_once(&mut self, sink: &mut Sink) -> Read1 {
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
                if hand_over(&mut self.frames, sink) {
                    Read1::Data
                } else {
                    Read1::Closed
                }
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

/// Hand every whole frame to `sink`, counting frames and bytes. Returns false (close the connection)
/// on a frame longer than the buffer size, counted as `oversize_frame`.
fn hand_over(frames: &mut FrameDecoder, sink: &mut Sink) -> bool {
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
    keep
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
            if n < 0 && e.kind() != io::ErrorKind::Interrupted {
                errors += 1;
                if errors == 1 || errors.is_power_of_two() {
                    tracing::warn!(error = %e, errors, "poll of Unix stream connections failed");
                }
            }
            continue;
        }
        // Back to front: `swap_remove(i)` moves an already served connection into slot i.
        for i in (0..conns.len()).rev() {
            let ready = fds.get(i + 1).is_some_and(|p| p.revents != 0);
            if ready && conns.get_mut(i).map(|c| c.read_once(&mut sink)) == Some(Read1::Closed) {
                conns.swap_remove(i);
            }
        }
        sink.commit();
        if fds.first().is_some_and(|p| p.revents != 0) {
            match accept(&listener, &mut conns, &sink, frame_max) {
                Ok(0) => {}
                Ok(_) => backoff.accepted(),
                Err(e) => accept_failed(&e, &mut backoff, &sink),
            }
        }
    }
    let _ = accept(&listener, &mut conns, &sink, frame_max);
    for conn in &mut conns {
        for _ in 0..DRAIN_READS {
            if conn.read_once(&mut sink) != Read1::Data {
                break;
            }
        }
    }
    sink.commit();
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

/// Accept every pending connection; past [`MAX_CONNECTIONS`], close and count them. Returns how many
/// were accepted (refused ones included), or the error that stopped it.
fn accept(
    listener: &UnixListener,
    conns: &mut Vec<Conn>,
    sink: &Sink,
    frame_max: usize,
) -> io::Result<usize> {
    let mut accepted = 0;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                if conns.len() >= MAX_CONNECTIONS {
                    let refused = sink.stats().connections_refused.fetch_add(1, Relaxed);
                    if refused == 0 || (refused + 1).is_power_of_two() {
                        tracing::warn!(
                            max = MAX_CONNECTIONS,
                            refused = refused + 1,
                            "too many Unix stream connections; closing new ones"
                        );
                    }
                    continue;
                }
                if let Err(e) = stream.set_nonblocking(true) {
                    tracing::debug!(error = %e, "cannot make a Unix stream connection non-blocking");
                    continue;
                }
                conns.push(Conn::new(stream, frame_max));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The client gave up before it was accepted.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(accepted),
            Err(e) => return Err(e),
        }
    }
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
    fn the_backoff_stays_capped_after_very_many_failures() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::default();
        for _ in 0..100_000 {
            b.failed(t0);
        }
        assert_eq!(b.failed(t0), AcceptBackoff::MAX);
    }
}
