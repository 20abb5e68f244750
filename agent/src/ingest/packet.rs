//! Pooled packet buffers and the per-thread sink that fills them and hands them to the queue.
//!
//! Every buffer is exactly `DD_DOGSTATSD_BUFFER_SIZE` bytes. The free list is a bounded crossbeam
//! channel: a [`Packet`] puts its buffer back when it drops, and a receive loop takes one when it needs
//! one. When the free list is empty the loop allocates a new buffer rather than drop data, and when the
//! free list is full a returned buffer is freed. So the buffers alive at once are bounded by what can be
//! held at once: the packet queue (`DD_DOGSTATSD_QUEUE_SIZE`), each receive loop's batch, and what the
//! consumer holds. Buffers are allocated uninitialized ([`Buf`]): zeroing them would touch every page
//! (glibc's `calloc` clears reused heap memory), so a receive batch waiting on an idle socket would cost
//! its full size in RSS; untouched, only the pages a datagram reached cost memory.
//!
//! With several aggregate workers there is one queue per worker and the sink splits every datagram by
//! metric name and tag set ([`Route`]); a packet dropped on a full queue then counts the datagrams
//! it held lines of, so `queue_full` counts datagram parts.

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use memchr::memchr;

use super::route::Route;

use crate::telemetry::{ListenerStats, PacketDrop};

/// A fixed-size byte buffer allocated without zeroing; only what is written into it is ever read.
///
/// The receive loops hand its pointer to the kernel (`recvmmsg`) and then read the prefix the kernel
/// reported written; [`Sink`] writes copies into it. Reads go through [`Buf::prefix`], whose caller
/// vouches that the prefix was written.
#[derive(Default)]
pub(crate) struct Buf(Box<[MaybeUninit<u8>]>);

impl Buf {
    /// A buffer of `size` bytes; its pages are not touched.
    pub(crate) fn new(size: usize) -> Buf {
        Buf(Box::new_uninit_slice(size))
    }

    /// Its size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The start of the buffer, for the kernel to write into.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }

    /// Copy `data` to `at..at + data.len()`; false (nothing written) when it does not fit.
    pub(crate) fn write_at(&mut self, at: usize, data: &[u8]) -> bool {
        let Some(dst) = at
            .checked_add(data.len())
            .and_then(|end| self.0.get_mut(at..end))
        else {
            return false;
        };
        // SAFETY: `dst` is exactly `data.len()` bytes of this buffer, which `data` (a shared borrow)
        // cannot overlap while `self` is borrowed mutably; u8 and MaybeUninit<u8> have one layout.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst.as_mut_ptr().cast(), data.len())
        };
        true
    }

    /// The first `len` bytes (at most the buffer).
    ///
    /// # Safety
    /// Those bytes were written: by [`Buf::write_at`], or by the kernel into [`Buf::as_mut_ptr`].
    pub(crate) unsafe fn prefix(&self, len: usize) -> &[u8] {
        let len = len.min(self.0.len());
        // SAFETY: `len` is within the buffer and the caller vouches that those bytes are initialized.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), len) }
    }
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.0.len())
    }
}

/// One packet of DogStatsD text: one or more datagrams or stream frames, joined by `\n`.
///
/// Its buffer returns to the listeners' pool when the packet drops.
pub struct Packet {
    /// A pooled buffer (or a private one, see [`Packet::copy_from`]); `data` is its first `len` bytes.
    buf: Buf,
    /// Bytes of `buf` in use, all written (the invariant every constructor keeps).
    len: usize,
    /// Datagrams or frames joined into this packet, so a dropped packet is counted as what it held.
    datagrams: u32,
    /// Where the buffer goes back to; `None` for packets not built by a listener.
    pool: Option<Arc<Pool>>,
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Packet {
    /// The packet's bytes: DogStatsD lines separated by `\n` (the last one may lack it).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of `buf` are written (the field's invariant).
        unsafe { self.buf.prefix(self.len) }
    }

    /// A packet holding a copy of `data`, outside any pool (for in-process producers and tests).
    pub fn copy_from(data: &[u8]) -> Packet {
        let mut buf = Buf::new(data.len());
        let len = if buf.write_at(0, data) { data.len() } else { 0 };
        Packet {
            buf,
            len,
            datagrams: 1,
            pool: None,
        }
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.put(std::mem::take(&mut self.buf));
        }
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.len)
            .field("datagrams", &self.datagrams)
            .field("data", &String::from_utf8_lossy(self.data()))
            .finish()
    }
}

