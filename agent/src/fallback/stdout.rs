//! The stdout sink: one writer thread owns the output, so a stdout nobody reads (a stuck log shipper, a
//! full pipe) never holds up a flush or the shutdown.
//!
//! ```text
//! Fallback::write_records ─push─> queue (≤ BUFFER_MAX_BYTES, oldest dropped) ─> writer thread ─write(2)─> stdout
//! Fallback::flush(deadline) ── waits until the thread has written what was queued, or the deadline
//! drop (shutdown) ── what is still queued or being written is counted as shutdown_deadline
//! ```
//!
//! * **Accounting.** The thread counts `points.fell_back` (and `fallback_records` / `fallback_bytes`) for
//!   each batch once `write` returned it whole, or `fallback_rejected` when the write failed (the reader
//!   went away: `EPIPE`). Records are counted exactly once: the batch being written is marked in flight
//!   under the same lock that [`StdoutSink`]'s drop takes to count what is left as
//!   `shutdown_deadline`, and whichever side comes second does not count it again. A batch abandoned
//!   that way may still reach stdout later, cut where the process exit found it (the only way a record
//!   line can be incomplete).
//! * **Bound.** Records wait in a queue of at most [`BUFFER_MAX_BYTES`]; past that the oldest are
//!   dropped and counted (`fallback_overflow`), as in the CloudWatch sink.
//! * **Stall.** While a write waits, the thread marks a [`Stall`] that `/health` reads: a write waiting
//!   longer than `STALL_LIMIT` makes offpath unhealthy with the reason.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::records::Record;
use crate::control::status::{Stall, unix_now};
use crate::forward::{Deadline, DestinationId};
use crate::telemetry::{PointDrop, Tally, Telemetry};

/// Bytes of records waiting for the writer at most (as the CloudWatch sink's buffer).
pub const BUFFER_MAX_BYTES: usize = 32 << 20;

/// Bytes the thread writes in one `write_all` at most (whole records; one larger record alone).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Records taken by the thread and not yet settled.
#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    records: u64,
    bytes: u64,
    /// Samples per destination.
    samples: Tally,
}

#[derive(Debug, Default)]
struct State {
    /// Records handed over and not yet taken by the thread, oldest first, with the destination whose
    /// copy they hold.
    queue: VecDeque<(DestinationId, Record)>,
    /// Bytes of `queue` (lines plus their newlines).
    queued_bytes: usize,
    /// The batch being written, until the thread settles it.
    in_flight: Option<InFlight>,
    /// Set by the sink's drop: the thread stops, and what was left is already counted.
    abandoned: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread when records arrive or the sink is dropped.
    work: Condvar,
    /// Wakes [`StdoutSink::flush`] when the thread settled a batch.
    settled: Notify,
    telemetry: Arc<Telemetry>,
    stall: Arc<Stall>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts, never broken invariants worth stopping for.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes record lines to stdout (or any writer) on its own thread; see the module documentation.
#[derive(Debug)]
pub(super) struct StdoutSink {
    shared: Arc<Shared>,
}

impl StdoutSink {
    /// Start the writer thread on `out`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub(super) fn start(
        out: Box<dyn Write + Send>,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            settled: Notify::new(),
            telemetry,
            stall: Arc::new(Stall::default()),
        });
        let thread_shared = Arc::clone(&shared);
        // Detached: a write that never returns must not hold the process at exit.
        std::thread::Builder::new()
            .name("offpath-stdout".into())
            .spawn(move || write_loop(&thread_shared, out))?;
        Ok(Self { shared })
    }

    /// The stall marker `/health` watches.
    pub(super) fn stall(&self) -> Arc<Stall> {
        Arc::clone(&self.shared.stall)
    }

    /// Hand records to the writer (never waits). Over [`BUFFER_MAX_BYTES`] the oldest waiting records
    /// are dropped and counted as `fallback_overflow`.
    #[cfg(test)]
    pub(super) fn push(&self, records: &mut Vec<Record>) {
        self.push_for(records, DestinationId::MAIN);
    }

    /// [`StdoutSink::push`] of records that hold `dest`'s copy.
    pub(super) fn push_for(&self, records: &mut Vec<Record>, dest: DestinationId) {
        if records.is_empty() {
            return;
        }
        let mut dropped = Tally::default();
        {
            let mut st = self.shared.lock();
            for r in records.drain(..) {
                st.queued_bytes += r.line.len() + 1;
                st.queue.push_back((dest, r));
            }
            while st.queued_bytes > BUFFER_MAX_BYTES && st.queue.len() > 1 {
                if let Some((d, old)) = st.queue.pop_front() {
                    st.queued_bytes -= old.line.len() + 1;
                    dropped.add(d, old.samples);
                }
            }
        }
        self.shared.work.notify_one();
        self.shared
            .telemetry
            .drop_tally(PointDrop::FallbackOverflow, &dropped);
    }

    /// Wait until the writer has settled everything handed over, or `deadline`; what is not written by
    /// then stays queued.
    pub(super) async fn flush(&self, deadline: &Deadline) {
        loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.queue.is_empty() && st.in_flight.is_none() {
                    return;
                }
            }
            if deadline.bound(settled).await.is_none() {
                return;
            }
        }
    }
}

