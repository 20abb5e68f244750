//! UDP and Unix datagram sockets: set-up, and the receive loop (batched `recvmmsg` into pooled buffers).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::READ_TIMEOUT;
use super::pace::Pacer;
use super::packet::{Buf, Pool, Sink};

/// Datagrams read by one `recvmmsg` call at most.
pub(crate) const BATCH: usize = 32;

/// Bind `count` UDP sockets to `addr`; with more than one, they share the port with `SO_REUSEPORT` and
/// the kernel spreads senders over them. Returns the sockets and the address they are bound to.
///
/// A plain bind is tried first: it fails if any other socket holds the address (with `SO_REUSEPORT` or
/// not), so a second offpath cannot silently share the port, and it resolves port 0.
pub(crate) fn bind_udp(addr: SocketAddr, count: usize) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let domain = Domain::for_address(addr);
    let new = || -> io::Result<Socket> {
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(s)
    };
    let first = new()?;
    first.bind(&addr.into())?;
    let resolved = first.local_addr()?.as_socket().unwrap_or(addr);
    if count <= 1 {
        return Ok((vec![first], resolved));
    }
    drop(first);
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let s = new()?;
        s.set_reuse_port(true)?;
        s.bind(&resolved.into())?;
        sockets.push(s);
    }
    Ok((sockets, resolved))
}

/// What the kernel granted for `SO_RCVBUF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RcvBuf {
    /// Bytes asked for.
    pub(crate) asked: usize,
    /// Bytes usable for data as the kernel reports them (Linux reports twice the usable size; this is
    /// the reported value halved).
    pub(crate) granted: usize,
}

impl RcvBuf {
    /// Whether the kernel gave less than asked (`net.core.rmem_max` is lower).
    pub(crate) fn capped(&self) -> bool {
        self.granted < self.asked
    }
}

/// Linux doubles `SO_RCVBUF` to leave room for its bookkeeping and reports the doubled value.
const KERNEL_FACTOR: usize = if cfg!(target_os = "linux") { 2 } else { 1 };

/// Ask for an `asked`-byte receive buffer. If `net.core.rmem_max` caps it, try `SO_RCVBUFFORCE`
/// (allowed with `CAP_NET_ADMIN` only, as for systemd-journald); either way report what was granted.
pub(crate) fn set_rcvbuf(sock: SockRef<'_>, asked: usize) -> io::Result<RcvBuf> {
    let asked = asked.min(i32::MAX as usize / KERNEL_FACTOR);
    sock.set_recv_buffer_size(asked)?;
    let mut reported = sock.recv_buffer_size()?;
    if reported < asked * KERNEL_FACTOR && force_rcvbuf(sock.as_raw_fd(), asked).is_ok() {
        reported = sock.recv_buffer_size()?;
    }
    Ok(RcvBuf {
        asked,
        granted: reported / KERNEL_FACTOR,
    })
}

