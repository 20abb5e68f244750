//! The Unix stream listener: one thread polls the listening socket and every connection.
//!
//! Framing (as the Agent, PROTOCOLS.md §1.1): each frame is a `u32` little-endian payload length then
//! the payload. A frame longer than `DD_DOGSTATSD_BUFFER_SIZE` closes its connection and is counted
//! as [`PacketDrop::OversizeFrame`](crate::telemetry::PacketDrop::OversizeFrame); other connections
//! are unaffected. At most [`MAX_CONNECTIONS`] connections are served at once; one more is accepted and
//! closed at once, and counted in `ListenerStats::connections_refused`.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::READ_TIMEOUT;
use super::packet::Sink;

/// Connections served at once by one Unix stream listener.
pub const MAX_CONNECTIONS: usize = 128;

/// Reads per connection when draining at stop (each up to one buffer), so a client that keeps
/// writing cannot hold shutdown.
const DRAIN_READS: usize = 256;

/// Bytes of a frame header.
const HEADER: usize = 4;

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

/// One client connection and the bytes read from it that do not yet form a whole frame.
struct Conn {
    stream: UnixStream,
    /// Holds one header plus one largest frame, so a frame always fits once earlier ones are consumed.
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    fn new(stream: UnixStream, frame_max: usize) -> Conn {
        Conn {
            stream,
            buf: vec![0u8; frame_max + HEADER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// One `read` into the free end of the buffer, then hand over every whole frame.
    fn read_once(&mut self, sink: &mut Sink) -> Read1 {
        let Some(free) = self.buf.get_mut(self.end..).filter(|f| !f.is_empty()) else {
            return Read1::Closed;
        };
        match self.stream.read(free) {
            Ok(0) => {
                if self.end > self.start {
                    tracing::debug!(
                        bytes = self.end - self.start,
                        "Unix stream connection closed partway through a frame"
                    );
                }
                Read1::Closed
            }
            Ok(n) => {
                self.end += n;
                if self.frames(sink) {
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

    /// Hand every whole frame in the buffer to `sink` and keep the partial rest at the front.
    /// Returns false (close the connection) on a frame longer than the buffer size.
    fn frames(&mut self, sink: &mut Sink) -> bool {
        let frame_max = self.buf.len() - HEADER;
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut keep = true;
        while let Some(avail) = self.buf.get(self.start..self.end) {
            let Some(header) = avail.first_chunk::<HEADER>() else {
                break;
            };
            let len = u32::from_le_bytes(*header) as usize;
            if len > frame_max {
                frames += 1;
                sink.oversize_frame();
                tracing::warn!(
                    len,
                    max = frame_max,
                    "dropping Unix stream connection: frame larger than DD_DOGSTATSD_BUFFER_SIZE"
                );
                keep = false;
                break;
            }
            let Some(payload) = avail.get(HEADER..HEADER + len) else {
                break;
            };
            frames += 1;
            bytes += len as u64;
            if !payload.is_empty() {
                sink.push_copy(payload);
            }
            self.start += HEADER + len;
        }
        sink.received(frames, bytes);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        keep
    }
}

/// Serve `listener` until `stop`, then drain: accept what is pending, read what every connection
/// already holds (bounded by `DRAIN_READS`), hand over whole frames and return.
pub(crate) fn run(listener: UnixListener, mut sink: Sink, stop: &AtomicBool) {
    let frame_max = sink.pool().buf_size();
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
    let timeout = libc::c_int::try_from(READ_TIMEOUT.as_millis()).unwrap_or(100);
    let mut errors = 0u64;
    while !stop.load(Relaxed) {
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd()));
        fds.extend(conns.iter().map(|c| pollfd(c.stream.as_raw_fd())));
        // SAFETY: `fds` holds `fds.len()` initialized pollfd entries for open descriptors owned by
        // this thread; the vector is not touched during the call.
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
            accept(&listener, &mut conns, &sink, frame_max);
        }
    }
    accept(&listener, &mut conns, &sink, frame_max);
    for conn in &mut conns {
        for _ in 0..DRAIN_READS {
            if conn.read_once(&mut sink) != Read1::Data {
                break;
            }
        }
    }
    sink.commit();
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Accept every pending connection; past [`MAX_CONNECTIONS`], close and count them.
fn accept(listener: &UnixListener, conns: &mut Vec<Conn>, sink: &Sink, frame_max: usize) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
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
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a Unix stream connection");
                return;
            }
        }
    }
}