impl Drop for StdoutSink {
    /// Stop the writer: what is still queued or being written is counted as `shutdown_deadline`.
    fn drop(&mut self) {
        let lost = {
            let mut st = self.shared.lock();
            st.abandoned = true;
            let mut lost = Tally::default();
            for (d, r) in st.queue.drain(..) {
                lost.add(d, r.samples);
            }
            st.queued_bytes = 0;
            if let Some(f) = st.in_flight.take() {
                lost.merge(&f.samples);
            }
            lost
        };
        self.shared.work.notify_one();
        self.shared
            .telemetry
            .drop_tally(PointDrop::ShutdownDeadline, &lost);
    }
}

/// The writer thread: take whole records up to [`WRITE_BATCH_BYTES`], write them, settle them.
fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut failures = 0u64;
    loop {
        let batch = {
            let mut st = shared.lock();
            while st.queue.is_empty() && !st.abandoned {
                st = shared
                    .work
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if st.abandoned {
                return;
            }
            buf.clear();
            let mut batch = InFlight::default();
            while let Some((_, r)) = st.queue.front() {
                if !buf.is_empty() && buf.len() + r.line.len() + 1 > WRITE_BATCH_BYTES {
                    break;
                }
                let Some((d, r)) = st.queue.pop_front() else {
                    break;
                };
                buf.extend_from_slice(r.line.as_bytes());
                buf.push(b'\n');
                st.queued_bytes -= r.line.len() + 1;
                batch.records += 1;
                batch.bytes += r.line.len() as u64 + 1;
                batch.samples.add(d, r.samples);
            }
            st.in_flight = Some(batch);
            batch
        };
        shared.stall.begin(unix_now());
        let result = out.write_all(&buf).and_then(|()| out.flush());
        shared.stall.end();
        {
            let mut st = shared.lock();
            if st.in_flight.take().is_none() {
                // The sink was dropped meanwhile and counted this batch as shutdown_deadline.
                return;
            }
            let t = &shared.telemetry;
            match &result {
                Ok(()) => {
                    t.fell_back(&batch.samples);
                    t.forward.fallback_records.fetch_add(batch.records, Relaxed);
                    t.forward.fallback_bytes.fetch_add(batch.bytes, Relaxed);
                }
                Err(_) => t.drop_tally(PointDrop::FallbackRejected, &batch.samples),
            }
        }
        if let Err(e) = result {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(error = %e, failures, "cannot write fallback records to stdout; they are dropped");
            }
        }
        shared.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    /// A writer whose every write blocks until the test lets it go.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cv.wait(o).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(line: &str, samples: u64) -> Record {
        Record {
            ts: 1,
            line: line.to_owned(),
            samples,
        }
    }

    #[tokio::test]
    async fn records_are_written_and_counted_once_the_writer_took_them() {
        let t = Arc::new(Telemetry::default());
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let sink = StdoutSink::start(
            Box::new(Gate(Arc::clone(&gate), Arc::clone(&out))),
            Arc::clone(&t),
        )
        .unwrap();
        sink.push(&mut vec![record("{\"a\":1}", 2), record("{\"b\":2}", 3)]);
        sink.flush(&Deadline::from(Instant::now() + Duration::from_secs(10)))
            .await;
        assert_eq!(out.lock().unwrap().as_slice(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(t.points.fell_back.load(Relaxed), 5);
        assert_eq!(t.forward.fallback_records.load(Relaxed), 2);
        assert_eq!(t.forward.fallback_bytes.load(Relaxed), 16);
    }

    #[tokio::test]
    async fn a_blocked_writer_holds_nobody_and_what_it_did_not_write_is_counted_at_drop() {
        let t = Arc::new(Telemetry::default());
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = StdoutSink::start(
            Box::new(Gate(Arc::clone(&gate), Arc::default())),
            Arc::clone(&t),
        )
        .unwrap();
        let stall = sink.stall();
        sink.push(&mut vec![record("x", 4)]);
        // The thread takes the record and blocks in `write`.
        while stall.waited(unix_now()).is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.push(&mut vec![record("y", 6)]);
        let started = Instant::now();
        sink.flush(&Deadline::from(started + Duration::from_millis(50)))
            .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(sink);
        assert_eq!(t.points.dropped_total(), 10);
        assert_eq!(
            t.points.dropped[PointDrop::ShutdownDeadline as usize].load(Relaxed),
            10
        );
        // Released now, the thread finds its batch already counted and counts nothing.
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.points.fell_back.load(Relaxed), 0);
    }

    #[test]
    fn past_the_buffer_bound_the_oldest_records_give_way() {
        let t = Arc::new(Telemetry::default());
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = StdoutSink::start(
            Box::new(Gate(Arc::clone(&gate), Arc::default())),
            Arc::clone(&t),
        )
        .unwrap();
        let big = "z".repeat(BUFFER_MAX_BYTES / 3);
        for _ in 0..5 {
            sink.push(&mut vec![record(&big, 1)]);
        }
        // One may be in flight; the queue holds at most the bound.
        assert!(sink.shared.lock().queued_bytes <= BUFFER_MAX_BYTES);
        assert!(t.points.dropped[PointDrop::FallbackOverflow as usize].load(Relaxed) >= 1);
        drop(sink);
        assert_eq!(t.points.dropped_total(), 5);
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}