/// A bounded free list of equal-sized buffers.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Returned buffers go in here (`try_send`: a full free list frees the buffer).
    back: Sender<Buf>,
    /// Buffers are taken from here (`try_recv`: an empty free list allocates).
    free: Receiver<Buf>,
    /// `DD_DOGSTATSD_BUFFER_SIZE`.
    buf_size: usize,
}

impl Pool {
    /// A pool of `buf_size`-byte buffers keeping at most `capacity` free ones.
    pub(crate) fn new(buf_size: usize, capacity: usize) -> Arc<Pool> {
        let (back, free) = crossbeam_channel::bounded(capacity.max(1));
        Arc::new(Pool {
            back,
            free,
            buf_size,
        })
    }

    /// The size of every buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// A free buffer, or a new (unwritten) one when none is free.
    pub(crate) fn get(&self) -> Buf {
        self.free
            .try_recv()
            .unwrap_or_else(|_| Buf::new(self.buf_size))
    }

    /// Give a buffer back; freed if the free list is full.
    pub(crate) fn put(&self, buf: Buf) {
        if buf.len() == self.buf_size {
            let _ = self.back.try_send(buf);
        }
    }

    /// Free half the buffers waiting in the free list; returns how many were freed.
    ///
    /// The free list keeps up to a full queue of buffers so that a burst never allocates, but a burst (a
    /// backlog while a worker flushed, or while the sender had the CPU) leaves them all resident. Called
    /// once per flush period, this lets what bursts do not use drain away (1,100 buffers are under 64
    /// after six periods) while a burst that recurs every period allocates at most half of it again.
    pub(crate) fn trim(&self) -> usize {
        let surplus = self.free.len() / 2;
        self.free.try_iter().take(surplus).count()
    }

    /// Buffers waiting in the free list.
    #[cfg(test)]
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }
}

/// What one receive loop writes into: joins small datagrams into pooled packets, sends them with
/// `try_send` (a full queue drops the packet and counts it) and counts per batch.
///
/// A sink made [`Sink::waiting`] (the Unix listeners) waits instead for room in a full queue, up to its
/// wait; while it waits its thread reads nothing, so the socket fills and the kernel makes the client
/// wait (a blocking Unix client blocks, a non-blocking one sees `EAGAIN`). A wait that times out drops
/// and counts the packet, and that queue is then *stalled*: later packets for it are dropped at once
/// (counted) until it takes one again, so a stuck worker costs one wait, not one per packet.
///
/// With one queue, datagrams go whole. With several (one per aggregate worker), every datagram is split
/// into lines, each line copied to the open packet of its queue ([`Route`]): consecutive lines of one
/// queue in one copy.
#[derive(Debug)]
pub(crate) struct Sink {
    /// One per aggregate worker (at least one).
    queues: Vec<Sender<Packet>>,
    /// Which queue each line goes to (with several).
    route: Route,
    pool: Arc<Pool>,
    stats: Arc<ListenerStats>,
    /// The packet being filled for each queue, sent by [`Sink::flush`].
    open: Vec<Option<Packet>>,
    /// Per queue, the datagram that last added lines to its open packet (see `datagram`).
    last_datagram: Vec<u64>,
    /// Numbers the datagrams split over several queues, so each packet counts the datagrams it holds
    /// lines of.
    datagram: u64,
    /// Counted locally, added to `stats` once per batch by [`Sink::commit`].
    packets: u64,
    bytes: u64,
    queue_full: u64,
    truncated: u64,
    oversize: u64,
    /// Whether a disconnected queue was already logged.
    warned_disconnected: bool,
    /// How long a full queue is waited for before the packet is dropped; `None` drops at once (UDP).
    wait: Option<Duration>,
    /// Per queue: a wait timed out and no packet has been taken since (see [`Sink::waiting`]).
    stalled: Vec<bool>,
}

impl Sink {
    pub(crate) fn new(
        queues: Vec<Sender<Packet>>,
        pool: Arc<Pool>,
        stats: Arc<ListenerStats>,
    ) -> Sink {
        let n = queues.len();
        Sink {
            queues,
            route: Route::default(),
            pool,
            stats,
            open: (0..n).map(|_| None).collect(),
            last_datagram: vec![0; n],
            datagram: 0,
            packets: 0,
            bytes: 0,
            queue_full: 0,
            truncated: 0,
            oversize: 0,
            warned_disconnected: false,
            wait: None,
            stalled: vec![false; n],
        }
    }

