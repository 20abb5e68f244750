//! The aggregation threads: packets from the ingest queues in, flushes out on request.
//!
//! [`Workers`] runs one [`Aggregator`] per thread, each with its own bounded packet queue. The listeners
//! route every line by metric name and tag set ([`Route`]), so each context lives in exactly one worker and a flush is the concatenation of the workers' flushes, equal to what one aggregator fed
//! the same stream would emit (series in another order).

use std::sync::Arc;
use std::sync::atomic::Ordering::Release;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use tokio::sync::oneshot;

use super::{Aggregator, OwnPoint};
use crate::ingest::Route;
use crate::model::Flush;
use crate::telemetry::{PointDrop, Telemetry};

/// Flush requests waiting for one worker.
const CONTROL_QUEUE: usize = 4;
/// Batches of [`OwnPoint`]s waiting for one worker (the Lambda extension sends a few per invocation).
const OWN_QUEUE: usize = 64;

/// A request to the aggregation thread.
#[derive(Debug)]
pub enum Control {
    /// Flush closed buckets (every bucket when `final_flush`) and send the result back.
    Flush {
        /// Also flush the open bucket (shutdown, or an explicit request).
        final_flush: bool,
        /// Where the [`Flush`] goes; if the receiver is gone, its points are counted as
        /// [`PointDrop::ShutdownDeadline`].
        reply: tokio::sync::oneshot::Sender<Flush>,
    },
}

/// Run `agg` on a new thread: insert every packet from `packets` at `clock()` (unix seconds) and answer
/// [`Control`] messages.
///
/// Before a flush the thread first inserts the packets already queued at that moment, so a final flush sent
/// after the listeners stopped covers everything they read. The thread keeps serving `control` after
/// `packets` disconnects, and returns when `control` disconnects. `P` is the ingest queue's
/// [`Packet`](crate::ingest::Packet) (returned to its pool once inserted), or any byte buffer in tests.
pub fn spawn_worker<P>(
    agg: Aggregator,
    packets: Receiver<P>,
    control: Receiver<Control>,
    clock: fn() -> i64,
) -> std::thread::JoinHandle<()>
where
    P: AsRef<[u8]> + Send + 'static,
{
    std::thread::spawn(move || serve(agg, packets, crossbeam_channel::never(), control, clock))
}

/// The worker loop of [`spawn_worker`]; `own` brings [`OwnPoint`]s.
fn serve<P: AsRef<[u8]>>(
    mut agg: Aggregator,
    packets: Receiver<P>,
    own: Receiver<Vec<OwnPoint>>,
    control: Receiver<Control>,
    clock: fn() -> i64,
) {
    let mut packets = Some(packets);
    let mut own = Some(own);
    loop {
        let never = crossbeam_channel::never();
        let never_own = crossbeam_channel::never();
        let queue = packets.as_ref().unwrap_or(&never);
        let own_queue = own.as_ref().unwrap_or(&never_own);
        select! {
            recv(queue) -> packet => match packet {
                Ok(p) => agg.insert_packet(p.as_ref(), clock()),
                Err(_) => packets = None,
            },
            recv(own_queue) -> points => match points {
                Ok(points) => points.iter().for_each(|p| agg.insert_own(p)),
                Err(_) => own = None,
            },
            recv(control) -> msg => match msg {
                Ok(Control::Flush { final_flush, reply }) => {
                    if let Some(queue) = &packets {
                        for p in queue.try_iter().take(queue.len()) {
                            agg.insert_packet(p.as_ref(), clock());
                        }
                    }
                    if let Some(queue) = &own {
                        for points in queue.try_iter().take(queue.len()) {
                            points.iter().for_each(|p| agg.insert_own(p));
                        }
                    }
                    let flush = agg.flush(clock(), final_flush);
                    if let Err(lost) = reply.send(flush) {
                        agg.count_lost(lost.samples(), PointDrop::ShutdownDeadline);
                    }
                }
                Err(_) => return,
            },
        }
    }
}

/// Why the aggregate workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The system refused a thread.
    #[error("cannot start an aggregate worker thread (OFFPATH_AGGREGATE_WORKERS)")]
    Thread(#[source] std::io::Error),
}

/// What the workers answered to one flush request.
#[derive(Debug, Default)]
pub struct Collected {
    /// The answers merged (their series, sketches, events and service checks one after the other).
    pub flush: Flush,
    /// Workers that answered.
    pub answered: usize,
    /// Workers asked.
    pub asked: usize,
}