#[cfg(target_os = "linux")]
fn force_rcvbuf(fd: RawFd, size: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int that outlives
    // the call, and its size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn force_rcvbuf(_fd: RawFd, _size: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `BATCH` buffers and the `recvmmsg` headers that point into them. Lives on its receive thread.
struct Batch {
    /// One pooled buffer per header; a buffer that becomes a packet is replaced by a fresh one. Fresh
    /// buffers are unwritten: an idle batch costs no memory beyond the allocator's headers.
    bufs: Vec<Buf>,
    /// `iovs[i]` spans `bufs[i]`.
    iovs: Vec<libc::iovec>,
    /// `hdrs[i]` reads into `iovs[i]`; the kernel writes each datagram's length and flags here.
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(pool: &Pool) -> Batch {
        let mut bufs: Vec<Buf> = (0..BATCH).map(|_| pool.get()).collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let hdrs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain C data (pointers, lengths, flags) for which all-zero is
                // valid: no name, no control data.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Batch { bufs, iovs, hdrs }
    }

    /// Take buffer `i` (it becomes a packet) and put `fresh` in its place.
    fn take(&mut self, i: usize, mut fresh: Buf) -> Buf {
        if let Some(iov) = self.iovs.get_mut(i) {
            iov.iov_base = fresh.as_mut_ptr().cast();
            iov.iov_len = fresh.len();
        }
        match self.bufs.get_mut(i) {
            Some(slot) => std::mem::replace(slot, fresh),
            None => fresh,
        }
    }

    /// One `recvmmsg`: up to `BATCH` datagrams. `flags` is `MSG_WAITFORONE` (block for the first,
    /// up to `SO_RCVTIMEO`, then take what is queued) or `MSG_DONTWAIT`.
    fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `hdrs` holds `hdrs.len()` initialized headers; header i points to `iovs[i]`, which
        // spans the live buffer `bufs[i]` that this thread owns exclusively. No name or control
        // buffers are given. The vectors are not resized while the kernel writes into them.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as _,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Hand the first `n` received datagrams to `sink`: small ones are joined into one packet, a
    /// datagram that does not fit becomes a packet in its own buffer (no copy), a truncated one is
    /// counted and skipped. Returns the bytes read.
    fn deliver(&mut self, n: usize, sink: &mut Sink) -> usize {
        let mut bytes = 0;
        for i in 0..n.min(self.hdrs.len()) {
            let (len, flags) = match self.hdrs.get(i) {
                Some(h) => (h.msg_len as usize, h.msg_hdr.msg_flags),
                None => break,
            };
            bytes += len;
            if flags & libc::MSG_TRUNC != 0 {
                sink.truncated();
                continue;
            }
            let Some(buf) = self.bufs.get(i).filter(|b| len <= b.len()) else {
                continue;
            };
            // SAFETY: the kernel wrote this datagram's `len` bytes (not truncated: it fit) at the start
            // of `bufs[i]`, which header i points to.
            let data = unsafe { buf.prefix(len) };
            if data.is_empty() || sink.append(data) {
                continue;
            }
            let buf = self.take(i, sink.pool().get());
            // SAFETY: as above, the first `len` bytes of the buffer taken from slot i are the datagram.
            unsafe { sink.open_with(buf, len) };
        }
        sink.received(n as u64, bytes as u64);
        sink.commit();
        bytes
    }
}

/// Receive until `stop`, then drain what the socket holds (up to `drain_limit` bytes) and return.
///
/// Blocks in `recvmmsg` for at most `SO_RCVTIMEO` ([`READ_TIMEOUT`]) at a time, so `stop` is seen
/// within that; under load it is checked after every batch.
pub(crate) fn run(fd: RawFd, mut sink: Sink, stop: &AtomicBool, drain_limit: usize) {
    // The batch's buffers are taken at the first datagram: a listener that never receives holds none.
    wait_readable(fd, stop);
    let mut batch = Batch::new(sink.pool());
    let mut errors = 0u64;
    while !stop.load(Relaxed) {
        match batch.recv(fd, libc::MSG_WAITFORONE) {
            Ok(n) => {
                batch.deliver(n, &mut sink);
            }
            Err(e) if is_idle(&e) => {}
            Err(e) => count_error(&e, &mut errors),
        }
    }
    drain(fd, &mut batch, &mut sink, drain_limit, &mut errors);
}

/// Bytes the kernel charges a datagram's socket buffer beyond its data, roughly (its `sk_buff`): what
/// makes a socket of small datagrams fill long before its bytes reach `SO_RCVBUF`.
const DATAGRAM_OVERHEAD: usize = 1024;

/// [`run`], paced ([`Pacer`]): empty the socket without blocking; if that read little, sleep for the
/// pace (a flush's [`Pacer::sync`] cuts the sleep short) and empty it again; once it is found empty,
/// block until a datagram arrives. "Little" is less than a quarter of `rcvbuf` (the usable receive
/// buffer) counting [`DATAGRAM_OVERHEAD`] per datagram: a fuller socket is emptied again at once.
pub(crate) fn run_paced(
    fd: RawFd,
    mut sink: Sink,
    stop: &AtomicBool,
    drain_limit: usize,
    (pacer, me): (&Pacer, usize),
    rcvbuf: usize,
) {
    wait_readable(fd, stop);
    pacer.busy(me);
    let mut batch = Batch::new(sink.pool());
    let mut errors = 0u64;
    while !stop.load(Relaxed) {
        let asked = pacer.asked();
        let (bytes, datagrams) = drain(fd, &mut batch, &mut sink, drain_limit, &mut errors);
        if datagrams == 0 {
            pacer.answered(me, asked, true);
            wait_readable(fd, stop);
            pacer.busy(me);
            continue;
        }
        pacer.answered(me, asked, false);
        if (bytes + datagrams * DATAGRAM_OVERHEAD) * 4 < rcvbuf {
            pacer.sleep(asked);
        }
    }
    drain(fd, &mut batch, &mut sink, drain_limit, &mut errors);
    pacer.answered(me, u64::MAX, true);
}

/// Read what the socket holds without blocking, up to about `limit` bytes. Returns the bytes and
/// datagrams read.
fn drain(
    fd: RawFd,
    batch: &mut Batch,
    sink: &mut Sink,
    limit: usize,
    errors: &mut u64,
) -> (usize, usize) {
    let (mut bytes, mut datagrams) = (0, 0);
    while bytes < limit {
        match batch.recv(fd, libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => {
                bytes += batch.deliver(n, sink).max(1);
                datagrams += n;
                if n < BATCH {
                    // Fewer than asked for: the socket was emptied.
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_idle(&e) => break,
            Err(e) => {
                count_error(&e, errors);
                break;
            }
        }
    }
    (bytes, datagrams)
}

fn count_error(e: &io::Error, errors: &mut u64) {
    *errors += 1;
    if *errors == 1 || errors.is_power_of_two() {
        tracing::warn!(error = %e, errors = *errors, "receive failed");
    }
}

/// Block until `fd` has something to read (or an error to report), or `stop` is set, looking at `stop`
/// every [`READ_TIMEOUT`].
fn wait_readable(fd: RawFd, stop: &AtomicBool) {
    let timeout = libc::c_int::try_from(READ_TIMEOUT.as_millis()).unwrap_or(libc::c_int::MAX);
    while !stop.load(Relaxed) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that outlives the call, and its count.
        let rc = unsafe { libc::poll(&mut p, 1, timeout) };
        if rc > 0 || (rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted) {
            // Readable, or an error that the receive loop reports.
            return;
        }
    }
}

fn is_idle(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