    /// Route lines with `route` (the default knows no global tags).
    pub(crate) fn with_route(mut self, route: Route) -> Sink {
        self.route = route;
        self
    }

    /// This sink waits up to `wait` for room in a full queue before it drops (bounded back-pressure,
    /// for the Unix listeners), instead of dropping at once.
    pub(crate) fn waiting(mut self, wait: Duration) -> Sink {
        self.wait = Some(wait);
        self
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Count datagrams or frames read from the socket and their bytes (delivered or not).
    pub(crate) fn received(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
    }

    /// Count a datagram larger than the buffer (read cut short by the kernel, never forwarded).
    pub(crate) fn truncated(&mut self) {
        self.truncated += 1;
    }

    /// Count a stream frame larger than the buffer (its connection is closed).
    pub(crate) fn oversize_frame(&mut self) {
        self.oversize += 1;
    }

    /// With one queue: append `data` to the open packet (after a `\n`) if it fits there. With several:
    /// copy each line of `data` to its queue's open packet, opening new ones as needed; always true.
    pub(crate) fn append(&mut self, data: &[u8]) -> bool {
        if self.queues.len() > 1 {
            self.split(data);
            return true;
        }
        let Some(Some(open)) = self.open.first_mut() else {
            return false;
        };
        append_to(open, data)
    }

    /// Send the open packet and make `buf` (whose first `len` bytes are one datagram) the open one.
    /// With several queues the datagram is split instead and `buf` goes back to the pool.
    ///
    /// # Safety
    /// The first `len` bytes of `buf` (or all of it, if shorter) were written.
    pub(crate) unsafe fn open_with(&mut self, buf: Buf, len: usize) {
        if self.queues.len() > 1 {
            // SAFETY: the caller vouches that the first `len` bytes were written.
            let data = unsafe { buf.prefix(len) };
            self.split(data);
            self.pool.put(buf);
            return;
        }
        self.flush();
        match self.open.first_mut() {
            Some(slot) => {
                *slot = Some(Packet {
                    len: len.min(buf.len()),
                    buf,
                    datagrams: 1,
                    pool: Some(Arc::clone(&self.pool)),
                });
            }
            // No queue at all: nowhere to go.
            None => {
                self.queue_full += 1;
                self.pool.put(buf);
            }
        }
    }

    /// Add a copy of `data` (at most one buffer long): to the open packet if it fits, else to a new one.
    pub(crate) fn push_copy(&mut self, data: &[u8]) {
        if self.append(data) {
            return;
        }
        let mut buf = self.pool.get();
        let data = data.get(..buf.len()).unwrap_or(data);
        let len = if buf.write_at(0, data) { data.len() } else { 0 };
        // SAFETY: `write_at` wrote the first `len` bytes (none when it failed).
        unsafe { self.open_with(buf, len) };
    }

    /// Route the lines of one datagram or frame (at most one buffer long) to the queues' open packets.
    fn split(&mut self, data: &[u8]) {
        self.datagram += 1;
        let n = self.queues.len();
        // The run of consecutive lines going to one queue: `data[start..end]`.
        let (mut run_queue, mut start, mut end) = (0, 0, 0);
        let mut pos = 0;
        while pos < data.len() {
            let line_end = memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i);
            let line = &data[pos..line_end];
            if !line.is_empty() {
                let q = self.route.shard(line, n);
                if q != run_queue || start == end {
                    if start < end {
                        self.put(run_queue, &data[start..end]);
                    }
                    (run_queue, start) = (q, pos);
                }
                end = line_end;
            }
            pos = line_end + 1;
        }
        if start < end {
            self.put(run_queue, &data[start..end]);
        }
    }

    /// Append `lines` (at most one buffer long) to queue `q`'s open packet, or send that packet and
    /// open a new one when they do not fit.
    fn put(&mut self, q: usize, lines: &[u8]) {
        let datagram = self.datagram;
        let (Some(slot), Some(last)) = (self.open.get_mut(q), self.last_datagram.get_mut(q)) else {
            return;
        };
        if let Some(open) = slot {
            let datagrams = open.datagrams;
            if append_to(open, lines) {
                // `append_to` counted one more datagram; count it once per datagram.
                if *last == datagram {
                    open.datagrams = datagrams;
                }
                *last = datagram;
                return;
            }
        }
        let mut buf = self.pool.get();
        let lines = lines.get(..buf.len()).unwrap_or(lines);
        let len = if buf.write_at(0, lines) {
            lines.len()
        } else {
            0
        };
        let full = slot.replace(Packet {
            len,
            buf,
            datagrams: 1,
            pool: Some(Arc::clone(&self.pool)),
        });
        *last = datagram;
        if let Some(p) = full {
            self.send(q, p);
        }
    }