/// The aggregate worker threads, one [`Aggregator`] and one packet queue each.
///
/// Dropping it lets the threads end on their own once their queues are drained; [`Workers::join`] waits
/// for them.
#[derive(Debug)]
pub struct Workers {
    /// How lines and [`OwnPoint`]s are spread over the workers.
    route: Route,
    controls: Vec<Sender<Control>>,
    own: Vec<Sender<Vec<OwnPoint>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Start one thread per aggregator (see [`Aggregator::sharded`]), each reading its own bounded queue
    /// of `queue_size` packets. Returns the workers and the queues' senders, in shard order (for
    /// [`Listeners::start_sharded`](crate::ingest::Listeners::start_sharded)).
    ///
    /// Each worker gets the whole `queue_size` rather than a share: a receive thread splits what it read
    /// into one packet per worker, so with small batches each packet holds 1/n of the lines, and a share
    /// of the slots would hold 1/n of the lines one queue holds. Packets queued in all are bounded by
    /// `n × queue_size`.
    ///
    /// # Errors
    /// [`WorkerError::Thread`] when a thread cannot be started; those already started end.
    pub fn start<P>(
        aggregators: Vec<Aggregator>,
        queue_size: usize,
        clock: fn() -> i64,
    ) -> Result<(Workers, Vec<Sender<P>>), WorkerError>
    where
        P: AsRef<[u8]> + Send + 'static,
    {
        let mut workers = Workers {
            route: aggregators
                .first()
                .map(Aggregator::route)
                .unwrap_or_default(),
            controls: Vec::with_capacity(aggregators.len()),
            own: Vec::with_capacity(aggregators.len()),
            threads: Vec::with_capacity(aggregators.len()),
        };
        let mut queues = Vec::with_capacity(aggregators.len());
        for (i, agg) in aggregators.into_iter().enumerate() {
            let (packet_tx, packet_rx) = crossbeam_channel::bounded(queue_size.max(1));
            let (own_tx, own_rx) = crossbeam_channel::bounded(OWN_QUEUE);
            let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("offpath-aggregate-{i}"))
                .spawn(move || serve(agg, packet_rx, own_rx, control_rx, clock))
                .map_err(WorkerError::Thread)?;
            workers.controls.push(control_tx);
            workers.own.push(own_tx);
            workers.threads.push(thread);
            queues.push(packet_tx);
        }
        Ok((workers, queues))
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.controls.len()
    }

    /// Where each line goes: what the listeners feeding these workers must split by
    /// ([`Listeners::start_sharded`](crate::ingest::Listeners::start_sharded)).
    pub fn route(&self) -> Route {
        self.route.clone()
    }

    /// A handle that adds [`OwnPoint`]s to these workers; `telemetry` counts what it has to drop.
    pub fn own_points(&self, telemetry: Arc<Telemetry>) -> OwnPoints {
        OwnPoints {
            route: self.route.clone(),
            queues: self.own.clone(),
            telemetry,
        }
    }

    /// Ask every worker for a flush ([`Control::Flush`]: each first inserts what its queue holds) and
    /// merge the answers that arrive by `deadline`. A worker that is busy, gone or late is logged and left
    /// out (its points are counted as [`PointDrop::ShutdownDeadline`] when it answers too late).
    pub async fn flush(&self, final_flush: bool, deadline: tokio::time::Instant) -> Collected {
        let mut pending = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            let (reply, rx) = oneshot::channel();
            if control
                .try_send(Control::Flush { final_flush, reply })
                .is_ok()
            {
                pending.push(rx);
            } else {
                tracing::warn!("an aggregate worker is busy or gone; its flush is skipped");
            }
        }
        let mut out = Collected {
            asked: self.controls.len(),
            ..Collected::default()
        };
        for mut rx in pending {
            let answer = match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(Ok(flush)) => Some(flush),
                Ok(Err(_)) => {
                    tracing::error!("an aggregate worker thread stopped");
                    None
                }
                Err(_) => {
                    // Close first, so an answer sent just now is taken here rather than lost.
                    rx.close();
                    let late = rx.try_recv().ok();
                    if late.is_none() {
                        tracing::warn!(
                            "an aggregate worker did not answer the flush before the deadline"
                        );
                    }
                    late
                }
            };
            if let Some(flush) = answer {
                merge(&mut out.flush, flush);
                out.answered += 1;
            }
        }
        out
    }

    /// Close the control channels and wait for every thread to end (blocking).
    pub fn join(self) {
        drop(self.controls);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("an aggregate worker thread panicked");
            }
        }
    }
}

/// Adds [`OwnPoint`]s to the aggregate workers, each to the worker of its context (as a received line would go),
/// without waiting: usable from async code, and while the engine is flushing. The workers insert queued points
/// before they answer a flush. Points that find a worker's queue full, or the workers stopped, are counted as
/// received and dropped ([`PointDrop::OwnQueueFull`], [`PointDrop::ShutdownDeadline`]). Holding a handle does
/// not keep the workers running.
#[derive(Debug, Clone)]
pub struct OwnPoints {
    route: Route,
    queues: Vec<Sender<Vec<OwnPoint>>>,
    telemetry: Arc<Telemetry>,
}

impl OwnPoints {
    /// Queue `points` for aggregation.
    pub fn send(&self, points: Vec<OwnPoint>) {
        if points.is_empty() {
            return;
        }
        let n = self.queues.len();
        if n <= 1 {
            if let Some(queue) = self.queues.first() {
                self.send_to(queue, points);
            }
            return;
        }
        let mut shards: Vec<Vec<OwnPoint>> = (0..n).map(|_| Vec::new()).collect();
        for p in points {
            let shard = self
                .route
                .shard_of_parts(p.name.as_bytes(), p.tags.as_bytes(), n);
            if let Some(batch) = shards.get_mut(shard) {
                batch.push(p);
            }
        }
        for (queue, batch) in self.queues.iter().zip(shards) {
            if !batch.is_empty() {
                self.send_to(queue, batch);
            }
        }
    }

    fn send_to(&self, queue: &Sender<Vec<OwnPoint>>, batch: Vec<OwnPoint>) {
        let (lost, reason) = match queue.try_send(batch) {
            Ok(()) => return,
            Err(TrySendError::Full(b)) => (b.len(), PointDrop::OwnQueueFull),
            Err(TrySendError::Disconnected(b)) => (b.len(), PointDrop::ShutdownDeadline),
        };
        let lost = lost as u64;
        // The drop before the points received, as `Tally::commit` orders them.
        self.telemetry.points.drop_points(reason, lost);
        self.telemetry.points.received.fetch_add(lost, Release);
    }
}

/// Append `more` to `into`.
fn merge(into: &mut Flush, more: Flush) {
    if into.is_empty() {
        *into = more;
        return;
    }
    into.series.extend(more.series);
    into.sketches.extend(more.sketches);
    into.events.extend(more.events);
    into.service_checks.extend(more.service_checks);
}