    /// Send every open packet with `try_send`; a full queue drops it and counts what it held.
    pub(crate) fn flush(&mut self) {
        for q in 0..self.open.len() {
            if let Some(packet) = self.open.get_mut(q).and_then(Option::take) {
                self.send(q, packet);
            }
        }
    }

    fn send(&mut self, q: usize, packet: Packet) {
        let Some(queue) = self.queues.get(q) else {
            self.queue_full += u64::from(packet.datagrams);
            return;
        };
        let stalled = self.stalled.get_mut(q);
        let sent = match (queue.try_send(packet), self.wait) {
            (Err(TrySendError::Full(p)), Some(wait)) if stalled.as_deref() == Some(&false) => {
                match queue.send_timeout(p, wait) {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Timeout(p)) => {
                        if let Some(s) = stalled {
                            *s = true;
                        }
                        tracing::debug!(
                            listener = %self.stats.name,
                            ?wait,
                            "an aggregate worker's queue stayed full; dropping until it takes packets again"
                        );
                        Err(TrySendError::Full(p))
                    }
                    Err(SendTimeoutError::Disconnected(p)) => Err(TrySendError::Disconnected(p)),
                }
            }
            (r, _) => r,
        };
        if let Some(s) = self.stalled.get_mut(q).filter(|_| sent.is_ok()) {
            *s = false;
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => self.queue_full += u64::from(p.datagrams),
            Err(TrySendError::Disconnected(p)) => {
                self.queue_full += u64::from(p.datagrams);
                if !self.warned_disconnected {
                    self.warned_disconnected = true;
                    tracing::warn!(
                        listener = %self.stats.name,
                        "the packet queue is closed; packets are dropped and counted as queue_full"
                    );
                }
            }
        }
    }

    /// Add this batch's counts to the listener's counters and send the open packets (so what was read
    /// is counted before the consumer can see it).
    pub(crate) fn commit(&mut self) {
        let s = &self.stats;
        for (n, add) in [(&mut self.packets, &s.packets), (&mut self.bytes, &s.bytes)] {
            if *n > 0 {
                add.fetch_add(std::mem::take(n), Relaxed);
            }
        }
        for (n, reason) in [
            (&mut self.truncated, PacketDrop::Truncated),
            (&mut self.oversize, PacketDrop::OversizeFrame),
        ] {
            if *n > 0 {
                s.drop_packet(reason, std::mem::take(n));
            }
        }
        self.flush();
        if self.queue_full > 0 {
            self.stats
                .drop_packet(PacketDrop::QueueFull, std::mem::take(&mut self.queue_full));
        }
    }
}

/// Append `data` to `open` (after a `\n`) if it fits, counting one more datagram.
fn append_to(open: &mut Packet, data: &[u8]) -> bool {
    let sep = usize::from(open.data().last().is_some_and(|&b| b != b'\n'));
    let start = open.len + sep;
    if start + data.len() > open.buf.len() {
        return false;
    }
    if !(open.buf.write_at(open.len, &b"\n"[..sep]) && open.buf.write_at(start, data)) {
        return false;
    }
    open.len = start + data.len();
    open.datagrams += 1;
    true
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(queue_size: usize, buf_size: usize) -> (Sink, Receiver<Packet>, Arc<ListenerStats>) {
        let (tx, rx) = crossbeam_channel::bounded(queue_size);
        let stats = Arc::new(ListenerStats::default());
        let pool = Pool::new(buf_size, 4);
        (Sink::new(vec![tx], pool, Arc::clone(&stats)), rx, stats)
    }

    #[test]
    fn a_dropped_packet_returns_its_buffer_to_the_pool() {
        let (mut s, rx, _) = sink(4, 16);
        s.push_copy(b"a:1|c");
        s.commit();
        assert_eq!(s.pool().free_len(), 0);
        let p = rx.try_recv().unwrap();
        assert_eq!(p.data(), b"a:1|c");
        drop(p);
        assert_eq!(s.pool().free_len(), 1);
        let buf = s.pool().get();
        assert_eq!(buf.len(), 16);
        assert_eq!(s.pool().free_len(), 0);
    }

    #[test]
    fn trimming_frees_half_the_free_buffers_and_the_pool_still_serves() {
        let pool = Pool::new(16, 100);
        let bufs: Vec<Buf> = (0..40).map(|_| pool.get()).collect();
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.free_len(), 40);
        assert_eq!(pool.trim(), 20);
        assert_eq!(pool.free_len(), 20);
        while pool.trim() > 0 {}
        assert_eq!(pool.free_len(), 1, "one buffer is never freed by halving");
        assert_eq!(pool.get().len(), 16);
        assert_eq!(pool.get().len(), 16, "an empty free list allocates");
    }

    #[test]
    fn a_full_free_list_frees_returned_buffers() {
        let pool = Pool::new(8, 2);
        for _ in 0..5 {
            pool.put(Buf::new(8));
        }
        assert_eq!(pool.free_len(), 2);
        pool.put(Buf::new(3));
        assert_eq!(pool.free_len(), 2);
    }

    #[test]
    fn small_datagrams_are_joined_by_newlines_up_to_the_buffer_size() {
        let (mut s, rx, stats) = sink(8, 12);
        for d in [&b"a:1|c"[..], b"b:2|c\n", b"c:3|c", b"dddddddddddd"] {
            s.received(1, d.len() as u64);
            s.push_copy(d);
        }
        s.commit();
        let got: Vec<Vec<u8>> = rx.try_iter().map(|p| p.data().to_vec()).collect();
        assert_eq!(got, [&b"a:1|c\nb:2|c\n"[..], b"c:3|c", b"dddddddddddd"]);
        assert_eq!(stats.packets.load(Relaxed), 4);
        assert_eq!(stats.bytes.load(Relaxed), 28);
    }

    #[test]
    fn a_full_queue_drops_and_counts_every_datagram_of_the_packet() {
        let (mut s, rx, stats) = sink(1, 64);
        s.push_copy(b"a:1|c");
        s.commit();
        s.push_copy(b"b:1|c");
        s.push_copy(b"c:1|c");
        s.commit();
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(
            stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed),
            2
        );
    }

    #[test]
    fn without_a_queue_every_datagram_is_counted_as_queue_full() {
        let stats = Arc::new(ListenerStats::default());
        let mut s = Sink::new(Vec::new(), Pool::new(16, 4), Arc::clone(&stats));
        s.push_copy(b"a:1|c");
        s.push_copy(b"b:1|c");
        s.commit();
        assert_eq!(
            stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed),
            2
        );
    }

    #[test]
    fn a_waiting_sink_waits_for_room_in_a_full_queue_and_loses_nothing() {
        let (s, rx, stats) = sink(1, 8);
        let mut s = s.waiting(Duration::from_secs(30));
        let n = 2000;
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(p) = rx.recv() {
                got.push(p.data().to_vec());
            }
            got
        });
        for i in 0..n {
            // 8-byte buffers: every datagram is a packet of its own.
            s.push_copy(format!("m:{}|c", i % 10).as_bytes());
            s.commit();
        }
        drop(s);
        let got = consumer.join().unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got[n - 1], b"m:9|c");
        assert_eq!(
            stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed),
            0
        );
    }

    #[test]
    fn a_waiting_sink_on_a_stuck_queue_waits_once_then_drops_at_once_until_the_queue_takes_again() {
        let (s, rx, stats) = sink(1, 8);
        let mut s = s.waiting(Duration::from_millis(20));
        let full =
            |stats: &ListenerStats| stats.dropped[PacketDrop::QueueFull as usize].load(Relaxed);
        s.push_copy(b"a:1|c");
        s.commit();
        assert_eq!(s.stalled, [false], "queued without waiting");
        s.push_copy(b"b:1|c");
        s.commit();
        assert_eq!(full(&stats), 1, "dropped after the wait");
        assert_eq!(s.stalled, [true]);
        s.push_copy(b"c:1|c");
        s.commit();
        assert_eq!(full(&stats), 2, "dropped at once while stalled");
        assert_eq!(rx.try_recv().unwrap().data(), b"a:1|c");
        s.push_copy(b"d:1|c");
        s.commit();
        assert_eq!(s.stalled, [false], "the queue took a packet: waiting again");
        assert_eq!(rx.try_recv().unwrap().data(), b"d:1|c");
        assert_eq!(full(&stats), 2);
    }

    #[test]
    fn packets_copied_from_a_slice_hold_it() {
        let p = Packet::copy_from(b"x:1|g");
        assert_eq!(p.data(), b"x:1|g");
    }
}
